"""Never lose a run: signals, hard kills, divergence, incompatible resumes, disk errors."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from conftest import TINY, TINY_MLP, run_cli
from gan_lab.runs.checkpoint import load_checkpoint
from gan_lab.runs.safety import config_differences
from test_train import read_events

SMALL = ["train.batch_size=16", "device=cpu", *TINY_MLP]


def start(run_dir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gan_lab", "train", *SMALL, *overrides, f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no line starting with {prefix!r} before the process ended")


def weights_equal(a: dict, b: dict) -> None:
    for net in ("G", "critic"):
        for key, value in a[net].items():
            assert_close(b[net][key], value, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR2])  # SIGUSR2: SLURM's warning
def test_signal_checkpoints_and_resume_matches_a_straight_run(sig: signal.Signals, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start(run_dir, "train.steps=100000", "train.log_every=5", "train.checkpoint_every=100000",
                 "train.sample_every=100000")
    wait_for_line(proc, "step 10/")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert f"stopped by {sig.name}" in " ".join(err.split()) and f"resume={run_dir}" in " ".join(err.split())
    stopped = load_checkpoint(run_dir)
    k = stopped["step"]
    assert 10 <= k < 100000
    # continue in place (resume=auto picks up run_dir's last.pt) and compare with a straight run
    common = [*SMALL, "train.log_every=5", "train.checkpoint_every=100000", "train.sample_every=100000"]
    run_cli("train", *common, f"train.steps={k + 3}", f"hydra.run.dir={run_dir}")
    run_cli("train", *common, f"train.steps={k + 3}", f"hydra.run.dir={tmp_path / 'straight'}")
    resumed, straight = load_checkpoint(run_dir), load_checkpoint(tmp_path / "straight")
    assert resumed["step"] == straight["step"] == k + 3
    weights_equal(straight, resumed)
    # the resumed run continued the same event log: no step is logged twice
    steps = [e.step for e in read_events(run_dir).Scalars("loss/critic")]
    assert steps == sorted(set(steps)) and steps[-1] == k + 3


@pytest.mark.slow
def test_a_run_whose_reader_is_gone_trains_on_and_stops_on_its_signal(tmp_path: Path) -> None:
    # the parent that read the run's output died (or `gan-lab train | tee` lost its tee): every later line
    # meets a closed pipe. rich's default was to exit 1 mid-step; the run now writes on into /dev/null,
    # keeps its log, and a SIGTERM still checkpoints and stops it
    run_dir = tmp_path / "run"
    proc = start(run_dir, "train.steps=100000", "train.log_every=5", "train.checkpoint_every=100000",
                 "train.sample_every=100000")
    wait_for_line(proc, "step 10/")
    proc.stderr.close()
    proc.stdout.close()
    log = run_dir / "train.log"
    before = log.read_text().count("\nstep ")
    deadline = time.monotonic() + 60
    while log.read_text().count("\nstep ") < before + 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # progress lines written after the pipe closed
    assert proc.poll() is None, "the run ended when its reader went away"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert load_checkpoint(run_dir)["step"] >= 10
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert "SIGTERM" in log.read_text()


def test_stop_message_leads_with_continuing_in_place(tmp_path: Path, capsys, monkeypatch) -> None:
    from gan_lab.app import cli
    from gan_lab.runs.safety import Interrupted

    def stopped(*args, **kwargs):
        raise Interrupted(signal.SIGINT, 3)  # what the loop raises once it has checkpointed

    monkeypatch.setattr(cli, "run_training", stopped)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 130, err
    # the command that continues this run in place comes first; resume= (a new folder) second, and says so
    assert f"hydra.run.dir={tmp_path}" in err and f"resume={tmp_path}" in err
    assert err.index(f"hydra.run.dir={tmp_path}") < err.index(f"resume={tmp_path}")
    assert "new run directory" in err


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_torn_checkpoint(tmp_path: Path) -> None:
    run_dir, total = tmp_path / "run", 10**6  # never reached: each life is killed first
    overrides = [f"train.steps={total}", "train.checkpoint_every=1", "train.keep_checkpoints=2",
                 "train.log_every=50", "train.sample_every=1000000"]
    rng = random.Random(0)
    for _ in range(10):  # ten kills
        proc = start(run_dir, *overrides)
        wait_for_line(proc, "device ")  # training is about to start: kill during steps and saves
        time.sleep(rng.uniform(0.0, 1.5))
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if (run_dir / "checkpoints" / "last.pt").exists():
            state = load_checkpoint(run_dir)  # loads: never torn
            assert 1 <= state["step"] <= total
    reached = load_checkpoint(run_dir)["step"]
    # resume=auto continues the run in place; a new step count is a harmless change
    run_cli("train", *SMALL, *overrides, f"train.steps={reached + 3}", f"hydra.run.dir={run_dir}")
    assert load_checkpoint(run_dir)["step"] == reached + 3


def nan_after(calls: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the critic's output NaN from its `calls`-th forward pass on."""
    from gan_lab.models import Critic

    original, count = Critic.forward, {"n": 0}

    def forward(self, x, y=None):
        count["n"] += 1
        out = original(self, x, y)
        return out * float("nan") if count["n"] >= calls else out

    monkeypatch.setattr(Critic, "forward", forward)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path, capsys, monkeypatch) -> None:
    run_cli("train", *SMALL, "loss=nonsaturating", "train.steps=4", "train.checkpoint_every=4",
            f"hydra.run.dir={tmp_path}")
    good = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    # nonsaturating, resumed at step 4: each step calls the critic twice (real and fake in
    # one forward, then the generator step), so call 5 is step 7's critic step
    nan_after(5, monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", *SMALL, "loss=nonsaturating", "train.steps=12", "train.checkpoint_every=4",
                "train.log_every=4", f"hydra.run.dir={tmp_path}")
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "became non-finite (NaN or inf) at generator step 7" in err
    assert "loss/critic" in err and "grad_norm/critic" in err and "train.nonfinite=skip" in err
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == good  # untouched
    assert load_checkpoint(tmp_path)["step"] == 4


