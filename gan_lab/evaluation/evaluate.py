"""Metrics for a trained generator, built from what its data declares it measures, and `gan-lab eval` / `sample`.

A data set's measures() (gan_lab.data) names its measures: mode coverage (2-D mixtures, the VEEGAN /
PacGAN protocol, gan_lab.evaluation.metrics.mixture_metrics), gan-lab's digit classifier (MNIST,
Fashion-MNIST; gan_lab.evaluation.classifier), the 1,000-mode histogram (Stacked MNIST) or Inception
(RGB images). A data set that declares none has no metrics, and no_metrics_note() says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from gan_lab.data import DigitClasses, InceptionScores, ModeCoverage, StackedDigits, import_torchvision
from gan_lab.errors import GanLabError
from gan_lab.evaluation.metrics import histogram_kl, mixture_metrics
from gan_lab.options import Option, build_parser
from gan_lab.runs.checkpoint import LAST, load_checkpoint, resolve_checkpoint
from gan_lab.runs.files import atomic_write_text, atomic_writer
from gan_lab.runs.provenance import code_version
from gan_lab.runs.rebuild import rebuild_data, rebuild_generator, rebuild_models

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
                   inception_weights: str | None = None, seed: int = EVAL_SEED) -> Evaluator | None:
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
            evaluators.append(inception_evaluator(measure, inception_weights, seed))
        else:
            raise TypeError(f"{type(data).__name__}.measures() returned {measure!r}, which gan-lab cannot measure")
    if not evaluators:
        return None
    if len(evaluators) == 1:
        return evaluators[0]
    return lambda G: {k: v for evaluate in evaluators for k, v in evaluate(G).items()}


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


class _Images(torch.utils.data.Dataset):
    """uint8 (N, 3, H, W) images as the Dataset torch-fidelity reads."""

    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def inception_evaluator(measure: InceptionScores, weights: str | None, seed: int = EVAL_SEED) -> Evaluator:
    """FID, Inception Score and KID through torch-fidelity, the field's reference implementation.

    The Inception weights come from `weights` (a local .pth, torch-fidelity's
    weights-inception-2015-12-05-6726825d.pth) or torch-fidelity's own download. Without
    them the run says so once and goes on with the metrics it has.
    """
    n = measure_samples(measure)
    real = measure.real[:n].cpu()
    state = {"off": False}

    def inception(G: nn.Module) -> dict[str, float]:
        if state["off"]:
            return {}
        import torch_fidelity

        fake = generate(G, n, class_labels(G, n), seed=seed)
        fake = fake.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()
        try:
            m = torch_fidelity.calculate_metrics(
                input1=_Images(fake), input2=_Images(real), isc=True, fid=True, kid=True,
                kid_subset_size=min(1000, n), cuda=torch.cuda.is_available(), verbose=False,
                feature_extractor_weights_path=weights, cache=True, input2_cache_name=f"gan-lab-{measure.name}-{n}")
        except OSError as err:
            from gan_lab.runs.tracker import console

            state["off"] = True
            where = f"from {weights}" if weights else "by download"
            console.print(f"[yellow]gan-lab: Inception metrics (FID, IS, KID) are off for this run: the Inception "
                          f"weights could not be loaded {where} ({err}). Put torch-fidelity's "
                          f"weights-inception-2015-12-05-6726825d.pth on this machine and pass "
                          f"inception_weights=/path/to/it (or set GAN_LAB_INCEPTION_WEIGHTS); the other "
                          f"metrics go on.[/]", soft_wrap=True, highlight=False)
            return {}
        return {"metrics/fid": float(m["frechet_inception_distance"]),
                "metrics/inception_score": float(m["inception_score_mean"]),
                "metrics/kid": float(m["kernel_inception_distance_mean"])}
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
REJECTION_HELP = ("none, or drs: Discriminator Rejection Sampling (Azadi et al. 2019) with the run's critic; "
                  "prints the acceptance rate")


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


def eval_parser() -> argparse.ArgumentParser:
    """`gan-lab eval`'s keys, their meanings and defaults (its --help)."""
    return build_parser("eval", "Every metric that applies to a checkpoint's data set, as a table and as JSON.", [
        Option("checkpoint", None, str, "a run directory (its checkpoints/last.pt) or a .pt file (required)"),
        Option("seed", EVAL_SEED, int, "seed of the generated samples (the run's own metrics use the default)"),
        Option("device", "cpu", str, "cpu or cuda[:N]"),
        Option("out", None, str, "the JSON file to write (default: <run dir>/eval.json, and for other settings "
                                 "their own file: eval_drs.json, eval_seed1.json, ...)"),
        Option("inception_weights", os.environ.get("GAN_LAB_INCEPTION_WEIGHTS"), str,
               "torch-fidelity's Inception .pth for FID/IS/KID on RGB data ($GAN_LAB_INCEPTION_WEIGHTS)"),
        Option("rejection", "none", str, REJECTION_HELP),
        Option("data.root", None, str, "the folder holding the checkpoint's data set on this machine (default: the "
                                       "checkpoint's data.root, else $GAN_LAB_DATA_ROOT when that folder is not here)"),
    ], examples="  gan-lab eval checkpoint=outputs/<date>/<time>\n  gan-lab eval checkpoint=run/checkpoints/step_00001000.pt seed=1\n"
                "  gan-lab eval checkpoint=<run dir from another machine> data.root=/path/to/data")


