"""scripts/table_bench.py (docs/table.md): the cache, the doc's rows and goal line, and the worker's split and TSTR.

The driver's parts run here. The worker's (pandas, scikit-learn) run in the benchmark's own venv
(`table_bench.py --setup`) and are skipped where it is absent; none of them imports ctgan or
sdmetrics, which are under the Business Source License and never enter gan-lab's tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import table_bench  # noqa: E402  (scripts/ is not a package)

INFO = {"name": "tiny", "source": "test", "rows": 10, "columns": ["a", "b", "y"], "discrete": ["b"], "target": "y",
        "task": "regression", "missing": {"a": 1}, "train_rows": 8, "test_rows": 2, "split_seed": 0,
        "test_fraction": 0.2, "digest": "d0"}
VERSIONS = {"ctgan": "9.9", "torch": "2.0", "sdmetrics": "1.0", "scikit-learn": "1.0", "pandas": "2.0"}


def scored(seed: int, quality: float, tstr: float, cpu: float) -> dict[str, Any]:
    """A cached result as result_for writes it, with the given figures."""
    return {"seed": seed, "fit": {"fit_cpu_s": cpu, "transform_cpu_s": cpu / 4, "fit_rows": 7},
            "scores": {"quality": quality, "shapes": quality + 0.1, "pair_trends": quality - 0.1, "tstr": tstr,
                       "tstr_real": 0.9}}


class FakeBench(table_bench.Bench):
    """A Bench whose worker steps are stubs: the table is INFO, scoring returns fixed figures and is counted."""

    def __init__(self, cache: Path) -> None:
        super().__init__(cache)
        self.scored = 0

    def table(self, name: str) -> tuple[Path, dict[str, Any]]:
        return self.cache / "tables" / name, INFO

    def worker(self, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        assert args[0] == "score"
        self.scored += 1
        return {"quality": 0.5, "shapes": 0.6, "pair_trends": 0.4, "tstr": 0.3, "tstr_real": 0.9}


def test_a_cached_result_is_reused_and_a_new_scoring_version_rescores_without_refitting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fits = []

    def runner(bench: table_bench.Bench, table_dir: Path, info: dict, seed: int, out: Path) -> dict[str, Any]:
        fits.append(seed)
        out.mkdir(parents=True)
        (out / "fit.json").write_text(json.dumps({"fit_cpu_s": 12.0}))
        return {"fit_cpu_s": 12.0}

    monkeypatch.setitem(table_bench.SYSTEMS, "ctgan", (runner, "CTGAN", {"threads": 1}, False))
    bench = FakeBench(tmp_path)
    first = table_bench.result_for(bench, "ctgan", "tiny", 0, VERSIONS)
    again = table_bench.result_for(bench, "ctgan", "tiny", 0, VERSIONS)
    assert (fits, bench.scored) == ([0], 1) and again == first and first["scores"]["quality"] == 0.5
    table_bench.result_for(bench, "ctgan", "tiny", 1, VERSIONS)  # another seed is another fit
    assert (fits, bench.scored) == ([0, 1], 2)
    table_bench.result_for(bench, "ctgan", "tiny", 0, {**VERSIONS, "sdmetrics": "1.1"})
    assert (fits, bench.scored) == ([0, 1], 3)  # scored again from the kept fit, not fitted again
    table_bench.result_for(bench, "ctgan", "tiny", 0, {**VERSIONS, "ctgan": "10.0"})
    assert fits == [0, 1, 0]  # a new ctgan is a new fit
    assert table_bench.result_for(bench, "ctgan", "tiny", 2, VERSIONS, fit_missing=False) is None
    assert fits == [0, 1, 0]


def test_ctgan_dropna_runs_only_on_a_table_with_missing_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(table_bench.SYSTEMS, "ctgan-dropna",
                        (lambda *args: pytest.fail("fitted"), "dropped", {}, True))
    monkeypatch.setattr(FakeBench, "table", lambda self, name: (tmp_path, {**INFO, "missing": {"b": 3}}))
    assert table_bench.result_for(FakeBench(tmp_path), "ctgan-dropna", "tiny", 0, VERSIONS) is None


def test_a_table_section_lists_refusals_rows_and_means() -> None:
    refused = [{"seed": seed, "fit": {"refused": "InvalidDataError: no nulls"}, "scores": {}} for seed in (0, 1)]
    lines = table_bench.table_section(INFO, {"ctgan": refused,
                                             "ctgan-dropna": [scored(0, 0.70, 0.50, 10.0), scored(1, 0.80, 0.70, 20.0)]})
    assert "| CTGAN | 0, 1 | refused: InvalidDataError: no nulls |" in "\n".join(lines)
    assert "dropped: fitted on 7 of the 8 training rows" in "\n".join(lines)
    mean_row = next(line for line in lines if "mean of 2" in line).split("|")[3:-1]
    assert [cell.strip() for cell in mean_row] == ["0.750", "0.850", "0.650", "0.600", "0.900", "15.0", "3.8"]
    assert "missing values: a 1" in lines[2] and "R^2" in lines[2]
    assert lines[-2].endswith("not measured yet (gan-lab's side has not run).")
    assert "TSTR leaves out" not in "\n".join(lines)  # y has no missing values here


@pytest.mark.parametrize(("quality", "tstr", "cpu", "verdict"),
                         [(0.80, 0.69, 30.0, "met."), (0.79, 0.69, 30.0, "short on quality."),
                          (0.80, 0.67, 30.0, "short on TSTR."), (0.80, 0.69, 31.0, "short on CPU."),
                          (0.70, 0.60, 90.0, "short on quality, TSTR, CPU.")])
def test_the_goal_line_holds_gan_lab_to_the_issues_three_bounds(quality: float, tstr: float, cpu: float,
                                                                verdict: str) -> None:
    line = table_bench.goal_lines({"gan-lab": ({"quality": quality, "tstr": tstr}, cpu),
                                   "ctgan": ({"quality": 0.80, "tstr": 0.70}, 90.0)})[0]
    assert line.startswith("Goal against CTGAN: ") and line.endswith(verdict), line


BENCH_PYTHON = table_bench.DEFAULT_CACHE / "venv" / "bin" / "python"
needs_bench = pytest.mark.skipif(not BENCH_PYTHON.exists(), reason="no benchmark venv (table_bench.py --setup)")


def in_bench(code: str) -> Any:
    """Run code in the benchmark venv with the worker imported as w; the JSON it prints."""
    done = subprocess.run([str(BENCH_PYTHON), "-c", f"import json, sys; sys.path.insert(0, {str(REPO / 'scripts')!r}); "
                           f"import table_bench_worker as w, pandas as pd, numpy as np\n{code}"],
                          capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_bench
def test_the_split_is_fixed_disjoint_and_keeps_row_order() -> None:
    got = in_bench("frame = pd.DataFrame({'i': range(10)})\n"
                   "a, b = w.split(frame); c, d = w.split(frame); e, f = w.split(frame, seed=1)\n"
                   "print(json.dumps([list(a.i), list(b.i), list(c.i), list(d.i), list(f.i)]))")
    train, test, train_again, test_again, other_test = got
    assert len(test) == 2 and sorted(train + test) == list(range(10)) and (train, test) == (sorted(train), sorted(test))
    assert (train_again, test_again) == (train, test) and other_test != test


@needs_bench
def test_a_discrete_integer_column_with_gaps_reads_back_as_its_integers(tmp_path: Path) -> None:
    got = in_bench(f"pd.DataFrame({{'year': [2007, None, 2009], 'x': [1.5, 2.5, None]}}).to_csv({str(tmp_path / 't.csv')!r}, index=False)\n"
                   f"frame = w.read_table(__import__('pathlib').Path({str(tmp_path / 't.csv')!r}), {{'discrete': ['year']}})\n"
                   "print(json.dumps([frame.year.where(frame.year.notna(), None).tolist(), frame.x.isna().tolist()]))")
    assert got == [["2007", None, "2009"], [False, False, True]]


@pytest.mark.slow  # the benchmark's venv, a subprocess
@needs_bench
def test_tstr_scores_real_rows_like_real_and_a_scrambled_target_near_zero() -> None:
    # y = 3a + (b == 'p'): rows like the real ones score high; rows whose target is shuffled carry
    # no signal, so the held-out R^2 falls to about 0 or below.
    got = in_bench("rng = np.random.default_rng(0); n = 400\n"
                   "a = rng.normal(size=n); b = rng.choice(['p', 'q'], size=n)\n"
                   "frame = pd.DataFrame({'a': a, 'b': b, 'y': 3 * a + (b == 'p')})\n"
                   "info = {'columns': ['a', 'b', 'y'], 'discrete': ['b'], 'target': 'y', 'task': 'regression'}\n"
                   "train, test = frame[:300], frame[300:]; cats = {'b': ['p', 'q']}\n"
                   "scrambled = train.assign(y=rng.permutation(train.y.values))\n"
                   "label = {**info, 'target': 'b', 'task': 'classification'}\n"
                   "print(json.dumps([w.tstr(train, test, info, cats), w.tstr(scrambled, test, info, cats),\n"
                   "                  w.tstr(train, test, label, cats),\n"
                   "                  w.tstr(train.assign(b=rng.permutation(train.b.values)), test, label, cats)]))")
    real, scrambled, f1, f1_scrambled = got
    assert 0.93 < real <= 1.0 and -0.3 < scrambled < 0.1
    assert 0.9 < f1 <= 1.0 and 0.3 < f1_scrambled < 0.7  # b is y - 3a exactly; shuffled, a coin toss


def test_the_losses_section_gives_each_losss_mean_and_range_from_the_runs_records(tmp_path: Path) -> None:
    import table_losses

    for loss, seed, quality, copies in (("hinge", 0, 0.6, 0.0), ("hinge", 1, 0.8, 0.1), ("r3gan", 0, 0.7, 0.0)):
        run = tmp_path / "tiny" / f"{loss}-seed{seed}"
        run.mkdir(parents=True)
        (run / "eval.json").write_text(json.dumps({"metrics/quality": quality, "metrics/category_coverage": 1.0,
                                                   "memorisation/exact_copy_rate": copies, "utility/tstr_r2": 0.5}))
        (run / "status.json").write_text(json.dumps({"status": "completed", "cpu_s": 10.0 + seed}))
    found = table_losses.results(tmp_path, ("tiny",))
    assert {loss: len(runs) for loss, runs in found["tiny"].items()} == {"hinge": 2, "r3gan": 1}
    lines = table_losses.section(found)
    header = next(line for line in lines if line.startswith("| loss |"))
    assert "TSTR r2" in header and "CPU s" in header
    hinge = next(line for line in lines if line.startswith("| hinge |")).split("|")[2:-1]
    assert hinge[0].strip() == "0.700 [0.600, 0.800]"  # quality: mean [min, max] over the two seeds
    assert hinge[5].strip() == "0.050 [0.000, 0.100]"  # exact copies
    assert hinge[3].strip() == "-"  # a figure no record holds
    assert [c.strip() for c in hinge[-2:]] == ["10", "2"]  # mean CPU s, seeds
