"""Watching a run without changing it: the critic's input gradients at log steps, and sample images.

Every observer runs inside `observing(...)`: a forked RNG and the networks in eval mode, so the
final weights and buffers are the same whatever the log / sample / eval / checkpoint intervals.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from gan_lab.losses import input_grad_norms, interpolates
from gan_lab.runs.tracker import Tracker


@contextmanager
def observing(device: torch.device, *networks: nn.Module, seed: int | None = None) -> Iterator[None]:
    """Logging, sampling and metrics: watching never changes training.

    Observers draw from a forked RNG and run `networks` in eval mode, restoring each
    submodule's own mode after. In training mode a forward moves state that is part of the
    run: spectral norm advances its power iteration (u, v) and batch norm its running
    statistics. In eval mode spectral norm divides by the sigma of the stored u, v and
    batch norm normalises with the running statistics, so samples, metrics and the critic's
    input gradients at log steps do not depend on their batch, and the final weights and
    buffers are the same whatever the log / sample / eval / checkpoint intervals.
    """
    modes = [(module, module.training) for net in networks for module in net.modules()]
    try:
        for net in networks:
            net.eval()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        for module, training in modes:
            module.training = training  # each its own: a mixed state comes back as it was


def critic_input_stats(critic: nn.Module, x: Tensor, fake: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
    """Mean and spread of ||grad_x C|| at interpolates: how far the critic is from 1-Lipschitz."""
    norms = input_grad_norms(partial(critic, y=y), interpolates(x, fake))
    return {"grad_norm/critic_input": norms.mean(), "grad_norm/critic_input_std": norms.std()}


def with_critic_input_stats(G: nn.Module, critic: nn.Module, stats: dict[str, Tensor],
                            batch: tuple[Tensor, Tensor | None, Tensor]) -> dict[str, Tensor]:
    """A log step's scalars: the iteration's, plus critic_input_stats at its last critic batch.

    Drawn from a forked RNG with both networks in eval mode (observing), and returned as a
    new dict, so a CUDA graph's captured one stays as it is.
    """
    x, y, z = batch
    with observing(x.device, G, critic):
        with torch.no_grad():
            fake = G(z, y)
        return {**stats, **critic_input_stats(critic, x, fake, y)}


@torch.no_grad()
def log_samples(G: nn.Module, critic: nn.Module, data: Any, fixed_z: Tensor, fixed_y: Tensor | None,
                tracker: Tracker, step: int, run_dir: Path) -> None:
    """Samples from the fixed z: an image grid, or for 2-D data a scatter plot and the critic's landscape."""
    fake = G(fixed_z, fixed_y)
    path = run_dir / "samples" / f"step_{step:08d}.png"
    if len(data.shape) == 3:
        import torchvision.utils

        grid = torchvision.utils.make_grid(fake[:64].float().cpu(), nrow=8, normalize=True, value_range=(-1, 1))
        tracker.images(step, grid, path)
    elif data.shape == (2,):
        from gan_lab.runs.plots import critic_landscape, scatter_2d

        real, _ = data.sample(len(fake))
        tracker.figure("samples", step, scatter_2d(real.cpu(), fake.cpu(), step), path)
        def scores(points: Tensor) -> Tensor:  # a conditional critic's landscape depends on y: class 0's
            y = torch.zeros(len(points), dtype=torch.long, device=points.device) if G.n_classes else None
            return critic.pointwise(points, y)  # one score per point, even for a packed critic

        tracker.figure("critic/landscape", step, critic_landscape(scores, real, fake, step),
                       run_dir / "samples" / f"critic_step_{step:08d}.png")
