"""TSTR and privacy of a synthetic table (gan_lab.evaluation.table_efficacy, table_privacy): closed forms and order."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from gan_lab.evaluation.table_efficacy import tstr
from gan_lab.evaluation.table_privacy import encode_rows, exact_copy_rate, privacy

KINDS = {"x": "continuous", "c": "discrete", "z": "continuous", "label": "discrete"}


def labelled(n: int, seed: int) -> pd.DataFrame:
    """x decides the label (its sign); c and z are noise; a few missing feature values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    frame = pd.DataFrame({"x": x, "c": rng.choice(["p", "q", "r"], n), "z": rng.normal(0, 1, n),
                          "label": np.where(x > 0, "pos", "neg")})
    frame.loc[rng.random(n) < 0.05, "z"] = np.nan
    return frame


def test_tstr_orders_identical_noise_collapsed() -> None:
    train, held_out = labelled(400, 0), labelled(200, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # F1 of a class never predicted: sklearn warns, and counts it 0
        same = tstr(train, train, held_out, "label", KINDS)
        noise = train.assign(label=train["label"].sample(frac=1.0, random_state=0).to_numpy())
        shuffled = tstr(train, noise, held_out, "label", KINDS)
        collapsed = tstr(train, pd.concat([train.iloc[[0]]] * 50, ignore_index=True), held_out, "label", KINDS)
    assert same["metric"] == "f1_macro"
    assert same["train_synthetic"] == same["train_real"] > 0.95
    assert 0.3 < shuffled["train_synthetic"] < 0.75
    # one row repeated: one class, predicted everywhere: F1 2p/(1+p) for it (p its share of held_out), 0 for the other
    share = float((held_out["label"] == train["label"].iloc[0]).mean())
    assert collapsed["train_synthetic"] == pytest.approx((2 * share / (1 + share)) / 2, abs=1e-12)
    assert collapsed["train_real"] == same["train_real"]


def test_tstr_regression_and_its_closed_form() -> None:
    train, held_out = labelled(400, 0), labelled(200, 1)
    kinds = {"x": "continuous", "c": "discrete", "z": "continuous"}
    train["z"], held_out["z"] = 2 * train["x"], 2 * held_out["x"]
    same = tstr(train, train, held_out, "z", kinds)
    assert same["metric"] == "r2" and same["train_synthetic"] > 0.95
    # trained on one row repeated, the model predicts that row's z everywhere: R^2 = -n (mean - c)^2 / SS_tot
    constant = float(train["z"].iloc[0])
    collapsed = tstr(train, pd.concat([train.iloc[[0]]] * 50, ignore_index=True), held_out, "z", kinds)
    z = held_out["z"].to_numpy()
    expected = 1 - ((z - constant) ** 2).sum() / ((z - z.mean()) ** 2).sum()
    assert collapsed["train_synthetic"] == pytest.approx(expected, abs=1e-9)


def test_tstr_takes_many_categories_and_unseen_ones() -> None:
    train, held_out = labelled(400, 0), labelled(200, 1)
    train["c"] = [f"id{i % 300}" for i in range(len(train))]  # more than HistGradientBoosting's 255
    held_out["c"] = "never-seen"
    found = tstr(train, train, held_out, "label", KINDS)
    assert found["train_synthetic"] > 0.95


def test_dcr_and_copies_by_hand() -> None:
    kinds = {"x": "continuous", "c": "discrete"}
    train = pd.DataFrame({"x": [0.0, 1.0, 2.0], "c": ["a", "b", None]})
    std = math.sqrt(2 / 3)  # population std of 0, 1, 2 around 1
    points = encode_rows(pd.DataFrame({"x": [0.5, np.nan], "c": ["zz", None]}), train, kinds)
    # x standardised, its missing indicator, then one-hot over a, b, missing, each scaled by 1/sqrt(2)
    half = 1 / math.sqrt(2)
    np.testing.assert_allclose(points, [[-0.5 / std, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, half]], atol=1e-12)
    synthetic = pd.DataFrame({"x": [1.0, 0.5, 1.0], "c": ["b", "a", "zz"]})
    held_out = pd.DataFrame({"x": [2.0, 3.0], "c": [None, None]})
    found = privacy(train, synthetic, held_out, kinds)
    # row 1 copies train row 1 (0); row 2: 0.5 std-units from row 0, same category; row 3: category unseen,
    # 1/sqrt(2) from every train row's one-hot, and 0 in x from row 1
    dcr = np.array([0.0, 0.5 / std, half])
    assert found["dcr_synthetic_median"] == pytest.approx(np.median(dcr), abs=1e-12)
    assert found["dcr_synthetic_p5"] == pytest.approx(np.percentile(dcr, 5), abs=1e-12)
    # held-out (2, missing) copies train row 2; (3, missing): 1 / std from it
    assert found["dcr_held_out_median"] == pytest.approx(0.5 / std, abs=1e-12)
    assert found["exact_copy_rate"] == pytest.approx(1 / 3, abs=1e-12)
    assert found["held_out_copy_rate"] == pytest.approx(0.5, abs=1e-12)


def test_privacy_flags_copies_not_fresh_rows() -> None:
    kinds = {name: kind for name, kind in KINDS.items()}
    train, held_out = labelled(300, 0), labelled(100, 1)
    copied = privacy(train, train.sample(100, random_state=0), held_out, kinds)
    fresh = privacy(train, labelled(100, 2), held_out, kinds)
    collapsed = privacy(train, pd.concat([train.iloc[[3]]] * 100, ignore_index=True), held_out, kinds)
    assert copied["exact_copy_rate"] == 1.0 and copied["dcr_synthetic_median"] == 0.0
    assert collapsed["exact_copy_rate"] == 1.0
    assert fresh["exact_copy_rate"] == 0.0 and copied["held_out_copy_rate"] == 0.0
    # a fresh sample of the population is as close to the training rows as the held-out real rows are
    assert fresh["dcr_synthetic_median"] == pytest.approx(fresh["dcr_held_out_median"], rel=0.3)
    assert exact_copy_rate(train.iloc[:0], train, kinds) != exact_copy_rate(train.iloc[:0], train, kinds)  # NaN


def test_the_figures_show_what_the_scores_say() -> None:
    import matplotlib.pyplot as plt

    from gan_lab.evaluation.table_plots import columns_figure, pair_trends_figure

    real = labelled(200, 0)
    real["when"] = pd.Timestamp("2021-01-01") + pd.to_timedelta(np.arange(200), unit="D")
    kinds = {**KINDS, "when": "continuous"}
    synthetic = real.assign(label="pos", x=real["x"] + 3.0)  # one class only; x shifted
    fig = columns_figure(real, synthetic, kinds)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [t.split("\n")[0] for t in titles] == list(kinds)
    assert titles[3].endswith(f"TV complement {float((real['label'] == 'pos').mean()):.3f}")
    label_axis = fig.axes[3]
    heights = sorted(round(bar.get_height(), 6) for bar in label_axis.patches)  # real: neg and pos; synthetic: 0 and 1
    share = float((real["label"] == "neg").mean())
    assert heights == sorted([0.0, 1.0, round(share, 6), round(1 - share, 6)])
    plt.close(fig)
    fig = pair_trends_figure(real, synthetic, kinds)
    gap = np.asarray(fig.axes[0].images[0].get_array())
    # x-label: real x decides the label, synthetic has one label: the contingency tables differ a lot
    names = list(kinds)
    assert gap[names.index("x"), names.index("label")] > 0.4
    assert gap[names.index("x"), names.index("when")] == pytest.approx(0.0, abs=1e-9)  # shift keeps r
    assert np.allclose(np.diag(gap), 0.0) and np.allclose(gap, gap.T)
    plt.close(fig)
