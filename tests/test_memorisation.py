"""Memorisation in `gan-lab eval`: samples against their nearest training images (gan_lab.evaluation.memorisation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from torch.testing import assert_close

from conftest import TINY, TINY_DCGAN, run_cli
from gan_lab.data import ImageData, NearestTraining, StackedMNIST
from gan_lab.evaluation import memorisation
from gan_lab.evaluation.memorisation import memorisation_check, nearest


class Copier(nn.Module):
    """A generator that returns training images: each z picks one (what a memorising GAN does)."""

    z_dim, n_classes = 4, 0

    def __init__(self, images: Tensor, per_sample: int = 1):
        super().__init__()
        self.register_buffer("images", images)
        self.per_sample = per_sample  # training images stacked on the channels of one sample
        self.anchor = nn.Parameter(torch.zeros(()))  # generate() reads the device from a parameter

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        picks = (z[:, :self.per_sample].abs() * 1e4).long() % len(self.images)
        return torch.cat([self.images[picks[:, k]] for k in range(self.per_sample)], dim=1).float() / 127.5 - 1


class FreshDraws(nn.Module):
    """A generator of new images from the training images' own distribution (the tiny data: uniform noise)."""

    z_dim, n_classes = 4, 0

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        rng = torch.Generator().manual_seed(int(z[0, 0].abs() * 1e6))
        return torch.randint(0, 256, (len(z), *self.shape), generator=rng).float() / 127.5 - 1


def test_nearest_in_chunks_matches_the_whole_distance_matrix_and_leaves_self_out(monkeypatch) -> None:
    monkeypatch.setattr(memorisation, "CHUNK", 3)  # several chunks and a short last one
    g = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(7, 5, generator=g), torch.randn(11, 5, generator=g)
    distance, index = nearest(queries, keys)
    full = torch.cdist(queries, keys)
    assert_close(distance, full.min(1).values)
    assert torch.equal(index, full.argmin(1))
    held = torch.tensor([2, 5, 9])
    distance, index = nearest(keys[held], keys, self_index=held)
    own = torch.cdist(keys[held], keys)
    own[torch.arange(3), held] = float("inf")
    assert_close(distance, own.min(1).values)
    assert not torch.equal(index, held)  # never itself, though it sits at distance 0


def eval_only(data: object) -> list:
    """The measures a data set declares for `gan-lab eval` alone: its NearestTraining."""
    return [measure for measure in data.measures() if not measure.during_training]


def test_a_generator_that_returns_training_images_is_flagged_and_fresh_draws_are_not(tiny_mnist_root: Path) -> None:
    data = ImageData("mnist", root=str(tiny_mnist_root), download=False)
    [measure] = eval_only(data)
    assert measure.classifier == "mnist" and measure.real is data.images
    check = memorisation_check(measure, 64, classifier_root=str(tiny_mnist_root))
    copied = check(Copier(data.images)).metrics
    assert copied["memorisation/pixels/fraction_closer"] == 1.0
    assert copied["memorisation/features/fraction_closer"] == 1.0
    assert copied["memorisation/pixels/sample_nn_median"] < 1e-3 < copied["memorisation/pixels/threshold"]
    assert copied["memorisation/quantile"] == 0.01
    fresh = check(FreshDraws(data.shape)).metrics
    assert fresh["memorisation/pixels/fraction_closer"] <= 0.05
    assert fresh["memorisation/features/fraction_closer"] <= 0.1
    # new images from the same distribution sit as far from the training images as these do from each other
    assert fresh["memorisation/pixels/sample_nn_median"] == pytest.approx(
        fresh["memorisation/pixels/train_nn_median"], rel=0.05)


