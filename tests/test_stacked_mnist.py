"""Stacked MNIST: three independent digits per image, 1,000 modes, classified channel by channel."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import TINY, TINY_DCGAN, run_cli, write_idx
from gan_lab.data import StackedMNIST
from gan_lab.evaluation.evaluate import stacked_modes
from gan_lab.runs.checkpoint import load_checkpoint


def labelled_mnist(root: Path) -> Path:
    """A tiny MNIST whose image of digit d is filled with the value 20 * d: the pixels tell the label."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    labels = torch.arange(50) % 10
    images = (20 * labels).view(-1, 1, 1).expand(50, 28, 28)
    for split in ("train", "t10k"):
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


class PixelReader(nn.Module):
    """A stand-in classifier that reads the digit off the pixel value (20 * d, scaled to [-1, 1])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        digit = ((x.mean(dim=(1, 2, 3)) + 1) * 127.5 / 20).round().long()
        return nn.functional.one_hot(digit, 10).float()


def test_stacked_samples_carry_their_three_digits(tmp_path: Path) -> None:
    data = StackedMNIST(root=str(labelled_mnist(tmp_path)), download=False)
    torch.manual_seed(0)
    x, y = data.sample(4000)
    assert x.shape == (4000, 3, 28, 28) and data.n_classes == 1000
    digits = ((x[:, :, 0, 0] + 1) * 127.5 / 20).round().long()  # each channel's digit, read off its pixels
    assert torch.equal(y, digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2])
    assert len(y.unique()) > 950  # 4,000 draws of 1,000 equally likely modes cover nearly all (expected 982)
    assert torch.equal(stacked_modes(PixelReader(), x), y)


@pytest.mark.slow
def test_stacked_mnist_trains_and_evaluates(tmp_path: Path, tiny_mnist_root: Path) -> None:
    run_cli("train", "data=stacked_mnist", f"data.root={tiny_mnist_root}", *TINY, *TINY_DCGAN,
            f"hydra.run.dir={tmp_path}")
    state = load_checkpoint(tmp_path)
    assert state["data_shape"] == [3, 28, 28] and state["n_classes"] == 1000
    run_cli("eval", f"checkpoint={tmp_path}")  # trains the tests' tiny digit classifier on first use
    import json

    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["metrics/n_modes"] == 1000 and 1 <= result["metrics/modes_covered"] <= 1000
