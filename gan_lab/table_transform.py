"""The reversible transform of a table into rows a GAN learns (CTGAN's: Xu et al., NeurIPS 2019, sec. 4.2).

Each continuous column gets a mode-specific normalisation: a variational Gaussian mixture
(at most 10 modes) fitted to its values; a value x becomes the one-hot of a mode k, sampled from
the value's posterior over the modes, and the scalar alpha = (x - mu_k) / (4 sigma_k), clipped
to [-1, 1]. A continuous column with missing values also gets a two-way indicator (present,
missing); the missing rows' values are imputed (the median) so the scalar stays in range. Each
discrete column is a one-hot of its categories, missing being one more.

The encoded layout is a list of Spans: `tanh` scalars and `softmax` blocks, which the generator's
heads follow (tanh; Gumbel-softmax per block) and from which the conditional vector is built (the
conditional blocks: discrete categories and missing indicators). `inverse()` maps encoded rows, or
a generator's outputs, back to a DataFrame with the input's columns, dtypes and categories.
`state_dict()` holds plain values only (a checkpoint stores it; `from_state` rebuilds it exactly).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from gan_lab.errors import GanLabError
from gan_lab.table import Table
from gan_lab.table_columns import ColumnSpec, categories_of, from_categories, from_numbers, to_numbers

MAX_MODES = 10              # the paper's upper bound on a column's modes
WEIGHT_THRESHOLD = 0.005    # modes whose mixture weight is below this are dropped (the paper's)
CONCENTRATION = 0.001       # the Dirichlet-process weight prior: small, so unneeded modes get ~0 weight
# The mixture is fitted on at most this many of a column's values: the fit's cost grows with the rows
# (CTGAN fits all of them: ~74 CPU s on 54,000 rows), while 10,000 values place 10 modes (each
# holding >= 0.5% of them, so >= 50 values) as well as a larger sample would. Encoding uses every row.
FIT_ROWS = 10_000


@dataclass(frozen=True)
class Span:
    """One stretch of an encoded row: a tanh scalar or a softmax block of one column."""

    column: str
    kind: str          # tanh | softmax
    width: int
    role: str          # alpha (a mode's scalar) | mode | missing (present, missing) | category
    start: int         # its first index in the encoded row

    @property
    def conditional(self) -> bool:
        """Whether the conditional vector (training-by-sampling) holds this block: categories, missingness."""
        return self.role in ("category", "missing")


def fit_modes(values: np.ndarray, seed: int, max_rows: int = FIT_ROWS) -> tuple[list[float], list[float], list[float]]:
    """A variational Gaussian mixture's kept modes for one column: (means, stds, weights)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    rng = np.random.default_rng(seed)
    if len(values) > max_rows:
        values = rng.choice(values, max_rows, replace=False)
    # Fitted on standardised values: sklearn's covariance floor (reg_covar=1e-6) is absolute, which
    # would swamp a column measured in millionths and vanish beside one measured in millions.
    centre, scale = float(values.mean()), float(values.std()) or 1.0
    z = ((values - centre) / scale).reshape(-1, 1)
    mixture = BayesianGaussianMixture(
        n_components=min(MAX_MODES, len(np.unique(z))), weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=CONCENTRATION, max_iter=100, random_state=seed)
    with warnings.catch_warnings():  # a mixture not converged in 100 steps still places its modes usefully
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture.fit(z)
    keep = mixture.weights_ >= WEIGHT_THRESHOLD
    keep[np.argmax(mixture.weights_)] = True
    weights = mixture.weights_[keep] / mixture.weights_[keep].sum()
    means = mixture.means_[keep, 0] * scale + centre
    stds = np.sqrt(mixture.covariances_[keep].reshape(-1)) * scale
    return means.tolist(), stds.tolist(), weights.tolist()


