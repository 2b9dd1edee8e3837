"""How close synthetic rows come to the training rows: distance to the closest record (DCR) and exact copies.

The synthetic rows' DCR is read beside the held-out real rows' DCR to the same training rows: a real row
the model never saw is the baseline of "as close as a fresh sample of the population comes". Synthetic
rows much closer than that (a lower 5th percentile, a higher exact-copy rate) memorise training rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["privacy", "encode_rows", "exact_copy_rate"]


def _numbers(series: pd.Series) -> np.ndarray:
    """A continuous column as float64, datetimes as their nanoseconds, missing as NaN."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.astype("int64").astype(np.float64).where(series.notna()).to_numpy()
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)


def encode_rows(frame: pd.DataFrame, train: pd.DataFrame, kinds: dict[str, str]) -> np.ndarray:
    """Rows as points where one unit means the same everywhere: a standard deviation, or one category changed.

    Continuous: standardised by the training rows' mean and standard deviation (a constant column by 1),
    missing as 0 and an indicator 0/1 beside it. Discrete: a one-hot over the training rows' categories and
    missing, scaled by 1/sqrt(2) so that two different categories are at distance 1, as one standard
    deviation is; a category the training rows lack is all zeros (1/sqrt(2) from each).
    """
    parts = []
    for name, kind in kinds.items():
        if kind == "continuous":
            reference = _numbers(train[name])
            mean = np.nanmean(reference) if np.isfinite(reference).any() else 0.0
            std = np.nanstd(reference) if np.isfinite(reference).any() else 0.0
            values = (_numbers(frame[name]) - mean) / (std if std > 0 else 1.0)
            missing = np.isnan(values)
            parts += [np.where(missing, 0.0, values), missing.astype(np.float64)]
        else:
            levels = train[name].astype(object).where(train[name].notna(), None).unique().tolist()
            values = frame[name].astype(object).where(frame[name].notna(), None)
            parts += [(values == level).to_numpy(dtype=np.float64) / np.sqrt(2.0) if level is not None
                      else values.isna().to_numpy(dtype=np.float64) / np.sqrt(2.0) for level in levels]
    return np.column_stack(parts) if parts else np.zeros((len(frame), 0))


def _rows(frame: pd.DataFrame, kinds: dict[str, str]) -> list[tuple]:
    """Each row as a hashable tuple of plain values (numbers as floats, missing as None), for exact matches."""
    columns = []
    for name, kind in kinds.items():
        if kind == "continuous":
            values = _numbers(frame[name])
            columns.append([None if np.isnan(v) else float(v) for v in values])
        else:
            columns.append([None if pd.isna(v) else v for v in frame[name].tolist()])
    return list(zip(*columns))


def exact_copy_rate(rows: pd.DataFrame, train: pd.DataFrame, kinds: dict[str, str]) -> float:
    """The share of rows identical, in every column of kinds, to some training row (missing equal to missing)."""
    seen = set(_rows(train, kinds))
    found = _rows(rows, kinds)
    return float(np.mean([row in seen for row in found])) if found else float("nan")


def _closest(points: np.ndarray, train_points: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=1).fit(train_points)
    distances, _ = index.kneighbors(points)
    return distances[:, 0]


def privacy(train: pd.DataFrame, synthetic: pd.DataFrame, held_out: pd.DataFrame,
            kinds: dict[str, str]) -> dict[str, Any]:
    """DCR of the synthetic rows beside that of the held-out real rows (median, 5th percentile), and exact copies.

    Distances are Euclidean between encode_rows() points. Returns {"dcr_synthetic_median",
    "dcr_synthetic_p5", "dcr_held_out_median", "dcr_held_out_p5", "exact_copy_rate" (synthetic rows equal
    to a training row), "held_out_copy_rate" (the same for held-out real rows: the table's own duplicates,
    the baseline)}.
    """
    train_points = encode_rows(train, train, kinds)
    synthetic_dcr = _closest(encode_rows(synthetic, train, kinds), train_points)
    held_out_dcr = _closest(encode_rows(held_out, train, kinds), train_points)
    return {"dcr_synthetic_median": float(np.median(synthetic_dcr)),
            "dcr_synthetic_p5": float(np.percentile(synthetic_dcr, 5)),
            "dcr_held_out_median": float(np.median(held_out_dcr)),
            "dcr_held_out_p5": float(np.percentile(held_out_dcr, 5)),
            "exact_copy_rate": exact_copy_rate(synthetic, train, kinds),
            "held_out_copy_rate": exact_copy_rate(held_out, train, kinds)}
