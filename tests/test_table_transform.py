"""gan_lab.table_transform and table_condition: CTGAN's reversible transform and training-by-sampling."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gan_lab import table_transform
from gan_lab.table import read_table
from gan_lab.errors import GanLabError
from gan_lab.table_columns import ColumnSpec
from gan_lab.table_condition import ConditionSampler, condition_cross_entropy
from gan_lab.table_transform import TableTransform, fit_modes
from test_table import mixed_frame


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A mixed 300-row table with missing values, read from CSV, and its fitted transform."""
    path = tmp_path_factory.mktemp("table") / "t.csv"
    mixed_frame(n=300).to_csv(path, index=False)
    table = read_table(path)
    return table, TableTransform.fit(table, seed=0)


def test_mixture_finds_the_modes_and_drops_the_rest() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-5, 0.5, 300), rng.normal(5, 0.5, 700)]) * 1000  # any scale
    means, stds, weights = fit_modes(x, seed=0)
    order = np.argsort(means)
    assert len(means) == 2  # 10 components offered, the Dirichlet prior leaves the others below 0.005
    np.testing.assert_allclose(np.array(means)[order], [-5000, 5000], atol=150)
    # sklearn's default covariance prior (the data's own variance, one pseudo-observation) widens the
    # smaller mode more: 0.70 for its 0.5 here, 0.52 for the larger one
    np.testing.assert_allclose(np.array(stds)[order], [650, 500], rtol=0.15)
    np.testing.assert_allclose(np.array(weights)[order], [0.3, 0.7], atol=0.02)


def test_the_mixture_is_fitted_on_at_most_max_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.mixture import BayesianGaussianMixture

    seen, fit = [], BayesianGaussianMixture.fit
    monkeypatch.setattr(BayesianGaussianMixture, "fit", lambda self, z: seen.append(len(z)) or fit(self, z))
    x = np.random.default_rng(0).normal(size=500)
    fit_modes(x, seed=0, max_rows=200)
    fit_modes(x, seed=0, max_rows=1000)
    assert seen == [200, 500]


def test_layout_of_spans(fitted: tuple) -> None:
    table, transform = fitted
    layout = [(s.column, s.kind, s.role) for s in transform.spans]
    assert layout == [("age", "tanh", "alpha"), ("age", "softmax", "mode"), ("rating", "softmax", "category"),
                      ("income", "tanh", "alpha"), ("income", "softmax", "mode"), ("income", "softmax", "missing"),
                      ("joined", "tanh", "alpha"), ("joined", "softmax", "mode"), ("member", "softmax", "category"),
                      ("city", "softmax", "category")]
    widths = {(s.column, s.role): s.width for s in transform.spans}
    assert widths[("rating", "category")] == 5 and widths[("income", "missing")] == 2
    assert widths[("member", "category")] == 2 and widths[("city", "category")] == 4  # 3 cities and missing
    assert all(1 <= widths[(c, "mode")] <= 10 for c in ("age", "income", "joined"))
    starts = [s.start for s in transform.spans]
    assert starts == list(np.cumsum([0] + [s.width for s in transform.spans])[:-1])
    assert transform.width == sum(s.width for s in transform.spans)
    assert [s.column for s in transform.spans if s.conditional] == ["rating", "income", "member", "city"]


