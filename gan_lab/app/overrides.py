"""The command line of `gan-lab train`, checked against conf/ before anything is made.

A misspelt key or group option gets the one that was meant (Hydra itself only says it "could
not override" a key); Hydra's --experimental-rerun, which unpickles a file, is refused.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from omegaconf import DictConfig

from gan_lab.app.options import conf_options, did_you_mean, unknown_key
from gan_lab.errors import GanLabError


def refuse_rerun(args: list[str]) -> None:
    """Refuse Hydra's --experimental-rerun: it unpickles the file it is given, so any file could run any code."""
    # argparse also takes any unique prefix of it, down to --e
    if any(len(name) >= 3 and "--experimental-rerun".startswith(name) for name in (a.split("=", 1)[0] for a in args)):
        raise GanLabError("gan-lab train does not take Hydra's --experimental-rerun: it unpickles the file it "
                          "is given, which can run any code. Re-run a job with the overrides it recorded "
                          "(<run dir>/.hydra/overrides.yaml), or continue it with resume=<run dir>.")


def check_overrides(args: list[str]) -> None:
    """Refuse a key or group option of `gan-lab train` that does not exist, naming the one that was meant.

    Hydra itself only says it "could not override" a misspelt key (and suggests appending it with
    +, which then fails in the builder), or lists a group's options. Keys are looked up in the
    config composed with the command line's group choices (a sweep's first choice, then each other
    one); anything this check cannot judge is left to Hydra.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    parser, conf = OverridesParser.create(), files("gan_lab.conf")
    choices: list[tuple[str, list[Any]]] = []  # (group override's prefix and name, its options)
    keys: list[tuple[str, str]] = []  # (key, the argument that names it)
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue  # flags (-m, --cfg job) and their values
        try:
            override = parser.parse_override(arg)
        except Exception:  # Hydra's own error says what is wrong with it
            continue
        name = override.key_or_group
        if name.split(".")[0].split("/")[0] == "hydra" or override.package is not None or override.is_delete():
            continue
        if conf.joinpath(name).is_dir():  # a config group: each option is a YAML in conf/<group>/
            value = override.value()
            values = value.list if isinstance(value, ChoiceSweep) else [value]
            options = conf_options(name)
            for option in values:
                if isinstance(option, str) and option not in options:
                    raise GanLabError(f"no option {name}={option}{did_you_mean(option, options, f'{name}=')} "
                                      f"The {name} options are: {', '.join(options)}.")
            if all(isinstance(option, str) for option in values):
                prefix = "++" if override.is_force_add() else "+" if override.is_add() else ""
                choices.append((prefix + name, values))
        elif not (override.is_add() or override.is_force_add()):
            keys.append((name, arg))
    if not keys:
        return
    # the config of the first choice of every group, then of each other choice of one group
    picks = [[f"{name}={values[0]}" for name, values in choices]]
    picks += [[f"{n}={v if n == name else vs[0]}" for n, vs in choices] for name, values in choices
              for v in values[1:]]
    configs = []
    for pick in picks[:16]:  # a few compositions at most: this check must stay quick
        try:
            with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
                configs.append(compose("train", overrides=pick))
        except Exception:  # a choice that does not compose: Hydra says why
            return
    for key, arg in keys:
        missing = [_missing(cfg, key) for cfg in configs]
        if all(missing):
            where, part, known = missing[0]
            raise unknown_key("train", arg, part, known, f"{where}." if where else "", listing=(
                f"{'The config' if not where else where} has the keys {', '.join(known)}. To add a key the config "
                f"does not have (an argument its builder takes), write +{key}=... (`gan-lab train --cfg job` prints "
                f"the composed config)."))


def _missing(cfg: DictConfig, key: str) -> tuple[str, str, list[str]] | None:
    # (the node, its first missing part, the node's keys) when the dotted key is not in cfg; None when
    # it is, or when a part of it is not a mapping (Hydra judges those)
    node, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return None
        if part not in node:
            return ".".join(parts[:i]), part, [str(k) for k in node.keys() if not str(k).startswith("_")]
        node = node._get_node(part)  # not node[part]: no interpolation is resolved here
    return None
