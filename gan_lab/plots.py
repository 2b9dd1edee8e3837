"""Matplotlib figures for 2-D data (rendered off-screen with the Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot's import
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402


def scatter_2d(real: Tensor, fake: Tensor, step: int) -> Figure:
    """Real and generated 2-D samples on one square plot."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(real[:, 0], real[:, 1], s=4, alpha=0.5, c="tab:blue", label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=4, alpha=0.5, c="tab:orange", label="generated")
    ax.set_aspect("equal")
    ax.set_title(f"step {step}")
    ax.legend(loc="upper right", markerscale=3)
    fig.tight_layout()
    return fig
