"""Each loss's math against values computed by hand, and the penalties' properties."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from conftest import build_model, critic_schedule
from gan_lab.errors import GanLabError
from gan_lab.losses import (Hinge, LeastSquares, Minimax, NonSaturating, RaGAN, RaLSGAN, RpGAN, RSGAN, Wasserstein,
                            clip_weights, gradient_penalty, interpolates, perturbed, squared_gradient)
from gan_lab.training.train import critic_step, generator_step

REAL = torch.tensor([2.0, -1.0])  # critic outputs (logits / scores) on two real samples
FAKE = torch.tensor([0.5, -3.0])  # ... and on two fakes


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def mean(values: list[float]) -> torch.Tensor:
    return torch.tensor(sum(values) / len(values))


def test_minimax_is_bce_and_saturating() -> None:
    # D: -mean(log D(x)) - mean(log(1 - D(G(z))))
    d = mean([-math.log(sig(2.0)), -math.log(sig(-1.0))]) + mean([-math.log(1 - sig(0.5)), -math.log(1 - sig(-3.0))])
    assert_close(Minimax().d_loss(REAL, FAKE), d)
    # G minimises mean(log(1 - D(G(z)))), the saturating form
    assert_close(Minimax().g_loss(None, FAKE), mean([math.log(1 - sig(0.5)), math.log(1 - sig(-3.0))]))


def test_minimax_generator_gradient_vanishes_when_critic_rejects_fakes() -> None:
    logits = torch.tensor([-10.0, 0.0], requires_grad=True)
    Minimax().g_loss(None, logits).backward()
    mm_grad = logits.grad.clone()
    logits.grad = None
    NonSaturating().g_loss(None, logits).backward()
    # d/dl of -softplus(l)/2 is -sigmoid(l)/2: ~0 at l = -10; the NS loss keeps -(1 - sigmoid(l))/2
    assert_close(mm_grad, torch.tensor([-sig(-10.0) / 2, -0.25]))
    assert_close(logits.grad, torch.tensor([-(1 - sig(-10.0)) / 2, -0.25]))


def test_nonsaturating() -> None:
    assert_close(NonSaturating().d_loss(REAL, FAKE), Minimax().d_loss(REAL, FAKE))
    assert_close(NonSaturating().g_loss(None, FAKE), mean([-math.log(sig(0.5)), -math.log(sig(-3.0))]))


def test_wasserstein() -> None:
    # critic: -(E C(x) - E C(G(z))) = -(0.5 - (-1.25)) ; generator: -E C(G(z))
    assert_close(Wasserstein().d_loss(REAL, FAKE), torch.tensor(-1.75))
    assert_close(Wasserstein().g_loss(None, FAKE), torch.tensor(1.25))


def test_lsgan() -> None:
    d = 0.5 * mean([(2.0 - 1) ** 2, (-1.0 - 1) ** 2]) + 0.5 * mean([0.5**2, 3.0**2])
    assert_close(LeastSquares().d_loss(REAL, FAKE), d)
    assert_close(LeastSquares().g_loss(None, FAKE), 0.5 * mean([(0.5 - 1) ** 2, (-3.0 - 1) ** 2]))


def test_hinge() -> None:
    # relu(1 - [2, -1]) = [0, 2]; relu(1 + [0.5, -3]) = [1.5, 0]
    assert_close(Hinge().d_loss(REAL, FAKE), torch.tensor(1.0 + 0.75))
    assert_close(Hinge().g_loss(None, FAKE), torch.tensor(1.25))


def test_rsgan_and_rpgan_pair_real_and_fake_by_index() -> None:
    # d = C(x_i) - C(G(z_i)) = [1.5, 2]: critic -E log sigmoid(d); generator -E log sigmoid(-d)
    for loss in (RSGAN(), RpGAN()):
        assert_close(loss.d_loss(REAL, FAKE), mean([-math.log(sig(1.5)), -math.log(sig(2.0))]))
        assert_close(loss.g_loss(REAL, FAKE), mean([-math.log(sig(-1.5)), -math.log(sig(-2.0))]))
    assert RSGAN.needs_real_in_g and RpGAN.needs_real_in_g and not Wasserstein.needs_real_in_g


def test_ragan_compares_with_the_other_side_s_mean() -> None:
    # E C(x) = 0.5, E C(G(z)) = -1.25
    d = (mean([-math.log(sig(2.0 + 1.25)), -math.log(sig(-1.0 + 1.25))])
         + mean([-math.log(1 - sig(0.5 - 0.5)), -math.log(1 - sig(-3.0 - 0.5))]))
    g = (mean([-math.log(sig(0.5 - 0.5)), -math.log(sig(-3.0 - 0.5))])
         + mean([-math.log(1 - sig(2.0 + 1.25)), -math.log(1 - sig(-1.0 + 1.25))]))
    assert_close(RaGAN().d_loss(REAL, FAKE), d)
    assert_close(RaGAN().g_loss(REAL, FAKE), g)
    assert RaGAN.needs_real_in_g


def test_ralsgan_squares_the_distance_to_the_other_side_s_mean() -> None:
    # E C(x) = 0.5, E C(G(z)) = -1.25
    d = mean([(2.0 + 1.25 - 1) ** 2, (-1.0 + 1.25 - 1) ** 2]) + mean([(0.5 - 0.5 + 1) ** 2, (-3.0 - 0.5 + 1) ** 2])
    g = mean([(0.5 - 0.5 - 1) ** 2, (-3.0 - 0.5 - 1) ** 2]) + mean([(2.0 + 1.25 + 1) ** 2, (-1.0 + 1.25 + 1) ** 2])
    assert_close(RaLSGAN().d_loss(REAL, FAKE), d)
    assert_close(RaLSGAN().g_loss(REAL, FAKE), g)
    assert RaLSGAN.needs_real_in_g


class Linear(nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return x.flatten(1) @ self.w


def penalty_at(critic: nn.Module, points: torch.Tensor, value=gradient_penalty) -> torch.Tensor:
    """A penalty the way the loop calls it: the critic's scores at leaves that require grad, and the leaves."""
    points = points.detach().requires_grad_(True)
    return value(critic(points), points)