def test_encoding_is_alpha_of_the_sampled_mode(fitted: tuple) -> None:
    table, transform = fitted
    rows = transform.encode(table.frame, seed=1)
    income = transform.columns[2]
    spans = {s.role: s for s in transform.spans if s.column == "income"}
    alpha, modes, missing = (rows[:, s.start:s.start + s.width] for s in spans.values())
    alpha = alpha[:, 0]
    assert list(spans) == ["alpha", "mode", "missing"] and spans["mode"].width == len(income.means)
    assert np.all(modes.sum(axis=1) == 1) and np.all(missing.sum(axis=1) == 1)
    x = table.frame.income.to_numpy()
    k = modes.argmax(axis=1)
    expected = np.clip((x - np.array(income.means)[k]) / (4 * np.array(income.stds)[k]), -1, 1)
    present = ~np.isnan(x)
    np.testing.assert_allclose(alpha[present], expected[present], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(missing[:, 1], np.isnan(x).astype(np.float32))


def test_modes_are_sampled_from_the_posterior_not_taken_at_its_peak() -> None:
    # a value halfway between two equal modes has posterior 1/2 each: about half the rows get each
    spec = ColumnSpec("x", "continuous", "float", minimum=-3.0, maximum=3.0)
    column = table_transform._Continuous(spec, [-1.0, 1.0], [1.0, 1.0], [0.5, 0.5], 0.0, False)
    block = column.encode(pd.Series(np.zeros(4000)), np.random.default_rng(0))
    share = block[:, 1].mean()
    assert 0.47 < share < 0.53
    np.testing.assert_allclose(block[:, 0], np.where(block[:, 1] == 1, 0.25, -0.25))


def test_round_trip_gives_back_the_table(fitted: tuple) -> None:
    table, transform = fitted
    back = transform.inverse(transform.encode(table.frame))
    assert list(back.columns) == list(table.frame.columns)
    for name in ("rating", "member", "city", "joined"):  # discrete exactly; dates in their format
        pd.testing.assert_series_equal(back[name], table.frame[name], check_dtype=name != "rating")
    assert back.rating.dtype == "int64" and back.member.dtype == "bool"
    assert back.joined.dtype == table.frame.joined.dtype
    for name in ("age", "income"):  # continuous: exact unless the sampled mode was > 4 sigma away (clipped)
        original, restored = table.frame[name], back[name]
        assert restored.isna().equals(original.isna())
        exact = (restored == original)[original.notna()].mean()
        assert exact > 0.97, (name, exact)
        assert restored.min() >= original.min() and restored.max() <= original.max()
    assert back.age.dtype == "int64" and back.income.dtype == "float64"


def test_missing_rates_are_kept_through_the_layout(fitted: tuple) -> None:
    table, transform = fitted
    rows = transform.encode(table.frame)
    # a generator that got every block right but flipped the missing indicators back to present
    rows[:, [s.start for s in transform.spans if s.role == "missing"][0] + 1] = 0
    back = transform.inverse(rows)
    assert back.income.isna().sum() == 0 and back.city.isna().mean() == pytest.approx(table.frame.city.isna().mean())
    assert table.frame.income.isna().mean() == pytest.approx(43 / 300)


def test_inverse_reads_a_generators_soft_outputs(fitted: tuple) -> None:
    table, transform = fitted
    rows = transform.encode(table.frame)
    rng = np.random.default_rng(0)
    soft = rows.copy()
    for span in transform.spans:  # softmax blocks: probabilities, the true category still the largest
        if span.kind == "softmax":
            block = soft[:, span.start:span.start + span.width]
            soft[:, span.start:span.start + span.width] = 0.6 * block + 0.4 * rng.dirichlet(np.ones(span.width),
                                                                                             len(block)) * 0.9
    soft[:5, 0] = 7.0  # a scalar out of tanh's range reads as 1
    back = transform.inverse(torch.from_numpy(soft))
    exact = transform.inverse(rows)
    pd.testing.assert_frame_equal(back.iloc[5:], exact.iloc[5:])
    assert back.age.iloc[:5].between(table.frame.age.min(), table.frame.age.max()).all()


def test_unknown_category_encodes_as_zeros(fitted: tuple) -> None:
    table, transform = fitted
    frame = table.frame.head(3).copy()
    frame["city"] = ["Oslo", "Quito", None]
    city = transform.spans[-1]
    block = transform.encode(frame)[:, city.start:city.start + city.width]
    np.testing.assert_array_equal(block, [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])  # Lima, Oslo, Pune, missing


def test_state_is_plain_values_and_rebuilds_exactly(fitted: tuple) -> None:
    table, transform = fitted
    buffer = io.BytesIO()
    torch.save({"table": transform.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["table"]
    assert state == transform.state_dict()
    rebuilt = TableTransform.from_state(state)
    assert rebuilt.spans == transform.spans and rebuilt.state_dict() == transform.state_dict()
    rows = transform.encode(table.frame, seed=5)
    np.testing.assert_array_equal(rebuilt.encode(table.frame, seed=5), rows)
    pd.testing.assert_frame_equal(rebuilt.inverse(rows), transform.inverse(rows))


def test_condition_sampler_draws_log_frequency_and_matching_rows(fitted: tuple) -> None:
    table, transform = fitted
    rows = torch.from_numpy(transform.encode(table.frame))
    sampler = ConditionSampler(rows, transform.spans)
    assert (sampler.n_blocks, sampler.width) == (4, 5 + 2 + 2 + 4)
    n = 40_000
    cond, mask, real = sampler.sample(n, torch.Generator().manual_seed(0))
    assert cond.shape == (n, 13) and mask.shape == (n, 4) and real.dtype == torch.long
    torch.testing.assert_close(mask.mean(0), torch.full((4,), 0.25), atol=0.01, rtol=0)
    city = table.frame.city
    counts = torch.tensor([(city == c).sum() for c in ("Lima", "Oslo", "Pune")] + [city.isna().sum()]).float()
    picked = cond[mask[:, 3] == 1][:, 9:13].mean(0)
    torch.testing.assert_close(picked, torch.log1p(counts) / torch.log1p(counts).sum(), atol=0.015, rtol=0)
    blocks = torch.cat([rows[:, s.start:s.start + s.width] for s in sampler.blocks], dim=1)
    assert torch.equal((blocks[real] * cond).sum(1), torch.ones(n))  # each real row has the condition's category
    plain_cond, plain_mask, _ = sampler.sample(n, torch.Generator().manual_seed(0), log_frequency=False)
    torch.testing.assert_close(plain_cond[plain_mask[:, 3] == 1][:, 9:13].mean(0), counts / counts.sum(),
                               atol=0.015, rtol=0)
    again = sampler.sample(n, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(again, (cond, mask, real)))


def test_condition_sampler_without_discrete_columns(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(50, 2))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1]}).to_csv(tmp_path / "t.csv", index=False)
    table = read_table(tmp_path / "t.csv")
    transform = TableTransform.fit(table)
    sampler = ConditionSampler(torch.from_numpy(transform.encode(table.frame)), transform.spans)
    cond, mask, real = sampler.sample(8, torch.Generator().manual_seed(0))
    assert cond.shape == (8, 0) and mask.shape == (8, 0) and real.shape == (8,) and int(real.max()) < 50


