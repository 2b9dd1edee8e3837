"""Machine-learning efficacy of a synthetic table: train on synthetic, test on real (TSTR), beside train on real.

One fixed model so that numbers compare across runs and with the table benchmark (scripts/table_bench.py
scores CTGAN the same way): scikit-learn's HistGradientBoosting at its defaults, random_state 0, scored on
a held-out real split: F1-macro when the target is discrete, R^2 when it is continuous.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["tstr"]

# HistGradientBoosting takes a categorical feature natively up to max_bins (255) categories; a discrete
# feature with more is given as its ordinal code instead (a number the trees can still split).
MAX_NATIVE_CATEGORIES = 255


def _features(frame: pd.DataFrame, kinds: dict[str, str], categories: dict[str, list[Any]]) -> pd.DataFrame:
    """The feature columns as the model takes them: categoricals over the real training values, numbers as float."""
    x = pd.DataFrame(index=frame.index)
    for name, kind in kinds.items():
        series = frame[name]
        if kind == "discrete":
            # a category the real training split lacks becomes missing, as an unseen category must
            coded = pd.Categorical(series.where(series.isin(categories[name])), categories=categories[name])
            x[name] = coded if len(categories[name]) <= MAX_NATIVE_CATEGORIES else np.where(
                coded.codes < 0, np.nan, coded.codes.astype(np.float64))
        elif pd.api.types.is_datetime64_any_dtype(series):
            x[name] = series.astype("int64").astype(np.float64).where(series.notna())
        else:
            x[name] = pd.to_numeric(series, errors="coerce").astype(np.float64)
    return x


def tstr(train_real: pd.DataFrame, synthetic: pd.DataFrame, held_out: pd.DataFrame, target: str,
         kinds: dict[str, str]) -> dict[str, Any]:
    """The fixed model trained on synthetic and on train_real, each scored on held_out.

    kinds maps every column (target included) to continuous | discrete; a discrete target makes it a
    classification scored by F1-macro, a continuous one a regression scored by R^2. Rows whose target is
    missing are left out of every side (nothing to learn or score on them); missing feature values are
    given to the model as they are. Returns {"metric": "f1_macro" | "r2", "train_synthetic": score,
    "train_real": score}; train_real - train_synthetic is what the synthetic rows lose for this task.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import f1_score, r2_score

    features = {name: kind for name, kind in kinds.items() if name != target}
    categories = {name: sorted(train_real[name].dropna().unique().tolist())
                  for name, kind in features.items() if kind == "discrete"}
    test = held_out[held_out[target].notna()]
    x_test = _features(test, features, categories)
    classify = kinds[target] == "discrete"

    def label(frame: pd.DataFrame) -> pd.Series:
        return frame[target].astype(str) if classify else pd.to_numeric(frame[target]).astype(np.float64)

    def score(train: pd.DataFrame) -> float:
        train = train[train[target].notna()]
        if len(train) == 0:
            return float("nan")
        model = (HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor)(
            random_state=0, categorical_features="from_dtype")
        model.fit(_features(train, features, categories), label(train))
        predicted = model.predict(x_test)
        if classify:
            return float(f1_score(label(test), predicted, average="macro"))
        return float(r2_score(label(test), predicted))

    return {"metric": "f1_macro" if classify else "r2", "train_synthetic": score(synthetic),
            "train_real": score(train_real)}
