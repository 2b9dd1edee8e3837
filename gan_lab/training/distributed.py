"""The device a run trains on (choose_device) and data-parallel training with torch.distributed.

`torchrun --nproc_per_node=N -m gan_lab train ...` starts N processes that each run
the whole command. Each rank draws its own real batches and noise; G and the critic
are wrapped in DistributedDataParallel, which all-reduces (averages) their gradients
in backward. Rank 0 alone writes TensorBoard, samples and checkpoints.

The gradient penalty and DDP: DDP's reducer expects one forward of the wrapped module
per backward, and its hooks fire when a parameter's gradient is accumulated. The
critic step therefore scores real, fake and interpolated points in ONE forward of the
DDP critic (train.critic_forward), takes the penalty's input gradient with
torch.autograd.grad(create_graph=True) -- which accumulates nothing into parameters,
so no hook fires -- and then runs a single backward of the whole critic loss, in which
every parameter's gradient (adversarial term and penalty) is accumulated once and
all-reduced once. The generator step runs G through its DDP wrapper and the critic
unwrapped and frozen, so only G's gradients are reduced there.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

from gan_lab.errors import GanLabError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> Dist:
    """The ranks torchrun set in the environment (a single process when it did not)."""
    return Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))


def init(info: Dist) -> None:
    """Join the process group: NCCL on CUDA, gloo on CPU."""
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend)


def device_for(info: Dist, requested: str) -> torch.device | None:
    """Under torchrun with CUDA each rank takes the GPU of its local rank; else None (the usual choice)."""
    if info.enabled and requested == "auto" and torch.cuda.is_available():
        return torch.device("cuda", info.local_rank)
    return None


def choose_device(name: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; anything else must exist on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GanLabError(f"device={name!r} is not a device name: use auto, cpu or cuda[:N].") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GanLabError(f"device={name} was asked for, but this machine has no CUDA GPU that PyTorch "
                          f"can use. Use device=auto or device=cpu.")
    return device


def shared_run_dir(info: Dist, args: list[str]) -> list[str]:
    """All ranks must write to one run directory: rank 0's timestamp becomes hydra.run.dir."""
    if not info.enabled or any(a.startswith("hydra.run.dir=") for a in args):
        return args
    if any(a in ("-m", "--multirun") for a in args):
        raise GanLabError("A multirun sweep cannot be launched under torchrun: launch one torchrun per "
                          "job (e.g. with the submitit launcher) instead.")
    from gan_lab.runs import rundirs

    # rank 0 claims a fresh default directory (never one another run took in the same second)
    stamp = [str(rundirs.claim(rundirs.default_dir("hydra.run.dir"))) if info.main else None]
    dist.broadcast_object_list(stamp, src=0)
    return [*args, f"hydra.run.dir={stamp[0]}"]


def average(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """The mean over ranks of each scalar (one all-reduce for all of them)."""
    if not active() or not values:
        return values
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    dist.all_reduce(stacked)  # SUM: gloo has no AVG
    return dict(zip(values, stacked / dist.get_world_size()))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when it is True on any (so all ranks stop at the same step)."""
    if not active():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(obj: Any) -> list[Any] | Any:
    """Every rank's object, as a list on all ranks (the object itself without DDP)."""
    if not active():
        return obj
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def finish() -> NoReturn:
    """End a torchrun process whose work is done: leave the group, flush the output, exit 0.

    The exit skips the interpreter's teardown, where gloo's threads can abort the process
    ("terminate called without an active exception", SIGABRT) and make torchrun report a
    successful run as failed. The event files and checkpoints are closed before this point.
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def active() -> bool:
    """Whether this process is one of several in a process group."""
    return dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """Rank 0, or the only process: the one that writes."""
    return not active() or dist.get_rank() == 0


def wrap(module: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel around `module` when several processes train; else `module` itself."""
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel

    device = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """How many processes train together (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def check_critic_norm(norm: str, ranks: int) -> None:
    """Refuse batch norm in a data-parallel critic: each rank would normalise its own real and fake batches apart."""
    if ranks > 1 and norm == "batch":
        raise GanLabError("Data-parallel training needs a critic without batch norm: each rank would "
                          "normalise its own real and fake batches apart. Use model.critic_norm=layer.")


def lr_scale(setting: str, ranks: int) -> int:
    """The factor on every learning rate: the number of ranks under lr_scaling=linear, else 1."""
    if setting not in ("none", "linear"):
        raise GanLabError(f"lr_scaling={setting!r} is not known: use none or linear.")
    return ranks if setting == "linear" else 1


def describe(ranks: int, batch_size: int, scale: int) -> str:
    """The console line of a data-parallel run: its effective batch and what happened to the learning rates."""
    rates = f"x {ranks} (lr_scaling=linear)" if scale > 1 else "unchanged (lr_scaling=none)"
    return (f"[bold]data-parallel[/] {ranks} ranks x batch {batch_size} = effective batch {ranks * batch_size}; "
            f"learning rates {rates}")
