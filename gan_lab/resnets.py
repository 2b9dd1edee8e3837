"""Residual GANs sized from the image resolution: SNGAN / BigGAN's ResNet (`resnet`) and R3GAN's baseline (`r3gan`).

Both builders follow gan_lab.models' rules for a builder: gan_lab.models.plan_model checks the shared
options and sizes, and its plan wraps G's network and a critic body with trunk / last_block / head,
so packing, minibatch std, the label's projection and DiffAugment compose around it. The facts they follow (blocks, widths, initialisation, parameter
counts at the published settings) are in ../shared/docs/architectures.md; tests/test_resnets.py
checks the counts.

Resolution: a square side of 28 to 256 px that is 4..7 times a power of two (>= 4). G starts from a
`bottom` x `bottom` map and doubles it once per block: 32 px is 4 x 2^3 (the CIFAR models), 28 px
(MNIST) is 7 x 2^2, 48 px (STL-10) 6 x 2^3, 64..256 px 4 x 2^k. Channels double each time the
resolution halves, from `*channels` at the image resolution (D: at its first block's), up to
`*max_channels` (BigGAN's ch multipliers at 64..256 px; at 32 px the published models are one width
throughout).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gan_lab.errors import GanLabError
from gan_lab.models import Critic, Generator, plan_model

RESNET_CRITIC_NORMS = ("spectral", "none")


def bottom_and_doublings(shape: tuple[int, ...], model: str) -> tuple[int, int]:
    """(bottom, k): the side of G's first map and how many times it doubles to the image's side."""
    if len(shape) != 3 or shape[1] != shape[2]:
        raise GanLabError(f"model={model} needs square images (C, H, H), but the data has shape {tuple(shape)}. "
                          f"Use model=mlp for 2-D or tabular data.")
    size = bottom = shape[1]
    doublings = 0
    while bottom % 2 == 0 and bottom // 2 >= 4:
        bottom, doublings = bottom // 2, doublings + 1
    if not 28 <= size <= 256 or bottom > 7 or doublings < 2:
        raise GanLabError(f"model={model} needs a side of 28 to 256 px that is 4 to 7 times a power of two "
                          f"(28, 32, 48, 64, 96, 128, 256, ...), but the images are {size}x{size}. Resize them "
                          f"(data=folder's resolution) or use model=dcgan for 28 or 32 px.")
    return bottom, doublings


def _width(channels: int, max_channels: int, size: int, resolution: int) -> int:
    # `channels` at the image's resolution, doubling each time the resolution halves, up to max_channels
    return min(max_channels, channels * size // resolution)


def _glorot(layer: nn.Module, gain: float) -> nn.Module:
    # SNGAN (chainer and Mimicry): Glorot-uniform, gain sqrt(2) for the blocks' 3x3 convs, 1 elsewhere
    nn.init.xavier_uniform_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


# ---------------------------------------------------------------- SNGAN / BigGAN ResNet


class BatchNorm(nn.Module):
    """Batch norm whose scale and shift are per class when conditional (categorical conditional BN, SNGAN / BigGAN)."""

    def __init__(self, channels: int, n_classes: int = 0):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=not n_classes)
        if n_classes:  # Mimicry's cGAN-PD: gamma ~ N(1, 0.02), beta = 0, one row per class
            self.gamma, self.beta = nn.Embedding(n_classes, channels), nn.Embedding(n_classes, channels)
            nn.init.normal_(self.gamma.weight, 1.0, 0.02)
            nn.init.zeros_(self.beta.weight)
        self.n_classes = n_classes

    def forward(self, h: Tensor, y: Tensor | None) -> Tensor:
        h = self.bn(h)
        if self.n_classes:
            h = h * self.gamma(y)[:, :, None, None] + self.beta(y)[:, :, None, None]
        return h


class GBlock(nn.Module):
    """BN -> ReLU -> up x2 -> conv3x3 -> BN -> ReLU -> conv3x3, plus up x2 -> conv1x1 (SNGAN / BigGAN's G block)."""

    def __init__(self, c_in: int, c_out: int, n_classes: int, sn: bool):
        super().__init__()
        self.bn1, self.bn2 = BatchNorm(c_in, n_classes), BatchNorm(c_out, n_classes)
        self.conv1 = _sn(_glorot(nn.Conv2d(c_in, c_out, 3, 1, 1), math.sqrt(2)), sn)
        self.conv2 = _sn(_glorot(nn.Conv2d(c_out, c_out, 3, 1, 1), math.sqrt(2)), sn)
        self.shortcut = _sn(_glorot(nn.Conv2d(c_in, c_out, 1), 1.0), sn)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        # nearest upsampling, as chainer's SNGAN (unpooling_2d) and BigGAN (F.interpolate); Mimicry uses bilinear
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResNetGenerator(nn.Module):
    """z -> linear -> (C, b, b) -> k GBlocks -> BN -> ReLU -> conv3x3 -> tanh, labels through conditional BN."""

    def __init__(self, z_dim: int, shape: tuple[int, ...], bottom: int, doublings: int, channels: int,
                 max_channels: int, n_classes: int, sn: bool):
        super().__init__()
        size = shape[1]
        widths = [_width(channels, max_channels, size, bottom * 2 ** i) for i in range(doublings + 1)]
        self.bottom, self.c0 = bottom, widths[0]
        self.linear = _sn(_glorot(nn.Linear(z_dim, bottom * bottom * widths[0]), 1.0), sn)
        self.blocks = nn.ModuleList(GBlock(c_in, c_out, n_classes, sn) for c_in, c_out in zip(widths, widths[1:]))
        self.bn = BatchNorm(widths[-1])  # unconditional, as Mimicry's cGAN-PD and BigGAN's output layer
        self.out = _sn(_glorot(nn.Conv2d(widths[-1], shape[0], 3, 1, 1), 1.0), sn)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.linear(z).view(len(z), self.c0, self.bottom, self.bottom)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.bn(h, None))))


