"""A data set declares what it measures (measures(): gan_lab.measures objects, each carrying its computation) and
the evaluator calls them; every conf/data option's measures are checked against what they compute. The lists of
options tests and scripts use are read from conf/."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from conftest import TINY, TINY_MLP, run_cli, user_error
from gan_lab.measures import ModeCoverage
from gan_lab.data import ToyMixture, grid25_centers, ring8_centers
from gan_lab.evaluation import metrics
from gan_lab.evaluation.evaluate import eval_samples, make_evaluator
from gan_lab.app.options import conf_options

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_the_mixtures_centres_are_defined_once_in_the_data() -> None:
    assert not hasattr(metrics, "ring8_centers") and not hasattr(metrics, "grid25_centers")
    ring = ToyMixture("ring8", sigma=0.02, radius=2.0)
    # whatever else a mixture measures, its mode coverage counts around the centres it samples from
    [measure] = [m for m in ring.measures() if isinstance(m, ModeCoverage)]
    assert measure.sigma == 0.02
    assert_close(measure.centers, ring8_centers(2.0).float())
    assert_close(ring.centers, ring8_centers(2.0).float())  # what it samples around is what it measures
    [grid] = [m for m in ToyMixture("grid25", sigma=0.05).measures() if isinstance(m, ModeCoverage)]
    assert_close(grid.centers, grid25_centers().float())


class Drawing(torch.nn.Module):
    """A generator that hands out the data set's own samples and counts how many it was asked for."""

    z_dim, n_classes = 4, 0

    def __init__(self, data: object):
        super().__init__()
        self.data, self.drawn, self.anchor = data, 0, torch.nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.drawn += len(z)
        return self.data.sample(len(z))[0]


class TinyCifar:
    """torchvision's CIFAR-10/100 interface over 12 random 32x32 RGB images: no files."""

    def __init__(self, root: str, train: bool = True, download: bool = False, **kwargs) -> None:
        g = torch.Generator().manual_seed(0 if train else 1)
        self.data = torch.randint(0, 256, (12, 32, 32, 3), generator=g, dtype=torch.uint8).numpy()
        self.targets = [i % 10 for i in range(12)]


def tiny_folder(root: Path) -> Path:
    """Twelve 32x32 RGB PNGs in two class folders (the Inception Score needs 10 or more)."""
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    for i in range(12):
        (root / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(g.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"class{i % 2}" / f"{i}.png")
    return root


# the data options whose measures run Inception (cifar, a folder of RGB images) or 26,000 classifier reads
# (Stacked MNIST) are slow; celeba needs its files (its measures are ImageData's RGB ones, as cifar's)
SLOW = {"cifar10", "cifar100", "folder", "stacked_mnist"}
OFFLINE = {"celeba": "needs CelebA's files; its measures are ImageData's RGB ones, walked with cifar10"}


@pytest.mark.parametrize("option", [pytest.param(o, marks=pytest.mark.slow) if o in SLOW else
                                    pytest.param(o, marks=pytest.mark.skip(OFFLINE[o])) if o in OFFLINE else o
                                    for o in conf_options("data")])
def test_every_declared_measure_computes_what_it_names_on_the_samples_it_declares(
        option: str, tiny_mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from gan_lab.data import build_data
    from gan_lab.evaluation.evaluate import eval_context

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", TinyCifar)
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", TinyCifar)
    overrides = [f"data={option}"]
    if option == "folder":
        overrides += [f"data.path={tiny_folder(tmp_path / 'images')}", "data.resolution=32",
                      f"data.cache={tmp_path / 'cache'}", "data.workers=0"]
    if option == "table":
        from conftest import write_table_csv

        overrides += [f"data.path={write_table_csv(tmp_path / 't.csv')}"]
    with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
        node = OmegaConf.to_container(compose(config_name="train", overrides=overrides).data, resolve=True)
    if "root" in node:  # torchvision's data sets: the tiny ones (MNIST-like on disk, CIFAR patched above)
        node.update(root=str(tiny_mnist_root), download=False)
    data = build_data(node)
    weights = None
    if any(type(m).__name__ == "InceptionScores" or getattr(m, "classifier", 0) is None for m in data.measures()):
        from test_inception import random_inception_weights  # Inception's measures: random weights, offline

        weights = str(random_inception_weights(tmp_path / "pt_inception-random.pth"))
    context = eval_context(classifier_root=str(tiny_mnist_root), inception_weights=weights)
    for measure in data.measures():
        G = Drawing(data)
        metrics = measure.evaluator(context)(G)
        assert G.drawn == measure.samples() > 0, (type(measure).__name__, G.drawn)  # its protocol's count
        assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
        # eval-only measures: their own tags (memorisation/; a table's TSTR: utility/), never training's metrics/
        prefixes = ("metrics/",) if measure.during_training else ("memorisation/", "utility/")
        assert all(k.startswith(prefixes) for k in metrics), sorted(metrics)
    if not data.measures():  # nothing declared: nothing measured, and the run says so
        assert make_evaluator(data) is None and eval_samples(data) == 0


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
