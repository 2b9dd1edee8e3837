"""A throwaway model (measuring what adding one costs, #30): a two-conv G and critic for 28 / 32 px images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from gan_lab.models import Critic, Generator, plan_model


class TinyConvBody(nn.Module):
    """Critic body: conv (trunk), conv + flatten (last block, minibatch std's channel in), Linear (head)."""

    def __init__(self, channels_in: int, std_extra: int, width: int, side: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, width, 4, 2, 1)
        self.conv2 = nn.Conv2d(width + std_extra, 2 * width, 4, 2, 1)
        self.linear = nn.Linear(2 * width * (side // 4) ** 2, 1)
        self.features = self.linear.in_features

    def trunk(self, x: Tensor) -> Tensor:
        return nn.functional.leaky_relu(self.conv1(x), 0.2)

    def last_block(self, h: Tensor) -> Tensor:
        return nn.functional.leaky_relu(self.conv2(h), 0.2).flatten(1)

    def head(self, features: Tensor) -> Tensor:
        return self.linear(features)


def tinyconv(shape: tuple[int, ...], z_dim: int, width: int, conditional: bool, pack: int, minibatch_std: int,
             n_classes: int = 0, augment: Sequence[str] = ()) -> tuple[Generator, Critic]:
    """G: linear -> (2w, s/4, s/4) -> up-conv -> up-conv -> tanh; the critic mirrors it (TinyConvBody)."""
    plan = plan_model(shape, z_dim=z_dim, conditional=conditional, n_classes=n_classes, pack=pack,
                      minibatch_std=minibatch_std, augment=augment, width=width)
    channels, side = shape[0], shape[1]
    s = side // 4
    net = nn.Sequential(nn.Linear(plan.g_in, 2 * width * s * s), nn.Unflatten(1, (2 * width, s, s)), nn.ReLU(),
                        nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
                        nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh())
    return plan.wrap(net, TinyConvBody(plan.critic_channels, plan.std_extra, width, side))
