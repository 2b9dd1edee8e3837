"""Data-parallel training with DDP on CPU (gloo): identical ranks, the full-batch math, rank-0 output."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.testing import assert_close

from conftest import TINY_MLP, build_model, run_cli
from gan_lab.losses import RpGAN, Wasserstein
from gan_lab.runs.checkpoint import load_checkpoint
from gan_lab.training import distributed
from gan_lab.training.train import critic_step, generator_step

BATCH, STEPS = 16, 3


# WGAN-GP; and R3GAN's RpGAN + R1 + R2, whose generator step scores a real batch too. Both are per-sample
# (RpGAN pairs x_i with G(z_i)), so the ranks' mean is the full batch's.
LOSSES = {"wgan_gp": Wasserstein(lambda_gp=10.0), "rpgan": RpGAN(lambda_r1=1.0, lambda_r2=1.0)}


def global_batches() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    x, z, z_g = (torch.randn(BATCH, 2, generator=g) for _ in range(3))
    eps = torch.rand(BATCH, 1, generator=g)
    x_g = torch.randn(BATCH, 2, generator=g)  # the relativistic generator step's real batch
    return x, z, z_g, eps, x_g


def train_steps(x: torch.Tensor, z: torch.Tensor, z_g: torch.Tensor, eps: torch.Tensor, x_g: torch.Tensor,
                loss_name: str = "wgan_gp") -> list[dict]:
    """STEPS critic + generator steps of the loss on fixed batches; the weights and losses after each."""
    torch.manual_seed(0)
    G, critic = build_model("mlp", (2,), z_dim=2, hidden=16, depth=2)
    # SGD: Adam divides by sqrt(v), which turns float rounding in near-zero gradients into
    # visible steps; plain gradient steps keep the comparison with the full batch tight
    opt_g = torch.optim.SGD(G.parameters(), lr=0.05)
    opt_d = torch.optim.SGD(critic.parameters(), lr=0.05)
    G_ddp, critic_ddp = distributed.wrap(G), distributed.wrap(critic)
    loss = LOSSES[loss_name]
    logged = [f"loss/{p.tag}" for p in loss.penalties()] + ["loss/critic", "loss/generator"]
    history = []
    # the penalty's eps, fixed so that the ranks' slices are the full batch's
    with mock.patch("gan_lab.losses.interpolates", lambda real, fake: eps * real + (1 - eps) * fake):
        for _ in range(STEPS):
            stats = critic_step(G, critic_ddp, loss, opt_d, x, z)
            stats.update(generator_step(G_ddp, critic, loss, opt_g, z_g, x=x_g if loss.needs_real_in_g else None))
            history.append({"G": {k: v.clone() for k, v in G.state_dict().items()},
                            "critic": {k: v.clone() for k, v in critic.state_dict().items()},
                            "losses": {k: float(v) for k, v in distributed.average(
                                {k: stats[k] for k in logged}).items()}})
    return history


def _worker(rank: int, world: int, init_file: str, out: str, loss_name: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    b = BATCH // world
    parts = [t[rank * b:(rank + 1) * b] for t in global_batches()]  # each rank its own share
    torch.save(train_steps(*parts, loss_name), f"{out}/rank{rank}.pt")
    distributed.finish()  # barrier, leave the group, exit without the teardown gloo can abort


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", list(LOSSES))
def test_two_gloo_ranks_match_each_other_and_the_full_batch(loss_name: str, tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path), loss_name), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    single = train_steps(*global_batches(), loss_name)
    for step in range(STEPS):
        for net in ("G", "critic"):
            for key, value in rank0[step][net].items():
                assert torch.equal(value, rank1[step][net][key])  # identical parameters after each step
                assert_close(value, single[step][net][key], rtol=1e-4, atol=1e-5)  # = the concatenated batch
        for key, value in single[step]["losses"].items():
            assert rank0[step]["losses"][key] == pytest.approx(value, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_torchrun_two_ranks_rank0_writes_and_single_process_resumes(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    run_dir = tmp_path / "run"
    common = ["train.batch_size=16", "train.log_every=2", "train.sample_every=4", "train.checkpoint_every=2",
              *TINY_MLP, f"hydra.run.dir={run_dir}"]
    out = subprocess.run([torchrun, "--nproc_per_node=2", "-m", "gan_lab", "train", "train.steps=4", *common],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "effective batch 32" in out.stderr
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # rank 0 only
    state = load_checkpoint(run_dir)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not any(k.startswith("module.") for k in state["G"]) and not any(k.startswith("module.") for k in state["critic"])
    # the same two ranks resume in place
    out = subprocess.run([torchrun, "--nproc_per_node=2", "-m", "gan_lab", "train", "train.steps=6", *common],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert load_checkpoint(run_dir)["step"] == 6
    # and a single process continues the DDP checkpoint
    run_cli("train", "train.steps=8", *common[:-1], f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'single'}")
    assert load_checkpoint(tmp_path / "single")["step"] == 8
