"""data=table and model=table from the command line: a CSV trains, `gan-lab sample` writes it back, every loss and cure.

The CSV is written here (gan_lab's test_table.mixed_frame: numbers, few and many integers, a date,
booleans, text, missing values in a number and a text column), small enough for the quick tier.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import run_cli, straight_and_resumed, user_error
from gan_lab.app.options import conf_options
from gan_lab.runs.checkpoint import load_checkpoint
from test_table import mixed_frame

# tiny networks, a batch that is a multiple of the default pack (5), one thread, no metrics
TINY_TABLE = ["data=table", "model.hidden=16", "model.z_dim=8", "train.batch_size=20", "train.log_every=2",
              "train.sample_every=100", "train.checkpoint_every=100", "metrics=false", "device=cpu", "threads=1"]


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("table") / "people.csv"
    mixed_frame(n=200).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run long enough to learn the categories' and missing values' rates and the condition (~7 CPU s).

    One critic step per generator step (CTGAN's) and a learning rate 10x the default, so that 200 steps
    move G's weights as far as CTGAN's thousands do."""
    run = tmp_path_factory.mktemp("run") / "trained"
    run_cli("train", "data=table", f"data.path={csv}", "model.hidden=64", "train.steps=200", "train.batch_size=50",
            "loss.n_critic=1", "optimizer.lr=1e-3", "metrics=false", "device=cpu", "threads=1", "train.log_every=100",
            f"hydra.run.dir={run}")
    return run


def test_a_csv_trains_with_the_defaults_and_the_checkpoint_holds_the_transform(csv: Path, tmp_path: Path) -> None:
    run_cli("train", "data=table", f"data.path={csv}", "train.steps=2", "train.batch_size=20", "metrics=false",
            "device=cpu", "threads=1", f"hydra.run.dir={tmp_path / 'run'}")
    state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 2 and state["config"]["model"]["pack"] == 5  # a packed critic by default (CTGAN: 10)
    assert state["config"]["train"]["ema_kimg"] == 50 and "G_ema" in state  # and G's moving average
    assert state["config"]["model"]["_target_"] == "gan_lab.tables_model.table"  # data=table brings model=table
    # the held-out split as plain values: 20% of 200 rows, disjoint from what the transform saw
    held = state["data_state"]["held_out_rows"]
    assert len(held) == 40 and len(set(held)) == 40 and all(type(i) is int for i in held)
    kinds = [c["type"] for c in state["data_state"]["transform"]["columns"]]
    assert kinds == ["continuous", "discrete", "continuous", "continuous", "discrete", "discrete"]
    # layout: the encoded width is the data shape; the conditional blocks (rating, member, city, income's missing)
    spans = state["layout"]["spans"]
    assert sum(w for _, w, _ in spans) == state["data_shape"][0]
    assert sum(w for _, w, c in spans if c) == len(state["layout"]["frequency"]) == 5 + 2 + 4 + 2
    assert sum(state["layout"]["frequency"]) == 4 * 160  # each conditional block counts every training row once


def test_sample_writes_the_inputs_columns_types_categories_and_missing_rates(csv: Path, trained: Path,
                                                                              tmp_path: Path) -> None:
    out = tmp_path / "synthetic.csv"
    csv.rename(csv.with_suffix(".moved"))  # sampling needs no CSV: the transform is in the checkpoint
    try:
        run_cli("sample", f"checkpoint={trained}", "n=2000", f"out={out}")
    finally:
        csv.with_suffix(".moved").rename(csv)
    real, fake = pd.read_csv(csv), pd.read_csv(out)
    assert list(fake.columns) == list(real.columns) and len(fake) == 2000
    assert fake.dtypes.to_dict() == real.dtypes.to_dict()
    assert set(fake["city"].dropna()) <= set(real["city"].dropna()) and set(fake["rating"]) <= set(real["rating"])
    assert fake["age"].between(real["age"].min(), real["age"].max()).all()
    pd.to_datetime(fake["joined"], format="%d/%m/%Y")  # dates come back in the input's format
    for column in ("income", "city"):  # 1/7 and 1/9 of the rows are missing
        assert fake[column].isna().mean() == pytest.approx(real[column].isna().mean(), abs=0.07), column
    shares = fake["city"].value_counts(normalize=True)
    expected = real["city"].value_counts(normalize=True)
    assert (shares - expected).abs().max() < 0.1, (shares, expected)


