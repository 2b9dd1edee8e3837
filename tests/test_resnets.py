"""model=resnet and model=r3gan: published parameter counts, every loss, the cures, labels, 28 px, the CLI."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.testing import assert_close

from conftest import TINY, build_model, requires_cuda, run_cli, user_error
from gan_lab.app.cli import build_loss
from gan_lab.app.options import conf_options
from gan_lab.errors import GanLabError
from gan_lab.runs.checkpoint import load_checkpoint
from gan_lab.resnets import Resample, ResNeXtBlock
from gan_lab.training.train import critic_step, generator_step


# tiny widths: every test below trains in a second or two on one CPU thread
TINY_RESNET = ["model.g_channels=8", "model.g_max_channels=8", "model.d_channels=8", "model.d_max_channels=8",
               "model.z_dim=16"]
TINY_R3GAN = ["model.channels=8", "model.max_channels=8", "model.group_channels=4", "model.label_features=8",
              "model.z_dim=8", "model.blocks_per_stage=1"]
TINY_MODEL = {"resnet": TINY_RESNET, "r3gan": TINY_R3GAN}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(c_in: int, c_out: int, k: int, bias: bool = True, groups: int = 1) -> int:
    """A k x k convolution's parameters, counted by hand (not by torch)."""
    return c_out * (c_in // groups) * k * k + (c_out if bias else 0)


def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    """A linear layer's parameters, counted by hand."""
    return n_in * n_out + (n_out if bias else 0)


def published_resnet_32(d_hidden: int, n_classes: int) -> tuple[int, int]:
    """SNGAN / BigGAN CIFAR's G and D parameters from ../shared/docs/architectures.md's layer lists (sections 1, 2).

    z 128 -> linear to 4 x 4 x 256 -> three up-blocks 256 -> 256 (BN or class-conditional BN, conv3x3, BN,
    conv3x3, 1x1 shortcut) -> BN -> conv3x3 to RGB. D: the first block (conv3x3 3->C, conv3x3 C->C, 1x1 shortcut
    3->C), a down block C->C (1x1 shortcut), two blocks C->C (identity shortcut), a linear to 1 with bias and, with
    labels, a projection embedding (n_classes x C). d_hidden: C (SNGAN's thin D 128; BigGAN's wide D 4 ch = 256).
    """
    c = 256
    # unconditional BN: an affine gamma and beta (2C); conditional BN (Mimicry cgan_pd, BigGAN ccbn with
    # G_shared off): a per-class gain and bias embedding (2 x n_classes x C) and no affine of its own
    norm = 2 * n_classes * c if n_classes else 2 * c
    g_block = norm + conv(c, c, 3) + norm + conv(c, c, 3) + conv(c, c, 1)
    g = linear(128, 4 * 4 * c) + 3 * g_block + 2 * c + conv(c, 3, 3)  # the head's BN is a plain affine one
    d_c = d_hidden
    d = (conv(3, d_c, 3) + conv(d_c, d_c, 3) + conv(3, d_c, 1)  # the first block
         + conv(d_c, d_c, 3) + conv(d_c, d_c, 3) + conv(d_c, d_c, 1)  # down: a learned shortcut
         + 2 * (conv(d_c, d_c, 3) + conv(d_c, d_c, 3))  # no down, same width: identity shortcut
         + linear(d_c, 1) + n_classes * d_c)  # the head and the projection embedding
    return g, d


def published_r3gan_cifar(n_classes: int) -> tuple[int, int]:
    """R3GAN's CIFAR10 preset from ../shared/docs/architectures.md section 3 (brownvc/R3GAN train.py, Networks.py).

    Widths 768 at 4, 8, 16 and 32 px, 2 blocks per stage (8 in G, 8 in D), expansion 2, cardinality 96, z 64;
    every conv and linear bias-free; a block: conv1x1 C->2C, bias, grouped conv3x3 2C->2C, bias, conv1x1 2C->C.
    Same widths everywhere, so no 1x1 transition convs. G: label Linear(c->64), basis Linear(z(+64)->C) times a
    learned [C, 4, 4], a conv1x1 to RGB. D: conv1x1 RGB->C, depthwise 4x4, Linear(C->1) or, with labels,
    Linear(C->768) and the label's Linear(c->768).
    """
    c, z = 768, 64
    block = conv(c, 2 * c, 1, bias=False) + 2 * c + conv(2 * c, 2 * c, 3, bias=False, groups=96) + 2 * c \
        + conv(2 * c, c, 1, bias=False)
    label = linear(n_classes, 64, bias=False) if n_classes else 0
    g = label + linear(z + (64 if n_classes else 0), c, bias=False) + c * 4 * 4 + 8 * block + conv(c, 3, 1, bias=False)
    head = (linear(c, 768, bias=False) + linear(n_classes, 768, bias=False)) if n_classes else linear(c, 1, bias=False)
    d = conv(3, c, 1, bias=False) + 8 * block + conv(c, c, 4, bias=False, groups=c) + head
    return g, d


def test_the_hand_counts_are_the_docs_computed_counts() -> None:
    # ../shared/docs/architectures.md's [computed] counts, which its counter checked against R3GAN's paper Table 1
    assert published_resnet_32(d_hidden=128, n_classes=0) == (4_276_739, 1_053_825)  # Mimicry sngan_32
    assert published_resnet_32(d_hidden=256, n_classes=10) == (4_304_387, 4_207_361)  # BigGAN CIFAR, ch=64
    assert published_r3gan_cifar(n_classes=10) == (20_781_952, 21_280_512)  # R3GAN CIFAR10 --cond=1
    assert published_r3gan_cifar(n_classes=0) == (20_732_160, 20_683_776)
    # the doc's rounded figures (its comparison table: 4.30M / 4.21M, 20.78M / 21.28M) at their rounding
    assert [round(n / 1e4) for n in (*published_resnet_32(256, 10), *published_r3gan_cifar(10))] == [430, 421, 2078,
                                                                                                        2128]


# exact: the same layers as the reference code, counted by hand above from the published layer lists
@pytest.mark.parametrize("builder, settings, published", [
    ("resnet", {}, published_resnet_32(d_hidden=128, n_classes=0)),  # SNGAN ResNet 32 px (Mimicry sngan_32)
    ("resnet", {"d_channels": 256, "d_max_channels": 256, "d_wide": True, "generator_spectral": True,
              "conditional": True}, published_resnet_32(d_hidden=256, n_classes=10)),  # BigGAN CIFAR, ch=64
    ("r3gan", {"conditional": True}, published_r3gan_cifar(n_classes=10)),  # R3GAN's CIFAR10 preset, --cond=1
    ("r3gan", {}, published_r3gan_cifar(n_classes=0)),  # the same, unconditional
])
def test_published_settings_give_the_papers_parameter_counts(builder, settings, published) -> None:
    G, critic = build_model(builder, (3, 32, 32), n_classes=10, **settings)
    assert (count(G), count(critic)) == published


def test_r3gan_at_256px_has_the_papers_own_published_count() -> None:
    # the one count a paper prints: R3GAN's Table 1, Config E (FFHQ-256), G 23.058M and D 23.010M, rounded there
    # to thousands; ../shared/docs/architectures.md's [computed] count from the code gives the exact figure
    G, critic = build_model("r3gan", (3, 256, 256), channels=96)  # widths 768 x 4, 384, 192, 96 from 4 px
    assert (round(count(G) / 1e3), round(count(critic) / 1e3)) == (23_058, 23_010)
    assert (count(G), count(critic)) == (23_057_952, 23_009_568)


def test_the_yaml_defaults_are_the_published_settings() -> None:
    for model, expected in (("resnet", (4_276_739, 1_053_825)), ("r3gan", (20_732_160, 20_683_776))):
        G, critic = instantiate(compose_train(f"model={model}").model, shape=(3, 32, 32))
        assert (count(G), count(critic)) == expected  # exact: the same layers as the reference code


def compose_train(*overrides: str):
    with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=False)