class DBlock(nn.Module):
    """[ReLU] -> conv3x3 -> ReLU -> conv3x3 -> [avgpool2], plus a 1x1 shortcut where the shape changes.

    first: SNGAN's OptimizedBlock (no pre-activation; its shortcut pools before the 1x1 conv). wide:
    the hidden width is the output's (BigGAN), else the input's (SNGAN's thin D).
    """

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool, wide: bool, sn: bool):
        super().__init__()
        hidden = c_out if wide or first else c_in
        self.down, self.first = down, first
        self.conv1 = _sn(_glorot(nn.Conv2d(c_in, hidden, 3, 1, 1), math.sqrt(2)), sn)
        self.conv2 = _sn(_glorot(nn.Conv2d(hidden, c_out, 3, 1, 1), math.sqrt(2)), sn)
        learned = first or down or c_in != c_out
        self.shortcut = _sn(_glorot(nn.Conv2d(c_in, c_out, 1), 1.0), sn) if learned else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:
            s = self.shortcut(F.avg_pool2d(s, 2))
        else:
            s = s if self.shortcut is None else self.shortcut(s)
            s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class ResNetCriticBody(nn.Module):
    """D blocks (trunk: all but the last; last_block: the last, then ReLU and a global sum pool) and SNLinear(->1)."""

    def __init__(self, blocks: Sequence[DBlock], features: int, sn: bool):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.features = features
        self.linear = _sn(_glorot(nn.Linear(features, 1), 1.0), sn)  # Mimicry's has a bias, chainer's none

    def trunk(self, x: Tensor) -> Tensor:
        for block in self.blocks[:-1]:
            x = block(x)
        return x

    def last_block(self, h: Tensor) -> Tensor:
        return F.relu(self.blocks[-1](h)).sum(dim=(2, 3))  # SNGAN / BigGAN: sum, not mean, over positions

    def head(self, features: Tensor) -> Tensor:
        return self.linear(features)


class LabelledNetGenerator(Generator):
    """A Generator whose network takes the label itself (conditional batch norm) rather than an embedding next to z."""

    def __init__(self, net: nn.Module, z_dim: int, shape: tuple[int, ...], n_classes: int = 0):
        super().__init__(net, z_dim, shape, 0)  # no embedding joins z
        self.n_classes = n_classes

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.n_classes and y is None:
            raise ValueError("a conditional generator needs labels y")
        return self.net(z, y if self.n_classes else None)


