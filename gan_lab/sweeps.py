"""What a sweep needs around one job: its status file, its thread count, its objective.

Every job writes `status.json` into its run directory when it starts and when it ends,
so `gan-lab report` can show completed, failed, interrupted and still-running jobs side
by side, wherever the job ran (this process, a joblib worker, a SLURM node).
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gan_lab.errors import GanLabError
from gan_lab.runs.files import DiskFull, atomic_write_text, disk_full
from gan_lab.runs.provenance import code_version

STATUS = "status.json"
RESERVE = ".status.reserve"  # space kept free while a job runs, for its final status on a full disk
RESERVE_BYTES = 64 * 1024  # a status record with every metric is a few KiB; whole blocks of any file system
STATES = ("running", "completed", "failed", "interrupted", "stopped")  # stopped: train.on_failure=stop

# The last multirun of this process, set by SweepSummary for `gan-lab train` to act on:
# (sweep directory, number of jobs, run directories of the failed jobs).
last_sweep: tuple[Path, int, list[Path]] | None = None


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


def job_threads(setting: Any, launcher: DictConfig | None, cpus: int | None = None) -> int | None:
    """CPU threads for one job's torch ops; None keeps torch's default.

    `threads: auto` divides the cores among the jobs a launcher runs at once: joblib runs
    `n_jobs` (-1: one per core, -2: all but one, as joblib counts) jobs side by side, so
    each gets cores // n_jobs threads; submitit jobs get their `cpus_per_task`. A single
    run and the basic launcher (one job at a time) keep torch's default. An integer is used
    as given.
    """
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise GanLabError(f"threads={setting!r} is not valid: use auto or a whole number >= 1, e.g. threads=2.")
        return setting
    if cpus is None:  # the cores this process may use (a cgroup or taskset may allow fewer than the machine has)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    target = str(launcher.get("_target_", "")) if launcher is not None else ""
    if "joblib" in target:
        n_jobs = int(launcher.get("n_jobs") or -1)
        parallel = n_jobs if n_jobs > 0 else max(1, cpus + 1 + n_jobs)
        return max(1, cpus // parallel)
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    return None


# objective=auto: the Wasserstein estimate where the run logs one (a Wasserstein-like critic), else the critic's loss
AUTO_OBJECTIVE = ("critic/wasserstein_estimate", "loss/critic")


def objective_name(result: dict[str, float], name: str) -> str:
    """The final scalar `objective` names: itself, or for auto the first of AUTO_OBJECTIVE the run has."""
    if name != "auto":
        return name
    return next((tag for tag in AUTO_OBJECTIVE if tag in result), AUTO_OBJECTIVE[-1])


def objective_value(result: dict[str, float], name: str) -> float:
    """The named final scalar that the job returns to the sweeper (e.g. Optuna)."""
    name = objective_name(result, name)
    if name not in result:
        raise GanLabError(f"objective={name!r} is not among this run's final scalars. Available: "
                          f"{', '.join(sorted(result))}. Pick one of them, e.g. objective=loss/critic.")
    return float(result[name])


def find_runs(root: Path) -> list[Path]:
    """Every run directory under root (one with Hydra's .hydra/config.yaml), root included."""
    found = {p.parent.parent for p in root.glob("**/.hydra/config.yaml")}
    return sorted(found, key=_natural_key)


def _natural_key(path: Path) -> list[Any]:
    # 2_... sorts before 10_...: the order Hydra numbered the jobs
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


class SweepSummary(Callback):
    """At the end of a multirun: count the jobs that failed, so `gan-lab train -m` can say so."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global last_sweep
        sweep_dir = Path(str(config.hydra.sweep.dir))
        runs = [run for run in find_runs(sweep_dir) if run != sweep_dir]
        failed = [run for run in runs if (read_status(run) or {}).get("status") == "failed"]
        last_sweep = (sweep_dir, len(runs), failed)


def failure_message(sweep_dir: Path, total: int, failed: list[Path]) -> str:
    """One paragraph naming the failed jobs of a sweep and their errors."""
    lines = []
    for run in failed:
        error = str((read_status(run) or {}).get("error") or "no message").rstrip(".")
        lines.append(f"job {run.name.split('_', 1)[0]}: {error}.")
    return (f"{len(failed)} of {total} jobs of the sweep failed; the others ran to their end. "
            f"{' '.join(lines)} Compare them all with: gan-lab report {sweep_dir}")
