"""DiffAugment (Zhao et al. 2020): differentiable augmentation of everything the critic sees.

The critic applies the same random policy to real and fake images, in the critic step and in
the generator step, so the generator learns the un-augmented distribution while the critic
sees many more images than the data set holds (the paper's remedy for a critic that memorises
a small data set). Every op is plain torch arithmetic on the images, so the generator's
gradient flows through it; each sample gets its own random parameters from torch's RNG on the
images' device (no Python randomness), so a CUDA graph captures the draws with the step.

The penalties need no special case: the critic augments inside its forward, so a gradient
penalty or R1 takes the gradient with respect to the un-augmented input, as DiffAugment's
StyleGAN2 code does for R1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gan_lab.errors import GanLabError

# The paper's code applies its policy 'color,translation,cutout' in this order; so does gan-lab,
# whatever order the override lists the names in.
OPS = ("color", "translation", "cutout")
TRANSLATION_RATIO = 1 / 8  # shifts of up to 1/8 of the image size, each axis (paper: 0.125)
CUTOUT_RATIO = 1 / 2  # a square of half the image size is zeroed (paper: 0.5)


def parse_policy(value: Any, shape: Sequence[int]) -> tuple[str, ...]:
    """The ops of a `data.augment` value (a list or a comma-separated string; null or empty: none)."""
    if value is None or value == "":
        return ()
    names = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise GanLabError(f"data.augment has {unknown[0]!r}, which is not a DiffAugment op gan-lab knows. "
                          f"Use any of {', '.join(OPS)}, as a list: data.augment=[translation,color,cutout] "
                          f"(a bare a,b,c is a Hydra sweep), or data.augment=null to turn it off.")
    if names and len(shape) != 3:
        raise GanLabError(f"data.augment={','.join(names)} is refused on data of shape {tuple(shape)}: "
                          f"DiffAugment's ops shift, recolour and cut out pixels of images, and 2-D points "
                          f"have no pixels (moving a point would teach the critic a different distribution, "
                          f"not the same one seen anew). Use data.augment=null here, or image data "
                          f"(mnist, fashion_mnist, cifar10, stacked_mnist).")
    return tuple(op for op in OPS if op in names)


def _uniform(x: Tensor, low: float, high: float) -> Tensor:
    # one value per sample, shaped to broadcast over (C, H, W)
    return low + (high - low) * torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)


def adjust_color(x: Tensor, brightness: Tensor, saturation: Tensor, contrast: Tensor) -> Tensor:
    """Add brightness, scale each pixel's spread across channels (saturation) and the image's (contrast)."""
    x = x + brightness
    mean = x.mean(dim=1, keepdim=True)  # per pixel across channels: one channel has no saturation to change
    x = (x - mean) * saturation + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean


def random_color(x: Tensor) -> Tensor:
    """The paper's colour op: brightness + U[-0.5, 0.5], saturation x U[0, 2], contrast x U[0.5, 1.5]."""
    return adjust_color(x, _uniform(x, -0.5, 0.5), _uniform(x, 0.0, 2.0), _uniform(x, 0.5, 1.5))


def _grid(x: Tensor) -> tuple[Tensor, Tensor]:
    h, w = x.shape[2:]
    return (torch.arange(h, device=x.device).view(1, h, 1), torch.arange(w, device=x.device).view(1, 1, w))


def translate(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Shift each image's content by (dy[i], dx[i]) pixels (down, right), filling with zeros."""
    n, c, h, w = x.shape
    rows, cols = _grid(x)
    rows, cols = rows - dy.view(n, 1, 1), cols - dx.view(n, 1, 1)  # output pixel (r, c) shows (r - dy, c - dx)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # (n, h, w)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
    moved = x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)  # gather: differentiable in x
    return moved * inside.unsqueeze(1).to(x.dtype)


def random_translation(x: Tensor, ratio: float = TRANSLATION_RATIO) -> Tensor:
    """The paper's translation: per sample, integer shifts uniform in [-s, s] on each axis, s = ratio * size."""
    sy, sx = (int(size * ratio + 0.5) for size in x.shape[2:])
    dy = torch.randint(-sy, sy + 1, (x.shape[0],), device=x.device)
    dx = torch.randint(-sx, sx + 1, (x.shape[0],), device=x.device)
    return translate(x, dy, dx)


def cut_out(x: Tensor, cy: Tensor, cx: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero a size[0] x size[1] rectangle centred on (cy[i], cx[i]) in each image (clipped at the borders)."""
    n = x.shape[0]
    rows, cols = _grid(x)
    top, left = cy.view(n, 1, 1) - size[0] // 2, cx.view(n, 1, 1) - size[1] // 2
    hole = (rows >= top) & (rows < top + size[0]) & (cols >= left) & (cols < left + size[1])
    return x * (~hole).unsqueeze(1).to(x.dtype)


def random_cutout(x: Tensor, ratio: float = CUTOUT_RATIO) -> Tensor:
    """The paper's cutout: a square of ratio * size at a uniform centre (it may stick out of the image)."""
    h, w = x.shape[2:]
    size = (int(h * ratio + 0.5), int(w * ratio + 0.5))
    # the paper's centre range, [0, H + 1 - size % 2): an even square can stick out of every border alike
    cy = torch.randint(0, h + 1 - size[0] % 2, (x.shape[0],), device=x.device)
    cx = torch.randint(0, w + 1 - size[1] % 2, (x.shape[0],), device=x.device)
    return cut_out(x, cy, cx, size)


RANDOM_OPS = {"color": random_color, "translation": random_translation, "cutout": random_cutout}


class DiffAugment(nn.Module):
    """The policy's ops in the paper's order, on (B, C, H, W) images; the identity in eval mode."""

    def __init__(self, policy: Sequence[str]):
        super().__init__()
        self.policy = tuple(policy)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:  # critic.eval() scores plain images (e.g. for sampling-time uses)
            return x
        for op in self.policy:
            x = RANDOM_OPS[op](x)
        return x

    def extra_repr(self) -> str:
        return ",".join(self.policy)
