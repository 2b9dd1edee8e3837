"""A small run on a folder of images, end to end as a user does it -> docs/folder.md and docs/img/.

From a clean commit: Fashion-MNIST written out as class folders of PNGs (scripts/write_image_folder.py),
`gan-lab train data=folder` on them at 32 px (the first start reads and resizes every file into the
cache), `gan-lab eval` (memorisation: each sample's nearest training image; its second start reads
the cache) and `gan-lab sample`. Every command runs with one thread; run the script under nice.

    GAN_LAB_DATA_ROOT=../shared/data nice -n 19 python scripts/folder_run.py      # ~10 min on a loaded 2-core CPU
    python scripts/folder_run.py --images 200 --steps 4 --allow-dirty --out /tmp/folder.md --img-dir /tmp/img
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from generated_doc import REPO, cpu_name, made_at, source_state, write_keeping_notes  # scripts/generated_doc.py

# chosen by short runs on this CPU (docs/folder.md's Notes say which): recognisable clothes in minutes; at
# 1,000 steps this conditional run had collapsed to nearly one image per class
TRAIN = ["data.resolution=32", "data.channels=1", "model=dcgan", "model.conditional=true", "loss=nonsaturating"]
STEPS = 500
SAMPLES = 100  # a 10 x 10 grid: a conditional model draws every class in turn, one per column


def run(cmd: list[str], work: Path) -> tuple[str, float]:
    """Run one command with one torch thread; its output and wall seconds. Exits with its stderr when it fails."""
    print(f"$ {shown(cmd, work)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        sys.exit(f"error: {shown(cmd, work)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr, time.perf_counter() - started  # rich prints to both


def ready_seconds(output: str) -> float:
    """The data line's start-up time: 'data 60,000 images ... (59 MiB; ready in 8.9 s)'."""
    found = re.search(r"ready in ([\d.]+) s", " ".join(output.split()))
    if found is None:
        sys.exit(f"error: no 'ready in N s' data line in the output:\n{output[-2000:]}")
    return float(found.group(1))


