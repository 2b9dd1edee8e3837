"""The loop's typed settings: the `train` node, and the critic's schedule from the `loss` node.

Their defaults live in YAML only (conf/train.yaml, conf/_loss_knobs.yaml): the composition root
builds these from the composed config, so every field is given and none has a default here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gan_lab.errors import GanLabError
from gan_lab.training.schedules import SCHEDULES

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass
class TrainSettings:
    """The `train` node of the config: how long, how big, how often (meanings and defaults: conf/train.yaml)."""

    steps: int  # generator steps
    batch_size: int  # real and fake samples per critic / generator step
    log_every: int  # write scalars every this many generator steps
    sample_every: int  # write samples from a fixed z every this many generator steps
    checkpoint_every: int  # write checkpoints/step_N.pt and last.pt every this many generator steps
    keep_checkpoints: int  # how many step_N.pt files to keep (last.pt is always kept)
    eval_every: int  # compute metrics/* every this many generator steps (0: only at the end)
    nonfinite: str  # stop at the first NaN/inf loss or gradient norm, or skip such updates
    cuda_graph: str | bool  # capture the whole iteration as one CUDA graph: auto (on CUDA), true, false
    precision: str  # fp32, or bf16: forward passes under autocast, the penalty's gradient norm in fp32
    compile: str | bool  # torch.compile what is off the penalty's double backward: false, true, or a backend
    lr_schedule: str  # constant, or linear: both learning rates fall linearly to 0 at the last step
    ema_kimg: float  # the generator EMA's half-life in thousands of images (0: no EMA)
    ema_rampup: float  # the half-life is at most this times the images seen so far (0: no ramp-up)
    topk: float  # top-k training (Sinha et al. 2020): the smallest fraction of fakes G's update keeps (1: off)
    topk_decay: float  # the kept fraction starts at 1 and is multiplied by this every 100 generator steps
    on_failure: str  # what a diagnosed failure does (gan_lab.training.diagnosis): warn, or stop the run early

    def __post_init__(self) -> None:
        minimum = {"steps": 1, "batch_size": 1, "log_every": 1, "sample_every": 1,
                   "checkpoint_every": 1, "keep_checkpoints": 0, "eval_every": 0}
        for key, low in minimum.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise GanLabError(f"train.{key}={value!r} is out of range: it must be a whole number "
                                  f">= {low}. Fix the override, e.g. train.{key}={max(low, 1) * 10}.")
        if self.cuda_graph not in ("auto", True, False):
            raise GanLabError(f"train.cuda_graph={self.cuda_graph!r} is not known: use auto (on when the run is "
                              f"on CUDA), true or false.")
        if self.precision not in PRECISIONS:
            raise GanLabError(f"train.precision={self.precision!r} is not known: use fp32 or bf16.")
        if self.lr_schedule not in SCHEDULES:
            raise GanLabError(f"train.lr_schedule={self.lr_schedule!r} is not known: use constant, or linear "
                              f"(both learning rates fall linearly to 0 at train.steps).")
        for key in ("ema_kimg", "ema_rampup"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise GanLabError(f"train.{key}={value!r} is out of range: it must be a number >= 0 (train.ema_kimg=0 "
                                  f"turns the generator EMA off; StyleGAN2-ADA uses ema_kimg=10, ema_rampup=0.05).")
        for key in ("topk", "topk_decay"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise GanLabError(f"train.{key}={value!r} is out of range: it must be a number in (0, 1] "
                                  f"(train.topk=1 turns top-k training off; Sinha et al. keep at least 0.5 "
                                  f"of the batch and decay by 0.99).")
        if self.on_failure not in ("warn", "stop"):
            raise GanLabError(f"train.on_failure={self.on_failure!r} is not known: use warn (name a failure and train "
                              f"on) or stop (name it, write a checkpoint and end the run there).")
        if not isinstance(self.compile, (bool, str)) or self.compile == "":
            raise GanLabError(f"train.compile={self.compile!r} is not known: use false, true (inductor) or the "
                              f"name of a torch.compile backend such as aot_eager.")

    def kept_fraction(self, step: int) -> float:
        """Top-k training: the fraction of fakes the generator step keeps at `step`, decaying from 1 to topk."""
        return max(self.topk, self.topk_decay ** (step // 100))

    @property
    def amp(self) -> torch.dtype | None:
        """The autocast dtype of the forward passes (None: full float32)."""
        return PRECISIONS[self.precision]


@dataclass
class CriticSchedule:
    """How the loop trains the critic: the loss node's training knobs (meanings and defaults: conf/_loss_knobs.yaml).

    They stay `loss.n_critic`, `loss.reg_every`, `loss.clip` and `loss.unroll` on the command line; the
    loss object itself holds only its math and its penalties.
    """

    n_critic: int  # critic steps per generator step
    reg_every: int  # lazy regularisation: the penalties on every k-th critic step only, scaled by k (StyleGAN2)
    clip: float  # clamp every critic weight to [-clip, clip] after each critic step (WGAN; 0: off)
    unroll: int  # Unrolled GAN (Metz et al. 2017): G's update sees the critic k look-ahead updates on (0: off)

    def __post_init__(self) -> None:
        checks = {  # key: (value, in range, what it must be, an example fix)
            "loss.n_critic": (self.n_critic, self.n_critic >= 1 and float(self.n_critic).is_integer(),
                              "a whole number of critic steps per generator step, at least 1", "5"),
            "loss.reg_every": (self.reg_every, self.reg_every >= 1 and float(self.reg_every).is_integer(),
                               "a whole number of critic steps >= 1 (1: the penalties on every step)", "16"),
            "loss.clip": (self.clip, self.clip >= 0, "a bound >= 0 (0 turns clipping off)", "0"),
            "loss.unroll": (self.unroll, self.unroll >= 0 and float(self.unroll).is_integer(),
                            "a whole number of look-ahead critic updates >= 0 (0: off; Metz et al.: 5 to 10)", "5"),
        }
        for key, (value, ok, expected, example) in checks.items():
            if not ok:
                raise GanLabError(f"{key}={value} is out of range: it must be {expected}. "
                                  f"Fix the override, e.g. {key}={example}.")
        self.n_critic, self.reg_every, self.unroll = int(self.n_critic), int(self.reg_every), int(self.unroll)

    def phase(self, step: int) -> tuple[bool, ...]:
        """Which critic steps of generator step `step` add the penalties: every reg_every-th critic step.

        A function of the host's step number alone, with at most two values when n_critic is 1
        (a CUDA graph is captured once for each value it takes).
        """
        n, k = self.n_critic, self.reg_every
        return tuple(((step - 1) * n + i) % k == 0 for i in range(n))