@pytest.mark.parametrize("w", [[3.0, 4.0], [0.3, 0.4], [0.6, 0.8]])
def test_gradient_penalty_of_linear_critic(w: list[float]) -> None:
    # grad_x (w . x) = w everywhere, so the penalty is (||w|| - 1)^2 wherever it is taken
    critic = Linear(torch.tensor(w))
    gp = penalty_at(critic, interpolates(torch.randn(16, 2), torch.randn(16, 2)))
    assert_close(gp, (torch.tensor(w).norm() - 1) ** 2)


def test_gradient_penalty_reaches_critic_parameters() -> None:
    critic = Linear(torch.tensor([3.0, 4.0]))
    penalty_at(critic, torch.randn(8, 2)).backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 2 * 4 * [0.6, 0.8]
    assert_close(critic.w.grad, torch.tensor([4.8, 6.4]))


def test_gradient_penalty_norm_over_all_non_batch_dims() -> None:
    critic = Linear(torch.full((12,), 0.5))  # acts on images flattened from (3, 2, 2): ||grad|| = sqrt(12 / 4)
    assert_close(penalty_at(critic, torch.randn(4, 3, 2, 2)), torch.tensor((math.sqrt(3) - 1) ** 2))


def test_interpolates_draw_one_eps_per_sample() -> None:
    real, fake = torch.zeros(1000, 3, 2, 2), torch.ones(1000, 3, 2, 2)
    x_hat = interpolates(real, fake)  # = 1 - eps, constant within each sample
    per_sample = x_hat.flatten(1)
    assert_close(per_sample.min(1).values, per_sample.max(1).values)
    eps = 1 - per_sample[:, 0]
    assert eps.min() >= 0 and eps.max() <= 1
    assert eps.std() > 0.25 and len(eps.unique()) > 990  # U[0,1] has std 0.289; all distinct


def test_squared_gradient_of_linear_critic() -> None:
    critic = Linear(torch.tensor([3.0, 4.0]))
    assert_close(penalty_at(critic, torch.randn(8, 2), squared_gradient), torch.tensor(25.0))


def test_squared_gradient_of_a_quadratic_critic() -> None:
    # C(x) = ||x||^2 / 2 has grad x: E||grad C||^2 over the points [3, 4] and [0, 1] is (25 + 1) / 2
    points = torch.tensor([[3.0, 4.0], [0.0, 1.0]], requires_grad=True)
    assert_close(squared_gradient(0.5 * points.pow(2).sum(1), points), torch.tensor(13.0))


def test_dragan_points_lie_between_x_and_its_noisy_copy() -> None:
    torch.manual_seed(0)
    x = torch.randn(4096, 2)
    offset = (perturbed(x) - x) / (0.5 * x.std())  # = eps_i * u_ij with eps_i, u_ij ~ U[0, 1]
    assert offset.min() >= 0 and offset.max() <= 1
    assert_close(offset.mean(), torch.tensor(0.25), atol=0.01, rtol=0)  # E[eps] E[u] = 1/4


def test_weight_clipping_after_a_critic_step() -> None:
    torch.manual_seed(0)
    G, critic = build_model("mlp", (2,), z_dim=2, hidden=16, depth=1)
    opt = torch.optim.RMSprop(critic.parameters(), lr=0.5)  # a large step pushes weights out of the box
    critic_step(G, critic, Wasserstein(), opt, torch.randn(32, 2), torch.randn(32, 2), clip=0.01)
    weights = torch.cat([p.detach().flatten() for p in critic.parameters()])
    assert weights.abs().max() <= 0.01
    assert (weights.abs() == 0.01).any()  # the clamp did bite


