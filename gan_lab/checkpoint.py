"""Checkpoints: plain dicts of tensors and containers, written atomically, loaded safely.

A checkpoint holds G, the critic, both optimizers, the step, the resolved config as
plain containers and the RNG states, so `torch.load(weights_only=True)` reads it (no
code from the file ever runs) and a model can be rebuilt from it without gan-lab's
classes being pickled.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from gan_lab.errors import GanLabError

FORMAT = "gan-lab-checkpoint"
VERSION = 1
LAST = "last.pt"
_STEP_FILE = re.compile(r"step_(\d+)\.pt$")


def save_checkpoint(state: dict[str, Any], directory: str | Path, step: int, keep: int) -> Path:
    """Write `step_<N>.pt` and `last.pt` atomically in `directory`; keep the newest `keep` step files."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        state = {"format": FORMAT, "version": VERSION, **state}
        step_path = directory / f"step_{step:08d}.pt"
        _atomic_save(state, step_path)
        _atomic_save(state, directory / LAST)
    except OSError as err:
        raise GanLabError(f"Could not write a checkpoint to {directory}: {err.strerror or err}. "
                          f"The previous checkpoint there is untouched; free some space or choose a "
                          f"writable output directory (hydra.run.dir=...).") from None
    steps = sorted(p for p in directory.iterdir() if _STEP_FILE.search(p.name))
    for old in steps[:-keep] if keep > 0 else steps:
        old.unlink(missing_ok=True)
    return step_path


def _atomic_save(state: dict[str, Any], path: Path) -> None:
    # Write to a temporary file in the same folder, flush it to disk, then rename over
    # the target: a crash at any moment leaves either the old or the new file, never a torn one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory, its checkpoints/ folder, or a .pt file -> the checkpoint file."""
    path = Path(path).expanduser()
    for candidate in (path, path / LAST, path / "checkpoints" / LAST):
        if candidate.is_file():
            return candidate
    raise GanLabError(f"No checkpoint at {path.resolve()}: give a .pt file or a run directory that "
                      f"holds checkpoints/{LAST} (e.g. outputs/2026-01-01/12-00-00).")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a gan-lab checkpoint on the CPU without executing anything stored in it."""
    file = resolve_checkpoint(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "allowed global" not in str(err):  # not code, just bytes that are no pickle at all
            raise GanLabError(f"Could not read the checkpoint {file}: it is truncated or not a PyTorch "
                              f"file. Use another checkpoint, e.g. one of the step_*.pt files beside it.") from None
        # weights_only refuses any global that is not a tensor or a plain container
        raise GanLabError(f"Refused to load {file}: it asks to import or run code when unpickled, so it is "
                          f"not a plain gan-lab checkpoint and nothing from it was executed. Only load "
                          f"checkpoints written by gan-lab.") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise GanLabError(f"Could not read the checkpoint {file}: it is truncated or not a PyTorch "
                          f"file ({type(err).__name__}). Use another checkpoint, e.g. one of the "
                          f"step_*.pt files beside it.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise GanLabError(f"{file} is a PyTorch file but not a gan-lab checkpoint (no "
                          f"'format: {FORMAT}' entry). Give a checkpoint written by gan-lab train.")
    if state.get("version") != VERSION:
        raise GanLabError(f"{file} is a gan-lab checkpoint of format version {state.get('version')}, "
                          f"but this gan-lab reads version {VERSION}. Resume it with the gan-lab "
                          f"version that wrote it.")
    return state
