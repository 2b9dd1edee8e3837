"""Resume state: what a checkpoint holds besides the config (weights, optimizers, RNG streams, step), both ways.

Writing goes through gan_lab.runs.checkpoint (atomic files, pruning); this module knows what the
training loop has to put in and take back out, so a resumed run continues the same stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gan_lab.errors import GanLabError
from gan_lab.runs.checkpoint import save_checkpoint
from gan_lab.runs.files import low_space
from gan_lab.runs.tracker import console
from gan_lab.training import distributed


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors, so a resumed run continues the same stream."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() captured."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_optimizer(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an optimizer's state (moments, step counts); its settings (lr, betas, ...) stay the config's.

    torch's load_state_dict also restores the saved param_groups' settings, which would silently
    keep the old learning rate of a run resumed with resume_force=true and a new one.
    """
    settings = [{k: v for k, v in group.items() if k != "params"} for group in opt.param_groups]
    opt.load_state_dict(state)
    for group, configured in zip(opt.param_groups, settings):
        group.update(configured)


def restore(state: dict[str, Any], G: nn.Module, critic: nn.Module, opt_g: torch.optim.Optimizer,
            opt_d: torch.optim.Optimizer, G_ema: nn.Module | None = None) -> int:
    """Load a checkpoint's weights, optimizer and RNG states (and G_ema's, when both have one); returns its step."""
    try:
        G.load_state_dict(state["G"])
        if G_ema is not None:
            # a checkpoint without an EMA (an older run, or one trained without): the average starts from G
            G_ema.load_state_dict(state.get("G_ema", state["G"]))
        critic.load_state_dict(state["critic"])
        load_optimizer(opt_g, state["opt_g"])
        load_optimizer(opt_d, state["opt_d"])
    except (RuntimeError, ValueError) as err:  # torch's "Error(s) in loading state_dict", a param-group mismatch
        first = str(err).strip().splitlines()[0]
        raise GanLabError(f"The checkpoint's weights do not fit the networks this config builds ({first}). "
                          f"resume_force=true only carries a run over changes that keep the networks' shapes; "
                          f"for another architecture start a fresh run directory.") from None
    rng = state["rng"]  # a list, one per rank, when a DDP run wrote it
    set_rng_state(rng[distributed.rank() % len(rng)] if isinstance(rng, list) else rng)
    return int(state["step"])


class Checkpointer:
    """Writes checkpoints/step_N.pt and last.pt: every rank's RNG stream, the main rank's networks and optimizers."""

    def __init__(self, run_dir: Path, keep: int, G: nn.Module, critic: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, config: dict[str, Any], data: Any, G_ema: nn.Module | None = None):
        self.run_dir, self.keep, self.config, self.data = run_dir, keep, config, data
        self.G, self.critic, self.opt_g, self.opt_d, self.G_ema = G, critic, opt_g, opt_d, G_ema
        self.warned = False  # the low-space warning, given once a run

    def __call__(self, step: int, seconds: float = 0.0) -> str:
        """Write the checkpoint of `step`, trained for `seconds` in all; returns how a later error names it."""
        rng = distributed.gather(rng_state())  # every rank's stream, so a resume continues each
        path = self.run_dir / "checkpoints" / "last.pt"
        if distributed.is_main():  # the plain modules' state dicts: no "module." prefix, loadable without DDP
            state = {"step": step, "G": self.G.state_dict(), "critic": self.critic.state_dict(),
                     "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "rng": rng,
                     "config": self.config, "data_shape": list(self.data.shape), "n_classes": self.data.n_classes,
                     "world_size": distributed.world_size(), "seconds": float(seconds)}
            if self.G_ema is not None:
                state["G_ema"] = self.G_ema.state_dict()
            if hasattr(self.data, "state_dict"):  # a table: what sampling needs without the file (plain values)
                state["layout"], state["data_state"] = self.data.layout, self.data.state_dict()
            path = save_checkpoint(state, self.run_dir / "checkpoints", step, self.keep).parent / "last.pt"
            warning = None if self.warned else low_space(path.parent, path.stat().st_size)
            if warning:  # once a run: the disk fills before a checkpoint fails, not after
                self.warned = True
                console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True, highlight=False)
        return f"the last good checkpoint, {path} (step {step}), is untouched"
