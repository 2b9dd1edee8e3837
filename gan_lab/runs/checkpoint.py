"""Checkpoints: plain dicts of tensors and containers, written atomically, loaded safely.

A checkpoint holds G, the critic, both optimizers, the step, the resolved config as
plain containers and the RNG states, so `torch.load(weights_only=True)` reads it (no
code from the file ever runs) and a model can be rebuilt from it without gan-lab's
classes being pickled.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import torch

from gan_lab.errors import GanLabError
from gan_lab.runs.files import DiskFull, disk_full, file_mode, free_bytes
from gan_lab.runs.rebuild import check_config

FORMAT = "gan-lab-checkpoint"
VERSION = 1
LAST = "last.pt"
_STEP_FILE = re.compile(r"step_(\d+)\.pt$")


def save_checkpoint(state: dict[str, Any], directory: str | Path, step: int, keep: int) -> Path:
    """Write `step_<N>.pt` atomically in `directory`, last.pt a second name for it; keep the newest `keep` step files."""
    directory = Path(directory)
    step_path = directory / f"step_{step:08d}.pt"
    buffer = io.BytesIO()  # serialised first: its size is what the disk must hold, known before writing
    try:
        torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)
        data = buffer.getbuffer()
        directory.mkdir(parents=True, exist_ok=True)
        free = free_bytes(directory)
        if free is not None and free < len(data):  # refused up front: the disk is not filled to the brim
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _atomic_write(data, step_path)
        _link_last(step_path, data)
    except OSError as err:
        if disk_full(err):
            raise DiskFull(directory, f"the checkpoint {step_path.name}", needed=buffer.getbuffer().nbytes or None,
                           quota=err.errno == errno.EDQUOT) from None
        raise GanLabError(f"Could not write a checkpoint to {directory}: {err.strerror or err}. "
                          f"The previous checkpoint there is untouched; free some space or choose a "
                          f"writable output directory (hydra.run.dir=...).") from None
    steps = sorted(p for p in directory.iterdir() if _STEP_FILE.search(p.name))
    for old in steps[:-keep] if keep > 0 else steps:
        old.unlink(missing_ok=True)  # last.pt, a link to the newest, keeps its data
    return step_path


def _atomic_write(data: memoryview, path: Path) -> None:
    # Write to a temporary file in the same folder, flush it to disk, then rename over
    # the target: a crash or a full disk at any moment leaves either the old or the new file, never a torn one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())  # mkstemp's 0600 would hide it from the lab: follow the umask like every file
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise


def _link_last(step_path: Path, data: memoryview) -> None:
    # last.pt is a hard link to the newest step file, not a second copy: one file's space, and pruning
    # that step file later leaves last.pt whole. A new link replaces the old one atomically.
    last = step_path.with_name(LAST)
    tmp = step_path.with_name(f".{LAST}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(step_path, tmp)
    except OSError as err:
        if disk_full(err):
            raise
        _atomic_write(data, last)  # a file system without hard links: a copy, as before
        return
    try:
        os.replace(tmp, last)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def resume_hint(run_dir: Path) -> str:
    """For a run that stopped on an error: its last good checkpoint and how to continue, or that it has none."""
    last = run_dir / "checkpoints" / LAST
    if not last.is_file():
        return "No checkpoint had been written yet: once there is space, run the same command again."
    # last.pt is a second name of the newest step file (when the file system has hard links): its step
    steps = [int(match.group(1)) for p in last.parent.glob("step_*.pt")
             if (match := _STEP_FILE.search(p.name)) and p.samefile(last)]
    which = f"{last} (step {steps[0]})" if steps else str(last)
    return (f"The last good checkpoint, {which}, is untouched: once there is space, continue from it with the "
            f"same command plus resume={run_dir} (or hydra.run.dir={run_dir}, which resumes on its own).")


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory, its checkpoints/ folder, or a .pt file -> the checkpoint file."""
    path = Path(path).expanduser()
    for candidate in (path, path / LAST, path / "checkpoints" / LAST):
        if candidate.is_file():
            return candidate
    if path.exists() and not path.is_dir():  # a FIFO, a socket, a device: never opened, so nothing blocks
        raise GanLabError(f"{path.resolve()} is not a regular file, so it is not a checkpoint: give a .pt file "
                          f"or a run directory that holds checkpoints/{LAST}.")
    raise GanLabError(f"No checkpoint at {path.resolve()}: give a .pt file or a run directory that "
                      f"holds checkpoints/{LAST} (e.g. outputs/2026-01-01/12-00-00).")