def test_nan_skip_option_continues_and_counts(tmp_path: Path, monkeypatch) -> None:
    # two critic calls per step and one more at each log step (4, 8): call 12 is step 6's critic step
    nan_after(12, monkeypatch)
    run_cli("train", *SMALL, "loss=nonsaturating", "train.steps=8", "train.log_every=4", "train.nonfinite=skip",
            f"hydra.run.dir={tmp_path}")
    state = load_checkpoint(tmp_path)
    assert state["step"] == 8
    assert all(torch.isfinite(t).all() for t in state["G"].values())
    assert all(torch.isfinite(t).all() for t in state["critic"].values())
    skipped = [e.value for e in read_events(tmp_path).Scalars("train/skipped_updates")]
    assert skipped[0] == 0 and skipped[-1] == 6  # every update of steps 6 to 8 (critic and G) skipped


@pytest.mark.slow
def test_resume_with_a_changed_model_is_refused_and_lists_the_key(tmp_path: Path, capsys) -> None:
    run_cli("train", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", *TINY, "model.hidden=48", "model.depth=2", "train.steps=8", f"hydra.run.dir={tmp_path}")
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "model.hidden: 32 -> 48" in err and "resume_force=true" in err
    assert load_checkpoint(tmp_path)["step"] == 4  # nothing was overwritten


@pytest.mark.slow
def test_forcing_a_resume_onto_another_architecture_is_one_paragraph(tmp_path: Path, capsys) -> None:
    run_cli("train", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", *TINY, "model.hidden=48", "model.depth=2", "train.steps=8", "resume_force=true",
                f"hydra.run.dir={tmp_path}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "do not fit the networks" in " ".join(err.split())
    assert load_checkpoint(tmp_path)["step"] == 4  # nothing was overwritten


@pytest.mark.slow
def test_resume_with_changed_intervals_continues(tmp_path: Path) -> None:
    run_cli("train", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    run_cli("train", *TINY, *TINY_MLP, "train.steps=6", "train.log_every=3", f"hydra.run.dir={tmp_path / 'next'}",
            f"resume={tmp_path}")
    assert load_checkpoint(tmp_path / "next")["step"] == 6


@pytest.mark.slow
def test_checkpoint_of_an_older_config_resumes(tmp_path: Path) -> None:
    # a checkpoint written before train.precision, train.cuda_graph, train.compile, train.lr_schedule,
    # optimizer.fused, the EMA, R2, DRAGAN, lazy regularisation, packing and minibatch std existed trained
    # without any of them: none of that blocks its resume
    run_cli("train", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    path = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    for key in ("precision", "cuda_graph", "compile", "lr_schedule", "ema_kimg", "ema_rampup"):
        del state["config"]["train"][key]
    del state["config"]["optimizer"]["fused"]
    for group, keys in {"loss": ("lambda_r2", "lambda_dragan", "reg_every"), "model": ("pack", "minibatch_std")}.items():
        for key in keys:  # the options of this release's losses and cures
            del state["config"][group][key]
    torch.save(state, path)
    run_cli("train", *TINY, *TINY_MLP, "train.steps=6", f"hydra.run.dir={tmp_path}")
    assert load_checkpoint(tmp_path)["step"] == 6
    assert config_differences({"train": {}}, {"train": {"precision": "bf16"}}) == [
        "train.precision: fp32 -> bf16"]  # a real change is still caught


@pytest.mark.slow
def test_forced_resume_trains_with_the_new_learning_rate(tmp_path: Path) -> None:
    run_cli("train", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    assert load_checkpoint(tmp_path)["opt_d"]["param_groups"][0]["lr"] == 1e-4
    run_cli("train", *TINY, *TINY_MLP, "train.steps=6", "optimizer.lr=2e-5", "resume_force=true",
            f"hydra.run.dir={tmp_path}")
    state = load_checkpoint(tmp_path)
    assert state["step"] == 6
    assert state["opt_d"]["param_groups"][0]["lr"] == state["opt_g"]["param_groups"][0]["lr"] == 2e-5
    assert all(s["step"] == 6 * 5 for s in state["opt_d"]["state"].values())  # the moments carried on


@pytest.mark.slow
def test_linear_schedule_resume_refuses_new_steps_and_decays_a_forced_new_lr(tmp_path: Path, capsys) -> None:
    scheduled = [*TINY, *TINY_MLP, "train.lr_schedule=linear"]
    run_cli("train", *scheduled, f"hydra.run.dir={tmp_path}")
    # under a schedule train.steps sets every step's lr: changing it is a change of training
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", *scheduled, "train.steps=8", f"hydra.run.dir={tmp_path}")
    assert exit_info.value.code == 2
    assert "train.steps: 4 -> 8" in " ".join(capsys.readouterr().err.split())
    assert load_checkpoint(tmp_path)["step"] == 4
    # forced, the schedule decays the new lr (not the checkpoint's) from where the run is
    run_cli("train", *scheduled, "train.steps=8", "optimizer.lr=2e-4", "resume_force=true", f"hydra.run.dir={tmp_path}")
    lrs = {e.step: e.value for e in read_events(tmp_path).Scalars("train/lr_critic")}
    assert lrs[6] == pytest.approx(2e-4 * (1 - 5 / 8)) and lrs[8] == pytest.approx(2e-4 / 8)


@pytest.mark.slow
def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path: Path, capsys, monkeypatch) -> None:
    run_cli("train", *TINY, *TINY_MLP, f"hydra.run.dir={tmp_path}")
    good = (tmp_path / "checkpoints" / "last.pt").read_bytes()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", *TINY, *TINY_MLP, "train.steps=6", f"hydra.run.dir={tmp_path}")
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "No space left to write the checkpoint step_00000006.pt" in err and "(step 4), is untouched" in err
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == good
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.slow
def test_unwritable_output_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = subprocess.run([sys.executable, "-m", "gan_lab", "train", f"hydra.run.dir={blocker}/run"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Cannot create the output directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_resumed_event_file_is_read_after_the_first_lifes(tmp_path: Path) -> None:
    # A resume within the same second as its first life: TensorBoard orders event files by
    # name (second, host, pid), so the resume's file must not sort before the first one.
    from gan_lab.runs.tracker import Tracker

    with Tracker(tmp_path, 10) as tracker:
        tracker.scalars(5, {"loss/critic": 1.0})
        tracker.scalars(8, {"loss/critic": 9.0})  # logged after the checkpoint at 5: purged below
    (first,) = tmp_path.glob("events.out.tfevents.*")
    parts = first.name.split(".")
    parts[5] = "99999999"  # as if the first life's pid were larger than this process's
    first.rename(tmp_path / ".".join(parts))
    with Tracker(tmp_path, 10, start_step=5) as tracker:
        tracker.scalars(6, {"loss/critic": 2.0})
    assert [e.step for e in read_events(tmp_path).Scalars("loss/critic")] == [5, 6]


def test_inside_a_submitit_job_sigusr2_is_gan_labs_until_the_checkpoint_and_sigterm_stays_submitits() -> None:
    from submitit.core.job_environment import SignalHandler

    from gan_lab.runs.safety import StopSignal, hand_over

    calls: list[int] = []

    class Handler(SignalHandler):  # submitit's handler, recording instead of requeueing and exiting
        def checkpoint_and_try_requeue(self, signum, frame=None):
            calls.append(signum)

    submitit = Handler.__new__(Handler)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        signal.signal(signal.SIGTERM, submitit.bypass)  # as submitit's JobEnvironment._handle_signals does
        signal.signal(signal.SIGUSR2, submitit.checkpoint_and_try_requeue)
        with StopSignal() as stop:
            assert signal.getsignal(signal.SIGTERM) == submitit.bypass  # ignored on purpose: kept
            signal.raise_signal(signal.SIGUSR2)  # the loop's handler: a flag, read between steps
            assert stop.signum == signal.SIGUSR2 and calls == []
        assert signal.getsignal(signal.SIGUSR2) == submitit.checkpoint_and_try_requeue  # restored
        hand_over(signal.SIGUSR2)  # after the checkpoint: submitit's checkpoint() and requeue
        assert calls == [signal.SIGUSR2]
        hand_over(signal.SIGINT)  # not submitit's: nothing
        assert calls == [signal.SIGUSR2]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_resumed_run_counts_the_time_of_its_earlier_part(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from gan_lab.runs.status import read_status

    run_cli("train", *TINY, *TINY_MLP, "metrics=false", "threads=1", f"hydra.run.dir={tmp_path / 'first'}")
    earlier = load_checkpoint(tmp_path / "first")["seconds"]  # the time up to its step 4 checkpoint
    assert 0 < earlier <= read_status(tmp_path / "first")["metrics"]["time/seconds"]
    capsys.readouterr()
    run_cli("train", *TINY, *TINY_MLP, "metrics=false", "threads=1", "train.steps=8",
            f"hydra.run.dir={tmp_path / 'next'}", f"resume={tmp_path / 'first'}")
    metrics = read_status(tmp_path / "next")["metrics"]
    part = metrics["time/seconds_since_resume"]
    assert 0 < part and metrics["time/seconds"] == pytest.approx(earlier + part, rel=1e-12, abs=0)
    assert load_checkpoint(tmp_path / "next")["seconds"] == pytest.approx(metrics["time/seconds"], rel=0.5)
    summary = " ".join(capsys.readouterr().err.split())
    assert f"time │ {metrics['time/seconds']:.1f} s ({part:.1f} s since the resume)" in summary, summary
