"""The rules a model builder follows (#30): one mechanism for the cures, each default once, one list of build-time keys."""

from __future__ import annotations

import ast
import inspect
from collections import defaultdict
from pathlib import Path

import hydra.utils
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch import nn

from conftest import CONF, TINY, build_model, user_error
from gan_lab.errors import GanLabError
from gan_lab.models import Critic, Generator, MinibatchStd, SequentialBody, plan_model
from gan_lab.runs.rebuild import BUILD_TIME, checked_builder

GAN_LAB = Path(__file__).resolve().parents[1] / "gan_lab"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def composed_nodes(group: str) -> dict[str, dict]:
    """Each option of a group as the train config composes it (its defaults list included), unresolved."""
    with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
        return {name: OmegaConf.to_container(compose(config_name="train", overrides=[f"{group}={name}"])[group],
                                             resolve=False) for name in options(group)}


# torch.optim's classes (conf/optimizer) take more than gan-lab sets; their other arguments are +optimizer.<key>
@pytest.mark.parametrize("group", ["model", "data", "loss"])
def test_every_builder_argument_is_a_yaml_key_or_passed_at_build_time(group: str) -> None:
    keys: dict[str, set[str]] = defaultdict(set)  # a builder's keys over every option naming it
    for node in composed_nodes(group).values():
        keys[node["_target_"]] |= set(node)
    assert keys
    for target, named in keys.items():
        params = inspect.signature(hydra.utils.get_object(target)).parameters
        assert [p for p in params if p not in named and p not in BUILD_TIME] == [], target


@pytest.mark.parametrize("name", options("model"))
def test_model_builders_hold_no_default_the_yaml_sets(name: str) -> None:
    node = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    params = inspect.signature(hydra.utils.get_object(node._target_)).parameters
    assert {k: params[k].default for k in node if k in params and params[k].default is not params[k].empty} == {}
    # every other argument is one gan-lab passes when it builds
    assert set(params) - set(node) <= BUILD_TIME


def test_no_module_reaches_for_a_private_name_of_models() -> None:
    private = []
    for file in GAN_LAB.rglob("*.py"):
        for stmt in ast.walk(ast.parse(file.read_text())):
            if isinstance(stmt, ast.ImportFrom) and stmt.module == "gan_lab.models":
                private += [f"{file.name}: {a.name}" for a in stmt.names if a.name.startswith("_")]
    assert private == []


def test_build_time_keys_are_refused_in_a_stored_model_but_a_data_sets_augment_is_its_own(tmp_path: Path) -> None:
    node = {**OmegaConf.to_container(OmegaConf.load(CONF / "model" / "mlp.yaml"), resolve=False), "z_dim": 2}
    assert checked_builder("model", node, tmp_path / "x.pt")[1]["hidden"] == 128
    with pytest.raises(GanLabError, match="model.augment is not an argument"):
        checked_builder("model", {**node, "augment": ["translation"]}, tmp_path / "x.pt")
    data = {"_target_": "gan_lab.data.ToyMixture", "name": "ring8", "sigma": 0.01, "augment": None}
    assert checked_builder("data", data, tmp_path / "x.pt")[1] == {"name": "ring8", "sigma": 0.01, "augment": None}


# ---------------------------------------------------------------- a builder of only the public mechanism


class TinyConvBody(nn.Module):
    """A critic body of two convs: what a newcomer's builder writes, sized from the plan alone."""

    def __init__(self, channels_in: int, std_extra: int, width: int, side: int):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, width, 3, 2, 1)
        self.last = nn.Conv2d(width + std_extra, width, 3, 2, 1)
        self.linear = nn.Linear(width * (side // 4) ** 2, 1)
        self.features = self.linear.in_features

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))

    def last_block(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.last(h)).flatten(1)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def tiny(shape, z_dim, width, conditional, pack, minibatch_std, n_classes=0, augment=()):
    plan = plan_model(shape, z_dim=z_dim, conditional=conditional, n_classes=n_classes, pack=pack,
                      minibatch_std=minibatch_std, augment=augment, width=width)
    net = nn.Sequential(nn.Linear(plan.g_in, width), nn.ReLU(), nn.Linear(width, shape[0] * shape[1] * shape[2]))
    return plan.wrap(net, TinyConvBody(plan.critic_channels, plan.std_extra, width, shape[1]))


