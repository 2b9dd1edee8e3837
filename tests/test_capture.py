"""The CUDA-graph contract (gan_lab.capture), declared by every data set and model, checked on the CPU.

Walked from conf/: each data option's sample(), each model option's G and critic (every cure on),
each loss's d_loss, g_loss and penalties run under a dispatch mode that records the aten ops they
call. A capturable part calls no host-syncing op, opens no file, and draws only from torch's
generator (re-seeding torch reproduces it exactly; Python's and NumPy's generators are untouched).
"""

from __future__ import annotations

import builtins
import copy
import io
import os
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import CONF, TABLE_LAYOUT, build_model, write_table_csv
from gan_lab import capture
from gan_lab.app.cli import build_loss
from gan_lab.data import build_data
from gan_lab.training import graphs
from test_folder import two_classes

# aten ops that read a device value back to the host, or whose output size depends on values
HOST_SYNC = {"_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "nonzero_static", "masked_select",
             "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive", "argwhere", "index(mask)",
             "lift_fresh"}  # lift_fresh: torch.tensor(host data) inside the call, a copy from the host


class Ops(TorchDispatchMode):
    """Records the name of every aten op dispatched inside it; boolean-mask indexing as `index(mask)`."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("index", "index_put", "index_put_") and any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1] if i is not None):
            name = "index(mask)"  # x[mask]: its size is the mask's count, read on the host (a nonzero inside)
        self.names.append(name)
        return func(*args, **(kwargs or {}))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def composed(*overrides: str) -> dict[str, Any]:
    with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="train", overrides=list(overrides)), resolve=True)


def tensors(out: Any) -> list[torch.Tensor]:
    items = out if isinstance(out, (tuple, list)) else (out,)
    return [t.detach().clone() for t in items if isinstance(t, torch.Tensor)]


def run_watched(call: Callable[[], Any], monkeypatch: pytest.MonkeyPatch, seed: int) -> tuple[list[str], list[Any]]:
    """(what `call` did that a captured graph cannot hold, its output tensors), run with torch seeded."""
    opened: list[Any] = []
    python, numpy = random.getstate(), np.random.get_state()
    with monkeypatch.context() as patch:
        for module, name in ((builtins, "open"), (io, "open"), (os, "open")):
            real = getattr(module, name)
            patch.setattr(module, name, lambda *a, _real=real, **k: (opened.append(a[0]), _real(*a, **k))[1])
        torch.manual_seed(seed)
        with Ops() as ops:
            out = call()
    found = sorted(HOST_SYNC & set(ops.names)) + [f"opened {file}" for file in opened]
    if random.getstate() != python:
        found.append("Python's generator")
    state = np.random.get_state()  # (name, key array, position, has_gauss, cached gaussian)
    if not (np.array_equal(state[1], numpy[1]) and state[2:] == numpy[2:]):
        found.append("NumPy's generator")
    return found, tensors(out)


def violations(call: Callable[[], Any], monkeypatch: pytest.MonkeyPatch, random_draws: bool,
               modules: tuple[torch.nn.Module, ...] = ()) -> list[str]:
    """What `call` does against gan_lab.capture's contract ([] when nothing) that a CPU run can show.

    modules: put back to one state before each call (spectral norm's power iteration updates its vectors).
    """
    with Ops():  # once unwatched: what a first call sets up (a lazy import, a buffer, a cache) is not the step's
        call()
    states = [copy.deepcopy(m.state_dict()) for m in modules]

    def reset_and_call() -> Any:
        for module, state in zip(modules, states):
            module.load_state_dict(state)
        return call()

    found, first = run_watched(reset_and_call, monkeypatch, seed=0)
    _, again = run_watched(reset_and_call, monkeypatch, seed=0)
    if not (len(first) == len(again) and all(torch.equal(a, b) for a, b in zip(first, again))):
        found.append("not reproduced by torch's seed")
    if random_draws:  # and it does draw from torch's generator: another seed, other numbers
        _, other = run_watched(reset_and_call, monkeypatch, seed=1)
        if all(torch.equal(a, b) for a, b in zip(first, other)):
            found.append("the same for another torch seed")
    return found


def test_a_host_sync_a_file_or_another_generator_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    x = torch.randn(8)
    (tmp_path / "f").write_text("x")
    cases = [
        (lambda: x[x > 0], ["index(mask)"]),
        (lambda: x * float(x.sum()), ["_local_scalar_dense"]),
        (lambda: x.masked_select(x > 0), ["masked_select"]),
        (lambda: x + torch.tensor([1.0]), ["lift_fresh"]),
        (lambda: (open(tmp_path / "f").close(), x)[1], [f"opened {tmp_path / 'f'}"]),
        (lambda: x * random.random(), ["Python's generator", "not reproduced by torch's seed"]),
        (lambda: x * np.random.rand(), ["NumPy's generator", "not reproduced by torch's seed"]),
        (lambda: x + torch.randn(8, generator=torch.Generator().manual_seed(7)), ["the same for another torch seed"]),
    ]
    for bad, expected in cases:
        draws = "generator" in expected[0] or "seed" in expected[0]
        assert violations(bad, monkeypatch, random_draws=draws) == expected
    assert violations(lambda: x + torch.randn(8), monkeypatch, random_draws=True) == []


# ---------------------------------------------------------------- data: every conf/data class


@pytest.fixture(scope="module")
def folder_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_classes(tmp_path_factory.mktemp("folder") / "images", n=8)


def data_overrides(name: str, root: Path, images: Path, cache: Path) -> list[str]:
    if name in ("mnist", "fashion_mnist", "stacked_mnist"):
        return [f"data.root={root}", "data.download=false"]
    if name.startswith("folder"):
        budget = ["data.memory_budget=1e-9"] if name == "folder_streamed" else []  # a budget nothing fits
        return [f"data.path={images}", f"data.cache={cache}", "data.resolution=32", "data.workers=0", *budget]
    if name == "table":
        return [f"data.path={write_table_csv(cache / 't.csv')}"]
    return []


# every option as it composes (a new 2-D data set is walked as it is), the folder also streamed; cifar10, cifar100
# and celeba are ImageData as mnist is, whose sample() is checked on tiny MNIST files (the tests have none of theirs)
DATA = sorted({*options("data"), "folder_streamed"} - {"cifar10", "cifar100", "celeba"})


def test_the_data_walk_reaches_every_data_class() -> None:
    classes = {name: composed(f"data={name}")["data"]["_target_"] for name in options("data")}
    checked_here = {classes[name.removesuffix("_streamed")] for name in DATA}
    assert checked_here == set(classes.values())


@pytest.mark.parametrize("name", DATA)
def test_every_data_sets_sample_keeps_the_graph_contract(name: str, tiny_mnist_root: Path, folder_images: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    option = name.removesuffix("_streamed")
    node = composed(f"data={option}", *data_overrides(name, tiny_mnist_root, folder_images, tmp_path))["data"]
    data = build_data(node)
    assert isinstance(type(data).__dict__.get("capturable"), (bool, property))  # declared by the class itself
    if not data.capturable:
        assert name == "folder_streamed"  # the one that may say no
        pytest.skip(f"{option} declares capturable=False: it {data.not_capturable}")
    assert violations(lambda: data.sample(8), monkeypatch, random_draws=True) == []


def test_streamed_folder_data_trains_eagerly_with_one_warning_naming_why(folder_images: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    node = composed("data=folder", *data_overrides("folder_streamed", None, folder_images, tmp_path))["data"]
    data = build_data(node)
    G, critic = build_model("mlp", data.shape, z_dim=2, hidden=4, depth=1)
    held = build_data({**node, "memory_budget": 4})
    assert graphs.graph_blocker(False, parts={"data": held, "generator": G, "critic": critic}) is None
    assert graphs.graph_blocker(False, parts={"data": object()}).startswith("the data (object) does not declare")

    class Iteration:  # what runner() reads of the loop's iteration
        opt_g = opt_d = torch.optim.SGD(G.parameters(), lr=0.1)

    iteration = Iteration()
    capsys.readouterr()
    run = graphs.runner(iteration, "auto", torch.device("cuda"), 0, skip=False,
                        parts={"data": data, "generator": G, "critic": critic})
    out = " ".join(capsys.readouterr().err.split())
    assert run is iteration and out.count("warning") == 1
    assert "no CUDA graph for this run: the data (FolderData) streams its images from disk" in out


# ---------------------------------------------------------------- models: every conf/model option, every cure

# overrides that make the published sizes tiny; an option not named here is built at its YAML's sizes
TINY_SIZES = {"mlp": {"hidden": 8, "depth": 2}, "table": {"hidden": 8}, "dcgan": {"width": 4},
              "resnet": {"g_channels": 4, "g_max_channels": 4, "d_channels": 4, "d_max_channels": 4},
              "r3gan": {"channels": 4, "max_channels": 4, "group_channels": 4, "label_features": 4,
                        "blocks_per_stage": 1}}


@pytest.mark.parametrize("conditional", [False, True], ids=["packed", "conditional"])
@pytest.mark.parametrize("name", options("model"))
def test_every_model_keeps_the_graph_contract(name: str, conditional: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    shape = (2,) if name == "mlp" else (6,) if name == "table" else (1, 28, 28)
    cures = {"conditional": True, "n_classes": 4} if conditional else {"pack": 2}
    augment = [] if len(shape) == 1 else ["translation", "color", "cutout"]  # DiffAugment draws inside the critic
    if name == "table":  # both with the float condition vector a table always has; unpacked, and packed by 2
        cures = {"layout": TABLE_LAYOUT, "pack": 1 if conditional else 2}
    G, critic = build_model(name, shape, z_dim=4, minibatch_std=2, augment=augment, **TINY_SIZES.get(name, {}), **cures)
    assert G.capturable is True and critic.capturable is True
    y = torch.arange(8) % 4 if conditional else None
    if name == "table":
        y = torch.nn.functional.one_hot(torch.arange(8) % 2, 2).float()

    def step() -> tuple[torch.Tensor, ...]:
        G.zero_grad(set_to_none=True)
        fake = G(torch.randn(8, 4), y)
        score = critic(fake, y)
        score.sum().backward()  # the backward is captured too
        return fake, score, next(G.parameters()).grad

    assert violations(step, monkeypatch, random_draws=True, modules=(G, critic)) == []


# ---------------------------------------------------------------- losses: every conf/loss option


@pytest.mark.parametrize("name", options("loss"))
def test_every_loss_keeps_the_graph_contract(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    node = composed(f"loss={name}")["loss"]
    loss, _ = build_loss({**node, **{k: 1.0 for k in ("lambda_gp", "lambda_r1", "lambda_r2", "lambda_dragan")}})
    assert len(loss.penalties()) == 4  # every penalty on: each is checked with every loss
    _, critic = build_model("mlp", (2,), z_dim=2, hidden=8, depth=2)
    x, fake = torch.randn(8, 2), torch.randn(8, 2, requires_grad=True)

    def step() -> tuple[torch.Tensor, ...]:
        critic.zero_grad(set_to_none=True)
        real_out, fake_out = critic(x), critic(fake)
        total = loss.d_loss(real_out, fake_out) + loss.g_loss(real_out, fake_out)
        for penalty in loss.penalties():
            points = penalty.points(x, fake.detach()).detach().requires_grad_(True)
            total = total + penalty.weight * penalty.value(critic(points), points)
        total.backward()
        return total, next(critic.parameters()).grad

    assert violations(step, monkeypatch, random_draws=True, modules=(critic,)) == []


def test_the_contract_is_written_once_where_it_is_declared() -> None:
    assert "no host sync" in capture.__doc__ and "capturable: bool" in capture.__doc__
    assert "gan_lab.capture" in graphs.__doc__