class _Continuous:
    """A continuous column: [alpha | mode one-hot | (present, missing) if it has missing values]."""

    def __init__(self, spec: ColumnSpec, means: list[float], stds: list[float], weights: list[float],
                 impute: float, has_missing: bool):
        self.spec, self.impute, self.has_missing = spec, impute, has_missing
        self.means, self.stds, self.weights = means, stds, weights

    @classmethod
    def fit(cls, series: pd.Series, spec: ColumnSpec, seed: int, max_rows: int) -> _Continuous:
        numbers = to_numbers(series, spec)
        observed = numbers[~np.isnan(numbers)]
        has_missing = bool(np.isnan(numbers).any())
        return cls(spec, *fit_modes(observed, seed, max_rows), float(np.median(observed)), has_missing)

    def spans(self, start: int) -> list[Span]:
        name, k = self.spec.name, len(self.means)
        spans = [Span(name, "tanh", 1, "alpha", start), Span(name, "softmax", k, "mode", start + 1)]
        return spans + ([Span(name, "softmax", 2, "missing", start + 1 + k)] if self.has_missing else [])

    def encode(self, series: pd.Series, rng: np.random.Generator) -> np.ndarray:
        x = to_numbers(series, self.spec)
        missing = np.isnan(x)
        x = np.where(missing, self.impute, x)
        means, stds = np.asarray(self.means), np.asarray(self.stds)
        # log posterior of each mode, up to a constant: log w_k + log N(x; mu_k, sigma_k)
        log_post = np.log(self.weights) - np.log(stds) - 0.5 * ((x[:, None] - means) / stds) ** 2
        post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        # a mode sampled from the posterior, as the paper does (not its argmax): inverse CDF per row
        mode = np.minimum((post.cumsum(axis=1) < rng.random((len(x), 1))).sum(axis=1), len(means) - 1)
        out = np.zeros((len(x), 1 + len(means) + 2 * self.has_missing), dtype=np.float32)
        out[:, 0] = np.clip((x - means[mode]) / (4 * stds[mode]), -1, 1)
        out[np.arange(len(x)), 1 + mode] = 1
        if self.has_missing:
            out[np.arange(len(x)), 1 + len(means) + missing] = 1
        return out

    def decode(self, block: np.ndarray) -> pd.Series:
        k = len(self.means)
        mode = block[:, 1:1 + k].argmax(axis=1)
        x = np.clip(block[:, 0], -1, 1) * 4 * np.asarray(self.stds)[mode] + np.asarray(self.means)[mode]
        if self.has_missing:
            x = np.where(block[:, 1 + k:3 + k].argmax(axis=1) == 1, np.nan, x)
        return from_numbers(x, self.spec)

    def state(self) -> dict:
        return {"type": "continuous", "spec": self.spec.to_dict(), "means": self.means, "stds": self.stds,
                "weights": self.weights, "impute": self.impute, "has_missing": self.has_missing}


class _Discrete:
    """A discrete column: a one-hot of its categories, missing (None) last when it has missing values."""

    def __init__(self, spec: ColumnSpec, categories: list[Any]):
        self.spec, self.categories = spec, categories

    @classmethod
    def fit(cls, series: pd.Series, spec: ColumnSpec) -> _Discrete:
        return cls(spec, categories_of(series) + ([None] if series.isna().any() else []))

    def spans(self, start: int) -> list[Span]:
        return [Span(self.spec.name, "softmax", len(self.categories), "category", start)]

    def encode(self, series: pd.Series, rng: np.random.Generator) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.categories) if c is not None}
        codes = series.astype(object).map(index)  # 1.0 finds 1 (an integer column pandas read as floats)
        if None in self.categories:
            codes = codes.where(series.notna(), len(self.categories) - 1)
        out = np.zeros((len(series), len(self.categories)), dtype=np.float32)
        known = codes.notna().to_numpy()  # a category the fit never saw encodes as all zeros
        out[np.flatnonzero(known), codes[known].to_numpy(dtype=int)] = 1
        return out

    def decode(self, block: np.ndarray) -> pd.Series:
        return from_categories([self.categories[i] for i in block.argmax(axis=1)], self.spec)

    def state(self) -> dict:
        return {"type": "discrete", "spec": self.spec.to_dict(), "categories": self.categories}


