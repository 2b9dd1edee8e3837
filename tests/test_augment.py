"""DiffAugment: each op's mechanism, per-sample randomness, gradients, and data.augment from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from conftest import TINY, TINY_DCGAN, TINY_MLP, build_model, run_cli, user_error
from gan_lab import augment
from gan_lab.augment import DiffAugment, adjust_color, cut_out, random_cutout, random_translation, translate
from gan_lab.losses import grad_norms
from gan_lab.runs.checkpoint import load_checkpoint
from gan_lab.runs.rebuild import check_config


def test_translate_shifts_content_and_pads_with_zeros() -> None:
    x = torch.zeros(2, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0
    moved = translate(x, torch.tensor([2, -3]), torch.tensor([-1, 0]))
    assert moved[0, 0, 5, 3] == 1 and moved[1, 0, 0, 4] == 1 and moved.sum() == 2
    ones = translate(torch.ones(1, 2, 8, 8), torch.tensor([2]), torch.tensor([-3]))
    expected = torch.zeros(8, 8)
    expected[2:, :5] = 1  # the top 2 rows and the right 3 columns came from outside: zeros
    assert torch.equal(ones[0, 0], expected) and torch.equal(ones[0, 1], expected)


def test_random_translation_moves_by_up_to_an_eighth_of_the_size() -> None:
    torch.manual_seed(0)
    x = torch.zeros(2000, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0  # one marked pixel: where it lands is the shift
    moved = random_translation(x)
    where = moved.flatten(1).argmax(dim=1)
    dy, dx = where // 28 - 14, where % 28 - 14
    assert moved.flatten(1).sum(1).eq(1).all()  # shifts of at most 4 keep the centre pixel inside
    assert set(dy.tolist()) == set(dx.tolist()) == set(range(-4, 5))  # 1/8 of 28, rounded: every shift


def test_cut_out_zeroes_a_square_clipped_at_the_border() -> None:
    x = torch.ones(2, 3, 28, 28)
    cut = cut_out(x, torch.tensor([10, 0]), torch.tensor([20, 28]), (14, 14))
    hole = torch.zeros(28, 28, dtype=torch.bool)
    hole[3:17, 13:27] = True  # centred on (10, 20): rows 10 - 7 .. 10 + 6
    assert torch.equal(cut[0] == 0, hole.expand(3, 28, 28))
    assert int((cut[1, 0] == 0).sum()) == 7 * 7  # centred on a corner: a quarter of it is inside


def test_random_cutout_is_a_half_size_square_anywhere() -> None:
    torch.manual_seed(0)
    holes = random_cutout(torch.ones(2000, 1, 28, 28))[:, 0] == 0
    rows, cols = holes.any(dim=2), holes.any(dim=1)
    assert (holes.sum((1, 2)) == rows.sum(1) * cols.sum(1)).all()  # each hole is a rectangle
    assert rows.sum(1).max() == cols.sum(1).max() == 14  # at most half the size, 14 x 14
    inside = (rows.sum(1) == 14) & (cols.sum(1) == 14)
    assert 0.2 < inside.double().mean() < 0.6  # centres in [0, 28]: (28 - 13) / 29 per axis, squared: 0.27
    assert holes.any(dim=0).all()  # every pixel is cut out sometimes


def test_adjust_color_is_brightness_then_saturation_then_contrast() -> None:
    x = torch.tensor([[[[0.5]], [[-0.5]], [[0.3]]]]).expand(1, 3, 1, 2).clone()
    x[..., 1] = -0.2
    b, s, c = torch.tensor(0.1).view(1, 1, 1, 1), torch.tensor(1.5).view(1, 1, 1, 1), torch.tensor(0.7).view(1, 1, 1, 1)
    y = x + b
    y = (y - y.mean(1, keepdim=True)) * s + y.mean(1, keepdim=True)
    y = (y - y.mean()) * c + y.mean()
    assert_close(adjust_color(x, b, s, c), y)


def test_random_color_draws_the_papers_ranges_per_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    real_uniform = augment._uniform
    monkeypatch.setattr(augment, "_uniform", lambda x, low, high: drawn.append((low, high)) or real_uniform(x, low, high))
    torch.manual_seed(0)
    out = augment.random_color(torch.zeros(4000, 1, 4, 4))
    assert drawn == [(-0.5, 0.5), (0.0, 2.0), (0.5, 1.5)]  # brightness, saturation, contrast (DiffAugment)
    shift = out[:, 0, 0, 0]  # a flat grey image only changes brightness
    assert torch.equal(out, shift.view(-1, 1, 1, 1).expand_as(out))
    assert -0.5 <= shift.min() < -0.49 and 0.49 < shift.max() < 0.5
    factors = real_uniform(torch.zeros(4000, 1, 1, 1), 0.5, 1.5).flatten()
    assert 0.5 <= factors.min() < 0.51 and 1.49 < factors.max() < 1.5


def test_diffaugment_differs_per_sample_lets_gradients_through_and_is_off_in_eval() -> None:
    torch.manual_seed(0)
    module = DiffAugment(augment.parse_policy(["cutout", "translation", "color"], (1, 28, 28)))
    assert module.policy == ("color", "translation", "cutout")  # the paper's order
    x = torch.rand(1, 1, 28, 28).expand(8, 1, 28, 28).clone().requires_grad_(True)
    out = module(x)
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8  # the same image, 8 augmentations
    out.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    module.eval()
    assert torch.equal(module(x), x)


def test_augmented_critic_penalty_is_taken_at_the_unaugmented_input() -> None:
    torch.manual_seed(0)
    _, critic = build_model("dcgan", (1, 28, 28), z_dim=8, width=4, augment=["translation", "color", "cutout"])
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    norms = grad_norms(critic(x), x)
    assert norms.shape == (4,) and torch.isfinite(norms).all() and (norms > 0).all()
    assert not torch.equal(critic(x), critic(x))  # a fresh augmentation each forward


@pytest.mark.parametrize("overrides, fragment", [
    (["data.augment=[translation]", *TINY_MLP], "refused on data of shape (2,)"),
    (["data=swissroll", "data.augment=color", *TINY_MLP], "refused on data of shape (2,)"),
    (["data=mnist", "data.augment=[rotation]", *TINY_DCGAN], "'rotation', which is not a DiffAugment op"),
])
def test_bad_augment_settings_are_explained(overrides: list[str], fragment: str, tmp_path: Path,
                                            tiny_mnist_root: Path, capsys: pytest.CaptureFixture) -> None:
    data_root = f"data.root={tiny_mnist_root}" if "data=mnist" in overrides else "seed=0"
    assert fragment in user_error(capsys, "train", *TINY, *overrides, data_root, f"hydra.run.dir={tmp_path}")


def test_diffaugment_trains_on_tiny_mnist(tmp_path: Path, tiny_mnist_root: Path) -> None:
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", "data.download=false", *TINY, *TINY_DCGAN,
            "data.augment=[translation,color,cutout]", f"hydra.run.dir={tmp_path}")
    state = load_checkpoint(tmp_path)
    assert state["config"]["data"]["augment"] == ["translation", "color", "cutout"] and state["step"] == 4
    check_config(state["config"], tmp_path)  # `gan-lab eval` / `sample` accept the stored policy
