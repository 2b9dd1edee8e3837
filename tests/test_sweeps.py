"""Sweeps through the real CLI: launchers, failed jobs, Optuna, HParams and `gan-lab report`."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import TINY, TINY_MLP, run_cli
from gan_lab.errors import GanLabError
from gan_lab.runs.status import read_status
from gan_lab.sweeps import job_threads, objective_value

# TINY with one sample plot and one checkpoint per run, and no metrics: a job is mostly start-up.
SWEEP_TINY = [o for o in TINY if not o.startswith(("train.sample_every", "train.checkpoint_every"))] + [
    "train.sample_every=4", "train.checkpoint_every=4", "metrics=false", *TINY_MLP]


def sweep(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`python -m gan_lab train -m ...` in a subprocess, writing under tmp_path/sweep."""
    sweep_dir = tmp_path / "sweep"
    # One thread per job unless a test sets it: on a busy 2-core machine a tiny job with
    # torch's default 2 threads took 6-10 s, with 1 thread 1-3 s.
    threads = [] if any(o.startswith("threads=") for o in overrides) else ["threads=1"]
    command = [sys.executable, "-m", "gan_lab", "train", "-m", *overrides, *SWEEP_TINY, *threads,
               f"hydra.sweep.dir={sweep_dir}"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    except subprocess.TimeoutExpired as late:  # a failed assert then shows what the sweep printed
        text = (late.stderr or b"").decode(errors="replace") if isinstance(late.stderr, bytes) else late.stderr or ""
        out = subprocess.CompletedProcess(command, -9, "", f"timed out after 300 s\n{text}")
    return out, sweep_dir


def run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: int(p.name.split("_", 1)[0]))


def hparams_of(run_dir: Path) -> dict[str, object]:
    """The hyper-parameters the run wrote for TensorBoard's HParams plugin."""
    (events,) = run_dir.glob("events.out.tfevents.*")  # one writer per job
    for event in EventFileLoader(str(events)).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    hparams = data.session_start_info.hparams
                    return {k: getattr(v, v.WhichOneof("kind")) for k, v in hparams.items()}
    raise AssertionError(f"no hparams session in {events}")