def test_stacked_mnist_sets_each_channel_against_the_digits(tiny_mnist_root: Path) -> None:
    data = StackedMNIST(root=str(tiny_mnist_root), download=False)
    [measure] = eval_only(data)
    found = memorisation_check(measure, 30, classifier_root=str(tiny_mnist_root))(Copier(data.images, per_sample=3))
    assert found.metrics["memorisation/pixels/fraction_closer"] == 1.0
    assert found.metrics["memorisation/features/fraction_closer"] == 1.0


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch-fidelity's InceptionV3 with random weights, saved as its weights file is: offline, no download."""
    from torch_fidelity import feature_extractor_inceptionv3 as module

    patch = pytest.MonkeyPatch()
    patch.setattr(module, "load_state_dict_from_url", lambda *args, **kwargs: {})
    patch.setattr(module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
    try:
        torch.manual_seed(0)
        model = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        patch.undo()
    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    torch.save(model.state_dict(), path)
    return path


def rgb_images(n: int, seed: int) -> Tensor:
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_rgb_images_use_inception_features(random_inception_weights: Path) -> None:
    train = rgb_images(3, seed=0)  # Inception sees 299 x 299 whatever the size: few images keep this fast
    check = memorisation_check(NearestTraining("rgb", train), 3, inception_weights=str(random_inception_weights))
    found = check(Copier(train))
    assert found.feature_space.startswith("Inception")
    assert found.metrics["memorisation/features/fraction_closer"] == 1.0
    assert found.metrics["memorisation/pixels/fraction_closer"] == 1.0
    # sample | nearest in pixels | nearest in features, 2 x 3 rows of 16-pixel images with 2-pixel padding
    assert found.picture.shape == (3, 6 * 18 + 2, 3 * 18 + 2) and found.picture.dtype == torch.uint8


def test_a_file_that_is_not_plain_weights_is_refused(tmp_path: Path) -> None:
    from gan_lab.errors import GanLabError

    unsafe = tmp_path / "weights.pth"
    torch.save({"weights": Path("x")}, unsafe)  # a pickled class: the weights-only reader refuses it
    with pytest.raises(GanLabError, match="Refused the Inception weights"):
        memorisation_check(NearestTraining("rgb", rgb_images(4, seed=0)), 4, inception_weights=str(unsafe))


def test_without_inception_weights_the_pixels_are_still_measured(tmp_path: Path) -> None:
    train = rgb_images(6, seed=0)
    check = memorisation_check(NearestTraining("rgb", train), 6, inception_weights=str(tmp_path / "absent.pth"))
    found = check(Copier(train))
    assert "memorisation/features/fraction_closer" not in found.metrics
    assert found.metrics["memorisation/pixels/fraction_closer"] == 1.0
    assert "could not be loaded" in found.feature_space


def brute_force(samples: Tensor, train: Tensor, held: Tensor) -> dict[str, float]:
    """memorisation.compare's numbers from the whole distance matrix in float64: no chunks, self left out by hand."""
    to_sample = torch.cdist(samples.double(), train.double()).min(dim=1).values
    own = torch.cdist(train[held].double(), train.double())
    own[torch.arange(len(held)), held] = float("inf")
    to_train = own.min(dim=1).values
    threshold = torch.quantile(to_train, 0.01).item()
    return {"sample_nn_median": to_sample.median().item(), "train_nn_median": to_train.median().item(),
            "threshold": threshold, "fraction_closer": (to_sample < threshold).double().mean().item()}


def test_eval_reports_memorisation_and_keeps_each_picture(tmp_path: Path, tiny_mnist_root: Path,
                                                          capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", *TINY, *TINY_DCGAN, "threads=1",
            f"hydra.run.dir={tmp_path}")
    seen, compare = [], memorisation.compare  # what eval compared, in pixels then in features
    monkeypatch.setattr(memorisation, "compare", lambda *args: seen.append(args) or compare(*args))
    run_cli("eval", f"checkpoint={tmp_path}")
    record = json.loads((tmp_path / "eval.json").read_text())
    assert record["memorisation/quantile"] == 0.01
    # eval.json holds the numbers of an independent nearest-neighbour search on what eval compared
    assert len(seen) == 2 and seen[0][1].shape == (64, 28 * 28)  # the tiny MNIST's 64 training images
    for space, (samples, train, held) in zip(("pixels", "features"), seen):
        expected = brute_force(samples, train, held)
        # the tiny MNIST is 64 distinct noise images: no training image has a twin, nor sits its own neighbour
        assert expected["threshold"] > 0.1 * expected["train_nn_median"] > 0
        found = {k: record[f"memorisation/{space}/{k}"] for k in expected}
        assert found["fraction_closer"] == expected["fraction_closer"], space
        assert_close(found, expected, rtol=1e-4, atol=1e-6, msg=space)
    first = (tmp_path / "nearest_neighbours.png").read_bytes()
    with Image.open(tmp_path / "nearest_neighbours.png") as picture:  # 16 rows of 3 MNIST images
        assert picture.size == (3 * 30 + 2, 16 * 30 + 2)
    assert "memorisation:" in capsys.readouterr().err
    run_cli("eval", f"checkpoint={tmp_path}", "seed=1")
    assert (tmp_path / "nearest_neighbours_seed1.png").exists() and (tmp_path / "eval_seed1.json").exists()
    assert (tmp_path / "nearest_neighbours.png").read_bytes() == first  # the plain evaluation's is kept
    run_cli("report", str(tmp_path))  # the evaluations table shows how many samples sit on a training image
    table = (tmp_path / "report.md").read_text().partition("## Evaluations")[2]
    assert "memorisation/pixels/fraction_closer" in table and "memorisation/features/fraction_closer" in table



def test_each_evaluation_names_its_own_picture(tmp_path: Path) -> None:
    names = {record: memorisation.picture_file(tmp_path / record).name
             for record in ("eval.json", "eval_drs.json", "eval_step_00001000_seed1.json", "given.json")}
    assert names == {"eval.json": "nearest_neighbours.png", "eval_drs.json": "nearest_neighbours_drs.png",
                     "eval_step_00001000_seed1.json": "nearest_neighbours_step_00001000_seed1.png",
                     "given.json": "given_nearest_neighbours.png"}


def test_one_training_image_has_no_neighbour_and_says_so() -> None:
    from gan_lab.errors import GanLabError

    with pytest.raises(GanLabError, match="at least 2 training images"):
        memorisation_check(NearestTraining("rgb", rgb_images(1, seed=0)), 1, inception_weights="/absent.pth")
