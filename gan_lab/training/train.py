"""The training loop: n_critic critic steps, then one generator step, repeated.

The critic step and the generator step are small functions that return a dict of
named scalars (device tensors: nothing here calls .item(), so the loop never waits
for the device except at log time). Beside it: the settings it takes (settings.py), what
watches a run (observers.py) and what a checkpoint carries over to a resume (resume.py).
"""

from __future__ import annotations

import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from gan_lab.losses import Loss, clip_weights
from gan_lab.runs.safety import Interrupted, NonFiniteGuard, StopSignal
from gan_lab.runs.tracker import Tracker, console, scalars_to_floats
from gan_lab.training import distributed, graphs, observers
from gan_lab.training.diagnosis import Diagnosis
from gan_lab.training.ema import GeneratorEMA
from gan_lab.training.observers import observing, with_critic_input_stats
from gan_lab.training.resume import Checkpointer, restore
from gan_lab.training.schedules import LRSchedule, lr_schedule
from gan_lab.training.settings import CriticSchedule, TrainSettings
from gan_lab.training.unroll import lookahead


def autocast(x: Tensor, dtype: torch.dtype | None) -> Any:
    """Forward passes under autocast to dtype on x's device; a no-op for None (float32)."""
    return torch.autocast(x.device.type, dtype=dtype) if dtype is not None else nullcontext()


def critic_step(G: nn.Module, critic: nn.Module, loss: Loss, opt: torch.optim.Optimizer, x: Tensor, z: Tensor,
                y: Tensor | None = None, guard: NonFiniteGuard | None = None, step: int | Tensor = 0,
                amp: torch.dtype | None = None, penalty_scale: int = 1, clip: float = 0.0) -> dict[str, Tensor]:
    """One critic update on a real batch x (labels y) and fakes G(z, y); returns named scalars.

    `step` is the generator step (a device tensor inside a CUDA graph); `amp` the autocast
    dtype of the forward passes, whose scores are taken back to float32 for the losses;
    `penalty_scale` multiplies the loss's penalties (lazy regularisation: 0 on the steps it skips, k on
    every k-th); `clip` > 0 clamps the critic's weights to [-clip, clip] after the step (WGAN).
    """
    with torch.no_grad(), autocast(x, amp):
        fake = G(z, y).float()  # no graph through G: the critic step must not train the generator
    total, stats, real_out, fake_out = critic_objective(critic, loss, x, fake, y, amp, penalty_scale)
    opt.zero_grad(set_to_none=True)
    total.backward()
    stats["grad_norm/critic"] = _grad_norm(critic)
    if guard is None or guard.allow(step, {"loss/critic": total.detach(), "grad_norm/critic": stats["grad_norm/critic"]}):
        opt.step()
    if clip > 0:
        clip_weights(critic, clip)  # after the step, so the critic stays in the clipped box
    stats["critic/real"], stats["critic/fake"] = real_out.detach().mean(), fake_out.detach().mean()
    if loss.wasserstein_critic:  # only such a critic's mean difference estimates the earth mover's distance
        stats["critic/wasserstein_estimate"] = stats["critic/real"] - stats["critic/fake"]
    if loss.undecided_at is not None:  # r_t: the fraction of reals called real, minus those called fake (ADA)
        stats["critic/r_t"] = torch.sign(real_out.detach() - loss.undecided_at).mean()
    return stats


