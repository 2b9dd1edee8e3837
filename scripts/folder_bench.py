"""data=folder against the same images already in memory, and its first against its second start-up.

(a) training at 64 px: gan-lab's Iteration (critic step + generator step, as gan-lab train runs it)
    drawing its real batches from FolderData (the cache held on the device) and from the same uint8
    tensor drawn as gan_lab.data.ImageData draws it. Same networks (same initial weights), loss,
    optimizer and batch. The timed steps are split into rounds that alternate the order, so a
    machine whose load changes slows both alike; the ratio's range over the rounds shows how steady
    it was. The streamed path (memory budget exceeded: memory map + DataLoader workers) is timed
    beside them for information.
(b) start-up: FolderData on a 10,000-image folder of PNGs (Fashion-MNIST written by
    scripts/write_image_folder.py, or random images without --data-root) the first time (reading
    and resizing every file into the cache) and the second time (the cache read back).

    nice python scripts/folder_bench.py --data-root ../shared/data          # ~3 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gan_lab.folder import FolderData
from gan_lab.losses import NonSaturating
from gan_lab.models import mlp
from gan_lab.runs.safety import NonFiniteGuard
from gan_lab.training.settings import CriticSchedule
from gan_lab.training.train import Iteration
from generated_doc import cpu_name  # scripts/generated_doc.py
from write_image_folder import write_image_folder

RESOLUTION, BATCH, LR, BETAS = 64, 64, 2e-4, (0.5, 0.999)


class InMemory:
    """The same images as one uint8 tensor already in memory, drawn as gan_lab.data.ImageData draws them."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels, self.size = images, labels, len(images)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(self.size, (batch_size,), device=self.images.device)
        return self.images.index_select(0, idx).float().div_(127.5).sub_(1.0), self.labels.index_select(0, idx)


def iteration(data: object, seed: int) -> Iteration:
    """gan-lab's training step on 3x64x64 images, MLP G and critic, non-saturating loss, Adam."""
    torch.manual_seed(seed)
    G, critic = mlp((3, RESOLUTION, RESOLUTION), z_dim=100, hidden=256, depth=2, generator_norm="none",
                    critic_norm="none", conditional=False, pack=1, minibatch_std=0)
    opt_g = torch.optim.Adam(G.parameters(), lr=LR, betas=BETAS)
    opt_d = torch.optim.Adam(critic.parameters(), lr=LR, betas=BETAS)
    schedule = CriticSchedule(n_critic=1, reg_every=1, clip=0.0, unroll=0)
    return Iteration(G, critic, G, critic, NonSaturating(), schedule, data, opt_g, opt_d, BATCH,
                     NonFiniteGuard("stop", torch.device("cpu")))


def time_training(folder: Path, cache: Path, rounds: int, steps: int
                  ) -> tuple[dict[str, tuple[list[float], list[float]]], dict[str, float]]:
    """(wall seconds, this process's CPU seconds) per round of `steps` generator steps for each variant, and
    the median seconds of one sample(BATCH) call alone (torch.utils.benchmark)."""
    from torch.utils.benchmark import Timer

    held = FolderData(str(folder), resolution=RESOLUTION, cache=str(cache), workers=0)
    streamed = FolderData(str(folder), resolution=RESOLUTION, cache=str(cache), memory_budget=1e-6, workers=2)
    datas = {"folder (held)": held, "in memory": InMemory(held.images, held.labels), "folder (streamed)": streamed}
    variants = {name: iteration(data, 0) for name, data in datas.items()}
    for run in variants.values():  # warm-up: first allocations, the streamed loader's workers
        for step in range(3):
            run(step)
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in variants}
    for r in range(rounds):
        for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
            wall, cpu = time.perf_counter(), time.process_time()
            for step in range(steps):
                variants[name](step)
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    sampling = {name: Timer(f"data.sample({BATCH})", globals={"data": data}).blocked_autorange(min_run_time=1).median
                for name, data in datas.items()}
    return times, sampling


def time_startup(folder: Path, cache: Path) -> tuple[float, float]:
    """Seconds to a ready FolderData the first time (cache built) and the second time (cache read)."""
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        FolderData(str(folder), resolution=RESOLUTION, cache=str(cache), workers=0)
        seconds.append(time.perf_counter() - started)
    return seconds[0], seconds[1]


def random_folder(out: Path, n: int) -> None:
    """n random 28x28 PNGs in 10 class folders (when no Fashion-MNIST is at hand)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        (out / str(i % 10)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(out / str(i % 10) / f"{i:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=None, help="the folder holding FashionMNIST/ (else random images)")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=15, help="generator steps per variant per round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="folder-bench-") as tmp:
        folder, cache = Path(tmp) / "images", Path(tmp) / "cache"
        if args.data_root:
            write_image_folder("fashion_mnist", args.data_root, folder, args.images)
        else:
            random_folder(folder, args.images)
        first, second = time_startup(folder, cache)
        times, sampling = time_training(folder, cache, args.rounds, args.steps)
    wall_base, cpu_base = (np.array(t) for t in times["in memory"])
    print(f"\nfolder_bench.py, commit {commit}, {cpu_name()}, 1 thread, torch {torch.__version__}")
    print(f"(a) training at {RESOLUTION} px (MLP G and critic, batch {BATCH}), {args.rounds} alternating rounds x "
          f"{args.steps} generator steps each. Wall-clock ratio: the median of the rounds' ratios (a busy machine "
          f"moves single rounds) and its quartiles; CPU ratio: this process's CPU time, summed (the streamed "
          f"path's workers are other processes, so it has none):")
    print(f"    {'variant':<20}{'ms/step':>9}{'wall ratio':>12}{'quartiles':>16}{'CPU ratio':>11}"
          f"{'sample() alone, ms':>20}")
    for name, (wall, cpu) in times.items():
        per_round = np.array(wall) / wall_base
        q1, median, q3 = np.percentile(per_round, [25, 50, 75])
        cpu_ratio = f"{sum(cpu) / cpu_base.sum():.3f}x" if name != "folder (streamed)" else "-"
        print(f"    {name:<20}{1000 * np.median(wall) / args.steps:>9.1f}{median:>11.3f}x"
              f"{f'{q1:.3f}-{q3:.3f}x':>16}{cpu_ratio:>11}{1000 * sampling[name]:>20.3f}")
    source = "Fashion-MNIST PNGs" if args.data_root else "random PNGs"
    print(f"(b) start-up of a {args.images:,}-image folder ({source}, to {RESOLUTION} px RGB):")
    print(f"    first (reads and resizes every file) {first:.2f} s   second (reads the cache) {second:.2f} s   "
          f"ratio {first / second:.0f}x")


if __name__ == "__main__":
    main()