def test_parquet_dtypes_come_back_as_they_were(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    n, rng = 120, np.random.default_rng(1)
    frame = pd.DataFrame({
        "t": pd.date_range("2021-01-01 10:00", periods=n, freq="37min", tz="Europe/Oslo"),
        "c": pd.Categorical(rng.choice(["lo", "hi"], n), categories=["lo", "mid", "hi"]),  # mid unused
        "b": pd.array(rng.choice([True, False, None], n), dtype="boolean"),
        "i": pd.array(rng.integers(0, 1000, n), dtype="Int64")})
    frame.loc[3, "i"] = pd.NA
    frame.to_parquet(tmp_path / "t.parquet")
    table = read_table(tmp_path / "t.parquet")
    transform = TableTransform.fit(table)
    back = transform.inverse(transform.encode(table.frame))
    pd.testing.assert_series_equal(back.c, table.frame.c)  # categories ['lo', 'mid', 'hi'], in that order
    pd.testing.assert_series_equal(back.b, table.frame.b)
    assert back.t.dtype == table.frame.t.dtype and back.i.dtype == "Int64"
    assert back.i.isna().tolist()[:5] == [False, False, False, True, False]
    assert (back.t == table.frame.t).mean() > 0.97 and (back.i == table.frame.i).mean() > 0.97


def test_a_fixed_condition_by_column_and_value(fitted: tuple) -> None:
    table, transform = fitted
    sampler = ConditionSampler(torch.from_numpy(transform.encode(table.frame)), transform.spans)
    assert transform.category("city", "Pune") == (3, 2) and transform.category("rating", "4") == (0, 3)
    assert transform.category("member", "True") == (2, 1)
    cond, mask = sampler.condition(*transform.category("city", "Pune"), batch_size=3)
    assert cond.tolist() == [[0.0] * 11 + [1.0, 0.0]] * 3 and mask.tolist() == [[0.0, 0.0, 0.0, 1.0]] * 3
    with pytest.raises(GanLabError, match="condition.city=Rome is not a value of column 'city', whose values "
                                          "are: Lima, Oslo, Pune"):
        transform.category("city", "Rome")
    with pytest.raises(GanLabError, match=r"'age' is not one \(the discrete columns: rating, member, city\)"):
        transform.category("age", "30")


def test_condition_cross_entropy_is_the_asked_blocks_negative_log_softmax(fitted: tuple) -> None:
    _, transform = fitted
    blocks = [s for s in transform.spans if s.conditional]
    logits = torch.randn(2, transform.width, generator=torch.Generator().manual_seed(0))
    # row 0 asked for rating's 2nd category (block 0), row 1 for city's 4th (block 3: missing)
    cond, mask = torch.zeros(2, 13), torch.zeros(2, 4)
    cond[0, 1], mask[0, 0], cond[1, 12], mask[1, 3] = 1, 1, 1, 1
    rating, city = blocks[0], blocks[3]
    expected = (-torch.log_softmax(logits[0, rating.start:rating.start + 5], 0)[1]
                - torch.log_softmax(logits[1, city.start:city.start + 4], 0)[3]) / 2
    torch.testing.assert_close(condition_cross_entropy(logits, blocks, cond, mask), expected)
