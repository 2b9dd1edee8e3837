"""What a sweep needs around its jobs: their thread count, their objective, and its verdict.

A job's status record is the run's own business (gan_lab.runs.status); a sweep adds the threads
each job may use, the scalar a sweeper optimises, and SweepSummary, the Hydra callback
conf/train.yaml names (`_target_: gan_lab.sweeps.SweepSummary`), which writes the sweep's
verdict into <sweep dir>/sweep.json for `gan-lab train -m` to act on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gan_lab.errors import GanLabError
from gan_lab.runs.files import atomic_write_text
from gan_lab.runs.status import find_runs, read_status

SUMMARY = "sweep.json"  # in the sweep directory: {"jobs": how many ran, "failed": their run directories}


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


class SweepSummary(Callback):
    """At the end of a multirun: the failed jobs into <sweep dir>/sweep.json, for `gan-lab train -m` to name."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        runs = [run for run in find_runs(sweep_dir) if run != sweep_dir]
        failed = [str(run) for run in runs if (read_status(run) or {}).get("status") == "failed"]
        atomic_write_text(sweep_dir / SUMMARY, json.dumps({"jobs": len(runs), "failed": failed}, indent=2) + "\n")


def read_summary(sweep_dir: Path) -> tuple[int, list[Path]] | None:
    """(jobs, run directories of the failed ones) that SweepSummary wrote, or None when it wrote nothing there."""
    try:
        record = json.loads((sweep_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return int(record["jobs"]), [Path(run) for run in record["failed"]]


def failure_message(sweep_dir: Path, total: int, failed: list[Path]) -> str:
    """One paragraph naming the failed jobs of a sweep and their errors."""
    lines = []
    for run in failed:
        error = str((read_status(run) or {}).get("error") or "no message").rstrip(".")
        lines.append(f"job {run.name.split('_', 1)[0]}: {error}.")
    return (f"{len(failed)} of {total} jobs of the sweep failed; the others ran to their end. "
            f"{' '.join(lines)} Compare them all with: gan-lab report {sweep_dir}")