def sample_parser() -> argparse.ArgumentParser:
    """`gan-lab sample`'s keys, their meanings and defaults (its --help)."""
    return build_parser("sample", "Samples from a checkpoint's generator: a PNG (image grid or 2-D scatter) and a .pt.", [
        Option("checkpoint", None, str, "a run directory (its checkpoints/last.pt) or a .pt file (required)"),
        Option("n", 64, int, "how many samples"),
        Option("seed", 0, int, "seed of the noise z"),
        Option("interpolate", False, bool, "rows of 10 samples along straight lines in z instead of random z"),
        Option("label", None, int, "the class to draw, for a conditional model (default: every class in turn)"),
        Option("device", "cpu", str, "cpu or cuda[:N]"),
        Option("out", None, str, "the folder to write to (default: <run dir>/samples)"),
        Option("rejection", "none", str, REJECTION_HELP),
    ], examples="  gan-lab sample checkpoint=outputs/<date>/<time> n=64\n  gan-lab sample checkpoint=<run dir> n=30 interpolate=true")


def eval_command(args: list[str]) -> None:
    """`gan-lab eval checkpoint=<run dir or .pt>`: every metric that applies, as a table and JSON."""
    from rich.table import Table

    from gan_lab.options import parse
    from gan_lab.runs.tracker import console

    opts = parse(eval_parser(), args)
    if not opts["checkpoint"]:
        raise GanLabError("gan-lab eval needs checkpoint=<run directory or .pt file>.")
    seed = opts["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GanLabError(f"seed={seed} is out of range: the seed of the evaluation's z must be a whole number >= 0.")
    code = code_version()  # the code as it is when the evaluation starts
    G, state, file = load_generator(str(opts["checkpoint"]), opts["device"])
    config = state["config"]
    root = data_root_here(config, opts["data.root"])
    if root is not None:  # read where the data lives here, not where it lived when the run trained
        config = {**config, "data": {**config["data"], "root": root}}
    data = rebuild_data(config, file, opts["device"])
    evaluator = make_evaluator(data, root, inception_weights=opts["inception_weights"], seed=seed)
    if evaluator is None:
        raise GanLabError(f"gan-lab eval has nothing to measure: {no_metrics_note(data)}")
    sampler = rejection_sampler(opts["rejection"], state, file, opts["device"], seed)
    metrics = evaluator(sampler if sampler is not None else G)
    if sampler is not None:  # beside the metrics: how much of G's output the critic let through
        metrics["rejection/acceptance_rate"] = sampler.acceptance_rate
    # each evaluation keeps its own record: rejection=drs or seed=1 never overwrites the plain one
    label = evaluation_label(str(file), seed, opts["rejection"])
    out = Path(opts["out"]) if opts["out"] else eval_file(run_dir_of(file), label)
    # JSON has no inf/NaN: a metric that is undefined (no high-quality sample) is written as null
    finite = {k: v if math.isfinite(v) else None for k, v in metrics.items()}
    n = eval_samples(data)
    atomic_write_text(out, json.dumps({"checkpoint": str(file), "seed": seed, "samples": n,
                                       "device": str(opts["device"]), "code": code, "rejection": opts["rejection"],
                                       **finite}, indent=2))
    console.print(f"[bold]gan-lab eval[/] {file}", soft_wrap=True, highlight=False)
    # the protocol, and whether it is the one behind the run's own final metrics/* (status.json, TensorBoard)
    same = (f"the run's own final metrics/* used the same, so they match on the device the run trained on"
            if seed == EVAL_SEED else f"the run's own metrics/* used seed {EVAL_SEED}, so these differ from them "
                                      f"by sampling noise")
    if sampler is not None:
        same = "these are after rejection=drs, so they differ from the run's own metrics/* (no rejection)"
    console.print(describe_generator(state), soft_wrap=True, highlight=False)
    console.print(f"protocol: {n} samples, z from seed {seed} (drawn on the CPU), G in eval mode on "
                  f"{opts['device']}; {same}.", soft_wrap=True, highlight=False)
    table = Table()
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key.removeprefix("metrics/"), f"{value:.4g}")
    console.print(table)
    if sampler is not None:
        console.print(describe_rejection(sampler), soft_wrap=True, highlight=False)
    console.print(f"written to {out}", soft_wrap=True, highlight=False)


