"""How close a synthetic table is to a real one, as the synthetic-data field scores it: pure functions of frames.

`quality(real, synthetic, kinds)` is SDMetrics' single-table QualityReport, computed from its public
documentation (docs.sdv.dev/sdmetrics) rather than imported: sdmetrics depends on copulas (Business
Source License), which gan-lab does not depend on. tests/test_table_quality.py checks equality against
sdmetrics itself where its venv exists. `coverage(real, synthetic, kinds)` is the table's mode metric:
which of the real categories, and of the real category pairs, the synthetic rows produce at all.

`kinds` maps each column to "continuous" or "discrete" (gan_lab.table_columns.KINDS); a datetime column
is continuous and is compared through its numbers, as SDMetrics converts datetimes.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["quality", "coverage", "ks_complement", "tv_complement", "correlation_similarity",
           "contingency_similarity", "cramers_v", "category_coverage"]

# The Column Pair Trends property discretises a continuous column into this many equal-width bins,
# their edges taken from the real column, before comparing it with a discrete one (ContingencySimilarity).
PAIR_BINS = 10
# Since SDMetrics 0.26 (issues sdv-dev/SDMetrics#815-817) the QualityReport scores only the pairs with a
# trend in the real data: |Pearson r| above 0.5 for two continuous columns, Cramer's V of the real
# contingency table above 0.3 otherwise (its report's real_correlation_threshold and
# real_association_threshold). The other pairs' score is NaN and they are left out of the average, so
# that the many pairs without a trend (which any generator keeps trendless) do not drown the few that have one.
CORRELATION_THRESHOLD = 0.5
ASSOCIATION_THRESHOLD = 0.3


def _numbers(series: pd.Series) -> np.ndarray:
    """The column's present values as float64; datetimes as their nanoseconds (every metric here is unit-free)."""
    present = series.dropna()
    if pd.api.types.is_datetime64_any_dtype(present):
        return present.astype("int64").to_numpy(dtype=np.float64)
    return pd.to_numeric(present).to_numpy(dtype=np.float64)


def ks_complement(real: pd.Series, synthetic: pd.Series) -> float:
    """SDMetrics' KSComplement: 1 - max_x |F_real(x) - F_synthetic(x)| over the present values (missing ignored)."""
    r, s = np.sort(_numbers(real)), np.sort(_numbers(synthetic))
    if len(r) == 0 or len(s) == 0:
        return float("nan")
    # both empirical CDFs are step functions that only jump at observed values: the supremum of their
    # difference is reached at one of them (the two-sample Kolmogorov-Smirnov statistic)
    points = np.concatenate([r, s])
    cdf_r = np.searchsorted(r, points, side="right") / len(r)
    cdf_s = np.searchsorted(s, points, side="right") / len(s)
    return float(1.0 - np.abs(cdf_r - cdf_s).max())


def _frequencies(series: pd.Series, dropna: bool) -> pd.Series:
    return series.value_counts(normalize=True, dropna=dropna)


def tv_complement(real: pd.Series, synthetic: pd.Series) -> float:
    """SDMetrics' TVComplement: 1 - 1/2 sum_w |R_w - S_w| over the categories w (missing ignored)."""
    r, s = _frequencies(real, dropna=True), _frequencies(synthetic, dropna=True)
    if len(r) == 0 or len(s) == 0:
        return float("nan")
    both = pd.concat([r, s], axis=1).fillna(0.0)  # a category absent from one side has frequency 0 there
    return float(1.0 - 0.5 * (both.iloc[:, 0] - both.iloc[:, 1]).abs().sum())


def correlation_similarity(real: pd.DataFrame, synthetic: pd.DataFrame, threshold: float = 0.0) -> float:
    """SDMetrics' CorrelationSimilarity (Pearson): 1 - |S_AB - R_AB| / 2 on the rows where both are present; NaN if |R_AB| <= threshold."""
    r = _pearson(real)
    if not abs(r) > threshold:  # also NaN when the real pair is constant: the pair is then left out
        return float("nan")
    return float(1.0 - abs(_pearson(synthetic) - r) / 2.0)


def _pearson(frame: pd.DataFrame) -> float:
    a, b = frame.columns
    both = frame.dropna()
    x, y = _numbers(both[a]), _numbers(both[b])
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def cramers_v(frame: pd.DataFrame) -> float:
    """Cramer's V of two columns' contingency table: sqrt(chi^2 / (n (min(rows, cols) - 1))), missing a category."""
    a, b = frame.columns
    rows, cols = (frame[name].astype(object).where(frame[name].notna(), _MISSING) for name in (a, b))
    counts = pd.crosstab(rows, cols).to_numpy(dtype=np.float64)
    n = counts.sum()
    if min(counts.shape) < 2:
        return float("nan")  # one column constant: no association to speak of
    expected = counts.sum(1, keepdims=True) * counts.sum(0, keepdims=True) / n  # independence: E_ab = n_a n_b / n
    chi2 = ((counts - expected) ** 2 / expected).sum()  # Pearson's chi^2, no continuity correction
    return float(np.sqrt(chi2 / (n * (min(counts.shape) - 1))))


_MISSING = "\0missing"  # stands for a missing value where a category is needed (crosstab drops NaN)


