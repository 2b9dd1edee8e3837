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
    # noise has ~1% of its samples near some centre, a few on each mode: main counted all 8 modes covered
    assert noise["modes_covered"] == 0 < collapsed["modes_covered"] == 1 < real["modes_covered"]
    assert noise["high_quality"] < 0.05 < real["high_quality"]
    assert noise["reverse_kl"] > 10 * real["reverse_kl"] and collapsed["reverse_kl"] == pytest.approx(math.log(8))
    # quality alone cannot see collapse (each sample sits on a mode): read it beside modes_covered
    assert collapsed["high_quality"] > 0.98
