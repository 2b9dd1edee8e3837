"""Metrics for a trained generator, built from what its data declares it measures, and `gan-lab eval` / `sample`.

A data set's measures() (gan_lab.data) names its measures: mode coverage (2-D mixtures, the VEEGAN /
PacGAN protocol, gan_lab.evaluation.metrics.mixture_metrics), gan-lab's digit classifier (MNIST,
Fashion-MNIST; gan_lab.evaluation.classifier), the 1,000-mode histogram (Stacked MNIST) or Inception
(RGB images). A data set that declares none has no metrics, and no_metrics_note() says so.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from gan_lab.data import (DigitClasses, InceptionScores, ModeCoverage, NearestTraining, StackedDigits,
                          import_torchvision)
from gan_lab.errors import GanLabError
from gan_lab.evaluation.metrics import histogram_kl, mixture_metrics
from gan_lab.runs.checkpoint import LAST, load_checkpoint, resolve_checkpoint
from gan_lab.runs.rebuild import rebuild_generator, rebuild_models

MIXTURE_SAMPLES = 2500  # the VEEGAN / PacGAN protocol
IMAGE_SAMPLES = 10000
# precision / recall / density / coverage on the first 5,000 of them: their four k-NN distance
# passes grow as N^2 (one thread of a loaded 2-core Xeon: 10 s at 5,000, 45 s at 10,000, beside
# ~64 s for the classifier features of 2 x 10,000 images). k-NN balls widen as N falls, so
# compare these numbers only at the same count.
KNN_SAMPLES = 5000
STACKED_SAMPLES = 26000  # the VEEGAN / PacGAN protocol for stacked MNIST
EVAL_SEED = 0  # the seed of the z every evaluation draws, during training and in `gan-lab eval`


def class_labels(G: nn.Module, n: int) -> Tensor | None:
    """Labels for n conditional samples, every class in turn (None for an unconditional G)."""
    return torch.arange(n, device=next(G.parameters()).device) % G.n_classes if G.n_classes else None


@torch.no_grad()
def generate(G: nn.Module, n: int, y: Tensor | None = None, batch_size: int = 2500, seed: int | None = None) -> Tensor:
    """n samples from G (for labels y when conditional) in eval mode, in batches; z from `seed` when given."""
    device = next(G.parameters()).device
    # z drawn on the CPU from its own seeded generator: the same z whatever the device, the global
    # RNG's state or what was built before, so a checkpoint's metrics are a function of its weights
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    was_training = G.training
    G.eval()  # batch norm on its running statistics: samples do not depend on their batch
    try:
        return torch.cat([G(torch.randn(min(batch_size, n - i), G.z_dim, generator=rng).to(device),
                            None if y is None else y[i:i + batch_size]) for i in range(0, n, batch_size)])
    finally:
        G.train(was_training)


def label_accuracy(predicted: Tensor, requested: Tensor, n_classes: int) -> dict[str, float]:
    """How often conditional samples are recognised as their requested label: overall and per class."""
    hit = (predicted == requested).double()
    metrics = {"metrics/label_accuracy": float(hit.mean())}
    for c in range(n_classes):
        asked = requested == c
        metrics[f"metrics/label_accuracy/class_{c}"] = float(hit[asked].mean()) if asked.any() else math.nan
    return metrics


Evaluator = Callable[[nn.Module], dict[str, float]]


def measures(data: Any) -> tuple[Any, ...]:
    """What a data set declares it measures (its measures()); () for one that declares nothing."""
    declare = getattr(data, "measures", None)
    return tuple(declare()) if declare is not None else ()


def no_metrics_note(data: Any) -> str:
    """Why a data set has no metrics/*: it declares no measures."""
    return (f"data '{getattr(data, 'name', '?')}' ({type(data).__name__}) declares no metrics (its measures() names "
            f"none), so there are no metrics/* for it. A data class declares them in gan_lab/data.py: mode centres and "
            f"sigma (ModeCoverage), a digit classifier (DigitClasses), the Stacked MNIST histogram (StackedDigits) or "
            f"Inception (InceptionScores).")


def make_evaluator(data: Any, classifier_root: str | None = None, cache_dir: str | None = None,
                   inception_weights: str | None = None, seed: int = EVAL_SEED,
                   fid_samples: int | None = None) -> Evaluator | None:
    """A function G -> {"metrics/...": value} for what this data set measures, or None when it declares nothing.

    Its z come from `seed` alone, so training's final metrics and `gan-lab eval` of the same
    checkpoint (same seed, same device) are the same numbers.
    """
    evaluators = []
    for measure in measures(data):
        if isinstance(measure, ModeCoverage):
            evaluators.append(mixture_evaluator(measure, seed))
        elif isinstance(measure, StackedDigits):
            evaluators.append(stacked_evaluator(measure, classifier_root, cache_dir, seed))
        elif isinstance(measure, DigitClasses):
            evaluators.append(classifier_evaluator(measure, classifier_root, cache_dir, seed))
        elif isinstance(measure, InceptionScores):
            evaluators.append(inception_evaluator(measure, inception_weights, seed, cache_dir, fid_samples))
        elif isinstance(measure, NearestTraining):
            continue  # `gan-lab eval` alone: nearest training images (gan_lab.evaluation.memorisation)
        else:
            raise TypeError(f"{type(data).__name__}.measures() returned {measure!r}, which gan-lab cannot measure")
    if not evaluators:
        return None
    if len(evaluators) == 1:
        return evaluators[0]

    def every(G: nn.Module) -> dict[str, float]:
        return {k: v for evaluate in evaluators for k, v in evaluate(G).items()}
    every.protocol = {k: v for evaluate in evaluators for k, v in evaluation_protocol(evaluate).items()}
    return every


def evaluation_protocol(evaluator: Evaluator) -> dict[str, Any]:
    """What an evaluator records about how it measures (Inception's counts, split, weights); {} when nothing."""
    return dict(getattr(evaluator, "protocol", {}))


def mixture_evaluator(measure: ModeCoverage, seed: int = EVAL_SEED) -> Evaluator:
    """Mode coverage of MIXTURE_SAMPLES samples; conditional: how often the nearest mode is the requested one."""
    centers = measure.centers

    def mixture(G: nn.Module) -> dict[str, float]:
        y = class_labels(G, MIXTURE_SAMPLES)
        fake = generate(G, MIXTURE_SAMPLES, y, seed=seed)
        metrics = {f"metrics/{k}": float(v) for k, v in mixture_metrics(fake, centers, measure.sigma).items()}
        if y is not None:
            metrics.update(label_accuracy(torch.cdist(fake.double(), centers.double()).argmin(1), y, G.n_classes))
        return metrics
    return mixture


def stacked_evaluator(measure: StackedDigits, classifier_root: str | None, cache_dir: str | None,
                      seed: int = EVAL_SEED) -> Evaluator:
    """Modes covered and reverse KL of STACKED_SAMPLES samples over the 10^digits modes the classifier reads."""
    from gan_lab.evaluation.classifier import load_or_train_classifier

    model = load_or_train_classifier(measure.classifier, classifier_root or "data", cache_dir, device=measure.device)
    n_modes = 10 ** measure.digits

    def stacked(G: nn.Module) -> dict[str, float]:
        fake = generate(G, STACKED_SAMPLES, class_labels(G, STACKED_SAMPLES), seed=seed)
        counts = torch.bincount(stacked_modes(model, fake), minlength=n_modes)
        return {"metrics/modes_covered": float((counts > 0).sum()), "metrics/n_modes": float(n_modes),
                "metrics/reverse_kl": histogram_kl(counts, torch.full((n_modes,), 1 / n_modes, dtype=torch.float64))}
    return stacked


def classifier_evaluator(measure: DigitClasses, classifier_root: str | None, cache_dir: str | None,
                         seed: int = EVAL_SEED) -> Evaluator:
    """The digit classifier's metrics of measure_samples() samples; conditional: how often it reads the requested label."""
    from gan_lab.evaluation.classifier import class_metrics, load_or_train_classifier

    model = load_or_train_classifier(measure.classifier, classifier_root or "data", cache_dir,
                                     device=measure.real.device)
    n = measure_samples(measure)
    real = measure.real[:n].float().div(127.5).sub(1)

    def classes(G: nn.Module) -> dict[str, float]:
        y = class_labels(G, n)
        fake = generate(G, n, y, seed=seed)
        metrics = {f"metrics/{k}": float(v)
                   for k, v in class_metrics(model, fake, real, knn_samples=KNN_SAMPLES).items()}
        if y is not None:  # conditional: how often the classifier recognises the requested label
            with torch.no_grad():
                model.eval()
                predicted = torch.cat([model(fake[i:i + 1000]).argmax(1) for i in range(0, n, 1000)])
            metrics.update(label_accuracy(predicted, y, G.n_classes))
        return metrics
    return classes


def image_samples(size: int | None) -> int:
    """How many samples image metrics draw: IMAGE_SAMPLES, or the whole data set when it is smaller."""
    return min(IMAGE_SAMPLES, size or IMAGE_SAMPLES)


def eval_samples(data: Any) -> int:
    """How many samples make_evaluator's metrics draw for this data set (the protocols' sizes; 0: no metrics)."""
    return max((measure_samples(m) for m in measures(data)), default=0)


def measure_samples(measure: Any) -> int:
    """How many samples a measure's protocol draws."""
    if isinstance(measure, ModeCoverage):
        return MIXTURE_SAMPLES
    if isinstance(measure, StackedDigits):
        return STACKED_SAMPLES
    return image_samples(len(measure.real))  # DigitClasses, InceptionScores


def inception_evaluator(measure: InceptionScores, weights: str | None, seed: int = EVAL_SEED,
                        cache_dir: str | None = None, fid_samples: int | None = None) -> Evaluator:
    """FID, Inception Score, KID and precision/recall through torch-fidelity (gan_lab.evaluation.inception).

    The Inception weights come from `weights` (a local .pth, torch-fidelity's
    weights-inception-2015-12-05-6726825d.pth) or torch-fidelity's own download, checked before
    use. Without them the run says so once and goes on with the metrics it has. fid_samples:
    generated images (default: measure_samples, FID-10k), against as many real ones as the data has
    up to that. The evaluator's `protocol` says what eval.json records.
    """
    from gan_lab.evaluation.classifier import default_cache_dir
    from gan_lab.evaluation.inception import InceptionMetrics, check_weights

    n = fid_samples or measure_samples(measure)
    try:
        checked = check_weights(weights)  # a crafted file: GanLabError here, before anything is generated
    except OSError as err:
        from gan_lab.runs.tracker import console

        where = f"from {weights}" if weights else "by download"
        console.print(f"[yellow]gan-lab: Inception metrics (FID, IS, KID, precision/recall) are off for this run: "
                      f"the Inception weights could not be loaded {where} ({err}). Put torch-fidelity's "
                      f"weights-inception-2015-12-05-6726825d.pth on this machine and pass "
                      f"inception_weights=/path/to/it (or set GAN_LAB_INCEPTION_WEIGHTS); the other "
                      f"metrics go on.[/]", soft_wrap=True, highlight=False)
        return lambda G: {}
    metrics = InceptionMetrics(checked, measure.real[:n].cpu(), measure.name, measure.split, n,
                               Path(cache_dir) if cache_dir else default_cache_dir())
    metrics.extractor()  # built now: weights that are not Inception's are refused before a run trains

    def inception(G: nn.Module) -> dict[str, float]:
        fake = generate(G, n, class_labels(G, n), seed=seed)
        return metrics(fake.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu())
    inception.protocol = metrics.protocol()
    return inception


@torch.no_grad()
def stacked_modes(model: nn.Module, images: Tensor, batch_size: int = 2000) -> Tensor:
    """The mode of each stacked image: the classifier's digit on each channel, 100*d0 + 10*d1 + d2."""
    model.eval()
    digits = torch.cat([model(images[i:i + batch_size].flatten(0, 1).unsqueeze(1)).argmax(1)
                        for i in range(0, len(images), batch_size)]).view(len(images), 3)
    return (digits * torch.tensor([100, 10, 1], device=digits.device)).sum(1)


def generator_entry(state: dict[str, Any]) -> str:
    """Which generator sample/eval use: the moving average G_ema when the run kept one, else G."""
    return "G_ema" if "G_ema" in state else "G"


def describe_generator(state: dict[str, Any]) -> str:
    """One line for sample/eval's output: which generator's weights they show."""
    if generator_entry(state) == "G_ema":
        train = state["config"].get("train", {})
        return (f"generator: G_ema, the moving average of G (half-life {train.get('ema_kimg')}k images, ramp-up "
                f"{train.get('ema_rampup')}), as the run's samples and metrics/* (metrics_raw/*: the trained G)")
    return "generator: G, the trained weights (the run kept no EMA: train.ema_kimg=0)"


def load_generator(checkpoint: str, device: str = "cpu") -> tuple[nn.Module, dict[str, Any], Path]:
    """Rebuild the generator of a checkpoint (G_ema when it has one): its config names the model, its weights fill it.

    Returns G, the checkpoint's state and its file.
    """
    file = resolve_checkpoint(checkpoint)
    state = load_checkpoint(file)
    # built by gan-lab's own builder from checked plain values, never by instantiating the stored config
    return rebuild_generator(state, file, generator_entry(state)).to(device), state, file


REJECTIONS = ("none", "drs")  # rejection=: none, or Discriminator Rejection Sampling (gan_lab.evaluation.rejection)


def rejection_sampler(option: Any, state: dict[str, Any], file: Path, device: str, seed: int) -> Any:
    """`rejection=drs`: the generator of sample/eval wrapped in DRS with the run's critic; None for rejection=none."""
    from gan_lab.evaluation.rejection import BURN_IN, GAMMA_QUANTILE, RejectionSampler, loss_caveat
    from gan_lab.runs.tracker import console

    if option not in REJECTIONS:
        raise GanLabError(f"rejection={option} is not known: use rejection=none (the default) or rejection=drs "
                          f"(Discriminator Rejection Sampling with the run's critic).")
    if option == "none":
        return None
    # the critic, by gan-lab's own builder from checked plain values, as the generator
    G, critic = rebuild_models(state, file, generator_entry(state))
    caveat = loss_caveat(state["config"].get("loss", {}).get("_target_"),
                         getattr(critic, "pack", 1) * max(getattr(critic, "group", 0), 1))
    if caveat:
        console.print(f"[bold yellow]gan-lab: warning:[/] rejection=drs: {caveat}.", soft_wrap=True, highlight=False)
    console.print(f"rejection: DRS (Azadi et al. 2019) with the run's critic: D*_max and gamma (the "
                  f"{GAMMA_QUANTILE:.0%} quantile of F) from {BURN_IN} burn-in samples", soft_wrap=True,
                  highlight=False)
    return RejectionSampler(G.to(device), critic.to(device), seed=seed)


def describe_rejection(sampler: Any) -> str:
    """The acceptance line sample/eval print after rejection=drs."""
    return (f"rejection=drs acceptance rate {sampler.acceptance_rate:.4f} ({sampler.accepted} accepted of "
            f"{sampler.drawn} candidates after the burn-in)")


def run_dir_of(file: Path) -> Path:
    """checkpoints/last.pt -> the run directory; a loose .pt -> its folder."""
    return file.parent.parent if file.parent.name == "checkpoints" else file.parent


def data_root_here(config: dict[str, Any], given: str | None) -> str | None:
    """Where a checkpoint's data set is on this machine: data.root= when given, else the root it trained with
    when that folder is here, else $GAN_LAB_DATA_ROOT (train's default); None for data without a root."""
    data = config.get("data")
    if not isinstance(data, dict) or "root" not in data:
        return None  # generated on the fly (ring8, grid25, ...)
    stored = data["root"]
    if given or (isinstance(stored, str) and os.path.isdir(os.path.expanduser(stored))):
        return given or stored
    if os.environ.get("GAN_LAB_DATA_ROOT"):
        return os.environ["GAN_LAB_DATA_ROOT"]
    raise GanLabError(f"The checkpoint's data set ({data.get('name', 'data')}) was read from {stored} when it "
                      f"trained, and that folder is not on this machine. Pass data.root=/path/to/data, the folder "
                      f"that holds it here in torchvision's layout (or set GAN_LAB_DATA_ROOT).")


def evaluation_label(checkpoint: str, seed: int, rejection: str) -> str:
    """What sets an evaluation apart from the plain one (checkpoints/last.pt, seed 0, no rejection): 'plain' for it."""
    name = Path(checkpoint).name
    parts = ([name] if name != LAST else []) + ([f"rejection={rejection}"] if rejection != "none" else [])
    parts += [f"seed={seed}"] if seed != EVAL_SEED else []
    return " ".join(parts) or "plain"


def eval_file(run_dir: Path, label: str) -> Path:
    """Each evaluation's own record in the run directory: eval.json (plain), eval_drs.json, eval_seed1.json, ..."""
    if label == "plain":
        return run_dir / "eval.json"
    for long, short in ((".pt", ""), ("rejection=", ""), ("=", ""), (" ", "_")):
        label = label.replace(long, short)
    return run_dir / f"eval_{label}.json"


def interpolation_z(z_dim: int, n: int, steps: int = 10) -> Tensor:
    """n // steps rows of `steps` noise vectors, each row a straight line in z between two random endpoints."""
    rows = max(1, n // steps)
    a, b = torch.randn(rows, 1, z_dim), torch.randn(rows, 1, z_dim)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    return (a + t * (b - a)).reshape(rows * steps, z_dim)
