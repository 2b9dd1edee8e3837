"""Cures for mode collapse on the critic's side: packing (PacGAN) and minibatch standard deviation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.testing import assert_close

from conftest import TINY, TINY_DCGAN, TINY_MLP, build_model, run_cli, user_error
from gan_lab.errors import GanLabError
from gan_lab.losses import Wasserstein, grad_norms, input_grad_norms
from gan_lab.models import Critic, MinibatchStd, SequentialBody
from gan_lab.runs.checkpoint import load_checkpoint
from gan_lab.runs.rebuild import rebuild_generator
from gan_lab.training.train import critic_forward, critic_step


def first_input(critic: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the critic's first layer receives for the batch x."""
    seen = []
    first = next(m for m in critic.net if isinstance(m, (nn.Linear, nn.Conv2d)))
    handle = first.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    critic(x)
    handle.remove()
    return seen[0]


# ---- packing ---------------------------------------------------------------------------------

def test_packed_mlp_critic_sees_m_samples_side_by_side() -> None:
    _, critic = build_model("mlp", (2,), hidden=8, depth=2, pack=3)
    x = torch.randn(12, 2)
    packed = first_input(critic, x)
    assert packed.shape == (4, 6) and critic(x).shape == (4,)
    assert torch.equal(packed[1], torch.cat([x[3], x[4], x[5]]))  # pack 1 = rows 3, 4, 5


def test_packed_dcgan_critic_stacks_images_along_channels() -> None:
    _, critic = build_model("dcgan", (1, 28, 28), z_dim=8, width=4, pack=2)
    x = torch.randn(6, 1, 28, 28)
    packed = first_input(critic, x)
    assert packed.shape == (3, 2, 28, 28) and critic(x).shape == (3,)
    assert torch.equal(packed[2, 0], x[4, 0]) and torch.equal(packed[2, 1], x[5, 0])


def linear_packed_critic() -> Critic:
    # score of a pack (a, b) of 2-D points: w . [a, b] with w = (1, 2, 2, 4): ||w|| = 5, while the
    # per-sample parts have norms sqrt(5) and sqrt(20)
    head = nn.Linear(4, 1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 2.0, 2.0, 4.0]]))
        head.bias.zero_()
    return Critic(SequentialBody(nn.Flatten(), head), "none", pack=2)


def test_penalties_take_the_gradient_norm_per_pack() -> None:
    critic = linear_packed_critic()
    x = torch.randn(8, 2, requires_grad=True)
    assert_close(grad_norms(critic(x), x), torch.full((4,), 5.0))
    assert_close(input_grad_norms(critic, x), torch.full((4,), 5.0))  # the logged critic_input norm too
    # the real critic step: GP = lambda E[(5 - 1)^2] = 16; R1 = gamma / 2 E[5^2] = 12.5
    G = nn.Identity()
    G.z_dim, G.n_classes = 2, 0
    G.forward = lambda z, y=None: z  # fakes = z
    opt = torch.optim.SGD(critic.parameters(), lr=0.0)
    stats = critic_step(G, critic, Wasserstein(lambda_gp=1.0, lambda_r1=1.0), opt, torch.randn(8, 2), torch.randn(8, 2))
    assert_close(stats["loss/gradient_penalty"], torch.tensor(16.0))
    assert_close(stats["loss/r1_penalty"], torch.tensor(12.5))


def test_per_pack_norm_of_a_nonlinear_critic_matches_autograd_pack_by_pack() -> None:
    torch.manual_seed(0)
    _, critic = build_model("mlp", (2,), hidden=16, depth=2, pack=4)
    x = torch.randn(12, 2, requires_grad=True)
    expected = []
    for i in range(3):  # the gradient of pack i's score w.r.t. its own four rows, by hand
        (grad,) = torch.autograd.grad(critic(x)[i], x)
        assert grad[: 4 * i].abs().sum() == 0 and grad[4 * i + 4:].abs().sum() == 0  # other packs: no effect
        expected.append(grad[4 * i: 4 * i + 4].pow(2).sum().sqrt())
    assert_close(grad_norms(critic(x), x), torch.stack(expected))


CURES = {"pack": {"pack": 2}, "mbstd": {"minibatch_std": 2}, "both": {"pack": 2, "minibatch_std": 2}}


