"""Hydra's build errors as one paragraph: a bad override is the user's, a failure inside a builder a bug.

`build(what, make, ...)` runs one build of the composition root (a data set, the models, the loss,
an optimizer). Hydra wraps whatever a `_target_` raises; this module unwraps gan-lab's own errors,
turns a key the builder does not take into the key that was meant, and lets a bug inside a model,
loss or data class raise as itself, with the line that failed.
"""

from __future__ import annotations

import inspect
import re
import traceback
from typing import Any, Callable, Iterable

import hydra
from hydra.errors import InstantiationException

from gan_lab.app.options import did_you_mean
from gan_lab.errors import GanLabError
from gan_lab.runs.rebuild import BUILD_TIME

# Modules whose frames lie between a config key and the code it reaches. An exception raised with
# only these on its stack is about the call itself (a key the builder does not take, a target that
# does not exist, an optimizer setting torch.optim refuses): a bad override. One raised inside a
# model, loss or data class is a bug there, and keeps its traceback.
_PLUMBING = ("gan_lab.app.cli", "gan_lab.app.building", "hydra.", "omegaconf.", "importlib", "_frozen_importlib",
             "torch.optim.")

_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


def _bad_override(err: BaseException) -> bool:
    """Whether a failed build is the config's fault rather than a bug in the code it calls."""
    root = err
    while root.__cause__ is not None:  # Hydra wraps what the call raised; judge the original
        root = root.__cause__
    if root is not err and not isinstance(root, (TypeError, ValueError, ImportError)):
        return False
    frames = [frame.f_globals.get("__name__", "") for frame, _ in traceback.walk_tb(root.__traceback__)]
    return all(name.startswith(_PLUMBING) for name in frames)


def _takes(target: Any) -> list[str]:
    # the keyword arguments a builder (a _target_ string or a callable) declares; [] when it cannot be read
    try:
        builder = hydra.utils.get_object(target) if isinstance(target, str) else target
        return [name for name in inspect.signature(builder).parameters if name not in BUILD_TIME]
    except (ImportError, AttributeError, TypeError, ValueError):
        return []


def _unknown_key(err: BaseException, node: str | Callable[[str], str], target: Any,
                 known: Iterable[str]) -> GanLabError | None:
    # "unexpected keyword argument 'x'" from a builder called with a key its config node gained by
    # +node.x=...: the key that was meant, from the node's own keys and the builder's arguments
    found = _UNEXPECTED.search(str(err.__cause__ or err))
    if not found:
        return None
    key = found.group(1)
    node = node if isinstance(node, str) else node(key)
    name = target if isinstance(target, str) else getattr(target, "__qualname__", str(target))
    takes = [k for k in dict.fromkeys([*known, *_takes(target)]) if k != key and not k.startswith("_")]
    hint = did_you_mean(key, takes, f"{node}.")
    return GanLabError(f"no key {node}.{key}{hint}" + (" " if hint else f": {name} takes {', '.join(takes)}. ")
                       + f"Check the overrides against `gan-lab train --cfg job`, which prints every key.")


def build(what: str, make: Callable[[], Any], node: str | Callable[[str], str] | None = None,
          target: Any = None, known: Iterable[str] = ()) -> Any:
    """make(), with a bad override of the `what` it builds as one GanLabError paragraph and a bug as itself.

    `node`: the config key the builder's arguments come from (or key -> that node), `target` the
    builder, `known` the node's keys: a key the builder does not take then gets the key that was meant.
    """
    try:
        return make()
    except (InstantiationException, TypeError, ValueError) as err:
        if isinstance(err.__cause__, GanLabError):
            raise err.__cause__ from None
        if not _bad_override(err):
            cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
            raise cause from cause.__cause__
        unknown = _unknown_key(err, node, target, known) if node else None
        if unknown is not None:
            raise unknown from None
        what_failed = " ".join(str(err).split())  # Hydra's message spans lines: one paragraph
        raise GanLabError(f"Could not build the {what} from its config: {what_failed}. "
                          f"Check the {what}'s overrides against `gan-lab train --cfg job`.") from None
