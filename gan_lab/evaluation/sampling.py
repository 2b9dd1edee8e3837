"""Drawing an evaluation's samples: z from a seed alone, G in eval mode, labels in turn; and label accuracy.

Below every measure (gan_lab.measures) and the memorisation check, which draw the same samples.
"""

from __future__ import annotations

import math
import torch
from torch import Tensor, nn

EVAL_SEED = 0  # the seed of the z every evaluation draws, during training and in `gan-lab eval`


def class_labels(G: nn.Module, n: int) -> Tensor | None:
    """Labels for n conditional samples, every class in turn (None for an unconditional G)."""
    return torch.arange(n, device=next(G.parameters()).device) % G.n_classes if G.n_classes else None


@torch.no_grad()
def generate(G: nn.Module, n: int, y: Tensor | None = None, batch_size: int = 2500, seed: int | None = None) -> Tensor:
    """n samples from G (for labels y when conditional) in eval mode, in batches; z from `seed` when given."""
    device = next(G.parameters()).device
    # z drawn on the CPU from its own seeded generator: the same z whatever the device, the global
    # RNG's state or what was built before, so a checkpoint's metrics are a function of its weights
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    was_training = G.training
    G.eval()  # batch norm on its running statistics: samples do not depend on their batch
    try:
        return torch.cat([G(torch.randn(min(batch_size, n - i), G.z_dim, generator=rng).to(device),
                            None if y is None else y[i:i + batch_size]) for i in range(0, n, batch_size)])
    finally:
        G.train(was_training)


def label_accuracy(predicted: Tensor, requested: Tensor, n_classes: int) -> dict[str, float]:
    """How often conditional samples are recognised as their requested label: overall and per class."""
    hit = (predicted == requested).double()
    metrics = {"metrics/label_accuracy": float(hit.mean())}
    for c in range(n_classes):
        asked = requested == c
        metrics[f"metrics/label_accuracy/class_{c}"] = float(hit[asked].mean()) if asked.any() else math.nan
    return metrics


def inference_batch(device: torch.device | str) -> int:
    """Images the digit classifier takes at once. On a CPU 128, whose activations stay in its caches: 2.4x
    faster an image than 2,000 or 6,000 (measured on the 2-core AMD EPYC: 6,000 images in 0.67 s against
    1.63 s); a GPU takes large batches."""
    return 128 if torch.device(device).type == "cpu" else 4096


@torch.no_grad()
def stacked_modes(model: nn.Module, images: Tensor, batch_size: int | None = None) -> Tensor:
    """The mode of each stacked image: the classifier's digit on each channel, 100*d0 + 10*d1 + d2.

    batch_size: stacked images a forward takes (default: inference_batch's images, 3 to a stacked one)."""
    model.eval()
    batch_size = batch_size or max(1, inference_batch(images.device) // images.shape[1])
    digits = torch.cat([model(images[i:i + batch_size].flatten(0, 1).unsqueeze(1)).argmax(1)
                        for i in range(0, len(images), batch_size)]).view(len(images), 3)
    return (digits * torch.tensor([100, 10, 1], device=digits.device)).sum(1)