@pytest.mark.parametrize("cure", CURES)
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_packs_and_groups_never_mix_real_and_fake(cure: str, norm: str) -> None:
    # Every path of critic_forward (one concatenated forward for the plain parts, separate ones for
    # penalised parts and for batch norm) scores each part as if it were alone: no pack or
    # minibatch-std group takes rows from two parts.
    torch.manual_seed(0)
    _, critic = build_model("mlp", (2,), hidden=8, depth=2, critic_norm=norm, **CURES[cure])
    critic.eval()  # batch norm on running statistics: a part's scores would otherwise depend on its batch
    real, fake = torch.randn(8, 2), torch.randn(8, 2) + 3
    interpolated = (0.5 * (real + fake)).requires_grad_(True)
    scores = critic_forward(critic, [real, fake, interpolated], None)
    for part, score in zip((real, fake, interpolated), scores):
        assert_close(score, critic(part))
    # and with all parts plain: one concatenated forward
    for part, score in zip((real, fake), critic_forward(critic, [real, fake], None)):
        assert_close(score, critic(part))


@pytest.mark.parametrize("cure", CURES)
def test_ddp_concatenated_forward_keeps_parts_apart(cure: str, tmp_path: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        _, critic = build_model("mlp", (2,), hidden=8, depth=2, **CURES[cure])
        wrapped = nn.parallel.DistributedDataParallel(critic)
        real, fake = torch.randn(8, 2), torch.randn(8, 2) + 3
        interpolated = (0.5 * (real + fake)).requires_grad_(True)
        scores = critic_forward(wrapped, [real, fake, interpolated], None)
        for part, score in zip((real, fake, interpolated), scores):
            assert_close(score, critic(part))
    finally:
        dist.destroy_process_group()


def test_pointwise_scores_each_sample_as_a_pack_of_its_copies() -> None:
    _, critic = build_model("mlp", (2,), hidden=8, depth=2, pack=2, minibatch_std=2)
    x = torch.randn(5, 2)  # any count: the critic landscape scores a whole grid
    expected = torch.stack([critic(p.expand(4, 2)).mean() for p in x])
    assert_close(critic.pointwise(x), expected)


def test_pack_with_a_conditional_critic_is_refused() -> None:
    with pytest.raises(GanLabError, match="PacGAN defines packing for unconditional GANs only"):
        build_model("mlp", (2,), pack=2, conditional=True, n_classes=8)


# ---- minibatch standard deviation ------------------------------------------------------------

def test_minibatch_std_appends_each_groups_mean_spread() -> None:
    h = torch.tensor([[0.0, 0.0], [2.0, 4.0], [1.0, 1.0], [1.0, 1.0]])
    out = MinibatchStd(2)(h)
    # group (rows 0, 1): population stds (1, 2), mean 1.5; group (rows 2, 3): no spread (sqrt(eps))
    assert_close(out[:, :2], h)
    assert_close(out[:, 2], torch.tensor([1.5, 1.5, 1e-4, 1e-4]), atol=1e-7, rtol=1e-6)
    maps = torch.randn(4, 3, 5, 5)
    with_std = MinibatchStd(4)(maps)
    expected = maps.std(dim=0, unbiased=False).mean()
    assert with_std.shape == (4, 4, 5, 5)
    assert_close(with_std[:, 3], expected.expand(4, 5, 5), atol=1e-6, rtol=1e-6)  # one more channel, constant


def test_minibatch_std_sits_in_the_critics_last_block() -> None:
    _, critic = build_model("mlp", (2,), hidden=8, depth=3, minibatch_std=4)
    assert isinstance(critic.minibatch_std, MinibatchStd) and critic.minibatch_std.group_size == 4
    last_block = list(critic.net)[critic.net.split:]  # what sees the spread: the last block and the head
    assert isinstance(last_block[0], nn.Linear) and last_block[0].in_features == 9
    assert sum(isinstance(m, nn.Linear) for m in last_block) == 2  # the last hidden layer and the head
    _, conv = build_model("dcgan", (1, 28, 28), z_dim=8, width=4, minibatch_std=4)
    assert conv.net[conv.net.split].in_channels == 2 * 4 + 1
    assert conv(torch.randn(8, 1, 28, 28)).shape == (8,)


def test_minibatch_std_penalty_takes_the_groups_summed_score_gradient() -> None:
    # The choice: allowed, as ProGAN (WGAN-GP) and StyleGAN2 (R1) do. A sample's score depends on
    # its group, so the penalised gradient w.r.t. sample i is d(sum_j C_j)/dx_i over its group,
    # not dC_i/dx_i alone.
    torch.manual_seed(0)
    _, critic = build_model("mlp", (2,), hidden=8, depth=2, minibatch_std=2)
    x = torch.randn(4, 2, requires_grad=True)
    jacobian = torch.autograd.functional.jacobian(critic, x)  # (4 scores, 4 samples, 2)
    summed = jacobian.sum(dim=0).norm(dim=1)
    own = torch.stack([jacobian[i, i].norm() for i in range(4)])
    assert_close(grad_norms(critic(x), x), summed)
    assert not torch.allclose(summed, own)  # the coupling is real
    assert jacobian[0, 2:].abs().sum() == 0  # but never across groups


# ---- the options from the command line -------------------------------------------------------

@pytest.mark.parametrize("overrides, fragment", [
    (["model.pack=0"], "model.pack=0 is out of range"),
    (["model.minibatch_std=1"], "model.minibatch_std=1 is out of range"),
    (["model.minibatch_std=-4"], "model.minibatch_std=-4 is out of range"),
    (["model.pack=3"], "train.batch_size=16 does not split into the critic's packs and groups"),
    (["model.pack=4", "model.minibatch_std=8"], "must be a multiple of 32"),
    (["data=grid25", "model.pack=2", "model.conditional=true"], "PacGAN defines packing for unconditional"),
])
def test_bad_cure_settings_are_explained(overrides: list[str], fragment: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    assert fragment in user_error(capsys, "train", *TINY, *TINY_MLP, *overrides, f"hydra.run.dir={tmp_path}")


@pytest.mark.parametrize("cure", ["model.pack=2", "model.minibatch_std=4"])
def test_cures_train_on_ring8(cure: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_cli("train", *TINY, *TINY_MLP, cure, f"hydra.run.dir={tmp_path}")
    state = load_checkpoint(tmp_path)
    rebuild_generator(state, tmp_path)  # `gan-lab eval` / `sample` rebuild G from the stored settings
    widths = [v.shape[1] for k, v in state["critic"].items() if k.endswith("weight") and v.dim() == 2]
    assert widths[0] == (4 if cure == "model.pack=2" else 2)  # two 2-D points side by side
    if cure == "model.minibatch_std=4":
        assert widths[1] == 33  # the last hidden layer sees the spread
        assert "couples the samples of a group" in " ".join(capsys.readouterr().err.split())  # the GP note
    assert (tmp_path / "samples" / "critic_step_00000004.png").exists()  # the landscape of a packed critic


@pytest.mark.parametrize("cure", ["model.pack=2", "model.minibatch_std=4"])
def test_cures_train_dcgan_on_tiny_mnist(cure: str, tmp_path: Path, tiny_mnist_root: Path) -> None:
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", "data.download=false", *TINY, *TINY_DCGAN,
            cure, f"hydra.run.dir={tmp_path}")
    critic = load_checkpoint(tmp_path)["critic"]
    assert critic["net.0.weight"].shape[1] == (2 if cure == "model.pack=2" else 1)  # images stacked on channels


@pytest.mark.slow
def test_the_comparison_script_trains_every_row_and_tables_it(tmp_path: Path) -> None:
    # scripts/cures.py (which writes docs/cures.md), tiny: real gan-lab runs, one per row, the DRS row
    # from the baseline's checkpoints, and the published rows beside them
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(repo / "scripts" / "cures.py"), "--data", "ring8", "--seeds", "1",
                           "--steps", "20", "--cures", "none", "pack2", "--combo", "both:model.pack=2 train.topk=0.5",
                           "--combo", "recipe:+experiment=grid25_sharp",
                           "--jobs", "1", "--allow-dirty", "--root", str(tmp_path / "runs"), "--out",
                           str(tmp_path / "cures.md"), "--extra", "model.hidden=32"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    doc = (tmp_path / "cures.md").read_text()
    rows = {line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| ")}
    assert {"none", "pack2", "both", "recipe", "none+drs", "PacGAN2", "PacGAN4", "VEEGAN"} <= rows
    assert "failed" not in doc.lower() and "acceptance rate" in doc
    config = yaml.safe_load((tmp_path / "runs" / "ring8_both_seed0" / "config_resolved.yaml").read_text())
    assert (config["loss"]["_target_"], config["model"]["pack"], config["train"]["topk"]) == (
        "gan_lab.losses.NonSaturating", 2, 0.5)
    assert (tmp_path / "runs" / "ring8_none_seed0" / "eval_drs.json").exists()
    # a row that picks an experiment trains its loss: the base loss= on the command line would beat it
    config = yaml.safe_load((tmp_path / "runs" / "ring8_recipe_seed0" / "config_resolved.yaml").read_text())
    assert (config["loss"]["_target_"], config["train"]["lr_schedule"]) == ("gan_lab.losses.RpGAN", "linear")
