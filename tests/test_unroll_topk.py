"""Cures on the generator's side: the unrolled GAN's look-ahead (Metz et al. 2017) and top-k training (Sinha et al. 2020)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from conftest import TINY, TINY_DCGAN, TINY_MLP, build_model, run_cli, straight_and_resumed, user_error
from gan_lab.losses import NonSaturating, RSGAN, Wasserstein
from gan_lab.runs.checkpoint import load_checkpoint
from gan_lab.training.settings import TrainSettings
from gan_lab.training.train import critic_objective, generator_step
from gan_lab.training.unroll import lookahead

OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.5, 0.99), weight_decay=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.0, 0.9), weight_decay=1e-2),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),
    "rmsprop_centered_momentum": lambda p: torch.optim.RMSprop(p, lr=1e-3, centered=True, momentum=0.5),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, dampening=0.1, weight_decay=1e-3),
}


def nets(seed: int = 0, dtype: torch.dtype = torch.float32, **kw):
    torch.manual_seed(seed)
    G, critic = build_model("mlp", (2,), z_dim=2, hidden=8, depth=2, **kw)
    return G.to(dtype), critic.to(dtype)


def batch(n: int = 16, seed: int = 1, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=dtype), torch.randn(n, 2, generator=g, dtype=dtype)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_lookahead_update_is_the_critic_optimizers_own_step(name: str) -> None:
    G, critic = nets()
    opt = OPTIMIZERS[name](critic.parameters())
    x, z = batch()
    loss = NonSaturating()
    for _ in range(2):  # moments and step counts that are not zero
        opt.zero_grad()
        critic_objective(critic, loss, x, G(z).detach())[0].backward()
        opt.step()
    x, z = batch(seed=2)
    fake = G(z).detach()
    ahead = lookahead(critic, opt, 1, lambda c: critic_objective(c, loss, x, fake)[0])
    opt.zero_grad()
    critic_objective(critic, loss, x, fake)[0].backward()
    opt.step()  # the real step from the same point, on the same batch
    for key, param in critic.named_parameters():
        assert_close(ahead.state[key], param, rtol=1e-5, atol=1e-7)


def test_the_lookahead_leaves_the_critic_its_buffers_and_its_optimizer_as_they_were() -> None:
    G, critic = nets(critic_norm="spectral")  # buffers a training-mode forward moves (power iteration)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    x, z = batch()
    opt.zero_grad()
    critic_objective(critic, Wasserstein(lambda_gp=1.0), x, G(z).detach())[0].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    before = copy.deepcopy((critic.state_dict(), opt.state_dict()))
    ahead = lookahead(critic, opt, 3, lambda c: critic_objective(c, Wasserstein(lambda_gp=1.0), x, G(z))[0])
    NonSaturating().g_loss(None, ahead(G(z))).backward()  # G's loss through the look-ahead
    after = (critic.state_dict(), opt.state_dict())
    for key, value in before[0].items():
        assert torch.equal(after[0][key], value), key
    for param, state in before[1]["state"].items():
        for key, value in state.items():
            assert torch.equal(after[1]["state"][param][key], value), key
    assert all(p.grad is None for p in critic.parameters())  # G's backward put no gradient on the critic
    assert not torch.equal(ahead.state["net.1.parametrizations.weight.original"], critic.state_dict()[
        "net.1.parametrizations.weight.original"])  # it did look ahead
    assert all(p.grad is not None for p in G.parameters())


def unrolled_generator_loss(G, critic, opt, x, z, z_g, steps: int, detach: bool = False) -> torch.Tensor:
    loss = NonSaturating()
    # loss.d_loss itself, not critic_objective, which takes scores to float32 (for bf16 autocast)
    ahead = lookahead(critic, opt, steps, lambda c: loss.d_loss(c(x), c(G(z))))
    if detach:  # the first-order shortcut many ports take: the look-ahead weights as constants
        ahead.state = {k: v.detach() for k, v in ahead.state.items()}
    return loss.g_loss(None, ahead(G(z_g)))


def test_the_generators_gradient_flows_through_the_lookahead_updates() -> None:
    """Autograd's gradient of f(theta_G, theta_D^2(theta_G)) equals finite differences of it (float64)."""
    G, critic = nets(dtype=torch.float64)
    opt = torch.optim.Adam(critic.parameters(), lr=0.05, betas=(0.5, 0.9))
    x, z = batch(dtype=torch.float64)
    _, z_g = batch(seed=3, dtype=torch.float64)
    opt.zero_grad()
    critic_objective(critic, NonSaturating(), x, G(z).detach())[0].backward()
    opt.step()
    weight = G.net[0].weight
    (grad,) = torch.autograd.grad(unrolled_generator_loss(G, critic, opt, x, z, z_g, 2), weight)
    (first_order,) = torch.autograd.grad(unrolled_generator_loss(G, critic, opt, x, z, z_g, 2, detach=True), weight)
    h = 1e-6
    for index in [(0, 0), (1, 1), (3, 0)]:
        with torch.no_grad():
            weight[index] += h
        up = unrolled_generator_loss(G, critic, opt, x, z, z_g, 2).item()
        with torch.no_grad():
            weight[index] -= 2 * h
        down = unrolled_generator_loss(G, critic, opt, x, z, z_g, 2).item()
        with torch.no_grad():
            weight[index] += h
        assert_close(grad[index].item(), (up - down) / (2 * h), rtol=1e-5, atol=1e-9)
    assert not torch.allclose(grad, first_order, rtol=1e-3)  # the second term is there, and not small


