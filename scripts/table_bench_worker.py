"""The half of scripts/table_bench.py that runs inside the benchmark's own venv: tables, CTGAN, scoring.

It imports pandas, scikit-learn, and (only inside the functions that need them) ctgan and sdmetrics,
which live in the venv `table_bench.py --setup` makes. gan-lab never imports this file: ctgan, rdt and
copulas (sdmetrics' dependency) are under the Business Source License, so they stay out of gan-lab's
environment. Every step reads and writes files (CSV, JSON), so the driver calls it as a subprocess:

    python table_bench_worker.py prepare TABLE DIR      # DIR/train.csv, DIR/test.csv, DIR/table.json
    python table_bench_worker.py ctgan DIR SEED OUT     # OUT/synthetic.csv, OUT/fit.json
    python table_bench_worker.py score DIR SYNTHETIC.csv OUT.json
    python table_bench_worker.py versions               # the installed packages' versions, as JSON
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

TEST_FRACTION = 0.2  # the held-out share of each table's rows
SPLIT_SEED = 0       # one fixed split per table, written once


def load_diamonds() -> pd.DataFrame:
    """plotnine's bundled diamonds: 53,940 rows, 7 numeric and 3 categorical columns, none missing."""
    from plotnine.data import diamonds

    return diamonds


def load_penguins() -> pd.DataFrame:
    """palmerpenguins' penguins: 344 rows, 5 numeric and 3 categorical columns, missing numbers and sexes."""
    from palmerpenguins import load_penguins as load

    return load()


def load_txhousing() -> pd.DataFrame:
    """plotnine's bundled txhousing: 8,602 rows of monthly Texas home sales by city, many missing numbers."""
    from plotnine.data import txhousing

    return txhousing


# name -> (loader, source, discrete columns, target, task). The discrete columns are written out rather
# than inferred so that CTGAN, SDMetrics and gan-lab are all told the same thing. Small-integer columns
# (penguins' year, txhousing's year and month) are discrete, as gan-lab's own type inference makes them.
TABLES: dict[str, tuple[Callable[[], pd.DataFrame], str, list[str], str, str]] = {
    "diamonds": (load_diamonds, "plotnine.data.diamonds", ["cut", "color", "clarity"], "price", "regression"),
    "penguins": (load_penguins, "palmerpenguins.load_penguins()", ["species", "island", "sex", "year"],
                 "species", "classification"),
    "txhousing": (load_txhousing, "plotnine.data.txhousing", ["city", "year", "month"], "median", "regression"),
}


def split(frame: pd.DataFrame, test_fraction: float = TEST_FRACTION,
          seed: int = SPLIT_SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The table's rows shuffled by a fixed seed and cut into (train, held-out test); row order kept in each."""
    order = np.random.default_rng(seed).permutation(len(frame))
    n_test = int(round(len(frame) * test_fraction))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return frame.iloc[train].reset_index(drop=True), frame.iloc[test].reset_index(drop=True)


def file_digest(*paths: Path) -> str:
    """sha256 of the files' bytes, so a cached result names the exact split it was made on."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def prepare(name: str, out: Path) -> dict[str, Any]:
    """Write the table's fixed split and its description (table.json) to out, once; return the description."""
    described = out / "table.json"
    if described.exists():  # written once: a later run reuses the same split, byte for byte
        return json.loads(described.read_text())
    loader, source, discrete, target, task = TABLES[name]
    frame = loader()
    for column in frame.columns:  # categoricals become plain strings so the CSV reads back the same way
        if column in discrete and not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].astype("object").where(frame[column].notna(), None)
    train, test = split(frame)
    out.mkdir(parents=True, exist_ok=True)
    train.to_csv(out / "train.csv", index=False)
    test.to_csv(out / "test.csv", index=False)
    info = {
        "name": name, "source": source, "rows": len(frame), "columns": list(frame.columns),
        "discrete": discrete, "target": target, "task": task,
        "missing": {c: int(frame[c].isna().sum()) for c in frame.columns if frame[c].isna().any()},
        "train_rows": len(train), "test_rows": len(test), "split_seed": SPLIT_SEED,
        "test_fraction": TEST_FRACTION, "digest": file_digest(out / "train.csv", out / "test.csv"),
    }
    described.write_text(json.dumps(info, indent=1) + "\n")
    return info


