"""Known-answer tests for gan_lab.evaluation.metrics (mode coverage, histogram KL, Fréchet distance, k-NN metrics)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

import gan_lab.evaluation.metrics
from gan_lab.data import grid25_centers, ring8_centers
from gan_lab.evaluation.metrics import (density_coverage, frechet_distance, histogram_kl, knn_metrics, mixture_metrics,
                                        precision_recall)

# For an isotropic 2-D Gaussian the distance to its mean is Rayleigh distributed:
# P(r < 3 sigma) = 1 - exp(-3^2 / 2). This is the high-quality fraction of perfect samples.
RAYLEIGH_3_SIGMA = 1 - math.exp(-4.5)  # 0.98889


def mixture_samples(centers: torch.Tensor, sigma: float, n_per_mode: int, seed: int) -> torch.Tensor:
    """n_per_mode samples from N(c, sigma^2 I) at every centre c (stratified, so counts are equal)."""
    generator = torch.Generator().manual_seed(seed)
    means = centers.repeat_interleave(n_per_mode, dim=0)
    return means + sigma * torch.randn(means.shape, generator=generator, dtype=torch.float64)


# ---- centres ----------------------------------------------------------------------------------

def test_ring8_centers() -> None:
    centers = ring8_centers(radius=2.0)
    assert centers.shape == (8, 2)
    assert_close(centers.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    assert_close(centers[0], torch.tensor([2.0, 0.0], dtype=torch.float64))
    assert_close(centers[2], torch.tensor([0.0, 2.0], dtype=torch.float64), atol=1e-12, rtol=0)
    # Neighbours are 2 r sin(pi/8) apart, all the way round.
    gaps = (centers - centers.roll(1, dims=0)).norm(dim=1)
    assert_close(gaps, torch.full((8,), 4 * math.sin(math.pi / 8), dtype=torch.float64))


def test_grid25_centers() -> None:
    centers = grid25_centers()
    assert centers.shape == (25, 2)
    expected = {(float(i), float(j)) for i in range(-4, 5, 2) for j in range(-4, 5, 2)}
    assert {tuple(row) for row in centers.tolist()} == expected


# ---- mode coverage ----------------------------------------------------------------------------

@pytest.mark.parametrize(("centers", "sigma", "n_per_mode"), [
    (ring8_centers(), 0.01, 1000),
    (grid25_centers(), 0.05, 400),
], ids=["ring8", "grid25"])
def test_perfect_samples_cover_every_mode(centers: torch.Tensor, sigma: float, n_per_mode: int) -> None:
    samples = mixture_samples(centers, sigma, n_per_mode, seed=0).float()  # as a generator gives them
    metrics = mixture_metrics(samples, centers, sigma)
    n_modes = centers.shape[0]
    assert metrics["n_modes"] == n_modes
    assert metrics["modes_covered"] == n_modes
    # Two-sided: about 4 binomial standard deviations around the Rayleigh value (8000-10000 draws).
    assert 0.98 < metrics["high_quality"] <= 1.0
    assert_close(metrics["high_quality"], RAYLEIGH_3_SIGMA, atol=5e-3, rtol=0)
    assert_close(metrics["reverse_kl"], 0.0, atol=1e-3, rtol=0)
    assert metrics["reverse_kl"] >= 0.0


@pytest.mark.parametrize(("centers", "sigma"), [(ring8_centers(), 0.01), (grid25_centers(), 0.05)],
                         ids=["ring8", "grid25"])
def test_one_mode_only(centers: torch.Tensor, sigma: float) -> None:
    samples = mixture_samples(centers[3:4], sigma, 500, seed=1)
    metrics = mixture_metrics(samples, centers, sigma)
    assert metrics["modes_covered"] == 1
    # p = one-hot: KL(p || uniform_K) = 1 * log(1 / (1/K)) = log K.
    assert_close(metrics["reverse_kl"], math.log(centers.shape[0]))


def test_three_of_eight_modes_equally() -> None:
    centers = ring8_centers()
    samples = centers[[0, 2, 5]].repeat_interleave(10, dim=0)  # exactly on the centres
    metrics = mixture_metrics(samples, centers, sigma=0.01)
    assert metrics["modes_covered"] == 3
    assert metrics["high_quality"] == 1.0
    # p uniform over 3 modes: KL = sum_3 (1/3) log((1/3) / (1/8)) = log(8/3).
    assert_close(metrics["reverse_kl"], math.log(8 / 3))


def test_far_points_are_not_high_quality() -> None:
    centers = grid25_centers()
    # Cell centres (odd, odd) are sqrt(2) from their four nearest modes, far beyond 3 * 0.05.
    far = centers[:4] + 1.0
    metrics = mixture_metrics(far, centers, sigma=0.05)
    assert metrics["high_quality"] == 0.0
    assert metrics["modes_covered"] == 0
    assert metrics["reverse_kl"] == math.inf  # documented: histogram of no samples is undefined


def test_low_quality_samples_do_not_enter_the_histogram() -> None:
    centers = ring8_centers()
    good = centers.repeat_interleave(5, dim=0)  # 40 samples, 5 on each mode
    bad = torch.zeros(40, 2, dtype=torch.float64)  # the ring's centre: distance 1 from every mode
    metrics = mixture_metrics(torch.cat([good, bad]), centers, sigma=0.01)
    assert metrics["modes_covered"] == 8
    assert_close(metrics["high_quality"], 0.5)
    assert_close(metrics["reverse_kl"], 0.0, atol=1e-12, rtol=0)  # PacGAN convention: HQ only


def test_three_sigma_threshold_is_strict_and_euclidean() -> None:
    centers = ring8_centers()
    sigma = 0.01
    offsets = torch.tensor([[2.9 * sigma, 0.0], [0.0, 2.9 * sigma], [3.1 * sigma, 0.0], [0.0, -3.1 * sigma]],
                           dtype=torch.float64)
    samples = centers[[0, 0, 4, 4]] + offsets
    metrics = mixture_metrics(samples, centers, sigma)
    assert metrics["high_quality"] == 0.5
    assert metrics["modes_covered"] == 1  # only mode 0; mode 4's samples are beyond 3 sigma
    # Exactly at 3 sigma (0.75 = 3 * 0.25, both exact in binary) is not high quality: < is strict.
    on_boundary = torch.tensor([[0.75, 0.0], [0.0, 0.0]], dtype=torch.float64)
    assert mixture_metrics(on_boundary, grid25_centers(), sigma=0.25)["high_quality"] == 0.5


# ---- histogram KL -----------------------------------------------------------------------------

@pytest.mark.parametrize(("counts", "q", "expected"), [
    ([5, 5], [0.5, 0.5], 0.0),
    ([1, 0], [0.5, 0.5], math.log(2)),  # 1 log(1/0.5) + 0 log 0
    ([3, 1], [0.5, 0.5], 0.75 * math.log(1.5) + 0.25 * math.log(0.5)),
    ([1, 1, 0], [0.25, 0.25, 0.5], math.log(2)),  # 2 * 0.5 log(0.5/0.25)
    ([2, 0], [1.0, 0.0], 0.0),  # 0 log(0/0) = 0 where both are empty
    ([1, 1], [1.0, 0.0], math.inf),  # p > 0 where q = 0
], ids=["equal", "one-hot", "skewed", "zero-bin", "both-empty", "q-zero"])
def test_histogram_kl_exact(counts: list[int], q: list[float], expected: float) -> None:
    value = histogram_kl(torch.tensor(counts), torch.tensor(q, dtype=torch.float64))
    if math.isinf(expected):
        assert value == math.inf
    else:
        assert_close(value, expected, atol=1e-12, rtol=1e-12)


def test_histogram_kl_rejects_empty_histogram() -> None:
    with pytest.raises(ValueError, match="sums to 0"):
        histogram_kl(torch.zeros(3), torch.full((3,), 1 / 3))


# ---- Fréchet distance -------------------------------------------------------------------------

def random_features(n: int, dim: int, seed: int) -> torch.Tensor:
    """Correlated Gaussian features with a non-zero mean (a full, non-diagonal covariance)."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    offset = torch.randn(dim, generator=generator, dtype=torch.float64)
    return torch.randn(n, dim, generator=generator, dtype=torch.float64) @ mixing + offset


