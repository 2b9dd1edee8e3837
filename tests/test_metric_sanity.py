"""Each metric orders garbage below real data (docs/metric_sanity.md): noise, a constant or collapsed generator,
a one-step generator against real held-out samples, under the protocol `gan-lab eval` uses."""

from __future__ import annotations

import math

import pytest
import torch

from gan_lab.data import ToyMixture
from gan_lab.evaluation.metrics import mixture_metrics

N = 2500  # the VEEGAN / PacGAN protocol


def ring8_cases() -> dict[str, torch.Tensor]:
    """Standard Gaussian noise, every sample on one mode, and draws of the mixture itself."""
    data, g = ToyMixture("ring8", 0.01), torch.Generator().manual_seed(0)
    on_modes = data.centers[torch.randint(8, (N,), generator=g)] + 0.01 * torch.randn(N, 2, generator=g)
    return {"noise": torch.randn(N, 2, generator=g),
            "collapsed": data.centers[:1] + 0.01 * torch.randn(N, 2, generator=g),
            "real": on_modes}


def test_ring8_metrics_put_noise_and_collapse_below_the_mixture() -> None:
    data = ToyMixture("ring8", 0.01)
    found = {name: mixture_metrics(x, data.centers, data.sigma) for name, x in ring8_cases().items()}
    real, noise, collapsed = found["real"], found["noise"], found["collapsed"]
    assert real["modes_covered"] == 8 and real["reverse_kl"] < 0.01 and real["high_quality"] > 0.98
    assert collapsed["modes_covered"] == 1 < real["modes_covered"]
    # the published one-sample count cannot see noise (~1% of its samples land near some centre, a few on
    # each mode): high quality and the reverse KL put it far below the mixture
    assert noise["modes_covered"] > 1
    assert noise["high_quality"] < 0.05 < real["high_quality"]
    assert noise["reverse_kl"] > 10 * real["reverse_kl"] and collapsed["reverse_kl"] == pytest.approx(math.log(8))
    # quality alone cannot see collapse (each sample sits on a mode): read it beside modes_covered
    assert collapsed["high_quality"] > 0.98