def test_parquet_out(trained: Path, tmp_path: Path) -> None:
    run_cli("sample", f"checkpoint={trained}", "n=50", f"out={tmp_path / 's.parquet'}")
    assert len(pd.read_parquet(tmp_path / "s.parquet")) == 50


def test_a_condition_fixes_a_discrete_columns_value(trained: Path, tmp_path: Path) -> None:
    run_cli("sample", f"checkpoint={trained}", "n=1000", f"out={tmp_path / 'any.csv'}")
    free = pd.read_csv(tmp_path / "any.csv")["city"]
    for city in ("Oslo", "Pune"):
        run_cli("sample", f"checkpoint={trained}", "n=1000", f"out={tmp_path / city}.csv", f"condition.city={city}")
        share = (pd.read_csv(tmp_path / f"{city}.csv")["city"] == city).mean()
        # unconditioned about a third (the table's); asked for, far more (200 steps learn it part of the way)
        assert share > (free == city).mean() + 0.15, (city, share, (free == city).mean())


def test_a_condition_on_an_unknown_column_or_value_is_one_paragraph(trained: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x.csv"
    assert "is not a value of column 'city', whose values are: Lima, Oslo, Pune" in user_error(
        capsys, "sample", f"checkpoint={trained}", f"out={out}", "condition.city=Rome")
    assert "'age' is not one (the discrete columns: rating, member, city)" in user_error(
        capsys, "sample", f"checkpoint={trained}", f"out={out}", "condition.age=3")
    assert not out.exists()


@pytest.mark.slow  # a CLI run per loss (test_options trains the table once in the quick tier)
@pytest.mark.parametrize("loss", conf_options("loss"))
def test_every_loss_trains_on_a_table(loss: str, csv: Path, tmp_path: Path) -> None:
    run_cli("train", *TINY_TABLE, f"data.path={csv}", f"loss={loss}", "train.steps=2", f"hydra.run.dir={tmp_path}")
    state = load_checkpoint(tmp_path)
    assert state["step"] == 2 and all(torch.isfinite(t).all() for t in state["G"].values() if t.is_floating_point())


@pytest.mark.slow  # a CLI run per cure
@pytest.mark.parametrize("cure", [["train.ema_kimg=1"], ["optimizer=adam_ttur"], ["train.topk=0.5"],
                                  ["model.minibatch_std=2"], ["model.pack=1"], ["loss.unroll=1"]])
def test_cures_run_on_a_table(cure: list[str], csv: Path, tmp_path: Path) -> None:
    run_cli("train", *TINY_TABLE, f"data.path={csv}", *cure, "train.steps=2", f"hydra.run.dir={tmp_path}")
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "completed"


def test_the_condition_loss_is_logged_and_trains_g(csv: Path, tmp_path: Path) -> None:
    run_cli("train", *TINY_TABLE, f"data.path={csv}", "train.steps=2", f"hydra.run.dir={tmp_path}")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path)).Reload()
    values = [e.value for e in events.Scalars("loss/generator_auxiliary")]
    # a cross-entropy over 5, 2, 4 and 2 categories from an untrained G: about log(3)
    assert len(values) == 1 and 0.3 < values[0] < 3.0


@pytest.mark.slow  # three runs
def test_resume_continues_bitwise(csv: Path, tmp_path: Path) -> None:
    straight, resumed = straight_and_resumed(tmp_path, [*TINY_TABLE, f"data.path={csv}"], steps=4)
    for entry in ("G", "critic"):
        for key, value in straight[entry].items():
            assert torch.equal(value, resumed[entry][key]), (entry, key)


def test_bad_input_is_one_paragraph_and_nothing_is_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3,4,5\n")
    run = tmp_path / "run"
    message = user_error(capsys, "train", *TINY_TABLE, f"data.path={ragged}", f"hydra.run.dir={run}")
    assert "Line 3 of" in message and str(ragged) in message
    message = user_error(capsys, "train", *TINY_TABLE, f"data.path={tmp_path / 'none.csv'}", f"hydra.run.dir={run}")
    assert "does not exist" in message
    message = user_error(capsys, "train", "data=table", f"hydra.run.dir={run}")
    assert "data.path=" in message
    assert not run.exists()


