"""Learning-rate schedules: each generator step's learning rate as a function of the step tensor.

A schedule is a function `factor(step, steps) -> Tensor` of the generator step held in a
tensor; the configured lr times that factor is the lr of the step's updates. `LRSchedule`
turns the optimizers' learning rates into tensors on the training device (torch's optimizers
accept a Tensor lr) and, at the start of every iteration, writes each of them in place from
the step. The eager loop hands it the step as an int; a CUDA graph hands it its device step
counter, so the write is part of the captured iteration and every replay sets its own step's
rate (gan_lab.training.graphs). Nothing but the step is needed, so a resumed run needs no scheduler state.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def linear(step: Tensor, steps: int) -> Tensor:
    """WGAN-GP's CIFAR-10 schedule: step s updates with lr * (1 - (s - 1) / steps), the last with lr / steps."""
    return (1 - (step - 1) / steps).clamp(min=0.0)


# train.lr_schedule -> its factor; constant needs none: its learning rates stay plain floats
SCHEDULES: dict[str, Callable[[Tensor, int], Tensor] | None] = {"constant": None, "linear": linear}


class LRSchedule:
    """Learning rates as tensors on the training device, set in place for each generator step."""

    def __init__(self, factor: Callable[[Tensor, int], Tensor], optimizers: tuple[torch.optim.Optimizer, ...],
                 steps: int, device: torch.device):
        # float64 on the CPU: the optimizers read a CPU tensor lr as the double it holds, and the
        # factor's float64 arithmetic is Python's, so a CPU run trains bitwise as it did with the
        # float lrs torch's LambdaLR set. float32 on CUDA: the fused kernels read a float32 lr
        # from device memory, and capturable Adam / RMSprop divide by it there.
        dtype = torch.float64 if device.type == "cpu" else torch.float32
        self.factor, self.steps = factor, steps
        self.step = torch.zeros((), dtype=dtype, device=device)  # the eager step, written by fill_ (no copy)
        self.rates: list[tuple[Tensor, float]] = []  # each group's lr tensor and its configured value
        for opt in optimizers:
            for group in opt.param_groups:
                configured = float(group["lr"])  # the config's (restore() put it back over the checkpoint's)
                group["lr"] = torch.full((), configured, dtype=dtype, device=device)
                self.rates.append((group["lr"], configured))

    def __call__(self, step: int | Tensor) -> None:
        """Set every learning rate for generator step `step` (an int, or the CUDA graph's step tensor)."""
        step = step.to(self.step.dtype) if isinstance(step, Tensor) else self.step.fill_(step)
        factor = self.factor(step, self.steps)
        for lr, configured in self.rates:
            lr.copy_(factor * configured)


def lr_schedule(name: str, optimizers: tuple[torch.optim.Optimizer, ...], steps: int,
                device: torch.device) -> LRSchedule | None:
    """The schedule train.lr_schedule names over these optimizers, or None for a constant lr."""
    factor = SCHEDULES[name]
    return LRSchedule(factor, optimizers, steps, device) if factor is not None else None
