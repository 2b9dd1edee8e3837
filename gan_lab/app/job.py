"""The life of one training job, from its run folder to its final metrics (the task wrapper).

`gan-lab train` composes the config and builds the objects (gan_lab.app.cli); around that,
this module owns what makes a run a run: holding its run directory, the status marks a
report reads (running, completed, failed, interrupted), the log file, the resume policy,
what a Ctrl-C or a scheduler's signal leaves behind, and the summary printed at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from gan_lab.errors import GanLabError
from gan_lab.runs.checkpoint import LAST, load_checkpoint, resume_hint
from gan_lab.runs.files import disk_full_explained
from gan_lab.runs.runlog import RunLog
from gan_lab.runs.safety import Interrupted, config_differences, hand_over
from gan_lab.runs.tracker import console
from gan_lab.runs.status import read_status, write_status
from gan_lab.sweeps import job_threads, objective_name, objective_value


def report_error(err: Exception) -> None:
    """Print a user error as one paragraph, no traceback."""
    # soft_wrap: no hard line breaks inside paths and overrides, so they copy-paste whole
    console.print(f"[bold red]gan-lab: error:[/] {escape(str(err))}", soft_wrap=True, highlight=False)


def report_interrupt() -> NoReturn:
    """Ctrl-C outside the training loop (which checkpoints first): one line and exit 130, no traceback."""
    # every file gan-lab writes is written atomically, so what is on disk is whole
    sys.stderr.write("\ngan-lab: interrupted (Ctrl-C); files are written whole or not at all, so none is "
                     "left half-written.\n")
    sys.exit(130)  # 128 + SIGINT, what shells report for a Ctrl-C


def print_config(plain: dict[str, Any]) -> None:
    """The composed config as a rich tree, interpolations resolved."""
    tree = Tree("[bold]config")

    def add(node: Tree, value: Any) -> None:
        for key, child in value.items():
            if isinstance(child, dict):
                add(node.add(f"[bold cyan]{key}"), child)
            else:
                node.add(f"[cyan]{key}[/]: {child}")

    add(tree, plain)
    console.print(tree)


def run_job(cfg: DictConfig, run_training: Callable[..., dict[str, float]]) -> float | None:
    """One job of a run or of a sweep, around run_training(cfg, run_dir, on_start, follow_free_cores); its objective.

    The job holds its run directory (gan_lab.runs.rundirs) and writes run_dir/status.json when it
    starts and ends (for `gan-lab report`), and run_dir/train.log with what the console showed.
    A directory that already holds this very run, completed, is left as it is (a sweep
    re-launched into its own directory runs only its missing, failed or interrupted jobs). A
    refusal before training never rewrites the record of a completed or interrupted run there.
    In a sweep a user error fails only its own job: it is printed and marked, the sweeper gets
    None (Optuna records a failed trial; NaN would crash its Hydra plugin) and the other jobs
    go on; `gan-lab train -m` then exits 2 naming the failed jobs. A single run refused before
    training removes the directory it created. Bugs are marked too, then raised with their traceback.
    """
    from gan_lab.runs import rundirs
    from gan_lab.training import distributed

    job = HydraConfig.get()
    run_dir = Path(job.runtime.output_dir)
    overrides = list(job.overrides.task)
    sweep, main = job.mode == RunMode.MULTIRUN, distributed.is_main()  # under torchrun, rank 0 speaks for the run
    name = f"job {job.job.num} ({' '.join(overrides)})" if sweep else "the run"

    def mark(status: str, **fields: Any) -> None:
        if main:
            write_status(run_dir, status, overrides=overrides, **fields)

    log = None  # the run's train.log: rank 0 alone writes it
    if main:
        try:
            rundirs.hold(run_dir)  # a single run's is already held, since train_command
        except GanLabError as err:
            report_error(GanLabError(f"{name} skipped: {err}") if sweep else err)
            if sweep:
                return None
            sys.exit(2)
        log = RunLog(console, run_dir / f"{job.job.name}.log")  # attached to the console
    previous = (read_status(run_dir) or {}).get("status")
    kept = previous in ("completed", "interrupted", "stopped")  # results on disk that a refused re-run must not relabel
    began = False

    def start(plain: dict[str, Any]) -> None:
        nonlocal began
        began = True
        mark("running")
        if main:
            rundirs.write_resolved(run_dir, plain)

    if not kept:
        mark("running")
    result: dict[str, float] = {}
    try:
        record = _finished(cfg, run_dir)
        if record is not None:
            console.print(f"[bold green]gan-lab:[/] {run_dir} already holds {name}, completed at step "
                          f"{cfg.train.steps}: nothing to do (raise train.steps to train further).",
                          soft_wrap=True, highlight=False)
            metrics = record.get("metrics") or {}
            return metrics.get(objective_name(metrics, str(cfg.objective)))
        threads = job_threads(cfg.threads, job.launcher if sweep else None)
        if threads:
            torch.set_num_threads(threads)  # n parallel jobs x threads <= cores: no oversubscription
        with disk_full_explained(run_dir, lambda: resume_hint(run_dir)):  # a full disk: one paragraph
            # threads: auto on a single run (no launcher sharing the cores out): follow the free cores
            result = run_training(cfg, run_dir, start, follow_free_cores=threads is None and cfg.threads == "auto")
            diagnosis = result.pop("diagnosis", None)  # what gan_lab.training.diagnosis named
            used = result.pop("threads", None) or [torch.get_num_threads()]  # what the log said, not the count after
            cpu_s = result.pop("cpu_s", None)  # this process's CPU seconds, building and training
            protocol = result.pop("metrics_protocol", None)  # how metrics/* were measured (FID's counts, weights)
            console.print(summary_table(result))
            print_outputs(run_dir)
        # rank 0 alone computes metrics/*: the other ranks of a torchrun job have no objective to return
        objective = objective_value(result, str(cfg.objective)) if main else float("nan")
        # train.on_failure=stop ended it early: a result, not an error (exit 0; a sweep counts it as done)
        stopped = (diagnosis or {}).get("stopped")
        named = objective_name(result, str(cfg.objective))  # objective=auto: the scalar it stood for
        mark("stopped" if stopped else "completed", objective={named: objective}, metrics=result,
             threads=used[-1], **({"threads_used": used} if len(set(used)) > 1 else {}), cpu_s=cpu_s,
             **({"metrics_protocol": protocol} if protocol else {}), diagnosis=diagnosis)
        if stopped:
            console.print(f"[bold yellow]gan-lab: stopped early at step {int(result['step']):,} of "
                          f"{cfg.train.steps:,} (train.on_failure=stop):[/] {stopped} Its checkpoint is in "
                          f"{run_dir / 'checkpoints'}; the same command with train.on_failure=warn continues it.",
                          soft_wrap=True, highlight=False)
    except GanLabError as err:
        if began or not kept:
            mark("failed", error=str(err), metrics=result)
        if sweep:
            report_error(GanLabError(f"{name} failed, the sweep goes on: {err}"))
            return None
        report_error(err)
        if main and not began:  # refused before training: leave no folder behind (if this run made it)
            _close_log(log)
            rundirs.remove_if_fresh(run_dir)
        sys.exit(2)
    except Interrupted as stop:
        mark("interrupted", error=str(stop))
        console.print(f"[bold yellow]gan-lab: stopped by {stop}[/]; a checkpoint of that step is in "
                      f"{run_dir / 'checkpoints'}. Continue this run in place with the same command plus "
                      f"hydra.run.dir={run_dir} (it resumes from that checkpoint on its own); resume={run_dir} "
                      f"instead continues it in a new run directory, leaving this one as it is.",
                      soft_wrap=True, highlight=False)
        hand_over(stop.signum)  # under submitit: its checkpoint() and requeue, then it exits
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:
        mark("interrupted", error="KeyboardInterrupt")
        raise
    except Exception as err:
        mark("failed", error=f"{type(err).__name__}: {err}")
        if log is not None:
            log.exception()
        raise
    finally:
        _close_log(log)
        rundirs.release(run_dir)
    return objective


def _finished(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    # the status record when run_dir already holds this run, completed (a config that does not
    # resolve is not: the run itself then reports why)
    from gan_lab.runs.rundirs import finished

    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        return None
    return finished(run_dir, plain)


def _close_log(log: RunLog | None) -> None:
    if log is not None:
        log.close()  # detaches it from the console


def load_resume(resume: str | None, run_dir: Path, plain: dict[str, Any], force: bool,
                steps: int) -> dict[str, Any] | None:
    """The checkpoint to continue from, refused when the config changed what training means."""
    if resume == "auto":
        # a re-run in the same run directory (a requeued job, hydra.run.dir=...) continues it
        if not (run_dir / "checkpoints" / LAST).is_file():
            return None
        resume = str(run_dir)
    if not resume:
        return None
    state = load_checkpoint(resume)
    differences = config_differences(state["config"], plain)
    if differences and not force:
        raise GanLabError(
            f"Refusing to resume from {resume}: the config differs from the checkpoint's in keys that "
            f"change training: {'; '.join(differences)}. Use the checkpoint's values, start a fresh run "
            f"directory, or pass resume_force=true to resume anyway.")
    if state["step"] >= steps:
        raise GanLabError(f"The checkpoint {resume} is already at step {state['step']}, and "
                          f"train.steps={steps}: raise train.steps to train further.")
    console.print(f"[bold]resuming[/] from step {state['step']} of {resume}")
    return state


def summary_table(result: dict[str, float]) -> Table:
    """The end-of-run table: final losses, metrics, steps and time (a resumed run's: all its parts, and the last)."""
    table = Table(title="gan-lab train: done", show_header=False, title_justify="left")
    table.add_column(style="cyan")
    table.add_column(justify="right")
    table.add_row("generator steps", f"{int(result['step'])}")
    since_resume = result.get("time/seconds_since_resume")
    table.add_row("time", f"{result['time/seconds']:.1f} s" + (
        "" if since_resume is None else f" ({since_resume:.1f} s since the resume)"))
    for tag, value in result.items():
        if tag.startswith(("loss/", "critic/wasserstein", "grad_norm/", "metrics/", "metrics_raw/")):
            table.add_row(tag, f"{value:.4f}")
    return table


def print_outputs(run_dir: Path) -> None:
    """Where the run's outputs are, as whole lines (a table cell would cut long paths)."""
    for name, where in (("run directory", run_dir), ("checkpoint", run_dir / "checkpoints" / "last.pt"),
                        ("compare runs", f"tensorboard --logdir {run_dir.parent}")):
        console.print(f"[cyan]{name}[/]: {escape(str(where))}", soft_wrap=True, highlight=False)
