"""Each schema is written once: the loss knobs in one node, data defaults per kind, defaults in YAML only."""

from __future__ import annotations

import copy
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import user_error
from gan_lab.losses import Loss
from gan_lab.runs.safety import _flatten, config_defaults, config_differences
from gan_lab.training.settings import CriticSchedule, TrainSettings
from test_config import compose_train, options

CONF = Path(__file__).resolve().parents[1] / "conf"


def repeated(own_file: Path, base_file: Path) -> list[str]:
    """The keys a YAML states with the very value its base already gives (raw, interpolations unresolved)."""
    own, base = _flatten(OmegaConf.to_container(OmegaConf.load(own_file))), _flatten(
        OmegaConf.to_container(OmegaConf.load(base_file)))
    return sorted(k for k, v in own.items() if k != "defaults" and k in base and base[k] == v)


@pytest.mark.parametrize("loss", options("loss"))
def test_a_loss_yaml_states_only_what_differs_from_the_shared_knobs(loss: str) -> None:
    assert repeated(CONF / "loss" / f"{loss}.yaml", CONF / "_loss_knobs.yaml") == []
    knobs = OmegaConf.load(CONF / "_loss_knobs.yaml")
    assert set(knobs) <= set(compose_train(f"loss={loss}").loss)  # every loss still has every knob
    assert set(knobs) == {*(f.name for f in fields(CriticSchedule)), *(f.name for f in fields(Loss))}


@pytest.mark.parametrize("data", options("data"))
def test_a_data_yaml_states_only_what_differs_from_its_kind(data: str) -> None:
    own = CONF / "data" / f"{data}.yaml"
    # its one base node (an entry such as `override /model@...: resnet` is a choice for another group)
    bases = [CONF / f"{entry.split('@')[0].strip('/')}.yaml" for entry in OmegaConf.load(own).defaults
             if isinstance(entry, str)]
    if data == "table":  # the one kind of its own: a table shares nothing with points or images
        assert bases == []
    else:
        [base] = bases
        assert base.name in ("_data_images.yaml", "_data_points.yaml", "_images.yaml")
        assert repeated(own, base) == []
    recommended = compose_train(f"data={data}").data.recommended
    assert {"steps", "batch_size", "z_dim", "lambda_gp", "gamma"} <= set(recommended)
    # a data set's own recommendations (data=table's epochs, CTGAN's WGAN-GP schedule) are each read by a
    # YAML of conf/ (an interpolation of data.recommended.<key>): none is a dead key
    read = " ".join(f.read_text() for f in CONF.rglob("*.yaml"))
    extra = set(recommended) - {"steps", "batch_size", "z_dim", "lambda_gp", "gamma"}
    assert [key for key in sorted(extra) if f"data.recommended.{key}" not in read] == []


def test_the_base_files_are_no_options(capsys: pytest.CaptureFixture) -> None:
    assert not any(name.startswith("_") for group in ("loss", "data") for name in options(group))
    assert "no option loss=_loss_knobs" in user_error(capsys, "train", "loss=_loss_knobs")


def test_settings_have_no_defaults_of_their_own() -> None:
    # the defaults live in conf/train.yaml and conf/_loss_knobs.yaml only
    for settings in (TrainSettings, CriticSchedule):
        assert [f.name for f in fields(settings) if f.default is not MISSING or f.default_factory is not MISSING] == []
    train = compose_train().train
    assert {f.name for f in fields(TrainSettings)} == set(train)


def test_a_loss_holds_only_its_math_and_penalties() -> None:
    assert {f.name for f in fields(Loss)} == {"lambda_gp", "lambda_r1", "lambda_r2", "lambda_dragan"}


def test_a_checkpoint_missing_any_key_with_a_default_resumes() -> None:
    # what an older checkpoint lacks it trained with at the key's default: derived from conf/, no hand list
    current = OmegaConf.to_container(compose_train(), resolve=True)
    defaults = config_defaults()
    assert defaults == _flatten(current)
    for key in defaults:
        saved = copy.deepcopy(current)
        *path, last = key.split(".")
        node = saved
        for part in path:
            node = node[part]
        del node[last]
        assert config_differences(saved, current) == [], key
    # a real change is still caught, a key the defaults lack too
    assert config_differences({"train": {}}, {"train": {"precision": "bf16"}}) == ["train.precision: fp32 -> bf16"]
    assert config_differences({"loss": {}}, {"loss": {"unroll": 3}}) == ["loss.unroll: 0 -> 3"]
    assert config_differences({"loss": {}}, {"loss": {"gamma": 3}}) == ["loss.gamma: <absent> -> 3"]