class TableTransform:
    """A fitted table transform: encode(frame) -> float32 rows, inverse(rows) -> frame; spans describe the rows."""

    def __init__(self, columns: list[_Continuous | _Discrete], fit_seconds: float = 0.0):
        self.columns, self.fit_seconds = columns, fit_seconds
        self.spans: list[Span] = []
        for column in columns:
            self.spans += column.spans(self.width)

    @property
    def width(self) -> int:
        """Numbers in one encoded row."""
        return sum(s.width for s in self.spans)

    @classmethod
    def fit(cls, table: Table, seed: int = 0, max_rows: int = FIT_ROWS) -> TableTransform:
        """Fit each column's encoding to a table (the mixtures on at most `max_rows` values each)."""
        started = time.process_time()
        columns = [_Continuous.fit(table.frame[c.name], c, seed + i, max_rows) if c.kind == "continuous"
                   else _Discrete.fit(table.frame[c.name], c) for i, c in enumerate(table.columns)]
        return cls(columns, time.process_time() - started)

    def encode(self, frame: pd.DataFrame, seed: int = 0) -> np.ndarray:
        """Rows as the generator should learn to write them: (len(frame), width) float32."""
        rng = np.random.default_rng(seed)
        return np.concatenate([c.encode(frame[c.spec.name], rng) for c in self.columns], axis=1)

    def inverse(self, rows: np.ndarray | torch.Tensor) -> pd.DataFrame:
        """Encoded rows or a generator's outputs (softmax blocks read by argmax) as the input's table."""
        if isinstance(rows, torch.Tensor):
            rows = rows.detach().float().cpu().numpy()
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"rows of width {self.width} expected, got shape {tuple(rows.shape)}")
        out, start = {}, 0
        for column in self.columns:
            width = sum(s.width for s in column.spans(0))
            out[column.spec.name] = column.decode(rows[:, start:start + width]).reset_index(drop=True)
            start += width
        return pd.DataFrame(out)

    def category(self, column: str, value: Any) -> tuple[int, int]:
        """(conditional block, category) of `column == value`, for a fixed condition; GanLabError if none."""
        blocks = [s for s in self.spans if s.conditional]
        for column_encoder in self.columns:
            if column_encoder.spec.name == column and isinstance(column_encoder, _Discrete):
                block = next(i for i, s in enumerate(blocks) if s.column == column)
                for index, category in enumerate(column_encoder.categories):
                    if category == value or (category is not None and str(category) == str(value)):
                        return block, index
                known = ", ".join(str(c) for c in column_encoder.categories if c is not None)
                raise GanLabError(f"condition.{column}={value} is not a value of column {column!r}, whose "
                                  f"values are: {known}.")
        discrete = ", ".join(c.spec.name for c in self.columns if isinstance(c, _Discrete)) or "none"
        raise GanLabError(f"condition.{column}: a condition names a discrete column, and {column!r} is not one "
                          f"(the discrete columns: {discrete}).")

    def state_dict(self) -> dict:
        """Plain values (dicts, lists, str, float, int, bool, None): torch.load(weights_only=True) reads them."""
        return {"version": 1, "columns": [c.state() for c in self.columns], "fit_seconds": self.fit_seconds}

    @classmethod
    def from_state(cls, state: dict) -> TableTransform:
        """The transform state_dict() described."""
        if state.get("version") != 1:
            raise ValueError(f"unknown table transform version {state.get('version')!r}")
        columns: list[_Continuous | _Discrete] = []
        for column in state["columns"]:
            spec = ColumnSpec.from_dict(column["spec"])
            if column["type"] == "continuous":
                columns.append(_Continuous(spec, column["means"], column["stds"], column["weights"],
                                           column["impute"], column["has_missing"]))
            else:
                columns.append(_Discrete(spec, column["categories"]))
        return cls(columns, state["fit_seconds"])

