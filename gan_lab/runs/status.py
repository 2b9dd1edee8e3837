"""A job's status record: run_dir/status.json, written when the job starts and when it ends.

`gan-lab report` reads it to show completed, failed, interrupted and still-running jobs side by
side, wherever the job ran (this process, a joblib worker, a SLURM node); a re-run reads it to
skip a finished run.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from gan_lab.runs.files import DiskFull, atomic_write_text, disk_full
from gan_lab.runs.provenance import code_version

STATUS = "status.json"
RESERVE = ".status.reserve"  # space kept free while a job runs, for its final status on a full disk
RESERVE_BYTES = 64 * 1024  # a status record with every metric is a few KiB; whole blocks of any file system
STATES = ("running", "completed", "failed", "interrupted", "stopped")  # stopped: train.on_failure=stop


def write_status(run_dir: Path, status: str, **fields: Any) -> None:
    """Write run_dir/status.json atomically (a report may read it while the job runs), with the code's version.

    While a job runs, RESERVE keeps a little space for its last status: on a full disk, the
    final record (failed, and why) is written into the space its deletion frees.
    """
    assert status in STATES, status
    record = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "code": code_version(), **fields}
    run_dir.mkdir(parents=True, exist_ok=True)
    # allow_nan: a diverged run's final scalars may hold NaN; Python's json reads it back
    text = json.dumps(record, indent=2, default=str, allow_nan=True) + "\n"
    reserve = run_dir / RESERVE
    try:
        try:
            atomic_write_text(run_dir / STATUS, text)
        except OSError as err:
            if not disk_full(err) or status == "running" or not reserve.exists():
                raise
            reserve.unlink()  # the space kept for this moment
            atomic_write_text(run_dir / STATUS, text)
    except OSError as err:
        if not disk_full(err):
            raise
        if status == "running":
            raise DiskFull(run_dir, STATUS, quota=err.errno == errno.EDQUOT) from None
        from gan_lab.runs.tracker import console  # the job is ending on its error: add this to it, do not replace it

        console.print(f"[yellow]note:[/] {run_dir / STATUS} could not be updated (no space left): it may still "
                      f"say {(read_status(run_dir) or {}).get('status', 'nothing')} for this {status} run.",
                      soft_wrap=True, highlight=False)
        return
    if status == "running":
        _reserve(reserve)
    else:
        reserve.unlink(missing_ok=True)


def _reserve(path: Path) -> None:
    # random bytes: a file system that compresses or deduplicates would not keep zeros' space
    if path.is_file() and path.stat().st_size == RESERVE_BYTES:
        return
    try:
        path.write_bytes(os.urandom(RESERVE_BYTES))
    except OSError as err:
        path.unlink(missing_ok=True)
        if not disk_full(err):
            raise  # else no room even for this: the run's next write says so


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The job's status record, or None when it never wrote one."""
    try:
        return json.loads((run_dir / STATUS).read_text())
    except (OSError, ValueError):
        return None


def find_runs(root: Path) -> list[Path]:
    """Every run directory under root (one with Hydra's .hydra/config.yaml), root included."""
    found = {p.parent.parent for p in root.glob("**/.hydra/config.yaml")}
    return sorted(found, key=_natural_key)


def _natural_key(path: Path) -> list[Any]:
    # 2_... sorts before 10_...: the order Hydra numbered the jobs
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]
