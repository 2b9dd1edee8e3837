"""conf/optimizer -> each network's optimizer settings: the shared node, a preset's per_network node, overrides.

A preset (conf/optimizer/adam_ttur.yaml) sets per-network values inside the optimizer node, since a
group YAML cannot set the top-level optimizer_<network> nodes (train.yaml's own nulls merge after
it). The composition root builds torch.optim from what `settings` returns.
"""

from __future__ import annotations

from typing import Any, Callable

from gan_lab.errors import GanLabError

NETWORKS = ("generator", "critic")


def settings(shared: dict[str, Any], per_network: dict[str, Any], network: str,
             lr_scale: float = 1) -> tuple[dict[str, Any], Callable[[str], str]]:
    """One network's optimizer node (its `_target_`, `_partial_`) and key -> the config node that set it.

    The shared settings, then the preset's `per_network.<network>` node, then this network's
    non-null `optimizer_<network>` overrides; the learning rate times lr_scale (data-parallel ranks).
    """
    overrides = {k: v for k, v in per_network.items() if v is not None}
    preset = shared.get("per_network") or {}
    if not isinstance(preset, dict) or not all(isinstance(preset.get(n, {}), dict) for n in NETWORKS):
        raise GanLabError(f"optimizer.per_network={preset!r} is not a mapping of generator / critic settings, "
                          f"e.g. optimizer.per_network.critic.lr=4e-4.")
    own = preset.get(network, {})

    def node(key: str) -> str:  # where the key came from: the command line's, the preset's or the shared node
        return f"optimizer_{network}" if key in overrides else f"optimizer.per_network.{network}" if key in own \
            else "optimizer"

    merged = {**{k: v for k, v in shared.items() if k != "per_network"}, **own, **overrides}
    lr = merged.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise GanLabError(f"{node('lr')}.lr={lr} is out of range: the learning rate must be a number > 0, "
                          f"e.g. {node('lr')}.lr=1e-4.")
    merged["lr"] = lr * lr_scale
    return merged, node
