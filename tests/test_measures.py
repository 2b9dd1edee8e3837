"""A data set declares what it measures (gan_lab.data: measures()) and the evaluator builds its metrics from that;
the lists of options tests and scripts use are read from conf/."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from conftest import TINY, TINY_MLP, run_cli, user_error
from gan_lab.data import (DigitClasses, ImageData, InceptionScores, ModeCoverage, NearestTraining, StackedDigits,
                          StackedMNIST, SwissRoll, ToyMixture, grid25_centers, ring8_centers)
from gan_lab.evaluation import metrics
from gan_lab.evaluation.evaluate import eval_samples, make_evaluator
from gan_lab.app.options import conf_options

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_the_mixtures_centres_are_defined_once_in_the_data() -> None:
    assert not hasattr(metrics, "ring8_centers") and not hasattr(metrics, "grid25_centers")
    ring = ToyMixture("ring8", sigma=0.02, radius=2.0)
    (measure,) = ring.measures()
    assert isinstance(measure, ModeCoverage) and measure.sigma == 0.02
    assert_close(measure.centers, ring8_centers(2.0).float())
    assert_close(ring.centers, ring8_centers(2.0).float())  # what it samples around is what it measures
    (grid,) = ToyMixture("grid25", sigma=0.05).measures()
    assert_close(grid.centers, grid25_centers().float())


def test_each_data_class_declares_its_measures(tiny_mnist_root: Path) -> None:
    assert SwissRoll().measures() == ()  # nothing to measure yet: said so, see below
    digits, nearest = ImageData("fashion_mnist", root=str(tiny_mnist_root), download=False).measures()
    assert isinstance(digits, DigitClasses) and digits.classifier == "fashion_mnist" and len(digits.real) == 64
    assert isinstance(nearest, NearestTraining) and nearest.classifier == "fashion_mnist" and nearest.real is digits.real
    stacked, nearest = StackedMNIST(root=str(tiny_mnist_root), download=False).measures()
    assert isinstance(stacked, StackedDigits) and stacked.classifier == "mnist" and stacked.digits == 3
    assert isinstance(nearest, NearestTraining) and nearest.classifier == "mnist" and nearest.real.shape[1] == 1
    rgb = ImageData.__new__(ImageData)  # CIFAR-10's shape, without its files
    rgb.images, rgb.name, rgb.shape, rgb.size = torch.zeros(5, 3, 32, 32, dtype=torch.uint8), "cifar10", (3, 32, 32), 5
    rgb.split = "test"
    inception, nearest = rgb.measures()
    assert isinstance(inception, InceptionScores) and inception.name == "cifar10" and len(inception.real) == 5
    assert inception.split == "test"  # recorded with the metrics: which real images they compare with
    assert isinstance(nearest, NearestTraining) and nearest.classifier is None  # Inception's features


class Triangle:
    """A 2-D data set gan-lab has never seen: three modes, declaring mode coverage."""

    shape, n_classes, size, augment = (2,), 3, None, ()
    centers = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])

    def measures(self) -> tuple[ModeCoverage, ...]:
        return (ModeCoverage(self.centers, sigma=0.01),)


class OnTheModes(torch.nn.Module):
    """A generator that puts every sample exactly on a mode, in turn."""

    z_dim, n_classes = 2, 0

    def __init__(self, centers: torch.Tensor):
        super().__init__()
        self.centers, self.anchor = centers, torch.nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.centers[torch.arange(len(z)) % len(self.centers)]


def test_a_new_data_set_gets_the_metrics_it_declares() -> None:
    data = Triangle()
    evaluator = make_evaluator(data)
    assert evaluator is not None
    scores = evaluator(OnTheModes(data.centers))
    assert scores["metrics/n_modes"] == 3 and scores["metrics/modes_covered"] == 3
    assert scores["metrics/high_quality"] == 1.0 and math.isclose(scores["metrics/reverse_kl"], 0.0, abs_tol=1e-6)
    assert eval_samples(data) == 2500  # the VEEGAN / PacGAN protocol's count


def test_a_data_set_that_declares_nothing_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_cli("train", *TINY, *TINY_MLP, "data=swissroll", "threads=1", f"hydra.run.dir={tmp_path}")
    err = " ".join(capsys.readouterr().err.split())
    assert "data 'swissroll' (SwissRoll) declares no metrics" in err and "metrics/*" in err
    message = user_error(capsys, "eval", f"checkpoint={tmp_path}")
    assert "data 'swissroll' (SwissRoll) declares no metrics" in message and "measures()" in message


def test_the_options_of_a_group_are_its_yaml_files() -> None:
    for group in ("loss", "model", "data", "optimizer"):
        assert conf_options(group) == sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert "wgan_gp" in conf_options("loss") and "ring8" in conf_options("data")