# What every gan-lab checkpoint holds, and the type of each entry: checked before anything reads them.
ENTRIES = {"step": int, "G": dict, "critic": dict, "opt_g": dict, "opt_d": dict, "rng": (dict, list),
           "config": dict, "data_shape": list, "n_classes": int}
# Entries only some checkpoints hold (a run with a generator EMA), checked when present.
# seconds: the training time up to this step, over every resume; a table's data: its layout (what the model is
# built from) and state (the fitted transform, the held-out split).
OPTIONAL = {"G_ema": dict, "seconds": float, "layout": dict, "data_state": dict}
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6, the only one gan-lab writes


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a gan-lab checkpoint on the CPU without executing anything stored in it."""
    file = resolve_checkpoint(path)
    not_torch = (f"Could not read the checkpoint {file}: it is truncated or not a PyTorch file written by "
                 f"gan-lab train. Use another checkpoint, e.g. one of the step_*.pt files beside it.")
    try:
        # O_NONBLOCK: should the path have turned into a FIFO since it was checked, opening it cannot hang
        with os.fdopen(os.open(file, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise GanLabError(f"{file} is not a regular file, so it is not a checkpoint.")
            if f.read(len(ZIP_MAGIC)) != ZIP_MAGIC:  # text, random bytes, an empty file: not torch.save's zip
                raise GanLabError(not_torch)
            f.seek(0)
            state = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "allowed global" not in str(err):  # not code, just bytes that are no pickle at all
            raise GanLabError(not_torch) from None
        # weights_only refuses any global that is not a tensor or a plain container
        raise GanLabError(f"Refused to load {file}: it asks to import or run code when unpickled, so it is "
                          f"not a plain gan-lab checkpoint and nothing from it was executed. Only load "
                          f"checkpoints written by gan-lab.") from None
    except GanLabError:
        raise
    except Exception as err:  # noqa: BLE001
        # any other exception means the bytes are no readable checkpoint: a zip of something else, a
        # torn file, a damaged pickle make the weights-only unpickler raise RuntimeError, KeyError, ...
        raise GanLabError(f"{not_torch[:-1]} ({type(err).__name__}).") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise GanLabError(f"{file} is a PyTorch file but not a gan-lab checkpoint (no "
                          f"'format: {FORMAT}' entry). Give a checkpoint written by gan-lab train.")
    if state.get("version") != VERSION:
        raise GanLabError(f"{file} is a gan-lab checkpoint of format version {state.get('version')}, "
                          f"but this gan-lab reads version {VERSION}. Resume it with the gan-lab "
                          f"version that wrote it.")
    present = {key: kind for key, kind in OPTIONAL.items() if key in state}
    for key, kind in {**ENTRIES, **present}.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise GanLabError(f"{file} says it is a gan-lab checkpoint, but its entry {key!r} is "
                              f"{'missing' if key not in state else type(state[key]).__name__}: the file was "
                              f"altered or damaged. Use another checkpoint, e.g. a step_*.pt file beside it.")
    shape = state["data_shape"]
    if not 1 <= len(shape) <= 3 or not all(type(d) is int and d >= 1 for d in shape) or state["n_classes"] < 0:
        raise GanLabError(f"{file} holds an impossible data shape {shape} or class count {state['n_classes']}: "
                          f"the file was altered or damaged.")
    check_config(state["config"], file)  # the stored model and data nodes: gan-lab's builders, plain values
    return state