def critic_objective(critic: Callable[..., Tensor], loss: Loss, x: Tensor, fake: Tensor, y: Tensor | None = None,
                     amp: torch.dtype | None = None, penalty_scale: int = 1,
                     ) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
    """The critic's loss on x and fakes: the adversarial term plus penalty_scale x the penalties (0: none).

    Returns the total, the named scalars of its terms, and the real and fake scores. The critic
    step takes it on detached fakes; the unrolled look-ahead (gan_lab.training.unroll) on fakes with G's graph.
    """
    # Points the critic scores: real, fake, and each penalty's points (interpolates, points near x;
    # R1's are x itself and R2's G(z) itself, scored once for the loss and the penalty).
    # Those whose input gradient is penalised are leaves that require grad.
    x = x.detach()
    penalties = loss.penalties() if penalty_scale else []
    parts, where = [x, fake], []  # where: the index in parts of each penalty's points
    for points in [penalty.points(x, fake) for penalty in penalties]:  # all drawn before any requires grad
        if not any(points is part for part in parts):
            parts.append(points)
        where.append(next(i for i, part in enumerate(parts) if part is points))
    for index in where:
        parts[index].requires_grad_(True)
    with autocast(x, amp):
        outs = [out.float() for out in critic_forward(critic, parts, y)]
    real_out, fake_out = outs[0], outs[1]
    adversarial = loss.d_loss(real_out, fake_out)
    total = adversarial
    stats = {"loss/critic": adversarial.detach()}
    for penalty, index in zip(penalties, where):
        # The points are float32 leaves, so the input gradient and its norm are float32 under bf16 too.
        value = penalty.weight * penalty.value(outs[index], parts[index])
        total = total + penalty_scale * value  # lazy regularisation: 1 step in reg_every, scaled to match
        stats[f"loss/{penalty.tag}"] = value.detach()
    return total, stats, real_out, fake_out


def critic_forward(critic: nn.Module, parts: list[Tensor], y: Tensor | None) -> list[Tensor]:
    """The critic's scores for each batch in `parts` (all labelled y when conditional)."""
    if getattr(critic, "norm", None) == "batch" or getattr(getattr(critic, "module", None), "norm", None) == "batch":
        # batch norm: real and fake batches are normalised apart, as in DCGAN
        return [critic(part, y) for part in parts]
    if isinstance(critic, nn.parallel.DistributedDataParallel):
        # One forward on the concatenated batch: the same scores for a per-sample critic,
        # and exactly one forward per backward, which DDP's reducer needs. chunk, not split by
        # the batch size: a packed critic gives one score per pack. Packs and minibatch-std
        # groups are runs of consecutive rows, and models.check_critic makes the batch a
        # multiple of their size, so none straddles two parts.
        labels = None if y is None else y.repeat(len(parts), *[1] * (y.dim() - 1))  # labels (B,), conditions (B, C)
        return list(critic(torch.cat(parts), labels).chunk(len(parts)))
    # A penalised part (a leaf that requires grad: the interpolates, or x under R1) gets its own
    # forward, so the penalty's input gradient and its double backward run over its rows alone;
    # through one concatenated forward they run over every part's rows (WGAN-GP on the MNIST MLP:
    # 7.8 instead of 5.3 GFLOP per generator step, docs/performance.md). The rest share one forward.
    plain = [part for part in parts if not part.requires_grad]
    scores: Iterator[Tensor] = iter(())
    # cached: a spectral-norm critic computes its weights (one power iteration) once per step,
    # as with a single forward
    with nn.utils.parametrize.cached():
        if plain:
            labels = None if y is None else y.repeat(len(plain), *[1] * (y.dim() - 1))
            scores = iter(critic(plain[0] if len(plain) == 1 else torch.cat(plain), labels).chunk(len(plain)))
        return [critic(part, y) if part.requires_grad else next(scores) for part in parts]


