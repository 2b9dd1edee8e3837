"""The CUDA-graph contract: what a data set's sample() and a model's forward may do inside a captured graph.

On CUDA, gan-lab captures a whole training iteration (critic steps, generator step, optimizer
steps) as one CUDA graph and replays it (gan_lab.training.graphs). A replay re-runs the recorded
kernels with the recorded arguments and nothing else: no Python runs. So code that runs inside
the iteration may only enqueue device work whose shapes and arguments are the same every step.
Each data set (its `sample()`) and each model (G's and the critic's forward, with every cure)
declares whether it keeps this contract, as a class attribute or property:

    capturable: bool      # True: it keeps the contract below
    not_capturable: str   # read when capturable is False: why not, one clause ("streams ... from disk")

Capturable means, inside the call:
- no host sync: nothing reads a device value back to the host (`.item()`, `.cpu()`, `.tolist()`,
  `bool(tensor)`, `if tensor:`, printing a tensor) and no op whose output size depends on values
  (`nonzero`, `masked_select`, boolean-mask indexing, `unique`): on the GPU these wait for the device,
  which capture forbids, and a replay would reuse the first answer;
- no data-dependent shapes: every shape follows from the batch size and the configuration;
- no host I/O (files, sockets, DataLoader workers) and no Python, NumPy or CPU-side RNG: a replay
  would repeat the first batch. Every random number comes from torch's generator on the tensors'
  device (torch.randint / rand / randn with device=...), which hands each replay fresh offsets;
- no new tensors moved from the host (`torch.tensor(...)`, `.to(device)` of a CPU tensor): build
  constants once in __init__, on the device.

A part declaring capturable=False trains eagerly, with one warning naming `not_capturable`
(training.graphs.graph_blocker); a part that declares nothing is treated as not capturable.
tests/test_capture.py walks conf/data, conf/model and conf/loss and checks on the CPU what can be
checked there: no host-syncing aten op, no file opened, and only torch's generator drawn from.
"""

from __future__ import annotations

from typing import Any


def not_capturable(**parts: Any) -> str | None:
    """Why one of these parts (by role: data=..., critic=...) may not run inside a CUDA graph, or None when all may."""
    for role, part in parts.items():
        declared = getattr(part, "capturable", None)
        if declared is None:
            return (f"the {role} ({type(part).__name__}) does not declare whether it may run inside a CUDA graph "
                    f"(its `capturable`, see gan_lab.capture)")
        if not declared:
            return f"the {role} ({type(part).__name__}) {getattr(part, 'not_capturable', 'declares capturable=False')}"
    return None
