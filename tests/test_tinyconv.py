"""model=tinyconv (throwaway, #30): sizes from the plan, and a packed, grouped run from the command line."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import TINY, build_model, run_cli
from gan_lab.runs.checkpoint import load_checkpoint


def test_the_critic_takes_the_pack_and_the_groups_channel() -> None:
    G, critic = build_model("tinyconv", (1, 28, 28), pack=2, minibatch_std=2)
    assert critic.net.conv1.in_channels == 2 and critic.net.conv2.in_channels == 9
    assert critic(G(torch.randn(8, 16))).shape == (4,)


def test_a_packed_grouped_run_from_the_cli(tmp_path: Path, tiny_mnist_root: Path) -> None:
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", "data.download=false", "model=tinyconv",
            "model.pack=2", "model.minibatch_std=2", "metrics=false", *TINY, f"hydra.run.dir={tmp_path}")
    state = load_checkpoint(tmp_path)
    assert state["step"] == 4 and state["critic"]["net.conv2.weight"].shape == (16, 9, 4, 4)