def shown(cmd: list[str], work: Path) -> str:
    """A command as the doc prints it: gan-lab for `python -m gan_lab`, the scratch folder as $WORK."""
    text = " ".join(shlex.quote(part) for part in cmd).replace(str(work), "$WORK")
    return text.replace(f"{shlex.quote(sys.executable)} -m gan_lab", "gan-lab").replace(
        shlex.quote(sys.executable), "python").replace(str(REPO) + "/", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("GAN_LAB_DATA_ROOT", "data"),
                        help="the folder holding FashionMNIST/ (default: $GAN_LAB_DATA_ROOT, else data)")
    parser.add_argument("--images", type=int, default=None, help="write only the first N images (default: all 60,000)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"generator steps (default {STEPS})")
    parser.add_argument("--extra", nargs="*", default=[], help="more gan-lab train overrides (e.g. tiny models)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "folder.md")
    parser.add_argument("--img-dir", type=Path, default=REPO / "docs" / "img", help="where the PNGs are copied")
    parser.add_argument("--allow-dirty", action="store_true", help="run from uncommitted code (the doc says so)")
    args = parser.parse_args()
    commit, dirty = source_state(args.allow_dirty)
    started, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gan-lab-folder-run-") as tmp:
        work = Path(tmp)
        images, cache, run_dir = work / "fashion", work / "cache", work / "run"
        gan_lab = [sys.executable, "-m", "gan_lab"]
        write = [sys.executable, str(REPO / "scripts" / "write_image_folder.py"), "--data", "fashion_mnist",
                 "--root", args.data_root, "--out", str(images), *(["--limit", str(args.images)] if args.images else [])]
        train = [*gan_lab, "train", "data=folder", f"data.path={images}", *TRAIN, f"train.steps={args.steps}",
                 f"data.cache={cache}", "threads=1", *args.extra, f"hydra.run.dir={run_dir}"]
        evaluate = [*gan_lab, "eval", f"checkpoint={run_dir}"]
        sample = [*gan_lab, "sample", f"checkpoint={run_dir}", f"n={SAMPLES}"]
        written, write_s = run(write, work)
        trained, train_s = run(train, work)
        evaluated, _ = run(evaluate, work)
        run(sample, work)
        status = json.loads((run_dir / "status.json").read_text())
        found = json.loads((run_dir / "eval.json").read_text())
        grid = run_dir / "samples" / f"sample_step{status['metrics']['step']}_seed0.png"  # gan-lab sample's name
        args.img_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(grid, args.img_dir / "folder_samples.png")
        shutil.copyfile(run_dir / "nearest_neighbours.png", args.img_dir / "folder_nearest.png")
        first, second = ready_seconds(trained), ready_seconds(evaluated)
        space = re.search(r"feature space: (.*?)\. Samples beside", " ".join(evaluated.split()))
        batch = yaml.safe_load((run_dir / "config_resolved.yaml").read_text())["train"]["batch_size"]
        commands = [shown(cmd, work) for cmd in (write, train, evaluate, sample)]
        written = written.strip().replace(str(work), "$WORK")
    lines = doc(args, commit, dirty, started, load_before, commands, written, write_s, train_s, first, second,
                status, batch, found, space.group(1) if space else None)
    write_keeping_notes(args.out, lines)
    print(f"wrote {args.out} and {args.img_dir / 'folder_samples.png'}")


def doc(args: argparse.Namespace, commit: str, dirty: bool, started: str, load_before: tuple[float, ...],
        commands: list[str], written: str, write_s: float, train_s: float, first: float, second: float,
        status: dict, batch: int, found: dict, space: str | None) -> list[str]:
    """The generated part of docs/folder.md."""
    metrics = status["metrics"]
    img = os.path.relpath(args.img_dir, args.out.parent)
    pixel = {k.rsplit("/", 1)[1]: v for k, v in found.items() if k.startswith("memorisation/pixels/")}
    losses = ", ".join(f"`{k}` {v:.3f}" for k, v in metrics.items() if k.startswith("loss/"))
    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    return [
        "# A run on your own images: Fashion-MNIST as a folder",
        "",
        f"Measured {started} with `python scripts/folder_run.py{' ' + argv if argv else ''}` at "
        f"{made_at(commit, dirty)}, on {cpu_name()} ({os.cpu_count()} logical CPUs; load average "
        f"{', '.join(f'{x:.2f}' for x in load_before)} before, {os.getloadavg()[0]:.2f} after), every "
        f"command with one torch thread. `$WORK` is a fresh temporary folder.",
        "",
        "What a user does with a folder of their own images, end to end:",
        "",
        "```bash",
        *commands,
        "```",
        "",
        f"- **The folder**: {written} ({write_s:.1f} s): class subfolders, so `model.conditional=true` "
        "learns one class per label.",
        f"- **Start-up**: the first start read and resized every file into the cache in **{first:.1f} s**; "
        f"the second (`gan-lab eval`, the same `FolderData` on the same folder) read the cache in "
        f"**{second:.1f} s**.",
        f"- **Training**: {metrics['step']:,} generator steps at batch {batch} in "
        f"**{metrics['time/seconds']:.1f} s** of training ({train_s:.0f} s for the whole command, start-up "
        f"included); final losses {losses}.",
        f"- **Memorisation** (`gan-lab eval`, {found['samples']:,} samples against every training image, "
        f"pixels in [0, 1]): **{pixel['copies']:.1%}** of samples are copies (their nearest training image is "
        f"nearer than {found['memorisation/copy_ratio']} x their second-nearest; real training images: "
        f"{pixel['copies_of_real']:.1%}); the median sample's nearest training image is "
        f"{pixel['sample_nn_median']:.4f} away (RMS), a real image's nearest other one {pixel['real_nn_median']:.4f}.",
        "- **Inception metrics are off**: this folder is read as greyscale (`data.channels=1`), and FID, IS and "
        "KID are for RGB images. Memorisation's feature space is Inception's too, "
        + (f"where {found['memorisation/features/copies']:.1%} of samples are copies."
           if "memorisation/features/copies" in found else
           f"and this offline machine has no Inception weights (`inception_weights=` names a local file), so "
           f"eval measured pixels only: \"{space}\"."),
        "",
        f"Samples (`gan-lab sample ... n={SAMPLES}`, step {metrics['step']:,}; one class per column):",
        "",
        f"![samples]({img}/folder_samples.png)",
        "",
        "Memorisation's pairs (`nearest_neighbours.png`: sample | its nearest training image in pixels; the "
        "8 samples nearest a training image, then the first 8):",
        "",
        f"![nearest training images]({img}/folder_nearest.png)",
        "",
    ]


if __name__ == "__main__":
    main()
