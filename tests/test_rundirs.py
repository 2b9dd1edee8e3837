"""Run bookkeeping: one directory per run, harmless re-runs, a kept log, the resolved config, no litter."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import TINY, TINY_MLP, run_cli
from gan_lab.errors import GanLabError
from gan_lab.runs import rundirs
from gan_lab.runs.checkpoint import load_checkpoint
from gan_lab.runs.status import read_status

QUICK = [*TINY, *TINY_MLP, "metrics=false", "threads=1"]


def train(cwd: Path, *overrides: str) -> subprocess.Popen:
    """`python -m gan_lab train` in a subprocess, started in cwd."""
    return subprocess.Popen([sys.executable, "-m", "gan_lab", "train", *overrides], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under root with its modification time and bytes."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_runs_started_together_get_a_directory_each(tmp_path: Path) -> None:
    procs = [train(tmp_path, *QUICK, f"seed={seed}") for seed in range(4)]
    outs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, [err[-2000:] for _, err in outs]
    runs = sorted(p.parent.parent for p in (tmp_path / "outputs").glob("*/*/.hydra/config.yaml"))
    assert len(runs) == 4
    seeds = sorted(OmegaConf.load(run / ".hydra" / "overrides.yaml")[-1] for run in runs)
    assert seeds == [f"seed={s}" for s in range(4)]  # each run's own record, none overwritten
    for run in runs:
        assert len(list(run.glob("events.out.tfevents.*"))) == 1
        assert read_status(run)["status"] == "completed" and load_checkpoint(run)["step"] == 4


def test_a_taken_default_name_gets_a_suffix(tmp_path: Path) -> None:
    base = tmp_path / "outputs" / "2026-01-01" / "12-00-00"
    assert [rundirs.claim(base) for _ in range(3)] == [base, base.with_name("12-00-00_2"),
                                                      base.with_name("12-00-00_3")]


@pytest.mark.slow
def test_a_directory_held_by_a_live_run_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    live = train(tmp_path, *QUICK, "train.steps=100000", "train.checkpoint_every=100000", "train.sample_every=100000",
                 f"hydra.run.dir={run_dir}")
    try:
        while not (run_dir / "train.log").is_file() or "step 2/" not in (run_dir / "train.log").read_text():
            assert live.poll() is None, live.stderr.read()
            time.sleep(0.1)
        before = snapshot(run_dir / ".hydra")
        second = train(tmp_path, *QUICK, "seed=1", f"hydra.run.dir={run_dir}")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2 and "in use by a live gan-lab run" in err and "Traceback" not in err
        assert f"pid {live.pid}" in " ".join(err.split())
        assert snapshot(run_dir / ".hydra") == before  # the live run's record is untouched
    finally:
        live.send_signal(signal.SIGTERM)
        live.communicate(timeout=60)
    assert read_status(run_dir)["status"] == "interrupted"


@pytest.mark.slow
def test_rerunning_a_finished_run_does_nothing_and_a_longer_one_continues(tmp_path: Path, capsys) -> None:
    run_cli("train", *QUICK, f"hydra.run.dir={tmp_path}")
    # the run's CPU seconds (building and training: the tables benchmark's fit time), within this process's
    assert 0 < read_status(tmp_path)["cpu_s"] < time.process_time()
    before = snapshot(tmp_path)
    capsys.readouterr()
    run_cli("train", *QUICK, f"hydra.run.dir={tmp_path}")  # the same command again: exits 0
    assert "already holds this run, completed at step 4: nothing to do" in " ".join(capsys.readouterr().err.split())
    assert snapshot(tmp_path) == before  # not a byte, not a timestamp
    run_cli("train", *QUICK, "train.log_every=1", f"hydra.run.dir={tmp_path}")  # a harmless change: still done
    assert read_status(tmp_path)["status"] == "completed" and load_checkpoint(tmp_path)["step"] == 4
    with pytest.raises(SystemExit) as stop:  # a change resume refuses: an error, but the record stays
        run_cli("train", *TINY, "model.hidden=48", "model.depth=2", "metrics=false", "threads=1",
                f"hydra.run.dir={tmp_path}")
    assert stop.value.code == 2
    assert read_status(tmp_path)["status"] == "completed" and read_status(tmp_path)["metrics"]["step"] == 4
    run_cli("train", *QUICK, "train.steps=6", f"hydra.run.dir={tmp_path}")  # more steps: continues in place
    assert load_checkpoint(tmp_path)["step"] == 6 and read_status(tmp_path)["metrics"]["step"] == 6


@pytest.mark.slow
def test_a_sweep_relaunched_into_its_directory_fills_in_the_holes(tmp_path: Path, capsys) -> None:
    sweep_dir = tmp_path / "sweep"

    def sweep() -> str:
        with pytest.raises(SystemExit) as stop:  # in this process: the basic launcher runs the jobs here
            run_cli("train", "-m", *QUICK, "loss.lambda_gp=-1,0.1,1", f"hydra.sweep.dir={sweep_dir}")
        err = " ".join(capsys.readouterr().err.split())
        assert stop.value.code == 2 and "1 of 3 jobs of the sweep failed" in err, err[-3000:]
        return err

    sweep()
    failed, done, gone = sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: p.name)
    shutil.rmtree(gone)  # a job that never ran (or whose node lost its files)
    results = {k: v for k, v in snapshot(done).items() if not k.startswith((".hydra", "train.log", ".gan-lab"))}
    failed_at = read_status(failed)["time"]
    time.sleep(1.1)  # status times are whole seconds
    assert "already holds job 1 (" in sweep()
    assert {k: v for k, v in snapshot(done).items() if k in results} == results  # checkpoints, events, status
    assert read_status(gone)["status"] == "completed" and load_checkpoint(gone)["step"] == 4  # the hole, filled
    assert read_status(failed)["status"] == "failed" and read_status(failed)["time"] != failed_at  # run again


@pytest.mark.slow
def test_train_log_keeps_what_the_console_showed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gan_lab.runs.tracker import console

    monkeypatch.setattr(console, "_force_terminal", True)  # a terminal: the live bar, no step lines printed
    run_cli("train", *QUICK, f"hydra.run.dir={tmp_path}")
    log = (tmp_path / "train.log").read_text()
    assert "step 2/4" in log and "step 4/4" in log  # the plain step lines the bar showed
    assert "gan-lab train: done" in log and "generator steps" in log and "run directory:" in log  # the summary
    assert "lambda_gp: 0.1" in log  # the config tree
    assert "\x1b" not in log  # no ANSI codes
    with pytest.raises(SystemExit):  # an error after training: printed, and kept in the log
        run_cli("train", *QUICK, "train.steps=6", "objective=metrics/nope", f"hydra.run.dir={tmp_path}")
    log = (tmp_path / "train.log").read_text()
    assert "gan-lab: error: objective='metrics/nope'" in log and "step 6/6" in log  # appended: the resume's too


@pytest.mark.slow
def test_the_run_directory_holds_the_resolved_config(tmp_path: Path) -> None:
    run_cli("train", *QUICK, f"hydra.run.dir={tmp_path}")
    saved = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert OmegaConf.is_interpolation(saved.loss, "lambda_gp")  # Hydra's record keeps ${data.recommended...}
    resolved = OmegaConf.load(tmp_path / rundirs.RESOLVED)
    assert resolved.loss.lambda_gp == 0.1 and resolved.train.steps == 4 and resolved.model.hidden == 32


def test_a_refused_run_prints_its_error_alone_and_leaves_no_folder(tmp_path: Path, capsys,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_cli("train", *QUICK, "loss.lambda_gp=-1")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "loss.lambda_gp=-1 is out of range" in err
    assert "config" not in err.split("gan-lab: error")[0] and "──" not in err  # no config tree before it
    assert not (tmp_path / "outputs").exists()
    with pytest.raises(SystemExit):  # a directory named on the command line: removed too, if this run made it
        run_cli("train", *QUICK, "loss.lambda_gp=-1", "hydra.run.dir=mine/run")
    assert not (tmp_path / "mine" / "run").exists()
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):  # a folder the user had: never removed
        run_cli("train", *QUICK, "loss.lambda_gp=-1", f"hydra.run.dir={keep}")
    assert (keep / "notes.txt").read_text() == "mine" and read_status(keep)["status"] == "failed"


@pytest.mark.slow
def test_hold_refuses_a_held_directory_and_frees_it_with_its_owner(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from gan_lab.runs import rundirs; rundirs.hold(Path(sys.argv[1])); print('held', flush=True); "
                               "time.sleep(60)", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert rundirs.held_elsewhere(tmp_path)
        with pytest.raises(GanLabError, match=f"pid {holder.pid} on"):
            rundirs.hold(tmp_path)
    finally:
        holder.kill()  # the kernel drops the lock with its owner, however it ends
        holder.wait()
    assert not rundirs.held_elsewhere(tmp_path)
    rundirs.hold(tmp_path)
    rundirs.release(tmp_path)


@pytest.mark.slow
def test_report_shows_the_resolved_values_that_differ(tmp_path: Path, capsys) -> None:
    # a sweep over data sets: each recommends its own lambda_gp, which no override names
    for job, data in enumerate(("ring8", "grid25")):
        run_cli("train", *QUICK, f"data={data}", f"hydra.run.dir={tmp_path / f'{job}_{data}'}")
    capsys.readouterr()
    run_cli("report", str(tmp_path), "plot=none")
    with (tmp_path / "report.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [(r["data"], r["loss.lambda_gp"]) for r in rows] == [("ring8", "0.1"), ("grid25", "1")]
    assert "loss.lambda_gp" in capsys.readouterr().out


def test_a_finished_run_leaves_no_lock_file(tmp_path: Path) -> None:
    run_cli("train", *QUICK, f"hydra.run.dir={tmp_path}")
    assert read_status(tmp_path)["status"] == "completed"
    assert not (tmp_path / rundirs.LOCK).exists() and not rundirs.held_elsewhere(tmp_path)


def test_hold_never_keeps_the_lock_of_a_file_removed_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a run that ends removes its lock file while it holds it: a process that opened the file just before
    # then locks a file no name points to, and must start again on the file the name now holds
    real_flock, removed = rundirs.fcntl.flock, []

    def flock(fd: int, operation: int) -> None:
        if not removed:  # the owner's release, between this process's open and its flock
            removed.append(os.fstat(fd).st_ino)
            (tmp_path / rundirs.LOCK).unlink()
        real_flock(fd, operation)

    monkeypatch.setattr(rundirs.fcntl, "flock", flock)
    rundirs.hold(tmp_path)
    try:
        held = os.fstat(rundirs._held[tmp_path.resolve()])
        assert (held.st_ino, held.st_nlink) == (os.stat(tmp_path / rundirs.LOCK).st_ino, 1)
        assert f"pid {os.getpid()}" in (tmp_path / rundirs.LOCK).read_text()
    finally:
        rundirs.release(tmp_path)
    assert not (tmp_path / rundirs.LOCK).exists()