def exact_moments(n: int, mean: torch.Tensor, std: torch.Tensor, seed: int) -> torch.Tensor:
    """n points whose sample mean is exactly `mean` and sample covariance exactly diag(std^2)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, mean.numel(), generator=generator, dtype=torch.float64)
    z = z - z.mean(dim=0)
    # Whiten: with unbiased covariance C = L L^T, z L^{-T} has covariance exactly I.
    cholesky = torch.linalg.cholesky(z.T @ z / (n - 1))
    white = torch.linalg.solve_triangular(cholesky, z.T, upper=False).T
    return white * std + mean


def test_frechet_of_a_set_with_itself_is_zero() -> None:
    features = random_features(500, 16, seed=2)
    scale = features.var(dim=0).sum().item()  # Tr(S), the size of each trace term
    assert_close(frechet_distance(features, features), 0.0, atol=1e-9 * scale, rtol=0)
    assert_close(frechet_distance(features.float(), features.float()), 0.0, atol=1e-6 * scale, rtol=0)


def test_frechet_of_a_mean_shift_is_the_squared_shift() -> None:
    features = random_features(400, 8, seed=3)
    shift = torch.linspace(-1.0, 2.0, 8, dtype=torch.float64)
    expected = shift.square().sum().item()
    assert_close(frechet_distance(features, features + shift), expected, atol=1e-9, rtol=1e-9)


def test_frechet_grows_monotonically_with_the_shift() -> None:
    features = random_features(300, 4, seed=4)
    direction = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    distances = [frechet_distance(features, features + t * direction) for t in (0.0, 0.1, 0.5, 1.0, 3.0)]
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_frechet_closed_form_for_diagonal_gaussians() -> None:
    # For diagonal covariances, Tr((S_a S_b)^{1/2}) = sum_i s_a,i s_b,i, so
    # FD = ||m_a - m_b||^2 + sum_i (s_a,i - s_b,i)^2.
    mean_a = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    mean_b = torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64)
    std_a = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    std_b = torch.tensor([3.0, 0.5, 0.5], dtype=torch.float64)
    a = exact_moments(200, mean_a, std_a, seed=5)
    b = exact_moments(300, mean_b, std_b, seed=6)
    expected = ((mean_a - mean_b).square().sum() + (std_a - std_b).square().sum()).item()  # 0.25+4 + 4+2.25
    assert_close(frechet_distance(a, b), expected, atol=1e-9, rtol=1e-9)


def test_frechet_matches_a_different_route_and_is_symmetric() -> None:
    a = random_features(600, 6, seed=7)
    b = random_features(500, 6, seed=8) * 0.7
    # Reference route: eigenvalues of the non-symmetric S_a S_b by the general eig solver.
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eigenvalues = torch.linalg.eigvals(cov_a @ cov_b)
    trace_sqrt = eigenvalues.sqrt().sum().real
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    expected = (mean_term + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt).item()
    assert_close(frechet_distance(a, b), expected, atol=1e-8, rtol=1e-8)
    assert_close(frechet_distance(b, a), expected, atol=1e-8, rtol=1e-8)


def test_frechet_with_rank_deficient_covariances() -> None:
    # Fewer samples than dimensions: singular covariances, no eps needed, result finite.
    a = random_features(10, 32, seed=9)
    b = random_features(12, 32, seed=10)
    scale = a.var(dim=0).sum().item()
    assert_close(frechet_distance(a, a), 0.0, atol=1e-9 * scale, rtol=0)
    assert math.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 0
    # A tiny mean shift on singular covariances: the trace term must cancel to ~eps * scale, or
    # it swamps ||shift||^2 = 32e-6 (sqrt(eigvalsh(X X^T)) got this 84% wrong).
    assert_close(frechet_distance(a, a + 1e-3), 32e-6, atol=1e-9, rtol=1e-4)


def test_frechet_rejects_mismatched_dimensions() -> None:
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        frechet_distance(torch.zeros(4, 3), torch.zeros(4, 2))


# ---- improved precision / recall, density / coverage -----------------------------------------

def points(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).unsqueeze(1)


def test_knn_metrics_on_a_hand_made_line() -> None:
    # k = 1. Real {0, 1, 3, 7}: 1-NN radii 1, 1, 2, 4. Fake {0.5, 1.5, 12, 13}: radii 1, 1, 1, 1.
    real, fake = points(0, 1, 3, 7), points(0.5, 1.5, 12, 13)
    # precision: 0.5 (ball of 0), 1.5 (ball of 1) in; 12 and 13 are 5 and 6 from 7 (radius 4): out
    # recall: 0 and 1 lie within 1 of 0.5; 3 is 1.5 from 1.5 and 7 is 5 from 12: out
    assert precision_recall(real, fake, k=1) == {"precision": 0.5, "recall": 0.5}
    # density: 0.5 lies in the balls of 0 and 1, 1.5 in those of 1 and 3: (2 + 2 + 0 + 0) / (1 * 4)
    # coverage: the balls of 0, 1 and 3 hold a fake, that of 7 none: 3/4
    assert density_coverage(real, fake, k=1) == {"density": 1.0, "coverage": 0.75}
    # k = 2. Real radii (2nd NN): 3, 2, 3, 6; fake radii: 11.5, 10.5, 10.5, 11.5
    # precision: 0.5, 1.5 in; 12 is 5 <= 6 from 7: in; 13 is 6 <= 6 from 7: in (the boundary counts)
    # recall: every real point lies within 10.5 of 1.5
    assert precision_recall(real, fake, k=2) == {"precision": 1.0, "recall": 1.0}
    # density: 0.5 in the balls of 0, 1, 3; 1.5 in those of 0, 1, 3 and 7 (5.5 <= 6); 12 and 13 in
    # that of 7: 9 / (2 * 4); coverage: 4/4
    assert density_coverage(real, fake, k=2) == {"density": 1.125, "coverage": 1.0}


def test_knn_balls_are_euclidean_and_closed() -> None:
    real = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)  # 1-NN radius 5 each
    fake = torch.tensor([[6.0, 8.0], [6.0, 8.01], [3.0, -1.0], [0.0, 0.0]], dtype=torch.float64)
    # (6, 8) is exactly 5 from (3, 4); (6, 8.01) just outside; (3, -1) is 5 from (3, 4): in
    assert precision_recall(real, fake, k=1)["precision"] == 0.75
    assert knn_metrics(real, fake, k_pr=1, k_dc=1) == {**precision_recall(real, fake, k=1),
                                                       **density_coverage(real, fake, k=1)}


def test_real_against_itself_and_against_far_away_fakes() -> None:
    real = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    same = knn_metrics(real, real.clone())
    # precision = recall = coverage = 1; density: each point sits in its own ball and in those of
    # the k reals it is a neighbour of: sum over balls of (k + 1) points / (k M) = (k + 1) / k
    assert same == {"precision": 1.0, "recall": 1.0, "density": 6 / 5, "coverage": 1.0}
    far = knn_metrics(real, real + 100.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_knn_metrics_do_not_depend_on_the_chunk_size(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(200, 8, generator=g), torch.randn(150, 8, generator=g) * 1.3 + 0.2
    whole = knn_metrics(real, fake)
    monkeypatch.setattr(gan_lab.evaluation.metrics, "CHUNK", 7)
    assert knn_metrics(real, fake) == whole
    assert 0 < whole["precision"] < 1 and 0 < whole["recall"] < 1 and 0 < whole["coverage"] < 1


def test_knn_metrics_refuse_too_few_points() -> None:
    with pytest.raises(ValueError, match="k=3 needs"):
        precision_recall(torch.zeros(3, 2), torch.zeros(10, 2))
    with pytest.raises(ValueError, match="need features"):
        density_coverage(torch.zeros(10, 2), torch.zeros(10, 3))
