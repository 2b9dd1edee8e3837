"""Measure gan-lab's memorisation check on cases whose answer is known (real MNIST); write docs/memorisation.md.

    GAN_LAB_DATA_ROOT=/work/shared/data python scripts/memorisation_check.py [--train 10000] [--samples 1000]

Each case is a generator that copies, noises, flips, collapses, trains for a few steps, or returns
held-out real images; one training set repeats 2% of its images. The default protocol (the first
10,000 training images, 1,000 samples) finishes in minutes on one CPU thread; `--train 60000
--samples 10000` is gan-lab eval's own. Written from a clean commit (scripts/generated_doc.py).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generated_doc import REPO, cpu_name, made_at, mnist_doc_parser, source_state, write_keeping_notes  # noqa: E402

from gan_lab.data import _load_torchvision  # noqa: E402
from gan_lab.evaluation.memorisation import COPY_RATIO, HELD, TRUSTED_BASE, memorisation_check  # noqa: E402
from gan_lab.measures import NearestTraining  # noqa: E402

DOC = REPO / "docs" / "memorisation.md"
UNDERTRAINED_STEPS = 20  # a DCGAN after this many steps draws grey blobs


class Bank(nn.Module):
    """A generator that returns images from a bank, each z picking one, changed by `change` (floats in [-1, 1])."""

    z_dim, n_classes = 4, 0

    def __init__(self, images: Tensor, change: Callable[[Tensor], Tensor] = lambda x: x):
        super().__init__()
        self.register_buffer("images", images)
        self.change = change
        self.anchor = nn.Parameter(torch.zeros(()))  # generate() reads the device from a parameter

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        picks = (z[:, 0].abs() * 1e4).long() % len(self.images)
        return self.change(self.images[picks].float() / 127.5 - 1).clamp(-1, 1)


def noise(sigma: float) -> Callable[[Tensor], Tensor]:
    """Gaussian noise of `sigma` in [0, 1] pixel units (2 sigma in [-1, 1]), from a fixed seed."""
    g = torch.Generator().manual_seed(1)
    return lambda x: x + 2 * sigma * torch.randn(x.shape, generator=g)


def undertrained(root: str, scratch: str, threads: int) -> nn.Module:
    """A DCGAN on MNIST after UNDERTRAINED_STEPS steps (gan-lab train, metrics off), as sample/eval load it."""
    from gan_lab.evaluation.evaluate import load_generator

    run = Path(scratch) / "undertrained"
    subprocess.run([sys.executable, "-m", "gan_lab", "train", "data=mnist", f"data.root={root}", "model=dcgan",
                    f"train.steps={UNDERTRAINED_STEPS}", "metrics=false", f"threads={threads}", "device=cpu",
                    f"hydra.run.dir={run}"], check=True, capture_output=True)
    return load_generator(str(run))[0]


def cell(metrics: dict[str, float], space: str) -> list[str]:
    """copies | real images' copies | median ratio | C_T of one space, and its verdict."""
    m = {k.removeprefix(f"memorisation/{space}/"): v for k, v in metrics.items()}
    trusted = m["copies_of_real"] <= TRUSTED_BASE
    said = ("copies" if m["copies"] > 0.5 else "not copies") if trusted else "no verdict (real images pass)"
    return [f"{m['copies']:.3f}", f"{m['copies_of_real']:.3f}", f"{m['nn_ratio_median']:.2f}",
            f"{m['data_copying_z']:+.1f}", said]


def main(argv: list[str] | None = None) -> int:
    """Run every case, print the table, write docs/memorisation.md."""
    parser = mnist_doc_parser(__doc__.splitlines()[0], samples=1000)
    parser.add_argument("--train", type=int, default=10000, help="first N MNIST training images (60000: all)")
    args = parser.parse_args(argv)
    commit, dirty = source_state(args.allow_dirty)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train = _load_torchvision("mnist", args.root, False, True)[0][:args.train]
    test = _load_torchvision("mnist", args.root, False, False)[0]
    repeated = max(1, len(train) // 50)  # 2% of the images twice, the set's size kept
    with_duplicates = torch.cat([train[:len(train) - repeated], train[:repeated]])

    def check(images: Tensor) -> Callable[[nn.Module], object]:
        return memorisation_check(NearestTraining("mnist", images, classifier="mnist"), args.samples, args.root,
                                  args.cache_dir)

    plain, duplicated = check(train), check(with_duplicates)
    with tempfile.TemporaryDirectory() as scratch:
        cases = [
            ("exact copies of training images", plain, Bank(train)),
            ("copies + noise sigma 0.05", plain, Bank(train, noise(0.05))),
            ("copies + noise sigma 0.1", plain, Bank(train, noise(0.1))),
            ("copies flipped left-right", plain, Bank(train, lambda x: x.flip(-1))),
            ("collapsed: one held-out image", plain, Bank(test[:1])),
            ("collapsed: the mean training image", plain,
             Bank(train.float().mean(0, keepdim=True).round().to(torch.uint8))),
            (f"DCGAN after {UNDERTRAINED_STEPS} steps", plain, undertrained(args.root, scratch, args.threads)),
            ("held-out real images (test split)", plain, Bank(test)),
            ("2% duplicates: exact copies", duplicated, Bank(with_duplicates)),
            ("2% duplicates: held-out real images", duplicated, Bank(test)),
        ]
        rows = []
        for name, measure, G in cases:
            found = measure(G).metrics
            rows.append([name, *cell(found, "pixels"), *cell(found, "features")])
            print(" | ".join(rows[-1]), flush=True)
    seconds = time.perf_counter() - started
    header = ["case", *(f"{space}: {column}" for space in ("pixels", "features")
                        for column in ("copies", "real images' copies", "median d1/d2", "C_T", "verdict"))]
    lines = [
        "# Memorisation: the check on cases whose answer is known",
        "",
        f"Generated by `scripts/memorisation_check.py --train {args.train} --samples {args.samples}` at "
        f"{made_at(commit, dirty)} on {cpu_name()}, {args.threads} thread(s), {seconds:.0f} s. Real MNIST: the first "
        f"{len(train)} training images; {args.samples} samples a case; {min(HELD, len(train))} training images "
        f"stand in for real images not trained on (each against the others). copies: the share of samples whose "
        f"nearest / second-nearest training-image distance is below {COPY_RATIO}; real images' copies: the same "
        f"share for the real images (above {TRUSTED_BASE}: no verdict); C_T: Meehan et al.'s data-copying z "
        f"(below -3: copying; above +3: samples far from the data). Features: gan-lab's MNIST classifier's "
        f"128-d penultimate layer. Flips count: each distance is the smaller of a sample's and its mirror's.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    write_keeping_notes(DOC, lines)
    print(f"written to {DOC} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