def sample_command(args: list[str]) -> None:
    """`gan-lab sample checkpoint=<run dir or .pt> n=64`: a PNG (grid or scatter) and the raw samples."""
    from gan_lab.options import parse
    from gan_lab.runs.tracker import console

    opts = parse(sample_parser(), args)
    if not opts["checkpoint"]:
        raise GanLabError("gan-lab sample needs checkpoint=<run directory or .pt file>.")
    n = opts["n"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GanLabError(f"n={n} is out of range: the number of samples must be a whole number >= 1.")
    G, state, file = load_generator(str(opts["checkpoint"]), opts["device"])
    config = state["config"]
    label = opts["label"]
    if label is not None and not G.n_classes:
        raise GanLabError(f"label={label} needs a conditional model, but {file} holds an "
                          f"unconditional one. Drop label=, or train with model.conditional=true.")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < G.n_classes):
        raise GanLabError(f"label={label} is out of range: this model knows labels 0 to {G.n_classes - 1}.")
    sampler = rejection_sampler(opts["rejection"], state, file, opts["device"], int(opts["seed"]))
    if sampler is not None and opts["interpolate"]:
        raise GanLabError("rejection=drs cannot draw an interpolation: rejecting points would break its straight "
                          "lines in z. Drop one of interpolate=true and rejection=drs.")
    torch.manual_seed(int(opts["seed"]))
    out = Path(opts["out"]) if opts["out"] else run_dir_of(file) / "samples"
    out.mkdir(parents=True, exist_ok=True)
    step = state["step"]
    z = _interpolation_z(G.z_dim, n) if opts["interpolate"] else torch.randn(n, G.z_dim)
    device = next(G.parameters()).device
    if label is not None:
        y = torch.full((len(z),), label, dtype=torch.long, device=device)
    else:  # a conditional model without label=: every class in turn
        y = class_labels(G, len(z))
    with torch.no_grad():
        G.eval()
        x = (sampler if sampler is not None else G)(z.to(device), y).cpu()
    kind = "interpolation" if opts["interpolate"] else "sample"
    name = (f"{kind}_step{step}_seed{opts['seed']}" + (f"_label{label}" if label is not None else "")
            + ("_drs" if sampler is not None else ""))
    with atomic_writer(out / f"{name}.pt") as tmp:  # each file whole or absent, even after a Ctrl-C
        torch.save(x, tmp)
    if x.dim() == 4:
        torchvision = import_torchvision()  # one paragraph, not a traceback, when it does not fit this torch
        nrow = 10 if opts["interpolate"] else max(1, int(round(n ** 0.5)))
        with atomic_writer(out / f"{name}.png") as tmp:
            torchvision.utils.save_image(x, tmp, nrow=nrow, normalize=True, value_range=(-1, 1))
    else:
        from gan_lab.evaluation.plots import scatter_2d

        real, _ = rebuild_data(config, file).sample(max(n, 1000))
        with atomic_writer(out / f"{name}.png") as tmp:
            scatter_2d(real, x, step).savefig(tmp, dpi=100)
    console.print(f"{n} samples of {file} (step {step}) -> {out / name}.png and .pt", soft_wrap=True,
                  highlight=False)
    console.print(describe_generator(state), soft_wrap=True, highlight=False)
    if sampler is not None:
        console.print(describe_rejection(sampler), soft_wrap=True, highlight=False)


def _interpolation_z(z_dim: int, n: int, steps: int = 10) -> Tensor:
    # n // steps rows, each a straight line in z between two random endpoints
    rows = max(1, n // steps)
    a, b = torch.randn(rows, 1, z_dim), torch.randn(rows, 1, z_dim)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    return (a + t * (b - a)).reshape(rows * steps, z_dim)