def read_table(path: Path, info: dict[str, Any]) -> pd.DataFrame:
    """A split's CSV, its discrete columns read as strings (a year stays '2007', not 2007.0 beside NaN)."""
    frame = pd.read_csv(path, dtype={c: str for c in info["discrete"]}, keep_default_na=True)
    for column in info["discrete"]:  # '2007.0' if pandas wrote an integer column with NaN as floats
        frame[column] = frame[column].map(lambda v: v[:-2] if isinstance(v, str) and v.endswith(".0") else v)
    return frame


def continuous_columns(info: dict[str, Any]) -> list[str]:
    """The table's columns that are not discrete, in order."""
    return [c for c in info["columns"] if c not in info["discrete"]]


def one_thread() -> None:
    """One CPU thread for torch and every BLAS/OpenMP pool (the driver also sets the environment)."""
    import torch

    torch.set_num_threads(1)


def fit_ctgan(table_dir: Path, seed: int, out: Path) -> dict[str, Any]:
    """CTGAN at its defaults on the training split, timed; writes out/synthetic.csv (as many rows) and out/fit.json.

    CTGAN refuses a missing value in a continuous column; then the refusal is the result, and the
    driver may call again with drop_missing_numbers, which fits on the training rows that have all
    their numbers (discrete columns keep their missing values: CTGAN models those as a category).
    """
    import ctgan
    import torch

    one_thread()
    info = json.loads((table_dir / "table.json").read_text())
    train = read_table(table_dir / "train.csv", info)
    drop = os.environ.get("TABLE_BENCH_DROP_MISSING_NUMBERS") == "1"
    if drop:
        train = train.dropna(subset=continuous_columns(info)).reset_index(drop=True)
    transforms = timed_transformer()
    torch.manual_seed(seed)
    np.random.seed(seed)
    synthesizer = ctgan.CTGAN()  # its defaults: 300 epochs, batch 500, pac 10, WGAN-GP, Adam 2e-4
    synthesizer.set_random_state(seed)
    result: dict[str, Any] = {"seed": seed, "fit_rows": len(train), "dropped_missing_numbers": drop,
                              "ctgan": ctgan.__version__, "torch": torch.__version__,
                              "threads": torch.get_num_threads()}
    start = time.process_time()
    try:
        synthesizer.fit(train, discrete_columns=info["discrete"])
    except Exception as error:  # the refusal (e.g. missing numbers) is the result for this table
        result.update(refused=f"{type(error).__name__}: {error}", fit_cpu_s=time.process_time() - start)
        out.mkdir(parents=True, exist_ok=True)
        (out / "fit.json").write_text(json.dumps(result, indent=1) + "\n")
        return result
    result["fit_cpu_s"] = time.process_time() - start
    result["transform_cpu_s"] = transforms["cpu_s"] if transforms["calls"] else None
    start = time.process_time()
    synthetic = synthesizer.sample(info["train_rows"])  # as many rows as the training split
    result["sample_cpu_s"] = time.process_time() - start
    out.mkdir(parents=True, exist_ok=True)
    synthetic.to_csv(out / "synthetic.csv", index=False)
    (out / "fit.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def timed_transformer() -> dict[str, Any]:
    """Count the CPU time CTGAN spends fitting and applying its data transformer, through its public class.

    ctgan.CTGAN.fit builds a `DataTransformer` (the module attribute `ctgan.synthesizers.ctgan.DataTransformer`);
    swapping in a subclass whose fit/transform add their process time to a counter times that part
    apart without running it twice. If a later ctgan moves it, calls stays 0 and the split is not reported.
    """
    import ctgan.synthesizers.ctgan as module

    counter: dict[str, Any] = {"cpu_s": 0.0, "calls": 0}
    base = getattr(module, "DataTransformer", None)
    if base is None:
        return counter

    class Timed(base):  # type: ignore[misc, valid-type]
        def fit(self, *args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return super().fit(*args, **kwargs)
            finally:
                counter["cpu_s"] += time.process_time() - start
                counter["calls"] += 1

        def transform(self, *args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return super().transform(*args, **kwargs)
            finally:
                counter["cpu_s"] += time.process_time() - start

    module.DataTransformer = Timed
    return counter


def features(frame: pd.DataFrame, info: dict[str, Any], categories: dict[str, list[str]]) -> pd.DataFrame:
    """The table without its target, discrete columns as pandas categoricals over the real training split's values."""
    x = frame[[c for c in info["columns"] if c != info["target"]]].copy()
    for column in info["discrete"]:
        if column in x:  # a value the real training split lacks becomes missing, as an unseen category must
            x[column] = pd.Categorical(x[column], categories=categories[column])
    for column in continuous_columns(info):
        if column in x:
            x[column] = pd.to_numeric(x[column], errors="coerce")
    return x


def tstr(train: pd.DataFrame, test: pd.DataFrame, info: dict[str, Any],
         categories: dict[str, list[str]]) -> float:
    """Train a fixed model on train, score it on the held-out test: F1-macro (classification) or R^2 (regression).

    HistGradientBoosting at scikit-learn's defaults, random_state 0, categorical features from their
    dtype; it takes missing feature values as they are. Rows whose target is missing are left out of
    both sides (there is nothing to learn or score on them).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import f1_score, r2_score

    target = info["target"]
    train, test = train[train[target].notna()], test[test[target].notna()]
    if info["task"] == "classification":
        model = HistGradientBoostingClassifier(random_state=0, categorical_features="from_dtype")
        model.fit(features(train, info, categories), train[target].astype(str))
        predicted = model.predict(features(test, info, categories))
        return float(f1_score(test[target].astype(str), predicted, average="macro"))
    model = HistGradientBoostingRegressor(random_state=0, categorical_features="from_dtype")
    model.fit(features(train, info, categories), pd.to_numeric(train[target]))
    return float(r2_score(pd.to_numeric(test[target]), model.predict(features(test, info, categories))))


def sdmetrics_metadata(info: dict[str, Any]) -> dict[str, Any]:
    """SDMetrics' single-table metadata: discrete columns categorical, the others numerical."""
    return {"columns": {c: {"sdtype": "categorical" if c in info["discrete"] else "numerical"}
                        for c in info["columns"]}}


def score(table_dir: Path, synthetic_path: Path) -> dict[str, Any]:
    """SDMetrics QualityReport of synthetic vs the held-out split, and TSTR beside train-on-real."""
    info = json.loads((table_dir / "table.json").read_text())
    train, test = read_table(table_dir / "train.csv", info), read_table(table_dir / "test.csv", info)
    synthetic = read_table(synthetic_path, info)
    quality = quality_report(test, synthetic, info)
    categories = {c: sorted(train[c].dropna().unique()) for c in info["discrete"]}
    return {**quality, "tstr": tstr(synthetic, test, info, categories),
            "tstr_real": tstr(train, test, info, categories), "synthetic_rows": len(synthetic),
            "metric": "F1-macro" if info["task"] == "classification" else "R^2"}


def quality_report(real: pd.DataFrame, synthetic: pd.DataFrame, info: dict[str, Any]) -> dict[str, float]:
    """SDMetrics' QualityReport: its score and its two properties (Column Shapes, Column Pair Trends)."""
    from sdmetrics.reports.single_table import QualityReport

    report = QualityReport()
    report.generate(real, synthetic[list(real.columns)], sdmetrics_metadata(info), verbose=False)
    properties = report.get_properties().set_index("Property")["Score"]
    return {"quality": float(report.get_score()), "shapes": float(properties["Column Shapes"]),
            "pair_trends": float(properties["Column Pair Trends"])}


def versions() -> dict[str, str]:
    """The versions of the packages a cached result depends on (absent ones are left out)."""
    from importlib import metadata

    found = {}
    for package in ("ctgan", "sdmetrics", "scikit-learn", "pandas", "numpy", "torch", "plotnine", "palmerpenguins"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def main(argv: list[str]) -> None:
    """Dispatch one step (see the module docstring); print its JSON result on stdout."""
    command, *args = argv
    if command == "prepare":
        result: Any = prepare(args[0], Path(args[1]))
    elif command == "ctgan":
        result = fit_ctgan(Path(args[0]), int(args[1]), Path(args[2]))
    elif command == "score":
        result = score(Path(args[0]), Path(args[1]))
        Path(args[2]).write_text(json.dumps(result, indent=1) + "\n")
    elif command == "versions":
        result = versions()
    else:
        sys.exit(f"error: unknown step {command!r}: prepare, ctgan, score or versions")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
