"""Pictures of a synthetic table beside the real one: each column's distribution, and how far each pair's trend is.

Matplotlib figures drawn off-screen; the caller saves them in the run folder and TensorBoard through
`Tracker.figure(tag, step, fig, path)` (gan_lab.runs.tracker), which also closes them.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot's import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gan_lab.evaluation.table_quality import ks_complement, quality, tv_complement  # noqa: E402

__all__ = ["columns_figure", "pair_trends_figure"]

MAX_BARS = 20  # a discrete column shows its most frequent real categories; the rest are summed as "(other)"
HISTOGRAM_BINS = 30
PANELS_PER_ROW = 4
MISSING = "(missing)"


def _bars(ax: plt.Axes, real: pd.Series, synthetic: pd.Series) -> None:
    # shares over all rows, missing as a bar of its own, so the two sides' bars sum to 1 alike
    r = real.astype(object).where(real.notna(), MISSING).value_counts(normalize=True)
    s = synthetic.astype(object).where(synthetic.notna(), MISSING).value_counts(normalize=True)
    shown = list(r.index[:MAX_BARS])
    heights = pd.DataFrame({"real": r.reindex(shown, fill_value=0.0), "synthetic": s.reindex(shown, fill_value=0.0)})
    rest = pd.DataFrame({"real": [1.0 - heights["real"].sum()], "synthetic": [1.0 - heights["synthetic"].sum()]},
                        index=["(other)"])
    if (rest.to_numpy() > 1e-12).any():  # the less frequent categories, and synthetic ones the real column lacks
        heights = pd.concat([heights, rest])
    positions = np.arange(len(heights))
    ax.bar(positions - 0.2, heights["real"], width=0.4, label="real", color="tab:blue")
    ax.bar(positions + 0.2, heights["synthetic"], width=0.4, label="synthetic", color="tab:orange")
    ax.set_xticks(positions, [str(label)[:12] for label in heights.index], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("share of rows", fontsize=8)


def _histogram(ax: plt.Axes, real: pd.Series, synthetic: pd.Series) -> None:
    def numbers(series: pd.Series) -> np.ndarray:
        present = series.dropna()
        if pd.api.types.is_datetime64_any_dtype(present):
            return matplotlib.dates.date2num(present)  # days, so the axis can show dates
        return pd.to_numeric(present).to_numpy(dtype=np.float64)
    r, s = numbers(real), numbers(synthetic)
    both = np.concatenate([r, s])
    if len(both) == 0:
        return
    edges = np.histogram_bin_edges(both, bins=HISTOGRAM_BINS)  # one set of bins, so the heights compare
    ax.hist(r, bins=edges, density=True, alpha=0.5, label="real", color="tab:blue")
    ax.hist(s, bins=edges, density=True, histtype="step", linewidth=1.5, label="synthetic", color="tab:orange")
    if pd.api.types.is_datetime64_any_dtype(real):
        ax.xaxis_date()
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)


def columns_figure(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str]) -> Figure:
    """Each column, real against synthetic: histograms (continuous) or bars (discrete), titled with its shape score."""
    names = list(kinds)
    rows = max(1, math.ceil(len(names) / PANELS_PER_ROW))
    cols = min(PANELS_PER_ROW, max(1, len(names)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        if kinds[name] == "continuous":
            _histogram(ax, real[name], synthetic[name])
            score = f"KS complement {ks_complement(real[name], synthetic[name]):.3f}"
        else:
            _bars(ax, real[name], synthetic[name])
            score = f"TV complement {tv_complement(real[name], synthetic[name]):.3f}"
        ax.set_title(f"{name}\n{score}", fontsize=9)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def pair_trends_figure(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str]) -> Figure:
    """The correlation-difference heatmap: 1 - each pair's trend similarity, every pair scored (no threshold).

    For two continuous columns the cell is |r_synthetic - r_real| / 2 (Pearson); otherwise it is the total
    variation distance between the two contingency tables (SDMetrics' ContingencySimilarity, complemented).
    0 is the same trend; a dark cell is a pair whose relation the synthetic rows lost.
    """
    names = list(kinds)
    pairs = quality(real, synthetic, kinds, correlation_threshold=0.0, association_threshold=0.0)["pairs"]
    gap = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        gap[i, i] = 0.0
        for j, b in enumerate(names[i + 1:], start=i + 1):
            gap[i, j] = gap[j, i] = 1.0 - pairs[a][b]
    size = 1.0 + 0.55 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    shown = ax.imshow(np.ma.masked_invalid(gap), vmin=0.0, vmax=max(0.2, float(np.nanmax(gap)) if gap.size else 0.2),
                      cmap="Reds")
    fig.colorbar(shown, ax=ax, label="1 - pair trend similarity")
    ax.set_xticks(range(len(names)), [n[:14] for n in names], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), [n[:14] for n in names], fontsize=8)
    if len(names) <= 12:  # numbers fit in the cells
        for i in range(len(names)):
            for j in range(len(names)):
                if i != j and not np.isnan(gap[i, j]):
                    ax.text(j, i, f"{gap[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title("pair trends: real vs synthetic (0 = same)")
    fig.tight_layout()
    return fig