def _sn(layer: nn.Module, on: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if on else layer


def resnet(shape: tuple[int, ...], z_dim: int, g_channels: int, g_max_channels: int, d_channels: int,
           d_max_channels: int, d_wide: bool, critic_norm: str, generator_spectral: bool, conditional: bool,
           pack: int, minibatch_std: int, n_classes: int = 0,
           augment: Sequence[str] = ()) -> tuple[Generator, Critic]:
    """SNGAN / BigGAN residual G and critic for square images of 28..256 px (see the module's docstring).

    G: linear -> (C, b, b), one up-block per doubling, BN-ReLU-conv3x3-tanh; labels through conditional
    BN. D: an optimized first block, down-blocks to b x b (to 2b x 2b at 32 px and below, as the CIFAR
    models, which then add two more blocks; one more above 32 px), ReLU, global sum pool, linear; labels
    through the Critic's projection. conf/model/resnet.yaml: SNGAN's CIFAR-10 ResNet; BigGAN's CIFAR
    (ch=64) is d_channels=256 d_max_channels=256 d_wide=true generator_spectral=true.
    """
    plan = plan_model(shape, z_dim=z_dim, conditional=conditional, n_classes=n_classes, pack=pack,
                      minibatch_std=minibatch_std, augment=augment, critic_norm=critic_norm,
                      critic_norms=RESNET_CRITIC_NORMS, g_channels=g_channels, g_max_channels=g_max_channels,
                      d_channels=d_channels, d_max_channels=d_max_channels)
    bottom, doublings = bottom_and_doublings(shape, "resnet")
    n_classes = plan.n_classes
    G = ResNetGenerator(z_dim, shape, bottom, doublings, g_channels, g_max_channels, n_classes, generator_spectral)

    size, sn = shape[1], critic_norm == "spectral"
    stop, extra = (2 * bottom, 2) if size <= 32 else (bottom, 1)
    resolutions = []  # each block's output resolution
    while not resolutions or resolutions[-1] > stop:
        resolutions.append((resolutions[-1] if resolutions else size) // 2)
    resolutions += [stop] * extra
    widths = [_width(d_channels, d_max_channels, size // 2, r) for r in resolutions]
    blocks, c_in = [], plan.critic_channels  # a pack's images stacked along channels
    for i, (r, c_out) in enumerate(zip(resolutions, widths)):
        last = i == len(widths) - 1
        c_in += plan.std_extra if last else 0  # Critic's minibatch std adds a channel before the last block
        blocks.append(DBlock(c_in, c_out, down=i == 0 or r < resolutions[i - 1], first=i == 0, wide=d_wide, sn=sn))
        c_in = c_out
    body = ResNetCriticBody(blocks, widths[-1], sn)
    return plan.wrap(G, body, generator=LabelledNetGenerator)


# ---------------------------------------------------------------- R3GAN


def _msr(layer: nn.Module, gain: float) -> nn.Module:
    # R3GAN's MSRInitializer: N(0, gain / sqrt(fan_in)), fan_in = in / groups * k^2, biases 0; no equalised lr
    fan_in = layer.weight[0].numel()
    if gain:
        nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))
    else:  # the fix-up zero: the residual branch starts silent
        nn.init.zeros_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


class ResNeXtBlock(nn.Module):
    """x + conv1x1(C -> EC) -> bias+LReLU -> grouped conv3x3 -> bias+LReLU -> conv1x1(EC -> C): no normalisation.

    Fix-up initialisation: the last conv is zero, so the block starts as the identity, and the first
    two are scaled by L^(-1/4), L the network's number of blocks (R3GAN's ResidualBlock).
    """

    def __init__(self, channels: int, group_channels: int, expansion: int, total_blocks: int):
        super().__init__()
        hidden = channels * expansion
        gain = math.sqrt(2 / (1 + 0.2 ** 2)) * total_blocks ** -0.25  # LeakyReLU(0.2)'s He gain, fix-up scaled
        # the convs' biases are R3GAN's BiasedActivation biases (a per-channel bias, then the activation)
        self.conv1 = _msr(nn.Conv2d(channels, hidden, 1), gain)
        self.conv2 = _msr(nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden // group_channels), gain)
        self.conv3 = _msr(nn.Conv2d(hidden, channels, 1, bias=False), 0.0)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        return x + self.conv3(F.leaky_relu(self.conv2(h), 0.2))


# R3GAN's low-pass filter: [1, 2, 1] convolved with [1, 1], its outer product normalised (Resamplers.py)
_FIR = torch.tensor([1.0, 3.0, 3.0, 1.0])


class Resample(nn.Module):
    """R3GAN's transitions: up (conv1x1 if the width changes, then x2) or down (/2, then conv1x1 if it changes).

    Up is bilinear (align_corners=False): inside the image that is R3GAN's [1,3,3,1] up-filter exactly
    (each output pixel 3/4 of its nearer and 1/4 of its farther neighbour); at the border bilinear
    repeats the edge where R3GAN's upfirdn2d pads with zeros, the one simplification. Down is R3GAN's
    own pure-PyTorch reference: the 4x4 [1,3,3,1] filter, stride 2, zero padding 1, per channel.
    """

    def __init__(self, c_in: int, c_out: int, up: bool):
        super().__init__()
        self.up = up
        self.conv = _msr(nn.Conv2d(c_in, c_out, 1, bias=False), 1.0) if c_in != c_out else None
        kernel = torch.outer(_FIR, _FIR)
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.up:
            x = x if self.conv is None else self.conv(x)
            return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        channels = x.shape[1]
        x = F.conv2d(x, self.kernel.to(x.dtype).expand(channels, 1, 4, 4), stride=2, padding=1, groups=channels)
        return x if self.conv is None else self.conv(x)


class R3GANGenerator(nn.Module):
    """GenerativeBasis (linear(z) * a learned (C, b, b) basis), stages of [up +] blocks, conv1x1 out (no tanh)."""

    def __init__(self, z_in: int, shape: tuple[int, ...], widths: list[int], bottom: int, blocks: int,
                 group_channels: int, expansion: int):
        super().__init__()
        total = blocks * len(widths)
        self.basis = nn.Parameter(torch.randn(widths[0], bottom, bottom))  # R3GAN: N(0, 1)
        self.linear = _msr(nn.Linear(z_in, widths[0], bias=False), 1.0)
        self.stages = nn.ModuleList()
        for i, width in enumerate(widths):
            layers = [Resample(widths[i - 1], width, up=True)] if i else []
            layers += [ResNeXtBlock(width, group_channels, expansion, total) for _ in range(blocks)]
            self.stages.append(nn.Sequential(*layers))
        self.out = _msr(nn.Conv2d(widths[-1], shape[0], 1, bias=False), 1.0)

    def forward(self, z: Tensor) -> Tensor:
        h = self.linear(z)[:, :, None, None] * self.basis  # (B, C, b, b)
        for stage in self.stages:
            h = stage(h)
        return self.out(h)


class R3GANCriticBody(nn.Module):
    """conv1x1 in, stages of [blocks + down], the last [blocks + DiscriminativeBasis]; head Linear(C -> 1).

    DiscriminativeBasis: a depthwise b x b valid conv, then (conditional) Linear(C -> label_features),
    which the Critic's projection multiplies by the label's embedding: R3GAN's D is then that inner
    product alone, so the head gives 0 (no unconditional term). With minibatch std the last stage
    starts with a conv1x1 that takes the extra channel (StyleGAN2's epilogue conv takes it there).
    """

    def __init__(self, channels_in: int, widths: list[int], bottom: int, blocks: int, group_channels: int,
                 expansion: int, minibatch_std: bool, label_features: int):
        super().__init__()
        total = blocks * len(widths)
        self.extract = _msr(nn.Conv2d(channels_in, widths[0], 1, bias=False), 1.0)
        self.stages = nn.ModuleList()
        for i, width in enumerate(widths[:-1]):
            layers = [ResNeXtBlock(width, group_channels, expansion, total) for _ in range(blocks)]
            self.stages.append(nn.Sequential(*layers, Resample(width, widths[i + 1], up=False)))
        last = widths[-1]
        self.std_in = _msr(nn.Conv2d(last + 1, last, 1, bias=False), 1.0) if minibatch_std else nn.Identity()
        self.last = nn.Sequential(*[ResNeXtBlock(last, group_channels, expansion, total) for _ in range(blocks)])
        self.basis = _msr(nn.Conv2d(last, last, bottom, groups=last, bias=False), 1.0)
        self.labelled = _msr(nn.Linear(last, label_features, bias=False), 1.0) if label_features else None
        self.linear = None if label_features else _msr(nn.Linear(last, 1, bias=False), 1.0)
        self.features = label_features or last

    def trunk(self, x: Tensor) -> Tensor:
        h = self.extract(x)
        for stage in self.stages:
            h = stage(h)
        return h

    def last_block(self, h: Tensor) -> Tensor:
        h = self.basis(self.last(self.std_in(h))).flatten(1)  # (B, C)
        return h if self.labelled is None else self.labelled(h)

    def head(self, features: Tensor) -> Tensor:
        if self.linear is None:  # conditional: the projection alone is R3GAN's score
            return features.new_zeros(len(features), 1)
        return self.linear(features)


def r3gan(shape: tuple[int, ...], z_dim: int, channels: int, max_channels: int, blocks_per_stage: int,
          expansion: int, group_channels: int, label_features: int, conditional: bool, pack: int,
          minibatch_std: int, n_classes: int = 0, augment: Sequence[str] = ()) -> tuple[Generator, Critic]:
    """R3GAN's baseline G and D (Huang et al. 2024) for square images of 28..256 px; conf/model/r3gan.yaml: CIFAR-10's.

    One stage per resolution from b x b to the image's side, `blocks_per_stage` ResNeXt blocks each;
    D mirrors G. Widths: `channels` at the image resolution doubling per halving up to max_channels
    (CIFAR-10: 768 throughout; FFHQ-256: channels=96). Grouped convs of `group_channels` channels per
    group (CIFAR-10: cardinality 96 at 1536 channels). Labels: an embedding (dimension z_dim) joins z in
    G; D is the projection of `label_features` features on the label's embedding alone.
    """
    plan = plan_model(shape, z_dim=z_dim, conditional=conditional, n_classes=n_classes, pack=pack,
                      minibatch_std=minibatch_std, augment=augment, channels=channels, max_channels=max_channels,
                      blocks_per_stage=blocks_per_stage, expansion=expansion, group_channels=group_channels,
                      label_features=label_features)
    bottom, doublings = bottom_and_doublings(shape, "r3gan")
    n_classes = plan.n_classes
    widths = [_width(channels, max_channels, shape[1], bottom * 2 ** i) for i in range(doublings + 1)]
    for width in widths:
        if width * expansion % group_channels:
            raise GanLabError(f"model.group_channels={group_channels} does not divide the {width * expansion} "
                              f"channels of a block (width {width} x expansion {expansion}): pick a divisor, "
                              f"e.g. model.group_channels=16 (R3GAN's).")
    net = R3GANGenerator(plan.g_in, shape, widths, bottom, blocks_per_stage, group_channels, expansion)
    body = R3GANCriticBody(plan.critic_channels, widths[::-1], bottom, blocks_per_stage, group_channels, expansion,
                           bool(plan.std_extra), label_features if n_classes else 0)
    G, critic = plan.wrap(net, body)
    if n_classes:  # R3GAN's Linear(one-hot c -> z_dim), MSR gain 1: N(0, 1 / sqrt(n_classes)) per class row
        nn.init.normal_(G.embed.weight, 0.0, 1 / math.sqrt(n_classes))
    if n_classes:  # R3GAN's Linear(one-hot c -> 768) with gain 1/sqrt(768)
        nn.init.normal_(critic.embed.weight, 0.0, 1 / math.sqrt(label_features * n_classes))
    return G, critic