def generator_step(G: nn.Module, critic: nn.Module, loss: Loss, opt: torch.optim.Optimizer, z: Tensor,
                   y: Tensor | None = None, guard: NonFiniteGuard | None = None, step: int | Tensor = 0,
                   amp: torch.dtype | None = None, x: Tensor | None = None, keep: float = 1.0) -> dict[str, Tensor]:
    """One generator update on fresh z (labels y); x: a fresh real batch, given when the loss compares with it.

    `critic` is the critic as it is, or its unrolled look-ahead (gan_lab.training.unroll); `keep` < 1 trains
    on that fraction of the scores only, the highest (top-k training).
    """
    critic.requires_grad_(False)  # the critic's gradients are not needed: skip computing them
    with autocast(z, amp):
        fake_out = critic(G(z, y), y).float()
        # a relativistic loss's real scores: constants for G (no graph: x and the critic need no grad)
        real_out = critic(x, y).float() if x is not None else None
    if keep < 1:
        # top-k training (Sinha et al. 2020): the gradient of only the fakes the critic finds most
        # realistic (a packed critic: its best packs), whose direction is the useful one; a
        # relativistic loss keeps the real samples paired with them
        best = fake_out.topk(max(1, round(keep * len(fake_out)))).indices
        fake_out, real_out = fake_out[best], (real_out[best] if real_out is not None else None)
    g_loss = loss.g_loss(real_out, fake_out)
    auxiliary = getattr(getattr(G, "module", G), "auxiliary_loss", None)  # G's declared term (Generator's docstring)
    extra = {} if auxiliary is None else {"loss/generator_auxiliary": auxiliary(y)}  # of this very forward
    opt.zero_grad(set_to_none=True)
    (g_loss + sum(extra.values()) if extra else g_loss).backward()
    critic.requires_grad_(True)
    norm = _grad_norm(G)
    if guard is None or guard.allow(step, {"loss/generator": g_loss.detach(), "grad_norm/generator": norm}):
        opt.step()
    return {"loss/generator": g_loss.detach(), **{k: v.detach() for k, v in extra.items()}, "grad_norm/generator": norm}


def _grad_norm(module: nn.Module) -> Tensor:
    # global L2 norm of all parameter gradients, computed on the device (no sync)
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


@dataclass
class Iteration:
    """One generator step of training: n_critic critic steps on fresh batches, then the generator step.

    Each network appears twice: as the step that trains it runs it (DDP-wrapped under torchrun,
    compiled under train.compile) and as the other step runs it (no gradient reduced).
    """

    G: nn.Module  # the generator as the generator step trains it
    critic: nn.Module  # the critic as the critic step trains it
    G_frozen: nn.Module  # the generator as the critic step runs it, under no_grad
    critic_frozen: nn.Module  # the critic as the generator step runs it, its parameters frozen
    loss: Loss
    schedule: CriticSchedule  # n_critic, lazy regularisation, clipping, the unrolled look-ahead
    data: Any
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    batch_size: int
    guard: NonFiniteGuard
    amp: torch.dtype | None = None
    lr_schedule: LRSchedule | None = None  # sets both learning rates from the step (None: constant)
    ema: GeneratorEMA | None = None  # averages G into G_ema after each generator step (None: no EMA)
    kept: Callable[[int], float] | None = None  # top-k training: the fraction of fakes G's step keeps (None: all)

    # lazy regularisation: the penalties' values at their last evaluation, reported on steps that skip them
    penalty_stats: dict[str, Tensor] = field(default_factory=dict)

    def __call__(self, step: int | Tensor, phase: tuple[bool, ...] | None = None,
                 ) -> tuple[dict[str, Tensor], tuple[Tensor, Tensor | None, Tensor]]:
        """Train one generator step; returns the named scalars and the last critic step's (x, y, z).

        `phase`: which critic steps add the penalties, as self.phase(step) gives it; a CUDA graph
        passes it from the host, since its `step` is a device tensor.
        """
        regularise = self.phase(int(step)) if phase is None else phase
        if self.lr_schedule is not None:
            self.lr_schedule(step)  # inside the iteration, so a CUDA graph captures it too
        z_dim, n_classes = self.G_frozen.z_dim, self.G_frozen.n_classes
        n_critic, reg_every, clip = self.schedule.n_critic, self.schedule.reg_every, self.schedule.clip
        for i in range(n_critic):
            x, y = self.data.sample(self.batch_size)  # a fresh real batch and fresh z every critic step
            z = torch.randn(self.batch_size, z_dim, device=x.device)
            stats = critic_step(self.G_frozen, self.critic, self.loss, self.opt_d, x, z, y, self.guard, step, self.amp,
                                reg_every if regularise[i] else 0, clip)
            for tag, value in stats.items():
                if tag.endswith("_penalty"):
                    # kept in place: a CUDA graph of a step that skips the penalties reports this same tensor,
                    # which the graph of a regularising step writes
                    held = self.penalty_stats.setdefault(tag, torch.zeros_like(value))
                    held.copy_(value)
        stats = {**self.penalty_stats, **stats}
        x_g = None
        if self.loss.needs_real_in_g or getattr(self.G_frozen, "cond_width", 0):
            # a fresh real batch (its labels or table condition shared by the fakes); else labels (if any), then z
            x_g, y_g = self.data.sample(self.batch_size)
        else:
            y_g = torch.randint(n_classes, (self.batch_size,), device=x.device) if n_classes else None
        # Unrolled GAN: G's step against the critic after `unroll` look-ahead updates (drawn after
        # the generator step's batches, so a run without it makes exactly the draws it always made)
        critic = self.critic_frozen
        z_g = torch.randn_like(z)
        if self.schedule.unroll:
            critic = lookahead(self.critic_frozen, self.opt_d, self.schedule.unroll, self._lookahead_objective, clip)
        keep = self.kept(int(step)) if self.kept is not None else 1.0  # never under a CUDA graph (graph_blocker)
        stats.update(generator_step(self.G, critic, self.loss, self.opt_g, z_g, y_g, self.guard, step, self.amp,
                                    x_g if self.loss.needs_real_in_g else None, keep))
        if self.kept is not None:
            stats["train/topk_fraction"] = z_g.new_tensor(keep)
        if self.ema is not None:
            self.ema(step)  # inside the iteration, so a CUDA graph captures it too
        return stats, (x, y, z)

    def _lookahead_objective(self, critic: Callable[..., Tensor]) -> Tensor:
        """One look-ahead critic loss: a fresh real batch, and fakes that keep G's graph (Metz et al.'s second term)."""
        x, y = self.data.sample(self.batch_size)
        z = torch.randn(self.batch_size, self.G_frozen.z_dim, device=x.device)
        with autocast(x, self.amp):
            fake = self.G(z, y).float()
        return critic_objective(critic, self.loss, x, fake, y, self.amp)[0]

    def phase(self, step: int) -> tuple[bool, ...]:
        """Which critic steps of generator step `step` add the penalties (CriticSchedule.phase)."""
        return self.schedule.phase(step)


