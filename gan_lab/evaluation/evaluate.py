"""Metrics for a trained generator, built from what its data declares it measures, and `gan-lab eval` / `sample`.

A data set's measures() (gan_lab.data, gan_lab.folder) returns gan_lab.measures.Measure objects, each
carrying its own computation; make_evaluator builds and calls each one's evaluator, never asking which
kind it is. A data set that declares none has no metrics, and no_metrics_note() says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gan_lab.errors import GanLabError
# generate, class_labels, label_accuracy, stacked_modes and EVAL_SEED stay importable from here
from gan_lab.evaluation.sampling import (EVAL_SEED, class_labels, generate, label_accuracy,  # noqa: F401
                                         stacked_modes)
from gan_lab.measures import EvalContext, Evaluator, Measure
from gan_lab.runs.checkpoint import LAST, load_checkpoint, resolve_checkpoint
from gan_lab.runs.rebuild import rebuild_generator, rebuild_models


def measures(data: Any) -> tuple[Measure, ...]:
    """What a data set declares it measures (its measures()); () for one that declares nothing."""
    declare = getattr(data, "measures", None)
    return tuple(declare()) if declare is not None else ()


def no_metrics_note(data: Any) -> str:
    """Why a data set has no metrics/*: it declares no measures."""
    return (f"data '{getattr(data, 'name', '?')}' ({type(data).__name__}) declares no metrics (its measures() names "
            f"none), so there are no metrics/* for it. A data class declares them from gan_lab/measures.py: mode "
            f"centres and sigma (ModeCoverage), a digit classifier (DigitClasses), the Stacked MNIST histogram "
            f"(StackedDigits) or Inception (InceptionScores).")


def eval_context(classifier_root: str | None = None, cache_dir: str | None = None,
                 inception_weights: str | None = None, seed: int = EVAL_SEED,
                 fid_samples: int | None = None) -> EvalContext:
    """What measures build their evaluators from, with this layer's tools handed down (gan_lab.evaluation.tools)."""
    from gan_lab.evaluation import tools

    return EvalContext(classifier_root, cache_dir, inception_weights, seed, fid_samples, tools=tools)


def make_evaluator(data: Any, classifier_root: str | None = None, cache_dir: str | None = None,
                   inception_weights: str | None = None, seed: int = EVAL_SEED,
                   fid_samples: int | None = None, in_eval: bool = False) -> Evaluator | None:
    """A function G -> {"metrics/...": value} for what this data set measures, or None when it declares nothing.

    Training's evaluator computes the measures that run while training; `in_eval` (gan-lab eval) adds
    those that run only there (memorisation). Its z come from `seed` alone, so training's final
    metrics and `gan-lab eval` of the same checkpoint (same seed, same device) are the same numbers.
    """
    context = eval_context(classifier_root, cache_dir, inception_weights, seed, fid_samples)
    evaluators = [measure.evaluator(context) for measure in measures(data) if in_eval or measure.during_training]
    if not evaluators:
        return None
    if len(evaluators) == 1:
        return evaluators[0]

    def every(G: nn.Module) -> dict[str, float]:
        return {k: v for evaluate in evaluators for k, v in evaluate(G).items()}
    every.protocol = {k: v for evaluate in evaluators for k, v in evaluation_protocol(evaluate).items()}
    every.reports = [report for evaluate in evaluators for report in getattr(evaluate, "reports", [])]
    every.reference = lambda: {k: v for evaluate in evaluators for k, v in held_out_reference(evaluate).items()}
    return every


def held_out_reference(evaluator: Evaluator | None) -> dict[str, float]:
    """The evaluator's metrics for real data the generator never saw, same protocol (its `reference`); {} if none."""
    reference = getattr(evaluator, "reference", None)
    return dict(reference()) if reference is not None else {}


def evaluation_protocol(evaluator: Evaluator | None) -> dict[str, Any]:
    """What an evaluator records about how it measures (Inception's counts, split, weights); {} when nothing."""
    return dict(getattr(evaluator, "protocol", {}))


def eval_samples(data: Any) -> int:
    """How many samples make_evaluator's metrics draw for this data set (the protocols' sizes; 0: no metrics)."""
    return max((measure.samples() for measure in measures(data)), default=0)


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


def evaluation_label(checkpoint: str, seed: int, rejection: str, fid_samples: int | None = None,
                     device: str = "cpu", protocol: dict[str, Any] | None = None) -> str:
    """What sets an evaluation apart from the plain one (checkpoints/last.pt, seed 0, no rejection, the default
    sample count, the CPU, the reference Inception weights): 'plain' for it.

    fid_samples: the count asked for when it is not the data's default. protocol: the evaluator's, whose
    weights name the evaluation when they are not torch-fidelity's reference ones.
    """
    name = Path(checkpoint).name
    parts = ([name] if name != LAST else []) + ([f"rejection={rejection}"] if rejection != "none" else [])
    parts += [f"seed={seed}"] if seed != EVAL_SEED else []
    parts += [f"fid_samples={fid_samples}"] if fid_samples is not None else []
    parts += [f"device={device}"] if device != "cpu" else []  # another device's kernels: other last digits
    if protocol and protocol.get("reference_weights") is False:
        parts.append(f"weights={protocol['weights_sha256'][:8]}")
    return " ".join(parts) or "plain"


def eval_file(run_dir: Path, label: str) -> Path:
    """Each evaluation's own record in the run directory: eval.json (plain), eval_drs.json, eval_seed1.json,
    eval_fid_samples50000.json, eval_devicecuda0.json, ..."""
    if label == "plain":
        return run_dir / "eval.json"
    for long, short in ((".pt", ""), ("rejection=", ""), ("=", ""), (":", ""), (" ", "_")):
        label = label.replace(long, short)
    return run_dir / f"eval_{label}.json"


def interpolation_z(z_dim: int, n: int, steps: int = 10) -> Tensor:
    """n // steps rows of `steps` noise vectors, each row a straight line in z between two random endpoints."""
    rows = max(1, n // steps)
    a, b = torch.randn(rows, 1, z_dim), torch.randn(rows, 1, z_dim)
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    return (a + t * (b - a)).reshape(rows * steps, z_dim)
