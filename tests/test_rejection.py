"""Discriminator Rejection Sampling: the acceptance rule in closed form, and sample/eval rejection=drs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from conftest import TINY, TINY_MLP, run_cli
from gan_lab.evaluation.rejection import RejectionSampler, drs_shifted_logit


def test_shifted_logit_is_the_papers_formula() -> None:
    d, d_max, gamma, eps = torch.tensor([-3.0, -0.5, 0.0, 0.7]), 0.7, 0.25, 1e-6
    expected = torch.tensor([(v - d_max) - math.log(1 - math.exp(v - d_max - eps)) - gamma for v in d.tolist()],
                            dtype=torch.float64)
    assert_close(drs_shifted_logit(d, d_max, gamma, eps), expected, rtol=1e-12, atol=0)
    # gamma = 0: sigmoid(F) = 1 / (1 + exp(-d) - exp(-eps)) ~ exp(D - D*_max), plain rejection sampling
    shifted = torch.tensor([-4.0, -1.0, -0.1], dtype=torch.float64)
    assert_close(torch.sigmoid(drs_shifted_logit(shifted, 0.0, 0.0, eps)),
                 1 / (1 + torch.exp(-shifted) - math.exp(-eps)), rtol=1e-12, atol=0)
    assert_close(torch.sigmoid(drs_shifted_logit(shifted, 0.0, 0.0, 1e-12)), torch.exp(shifted), rtol=1e-6, atol=0)


class Identity(nn.Module):
    """G(z) = z: p_G = N(0, 1) in one dimension."""

    z_dim, n_classes = 1, 0

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # a parameter: the device is read from it

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return z + self.anchor


class LogRatio(nn.Module):
    """The optimal BCE critic's logit for p_data = N(mu, 1) against p_G = N(0, 1): log p_data / p_G."""

    def __init__(self, mu: float) -> None:
        super().__init__()
        self.mu = mu

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return (self.mu * x - self.mu ** 2 / 2).squeeze(1)

    pointwise = forward  # one score per sample, as gan-lab's critics give it


def test_drs_with_the_optimal_critic_recovers_the_data_distribution() -> None:
    # gamma = 0 with the exact log-ratio: rejection sampling accepts with p_data / (M p_G), M = exp(D*_max),
    # so the accepted samples follow N(mu, 1) and the acceptance rate is E_pG[p_data / p_G] / M = exp(-D*_max)
    torch.manual_seed(0)
    sampler = RejectionSampler(Identity(), LogRatio(1.0), seed=0, gamma=0.0)
    x = sampler(torch.randn(4000, 1))
    assert x.shape == (4000, 1)
    assert_close(x.mean(), torch.tensor(1.0), rtol=0, atol=0.06)
    assert_close(x.std(), torch.tensor(1.0), rtol=0, atol=0.05)
    assert_close(torch.tensor(sampler.acceptance_rate), torch.exp(-sampler.d_max).float(), rtol=0.1, atol=0)
    # the default gamma, the 95% quantile of F, is below 0 here (F is mostly far below 0): DRS then accepts
    # more than exact rejection sampling, and corrects G's samples part of the way towards the data
    practical = RejectionSampler(Identity(), LogRatio(1.0), seed=0)
    y = practical(torch.randn(2000, 1))
    assert practical.gamma < 0 and practical.acceptance_rate > 2 * sampler.acceptance_rate
    assert 0.2 < float(y.mean()) < float(x.mean()) - 0.2


@pytest.fixture(scope="module")
def bce_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("drs")
    run_cli("train", *TINY, *TINY_MLP, "loss=nonsaturating", "threads=1", "metrics=false", f"hydra.run.dir={run}")
    return run


def test_sample_with_drs_gives_the_requested_count_and_reports_acceptance(bce_run: Path, capsys) -> None:
    capsys.readouterr()
    run_cli("sample", f"checkpoint={bce_run}", "n=50", "rejection=drs", f"out={bce_run / 'drs'}")
    err = " ".join(capsys.readouterr().err.split())
    assert "warning" not in err  # a BCE critic: its logit is a log-density ratio
    rate = float(err.split("rejection=drs acceptance rate ")[1].split()[0])
    assert 0 < rate <= 1
    (saved,) = (bce_run / "drs").glob("*_drs.pt")
    assert torch.load(saved).shape == (50, 2)


def test_eval_with_drs_writes_the_acceptance_rate_beside_the_metrics(bce_run: Path, capsys) -> None:
    run_cli("eval", f"checkpoint={bce_run}", "rejection=drs", f"out={bce_run / 'eval.json'}")
    result = json.loads((bce_run / "eval.json").read_text())
    assert result["rejection"] == "drs" and 0 < result["rejection/acceptance_rate"] <= 1
    assert "metrics/modes_covered" in result
    assert "rejection=drs acceptance rate" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, caveat", [
    (["loss=wgan_gp"], "Wasserstein, whose score is not a log-density ratio"),
    (["loss=nonsaturating", "model.pack=2"], "the critic scores 2 samples jointly"),
])
def test_drs_on_a_critic_that_is_no_log_ratio_warns(overrides: list[str], caveat: str, tmp_path: Path,
                                                    capsys) -> None:
    run_cli("train", *TINY, *TINY_MLP, *overrides, "threads=1", "metrics=false", f"hydra.run.dir={tmp_path}")
    capsys.readouterr()
    run_cli("sample", f"checkpoint={tmp_path}", "n=8", "rejection=drs", f"out={tmp_path / 'drs'}")
    err = " ".join(capsys.readouterr().err.split())
    assert "warning:" in err and caveat in err
    assert torch.load(next((tmp_path / "drs").glob("*_drs.pt"))).shape == (8, 2)


@pytest.mark.parametrize("args, fragment", [(["rejection=best"], "rejection=best is not known"),
                                            (["rejection=drs", "interpolate=true"], "cannot draw an interpolation")])
def test_bad_rejection_options_are_user_errors(args: list[str], fragment: str, bce_run: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_cli("sample", f"checkpoint={bce_run}", *args, f"out={bce_run / 'bad'}")
    assert exit_.value.code == 2 and fragment in " ".join(capsys.readouterr().err.split())


def test_the_caveat_reads_the_loss_s_declaration_never_its_stored_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from gan_lab import losses
    from gan_lab.evaluation.rejection import loss_caveat

    assert loss_caveat("gan_lab.losses.NonSaturating") is None  # declared exact
    assert "relativistic loss RaGAN" in loss_caveat("gan_lab.losses.RaGAN")  # declared approximate
    assert "LeastSquares, whose score is not" in loss_caveat("gan_lab.losses.LeastSquares")
    # a path conf/loss/ does not name is looked up, never imported: no log ratio, and said so
    assert "does not name" in loss_caveat("builtins.open") and "does not name" in loss_caveat(None)
    # the declaration decides, not the class's name: a Minimax declaring no log ratio gets the caveat
    monkeypatch.setattr(losses.Minimax, "log_ratio", "no")
    assert "Minimax, whose score is not" in loss_caveat("gan_lab.losses.Minimax")
