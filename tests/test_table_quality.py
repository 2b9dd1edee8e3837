"""The table metrics (gan_lab.evaluation.table_quality): closed forms, their order, and equality with SDMetrics."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gan_lab.evaluation.table_quality import coverage, cramers_v, quality

# sdmetrics lives only in the table benchmark's own venv (scripts/table_bench.py --setup): its dependency
# copulas is under the Business Source License, so gan-lab never imports it. CI has no such venv.
SDMETRICS_PYTHON = Path.home() / ".cache" / "gan-lab" / "table-bench" / "venv" / "bin" / "python"
needs_sdmetrics = pytest.mark.skipif(not SDMETRICS_PYTHON.exists(), reason="no sdmetrics venv (table_bench.py --setup)")

# Run inside the venv: SDMetrics' QualityReport on two CSVs, its per-column and per-pair scores as JSON.
SDMETRICS_SCRIPT = """
import json, sys
import pandas as pd
from sdmetrics.reports.single_table import QualityReport
from sdmetrics.single_column import CategoryCoverage
real_path, synthetic_path, meta, threshold = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
def read(path):
    frame = pd.read_csv(path)
    for name, column in meta["columns"].items():
        if column["sdtype"] == "datetime":
            frame[name] = pd.to_datetime(frame[name])
    return frame
real, synthetic = read(real_path), read(synthetic_path)
report = QualityReport()
if threshold != "default":
    report.real_correlation_threshold = report.real_association_threshold = float(threshold)
report.generate(real, synthetic, meta, verbose=False)
properties = report.get_properties().set_index("Property")["Score"]
shapes, trends = report.get_details("Column Shapes"), report.get_details("Column Pair Trends")
print(json.dumps({"quality": report.get_score(), "column_shapes": properties["Column Shapes"],
                  "column_pair_trends": properties["Column Pair Trends"],
                  "columns": dict(zip(shapes["Column"], shapes["Score"])),
                  "pairs": [[a, b, s] for a, b, s in zip(trends["Column 1"], trends["Column 2"], trends["Score"])],
                  "coverage": {name: CategoryCoverage.compute(real[name], synthetic[name])
                               for name, column in meta["columns"].items() if column["sdtype"] == "categorical"}},
                 default=float))
