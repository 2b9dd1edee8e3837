"""Generators and critics. Each builder returns a (G, critic) pair for a data shape.

The data shape (channels, image size, or the dimension of tabular data) is passed
in at build time by the CLI from the data set, never written into YAML by hand.
Critics output one raw score per sample (no sigmoid): the losses fold the sigmoid
into softplus where they need a probability.

A builder (what conf/model/<name>.yaml's `_target_` names, here or in a module beside this one):
- takes the YAML's keys with no Python defaults (the YAML holds each default once), plus what gan-lab
  passes at build time (gan_lab.runs.rebuild.BUILD_TIME: shape, n_classes, augment);
- calls `plan_model` first with the shared options and its own sizes: the range checks, the label
  count and DiffAugment are done there, never by the builder;
- builds G's network from `plan.g_in` and a critic body (CriticBody: trunk, last_block, head,
  features) from `plan.critic_channels` (or `critic_features` when flat) and `plan.std_extra`, the
  channel minibatch std adds before the last block;
- returns `plan.wrap(net, body)`, which puts packing, minibatch std, the label's projection and
  DiffAugment around them. Its networks keep the CUDA-graph contract (gan_lab.capture).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from gan_lab.augment import DiffAugment, parse_policy
from gan_lab.errors import GanLabError

CRITIC_NORMS = ("none", "layer", "batch", "spectral")


class Generator(nn.Module):
    """Maps z of shape (B, z_dim), and a label y when conditional, to samples (B, *shape)."""

    capturable = True  # its forward keeps gan_lab.capture's contract (the net must too: every builder's does)
    cond_width = 0  # width of a float conditional vector it takes as y (a table's, gan_lab.tables_model); 0: none
    # a term the generator step adds to G's loss, auxiliary_loss(y) -> scalar, of G's last forward (None: none)
    auxiliary_loss: Callable[[Tensor | None], Tensor] | None = None

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


class CriticBody(Protocol):
    """What Critic needs of the network it wraps: any nn.Module with these three parts.

    trunk(x) maps the (packed) batch to the input of the last block; last_block(h) maps that, with
    minibatch std's one extra channel (or feature) when the critic has a group, to features (B, F),
    F = `features`; head(features) gives the scores (B, 1). A body built for minibatch std takes that
    extra channel in its last block: Critic inserts the layer between trunk and last_block.
    """

    features: int

    def trunk(self, x: Tensor) -> Tensor: ...

    def last_block(self, h: Tensor) -> Tensor: ...

    def head(self, features: Tensor) -> Tensor: ...


class SequentialBody(nn.Sequential):
    """A critic body from a list of layers: the trunk is layers[:split], the last block layers[split:-1]
    and the head the final Linear layer (split=None: the last block is empty, minibatch std meets the head)."""

    def __init__(self, *layers: nn.Module, split: int | None = None, numbered_with_std: bool = False):
        super().__init__(*layers)
        self.split = len(self) - 1 if split is None else split
        self.features = self[-1].in_features
        # Checkpoints written before critics took any body (gan-lab up to f41c8f8) kept the MinibatchStd
        # layer inside this list, at `split`: their later layers are numbered one higher (see below).
        self.numbered_with_std = numbered_with_std

    def trunk(self, x: Tensor) -> Tensor:
        return self._through(x, 0, self.split)

    def last_block(self, h: Tensor) -> Tensor:
        return self._through(h, self.split, len(self) - 1)

    def head(self, features: Tensor) -> Tensor:
        return self[-1](features)

    def _through(self, h: Tensor, start: int, stop: int) -> Tensor:
        # not self[start:stop]: slicing would build another SequentialBody
        for layer in list(self)[start:stop]:
            h = layer(h)
        return h

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # an older checkpoint has no layer at `split` (the parameter-free MinibatchStd sat there) and
        # numbers the layers after it one higher: renumber them, so its weights load as they were
        if self.numbered_with_std and not any(k.startswith(f"{prefix}{self.split}.") for k in state_dict):
            renamed = {}
            for key in [k for k in state_dict if k.startswith(prefix)]:
                index, dot, rest = key[len(prefix):].partition(".")
                if index.isdigit() and int(index) > self.split:
                    renamed[f"{prefix}{int(index) - 1}{dot}{rest}"] = state_dict.pop(key)
            state_dict.update(renamed)
        super()._load_from_state_dict(state_dict, prefix, *args)


class Critic(nn.Module):
    """Maps samples (B, *shape), and a label y when conditional, to scores: one per pack of `pack` samples.

    The network itself is any body (CriticBody: trunk, last_block, head). Four things compose around
    it, so neither the body nor the training loop changes for them: DiffAugment (`augment`, applied
    first, per sample), packing (PacGAN: `pack` consecutive samples scored jointly, B / pack scores,
    side by side or stacked along channels: the body takes pack x the data's channels), minibatch
    standard deviation (between trunk and last block, over groups of `group` consecutive packs) and
    the projection of the label (conditional).
    """

    def __init__(self, net: nn.Module, norm: str, n_classes: int = 0, pack: int = 1, group: int = 0,
                 augment: nn.Module | None = None):
        super().__init__()
        self.net, self.norm, self.n_classes = net, norm, n_classes  # `net`: the body (its state_dict keys)
        self.pack, self.group, self.augment = pack, group, augment
        self.minibatch_std = MinibatchStd(group) if group else None
        # projection critic (Miyato & Koyama 2018): score = head(h) + <embed(y), h>, h the body's features
        self.embed = nn.Embedding(n_classes, net.features) if n_classes else None

    @property
    def capturable(self) -> bool:
        """Whether its forward keeps gan_lab.capture's contract: yes, unless its body says capturable=False."""
        return getattr(self.net, "capturable", True)

    @property
    def not_capturable(self) -> str:
        """Why not (the body's own words), when capturable is False."""
        return getattr(self.net, "not_capturable", "has a critic body that declares capturable=False")

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if self.augment is not None:
            x = self.augment(x)
        if self.pack > 1:
            if x.shape[0] % self.pack:
                raise ValueError(f"a critic with pack={self.pack} needs a batch that is a multiple of it, "
                                 f"got {x.shape[0]} samples")
            # PacGAN: pack i is rows i*m .. i*m + m - 1, side by side (MLP) or stacked along channels (conv)
            x = x.reshape(x.shape[0] // self.pack, self.pack * x.shape[1], *x.shape[2:])
        h = self.net.trunk(x)
        if self.minibatch_std is not None:
            h = self.minibatch_std(h)  # the last block sees the group's spread
        h = self.net.last_block(h)
        out = self.net.head(h).view(-1)
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional critic needs labels y")
            out = out + (self.embed(y) * h).sum(dim=1)
        return out

    def pointwise(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """One score per sample (B,): each sample in a pack, and a minibatch-std group, of its own copies.

        A packed or grouped critic has no score for one sample alone; this slice of it (used for the
        critic landscape) is the score it gives a batch of nothing but that sample.
        """
        copies = self.pack * max(self.group, 1)
        if copies == 1:
            return self(x, y)
        repeated = None if y is None else y.repeat_interleave(copies)
        return self(x.repeat_interleave(copies, dim=0), repeated).view(len(x), -1).mean(dim=1)


class MinibatchStd(nn.Module):
    """Minibatch standard deviation (ProGAN, Karras et al. 2018; StyleGAN2): the group's spread as a feature.

    Appends one feature (one channel for conv maps): the standard deviation of each feature across
    a group of `group_size` rows, averaged over features, the same number for every row of the group.
    A collapsed generator gives groups of fakes almost no spread, which the critic then sees.
    """

    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    def forward(self, h: Tensor) -> Tensor:
        n, g = h.shape[0], self.group_size
        if n % g:
            raise ValueError(f"minibatch_std={g} needs a batch that is a multiple of it, got {n} rows")
        # Consecutive rows form a group (ProGAN and StyleGAN2 take strided rows i, i + n/g, ...): the
        # critic is fed [real | fake] batches concatenated, and a consecutive group of a batch that is
        # a multiple of g never straddles the border, so real and fake are never grouped together.
        groups = h.reshape(n // g, g, *h.shape[1:])
        std = (groups.var(dim=1, unbiased=False) + 1e-8).sqrt()  # ProGAN's eps keeps sqrt's gradient finite
        spread = std.flatten(1).mean(dim=1).repeat_interleave(g)  # (n,): one number per group
        return torch.cat([h, spread.view(n, 1, *(1,) * (h.dim() - 2)).expand(n, 1, *h.shape[2:])], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


def check_critic(critic: nn.Module, loss: Any, batch_size: int) -> list[str]:
    """Refuse a critic that builds but cannot train correctly with this loss and batch size; notes on the rest.

    Returns a note for each combination that trains but means something else than a reader might expect.
    """
    if critic.norm == "batch" and loss.penalised:
        raise GanLabError(
            f"A gradient penalty on a critic with batch norm is refused ({', '.join(p.tag for p in loss.penalties())} "
            "on): the penalty constrains the "
            "gradient of each sample's score with respect to that sample, but batch norm makes every "
            "score depend on the whole batch, so the per-sample gradient is not the one penalised. "
            "Use model.critic_norm=layer (the WGAN-GP paper's advice) or none, or turn the penalty off "
            "(loss.lambda_gp, loss.lambda_r1, loss.lambda_r2, loss.lambda_dragan = 0).")
    pack, group = getattr(critic, "pack", 1), getattr(critic, "group", 0)
    if batch_size % (pack * max(group, 1)):
        unit = pack * max(group, 1)
        raise GanLabError(
            f"train.batch_size={batch_size} does not split into the critic's packs and groups: model.pack={pack} "
            f"scores {pack} samples as one and model.minibatch_std={group} groups {max(group, 1)} packs, so the "
            f"batch size must be a multiple of {unit}; otherwise a pack or group would mix real and fake samples "
            f"(or be left incomplete). Use e.g. train.batch_size={max(unit, batch_size // unit * unit)}.")
    notes = []
    if group and loss.penalised:
        # allowed, as ProGAN (WGAN-GP) and StyleGAN2 (R1) do, but the penalty means something else
        notes.append(f"model.minibatch_std={group} couples the samples of a group, so the "
                     f"gradient penalty takes the gradient of the group's summed score with respect to each "
                     f"sample (its own score's gradient plus the other scores' through the group's spread), "
                     f"as ProGAN and StyleGAN2 do.")
    return notes


def _positive(key: str, value: Any) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise GanLabError(f"model.{key}={value} is out of range: it must be a whole number >= 1.")


@dataclass(frozen=True)
class ModelPlan:
    """What every model builder is handed once `plan_model` has checked the shared options: plain sizes.

    A builder (conf/model/<name>.yaml's `_target_`) calls `plan_model` first, builds G's network and a
    critic body (CriticBody: trunk / last_block / head) from these sizes, and returns `plan.wrap(...)`.
    It needs nothing else of this module: the cures (packing, minibatch std, the label's projection,
    DiffAugment) and the label's embedding in G are applied around its networks by `wrap`.
    """

    shape: tuple[int, ...]       # one sample's shape, as the data set gives it
    z_dim: int                   # noise dimension
    n_classes: int               # labels G and the critic take: 0 when unconditional
    pack: int                    # samples the critic scores as one (PacGAN)
    minibatch_std: int           # minibatch std's group size: 0 when off
    augment: nn.Module | None    # DiffAugment of the data's policy, applied first by the critic (None: off)
    critic_norm: str             # what check_critic reads (batch norm is refused with a penalty)

    @property
    def g_in(self) -> int:
        """Width of G's network's input: z, and beside it the label's embedding (z_dim wide) when conditional."""
        return 2 * self.z_dim if self.n_classes else self.z_dim

    @property
    def critic_channels(self) -> int:
        """Input channels of a conv critic body: a pack's images are stacked along channels (PacGAN's code)."""
        return self.pack * self.shape[0]

    @property
    def critic_features(self) -> int:
        """Input features of a flat critic body: a pack's samples, flattened, side by side."""
        return self.pack * math.prod(self.shape)

    @property
    def std_extra(self) -> int:
        """Channels (or features) minibatch std adds to the input of the body's last block: 1 when on, else 0."""
        return 1 if self.minibatch_std else 0

    def wrap(self, net: nn.Module, body: nn.Module,
             generator: Callable[[nn.Module, int, tuple[int, ...], int], Generator] | None = None
             ) -> tuple[Generator, Critic]:
        """(G, critic): G's network as a Generator (the label's embedding joins z), the body inside the Critic.

        generator: a Generator subclass whose network takes the label itself (e.g. conditional batch norm),
        called as generator(net, z_dim, shape, n_classes); by default Generator, whose net takes `g_in`.
        """
        make = generator or Generator
        return (make(net, self.z_dim, self.shape, self.n_classes),
                Critic(body, self.critic_norm, self.n_classes, self.pack, self.minibatch_std, self.augment))


def plan_model(shape: tuple[int, ...], *, z_dim: int, conditional: bool, n_classes: int, pack: int,
               minibatch_std: int, augment: Sequence[str], critic_norm: str = "none",
               critic_norms: Sequence[str] = ("none",), **sizes: int) -> ModelPlan:
    """Check what every model shares and the builder's own `sizes` (whole numbers >= 1); the plan to build from.

    Refuses (GanLabError) a size < 1, a critic_norm outside `critic_norms`, pack < 1, minibatch_std of 1
    or < 0, labels asked of unlabelled data, packing with labels, and a DiffAugment policy the data's
    shape cannot take. n_classes is the data's label count; the plan's is 0 unless conditional.
    """
    for key, value in {"z_dim": z_dim, **sizes, "pack": pack}.items():
        _positive(key, value)
    if critic_norm not in critic_norms:
        raise GanLabError(f"model.critic_norm={critic_norm!r} is not a critic normalisation this model takes. "
                          f"Choose one of {', '.join(critic_norms)}, e.g. model.critic_norm={critic_norms[0]}.")
    if not (isinstance(minibatch_std, int) and not isinstance(minibatch_std, bool) and minibatch_std >= 0
            and minibatch_std != 1):
        raise GanLabError(f"model.minibatch_std={minibatch_std} is out of range: it is the group size of the "
                          f"minibatch standard deviation, a whole number >= 2 (ProGAN / StyleGAN2: 4), or 0 "
                          f"for off (a group of 1 has no spread).")
    if conditional and n_classes < 2:
        raise GanLabError("model.conditional=true needs labelled data (mnist, fashion_mnist, cifar10, or "
                          "ring8 / grid25 with the mode index as label), but this data set has no labels. "
                          "Use model.conditional=false or labelled data.")
    n_classes = n_classes if conditional else 0
    if pack > 1 and n_classes:
        raise GanLabError(f"model.pack={pack} with model.conditional=true is refused: the projection critic "
                          f"scores one sample against its own label, but a pack holds {pack} samples with "
                          f"{pack} different labels, and PacGAN defines packing for unconditional GANs only. "
                          f"Use model.pack=1 or model.conditional=false.")
    policy = parse_policy(augment, shape)
    return ModelPlan(tuple(shape), z_dim, n_classes, pack, minibatch_std, DiffAugment(policy) if policy else None,
                     critic_norm)


def _norm_1d(norm: str, width: int) -> list[nn.Module]:
    return {"layer": [nn.LayerNorm(width)], "batch": [nn.BatchNorm1d(width)]}.get(norm, [])


def _norm_2d(norm: str, channels: int) -> list[nn.Module]:
    # GroupNorm with one group normalises over (C, H, W) per sample: layer norm for conv
    # maps, the WGAN-GP paper's drop-in replacement for batch norm in the critic.
    return {"layer": [nn.GroupNorm(1, channels)], "batch": [nn.BatchNorm2d(channels)]}.get(norm, [])


def _spectral(layer: nn.Module, norm: str) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if norm == "spectral" else layer


def mlp(shape: tuple[int, ...], z_dim: int, hidden: int, depth: int, generator_norm: str, critic_norm: str,
        conditional: bool, pack: int, minibatch_std: int, n_classes: int = 0,
        augment: Sequence[str] = ()) -> tuple[Generator, Critic]:
    """Fully connected G and critic with `depth` hidden ReLU layers of width `hidden` (conf/model/mlp.yaml).

    Image data is flattened for the critic and the generator ends in tanh (images live
    in [-1, 1]); 2-D and tabular data get a linear output. The critic takes `pack` samples
    side by side (PacGAN) and, with minibatch_std > 0, its last hidden layer also sees the
    group's spread.
    """
    plan = plan_model(shape, z_dim=z_dim, conditional=conditional, n_classes=n_classes, pack=pack,
                      minibatch_std=minibatch_std, augment=augment, critic_norm=critic_norm,
                      critic_norms=CRITIC_NORMS, hidden=hidden, depth=depth)
    if generator_norm not in ("none", "batch"):
        raise GanLabError(f"model.generator_norm={generator_norm!r} is not known: choose none or batch.")
    out_dim = math.prod(shape)

    g_layers: list[nn.Module] = []
    width_in = plan.g_in
    for _ in range(depth):
        g_layers += [nn.Linear(width_in, hidden), *_norm_1d(generator_norm, hidden), nn.ReLU()]
        width_in = hidden
    g_layers.append(nn.Linear(hidden, out_dim))
    if len(shape) > 1:
        g_layers.append(nn.Tanh())

    d_layers: list[nn.Module] = [nn.Flatten()]
    width_in = plan.critic_features
    for i in range(depth):
        if i == depth - 1:  # the last block: Critic's minibatch std adds one feature here
            split = len(d_layers)
            width_in += plan.std_extra
        d_layers += [_spectral(nn.Linear(width_in, hidden), critic_norm), *_norm_1d(critic_norm, hidden),
                     nn.LeakyReLU(0.2) if len(shape) > 1 else nn.ReLU()]
        width_in = hidden
    d_layers.append(_spectral(nn.Linear(hidden, 1), critic_norm))
    body = SequentialBody(*d_layers, split=split, numbered_with_std=bool(minibatch_std))
    return plan.wrap(nn.Sequential(*g_layers), body)


def dcgan(shape: tuple[int, ...], z_dim: int, width: int, critic_norm: str, conditional: bool, pack: int,
          minibatch_std: int, n_classes: int = 0, augment: Sequence[str] = ()) -> tuple[Generator, Critic]:
    """DCGAN-style convolutional G and critic for (C, H, W) images with H = W in {28, 32} (conf/model/dcgan.yaml).

    G: z -> linear -> (4w, s, s) -> up-conv -> (2w, 2s, 2s) -> up-conv -> (C, 4s, 4s), s = H/4,
    batch norm and ReLU inside, tanh out. The critic mirrors it with strided convolutions
    and LeakyReLU(0.2); it takes `pack` images stacked along channels (PacGAN's code) and, with
    minibatch_std > 0, its last conv block gets the group's spread as an extra channel (StyleGAN2).
    """
    plan = plan_model(shape, z_dim=z_dim, conditional=conditional, n_classes=n_classes, pack=pack,
                      minibatch_std=minibatch_std, augment=augment, critic_norm=critic_norm,
                      critic_norms=CRITIC_NORMS, width=width)
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in (28, 32):
        raise GanLabError(f"model=dcgan needs square 28x28 or 32x32 images, but the data has shape "
                          f"{tuple(shape)}. Use model=mlp for 2-D or tabular data.")
    channels, size = shape[0], shape[1]
    s = size // 4
    G = nn.Sequential(
        nn.Linear(plan.g_in, 4 * width * s * s),  # z (+ label embedding)
        nn.Unflatten(1, (4 * width, s, s)),
        nn.BatchNorm2d(4 * width), nn.ReLU(),
        nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1),
        nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.ConvTranspose2d(2 * width, channels, 4, 2, 1),
        nn.Tanh(),
    )
    trunk = [
        _spectral(nn.Conv2d(plan.critic_channels, width, 4, 2, 1), critic_norm), nn.LeakyReLU(0.2),
        _spectral(nn.Conv2d(width, 2 * width, 4, 2, 1), critic_norm), *_norm_2d(critic_norm, 2 * width),
        nn.LeakyReLU(0.2),
    ]
    last_block = [  # Critic's minibatch std adds the spread as one more channel here
        _spectral(nn.Conv2d(2 * width + plan.std_extra, 4 * width, 3, 1, 1), critic_norm),
        *_norm_2d(critic_norm, 4 * width),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
    ]
    body = SequentialBody(*trunk, *last_block, _spectral(nn.Linear(4 * width * s * s, 1), critic_norm),
                          split=len(trunk), numbered_with_std=bool(minibatch_std))
    return plan.wrap(G, body)