@pytest.mark.parametrize("model", ["resnet", "r3gan"])
@pytest.mark.parametrize("loss", conf_options("loss"))
def test_every_loss_trains_the_residual_models_at_32px(model: str, loss: str) -> None:
    # the loss as the CLI builds it (penalties, clipping), a labelled batch at 32 px, one critic and one G step
    torch.manual_seed(0)
    cfg = compose_train(f"model={model}", f"loss={loss}", "data=cifar10", "model.conditional=true", *TINY_MODEL[model])
    built, schedule = build_loss(OmegaConf.to_container(cfg.loss, resolve=True))
    G, critic = instantiate(cfg.model, shape=(3, 32, 32), n_classes=10)
    opt_g, opt_d = (torch.optim.Adam(net.parameters(), 1e-3) for net in (G, critic))
    x, y = torch.rand(8, 3, 32, 32) * 2 - 1, torch.arange(8)
    z_fixed = torch.randn(8, G.z_dim)
    with torch.no_grad():
        G.eval()  # batch norm from its running statistics: the same function before and after, but the weights
        before = G(z_fixed, y), critic(x, y)
        G.train()
    stats = critic_step(G, critic, built, opt_d, x, torch.randn(8, G.z_dim), y, clip=schedule.clip)
    stats |= generator_step(G, critic, built, opt_g, torch.randn(8, G.z_dim), y, x=x)
    assert all(torch.isfinite(v).all() for v in stats.values()), stats
    with torch.no_grad():
        G.eval()
        after = G(z_fixed, y), critic(x, y)
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])  # both nets trained


