"""What each loss declares (gan_lab.losses.Loss: wasserstein_critic, log_ratio, separated_below, undecided_at), checked
against its own math for every loss conf/loss/ offers, and what the diagnosis does with it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gan_lab.losses import Loss, Wasserstein
from gan_lab.runs.rebuild import builders
from gan_lab.training.diagnosis import PERSIST, WARMUP, Diagnosis

CONF = Path(__file__).resolve().parents[1] / "conf" / "loss"
# every loss option, built as conf/loss/<option>.yaml names it (penalty weights do not change d_loss)
LOSSES = {f.stem: builders("loss")[OmegaConf.load(f)["_target_"]]() for f in sorted(CONF.glob("*.yaml"))}
# (real densities, fake densities) on a space of two points
TWO_POINTS = [((0.8, 0.2), (0.3, 0.7)), ((0.6, 0.4), (0.1, 0.9)), ((0.9, 0.1), (0.1, 0.9))]


def d(loss: Loss, real: list[float] | torch.Tensor, fake: list[float] | torch.Tensor) -> float:
    return float(loss.d_loss(torch.as_tensor(real, dtype=torch.float64), torch.as_tensor(fake, dtype=torch.float64)))


def test_every_loss_option_is_walked() -> None:
    assert len(LOSSES) == len(list(CONF.glob("*.yaml"))) >= 11 and {"wgan_gp", "nonsaturating"} <= set(LOSSES)


@pytest.mark.parametrize("option", LOSSES)
def test_wasserstein_like_iff_d_loss_is_the_mean_difference(option: str) -> None:
    # the mean difference: shifting every score by a constant leaves it, scaling the scores scales it
    loss = LOSSES[option]
    real = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=torch.float64)
    fake = torch.tensor([-0.4, 1.1, -2.5, 0.2], dtype=torch.float64)
    base = d(loss, real, fake)
    shifted = math.isclose(d(loss, real + 3.0, fake + 3.0), base, rel_tol=1e-9, abs_tol=1e-9)
    scaled = math.isclose(d(loss, 2.5 * real, 2.5 * fake), 2.5 * base, rel_tol=1e-9, abs_tol=1e-9)
    assert (shifted and scaled) == loss.wasserstein_critic
    if loss.wasserstein_critic:  # and it is exactly -(E C(x) - E C(G(z))), the estimate logged
        assert math.isclose(base, float(fake.mean() - real.mean()), rel_tol=1e-6)


def optimal_scores(loss: Loss, p: tuple[float, float], q: tuple[float, float]) -> torch.Tensor:
    """The critic's best scores (c1, c2) on two points with real densities p and fake densities q.

    The batches hold every (real point, fake point) pair in proportion p_i q_j, so both a pointwise loss
    and a relativistic one (pairs by index, or each side's mean) see exactly their expectation.
    """
    c = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    counts = [(i, j, round(100 * p[i] * q[j])) for i in range(2) for j in range(2)]
    index_real = torch.tensor([i for i, _, k in counts for _ in range(k)])
    index_fake = torch.tensor([j for _, j, k in counts for _ in range(k)])
    opt = torch.optim.LBFGS([c], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss.d_loss(c[index_real], c[index_fake])
        value.backward()
        return value
    opt.step(closure)
    return c.detach()


def separable(loss: Loss) -> bool:
    """Whether d_loss(r, f) = A(r) + B(f): a pointwise loss, each score judged alone."""
    return math.isclose(d(loss, [1.3], [-0.2]) + d(loss, [-0.7], [2.1]),
                        d(loss, [1.3], [2.1]) + d(loss, [-0.7], [-0.2]), rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("option", LOSSES)
def test_log_ratio_declaration_matches_the_optimal_critic(option: str) -> None:
    loss = LOSSES[option]
    if loss.wasserstein_critic:  # unbounded: no optimal critic to speak of, and no log ratio
        assert loss.log_ratio == "no"
        return
    found = []  # the optimal score difference c1 - c2 over the log-ratio difference, per two-point space
    exact = separable(loss)  # pointwise: then each score alone must be its point's log ratio
    for p, q in TWO_POINTS:
        c = optimal_scores(loss, p, q)
        ratio = torch.log(torch.tensor(p, dtype=torch.float64) / torch.tensor(q, dtype=torch.float64))
        if exact:  # up to one shift for every point (f-GAN KL's T* = 1 + log ratio): DRS's D - D*_max cancels it
            exact = torch.allclose(c - ratio, (c - ratio)[:1].expand(2), atol=1e-3)
        found.append(float(c[0] - c[1]) / float(ratio[0] - ratio[1]))
    # approximate: score differences within a factor 2 of the log-ratio differences (RSGAN's are exact, RaGAN's
    # 1.2-1.6x); a least-squares or hinge critic's fall to a third or less, its scores held near its targets
    approximate = not exact and all(0.5 < f < 2.0 for f in found)
    assert loss.log_ratio == ("exact" if exact else "approximate" if approximate else "no"), found


@pytest.mark.parametrize("option", LOSSES)
def test_the_separation_threshold_lies_between_perfect_separation_and_chance(option: str) -> None:
    loss = LOSSES[option]
    scores = [-20.0, -8.0, -4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 20.0]
    # perfect separation: the critic's best over any real and fake scores (LSGAN's loss rises past its
    # targets, so this is not always at +8 / -8); chance: its best when real and fake get the same score
    separated = min(d(loss, [r], [f]) for r in scores for f in scores)
    chance = min(d(loss, [s], [s]) for s in scores)
    if loss.separated_below is None:  # no floor: perfect separation drives the loss without bound
        assert separated < -10.0 < chance, (separated, chance)
        return
    assert separated < loss.separated_below < chance
    # the same fraction of the loss at chance as the measured 0.05 of the BCE losses, log 4 at chance (+-10%)
    assert 0.9 * 0.05 / math.log(4) < loss.separated_below / chance < 1.1 * 0.05 / math.log(4)


@pytest.mark.parametrize("option", LOSSES)
def test_the_undecided_score_splits_real_from_fake_at_the_optimum(option: str) -> None:
    # a pointwise critic's best score is above undecided_at exactly where real data is likelier than fake
    loss = LOSSES[option]
    if loss.wasserstein_critic or not separable(loss):  # one score alone means nothing: no r_t
        assert loss.undecided_at is None
        return
    assert loss.undecided_at is not None
    for p, q in [*TWO_POINTS, ((0.3, 0.7), (0.8, 0.2))]:
        c = optimal_scores(loss, p, q)
        assert [float(torch.sign(score - loss.undecided_at)) for score in c] == \
               [1.0 if p_i > q_i else -1.0 for p_i, q_i in zip(p, q)], (p, q, c)


class NoFloor(Loss):
    """A critic loss with no floor that is not Wasserstein-like: an f-divergence's, tending to minus the divergence."""

    separated_below = None


@pytest.mark.parametrize("loss", [NoFloor, Wasserstein])
def test_a_loss_without_a_floor_never_names_vanishing_gradients(loss: type[Loss]) -> None:
    diagnosis = Diagnosis(loss)
    said = []
    for i, step in enumerate(range(50, 50 * (WARMUP + 4 * PERSIST), 50)):
        collapsed = i > WARMUP  # a critic loss far below any floor and G's gradient gone: BCE would be named
        said += diagnosis.observe(step, {"loss/critic": -5.0 if collapsed else -1.0, "loss/generator": 1.0,
                                         "grad_norm/generator": 1e-6 if collapsed else 1.0})
    assert not [line for line in said if "vanishing" in line]
    assert diagnosis.scalars()["diagnosis/vanishing_gradients"] == 0.0


def test_the_same_stream_is_named_under_a_loss_with_a_floor() -> None:
    # the control of the test above: the rule does fire when the loss declares a floor it falls below
    class Floored(Loss):
        separated_below = 0.05

    diagnosis = Diagnosis(Floored)
    said = []
    for i, step in enumerate(range(50, 50 * (WARMUP + 4 * PERSIST), 50)):
        collapsed = i > WARMUP
        said += diagnosis.observe(step, {"loss/critic": 0.001 if collapsed else 1.2, "loss/generator": 1.0,
                                         "grad_norm/generator": 1e-6 if collapsed else 1.0})
    assert [line for line in said if line.startswith("vanishing generator gradients from step")]