def report_rows(sweep_dir: Path, capsys: pytest.CaptureFixture, *options: str) -> tuple[str, list[dict[str, str]]]:
    """Run `gan-lab report` in-process; its printed table and the rows of its CSV."""
    capsys.readouterr()
    run_cli("report", str(sweep_dir), *options)
    printed = capsys.readouterr().out
    with (sweep_dir / "report.csv").open() as file:
        return printed, list(csv.DictReader(file))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_lambda_sweep_through_the_cli(launcher: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    threads = ["threads=auto"] if launcher == "joblib" else []  # auto: cores // n_jobs
    out, sweep_dir = sweep(tmp_path, f"hydra/launcher={launcher}", "loss.lambda_gp=0.1,10", *threads)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = run_dirs(sweep_dir)
    assert len(runs) == 2 and "loss.lambda_gp=0.1," in runs[0].name and "loss.lambda_gp=10," in runs[1].name
    for run, lam in zip(runs, ("0.1", "10")):
        status = read_status(run)
        assert status["status"] == "completed" and f"loss.lambda_gp={lam}" in status["overrides"]
        assert status["metrics"]["step"] == 4
        assert status["objective"] == {"critic/wasserstein_estimate": status["metrics"]["critic/wasserstein_estimate"]}
        assert hparams_of(run)["loss.lambda_gp"] == pytest.approx(float(lam))
        if launcher == "joblib":  # n_jobs=-1 runs one job per core: one thread each
            assert status["threads"] == 1

    printed, rows = report_rows(sweep_dir, capsys)
    assert [(r["run"], r["status"], r["loss.lambda_gp"]) for r in rows] == [("0", "completed", "0.1"),
                                                                            ("1", "completed", "10")]
    assert "loss.lambda_gp" in printed and "2 completed" in printed
    assert (sweep_dir / "report.md").is_file() and (sweep_dir / "report.png").stat().st_size > 0


@pytest.mark.slow
def test_submitit_local_sweep_lands_where_the_report_reads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out, sweep_dir = sweep(tmp_path, "hydra/launcher=submitit_local", "loss.lambda_gp=0.1,10")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (sweep_dir / ".submitit").is_dir()  # submitit's own logs and pickles sit beside the runs
    runs = run_dirs(sweep_dir)
    assert len(runs) == 2 and all(read_status(run)["status"] == "completed" for run in runs)
    assert [hparams_of(run)["loss.lambda_gp"] for run in runs] == pytest.approx([0.1, 10.0])
    _, rows = report_rows(sweep_dir, capsys)
    assert [(r["status"], r["loss.lambda_gp"]) for r in rows] == [("completed", "0.1"), ("completed", "10")]


def tensorboard_experiment(logdir: Path) -> dict:
    """What a real TensorBoard server on logdir answers the HParams tab's first request (loopback only)."""
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                               "--host", "127.0.0.1", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, printed = None, []
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:  # it prints its address once it serves
            line = server.stdout.readline()
            if not line:
                break
            printed.append(line)
            url = (re.search(r"http://127\.0\.0\.1:\d+/", line) or [None])[0]
        assert url, "TensorBoard did not start: " + "".join(printed)
        # the request the HParams dashboard sends (tf-hparams-dashboard: experimentName, hparamsLimit)
        request = urllib.request.Request(url + "experiment/defaultExperimentId/data/plugin/hparams/experiment",
                                         data=json.dumps({"experimentName": "", "hparamsLimit": 1000}).encode(),
                                         headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
        while time.monotonic() < deadline:  # it reads the event files in the background
            with urllib.request.urlopen(request, timeout=10) as response:
                experiment = json.load(response)
            if experiment.get("hparamInfos") and experiment.get("metricInfos"):
                return experiment
            time.sleep(0.2)
        raise AssertionError(f"TensorBoard reported no hparams within 60 s: {experiment}")
    finally:
        server.kill()
        server.wait()


@pytest.mark.slow
def test_hparams_tab_shows_the_swept_key_first_then_the_group_choices(tmp_path: Path) -> None:
    out, sweep_dir = sweep(tmp_path, "loss.lambda_gp=0.1,10")
    assert out.returncode == 0, out.stderr[-3000:]
    experiment = tensorboard_experiment(sweep_dir)
    names = [info["name"] for info in experiment["hparamInfos"]]
    # the dashboard ticks the first 5 columns: the swept key, then which loss, model, data and optimizer
    assert names[0] == "loss.lambda_gp", names
    assert {name.lower() for name in names[1:5]} == {"loss", "model", "data", "optimizer"}, names
    assert len(names) == len(set(names)) > 30  # every other setting still listed, once
    assert "critic/wasserstein_estimate" in {m["name"]["tag"] for m in experiment["metricInfos"]}


# Stand-ins for SLURM's commands: sbatch runs each array task of the submission file right
# here with the variables SLURM would set; srun drops its options. Everything between them
# (the sbatch file, submitit's pickles, its job environment, Hydra's launcher) is the real code.
FAKE_SBATCH = r"""#!/bin/bash
# run the copy: submitit removes its submission file once sbatch returns, maybe before a task's bash opens it
cp "$1" "$(dirname "$0")/submitted.sh"
export SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0 SLURM_NTASKS=1 SLURM_JOB_NUM_NODES=1 SLURM_JOB_NODELIST=localhost
if last=$(grep -oP '^#SBATCH --array=0-\K[0-9]+' "$1"); then
  for i in $(seq 0 "$last"); do
    SLURM_JOB_ID=42$i SLURM_ARRAY_JOB_ID=42 SLURM_ARRAY_TASK_ID=$i bash "$(dirname "$0")/submitted.sh" > "$(dirname "$0")/task_$i.log" 2>&1 &
  done
else  # a one-job sweep is submitted as a plain job, not an array
  SLURM_JOB_ID=42 bash "$(dirname "$0")/submitted.sh" > "$(dirname "$0")/task_0.log" 2>&1 &
fi
echo "Submitted batch job 42"
"""
FAKE_SRUN = r"""#!/bin/bash
while [[ "$1" == -* ]]; do case "$1" in --output|--error) shift 2;; *) shift;; esac; done
exec "$@"
"""


@pytest.mark.slow
def test_slurm_preset_submits_an_array_job_with_its_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"sbatch": FAKE_SBATCH, "srun": FAKE_SRUN, "sacct": "#!/bin/bash\n", "squeue": "#!/bin/bash\n",
                       "scancel": "#!/bin/bash\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # cpus_per_task=1 rather than the preset's 4: this machine may have only 2 cores
    out, sweep_dir = sweep(tmp_path, "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                           "hydra.launcher.cpus_per_task=1", "threads=auto", "loss.lambda_gp=0.1,10")
    logs = "".join(p.read_text()[-2000:] for p in sorted(bin_dir.glob("task_*.log")))
    assert out.returncode == 0, out.stderr[-3000:] + logs
    submitted = (bin_dir / "submitted.sh").read_text()
    for line in ("--partition=gpu", "--gpus-per-task=1", "--cpus-per-task=1", "--mem=16GB", "--time=240",
                 "--array=0-1%2"):
        assert f"#SBATCH {line}\n" in submitted
    runs = run_dirs(sweep_dir)
    assert [read_status(run)["threads"] for run in runs] == [1, 1]  # threads=auto: the job's cpus_per_task
    _, rows = report_rows(sweep_dir, capsys)
    assert [(r["status"], r["loss.lambda_gp"]) for r in rows] == [("completed", "0.1"), ("completed", "10")]


@pytest.mark.slow
def test_a_failed_job_does_not_stop_the_sweep_and_the_report_marks_it(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    out, sweep_dir = sweep(tmp_path, "loss.lambda_gp=-1,0.1")
    assert out.returncode == 2  # the sweep ran on, then said that a job failed
    assert "1 of 2 jobs of the sweep failed" in out.stderr and "job 0: loss.lambda_gp=-1" in out.stderr
    assert "Traceback" not in out.stderr
    failed, done = run_dirs(sweep_dir)
    assert read_status(failed)["status"] == "failed" and "lambda_gp" in read_status(failed)["error"]
    assert read_status(done)["status"] == "completed"

    printed, rows = report_rows(sweep_dir, capsys)
    assert [(r["status"], r["loss.lambda_gp"]) for r in rows] == [("failed", "-1"), ("completed", "0.1")]
    assert "1 completed, 1 failed" in printed and "failed" in printed
    assert "out of range" in rows[0]["error"] and rows[0]["critic/wasserstein_estimate"] == ""


@pytest.mark.slow
def test_optuna_search_gets_each_runs_objective_and_survives_a_failed_trial(tmp_path: Path) -> None:
    # the random sampler with seed 0 draws lambda_gp 0.1, then -1 (refused: a failed trial)
    out, sweep_dir = sweep(tmp_path, "hydra/sweeper=optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
                           "hydra.sweeper.n_trials=2", "loss.lambda_gp=choice(-1, 0.1)",
                           "optimizer.lr=tag(log, interval(1e-5, 1e-3))")
    assert out.returncode == 2 and "1 of 2 jobs of the sweep failed" in out.stderr, out.stderr[-3000:]
    done, failed = (read_status(run) for run in run_dirs(sweep_dir))
    assert (done["status"], failed["status"]) == ("completed", "failed") and "loss.lambda_gp=-1" in failed["overrides"]
    result = OmegaConf.load(sweep_dir / "optimization_results.yaml")  # Optuna went on past the failed trial
    assert result.best_value == pytest.approx(done["objective"]["critic/wasserstein_estimate"])
    assert result.best_params["loss.lambda_gp"] == 0.1 and 1e-5 <= result.best_params["optimizer.lr"] <= 1e-3


def write_run(root: Path, name: str, overrides: list[str], status: dict | None) -> None:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if status is not None:
        (run / "status.json").write_text(json.dumps({"overrides": overrides, **status}))


def test_report_shows_every_state_sorts_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    job = 0
    for loss in ("wgan_gp", "lsgan"):
        for lam in ("0.1", "10"):
            for seed in ("0", "1"):
                modes = float(8 if lam == "0.1" else 2) + int(seed) + (loss == "lsgan")
                write_run(tmp_path, f"{job}_x", [f"loss={loss}", f"loss.lambda_gp={lam}", f"seed={seed}"],
                          {"status": "completed", "objective": {"metrics/modes_covered": modes},
                           "metrics": {"metrics/modes_covered": modes, "critic/wasserstein_estimate": 0.5, "step": 3000}})
                job += 1
    write_run(tmp_path, f"{job}_x", ["loss=wgan_gp", "loss.lambda_gp=100", "seed=0"],
              {"status": "failed", "error": "Training diverged: loss/critic became non-finite. The run stopped."})
    write_run(tmp_path, f"{job + 1}_x", ["loss=wgan_gp", "loss.lambda_gp=1", "seed=0"], {"status": "running"})
    write_run(tmp_path, f"{job + 2}_x", ["loss=wgan_gp", "loss.lambda_gp=1", "seed=1"], None)  # never wrote a status

    printed, rows = report_rows(tmp_path, capsys, "sort=-metrics/modes_covered", "x=loss.lambda_gp")
    assert [r["status"] for r in rows] == ["completed"] * 8 + ["failed", "running", "unknown"]
    modes = [float(r["metrics/modes_covered"]) for r in rows[:8]]
    assert modes == sorted(modes, reverse=True) and modes[0] == 10
    assert set(rows[0]) >= {"loss", "loss.lambda_gp", "seed", "error", "path"}
    assert "Training diverged" in rows[8]["error"]
    assert "8 completed, 1 failed, 1 running, 1 unknown" in printed
    assert (tmp_path / "report.png").stat().st_size > 10_000
    markdown = (tmp_path / "report.md").read_text()
    assert "| failed |" in markdown and "| running |" in markdown and "Training diverged" in markdown

    with pytest.raises(SystemExit) as stop:  # a metric no run has: the names it does have
        run_cli("report", str(tmp_path), "plot=metrics/fid")
    assert stop.value.code == 2 and "metrics/modes_covered" in capsys.readouterr().err


def test_threads_auto_shares_the_cores_between_parallel_jobs() -> None:
    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                               "n_jobs": -1})
    assert job_threads("auto", joblib, cpus=2) == 1
    assert job_threads("auto", OmegaConf.merge(joblib, {"n_jobs": 2}), cpus=8) == 4
    assert job_threads("auto", OmegaConf.merge(joblib, {"n_jobs": -2}), cpus=8) == 1  # 7 jobs at once
    assert job_threads("auto", OmegaConf.merge(joblib, {"n_jobs": 16}), cpus=2) == 1
    slurm = OmegaConf.create({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                              "cpus_per_task": 4})
    assert job_threads("auto", slurm, cpus=64) == 4
    assert job_threads("auto", None, cpus=2) is None  # one job at a time: torch's default
    assert job_threads(3, joblib, cpus=2) == 3
    with pytest.raises(GanLabError, match="threads=0"):
        job_threads(0, None)


@pytest.mark.slow
def test_missing_objective_names_the_available_scalars(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(GanLabError, match="loss/critic"):
        objective_value({"loss/critic": 1.0, "step": 4.0}, "metrics/fid")
    threads = torch.get_num_threads()
    with pytest.raises(SystemExit) as stop:
        run_cli("train", *SWEEP_TINY, "threads=1", "objective=metrics/nope", f"hydra.run.dir={tmp_path}")
    torch.set_num_threads(threads)  # threads=1 set it for this whole process
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "objective='metrics/nope'" in err and "critic/wasserstein_estimate" in err
    assert read_status(tmp_path)["status"] == "failed"


def test_slurm_preset_and_optuna_sweeper_compose() -> None:
    with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
        launcher = cfg.hydra.launcher
        assert launcher._target_.endswith("SlurmLauncher")
        assert (launcher.partition, launcher.gpus_per_task, launcher.cpus_per_task, launcher.timeout_min) == ("gpu", 1, 4, 240)
        assert launcher.max_num_timeout == 3  # a job that hits its time limit is requeued (SIGUSR2, checkpoint)
        assert job_threads("auto", launcher, cpus=os.cpu_count()) == 4
        cfg = compose("train", overrides=["hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
                                          "objective=metrics/modes_covered"], return_hydra_config=True)
        assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.objective == "metrics/modes_covered"


# scontrol's stand-in: `scontrol requeue <array job>_<task>` runs that array task again, as SLURM
# would, once the requeued process has exited (submitit calls it from the job's own process).
FAKE_SCONTROL = r"""#!/bin/bash
[ "$1" = requeue ] || exit 0
here=$(dirname "$0"); job=$PPID
echo "$2" >> "$here/requeued"
# the job's own SLURM_* variables are inherited: the same task runs again
(while kill -0 "$job" 2>/dev/null; do sleep 0.1; done
 bash "$here/submitted.sh" >> "$here/task_${SLURM_ARRAY_TASK_ID:-0}.log" 2>&1) > /dev/null 2>&1 &
"""


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["submitit_local", "slurm"])
def test_sigusr2_requeues_the_job_and_it_finishes_like_a_straight_run(launcher: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM's warning before a time limit or preemption: checkpoint, requeue, continue in place."""
    from gan_lab.runs.checkpoint import load_checkpoint
    from gan_lab.runs.rundirs import LOCK
    from test_safety import weights_equal

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"sbatch": FAKE_SBATCH, "srun": FAKE_SRUN, "scontrol": FAKE_SCONTROL, "sacct": "#!/bin/bash\n",
                       "squeue": "#!/bin/bash\n", "scancel": "#!/bin/bash\n"}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # timeout_min=1: submitit counts the signal as a time limit, not a preemption (it allows a job 80% of its
    # time, at most all but 10 minutes), so the requeue needs the preset's max_num_timeout
    extra = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.gpus_per_task=0",
             "hydra.launcher.timeout_min=1"] if launcher == "slurm" else []
    common = [*TINY_MLP, "train.batch_size=16", "device=cpu", "metrics=false", "threads=1", "train.steps=600",
              "train.log_every=5", "train.sample_every=100000", "train.checkpoint_every=100000"]
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "gan_lab", "train", "-m", f"hydra/launcher={launcher}", *extra,
                             *common, "seed=0", f"hydra.sweep.dir={sweep_dir}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    log = None
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list(sweep_dir.glob("0_*/train.log"))
        if logs and "step 10/" in logs[0].read_text():
            log = logs[0]
            break
        time.sleep(0.05)
    assert log is not None, proc.communicate()[1][-3000:]
    run_dir = log.parent
    pid = int((run_dir / LOCK).read_text().split()[1])  # the job's own process holds its run directory
    os.kill(pid, signal.SIGUSR2)
    _, err = proc.communicate(timeout=300)
    tasks = "".join(p.read_text()[-3000:] for p in bin_dir.glob("task_*.log"))
    assert proc.returncode == 0, err[-3000:] + tasks
    text = log.read_text()
    stopped = int(text.split("stopped by SIGUSR2 at step ")[1].split(";")[0])
    assert 10 <= stopped < 600 and f"resuming from step {stopped}" in text  # requeued, continued in place
    assert read_status(run_dir)["status"] == "completed"
    if launcher == "slurm":
        assert (bin_dir / "requeued").read_text().split() == ["42"]  # through scontrol requeue, once
        first_life = (bin_dir / "task_0.log").read_text()
        assert "this job is timed-out" in first_life  # submitit's time-limit path, requeued by max_num_timeout
    resumed = load_checkpoint(run_dir)
    run_cli("train", *common, f"hydra.run.dir={tmp_path / 'straight'}")
    straight = load_checkpoint(tmp_path / "straight")
    assert resumed["step"] == straight["step"] == 600
    weights_equal(straight, resumed)


def test_report_at_80_columns_never_splits_a_number(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # a ring8 lambda sweep's real final scalars: nine columns of numbers next to three swept keys
    for job, (lam, seed) in enumerate([("0.1", "0"), ("10", "1"), ("100", "2")]):
        metrics = {"metrics/modes_covered": 8.0 - job, "metrics/high_quality": 0.504321 / (job + 1),
                   "metrics/reverse_kl": 0.0123456 * (job + 1), "metrics/n_modes": 8.0,
                   "critic/wasserstein_estimate": -1.234567e-05 * (job + 1), "step": 3000.0,
                   "time/seconds": 61.23456 * (job + 1)}
        write_run(tmp_path, f"{job}_x", ["loss=wgan_gp", f"loss.lambda_gp={lam}", f"seed={seed}"],
                  {"status": "completed" if job < 2 else "failed", "objective": {"metrics/modes_covered": 8.0},
                   "metrics": metrics, "error": "" if job < 2 else "Training diverged: loss/critic became NaN."})
    monkeypatch.setenv("COLUMNS", "80")
    printed, rows = report_rows(tmp_path, capsys)
    lines = [line for line in printed.splitlines() if line[:1] in "┏┃┡│└"]  # the tables (paths wrap softly)
    assert len(lines) > 10 and max(len(line) for line in lines) <= 80
    words = {w for line in lines for w in line.replace("│", " ").replace("┃", " ").split()}
    for row in rows:  # every number the table shows stands whole on one line
        for key in ("metrics/modes_covered", "metrics/high_quality", "metrics/reverse_kl",
                    "critic/wasserstein_estimate", "time/seconds"):
            assert f"{float(row[key]):.4g}" in words, (key, row[key], printed)
    assert "Training diverged" in printed


def test_the_default_objective_is_the_wasserstein_estimate_only_where_the_run_logs_one() -> None:
    # only a Wasserstein-like critic logs critic/wasserstein_estimate (gan_lab.losses.Loss.wasserstein_critic)
    from gan_lab.sweeps import objective_name, objective_value

    wasserstein = {"critic/wasserstein_estimate": 0.25, "loss/critic": -0.3}
    assert objective_name(wasserstein, "auto") == "critic/wasserstein_estimate"
    assert objective_value(wasserstein, "auto") == 0.25
    assert objective_value({"loss/critic": 1.2}, "auto") == 1.2  # a BCE run: its critic's loss
    assert objective_name({"loss/critic": 1.2}, "metrics/modes_covered") == "metrics/modes_covered"  # as named
