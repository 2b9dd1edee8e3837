"""Generators and critics. Each builder returns a (G, critic) pair for a data shape.

The data shape (channels, image size, or the dimension of tabular data) is passed
in at build time by the CLI from the data set, never written into YAML by hand.
Critics output one raw score per sample (no sigmoid): the losses fold the sigmoid
into softplus where they need a probability.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gan_lab.errors import GanLabError

CRITIC_NORMS = ("none", "layer", "batch", "spectral")


class Generator(nn.Module):
    """Maps z of shape (B, z_dim), and a label y when conditional, to samples (B, *shape)."""

    def __init__(self, net: nn.Module, z_dim: int, shape: tuple[int, ...], n_classes: int = 0):
        super().__init__()
        self.net, self.z_dim, self.shape, self.n_classes = net, z_dim, tuple(shape), n_classes
        # conditional (cGAN, Mirza & Osindero 2014): a learned label embedding joins z at the input
        self.embed = nn.Embedding(n_classes, z_dim) if n_classes else None

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional generator needs labels y")
            z = torch.cat([z, self.embed(y)], dim=1)
        return self.net(z).view(z.shape[0], *self.shape)


class Critic(nn.Module):
    """Maps samples (B, *shape), and a label y when conditional, to one score per sample (B,)."""

    def __init__(self, net: nn.Sequential, norm: str, n_classes: int = 0):
        super().__init__()
        self.net, self.norm, self.n_classes = net, norm, n_classes
        features = net[-1].in_features  # the head is a Linear layer on the features h
        # projection critic (Miyato & Koyama 2018): score = head(h) + <embed(y), h>
        self.embed = nn.Embedding(n_classes, features) if n_classes else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.net[:-1](x)
        out = self.net[-1](h).view(-1)
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional critic needs labels y")
            out = out + (self.embed(y) * h).sum(dim=1)
        return out


def _check_norm(norm: str) -> None:
    if norm not in CRITIC_NORMS:
        raise GanLabError(f"model.critic_norm={norm!r} is not a critic normalisation gan-lab knows. "
                          f"Choose one of {', '.join(CRITIC_NORMS)}, e.g. model.critic_norm=layer.")


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if not (isinstance(value, int) and value >= 1):
            raise GanLabError(f"model.{key}={value} is out of range: it must be a whole number >= 1.")


def _norm_1d(norm: str, width: int) -> list[nn.Module]:
    return {"layer": [nn.LayerNorm(width)], "batch": [nn.BatchNorm1d(width)]}.get(norm, [])


def _norm_2d(norm: str, channels: int) -> list[nn.Module]:
    # GroupNorm with one group normalises over (C, H, W) per sample: layer norm for conv
    # maps, the WGAN-GP paper's drop-in replacement for batch norm in the critic.
    return {"layer": [nn.GroupNorm(1, channels)], "batch": [nn.BatchNorm2d(channels)]}.get(norm, [])


def _spectral(layer: nn.Module, norm: str) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if norm == "spectral" else layer


def _classes(conditional: bool, n_classes: int) -> int:
    if not conditional:
        return 0
    if n_classes < 2:
        raise GanLabError("model.conditional=true needs labelled data (mnist, fashion_mnist, cifar10, or "
                          "ring8 / grid25 with the mode index as label), but this data set has no labels. "
                          "Use model.conditional=false or labelled data.")
    return n_classes


def mlp(shape: tuple[int, ...], z_dim: int = 2, hidden: int = 256, depth: int = 3,
        generator_norm: str = "none", critic_norm: str = "none", conditional: bool = False,
        n_classes: int = 0) -> tuple[Generator, Critic]:
    """Fully connected G and critic with `depth` hidden ReLU layers of width `hidden`.

    Image data is flattened for the critic and the generator ends in tanh (images live
    in [-1, 1]); 2-D and tabular data get a linear output.
    """
    _check_positive(z_dim=z_dim, hidden=hidden, depth=depth)
    _check_norm(critic_norm)
    if generator_norm not in ("none", "batch"):
        raise GanLabError(f"model.generator_norm={generator_norm!r} is not known: choose none or batch.")
    out_dim = math.prod(shape)
    n_classes = _classes(conditional, n_classes)

    g_layers: list[nn.Module] = []
    width_in = 2 * z_dim if n_classes else z_dim  # z and the label embedding, concatenated
    for _ in range(depth):
        g_layers += [nn.Linear(width_in, hidden), *_norm_1d(generator_norm, hidden), nn.ReLU()]
        width_in = hidden
    g_layers.append(nn.Linear(hidden, out_dim))
    if len(shape) > 1:
        g_layers.append(nn.Tanh())

    d_layers: list[nn.Module] = [nn.Flatten()]
    width_in = out_dim
    for _ in range(depth):
        d_layers += [_spectral(nn.Linear(width_in, hidden), critic_norm), *_norm_1d(critic_norm, hidden),
                     nn.LeakyReLU(0.2) if len(shape) > 1 else nn.ReLU()]
        width_in = hidden
    d_layers.append(_spectral(nn.Linear(hidden, 1), critic_norm))
    return (Generator(nn.Sequential(*g_layers), z_dim, shape, n_classes),
            Critic(nn.Sequential(*d_layers), critic_norm, n_classes))


def dcgan(shape: tuple[int, ...], z_dim: int = 100, width: int = 64, critic_norm: str = "layer",
          conditional: bool = False, n_classes: int = 0) -> tuple[Generator, Critic]:
    """DCGAN-style convolutional G and critic for (C, H, W) images with H = W in {28, 32}.

    G: z -> linear -> (4w, s, s) -> up-conv -> (2w, 2s, 2s) -> up-conv -> (C, 4s, 4s), s = H/4,
    batch norm and ReLU inside, tanh out. The critic mirrors it with strided convolutions
    and LeakyReLU(0.2).
    """
    _check_positive(z_dim=z_dim, width=width)
    _check_norm(critic_norm)
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in (28, 32):
        raise GanLabError(f"model=dcgan needs square 28x28 or 32x32 images, but the data has shape "
                          f"{tuple(shape)}. Use model=mlp for 2-D or tabular data.")
    channels, size = shape[0], shape[1]
    n_classes = _classes(conditional, n_classes)
    s = size // 4
    G = nn.Sequential(
        nn.Linear(2 * z_dim if n_classes else z_dim, 4 * width * s * s),  # z (+ label embedding)
        nn.Unflatten(1, (4 * width, s, s)),
        nn.BatchNorm2d(4 * width), nn.ReLU(),
        nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1),
        nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.ConvTranspose2d(2 * width, channels, 4, 2, 1),
        nn.Tanh(),
    )
    critic = nn.Sequential(
        _spectral(nn.Conv2d(channels, width, 4, 2, 1), critic_norm), nn.LeakyReLU(0.2),
        _spectral(nn.Conv2d(width, 2 * width, 4, 2, 1), critic_norm), *_norm_2d(critic_norm, 2 * width),
        nn.LeakyReLU(0.2),
        _spectral(nn.Conv2d(2 * width, 4 * width, 3, 1, 1), critic_norm), *_norm_2d(critic_norm, 4 * width),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        _spectral(nn.Linear(4 * width * s * s, 1), critic_norm),
    )
    return Generator(G, z_dim, shape, n_classes), Critic(critic, critic_norm, n_classes)