def test_topk_trains_on_the_best_scored_fakes_only() -> None:
    G, critic = nets()
    _, z = batch()
    opt = torch.optim.SGD(G.parameters(), lr=0.0)
    stats = generator_step(G, critic, NonSaturating(), opt, z, keep=0.25)
    with torch.no_grad():
        scores = critic(G(z))
    best = scores.topk(4).indices
    assert_close(stats["loss/generator"], NonSaturating().g_loss(None, scores[best]))
    grads = [p.grad.clone() for p in G.parameters()]
    G.zero_grad()
    NonSaturating().g_loss(None, critic(G(z[best]))).backward()  # the same loss on the 4 best fakes alone
    for got, expected in zip(grads, (p.grad for p in G.parameters())):
        assert_close(got, expected)


def test_topk_with_a_relativistic_loss_keeps_the_reals_paired_with_the_kept_fakes() -> None:
    G, critic = nets()
    x, z = batch()
    opt = torch.optim.SGD(G.parameters(), lr=0.0)
    stats = generator_step(G, critic, RSGAN(), opt, z, x=x, keep=0.5)
    with torch.no_grad():
        fake_scores, real_scores = critic(G(z)), critic(x)
    best = fake_scores.topk(8).indices
    assert_close(stats["loss/generator"], RSGAN().g_loss(real_scores[best], fake_scores[best]))


def test_the_kept_fraction_decays_from_one_to_topk() -> None:
    from omegaconf import OmegaConf

    from test_config import compose_train

    def settings(*overrides: str) -> TrainSettings:  # as the CLI builds them: conf/train.yaml's defaults
        return TrainSettings(**OmegaConf.to_container(compose_train(*overrides).train, resolve=True))

    decaying = settings("train.topk=0.5", "train.topk_decay=0.9")
    assert [decaying.kept_fraction(s) for s in (1, 99, 100, 250)] == [1.0, 1.0, 0.9, 0.9 ** 2]
    assert decaying.kept_fraction(1000) == 0.5  # 0.9 ** 10 < 0.5: the floor
    assert settings().kept_fraction(5000) == 1.0  # topk=1: off


@pytest.mark.parametrize("cure", [["loss=r3gan", "loss.unroll=1", "train.topk=0.5", "model.pack=2"]] + [
    pytest.param(cure, marks=pytest.mark.slow)  # the combination above covers both in the quick tier
    for cure in (["loss=nonsaturating", "loss.unroll=2"], ["loss.unroll=1"], ["loss=wgan_clip", "loss.unroll=1"],
                 ["train.topk=0.5", "train.topk_decay=0.5"])])
def test_generator_side_cures_train_from_the_cli_and_resume_exactly(cure: list[str], tmp_path: Path) -> None:
    common = [*TINY_MLP, "train.batch_size=16", "train.checkpoint_every=3", "train.log_every=3",
              "train.sample_every=3", "device=cpu", "threads=1", "metrics=false", *cure]
    straight, resumed = straight_and_resumed(tmp_path, common)
    for net in ("G", "critic"):
        for key, value in straight[net].items():
            assert torch.equal(resumed[net][key], value), key


def test_unroll_changes_only_the_generators_update(tmp_path: Path) -> None:
    """Same seed: the critic's first update is the same with and without the look-ahead, G's is not."""
    for name, extra in (("plain", []), ("unrolled", ["loss.unroll=3"])):
        run_cli("train", *TINY_MLP, "train.steps=1", "train.batch_size=16", "device=cpu", "threads=1",
                "metrics=false", "loss=nonsaturating", *extra, f"hydra.run.dir={tmp_path / name}")
    plain, unrolled = load_checkpoint(tmp_path / "plain"), load_checkpoint(tmp_path / "unrolled")
    for key, value in plain["critic"].items():
        assert torch.equal(unrolled["critic"][key], value), key
    assert not torch.equal(unrolled["G"]["net.0.weight"], plain["G"]["net.0.weight"])


@pytest.mark.parametrize("cure", ["loss.unroll=1", "train.topk=0.5"])
def test_generator_side_cures_train_dcgan_on_tiny_mnist(cure: str, tmp_path: Path, tiny_mnist_root: Path) -> None:
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", "data.download=false", *TINY, *TINY_DCGAN,
            "loss=nonsaturating", cure, f"hydra.run.dir={tmp_path}")
    assert load_checkpoint(tmp_path)["step"] == 4


@pytest.mark.parametrize("overrides, fragment", [
    (["loss.unroll=-1"], "loss.unroll=-1 is out of range"),
    (["loss.unroll=1.5"], "loss.unroll=1.5 is out of range"),
    (["loss.unroll=2", "+optimizer.amsgrad=true"], "does not support the critic optimizer's amsgrad=true"),
    (["loss.unroll=1", "train.compile=true"], "loss.unroll with train.compile is not supported"),
    (["train.topk=0"], "train.topk=0 is out of range"),
    (["train.topk=1.5"], "train.topk=1.5 is out of range"),
    (["train.topk_decay=0"], "train.topk_decay=0 is out of range"),
])
def test_bad_generator_side_cure_settings_are_explained(overrides: list[str], fragment: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert fragment in user_error(capsys, "train", *TINY, *TINY_MLP, *overrides, f"hydra.run.dir={tmp_path}")