@pytest.mark.parametrize("model, loss", [("resnet", "hinge"), ("r3gan", "r3gan")])
def test_the_critic_learns_to_score_real_above_fake_and_g_to_raise_its_score(model: str, loss: str) -> None:
    # a loss with its sign flipped still trains without error and without NaN: only the direction shows it.
    # Real images are all white, the fakes whatever G draws at init (grey noise): a critic separates them in a
    # few steps, and the critic must then score the real batch above the fake one; G, against that critic
    # held fixed, must raise its own score.
    torch.manual_seed(0)
    cfg = compose_train(f"model={model}", f"loss={loss}", "data=cifar10", *TINY_MODEL[model])
    built, schedule = build_loss(OmegaConf.to_container(cfg.loss, resolve=True))
    G, critic = instantiate(cfg.model, shape=(3, 32, 32))
    opt_g, opt_d = (torch.optim.Adam(net.parameters(), 1e-3, betas=(0.0, 0.9)) for net in (G, critic))
    x, z = torch.ones(8, 3, 32, 32), torch.randn(8, G.z_dim)

    def scores() -> tuple[float, float]:
        with torch.no_grad():
            return critic(x).mean().item(), critic(G(z)).mean().item()
    real_before, fake_before = scores()
    for _ in range(20):
        critic_step(G, critic, built, opt_d, x, torch.randn(8, G.z_dim), clip=schedule.clip)
    real, fake = scores()
    assert real - fake > 1.0 + abs(real_before - fake_before), (real_before, fake_before, real, fake)
    for _ in range(10):
        generator_step(G, critic, built, opt_g, torch.randn(8, G.z_dim), x=x)
    _, fake_after = scores()
    assert fake_after - fake > 0.1 * (real - fake), (real, fake, fake_after)


@pytest.mark.parametrize("model", ["resnet", "r3gan"])
def test_labelled_cured_augmented_ema_run_through_the_cli_on_28px(model: str, tmp_path: Path,
                                                                  tiny_mnist_root: Path) -> None:
    # MNIST is 28 = 7 x 2^2 px: G starts from 7 x 7 and doubles twice, no padding. resnet: BigGAN's
    # spectral norm in G too, whose EMA copy then carries the parametrisation's buffers
    settings = [*TINY_MODEL[model], "model.conditional=true", "model.minibatch_std=4",
                *(["model.generator_spectral=true"] if model == "resnet" else [])]
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", "data.download=false", f"model={model}",
            *settings, "loss=r3gan" if model == "r3gan" else "loss=hinge", *TINY, "metrics=false",
            "train.ema_kimg=1", "data.augment=[translation,color,cutout]", f"hydra.run.dir={tmp_path}")
    state = load_checkpoint(tmp_path)
    assert state["step"] == 4 and "G_ema" in state
    G, critic = instantiate(compose_train(f"model={model}", *settings).model, shape=(1, 28, 28), n_classes=10)
    G.load_state_dict(state["G"]), critic.load_state_dict(state["critic"])  # the run's nets are these
    # the run printed each net's parameter count at its start, and train.log kept it
    log = (tmp_path / "train.log").read_text()
    assert re.search(rf"parameters G {count(G):,}\s+critic {count(critic):,}", log), log
    # gan-lab sample rebuilds the model from the checkpoint's plain values (gan_lab.runs.rebuild)
    run_cli("sample", f"checkpoint={tmp_path}", "n=4", "label=3")
    assert list((tmp_path / "samples").glob("sample_*.png"))


