"""Memorisation in `gan-lab eval`: samples against their nearest training images (gan_lab.evaluation.memorisation)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from typing import Callable

from torch import Tensor, nn
from torch.testing import assert_close

from conftest import TINY, TINY_DCGAN, run_cli
from gan_lab.data import ImageData, NearestTraining, StackedMNIST
from gan_lab.evaluation import memorisation
from gan_lab.evaluation.memorisation import COPY_RATIO, memorisation_check
from gan_lab.evaluation.nearest import distinct, either_orientation, mann_whitney_z, two_nearest


class Copier(nn.Module):
    """A generator that returns training images: each z picks one (what a memorising GAN does)."""

    z_dim, n_classes = 4, 0

    def __init__(self, images: Tensor, per_sample: int = 1, change: Callable[[Tensor], Tensor] = lambda x: x):
        super().__init__()
        self.register_buffer("images", images)
        self.change = change  # what the copier does to each copy (float images in [-1, 1])
        self.per_sample = per_sample  # training images stacked on the channels of one sample
        self.anchor = nn.Parameter(torch.zeros(()))  # generate() reads the device from a parameter

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        picks = (z[:, :self.per_sample].abs() * 1e4).long() % len(self.images)
        return self.change(torch.cat([self.images[picks[:, k]] for k in range(self.per_sample)], dim=1).float()
                           / 127.5 - 1)


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


def test_two_nearest_in_chunks_matches_the_whole_distance_matrix_and_leaves_self_out(monkeypatch) -> None:
    from gan_lab.evaluation import nearest as search

    monkeypatch.setattr(search, "CHUNK", 3)  # several chunks of queries and keys, and short last ones
    monkeypatch.setattr(search, "KEY_CHUNK", 4)
    g = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(7, 5, generator=g), torch.randn(11, 5, generator=g)
    d1, i1, d2, i2 = two_nearest(queries, keys)
    full = torch.cdist(queries, keys).sort(dim=1)
    assert_close(d1, full.values[:, 0]) and assert_close(d2, full.values[:, 1])
    assert torch.equal(i1, full.indices[:, 0]) and torch.equal(i2, full.indices[:, 1])
    keep, held = torch.tensor([0, 2, 3, 5, 8, 9, 10]), torch.tensor([1, 3, 5])  # positions in keep
    d1, i1, d2, _ = two_nearest(keys[keep[held]], keys, keep=keep, self_index=held)
    own = torch.cdist(keys[keep[held]], keys[keep])
    own[torch.arange(3), held] = float("inf")
    assert_close(d1, own.sort(1).values[:, 0]) and assert_close(d2, own.sort(1).values[:, 1])
    assert not (i1 == held).any()  # never itself, though it sits at distance 0


def test_a_mirrored_query_takes_the_nearer_orientation_and_a_different_second_key() -> None:
    found = (torch.tensor([1.0]), torch.tensor([4]), torch.tensor([2.0]), torch.tensor([7]))
    mirrored = (torch.tensor([0.5]), torch.tensor([7]), torch.tensor([3.0]), torch.tensor([4]))
    d1, i1, d2 = either_orientation(found, mirrored)
    # key 7 at 0.5 (mirrored); the nearest other key is 4 at 1.0 (as it is), not 7 again at 2.0
    assert (d1.item(), i1.item(), d2.item()) == (0.5, 7, 1.0)


def test_duplicates_are_found_byte_for_byte() -> None:
    images = rgb_images(6, seed=0)
    images = torch.cat([images, images[[1, 4]], images[:1]])
    near = images[:1].clone()
    near[0, 0, 0, 0] ^= 1  # one bit apart: a different image
    assert distinct(torch.cat([images, near])).tolist() == [0, 1, 2, 3, 4, 5, 9]


def test_mann_whitney_z_is_scipys_normal_approximation() -> None:
    from scipy.stats import mannwhitneyu

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, generator=g) - 0.5, torch.randn(60, generator=g)
    u = mannwhitneyu(x.numpy(), y.numpy(), method="asymptotic", use_continuity=False).statistic
    assert mann_whitney_z(x, y) == pytest.approx((u - 40 * 60 / 2) / math.sqrt(40 * 60 * 101 / 12), rel=1e-6)
    assert mann_whitney_z(x, y) < -2 < 2 < mann_whitney_z(y + 3, x)


def eval_only(data: object) -> list:
    """The measures a data set declares for `gan-lab eval` alone: its NearestTraining."""
    return [measure for measure in data.measures() if not measure.during_training]


def test_copies_noised_or_flipped_copies_are_flagged_and_fresh_draws_and_the_mean_image_are_not(
        tiny_mnist_root: Path) -> None:
    data = ImageData("mnist", root=str(tiny_mnist_root), download=False)
    [measure] = eval_only(data)
    assert measure.classifier == "mnist" and measure.real is data.images
    check = memorisation_check(measure, 64, classifier_root=str(tiny_mnist_root))
    noise = torch.Generator().manual_seed(1)
    generators = {
        "copies": Copier(data.images),
        "noised": Copier(data.images, change=lambda x: x + 0.1 * torch.randn(x.shape, generator=noise)),
        "flipped": Copier(data.images, change=lambda x: x.flip(-1)),
        "fresh": FreshDraws(data.shape),
        "mean image": Copier(data.images.float().mean(0, keepdim=True).round().to(torch.uint8)),
    }
    found = {name: check(G).metrics for name, G in generators.items()}
    for name in ("copies", "noised", "flipped"):
        for space in ("pixels", "features"):
            assert found[name][f"memorisation/{space}/copies"] == 1.0, (name, space)
    # 64 noise images: no real image is a copy of another, so the check can set its threshold
    assert found["copies"]["memorisation/pixels/copies_of_real"] == 0.0
    assert found["copies"]["memorisation/pixels/nn_ratio_median"] < 1e-2
    assert found["copies"]["memorisation/pixels/data_copying_z"] < -3
    for name in ("fresh", "mean image"):  # main scored the mean image 1.000, as exact copies
        assert found[name]["memorisation/pixels/copies"] == 0.0, name
        assert found[name]["memorisation/pixels/nn_ratio_median"] > 0.8, name
    assert found["fresh"]["memorisation/features/copies"] <= 0.05
    assert -3 < found["fresh"]["memorisation/pixels/data_copying_z"] < 3
    assert found["copies"]["memorisation/duplicates"] == 0.0 and found["copies"]["memorisation/copy_ratio"] == COPY_RATIO


def test_a_training_set_with_duplicates_still_flags_copies(tiny_mnist_root: Path) -> None:
    data = ImageData("mnist", root=str(tiny_mnist_root), download=False)
    train = torch.cat([data.images, data.images[:4]])  # 4 of 68 images twice: main's threshold fell to 0
    check = memorisation_check(NearestTraining("mnist", train, classifier="mnist"), 64,
                               classifier_root=str(tiny_mnist_root))
    found = check(Copier(train)).metrics
    assert found["memorisation/duplicates"] == pytest.approx(4 / 68)
    assert found["memorisation/pixels/copies"] == 1.0 and found["memorisation/pixels/copies_of_real"] == 0.0
    assert found["memorisation/features/copies"] == 1.0


def test_stacked_mnist_sets_each_channel_against_the_digits(tiny_mnist_root: Path) -> None:
    data = StackedMNIST(root=str(tiny_mnist_root), download=False)
    [measure] = eval_only(data)
    found = memorisation_check(measure, 30, classifier_root=str(tiny_mnist_root))(Copier(data.images, per_sample=3))
    assert found.metrics["memorisation/pixels/copies"] == 1.0
    assert found.metrics["memorisation/features/copies"] == 1.0


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
    assert found.metrics["memorisation/features/copies"] == 1.0
    assert found.metrics["memorisation/pixels/copies"] == 1.0
    # a header, then 2 x 3 rows of sample | nearest in pixels, its ratio | nearest in features, its ratio;
    # 16-pixel images shown 6x (96 px) with 4-pixel gaps, 110 px for each ratio
    assert found.picture.shape == (3, 24 + 6 * 100, 96 + 2 * (96 + 110) + 4) and found.picture.dtype == torch.uint8


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
    assert "memorisation/features/copies" not in found.metrics
    assert found.metrics["memorisation/pixels/copies"] == 1.0
    assert "could not be loaded" in found.feature_space


def brute_force(space: memorisation.Space, samples: Tensor, keep: Tensor, held: Tensor,
                held_images: Tensor) -> dict[str, float]:
    """measure_space's numbers from whole distance matrices in float64: no chunks, flips and self by hand."""
    train = space.rows(space.train[keep]).double()

    def nearest_two(images: Tensor, self_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        distance = torch.minimum(torch.cdist(space.embed(images).double(), train),
                                 torch.cdist(space.embed(images.flip(-1)).double(), train))
        if self_index is not None:
            distance[torch.arange(len(images)), self_index] = float("inf")
        two = distance.sort(dim=1).values
        return two[:, 0], two[:, 0] / two[:, 1]

    (d1, ratio), (real_d1, real_ratio) = nearest_two(samples), nearest_two(held_images, held)
    return {"copies": (ratio < COPY_RATIO).double().mean().item(),
            "copies_of_real": (real_ratio < COPY_RATIO).double().mean().item(),
            "nn_ratio_median": ratio.median().item(), "real_nn_ratio_median": real_ratio.median().item(),
            "sample_nn_median": d1.median().item(), "real_nn_median": real_d1.median().item()}


def test_eval_reports_memorisation_and_keeps_each_picture(tmp_path: Path, tiny_mnist_root: Path,
                                                          capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", *TINY, *TINY_DCGAN, "threads=1",
            f"hydra.run.dir={tmp_path}")
    seen, reals = [], []  # what eval measured, in pixels then in features: samples, then the held real images
    measure_space, reference = memorisation.measure_space, memorisation.reference
    monkeypatch.setattr(memorisation, "measure_space", lambda *args: seen.append(args) or measure_space(*args))
    monkeypatch.setattr(memorisation, "reference", lambda *args: reals.append(args) or reference(*args))
    run_cli("eval", f"checkpoint={tmp_path}")
    record = json.loads((tmp_path / "eval.json").read_text())
    assert record["memorisation/copy_ratio"] == COPY_RATIO and record["memorisation/duplicates"] == 0.0
    # every digit metric beside its value for the test split under the same protocol (the tiny test split is
    # 64 other noise images: all 10 classes' labels, a Fréchet distance above 0)
    real = record["real_held_out"]
    assert set(real) == {k for k in record if k.startswith("metrics/")} and real["metrics/frechet_distance"] > 0
    # eval.json holds the numbers of an independent nearest-neighbour search on what eval measured
    assert len(seen) == len(reals) == 2 and len(seen[0][2]) == 64  # the tiny MNIST's 64 training images
    for space, (searched, samples, keep, _), (_, _, held, held_images) in zip(("pixels", "features"), seen, reals):
        expected = brute_force(searched, samples, keep, held, held_images)
        # the tiny MNIST is 64 distinct noise images: no real image passes as a copy of another
        assert expected["copies_of_real"] == 0.0 and expected["real_nn_ratio_median"] > 0.8
        found = {k: record[f"memorisation/{space}/{k}"] for k in expected}
        assert found["copies"] == expected["copies"], space
        assert_close(found, expected, rtol=1e-4, atol=1e-6, msg=space)
    first = (tmp_path / "nearest_neighbours.png").read_bytes()
    with Image.open(tmp_path / "nearest_neighbours.png") as picture:  # a header, 16 rows of 28-px digits at 3x
        assert picture.size == (84 + 2 * (84 + 110) + 4, 24 + 16 * 88)
    assert "memorisation: in pixels:" in " ".join(capsys.readouterr().err.split())
    run_cli("eval", f"checkpoint={tmp_path}", "seed=1")
    assert (tmp_path / "nearest_neighbours_seed1.png").exists() and (tmp_path / "eval_seed1.json").exists()
    assert (tmp_path / "nearest_neighbours.png").read_bytes() == first  # the plain evaluation's is kept
    run_cli("report", str(tmp_path))  # the evaluations table shows the share of samples that are copies
    table = (tmp_path / "report.md").read_text().partition("## Evaluations")[2]
    assert "memorisation/pixels/copies" in table and "memorisation/features/copies" in table


def test_each_evaluation_names_its_own_picture(tmp_path: Path) -> None:
    names = {record: memorisation.picture_file(tmp_path / record).name
             for record in ("eval.json", "eval_drs.json", "eval_step_00001000_seed1.json", "given.json")}
    assert names == {"eval.json": "nearest_neighbours.png", "eval_drs.json": "nearest_neighbours_drs.png",
                     "eval_step_00001000_seed1.json": "nearest_neighbours_step_00001000_seed1.png",
                     "given.json": "given_nearest_neighbours.png"}


def test_one_training_image_has_no_neighbour_and_says_so() -> None:
    for train in (rgb_images(1, seed=0), rgb_images(1, seed=0).repeat(5, 1, 1, 1)):  # one image; one, five times
        found = memorisation_check(NearestTraining("rgb", train), 4, inception_weights="/absent.pth")(Copier(train))
        assert found.metrics == {} and found.picture is None
        assert "holds 1 distinct image(s)" in found.missing and "other metrics are written" in found.missing
        assert memorisation.report(found, Path("/nonexistent/eval.json")) == found.missing  # and no picture