def test_the_plan_sizes_and_wraps_any_body_with_every_cure() -> None:
    torch.manual_seed(0)
    G, critic = tiny((1, 8, 8), z_dim=3, width=4, conditional=True, pack=1, minibatch_std=2, n_classes=5,
                     augment=["translation"])
    assert isinstance(G, Generator) and isinstance(critic, Critic)
    assert G.net[0].in_features == 6  # z and the label's embedding beside it
    assert critic.net.last.in_channels == 5 and isinstance(critic.minibatch_std, MinibatchStd)
    assert critic.embed.num_embeddings == 5 and critic.augment is not None
    x = G(torch.randn(4, 3), torch.tensor([0, 1, 2, 4]))
    assert x.shape == (4, 1, 8, 8) and critic(x, torch.tensor([0, 1, 2, 4])).shape == (4,)

    _, packed = tiny((3, 8, 8), z_dim=3, width=4, conditional=False, pack=2, minibatch_std=0)
    assert packed.net.conv.in_channels == 6 and packed.net.last.in_channels == 4 and packed.minibatch_std is None
    assert packed(torch.randn(8, 3, 8, 8)).shape == (4,)


@pytest.mark.parametrize("kwargs, message", [
    ({"width": 0}, "model.width=0 is out of range"),
    ({"pack": 0}, "model.pack=0 is out of range"),
    ({"minibatch_std": 1}, "model.minibatch_std=1 is out of range"),
    ({"conditional": True}, "model.conditional=true needs labelled data"),
    ({"conditional": True, "n_classes": 3, "pack": 2}, "model.pack=2 with model.conditional=true is refused"),
])
def test_the_plan_refuses_what_no_builder_should_check_itself(kwargs: dict, message: str) -> None:
    with pytest.raises(GanLabError, match=message):
        tiny((1, 8, 8), **{"z_dim": 2, "width": 4, "conditional": False, "pack": 1, "minibatch_std": 0, **kwargs})


def test_the_plan_keeps_each_builders_parameter_names_and_counts() -> None:
    # the state_dict keys the old-checkpoint tests pin, through the plan: G's net and embed, the critic's net
    G, critic = build_model("dcgan", (1, 28, 28), z_dim=8, width=4, conditional=True, n_classes=10, minibatch_std=2)
    assert [k for k in G.state_dict() if not k.startswith("net.")] == ["embed.weight"]
    assert isinstance(critic.net, SequentialBody) and critic.net[5].in_channels == 9  # 2 x width + std's channel
    assert sum(p.numel() for p in critic.parameters()) == 4 * 1 * 16 + 4 + 8 * 4 * 16 + 8 + 8 * 2 + 16 * 9 * 9 \
        + 16 + 16 * 2 + 16 * 7 * 7 + 1 + 10 * 16 * 7 * 7


def test_a_bad_size_is_one_paragraph_from_the_cli(capsys: pytest.CaptureFixture) -> None:
    assert "model.hidden=0 is out of range: it must be a whole number >= 1" in user_error(
        capsys, "train", "model.hidden=0", *TINY)



@pytest.mark.parametrize("shape", [(2,), (5,), (1, 28, 28), (3, 32, 32), (3, 36, 36), (3, 64, 64)],
                         ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("name", options("model"))
def test_every_model_builds_for_a_shape_or_refuses_it_in_words(name: str, shape: tuple[int, ...]) -> None:
    # a shape a model cannot take is the user's choice of data: one paragraph, never an IndexError from inside
    from test_capture import TINY_SIZES

    try:
        G, critic = build_model(name, shape, z_dim=4, **TINY_SIZES.get(name, {}))
    except GanLabError as err:
        assert f"model={name} needs" in str(err)  # the option, and what it needs of the data
        return
    assert critic(G(torch.randn(4, 4))).shape == (4,)
