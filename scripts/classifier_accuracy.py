"""Train gan-lab's built-in classifier from scratch with the default settings and report its test accuracy.

    GAN_LAB_DATA_ROOT=../shared/data python scripts/classifier_accuracy.py [--data fashion_mnist] [--seed 0]

Exits 1 when the MNIST classifier scores under 99% on the test split (the bar the class metrics
rely on); Fashion-MNIST has no bar (~90-92% is what a net this small reaches).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

from gan_lab.errors import GanLabError
from gan_lab.evaluation.classifier import DATA_SETS, DEFAULT_EPOCHS, classifier_path, load_or_train_classifier

MNIST_BAR = 0.99


def main(argv: list[str] | None = None) -> int:
    """Train (into a fresh cache unless --cache-dir is given), print the result, return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=DATA_SETS, default="mnist")
    parser.add_argument("--root", default=os.environ.get("GAN_LAB_DATA_ROOT", "data"))
    parser.add_argument("--cache-dir", default=None, help="default: a temporary folder (a fresh training)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the bar is for 2 cores)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        cache_dir = args.cache_dir or scratch
        started = time.perf_counter()
        try:
            load_or_train_classifier(args.data, args.root, cache_dir, device=args.device,
                                     epochs=args.epochs, seed=args.seed)
        except GanLabError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        seconds = time.perf_counter() - started
        # read the numbers back from the cache file: what the metrics will actually use
        saved = torch.load(classifier_path(cache_dir, args.data), map_location="cpu", weights_only=True)

    accuracy = saved["test_accuracy"]
    print(f"{args.data}: test accuracy {accuracy:.4f}, epochs {saved['epochs']}, seed {saved['seed']}, "
          f"wall time {seconds:.1f} s (load + train + test, {args.threads} threads, {args.device})")
    if args.data == "mnist" and accuracy < MNIST_BAR:
        print(f"FAIL: MNIST test accuracy {accuracy:.4f} < {MNIST_BAR}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