def test_clip_weights_in_place() -> None:
    layer = nn.Linear(4, 4)
    nn.init.constant_(layer.weight, 3.0)
    clip_weights(layer, 0.5)
    assert_close(layer.weight, torch.full((4, 4), 0.5))


@pytest.mark.parametrize("kwargs, key", [({"n_critic": 0}, "loss.n_critic"), ({"lambda_gp": -1.0}, "loss.lambda_gp"),
                                         ({"lambda_r1": -0.1}, "loss.lambda_r1"), ({"clip": -0.01}, "loss.clip"),
                                         ({"n_critic": 2.5}, "loss.n_critic"), ({"lambda_r2": -1.0}, "loss.lambda_r2"),
                                         ({"lambda_dragan": -1.0}, "loss.lambda_dragan"),
                                         ({"reg_every": 0}, "loss.reg_every"), ({"reg_every": 1.5}, "loss.reg_every")])
def test_loss_settings_out_of_range(kwargs: dict, key: str) -> None:
    # the penalties build the loss, the other knobs of the loss node the critic's schedule
    with pytest.raises(GanLabError, match=key):
        if key.removeprefix("loss.").startswith("lambda_"):
            Wasserstein(**kwargs)
        else:
            critic_schedule(**kwargs)


def test_critic_step_penalty_equals_the_pure_function() -> None:
    # the critic step adds the penalty gradient_penalty() computes on the same interpolates
    torch.manual_seed(0)
    G, critic = build_model("mlp", (2,), z_dim=2, hidden=16, depth=2)
    x, z = torch.randn(32, 2), torch.randn(32, 2)
    opt = torch.optim.SGD(critic.parameters(), lr=0.0)  # lr 0: the step leaves the critic as it was
    state = torch.get_rng_state()
    stats = critic_step(G, critic, Wasserstein(lambda_gp=10.0), opt, x, z)
    torch.set_rng_state(state)  # the same eps for the pure function
    gp = penalty_at(critic, interpolates(x, G(z).detach()))
    assert_close(stats["loss/gradient_penalty"], 10.0 * gp.detach())
    with torch.no_grad():
        assert_close(stats["loss/critic"], critic(G(z)).mean() - critic(x).mean())


def test_critic_step_logs_every_penalty_in_closed_form() -> None:
    # a linear critic has ||grad C|| = ||w|| = 5 at every point: each penalty is known exactly
    torch.manual_seed(0)
    G, _ = build_model("mlp", (2,), z_dim=2, hidden=16, depth=2)
    critic = Linear(torch.tensor([3.0, 4.0]))
    loss = Wasserstein(lambda_gp=2.0, lambda_r1=4.0, lambda_r2=6.0, lambda_dragan=8.0)
    stats = critic_step(G, critic, loss, torch.optim.SGD(critic.parameters(), lr=0.0), torch.randn(8, 2),
                        torch.randn(8, 2))
    expected = {"gradient_penalty": 2.0 * 16, "r1_penalty": 4.0 / 2 * 25, "r2_penalty": 6.0 / 2 * 25,
                "dragan_penalty": 8.0 * 16}
    for tag, value in expected.items():
        assert_close(stats[f"loss/{tag}"], torch.tensor(value))


@pytest.mark.parametrize("regularise", [True, False])
def test_lazy_regularisation_scales_the_penalty_by_reg_every(regularise: bool) -> None:
    # linear critic, W-loss + R1 with gamma: grad_w = E G(z) - E x + reg_every * gamma * w on a regularised step
    torch.manual_seed(0)
    G, _ = build_model("mlp", (2,), z_dim=2, hidden=16, depth=2)
    w = torch.tensor([3.0, 4.0])
    critic = Linear(w.clone())
    x, z = torch.randn(8, 2), torch.randn(8, 2)
    stats = critic_step(G, critic, Wasserstein(lambda_r1=0.5), torch.optim.SGD(critic.parameters(), lr=0.1),
                        x, z, penalty_scale=4 if regularise else 0)  # reg_every=4
    with torch.no_grad():
        grad = G(z).mean(0) - x.mean(0) + (4 * 0.5 * w if regularise else 0)
    assert_close(critic.w.detach(), w - 0.1 * grad)
    assert ("loss/r1_penalty" in stats) == regularise
    if regularise:
        assert_close(stats["loss/r1_penalty"], torch.tensor(0.25 * 25))  # logged without the x reg_every


def test_generator_step_gives_a_relativistic_loss_the_real_scores() -> None:
    torch.manual_seed(0)
    G, critic = build_model("mlp", (2,), z_dim=2, hidden=16, depth=2)
    x, z = torch.randn(8, 2), torch.randn(8, 2)
    with torch.no_grad():
        expected = torch.nn.functional.softplus(-(critic(G(z)) - critic(x))).mean()
    stats = generator_step(G, critic, RpGAN(), torch.optim.SGD(G.parameters(), lr=0.0), z, x=x)
    assert_close(stats["loss/generator"], expected)
    assert all(p.grad is None for p in critic.parameters())  # the generator step leaves the critic alone
