"""A full disk ends a run with one paragraph, its status marked and its last good checkpoint named.

The tests never fill a real disk (that needs root and a mount): `FullDisk` makes the writes a run
does raise OSError(ENOSPC) from a chosen moment on, at the places they reach the disk — TensorBoard's
record writer (in its own thread), the sample PNGs, the checkpoint's bytes, train.log, and
status.json, which fails until the space reserved for it is given back.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import TINY, TINY_MLP, run_cli, user_error
from gan_lab.runs import checkpoint, runlog
from gan_lab.runs.tracker import console
from gan_lab.runs.checkpoint import load_checkpoint


def no_space(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullOs:
    """The os module as gan_lab.runs.checkpoint sees it, but os.write finds no space once the disk is full."""

    def __init__(self, disk: FullDisk):
        self.disk = disk

    def __getattr__(self, name: str) -> Any:
        if name == "write" and self.disk.full:
            return no_space
        return getattr(os, name)


class _FullFile:
    """train.log's file once the disk is full: every write fails."""

    def __init__(self, file: Any):
        self.file = file

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


class FullDisk:
    """Every write of a run fails with ENOSPC once `full` is set (status.json: until its reserve is freed)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, run_dir: Path):
        import matplotlib.figure
        import torchvision.utils
        from tensorboard.summary.writer.record_writer import RecordWriter

        self.full, self.everything, self.run_dir = False, False, run_dir
        disk = self

        def guarded(real: Any) -> Any:
            def write(*args: Any, **kwargs: Any) -> Any:
                if disk.everything:
                    no_space()
                return real(*args, **kwargs)
            return write

        monkeypatch.setattr(RecordWriter, "write", guarded(RecordWriter.write))  # TensorBoard's writer thread
        monkeypatch.setattr(torchvision.utils, "save_image", guarded(torchvision.utils.save_image))
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", guarded(matplotlib.figure.Figure.savefig))
        monkeypatch.setattr(checkpoint, "os", _FullOs(self))
        real_write_text = Path.write_text

        def write_text(path: Path, *args: Any, **kwargs: Any) -> Any:
            # a full disk whose only free-able space is what the run reserved for its last status
            if disk.full and path.parent == disk.run_dir and (disk.run_dir / ".status.reserve").exists():
                no_space()
            return real_write_text(path, *args, **kwargs)
        monkeypatch.setattr(Path, "write_text", write_text)

    def fill(self, everything: bool = True) -> None:
        """From now on the disk is full: for checkpoints, status.json and train.log, and unless told
        otherwise for TensorBoard and the sample images too (whose thread may fail first)."""
        self.full, self.everything = True, everything
        log = runlog.attached(console)
        if log is not None:
            log.plain.file = _FullFile(log.plain.file)


def leftovers(run_dir: Path) -> list[str]:
    return [str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if ".tmp" in p.name or p.name.endswith("reserve")]


def test_disk_full_before_the_first_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    disk = FullDisk(monkeypatch, run_dir)
    import gan_lab.training.observers

    real_log_samples = gan_lab.training.observers.log_samples

    def fill_then_log(*args: Any, **kwargs: Any) -> None:  # the disk fills just before the first samples
        disk.fill()
        real_log_samples(*args, **kwargs)
    monkeypatch.setattr(gan_lab.training.observers, "log_samples", fill_then_log)
    err = user_error(capsys, "train", *TINY, *TINY_MLP, "threads=1", "train.checkpoint_every=100", f"hydra.run.dir={run_dir}")
    assert "Exception in thread" not in err  # TensorBoard's writer thread says nothing of its own
    assert f"No space left to write" in err and str(run_dir) in err and "free" in err, err
    assert "No checkpoint had been written yet" in err, err
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "No space left" in status["error"]
    assert leftovers(run_dir) == []


def test_disk_full_at_a_later_checkpoint_names_the_last_good_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    disk = FullDisk(monkeypatch, run_dir)
    import gan_lab.training.resume

    real_save = gan_lab.training.resume.save_checkpoint

    def save_then_fill(*args: Any, **kwargs: Any) -> Path:  # the first checkpoint fits, then the disk is full
        path = real_save(*args, **kwargs)
        disk.fill(everything=False)  # the next checkpoint is the write that fails
        return path
    monkeypatch.setattr(gan_lab.training.resume, "save_checkpoint", save_then_fill)
    err = user_error(capsys, "train", *TINY, *TINY_MLP, "threads=1", "train.sample_every=100", f"hydra.run.dir={run_dir}")
    last = run_dir / "checkpoints" / "last.pt"
    assert "unexpected pos" not in err and "Exception in thread" not in err
    assert "No space left to write the checkpoint step_00000004.pt" in err and "needed" in err, err
    assert f"{last} (step 2)" in err and f"resume={run_dir}" in err, err
    assert load_checkpoint(run_dir)["step"] == 2  # the earlier checkpoint survives, whole
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "step_00000004.pt" in status["error"]
    assert leftovers(run_dir) == []


def test_free_space_below_a_few_checkpoints_is_warned_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    real_usage = shutil.disk_usage

    def little_left(path: Any) -> Any:  # a disk with room for two more checkpoints of this tiny run
        usage = real_usage(path)
        return usage._replace(free=60_000) if str(tmp_path) in str(path) else usage
    monkeypatch.setattr(shutil, "disk_usage", little_left)
    run_cli("train", *TINY, *TINY_MLP, "threads=1", f"hydra.run.dir={tmp_path / 'run'}")
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("free on the disk holding") == 1, err  # said once, not at every checkpoint
    assert f"{tmp_path / 'run' / 'checkpoints'}" in err and "checkpoints' worth" in err