@pytest.mark.parametrize("model", ["resnet", "r3gan"])
def test_packed_critic_runs_through_the_cli(model: str, tmp_path: Path, tiny_mnist_root: Path) -> None:
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", "data.download=false", f"model={model}",
            *TINY_MODEL[model], *TINY, "train.steps=2", "metrics=false", "model.pack=2", f"hydra.run.dir={tmp_path}")
    first_conv = [v for k, v in load_checkpoint(tmp_path)["critic"].items() if v.dim() == 4][0]
    assert first_conv.shape[1] == 2  # two 1-channel images stacked along channels


def test_the_dcgan_run_prints_its_parameter_counts_too(tmp_path: Path, tiny_mnist_root: Path) -> None:
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", "data.download=false", "model.width=8",
            "model.z_dim=16", *TINY, "train.steps=2", "metrics=false", f"hydra.run.dir={tmp_path}")
    G = load_checkpoint(tmp_path)["G"]
    assert f"parameters G {sum(v.numel() for k, v in G.items() if 'running' not in k and 'tracked' not in k):,}" \
        in (tmp_path / "train.log").read_text()


@pytest.mark.parametrize("side, bottom, doublings", [(28, 7, 2), (32, 4, 3), (48, 6, 3), (64, 4, 4), (256, 4, 6)])
def test_g_starts_from_a_bottom_map_and_doubles_to_the_side(side: int, bottom: int, doublings: int) -> None:
    G, critic = build_model("resnet", (1, side, side), g_channels=4, g_max_channels=4, d_channels=4, d_max_channels=4, z_dim=4)
    assert (G.net.bottom, len(G.net.blocks)) == (bottom, doublings)
    x = G(torch.randn(2, 4))
    assert x.shape == (2, 1, side, side) and critic(x).shape == (2,)
    G, critic = build_model("r3gan", (1, side, side), channels=4, max_channels=4, group_channels=4, z_dim=4)
    assert tuple(G.net.basis.shape[1:]) == (bottom, bottom) and len(G.net.stages) == doublings + 1
    assert G(torch.randn(2, 4)).shape == (2, 1, side, side)


