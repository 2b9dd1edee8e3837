"""Matplotlib figures of 2-D samples and the critic's landscape, drawn off-screen (Agg): training and sample use them."""

from __future__ import annotations

from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot's import
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402


def scatter_2d(real: Tensor, fake: Tensor, step: int) -> Figure:
    """Real and generated 2-D samples on one square plot."""
    fig, ax = plt.subplots(figsize=(5, 5))
    _real_over_fake(ax, real, fake)
    ax.set_aspect("equal")
    ax.set_title(f"step {step}")
    ax.legend(loc="upper right", markerscale=3)
    fig.tight_layout()
    return fig


def _real_over_fake(ax: Any, real: Tensor, fake: Tensor, size: float = 4) -> None:
    # The generated cloud is often wider than the data's tight modes and used to be drawn last,
    # hiding them: generated points go underneath, half transparent; real ones on top, smaller
    # and opaque, so a mode the generator missed still shows.
    ax.scatter(fake[:, 0].detach().cpu(), fake[:, 1].detach().cpu(), s=size, alpha=0.35, c="tab:orange",
               linewidths=0, label="generated", zorder=2)
    ax.scatter(real[:, 0].cpu(), real[:, 1].cpu(), s=size / 2, alpha=0.9, c="tab:blue", linewidths=0,
               label="real", zorder=3)


def critic_landscape(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, step: int,
                     resolution: int = 100) -> Figure:
    """The critic's value over the plane and the map of ||grad_x C||, real and generated samples on top.

    The WGAN-GP paper's toy figure: a weight-clipped critic saturates into flat plateaus
    with steep cliffs; a gradient-penalised one has ||grad C|| close to 1 between the data
    and the samples.
    """
    both = torch.cat([real, fake]).detach().float().cpu()
    low, high = both.min(0).values, both.max(0).values
    margin = 0.25 * (high - low).max().clamp(min=0.5)
    xs = torch.linspace(float(low[0] - margin), float(high[0] + margin), resolution)
    ys = torch.linspace(float(low[1] - margin), float(high[1] + margin), resolution)
    grid = torch.cartesian_prod(xs, ys)  # (res*res, 2), x varies slowest
    device = real.device
    with torch.enable_grad():  # the caller may run under no_grad; the gradient map needs autograd
        points = grid.to(device).requires_grad_(True)
        values = critic(points)
        (grad,) = torch.autograd.grad(values.sum(), points)
    values = values.detach().cpu().view(resolution, resolution).T  # (y, x) for contourf
    norms = grad.norm(dim=1).cpu().view(resolution, resolution).T

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    filled = left.contourf(xs, ys, values, levels=20, cmap="viridis")
    fig.colorbar(filled, ax=left)
    left.set_title(f"critic value C(x), step {step}")
    norm_map = right.contourf(xs, ys, norms, levels=20, cmap="magma")
    fig.colorbar(norm_map, ax=right)
    if float(norms.min()) < 1 < float(norms.max()):
        right.contour(xs, ys, norms, levels=[1.0], colors="white", linewidths=1)  # the 1-Lipschitz line
    right.set_title("||grad_x C(x)|| (white: norm 1)")
    for ax in (left, right):
        _real_over_fake(ax, real, fake, size=2)
        ax.set_aspect("equal")
    left.legend(loc="upper right", markerscale=4)
    fig.tight_layout()
    return fig
