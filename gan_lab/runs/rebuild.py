"""Rebuild G and the data set from a checkpoint's stored config, never running what the file names.

A checkpoint's `config` is data read from a file. Handing it to Hydra's `instantiate` would
call whatever `_target_` it names with whatever arguments: a nested
`{_target_: builtins.open, _args_: [<file>, w]}` truncates a file. So a stored node is
rebuilt only when its `_target_` is one of gan-lab's own builders (those that
conf/<group>/*.yaml name) and every other key is an argument of that builder holding a
plain value of the type its signature declares. The builder is then called directly, with
no Hydra in between; anything else is refused before anything is built.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf
from torch import nn

from gan_lab.errors import GanLabError

# The one list of the arguments gan-lab itself passes when it builds what conf/ names, never read from a
# config node or a file: app/building.py leaves them out of a builder's keys, a stored node holding one is
# refused, and tests/test_model_rules.py holds that every other argument of a builder conf/ names is a YAML key.
BUILD_TIME = frozenset({
    "shape",       # a model's: one sample's shape, from the data set
    "n_classes",   # a model's: the data's label count (0: unlabelled)
    "layout",      # a table model's: the encoded row's spans and the categories' counts (TableData.layout)
    "augment",     # a model's: the data's DiffAugment policy, which the critic applies (a data set's is its config's)
    "device",      # a data set's: where its tensors live, from the run's device
    "rank",        # FolderData's: this process's rank under torchrun (its share of the rows)
    "world_size",  # FolderData's: how many ranks share the rows
    "say",         # FolderData's: where its progress lines and warnings go (the console)
    "before_reading",  # FolderData's: called with the data set once its shape is known, before any image is read
    "params",      # an optimizer's: the network's parameters (conf/optimizer is a _partial_)
    "settings",    # a callback's: the run's TrainSettings
    "self", "args", "kwargs",  # what a signature names that is no argument of the config: the instance, *args, **kwargs
})
# Build-time names a group's own config also sets: a data set's augment policy is a key of conf/data.
CONFIG_TOO = {"data": frozenset({"augment"}), "model": frozenset()}
# Keys a stored node may carry that are not arguments: the data set's defaults for other groups.
NOT_BUILT = {"data": frozenset({"recommended"}), "model": frozenset()}


@cache
def _options(group: str) -> tuple[dict[str, Any], ...]:
    """conf/<group>/*.yaml as written (interpolations unresolved), each a plain mapping."""
    return tuple(OmegaConf.to_container(OmegaConf.load(f), resolve=False)
                 for f in files("gan_lab.conf").joinpath(group).iterdir() if f.name.endswith(".yaml"))


@cache
def builders(group: str) -> dict[str, Callable[..., Any]]:
    """The builders conf/<group>/*.yaml name, by their `_target_` string."""
    targets = {node.get("_target_") for node in _options(group) if isinstance(node, dict)}
    found = {}
    for target in sorted(t for t in targets if isinstance(t, str)):
        module, _, name = target.rpartition(".")
        found[target] = getattr(importlib.import_module(module), name)  # gan-lab's own modules only
    return found


@cache
def option_defaults(group: str) -> dict[str, dict[str, Any]]:
    """Per builder of conf/<group>: the plain values its YAML files give a key, where every file naming it agrees.

    The builders keep no defaults of their own (the YAML holds them), so a key an older checkpoint lacks (an
    option added since, such as a cure that was off before it existed) takes the value this release's YAML gives
    it; a key the files disagree on, or one they interpolate, has none and stays missing.
    """
    seen: dict[str, dict[str, list[Any]]] = {}
    for node in _options(group):
        if isinstance(node, dict) and isinstance(node.get("_target_"), str):
            for key, value in node.items():
                seen.setdefault(node["_target_"], {}).setdefault(key, []).append(value)
    return {target: {key: values[0] for key, values in keys.items()
                     if _scalar(values[0]) and not (isinstance(values[0], str) and "${" in values[0])
                     and all(v == values[0] for v in values)}
            for target, keys in seen.items()}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a plain value read from a file has the type a builder's annotation asks for."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin in (list, tuple):  # stored as a list: every item a plain value of the item type
        item = typing.get_args(hint)[0] if typing.get_args(hint) else Any
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is type(None):
        return value is None
    return False  # a module, a tensor, a device, Any: nothing a file may supply


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _refuse(file: Path, key: str, why: str) -> GanLabError:
    return GanLabError(f"Refused to rebuild anything from {file}: its config key {key} {why}. A gan-lab "
                       f"checkpoint stores only plain values for gan-lab's own model and data builders, so "
                       f"nothing from this file was built or run. Use a checkpoint written by gan-lab train.")


def checked_builder(group: str, node: Any, file: Path) -> tuple[Callable[..., Any], dict[str, Any]]:
    """A stored `model` or `data` node -> (gan-lab's builder, its checked keyword arguments), or GanLabError."""
    if not isinstance(node, dict):
        raise _refuse(file, group, f"is {type(node).__name__}, not a mapping")
    target = node.get("_target_")
    allowed = builders(group)
    if target not in allowed:
        raise _refuse(file, f"{group}._target_", f"is {_show(target)}, which is not one of gan-lab's {group} "
                                                   f"builders ({', '.join(allowed)})")
    builder = allowed[target]
    params = inspect.signature(builder).parameters
    hints = typing.get_type_hints(builder.__init__ if inspect.isclass(builder) else builder)
    kwargs: dict[str, Any] = {}
    for key, value in node.items():
        where = f"{group}.{key}"
        if key == "_target_":
            continue
        if not isinstance(key, str) or key.startswith("_"):
            raise _refuse(file, where, "is a Hydra directive, which a stored config may not hold")
        if key in NOT_BUILT[group]:
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and (_scalar(v) or isinstance(v, list) and all(map(_scalar, v)))
                    for k, v in value.items()):
                raise _refuse(file, where, "is not a mapping of plain values")
            continue
        if (key in BUILD_TIME and key not in CONFIG_TOO[group]) or key not in params:
            raise _refuse(file, where, f"is not an argument {target} takes from a config")
        if not _fits(value, hints.get(key, Any)):
            raise _refuse(file, where, f"is {_show(value)}, but {target} expects {_hint_name(hints.get(key))}")
        kwargs[key] = value
    missing = [name for name, p in params.items()
               if p.default is p.empty and name not in BUILD_TIME and name not in kwargs and name != "self"]
    defaults = option_defaults(group).get(target, {})
    kwargs.update({name: defaults[name] for name in missing if name in defaults})  # an older checkpoint's
    missing = [name for name in missing if name not in defaults]
    if missing:
        raise _refuse(file, f"{group}.{missing[0]}", f"is missing, and {target} needs it")
    return builder, kwargs


def check_config(config: Any, file: Path) -> None:
    """Refuse a checkpoint whose stored model or data node is anything but gan-lab's builders with plain values."""
    if not isinstance(config, dict):
        raise _refuse(file, "config", "is not a mapping")
    for group in NOT_BUILT:
        checked_builder(group, config.get(group), file)


def rebuild_models(state: dict[str, Any], file: Path, generator: str = "G",
                   critic: bool = True) -> tuple[nn.Module, nn.Module]:
    """(G, critic) of a loaded checkpoint, built by gan-lab's own builder from checked values, with their weights.

    `generator`: the entry G's weights come from ("G", or "G_ema": the moving average); with
    critic=False the critic is built but keeps its initial weights.
    """
    builder, kwargs = checked_builder("model", state["config"].get("model"), file)
    from gan_lab.data import declared

    G, D = builder(shape=tuple(state["data_shape"]), n_classes=state["n_classes"],
                   **declared(builder, {"layout": state.get("layout")}), **kwargs)
    for net, entry, name in ((G, generator, "generator"), *([(D, "critic", "critic")] if critic else [])):
        try:
            net.load_state_dict(state[entry])
        except (RuntimeError, TypeError, AttributeError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise GanLabError(f"The {name} weights in {file} ({entry}) do not fit the model its config describes "
                              f"({first}). The file was altered or is not a gan-lab checkpoint.") from None
    return G, D


def rebuild_generator(state: dict[str, Any], file: Path, entry: str = "G") -> nn.Module:
    """G of a loaded checkpoint (the weights of `entry`: G or G_ema), built as rebuild_models builds it."""
    return rebuild_models(state, file, entry, critic=False)[0]


def rebuild_data(config: dict[str, Any], file: Path, device: str = "cpu", shape: Any = None) -> Any:
    """The data set of a loaded checkpoint, built by gan-lab's own class from checked values.

    shape: the sample shape the checkpoint's generator was built for (its data_shape); a data set of
    another shape is refused, since nothing the generator makes could be measured against it.
    """
    builder, kwargs = checked_builder("data", config.get("data"), file)
    if "download" in kwargs:
        # a file may not make gan-lab write anywhere: its data set is read where the file says, never fetched there
        kwargs["download"] = False
    from gan_lab.data import declared
    from gan_lab.runs.tracker import console

    say = lambda text: console.print(text, soft_wrap=True, highlight=False)  # noqa: E731 - a folder's progress
    data = builder(**kwargs, device=device, **declared(builder, {"say": say}))
    if shape is not None and list(data.shape) != list(shape):
        raise _refuse(file, "data", f"builds {kwargs.get('name', 'a data set')} samples of shape "
                                    f"{tuple(data.shape)}, but its generator makes samples of shape {tuple(shape)}")
    return data


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
