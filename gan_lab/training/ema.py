"""The generator's exponential moving average (ProGAN, StyleGAN, BigGAN; Yazıcı et al. 2019).

G_ema is a copy of G whose parameters follow G's as an exponential moving average and
whose buffers (batch norm's running statistics) are copied from G. StyleGAN2-ADA's
convention sets its decay: a half-life in images, `train.ema_kimg` thousand, capped during
a ramp-up at `train.ema_rampup` times the images seen so far, so the first steps (whose
weights are far from the later ones) are soon forgotten:

    half_life = min(ema_kimg * 1000, ema_rampup * images_before_this_step)
    beta      = 0.5 ** (batch_size / half_life)        # per generator step
    p_ema     = beta * p_ema + (1 - beta) * p          # lerp(p_ema, p, 1 - beta)

The update runs inside the training iteration after the generator step, from the step alone:
the eager loop hands it an int, a CUDA graph its step tensor on the device, and the decay is
computed with tensor ops on the device in both cases, so a captured graph replays each step's
own beta with no host synchronisation (gan_lab.training.graphs).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def ema_beta(step: Tensor, batch_size: int, half_life_images: float, rampup: float) -> Tensor:
    """The decay of generator step `step` (1-based; a tensor): StyleGAN2-ADA's, with images seen before it."""
    images = (step - 1).clamp(min=0) * batch_size
    half_life = torch.full_like(images, half_life_images)
    if rampup > 0:
        half_life = torch.minimum(half_life, images * rampup)
    # clamp: at step 1 the ramp-up's half-life is 0 images, so beta is 0 and G_ema starts as G
    return torch.pow(0.5, batch_size / half_life.clamp(min=1e-8))


class GeneratorEMA:
    """A moving average of G's parameters in a copy of G, updated in place from the step."""

    def __init__(self, G: nn.Module, half_life_kimg: float, rampup: float, batch_size: int,
                 state: dict[str, Tensor] | None = None):
        self.G = G
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False)  # a copy: no RNG is drawn
        if state is not None:
            self.G_ema.load_state_dict(state)
        self.half_life_images, self.rampup, self.batch_size = 1000 * half_life_kimg, rampup, batch_size
        device = next(G.parameters()).device
        # float64 holds the step's arithmetic exactly (images seen, the half-life) on any device
        self.step = torch.zeros((), dtype=torch.float64, device=device)  # the eager step, written by fill_
        self.params = (list(self.G_ema.parameters()), list(G.parameters()))
        self.buffers = (list(self.G_ema.buffers()), list(G.buffers()))

    @torch.no_grad()
    def __call__(self, step: int | Tensor) -> Tensor:
        """Average G into G_ema for generator step `step` (an int, or a CUDA graph's step tensor); returns beta."""
        step = step.to(self.step.dtype) if isinstance(step, Tensor) else self.step.fill_(step)
        beta = ema_beta(step, self.batch_size, self.half_life_images, self.rampup)
        averaged, current = self.params
        torch._foreach_lerp_(averaged, current, (1 - beta).to(averaged[0].dtype))  # a tensor weight: no host sync
        for mine, theirs in zip(*self.buffers):
            mine.copy_(theirs)
        return beta
