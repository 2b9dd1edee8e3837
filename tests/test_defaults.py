"""Each default is written once: where a builder's signature keeps one beside the YAML, the two are equal.

Walks conf/data, conf/model and conf/loss (every option, as its YAML composes) and compares each key the
YAML writes as a literal with the Python default of the builder argument of that name. A value the YAML
computes (an interpolation such as ${data.recommended.z_dim} or ${oc.env:...}) is the YAML's alone.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import get_object
from omegaconf import DictConfig

from gan_lab.app.options import conf_options

GROUPS = ("data", "model", "loss")


def composed(group: str, option: str) -> DictConfig:
    with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
        return compose("train", overrides=[f"{group}={option}"])[group]


def literal(node: DictConfig, key: str) -> Any:
    """The value as the YAML writes it (an interpolation stays a string starting with ${)."""
    value = node._get_node(key)._value()
    return None if isinstance(value, str) and "${" in value else value


def python_defaults(target: str) -> dict[str, Any]:
    """The builder's (or the class's) keyword defaults, and a dataclass's field defaults."""
    builder = get_object(target)
    return {name: p.default for name, p in inspect.signature(builder).parameters.items()
            if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in conf_options(g)])
def test_a_python_default_beside_the_yaml_equals_it(group: str, option: str) -> None:
    node = composed(group, option)
    defaults = python_defaults(node._target_)
    drift = {}
    for key in node:
        value = literal(node, key)
        if key in defaults and value is not None and not isinstance(value, DictConfig):
            written = list(value) if hasattr(value, "__iter__") and not isinstance(value, str) else value
            if written != defaults[key]:
                drift[key] = (written, defaults[key])
    assert drift == {}, f"{group}={option}: YAML value vs Python default differ: {drift}"


def test_the_walk_sees_a_drift() -> None:
    # the check above compares something: the ring's radius is written in both places
    node = composed("data", "ring8")
    assert literal(node, "radius") == python_defaults(node._target_)["radius"] == 1.0