def contingency_similarity(real: pd.DataFrame, synthetic: pd.DataFrame, threshold: float = 0.0) -> float:
    """SDMetrics' ContingencySimilarity: 1 - 1/2 sum_(a,b) |R_ab - S_ab|, missing a category; NaN if real V <= threshold."""
    if threshold > 0 and not cramers_v(real) > threshold:
        return float("nan")

    def table(frame: pd.DataFrame) -> pd.Series:
        # the normalised contingency table, as (a, b) -> share of rows; dropna=False keeps NaN as a category
        return frame.value_counts(normalize=True, dropna=False)
    both = pd.concat([table(real), table(synthetic)], axis=1).fillna(0.0)
    return float(1.0 - 0.5 * (both.iloc[:, 0] - both.iloc[:, 1]).abs().sum())


def _binned(series: pd.Series) -> pd.Series:
    """A continuous column as bin numbers: PAIR_BINS equal-width bins over its own range; missing stays missing.

    As SDMetrics' QualityReport does it (checked against sdmetrics 0.32): each table's column is cut over
    its own range, not the real one's, and np.digitize over all PAIR_BINS + 1 edges gives the maximum a
    bin of its own (index PAIR_BINS + 1).
    """
    values = pd.Series(np.nan, index=series.index)
    present = _numbers(series)
    if len(present) and present.min() == present.max():
        # numpy widens a constant column to +-0.5, where it lands in bin PAIR_BINS // 2 + 1; at datetime
        # nanoseconds (~1e18) that width has no 10 distinct float edges and numpy refuses: the same bin
        values[series.notna()] = PAIR_BINS // 2 + 1
    elif len(present):
        values[series.notna()] = np.digitize(present, np.histogram_bin_edges(present, bins=PAIR_BINS))
    return values


def quality(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str],
            correlation_threshold: float = CORRELATION_THRESHOLD,
            association_threshold: float = ASSOCIATION_THRESHOLD) -> dict[str, Any]:
    """SDMetrics' QualityReport: Column Shapes, Column Pair Trends, their mean, and every column's and pair's score.

    Column Shapes: KSComplement per continuous column, TVComplement per discrete one (both ignore missing
    values), averaged. Column Pair Trends, per pair of columns: CorrelationSimilarity (Pearson, rows with both
    present) for two continuous columns, else ContingencySimilarity (missing values a category of their own),
    a continuous column first cut into PAIR_BINS equal-width bins over its own range (_binned); only the pairs whose
    real trend passes the thresholds (CORRELATION_THRESHOLD, ASSOCIATION_THRESHOLD; 0 scores every pair, as
    SDMetrics before 0.26 did) are scored, the others are NaN. NaN scores are left out of the averages.
    quality = the mean of the two properties (the one that is defined, when no pair is scored).
    Returns {"quality", "column_shapes", "column_pair_trends", "columns": {name: score},
    "pairs": {a: {b: score}}} with a before b in kinds' order.
    """
    names = list(kinds)
    columns = {name: ks_complement(real[name], synthetic[name]) if kinds[name] == "continuous"
               else tv_complement(real[name], synthetic[name]) for name in names}
    pairs: dict[str, dict[str, float]] = {}
    for a, b in combinations(names, 2):
        if kinds[a] == kinds[b] == "continuous":
            score = correlation_similarity(real[[a, b]], synthetic[[a, b]], correlation_threshold)
        else:
            r, s = real[[a, b]].copy(), synthetic[[a, b]].copy()
            for name in (a, b):
                if kinds[name] == "continuous":
                    r[name], s[name] = _binned(real[name]), _binned(synthetic[name])
            score = contingency_similarity(r, s, association_threshold)
        pairs.setdefault(a, {})[b] = score
    shapes = _mean(columns.values())
    trends = _mean(score for row in pairs.values() for score in row.values())
    return {"quality": _mean([shapes, trends]), "column_shapes": shapes, "column_pair_trends": trends,
            "columns": columns, "pairs": pairs}


def _mean(values: Any) -> float:
    present = [v for v in values if not np.isnan(v)]
    return float(np.mean(present)) if present else float("nan")


def category_coverage(real: pd.Series, synthetic: pd.Series) -> tuple[int, int]:
    """(covered, total): the real column's distinct categories, and how many of them synthetic has (missing ignored)."""
    categories = set(real.dropna().unique())
    return len(categories & set(synthetic.dropna().unique())), len(categories)


def coverage(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str]) -> dict[str, Any]:
    """The table's mode metric: the share of real categories, and of real category pairs, that synthetic produces.

    Over the discrete columns; missing values are not a category here (as SDMetrics' CategoryCoverage).
    category_coverage = categories_covered / categories_total, pooled over the columns (a category is a
    mode, as a mixture's centre is); category_pair_coverage likewise over every pair of discrete columns
    and the (a, b) value pairs that occur together in a real row (rows with a missing value left out).
    `columns` holds each column's share (SDMetrics' CategoryCoverage of that column); NaN where there is
    nothing to cover (no discrete column, or fewer than two for pairs).
    """
    discrete = [name for name, kind in kinds.items() if kind == "discrete"]
    columns, covered, total = {}, 0, 0
    for name in discrete:
        hit, of = category_coverage(real[name], synthetic[name])
        columns[name] = hit / of if of else float("nan")
        covered, total = covered + hit, total + of
    pairs_covered, pairs_total = 0, 0
    for a, b in combinations(discrete, 2):
        seen = set(real[[a, b]].dropna().itertuples(index=False, name=None))
        made = set(synthetic[[a, b]].dropna().itertuples(index=False, name=None))
        pairs_covered, pairs_total = pairs_covered + len(seen & made), pairs_total + len(seen)
    return {"category_coverage": covered / total if total else float("nan"),
            "categories_covered": covered, "categories_total": total,
            "category_pair_coverage": pairs_covered / pairs_total if pairs_total else float("nan"),
            "category_pairs_covered": pairs_covered, "category_pairs_total": pairs_total,
            "columns": columns}
