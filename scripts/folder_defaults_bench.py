"""What a data=folder run costs on this machine: seconds a step and peak memory of each model candidate.

Each candidate is one real `gan-lab train data=folder ...` in its own process (WGAN-GP, the folder's
default loss, metrics off) on a folder of random RGB images, for a few steps: its seconds a step are
read from the run's own cost line (over steps 2-4, the first step's warm-up left out), its peak
resident memory from the process's rusage (os.wait4), beside an estimate of what training needs:
parameters with Adam's two moments and gradients, plus activations held for the penalty's double
backward (forward activations kept twice over, a rough 3x of one forward's).

    nice python scripts/folder_defaults_bench.py --steps 5 --batch 8          # minutes on 2 idle cores
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# (model, its overrides): the folder default (resnet), R3GAN's baseline, and DCGAN (32 px only)
CANDIDATES = {
    "resnet": [],
    "resnet-narrow": ["model.g_channels=64", "model.d_channels=64"],
    "r3gan": ["model=r3gan"],
    "dcgan": ["model=dcgan"],
}


def random_folder(where: Path, n: int = 64, size: int = 80) -> Path:
    """n random RGB PNGs in one flat folder (unlabelled)."""
    where.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(where / f"{i}.png")
    return where


def run(name: str, overrides: list[str], resolution: int, steps: int, batch: int, folder: Path,
        scratch: Path) -> dict[str, float | str]:
    """One candidate's seconds a step and peak resident GiB (NaN where the model refuses the size)."""
    command = [sys.executable, "-m", "gan_lab", "train", "data=folder", f"data.path={folder}",
               f"data.resolution={resolution}", f"data.cache={scratch / 'cache'}", *overrides,
               f"train.steps={steps}", f"train.batch_size={batch}", f"train.log_every={steps}",
               f"train.sample_every={steps}", f"train.checkpoint_every={steps}", "metrics=false", "threads=1",
               "device=cpu", f"hydra.run.dir={scratch / f'{name}-{resolution}'}"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    cost = re.search(r"cost ([\d.e+-]+) s a step", out)
    params = [int(n.replace(",", "")) for n in re.findall(r"(?:G|critic) ([\d,]+)", out)[:2]]
    peak_gib = usage.ru_maxrss / 2**20  # Linux: KiB
    weights = sum(params) * 4 * 4 / 2**30  # float32: weights, gradients, Adam's two moments
    return {"model": name, "px": resolution, "ok": os.waitstatus_to_exitcode(status) == 0,
            "s/step": float(cost.group(1)) if cost else float("nan"), "peak GiB": peak_gib,
            "weights+Adam GiB": weights, "params": sum(params)}


def main() -> None:
    """Time every candidate at each resolution and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="steps per candidate, at least 4 (the cost line is over steps 2-4)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--models", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        folder = random_folder(scratch / "images")
        print(f"{'model':<14} {'px':>4} {'s/step':>8} {'peak GiB':>9} {'weights+Adam GiB':>17} {'params':>11}")
        for resolution in args.resolutions:
            for name in args.models:
                if name == "dcgan" and resolution != 32:
                    continue  # dcgan takes 28 or 32 px only
                row = run(name, CANDIDATES[name], resolution, args.steps, args.batch, folder, scratch)
                print(f"{row['model']:<14} {row['px']:>4} {row['s/step']:>8.3g} {row['peak GiB']:>9.2f} "
                      f"{row['weights+Adam GiB']:>17.3f} {row['params']:>11,}" + ("" if row["ok"] else "  FAILED"),
                      flush=True)


if __name__ == "__main__":
    main()