def train(G: nn.Module, critic: nn.Module, loss: Loss, schedule: CriticSchedule, data: Any,
          opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, settings: TrainSettings, tracker: Tracker,
          run_dir: Path, config: dict[str, Any], resume: dict[str, Any] | None = None,
          evaluator: Callable[[nn.Module], dict[str, float]] | None = None) -> dict[str, float]:
    """Train G against the critic; returns the scalars of the last logged step and the final metrics."""
    device = next(G.parameters()).device
    ema = GeneratorEMA(G, settings.ema_kimg, settings.ema_rampup, settings.batch_size) if settings.ema_kimg else None
    G_ema = ema.G_ema if ema is not None else G  # what samples and metrics/* show: the average when there is one
    start = restore(resume, G, critic, opt_g, opt_d, ema and ema.G_ema) if resume is not None else 0
    main = distributed.is_main()
    # DDP wrappers all-reduce gradients; the plain modules serve where no gradient is reduced
    # (G under no_grad in the critic step, the frozen critic in the generator step, logging)
    G_ddp, critic_ddp = distributed.wrap(G), distributed.wrap(critic)
    guard = NonFiniteGuard(settings.nonfinite, device)
    lr = lr_schedule(settings.lr_schedule, (opt_g, opt_d), settings.steps, device)  # after restore()
    iteration = Iteration(G_ddp, critic_ddp, G, critic, loss, schedule, data, opt_g, opt_d, settings.batch_size,
                          guard, settings.amp, lr, ema, settings.kept_fraction if settings.topk < 1 else None)
    if settings.compile:
        iteration = graphs.compiled(iteration, settings.compile, penalised=loss.penalised)
    run_iteration = graphs.runner(iteration, settings.cuda_graph, device, start, guard.skip, settings.lr_schedule,
                                  topk=settings.topk < 1, parts={"data": data, "generator": G, "critic": critic})
    # a fixed z from its own generator, so sample grids are comparable across steps and runs
    n_fixed = 64 if len(data.shape) > 1 else 1024
    fixed_z = torch.randn(n_fixed, G.z_dim, generator=torch.Generator().manual_seed(1234)).to(device)
    fixed_y = torch.arange(n_fixed, device=device) % G.n_classes if G.n_classes else None  # each class in turn
    saved = f"the checkpoint of step {start} was not touched" if start else "no checkpoint had been written yet"
    checkpoint = Checkpointer(run_dir, settings.keep_checkpoints, G, critic, opt_g, opt_d, config, data,
                              ema and ema.G_ema)
    # names collapse, vanishing gradients, a critic that wins, a non-Lipschitz critic and divergence as they happen
    diagnosis = Diagnosis(loss, schedule.clip > 0, len(data.shape) == 3, settings.on_failure == "stop")
    if ema is not None:
        console.print(f"[bold]generator EMA[/] half-life {settings.ema_kimg:g}k images (ramp-up "
                      f"{settings.ema_rampup:g}): samples and metrics/* use the averaged generator, "
                      f"metrics_raw/* the trained one", soft_wrap=True, highlight=False)
    last: dict[str, float] = {}
    earlier, started, halted = float((resume or {}).get("seconds", 0.0)), time.perf_counter(), False  # earlier parts
    with StopSignal() as stop:
        for step in range(start + 1, settings.steps + 1):
            stats, batch = run_iteration(step)
            stopping = distributed.any_rank(stop.signum is not None, device)  # DDP: all ranks stop at one step

            final, observed = step == settings.steps, {}  # observed: this step's scalars, for the diagnosis
            if step % settings.log_every == 0 or final:
                stats = with_critic_input_stats(G, critic, stats, batch)
                if guard.skip:
                    stats["train/skipped_updates"] = guard.skipped
                if lr is not None:  # the learning rates this step's updates used (device tensors)
                    stats["train/lr_generator"], stats["train/lr_critic"] = (
                        opt.param_groups[0]["lr"] for opt in (opt_g, opt_d))
                last = observed = scalars_to_floats(distributed.average(stats))  # the mean over ranks
                tracker.scalars(step, last)
                guard.check(saved)
            if main and (step % settings.sample_every == 0 or final):
                with observing(device, G_ema, critic):
                    observers.log_samples(G_ema, critic, data, fixed_z, fixed_y, tracker, step, run_dir)
            if main and evaluator is not None and ((settings.eval_every and step % settings.eval_every == 0) or final):
                with observing(device, G, critic, seed=0):  # the same z every evaluation: comparable numbers
                    metrics = evaluator(G_ema)
                if ema is not None:  # the trained G too, from the same z: the gain of averaging is visible
                    with observing(device, G, critic, seed=0):
                        metrics.update({k.replace("metrics/", "metrics_raw/", 1): v for k, v in evaluator(G).items()})
                tracker.scalars(step, metrics)
                last.update(metrics)
                observed.update(metrics)
            # train.on_failure=stop and a failure was named: checkpoint and end here
            halted = diagnosis.watch(step, observed, tracker, G_ema, critic, data, settings, main) and not final
            if step % settings.checkpoint_every == 0 or final or stopping or halted:
                guard.check(saved)  # never overwrite a good checkpoint with a diverged state
                saved = checkpoint(step, earlier + time.perf_counter() - started)
            tracker.advance(step)
            if stopping:
                raise Interrupted(stop.signum or signal.SIGTERM, step)
            if halted:
                break
    tracker.stop_progress()
    part = time.perf_counter() - started
    last.update({"time/seconds": earlier + part, **({"time/seconds_since_resume": part} if start else {})})
    last["step"] = step if halted else settings.steps
    last["diagnosis"] = diagnosis.record(halted)  # type: ignore[assignment]  # job.py takes it into status.json
    return last