def test_a_batch_that_is_not_a_multiple_of_the_pack_is_refused(csv: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    message = user_error(capsys, "train", *TINY_TABLE, f"data.path={csv}", "train.batch_size=23",
                         f"hydra.run.dir={tmp_path / 'run'}")
    assert "model.pack=5" in message and "train.batch_size=20" in message


def test_model_table_needs_a_tables_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    message = user_error(capsys, "train", "model=table", "data=ring8", "device=cpu", f"hydra.run.dir={tmp_path}")
    assert "model=table needs a table's layout" in message and "only data=table gives" in message


@pytest.mark.slow  # a 200-step run, its evaluations and gan-lab eval
def test_metrics_while_training_and_eval_score_the_rows_as_the_field_does(csv: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_cli("train", *[o for o in TINY_TABLE if o != "metrics=false"], f"data.path={csv}", "data.target=city",
            "train.steps=2", f"hydra.run.dir={run}")
    final = json.loads((run / "status.json").read_text())["metrics"]
    # categories are the table's modes: rating's 5, member's 2 and city's 3 (missing is not one)
    assert final["metrics/n_modes"] == 10 and 1 <= final["metrics/modes_covered"] <= 10
    assert 0.2 < final["metrics/quality"] < 1
    run_cli("eval", f"checkpoint={run}")
    record = json.loads((run / "eval.json").read_text())
    # the same rows as training's last evaluation (z, conditions and Gumbel noise from the seed): the same score
    assert record["metrics/quality"] == pytest.approx(final["metrics/quality"], abs=1e-12)
    assert {"utility/tstr_f1_macro", "utility/trtr_f1_macro", "memorisation/dcr_synthetic_median",
            "memorisation/exact_copy_rate"} <= set(record)
    assert (run / "table_columns.png").stat().st_size > 0 and (run / "table_pair_trends.png").stat().st_size > 0


def test_a_table_smaller_than_the_default_batch_trains_with_the_defaults(tmp_path: Path) -> None:
    # training-by-sampling draws rows with replacement, as CTGAN's batch of 500 does on any table: 60 rows
    # (48 after the held-out split) once met "train.batch_size=500 is larger than the data set"
    path = tmp_path / "small.csv"
    mixed_frame(n=60).to_csv(path, index=False)
    run_cli("train", "data=table", f"data.path={path}", "train.steps=2", "metrics=false", "threads=1",
            f"hydra.run.dir={tmp_path / 'run'}")
    state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 2 and json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".tsv", ".parquet"])
def test_a_tables_rows_are_counted_without_parsing_it(tmp_path: Path, suffix: str) -> None:
    from gan_lab.table import count_rows, read_frame

    frame = mixed_frame(n=37)
    path = tmp_path / f"people{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    assert count_rows(path) == 37 == len(read_frame(path))
    if suffix == ".csv":  # a last row without its newline still counts
        path.write_bytes(path.read_bytes().rstrip(b"\n"))
        assert count_rows(path) == 37


def test_the_default_steps_are_epochs_over_the_tables_training_rows(tmp_path: Path) -> None:
    # CTGAN counts training in epochs of max(1, rows // batch) steps: 2,300 rows keep 1,840 for training
    # (held_out 0.2), 3 batches of 500 an epoch; a table smaller than a batch gets one step an epoch
    for rows, epochs, steps in ((2300, 2, 6), (60, 3, 3)):
        path = tmp_path / f"rows{rows}.csv"
        mixed_frame(n=rows).to_csv(path, index=False)
        run = tmp_path / f"run{rows}"
        run_cli("train", "data=table", f"data.path={path}", f"data.recommended.epochs={epochs}", "model.hidden=16",
                "metrics=false", "device=cpu", "threads=1", f"hydra.run.dir={run}")
        state = load_checkpoint(run)
        assert state["step"] == state["config"]["train"]["steps"] == steps
        # data=table brings CTGAN's WGAN-GP schedule and Adam: one critic step, 2e-4, betas (0.5, 0.9)
        assert state["config"]["loss"]["n_critic"] == 1 and state["config"]["optimizer"]["lr"] == 2e-4
        assert state["config"]["optimizer"]["betas"] == [0.5, 0.9]