@pytest.fixture(scope="module")
def digit_cases(tmp_path_factory: pytest.TempPathFactory, tiny_mnist_root) -> tuple[object, dict[str, torch.Tensor],
                                                                                      torch.Tensor]:
    """A classifier of the squares (test_classifier's digits), the real squares, and the four cases in [-1, 1]."""
    from conftest import TINY, TINY_DCGAN, run_cli
    from gan_lab.evaluation.classifier import train_classifier
    from gan_lab.evaluation.evaluate import load_generator
    from gan_lab.evaluation.sampling import generate
    from test_classifier import squares, to_unit_range

    images, labels = squares(60, seed=0)
    model = train_classifier(images, labels, epochs=2, batch_size=32, seed=0, progress=False)
    run = tmp_path_factory.mktemp("one-step")
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", *TINY, *TINY_DCGAN, "train.steps=1", "threads=1",
            f"hydra.run.dir={run}")
    n, g = 300, torch.Generator().manual_seed(2)
    held_out = squares(n // 10, seed=1)[0]
    cases = {"noise": torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, "constant": torch.zeros(n, 1, 28, 28),
             "one-step": generate(load_generator(str(run))[0], n, None, seed=0).clamp(-1, 1),
             "real": to_unit_range(held_out)}
    return model, cases, to_unit_range(images)


HIGHER_IS_BETTER = {"classes_covered", "confidence", "precision", "recall", "density", "coverage"}


def test_every_class_metric_puts_noise_constant_and_one_step_below_real_images(digit_cases) -> None:
    from gan_lab.evaluation.classifier import class_metrics

    model, cases, real = digit_cases
    found = {name: class_metrics(model, x, real) for name, x in cases.items()}
    assert set(found["real"]) == HIGHER_IS_BETTER | {"class_kl", "frechet_distance"}
    for metric, real_value in found["real"].items():
        for name in ("noise", "constant", "one-step"):
            worse = found[name][metric] < real_value if metric in HIGHER_IS_BETTER else found[name][metric] > real_value
            assert worse, (metric, name, found[name][metric], real_value)
    # and by a margin where the metric is a share: real squares are inside the real manifold, garbage is not
    for metric in ("precision", "recall", "density", "coverage"):
        assert found["real"][metric] > 0.5 > max(found[name][metric] for name in ("noise", "constant", "one-step"))


@pytest.mark.slow
def test_on_real_mnist_every_class_metric_puts_noise_constant_and_one_step_below_held_out_digits(
        real_data_root, digit_cases, tmp_path) -> None:
    # the digit classifier's features put grey blobs inside the real digits' k-NN balls (precision 0.87 beside
    # real test digits' 0.87, a constant image 1.00): precision, recall, density and coverage are taken in pixels
    from gan_lab.data import _load_torchvision
    from gan_lab.evaluation.classifier import class_metrics, load_or_train_classifier

    # a cache of its own: the session's $GAN_LAB_CACHE may hold an "mnist" classifier trained on the tiny test digits.
    # One epoch, not the product's five (~18 s, not ~90 s on the 2-core CI machine): the orderings asserted here are
    # wide (docs/metric_sanity.md: FD 23 against 856-1074) and hold for any classifier that reads digits
    model = load_or_train_classifier("mnist", str(real_data_root), str(tmp_path), epochs=1, progress=False)
    n = 1000
    train = _load_torchvision("mnist", str(real_data_root), False, True)[0][:n].float() / 127.5 - 1
    test = _load_torchvision("mnist", str(real_data_root), False, False)[0][:n].float() / 127.5 - 1
    cases = {**{name: x.repeat(4, 1, 1, 1)[:n] for name, x in digit_cases[1].items() if name != "real"}, "real": test}
    found = {name: class_metrics(model, x, train) for name, x in cases.items()}
    for metric, real_value in found["real"].items():
        for name in ("noise", "constant", "one-step"):
            worse = found[name][metric] < real_value if metric in HIGHER_IS_BETTER else found[name][metric] > real_value
            assert worse, (metric, name, found[name][metric], real_value)
    for metric in ("precision", "density"):
        assert found["real"][metric] > 0.5 > max(found[name][metric] for name in ("noise", "constant", "one-step"))


def shapes(n: int, seed: int) -> torch.Tensor:
    """uint8 (n, 3, 16, 16) 'real' RGB images: a bright 6 x 6 square of a random colour at a random place, on dark."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, 16, 16), 20, dtype=torch.uint8)
    for i in range(n):
        colour = torch.randint(100, 256, (3, 1, 1), generator=g, dtype=torch.uint8)
        top, left = torch.randint(0, 10, (2,), generator=g).tolist()
        images[i, :, top:top + 6, left:left + 6] = colour
    return images


@pytest.mark.slow  # Inception on 4 cases
def test_inception_metrics_put_noise_and_a_constant_below_held_out_images(tmp_path, monkeypatch) -> None:
    # folders and RGB sets: torch-fidelity's Inception with random weights (tests/test_inception.py's file) at
    # 75 px. IS is left out: random weights' logits give every image the same near-uniform softmax (IS 1.0)
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from gan_lab.evaluation.inception import InceptionMetrics, check_weights
    from test_inception import random_inception_weights

    monkeypatch.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)
    weights = random_inception_weights(tmp_path / "pt_inception-random.pth")
    n, g = 40, torch.Generator().manual_seed(2)
    metrics = InceptionMetrics(check_weights(str(weights)), shapes(n, seed=0), "shapes", "train", n, tmp_path,
                               cuda=False)
    found = {"noise": metrics(torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)),
             "constant": metrics(torch.full((n, 3, 16, 16), 128, dtype=torch.uint8)),
             "real": metrics(shapes(n, seed=1))}
    for name in ("noise", "constant"):
        assert found[name]["metrics/fid"] > 3 * found["real"]["metrics/fid"], name
        assert found[name]["metrics/kid"] > found["real"]["metrics/kid"] + 1e-4, name
        assert found[name]["metrics/precision"] < 0.5 < found["real"]["metrics/precision"], name
        assert found[name]["metrics/recall"] < 0.5 < found["real"]["metrics/recall"], name
