"""Never lose a run: stop signals, non-finite values, and resumes with a changed config."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from typing import Any

import torch
from torch import Tensor

from gan_lab.errors import GanLabError
from gan_lab.runs.files import write_on_to_devnull


class Interrupted(Exception):
    """Raised by the loop after it checkpointed in answer to SIGINT, SIGTERM or SIGUSR2."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.signum, self.step = signum, step


# SIGUSR2: the warning SLURM sends before a time limit or preemption when asked to
# (`sbatch --signal=USR2@90`, as Hydra's submitit launcher does).
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR2") if hasattr(signal, name))


def _submitit_handler(handler: Any) -> bool:
    # submitit installs bound methods of its SignalHandler (or a plugin's subclass) in the job process
    return any(cls.__module__.startswith("submitit.") for cls in type(getattr(handler, "__self__", None)).__mro__)


class StopSignal:
    """SIGINT / SIGTERM / SIGUSR2 ask the loop to checkpoint and stop; a second one exits at once.

    SIGTERM is what most schedulers send before they kill a job, SIGUSR2 what SLURM sends
    ahead of a time limit or preemption. The first signal only sets a flag, read between
    steps, so a checkpoint is never written from inside a signal handler. Checkpoints are
    written atomically, so even the immediate exit of a second signal cannot leave a torn file.

    Inside a submitit job (Hydra's submitit_slurm / submitit_local launchers), submitit has
    installed its own handlers: on SIGUSR2 it calls the launcher's checkpoint() and requeues
    the job, then exits at once, wherever the loop is; it ignores SIGTERM on purpose (SLURM
    sends it to a job being requeued). Who handles what there: gan-lab takes SIGUSR2 for the
    length of the loop, so the step finishes and its checkpoint is written first, and then
    hands the signal back to submitit's handler (`hand_over`) for the requeue; SIGTERM keeps
    submitit's handler (a SIGTERM after SIGUSR2 must not end the checkpointing job at once).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():  # handlers only work there
            for sig in SIGNALS:
                if sig != getattr(signal, "SIGUSR2", None) and _submitit_handler(signal.getsignal(sig)):
                    continue  # submitit's on purpose: see the class docstring
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            _say("\ngan-lab: second signal, exiting now; the last checkpoint on disk is intact.\n")
            os._exit(128 + signum)
        self.signum = signum
        _say(f"\ngan-lab: {signal.Signals(signum).name} received; writing a checkpoint at the end of this step, "
             f"then stopping (send it again to exit at once).\n")


def _say(text: str) -> None:
    # a signal often comes because whoever read stderr has gone (a parent that died): the checkpoint still matters
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except BrokenPipeError:
        write_on_to_devnull(sys.stderr)


def hand_over(signum: int) -> None:
    """After the loop stopped and checkpointed: let submitit's handler of signum requeue the job.

    submitit's handler calls the launcher's checkpoint() (Hydra's submitit launcher resubmits
    the same job with the same arguments, hence the same run directory, where resume=auto
    continues from the checkpoint), requeues the job, and exits the process. Outside a
    submitit job this does nothing.
    """
    handler = signal.getsignal(signum)
    if _submitit_handler(handler):
        handler(signum, None)


class NonFiniteGuard:
    """Watches losses and gradient norms for NaN / inf without waiting for the device.

    In `stop` mode it only records, on the device, the first step at which each quantity
    went non-finite; `check()` reads that back at sync points the loop already has (log
    and checkpoint steps), so no checkpoint is written from a diverged state. In `skip`
    mode each update is tested before it is applied (one sync per update: the price of
    skipping) and skipped updates are counted.
    """

    def __init__(self, mode: str, device: torch.device):
        if mode not in ("stop", "skip"):
            raise GanLabError(f"train.nonfinite={mode!r} is not known: use stop (end the run at the first "
                              f"NaN or inf) or skip (skip such updates and count them).")
        self.skip = mode == "skip"
        self.names: list[str] = []
        self.first_bad: dict[str, Tensor] = {}
        self.device = device
        self.skipped = torch.zeros((), dtype=torch.long, device=device)

    def allow(self, step: int, values: dict[str, Tensor]) -> bool:
        """Record non-finite values; in skip mode, False when this update must be skipped."""
        finite = torch.stack([torch.isfinite(v).all() for v in values.values()])
        if self.skip:
            ok = bool(finite.all())  # sync: a skip decision needs the answer now
            if not ok:
                self.skipped += 1
            return ok
        for name, is_finite in zip(values, finite):
            first = self.first_bad.setdefault(name, torch.full((), -1, dtype=torch.long, device=self.device))
            # keep the first bad step: once set (>= 0) it stays
            first.copy_(torch.where((first < 0) & ~is_finite, step, first))
        return True

    def check(self, last_good: str) -> None:
        """Raise with the step and quantity when anything went non-finite (a sync point)."""
        if self.skip or not self.first_bad:
            return
        names = list(self.first_bad)
        steps = torch.stack([self.first_bad[n] for n in names]).tolist()
        bad = sorted((s, n) for n, s in zip(names, steps) if s >= 0)
        if bad:
            step, _ = bad[0]
            quantities = ", ".join(n for s, n in bad if s == step)
            raise GanLabError(
                f"Training diverged: {quantities} became non-finite (NaN or inf) at generator step {step}. "
                f"The run stopped; {last_good}. Lower the learning rate or the penalty weight, check the "
                f"data, or pass train.nonfinite=skip to skip such updates and count them instead.")


# Keys that may change between a checkpoint and its resume: they do not change the math. The
# intervals qualify because every observer runs the networks in eval mode on a forked RNG
# (gan_lab.training.observers.observing; tests/test_observing.py checks the final state is bitwise the same).
HARMLESS = ("train.steps", "train.log_every", "train.sample_every", "train.checkpoint_every",
            "train.keep_checkpoints", "train.nonfinite", "train.eval_every", "train.on_failure",
            "train.cuda_graph", "train.compile", "optimizer.fused", "metrics", "inception_weights",
            "objective", "threads", "device", "resume", "resume_force",
            "data.root", "data.download", "data.recommended.", "data.cache", "data.memory_budget", "data.workers")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, child in tree.items() for k, v in _flatten(child, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


@functools.cache
def config_defaults() -> dict[str, Any]:
    """Every key of the default run (`gan-lab train` with no overrides) and its value, as conf/ gives it.

    A key an older checkpoint's config lacks was added after that run: every option added later
    defaults to what runs did before it existed, so the run trained with this value.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf import OmegaConf

    running = get_gh_backup()  # inside gan-lab train's Hydra app: set aside while the packaged conf composes
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
            cfg = compose("train")
    finally:
        restore_gh_from_backup(running)
    return _flatten(OmegaConf.to_container(cfg, resolve=True))


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Training-relevant keys whose values differ, as 'key: saved -> current' lines."""
    defaults = config_defaults()  # a key one side lacks counts as its default (a key added since)
    before, after = {**defaults, **_flatten(saved)}, {**defaults, **_flatten(current)}
    keys = sorted(set(before) | set(after))
    scheduled = after.get("train.lr_schedule", "constant") != "constant"  # then the lr at each step depends on steps
    return [f"{k}: {before.get(k, '<absent>')} -> {after.get(k, '<absent>')}" for k in keys
            if before.get(k, "<absent>") != after.get(k, "<absent>")
            and (not k.startswith(HARMLESS) or (scheduled and k == "train.steps"))]
