"""Does each metric tell garbage from real data? Measure them on noise, a constant image, an undertrained DCGAN
and real held-out images (real MNIST), and on noise / collapse / the mixture (ring8); write docs/metric_sanity.md.

    GAN_LAB_DATA_ROOT=/work/shared/data python scripts/metric_sanity.py [--samples 2000]

The default protocol (2,000 samples a case against the first 2,000 training images) finishes in
minutes on one CPU thread; `--samples 10000` is `gan-lab eval`'s (its k-NN metrics use the first 5,000).
Written from a clean commit (scripts/generated_doc.py).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generated_doc import REPO, cpu_name, made_at, mnist_doc_parser, source_state, write_keeping_notes  # noqa: E402

from gan_lab.data import ToyMixture, _load_torchvision  # noqa: E402
from gan_lab.evaluation.classifier import class_metrics, load_or_train_classifier  # noqa: E402
from gan_lab.evaluation.metrics import knn_metrics, mixture_metrics  # noqa: E402
from gan_lab.measures import KNN_SAMPLES, MIXTURE_SAMPLES  # noqa: E402

DOC = REPO / "docs" / "metric_sanity.md"
HIGHER_IS_BETTER = {"classes_covered", "confidence", "precision", "recall", "density", "coverage", "modes_covered",
                    "high_quality", "features: precision", "features: density"}
STEPS = (1, 30)  # DCGAN training steps of the undertrained generators


def dcgan_after(steps: int, root: str, scratch: str, threads: int, n: int) -> Tensor:
    """n samples in [-1, 1] of a DCGAN on MNIST after `steps` steps (gan-lab train, metrics off)."""
    from gan_lab.evaluation.evaluate import load_generator
    from gan_lab.evaluation.sampling import generate

    run = Path(scratch) / f"dcgan{steps}"
    subprocess.run([sys.executable, "-m", "gan_lab", "train", "data=mnist", f"data.root={root}", "model=dcgan",
                    f"train.steps={steps}", "metrics=false", f"threads={threads}", "device=cpu",
                    f"hydra.run.dir={run}"], check=True, capture_output=True)
    return generate(load_generator(str(run))[0], n, None, seed=0).clamp(-1, 1)


def verdicts(found: dict[str, dict[str, float]], real: str) -> dict[str, str]:
    """Per metric: 'yes' when every other case scores worse than `real`, else the cases that do not."""
    said = {}
    for metric, value in found[real].items():
        better = metric in HIGHER_IS_BETTER
        wrong = [case for case, metrics in found.items() if case != real and
                 (metrics[metric] >= value if better else metrics[metric] <= value)]
        said[metric] = "yes" if not wrong else "**no**: " + ", ".join(wrong)
    return said


def table(found: dict[str, dict[str, float]], real: str, note: dict[str, str]) -> list[str]:
    """Markdown: a row per metric, a column per case, then whether every case scores worse than the real one."""
    cases = list(found)
    said = verdicts(found, real)
    lines = ["| metric | " + " | ".join(cases) + " | garbage scores worse than real? |",
             "|---|" + "---|" * (len(cases) + 1)]
    for metric in found[real]:
        arrow = "higher is better" if metric in HIGHER_IS_BETTER else "lower is better"
        cells = [f"{found[case][metric]:.4g}" for case in cases]
        lines.append(f"| {metric} ({arrow}{note.get(metric, '')}) | " + " | ".join(cells) + f" | {said[metric]} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Measure every case, print the tables, write docs/metric_sanity.md."""
    parser = mnist_doc_parser(__doc__.splitlines()[0], samples=2000)
    args = parser.parse_args(argv)
    commit, dirty = source_state(args.allow_dirty)
    torch.set_num_threads(args.threads)
    started, n = time.perf_counter(), args.samples
    knn = min(n, KNN_SAMPLES)
    model = load_or_train_classifier("mnist", args.root, args.cache_dir).eval()
    real = _load_torchvision("mnist", args.root, False, True)[0][:n].float() / 127.5 - 1
    test = _load_torchvision("mnist", args.root, False, False)[0][:n].float() / 127.5 - 1
    g = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        cases = {"uniform noise": torch.rand(n, 1, 28, 28, generator=g) * 2 - 1,
                 "constant grey": torch.zeros(n, 1, 28, 28),
                 **{f"DCGAN, {steps} step(s)": dcgan_after(steps, args.root, scratch, args.threads, n)
                    for steps in STEPS},
                 "real held-out (test split)": test}
    digits = {}
    with torch.no_grad():
        real_features = model.features(real)
        for name, x in cases.items():
            digits[name] = class_metrics(model, x, real, knn_samples=knn)
            # what main computed: the k-NN metrics in the classifier's penultimate features (dropped)
            dropped = knn_metrics(real_features[:knn], model.features(x)[:knn])
            digits[name].update({"features: precision": dropped["precision"], "features: density": dropped["density"]})
            print(name, {k: round(float(v), 4) for k, v in digits[name].items()}, flush=True)
    digits = {name: {k: float(v) for k, v in metrics.items()} for name, metrics in digits.items()}

    ring = ToyMixture("ring8", 0.01)
    g = torch.Generator().manual_seed(0)
    draws = ring.centers[torch.randint(8, (MIXTURE_SAMPLES,), generator=g)]
    mixture = {"standard Gaussian noise": torch.randn(MIXTURE_SAMPLES, 2, generator=g),
               "collapsed on one mode": ring.centers[:1] + 0.01 * torch.randn(MIXTURE_SAMPLES, 2, generator=g),
               "draws of the mixture": draws + 0.01 * torch.randn(MIXTURE_SAMPLES, 2, generator=g)}
    rings = {name: {k: float(v) for k, v in mixture_metrics(x, ring.centers, ring.sigma).items() if k != "n_modes"}
             for name, x in mixture.items()}
    seconds = time.perf_counter() - started
    lines = [
        "# Metric sanity: does each metric score garbage below real data?",
        "",
        f"Generated by `scripts/metric_sanity.py --samples {n}` at {made_at(commit, dirty)} on {cpu_name()}, "
        f"{args.threads} thread(s), {seconds:.0f} s.",
        "",
        f"## MNIST (gan-lab's digit classifier; {n} samples a case against the first {n} training images; "
        f"k-NN metrics on the first {knn}, k = 3 for precision / recall, 5 for density / coverage)",
        "",
        *table(digits, "real held-out (test split)",
               {"features: precision": "; dropped: main's, in the classifier's features",
                "features: density": "; dropped: main's, in the classifier's features",
                "precision": "; in pixels", "recall": "; in pixels", "density": "; in pixels",
                "coverage": "; in pixels"}),
        "",
        f"## ring8 ({MIXTURE_SAMPLES} samples, sigma 0.01; the VEEGAN / PacGAN protocol, a mode covered by one "
        f"high-quality sample)",
        "",
        *table(rings, "draws of the mixture", {}),
        "",
    ]
    write_keeping_notes(DOC, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
