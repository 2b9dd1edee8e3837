"""A critic is any body that maps a batch to features: packing, minibatch std, projection and
DiffAugment compose around it (gan_lab.models.Critic), and old checkpoints still load."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.testing import assert_close

from conftest import build_model
from gan_lab.losses import Wasserstein
from gan_lab.models import Critic, MinibatchStd
from gan_lab.training.train import critic_step


class TinyResidualBody(nn.Module):
    """A residual conv critic body, as the ResNet / R3GAN critics will be: no nn.Sequential, no Linear at its end."""

    def __init__(self, channels: int, width: int = 6, std_channels: int = 0):
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, 2, 1)
        self.residual = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(width, width, 3, 1, 1))
        self.last = nn.Conv2d(width + std_channels, width, 3, 2, 1)  # minibatch std's channel comes in here
        self.out = nn.Linear(width, 1)
        self.features = width

    def trunk(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        return h + self.residual(h)

    def last_block(self, h: Tensor) -> Tensor:
        return nn.functional.leaky_relu(self.last(h), 0.2).mean(dim=(2, 3))  # (B, width)

    def head(self, features: Tensor) -> Tensor:
        return self.out(features)


def test_a_residual_body_is_a_packed_grouped_critic() -> None:
    torch.manual_seed(0)
    body = TinyResidualBody(channels=2 * 1, std_channels=1)  # pack=2 stacks two 1-channel images
    critic = Critic(body, "none", pack=2, group=4)
    x = torch.randn(16, 1, 12, 12)
    scores = critic(x)
    assert scores.shape == (8,)  # one score per pack
    # groups of 4 packs are scored together and apart from the other group
    swapped = torch.cat([x[8:], x[:8]])
    assert_close(critic(swapped), torch.cat([scores[4:], scores[:4]]))
    # by hand: packs on channels, the spread before the last block, then the body's head
    packed = x.reshape(8, 2, 12, 12)
    expected = body.head(body.last_block(MinibatchStd(4)(body.trunk(packed)))).view(-1)
    assert_close(scores, expected)
    # and it trains: a critic step with a gradient penalty runs through it
    opt = torch.optim.SGD(critic.parameters(), lr=0.01)
    stats = critic_step(_identity_generator((1, 12, 12)), critic, Wasserstein(lambda_gp=10.0), opt,
                        torch.randn(16, 1, 12, 12), torch.randn(16, 1 * 12 * 12))
    assert torch.isfinite(stats["loss/gradient_penalty"])


def test_a_residual_body_gets_the_projection_for_labels() -> None:
    torch.manual_seed(0)
    body = TinyResidualBody(channels=1, std_channels=1)
    critic = Critic(body, "none", n_classes=10, group=4)
    x, y = torch.randn(8, 1, 12, 12), torch.arange(8)
    scores = critic(x, y)
    assert scores.shape == (8,)  # one score per sample
    features = body.last_block(MinibatchStd(4)(body.trunk(x)))
    # projection critic: score = head(h) + <embed(y), h>
    assert_close(scores, body.head(features).view(-1) + (critic.embed(y) * features).sum(dim=1))


def _identity_generator(shape: tuple[int, ...]) -> nn.Module:
    G = nn.Unflatten(1, shape)
    G.z_dim, G.n_classes = 1 * 12 * 12, 0
    forward = G.forward
    G.forward = lambda z, y=None: forward(z)
    return G


# The critics' state_dict keys as gan-lab wrote them before critics took any body (main, f41c8f8): the
# MinibatchStd layer then sat inside the list of layers, so the layers after it are numbered one higher.
OLD_MLP_KEYS = ["net.1.weight", "net.1.bias", "net.3.weight", "net.3.bias", "net.6.weight", "net.6.bias",
                "net.8.weight", "net.8.bias"]
OLD_DCGAN_KEYS = ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.3.weight", "net.3.bias",
                  "net.6.weight", "net.6.bias", "net.7.weight", "net.7.bias", "net.10.weight", "net.10.bias"]


def test_critics_of_older_checkpoints_load() -> None:
    for build, old_keys in ((lambda: build_model("mlp", (2,), hidden=8, depth=3, minibatch_std=4), OLD_MLP_KEYS),
                            (lambda: build_model("dcgan", (1, 28, 28), z_dim=8, width=4, minibatch_std=4), OLD_DCGAN_KEYS)):
        torch.manual_seed(0)
        _, written = build()
        old = dict(zip(old_keys, written.state_dict().values(), strict=True))
        torch.manual_seed(1)
        _, loaded = build()
        loaded.load_state_dict(old)
        x = torch.randn(8, *((2,) if len(old_keys) == 8 else (1, 28, 28)))
        assert_close(loaded(x), written(x))
    # without minibatch std the numbering never changed
    _, plain = build_model("mlp", (2,), hidden=8, depth=3)
    assert list(plain.state_dict()) == ["net.1.weight", "net.1.bias", "net.3.weight", "net.3.bias", "net.5.weight",
                                        "net.5.bias", "net.7.weight", "net.7.bias"]