@pytest.mark.parametrize("model", ["resnet", "r3gan"])
def test_a_side_the_nets_cannot_reach_is_explained(model: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(GanLabError, match="28 to 256 px that is 4 to 7 times a power of two"):
        build_model(model, (3, 36, 36))
    message = user_error(capsys, "train", f"model={model}", "data=ring8", *TINY)
    assert f"model={model} needs square images" in message


def test_widths_double_as_the_resolution_halves_up_to_the_cap() -> None:
    # BigGAN at 64 px, ch=64: G in [16, 16, 8, 4] x ch -> out [16, 8, 4, 2] x ch at 8..64 px
    G, _ = build_model("resnet", (3, 64, 64), g_channels=128, g_max_channels=1024)
    assert [b.conv1.out_channels for b in G.net.blocks] == [1024, 512, 256, 128] and G.net.c0 == 1024
    # R3GAN FFHQ-256: 768 x 4, 384, 192, 96 per stage from 4 px
    G, critic = build_model("r3gan", (3, 256, 256), channels=96)
    assert [stage[-1].conv3.out_channels for stage in G.net.stages] == [768, 768, 768, 768, 384, 192, 96]
    assert [stage[0].conv3.out_channels for stage in critic.net.stages] == [96, 192, 384, 768, 768, 768]


def test_conditional_batch_norm_makes_the_label_change_the_image() -> None:
    torch.manual_seed(0)
    G, _ = build_model("resnet", (3, 32, 32), g_channels=8, g_max_channels=8, z_dim=8, conditional=True, n_classes=10)
    for module in G.modules():  # move the per-class scales off their N(1, 0.02) start
        if isinstance(module, torch.nn.Embedding):
            torch.nn.init.normal_(module.weight)
    z = torch.randn(4, 8)
    assert not torch.allclose(G(z, torch.zeros(4, dtype=torch.long)), G(z, torch.ones(4, dtype=torch.long)))


def test_r3gan_blocks_start_as_the_identity_with_fixup_gains() -> None:
    torch.manual_seed(0)
    G, _ = build_model("r3gan", (3, 32, 32), conditional=True, n_classes=10)
    blocks = [m for m in G.modules() if isinstance(m, ResNeXtBlock)]
    assert len(blocks) == 8
    h = torch.randn(2, 768, 4, 4)
    assert_close(blocks[0](h), h)  # the last conv of each residual branch is zero
    assert all(not b.conv3.weight.any() for b in blocks)
    # the first two convs: N(0, gain / sqrt(fan_in)), gain = sqrt(2 / (1 + 0.2^2)) * L^(-1/4), L = 8 blocks
    gain = math.sqrt(2 / 1.04) * 8 ** -0.25
    assert blocks[0].conv1.weight.std().item() == pytest.approx(gain / math.sqrt(768), rel=0.02)
    assert blocks[0].conv2.weight.std().item() == pytest.approx(gain / math.sqrt(16 * 9), rel=0.02)
    assert blocks[0].conv2.groups == 96  # R3GAN CIFAR-10's cardinality
    # a conditional R3GAN critic is the projection alone: <embed(y), features>, no unconditional term
    _, critic = build_model("r3gan", (3, 32, 32), channels=8, max_channels=8, group_channels=4, label_features=8,
                      conditional=True, n_classes=10)
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    features = critic.net.last_block(critic.net.trunk(x))
    assert_close(critic(x, y), (critic.embed(y) * features).sum(dim=1))


def test_r3gan_resamples_with_its_low_pass_filter() -> None:
    down, up = Resample(1, 1, up=False), Resample(1, 1, up=True)
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 3, 3] = 64.0
    # down: R3GAN's reference, the outer product of [1,3,3,1]/8 at stride 2 and padding 1
    assert_close(down(image)[0, 0, 1:3, 1:3], torch.tensor([[9.0, 3.0], [3.0, 1.0]]))  # 64 x [3,1]^T [3,1] / 64
    # up: each output pixel is 3/4 of its nearer and 1/4 of its farther input neighbour along each axis
    row = up(torch.tensor([[[[0.0, 4.0, 8.0, 12.0]]]]).expand(1, 1, 4, 4).contiguous())[0, 0, 0]
    assert_close(row[1:7], torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0, 11.0]))


@pytest.mark.slow  # torch.compile's tracing: 5-10 s a model
@pytest.mark.parametrize("model", ["resnet", "r3gan"])
def test_the_generator_and_an_unpenalised_critic_compile_whole(model: str, tmp_path: Path,
                                                               tiny_mnist_root: Path, capsys) -> None:
    # fullgraph=True: spectral norm's parametrisation and the residual blocks trace with no graph break
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", "data.download=false", f"model={model}",
            *TINY_MODEL[model], *TINY, "train.steps=2", "metrics=false", "loss=hinge", "train.compile=eager",
            f"hydra.run.dir={tmp_path}")
    out = " ".join(capsys.readouterr().err.split())
    assert "compiled generator" in out and "critic (" in out


@requires_cuda
@pytest.mark.parametrize("model, loss", [("resnet", "hinge"), ("r3gan", "r3gan")])
def test_residual_models_train_graphed_on_cuda(model: str, loss: str, tmp_path: Path, tiny_mnist_root: Path,
                                               capsys) -> None:
    # spectral norm's power iteration updates its buffers in place, inside the captured graph
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", "data.download=false", f"model={model}",
            f"loss={loss}", *TINY_MODEL[model], *TINY[:-1], "device=cuda", "train.steps=6", "metrics=false",
            f"hydra.run.dir={tmp_path}")
    out = " ".join(capsys.readouterr().err.split())
    assert "CUDA graph" in out and "could not be captured" not in out
    assert load_checkpoint(tmp_path)["step"] == 6


@pytest.mark.slow  # a subprocess that imports torch and times a DCGAN step
def test_bench_models_writes_a_table_of_step_times(tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "models.md"
    run = subprocess.run([sys.executable, str(repo / "scripts" / "bench.py"), "--models", "dcgan", "--threads", "1",
                          "--iters", "1", "--warmup", "0", "--rounds", "1", "--allow-dirty", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=repo)
    assert run.returncode == 0, run.stderr[-2000:]
    row = next(line for line in out.read_text().splitlines() if line.startswith("| dcgan"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[1:3] == ["2,186,115", "446,657"] and float(cells[3]) > 0 and cells[5].startswith("1.0x")
