"""Naming what goes wrong while a run trains: mode collapse, vanishing generator gradients, a critic
that wins outright, a critic far from 1-Lipschitz, divergence.

The Diagnosis watches the named scalars a run already reports (the steps' losses and gradient
norms, the critic's input-gradient norm, the Wasserstein estimate, r_t, the evaluations' metrics/*)
and names each failure once per episode: when it begins, with the step and one thing to try that
gan-lab's own measured tables support, and when it ends. It reads nothing but those scalars, so
scripts/diagnosis_check.py replays it over a finished run's event files and gets the same episodes.
Its thresholds, and how often they fire on runs that ended healthy, are in docs/diagnosis.md.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from gan_lab.losses import Loss
from gan_lab.training import distributed
from gan_lab.training.observers import observing

# ---- thresholds (chosen and measured: docs/diagnosis.md) -------------------------------------
COLLAPSE_FRACTION = 0.75   # fewer than this fraction of the modes (classes) covered at an evaluation
DIVERSITY_FRACTION = 0.5   # no mode metric: samples' mean pairwise distance below this fraction of real data's
# the critic loss below which real and fake are separated almost perfectly is the loss's own declaration
# (gan_lab.losses.Loss.separated_below: 0.05 for the BCE losses), so the rule follows each loss's scale
GRAD_COLLAPSE = 0.01       # the generator's gradient norm below this fraction of its median so far
# r_t = E[sign(D(x_real))] (StyleGAN2-ADA) above this, with the critic loss below the loss's separated_below: the
# critic calls every real sample real and separates the fakes too. ADA keeps r_t at 0.6 by augmenting; a
# critic that wins outright sits at 1
R_T_WINS = 0.9
LIPSCHITZ_FAR = 10.0       # a Wasserstein critic's input-gradient norm above this (1-Lipschitz: about 1)
RUNAWAY = 10.0             # a loss or the Wasserstein estimate above this many times max(1, its median so far)
PERSIST = 3                # log steps in a row a per-step condition must hold to begin (or fail to, to end)
WARMUP = 5                 # log steps seen before the per-step conditions are judged (early medians are noise)
DIVERSITY_SAMPLES = 256    # samples (and real samples) whose mean pairwise distance is compared

KINDS = ("mode_collapse", "vanishing_gradients", "critic_wins", "non_lipschitz", "divergence")
TITLES = {"mode_collapse": "mode collapse", "vanishing_gradients": "vanishing generator gradients",
          "critic_wins": "a critic that wins outright",
          "non_lipschitz": "a critic far from 1-Lipschitz", "divergence": "divergence"}

# One thing to try per failure, each quoting a table gan-lab measured (the docs name the command).
ADVICE = {
    "mode_collapse/points": "try +experiment=grid25_sharp (loss=r3gan, lr 2e-3 falling linearly): it covered 25/25 "
                            "modes of grid25 and 8/8 of ring8 in 5/5 seeds (docs/cures_recipe.md)",
    "mode_collapse/images": "try optimizer=adam_ttur or data.augment=[translation,color,cutout]: the only cures that "
                            "covered 10/10 classes on both MNIST and Fashion-MNIST at 300 steps (docs/cures_mnist.md)",
    "vanishing_gradients": "try loss=wgan_gp, whose critic does not saturate: 8/8 modes of ring8 in 5/5 seeds with "
                           "the lowest reverse KL, 0.023 (docs/results.md)",
    "critic_wins": "try data.augment=[translation,color,cutout] (DiffAugment: the critic sees augmented reals and "
                   "fakes, StyleGAN2-ADA's cure for r_t near 1; it covered 10/10 classes on both MNIST and "
                   "Fashion-MNIST at 300 steps, docs/cures_mnist.md), or an R1 penalty on the real data "
                   "(loss.lambda_r1, e.g. the data set's recommended gamma), which keeps the critic from sharpening",
    "non_lipschitz/clip": "try loss=wgan_gp, a gradient penalty instead of weight clipping: 23.6 against 16.6 modes "
                          "of grid25 (docs/results.md)",
    "non_lipschitz/gp": "raise loss.lambda_gp: the data set's lambda (1 on grid25) covered 25/25 modes in 5/5 seeds "
                        "with optimizer.lr=1e-3 train.lr_schedule=linear (docs/results_long.md)",
    "divergence": "try train.lr_schedule=linear (both learning rates fall to 0): with it WGAN-GP covered 25/25 modes "
                  "of grid25 in 5/5 seeds, lowest seed 95.8% high quality (docs/results_long.md)",
}


@dataclass
class Episode:
    """One stretch of one failure: when it began (and ended), and what was said."""

    kind: str
    began: int
    message: str
    ended: int | None = None


class Diagnosis:
    """Watches a run's scalars step by step and names failures once per episode.

    `loss` is the run's Loss (or its class): what it declares decides the rules (a Wasserstein-like critic:
    the Lipschitz and Wasserstein-estimate checks; a loss with a separation threshold: the vanishing-gradient
    check against it), `clipped` whether the critic's weights are clipped, `images` whether the data are
    images (which advice fits a collapse), `stop` whether a failure ends the run (train.on_failure=stop).
    """

    def __init__(self, loss: Loss | type[Loss], clipped: bool = False, images: bool = False, stop: bool = False):
        self.wasserstein, self.separated_below = loss.wasserstein_critic, loss.separated_below
        self.undecided_at = getattr(loss, "undecided_at", None)  # r_t is logged only where one score means something
        self.clipped, self.images, self.stop = clipped, images, stop
        self.episodes: list[Episode] = []
        self.open: dict[str, Episode] = {}
        self.history: dict[str, list[float]] = {}  # per-step scalars seen so far (medians)
        self.streak: dict[str, list[int]] = {kind: [] for kind in KINDS}  # the log steps in a row its state changed
        self.logged = 0
        self.runaway: set[str] = set()  # the tags this log step found running away (left out of their medians)
        self.peak: tuple[float, int] | None = None  # most modes covered so far, and the step
        self.previous: tuple[float, int] | None = None  # the modes covered at the last evaluation, and its step
        self.stopped: str | None = None  # the reason, once on_failure=stop ended the run

    # ---- what each failure looks like ---------------------------------------------------------
    def _collapse(self, step: int, values: dict[str, float]) -> str | None | bool:
        """At an evaluation: a message when modes are lost, False when enough are covered, None: nothing to say."""
        if "metrics/modes_covered" in values and "metrics/n_modes" in values:
            covered, n, unit = values["metrics/modes_covered"], values["metrics/n_modes"], "modes"
            low = COLLAPSE_FRACTION * n
        elif "metrics/classes_covered" in values:
            covered, n, unit = values["metrics/classes_covered"], 10.0, "classes"
            low = COLLAPSE_FRACTION * n
        elif "diagnosis/sample_diversity" in values:  # no modes nor classes: diversity against the real data's
            covered, n, unit = values["diagnosis/sample_diversity"], 1.0, "diversity"
            low = DIVERSITY_FRACTION
        else:
            return None
        previous, self.previous = self.previous, (covered, step)
        if self.peak is None or covered > self.peak[0]:
            self.peak = (covered, step)
        if not covered < low:
            return False
        # too few, and not gaining: fewer than it had, or no more than at the last evaluation. A first
        # evaluation, or a run still spreading out, says nothing yet (an open episode stays open).
        if previous is None or covered > previous[0]:
            return None
        if unit == "diversity":
            return (f"the samples' diversity is {covered:.2f} of the real data's (it was {self.peak[0]:.2f} at "
                    f"step {self.peak[1]:,})")
        if self.peak[0] > covered:
            return f"{covered:.0f} of {n:.0f} {unit} left (it had {self.peak[0]:.0f} at step {self.peak[1]:,})"
        return f"{covered:.0f} of {n:.0f} {unit} covered, no more than at step {previous[1]:,}"

    def _vanishing(self, values: dict[str, float]) -> str | None:
        # a loss without a floor (Wasserstein-like, an f-divergence's) cannot say when its critic separates
        if self.separated_below is None or "loss/critic" not in values or "grad_norm/generator" not in values:
            return None
        reference = _median(self.history.get("grad_norm/generator", []))
        grad, loss = values["grad_norm/generator"], values["loss/critic"]
        if loss < self.separated_below and reference > 0 and grad < GRAD_COLLAPSE * reference:
            return (f"the critic separates real from fake almost perfectly (critic loss {loss:.3g}) while the "
                    f"generator's gradient norm fell to {grad:.2g}, {grad / reference:.1%} of its median")
        return None

    def _critic_wins(self, values: dict[str, float], vanishing: str | None) -> str | None:
        # the critic separates real from fake and calls (nearly) every real sample real; where the generator's
        # gradient is gone too, the vanishing-gradient rule names it instead
        r_t, loss = values.get("critic/r_t"), values.get("loss/critic")
        if vanishing or self.undecided_at is None or self.separated_below is None or r_t is None or loss is None:
            return None
        if loss < self.separated_below and r_t > R_T_WINS:
            return (f"critic loss {loss:.3g} and r_t = E[sign D(x_real)] = {r_t:.2f}: the critic calls "
                    f"{(1 + r_t) / 2:.0%} of the real samples real and separates the fakes almost perfectly (r_t is StyleGAN2-ADA's "
                    f"overfitting signal; ADA holds it at 0.6)")
        return None

    def _non_lipschitz(self, values: dict[str, float]) -> str | None:
        norm = values.get("grad_norm/critic_input")
        if not self.wasserstein or norm is None or not norm > LIPSCHITZ_FAR:
            return None
        return f"its input-gradient norm is {norm:.3g} (a Wasserstein critic needs about 1)"

    def _divergence(self, values: dict[str, float]) -> str | None:
        tags = ["loss/critic", "loss/generator"] + (["critic/wasserstein_estimate"] if self.wasserstein else [])
        found = None
        for tag in tags:
            if tag not in values:
                continue
            value = values[tag]
            if not math.isfinite(value):
                return f"{tag} is {value}"
            reference = max(1.0, _median([abs(v) for v in self.history.get(tag, [])]))
            if abs(value) > RUNAWAY * reference:
                # kept out of the median: a loss that keeps running away must not become its own yardstick
                self.runaway.add(tag)
                found = found or f"{tag} ran away to {value:.3g}, {abs(value) / reference:.0f}x its median so far"
        return found

    # ---- episodes ---------------------------------------------------------------------------
    def observe(self, step: int, values: dict[str, float]) -> list[str]:
        """The scalars of one step (a log step's, an evaluation's, or both): the lines to say, if any."""
        said: list[str] = []
        if any(tag in values for tag in ("loss/critic", "loss/generator")):
            self.logged += 1
            # non-finite values are judged at once: a NaN never comes back
            nonfinite = any(not math.isfinite(v) for k, v in values.items() if k.startswith(("loss/", "critic/")))
            if self.logged > WARMUP or nonfinite:
                vanishing = self._vanishing(values)
                for kind, finding in (("vanishing_gradients", vanishing),
                                      ("critic_wins", self._critic_wins(values, vanishing)),
                                      ("non_lipschitz", self._non_lipschitz(values)),
                                      ("divergence", self._divergence(values))):
                    said += self._persisting(kind, step, finding, at_once=nonfinite and kind == "divergence")
            for tag in ("loss/critic", "loss/generator", "grad_norm/generator", "critic/wasserstein_estimate"):
                if tag in values and math.isfinite(values[tag]) and tag not in self.runaway:
                    self.history.setdefault(tag, []).append(values[tag])
            self.runaway.clear()
        collapse = self._collapse(step, values)
        if collapse is not None:  # evaluations are far apart: one is enough to begin or end an episode
            said += self._set("mode_collapse", step, collapse or None)
        return said

    def _persisting(self, kind: str, step: int, finding: str | None, at_once: bool = False) -> list[str]:
        # a per-step condition begins an episode after PERSIST log steps in a row, and ends it after as many without
        held = (finding is not None) != (kind in self.open)  # the state differs from the episode's
        self.streak[kind] = self.streak[kind] + [step] if held else []
        if held and (len(self.streak[kind]) >= PERSIST or at_once):
            began = self.streak[kind][0]  # the episode began (or ended) where the streak did
            self.streak[kind] = []
            return self._set(kind, began, finding)
        return []

    def _set(self, kind: str, step: int, finding: str | None) -> list[str]:
        episode = self.open.get(kind)
        if finding is not None and episode is None:
            episode = Episode(kind, step, f"{TITLES[kind]} from step {step:,}: {finding}. {self._advice(kind)}.")
            self.episodes.append(episode)
            self.open[kind] = episode
            if self.stop and self.stopped is None:
                self.stopped = episode.message
            return [episode.message]
        if finding is None and episode is not None:
            episode.ended = step
            del self.open[kind]
            return [f"{TITLES[kind]} that began at step {episode.began:,} ended at step {step:,}."]
        return []

    def _advice(self, kind: str) -> str:
        key = {"mode_collapse": f"mode_collapse/{'images' if self.images else 'points'}",
               "non_lipschitz": f"non_lipschitz/{'clip' if self.clipped else 'gp'}"}.get(kind, kind)
        return ADVICE[key][0].upper() + ADVICE[key][1:]

    # ---- what the run reports -------------------------------------------------------------------
    def watch(self, step: int, values: dict[str, float], tracker: Any, G: nn.Module, critic: nn.Module, data: Any,
              settings: Any, main: bool = True) -> bool:
        """One step of the training loop: True on every rank when train.on_failure=stop should end the run here.

        At log and evaluation steps rank 0 observes `values` (the step's scalars) and, at an evaluation
        step, G's sample diversity, and reports what it names through the tracker.
        """
        due = bool(settings.eval_every and step % settings.eval_every == 0) or step == settings.steps
        if not (values or due):
            return False  # the same on every rank: neither a log nor an evaluation step
        device = next(G.parameters()).device
        if main:
            with observing(device, G, critic, seed=0):  # the same z at every evaluation; training is untouched
                diversity = sample_diversity(G, data) if due else {}
            lines = self.observe(step, {**values, **diversity})
            tracker.diagnosis(step, {**diversity, **self.scalars()}, lines)
        return distributed.any_rank(main and self.stopped is not None, device)  # DDP: all ranks stop at one step

    def scalars(self) -> dict[str, float]:
        """diagnosis/<kind>: 1 while an episode of it is open, else 0."""
        return {f"diagnosis/{kind}": float(kind in self.open) for kind in KINDS}

    def record(self, halted: bool = False) -> dict[str, Any]:
        """What status.json carries: every episode, a one-line summary, and why the run stopped (halted: it did)."""
        return {"summary": summary(self.episodes), "stopped": self.stopped if halted else None,
                "episodes": [asdict(episode) for episode in self.episodes]}


def summary(episodes: list[Episode]) -> str:
    """'mode collapse from 1,000; divergence from 2,150 (ended 2,400)', or 'none'."""
    parts = [f"{TITLES[e.kind]} from {e.began:,}" + (f" (ended {e.ended:,})" if e.ended is not None else "")
             for e in episodes]
    return "; ".join(parts) or "none"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


@torch.no_grad()
def sample_diversity(G: nn.Module, data: Any, n: int = DIVERSITY_SAMPLES) -> dict[str, float]:
    """The samples' mean pairwise distance over the real data's: near 0 when G makes one thing over and over.

    The collapse measure of data that declare no modes or classes (an unlabelled image folder,
    the swiss roll); logged for every data set, so its threshold can be checked where modes are known.
    """
    real, _ = data.sample(n)
    z = torch.randn(n, G.z_dim, device=real.device)
    y = torch.arange(n, device=real.device) % G.n_classes if G.n_classes else None
    fake = G(z, y)
    spread = [torch.pdist(batch.flatten(1).float()).mean() for batch in (fake, real)]
    return {"diagnosis/sample_diversity": float(spread[0] / spread[1].clamp_min(1e-12))}