"""

SDTYPES = {"continuous": "numerical", "discrete": "categorical"}


def sdmetrics(tmp_path: Path, real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str],
              threshold: str = "default") -> dict:
    """SDMetrics' own report of the two frames, run in its venv on CSVs written here."""
    real.to_csv(tmp_path / "real.csv", index=False)
    synthetic.to_csv(tmp_path / "synthetic.csv", index=False)
    meta = {"columns": {name: {"sdtype": "datetime", "datetime_format": "%Y-%m-%d"}
                        if pd.api.types.is_datetime64_any_dtype(real[name]) else {"sdtype": SDTYPES[kind]}
                        for name, kind in kinds.items()}}
    done = subprocess.run([str(SDMETRICS_PYTHON), "-c", SDMETRICS_SCRIPT, str(tmp_path / "real.csv"),
                           str(tmp_path / "synthetic.csv"), json.dumps(meta), threshold],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_back(tmp_path: Path, kinds: dict[str, str], dates: tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The CSVs sdmetrics read, read the same way here (so both sides see the same values)."""
    frames = []
    for name in ("real.csv", "synthetic.csv"):
        frame = pd.read_csv(tmp_path / name)
        for column in dates:
            frame[column] = pd.to_datetime(frame[column])
        frames.append(frame)
    return frames[0], frames[1]


# A tiny table whose scores are worked out by hand below, and were matched against sdmetrics 0.32.
TINY_REAL = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [1.0, 2.0, 3.0, 4.0], "c": ["a", "a", "b", None]})
TINY_SYNTHETIC = pd.DataFrame({"x": [2.0, 3.0, 4.0, 5.0], "y": [4.0, 3.0, 2.0, 1.0], "c": ["a", "b", "b", "b"]})
TINY_KINDS = {"x": "continuous", "y": "continuous", "c": "discrete"}


def test_the_tiny_table_by_hand() -> None:
    scores = quality(TINY_REAL, TINY_SYNTHETIC, TINY_KINDS, correlation_threshold=0.0, association_threshold=0.0)
    # KS of {1,2,3,4} vs {2,3,4,5}: the CDFs differ by 1/4 at x = 1..4, so 1 - 1/4
    assert scores["columns"]["x"] == pytest.approx(0.75, abs=1e-12)
    # y: the same values in another order: KS 0
    assert scores["columns"]["y"] == pytest.approx(1.0, abs=1e-12)
    # c, missing ignored: real a 2/3, b 1/3; synthetic a 1/4, b 3/4; TVD = (5/12 + 5/12) / 2
    assert scores["columns"]["c"] == pytest.approx(1 - 5 / 12, abs=1e-12)
    # x-y: real r = 1, synthetic r = -1: 1 - |(-1) - 1| / 2 = 0
    assert scores["pairs"]["x"]["y"] == pytest.approx(0.0, abs=1e-12)
    # x-c: x cut into 10 bins over its own range, the maximum its own bin: real (1,a) (2,a) (3,b) (4,NaN)
    # -> bins 1, 4, 7, 11; synthetic (2,a) (3,b) (4,b) (5,b) -> 1, 4, 7, 11: cells (1,a) (4,b) (7,b) (11,b).
    # shared cells: (1,a) 1/4 each, (7,b) 1/4 each; the rest differ by 1/4 each over 4 cells: TVD 1/2
    assert scores["pairs"]["x"]["c"] == pytest.approx(0.5, abs=1e-12)
    # y-c: real (1,a) (4,a) (7,b) (11,NaN); synthetic y reversed: (11,a) (7,b) (4,b) (1,b): shared (7,b) only
    assert scores["pairs"]["y"]["c"] == pytest.approx(0.25, abs=1e-12)
    assert scores["column_shapes"] == pytest.approx((0.75 + 1.0 + 7 / 12) / 3, abs=1e-12)
    assert scores["column_pair_trends"] == pytest.approx((0.0 + 0.5 + 0.25) / 3, abs=1e-12)
    assert scores["quality"] == pytest.approx((scores["column_shapes"] + scores["column_pair_trends"]) / 2, abs=1e-12)
    # at SDMetrics' default thresholds: x-y has |r| = 1 > 0.5 and stays; x-c and y-c: their real Cramer's V
    # (4 x 3 table, one row per cell: chi^2 = 8, V = sqrt(8 / (4 * 2)) = 1) stays above 0.3
    default = quality(TINY_REAL, TINY_SYNTHETIC, TINY_KINDS)
    assert default["column_pair_trends"] == pytest.approx(scores["column_pair_trends"], abs=1e-12)


def test_a_pair_without_a_real_trend_is_not_scored() -> None:
    real = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [1.0, -1.0, -1.0, 1.5]})  # r = 0.75 / sqrt(5 * 5.1875)
    kinds = {"x": "continuous", "y": "continuous"}
    scores = quality(real, real, kinds)
    assert np.isnan(scores["pairs"]["x"]["y"]) and np.isnan(scores["column_pair_trends"])
    assert scores["quality"] == pytest.approx(1.0, abs=1e-12)  # the shapes alone, when no pair is scored
    assert quality(real, real, kinds, 0.0, 0.0)["pairs"]["x"]["y"] == pytest.approx(1.0, abs=1e-12)
    assert quality(real, real, kinds, 0.14, 0.0)["pairs"]["x"]["y"] == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(quality(real, real, kinds, 0.15, 0.0)["pairs"]["x"]["y"])
    # "exceeds", as SDMetrics: a real r of exactly 0 is not scored even at threshold 0
    flat = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [1.0, -1.0, -1.0, 1.0]})
    assert np.isnan(quality(flat, flat, kinds, 0.0, 0.0)["pairs"]["x"]["y"])
    # two discrete columns: counts (a,u) 2, (a,v) 1, (b,u) 1, (b,v) 2; expected 1.5 each, chi^2 = 4 * 0.25 / 1.5
    # = 2/3, V = sqrt((2/3) / (6 * 1)) = 1/3: scored above a threshold of 0.3, not above 0.34
    pairs = pd.DataFrame({"c": list("aaabbb"), "k": list("uuvuvv")})
    assert cramers_v(pairs) == pytest.approx(1 / 3, abs=1e-12)
    discrete = {"c": "discrete", "k": "discrete"}
    assert quality(pairs, pairs, discrete, 0.5, 0.3)["pairs"]["c"]["k"] == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(quality(pairs, pairs, discrete, 0.5, 0.34)["pairs"]["c"]["k"])


def test_coverage_by_hand() -> None:
    real = pd.DataFrame({"c": ["a", "b", "c", None], "k": [1, 1, 2, 2], "x": [0.0, 1.0, 2.0, 3.0]})
    synthetic = pd.DataFrame({"c": ["a", "a", None, "z"], "k": [1, 2, 2, 2], "x": [9.0, 9.0, 9.0, 9.0]})
    found = coverage(real, synthetic, {"c": "discrete", "k": "discrete", "x": "continuous"})
    # c: a of {a, b, c} (missing and the unseen z not counted); k: both of {1, 2}: 3 of 5 pooled
    assert (found["categories_covered"], found["categories_total"]) == (3, 5)
    assert found["category_coverage"] == pytest.approx(0.6, abs=1e-12)
    assert found["columns"] == pytest.approx({"c": 1 / 3, "k": 1.0}, abs=1e-12)
    # real (c, k) pairs with both present: (a,1) (b,1) (c,2); synthetic has (a,1) (a,2) (z,2): 1 of 3
    assert (found["category_pairs_covered"], found["category_pairs_total"]) == (1, 3)
    assert found["category_pair_coverage"] == pytest.approx(1 / 3, abs=1e-12)


def mixed_table(n: int, rng: np.random.Generator, shift: float = 0.0) -> pd.DataFrame:
    """A mixed table with trends between its columns, missing values and a date column."""
    x = rng.normal(shift, 1.0, n)
    c = np.where(x + rng.normal(0, 0.5, n) > 0.5, "a", np.where(rng.random(n) < 0.5, "b",
                                                                 np.where(rng.random(n) < 0.7, "c", "d")))
    frame = pd.DataFrame({"x": x, "y": 2 * x + rng.normal(0, 1, n), "c": c,
                          "k": np.where(c == "a", 0, rng.integers(1, 3, n)),
                          "d": pd.Timestamp("2020-01-01") + pd.to_timedelta((300 * x).round() + rng.integers(0, 100, n),
                                                                            unit="D"),
                          "u": rng.random(n), "g": rng.choice(["p", "q"], n)})  # no trend with the others
    frame.loc[rng.random(n) < 0.1, "x"] = np.nan
    frame.loc[rng.random(n) < 0.1, "c"] = None
    return frame


MIXED_KINDS = {"x": "continuous", "y": "continuous", "c": "discrete", "k": "discrete", "d": "continuous",
               "u": "continuous", "g": "discrete"}


def test_scores_order_identical_noisy_collapsed() -> None:
    rng = np.random.default_rng(0)
    real = mixed_table(400, rng)
    noisy = real.sample(frac=1.0, random_state=1).reset_index(drop=True)
    noisy["x"] = noisy["x"] + rng.normal(0, 0.5, len(noisy))
    noisy["c"] = noisy["c"].sample(frac=1.0, random_state=2).to_numpy()  # its link to x broken
    collapsed = pd.concat([real.iloc[[0]]] * len(real), ignore_index=True)
    scores = [quality(real, frame, MIXED_KINDS)["quality"] for frame in (real, noisy, collapsed)]
    assert scores[0] == pytest.approx(1.0, abs=1e-12)
    assert scores[0] > scores[1] + 0.02 and scores[1] > scores[2] + 0.2, scores
    found = [coverage(real, frame, MIXED_KINDS) for frame in (real, noisy, collapsed)]
    assert [f["category_coverage"] for f in found][:2] == [1.0, 1.0]
    assert found[2]["categories_covered"] == 3 and found[2]["categories_total"] == 9  # one c, k, g of 4 + 3 + 2
    assert found[2]["category_pair_coverage"] < found[1]["category_pair_coverage"] <= 1.0


@pytest.mark.slow  # sdmetrics runs in the benchmark's venv, a subprocess
@needs_sdmetrics
def test_equal_to_sdmetrics_on_the_tiny_table(tmp_path: Path) -> None:
    theirs = sdmetrics(tmp_path, TINY_REAL, TINY_SYNTHETIC, TINY_KINDS, threshold="0")
    assert theirs["columns"] == pytest.approx({"x": 0.75, "y": 1.0, "c": 7 / 12}, abs=1e-8)
    assert [[a, b, s] for a, b, s in theirs["pairs"]] == [["x", "y", pytest.approx(0.0, abs=1e-12)],
                                                          ["x", "c", pytest.approx(0.5, abs=1e-12)],
                                                          ["y", "c", pytest.approx(0.25, abs=1e-12)]]


@pytest.mark.slow  # sdmetrics runs in the benchmark's venv, a subprocess
@needs_sdmetrics
@pytest.mark.parametrize("threshold", ["default", "0"])
def test_equal_to_sdmetrics_on_a_mixed_table(tmp_path: Path, threshold: str) -> None:
    rng = np.random.default_rng(0)
    real, synthetic = mixed_table(300, rng), mixed_table(200, rng, shift=0.7)
    synthetic.loc[synthetic.index[:3], "c"] = "unseen"
    synthetic = synthetic[synthetic["c"] != "d"]  # a real category the synthetic rows never produce
    theirs = sdmetrics(tmp_path, real, synthetic, MIXED_KINDS, threshold)
    real, synthetic = read_back(tmp_path, MIXED_KINDS, dates=("d",))
    thresholds = {} if threshold == "default" else {"correlation_threshold": 0.0, "association_threshold": 0.0}
    mine = quality(real, synthetic, MIXED_KINDS, **thresholds)
    # TVComplement agrees to the ninth decimal only: sdmetrics' frequencies round differently
    for key in ("quality", "column_shapes", "column_pair_trends"):
        assert mine[key] == pytest.approx(theirs[key], abs=1e-8), key
    assert mine["columns"] == pytest.approx(theirs["columns"], abs=1e-8)
    for a, b, score in theirs["pairs"]:
        assert mine["pairs"][a][b] == pytest.approx(score, abs=1e-12, nan_ok=True), (a, b)
    unscored = sum(np.isnan(score) for _, _, score in theirs["pairs"])
    assert unscored == (0 if threshold == "0" else 11), unscored  # u and g with each other and the 5 others
    assert coverage(real, synthetic, MIXED_KINDS)["columns"] == pytest.approx(theirs["coverage"], abs=1e-12)
