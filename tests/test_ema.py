"""The generator EMA: the average itself, its ramp-up, checkpoints and resume, and sample/eval using it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from conftest import TINY, TINY_MLP, run_cli, straight_and_resumed
from gan_lab.losses import Wasserstein
from gan_lab.runs.checkpoint import load_checkpoint
from gan_lab.training.ema import GeneratorEMA, ema_beta
from test_train import read_events, toy_iteration


def test_ema_equals_the_hand_computed_average_over_three_steps() -> None:
    torch.manual_seed(0)
    G = torch.nn.Linear(3, 2)
    G.register_buffer("count", torch.zeros(()))
    batch, kimg, rampup = 16, 0.1, 0.5
    ema = GeneratorEMA(G, kimg, rampup, batch)
    history = []
    for step in (1, 2, 3):
        with torch.no_grad():  # a stand-in for the generator step: new weights and buffers
            G.weight.add_(torch.randn_like(G.weight))
            G.bias.add_(1.0)
            G.count.fill_(step)
        history.append(G.weight.detach().clone())
        ema(step)
    # closed form: half-life min(100, 0.5 * 16 * (s - 1)) images -> beta_1 = 0, beta_2 = 0.5 ** 2, beta_3 = 0.5
    b2, b3 = 0.5 ** (16 / 8), 0.5 ** (16 / 16)
    expected = ((history[0] * b2 + (1 - b2) * history[1]) * b3 + (1 - b3) * history[2])
    assert_close(ema.G_ema.weight, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(ema.G_ema.count, torch.tensor(3.0))  # buffers are copied, not averaged
    assert not ema.G_ema.weight.requires_grad


def test_rampup_makes_the_first_steps_decay_smaller() -> None:
    steps = torch.arange(1, 4001, dtype=torch.float64)
    ramped, plain = ema_beta(steps, 64, 10_000, 0.05), ema_beta(steps, 64, 10_000, 0.0)
    assert ramped[0] == 0  # G_ema starts as G
    assert_close(ramped[1], torch.tensor(0.5 ** (1 / 0.05), dtype=torch.float64), rtol=1e-12, atol=0)
    assert (ramped[:100] < plain[:100]).all() and (torch.diff(ramped) >= 0).all()
    # past the ramp-up (0.05 * 64 * (s - 1) >= 10,000 images) the half-life is ema_kimg's
    assert_close(ramped[-1], torch.tensor(0.5 ** (64 / 10_000), dtype=torch.float64), rtol=1e-12, atol=0)
    assert_close(plain, torch.full_like(plain, 0.5 ** (64 / 10_000)), rtol=1e-12, atol=0)


def test_ema_draws_no_random_numbers_and_leaves_training_unchanged() -> None:
    loss = Wasserstein(lambda_gp=1.0)
    plain, averaged = toy_iteration(loss, n_critic=2), toy_iteration(loss, n_critic=2)
    averaged.ema = GeneratorEMA(averaged.G, 0.01, 0.05, averaged.batch_size)
    torch.manual_seed(1)
    for step in (1, 2, 3):
        plain(step)
    rng = torch.get_rng_state()
    torch.manual_seed(1)
    for step in (1, 2, 3):
        averaged(step)
    assert torch.equal(rng, torch.get_rng_state())
    for a, b in zip(plain.G.parameters(), averaged.G.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(averaged.ema.G_ema.net[0].weight, averaged.G.net[0].weight)  # it did average


@pytest.mark.slow
def test_ema_run_logs_both_metrics_and_resumes_exactly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    common = ["train.batch_size=16", "train.log_every=3", "train.sample_every=3", "train.checkpoint_every=3",
              "train.eval_every=3", "train.ema_kimg=0.05", "device=cpu", "threads=1", *TINY_MLP]
    straight, resumed = straight_and_resumed(tmp_path, common)
    assert "metrics/* use the averaged generator" in capsys.readouterr().err
    for net in ("G", "G_ema", "critic"):
        for key, value in straight[net].items():
            assert_close(resumed[net][key], value, rtol=0, atol=0)
    assert not torch.equal(straight["G_ema"]["net.0.weight"], straight["G"]["net.0.weight"])
    scalars = set(read_events(tmp_path / "straight").Tags()["scalars"])
    assert {"metrics/modes_covered", "metrics_raw/modes_covered"} <= scalars

    # sample and eval rebuild G_ema and say so
    capsys.readouterr()
    run_cli("eval", f"checkpoint={tmp_path / 'straight'}", f"out={tmp_path / 'eval.json'}")
    run_cli("sample", f"checkpoint={tmp_path / 'straight'}", "n=8", f"out={tmp_path / 'samples'}")
    err = capsys.readouterr().err
    assert err.count("generator: G_ema, the moving average of G") == 2


def test_runs_without_ema_keep_no_g_ema_and_sample_g(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_cli("train", *TINY, *TINY_MLP, "threads=1", f"hydra.run.dir={tmp_path}")
    assert "G_ema" not in load_checkpoint(tmp_path)
    capsys.readouterr()
    run_cli("sample", f"checkpoint={tmp_path}", "n=8", f"out={tmp_path / 'samples'}")
    assert "generator: G, the trained weights" in capsys.readouterr().err


def test_bad_ema_settings_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_cli("train", *TINY, *TINY_MLP, "train.ema_kimg=-1", f"hydra.run.dir={tmp_path}")
    assert exit_.value.code == 2
    assert "train.ema_kimg=-1 is out of range" in capsys.readouterr().err
