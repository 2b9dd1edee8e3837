"""The first hour: --help of every subcommand, Ctrl-C anywhere, progress in pipes, a busy CPU, TensorBoard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, TINY_DCGAN, TINY_MLP, make_tiny_mnist, run_cli, user_error
from gan_lab.runs.busy import CpuSample, CpuWatch
from gan_lab.runs.status import read_status
from gan_lab.runs.tracker import Pace
from test_train import read_events

REPO = Path(__file__).resolve().parents[1]
KEYS = {"sample": ["checkpoint=", "n=", "seed=", "interpolate=", "label=", "device=", "out=", "rejection="],
        "eval": ["checkpoint=", "seed=", "device=", "out=", "inception_weights=", "fid_samples=", "rejection="],
        "report": ["sweep_dir", "sort=", "columns=", "plot=", "x=", "out="],
        "classifier": ["action", "data=", "data.root=", "data.download=", "seed=", "epochs=", "force=", "cache_dir="]}


@pytest.mark.parametrize("command", list(KEYS))
def test_every_subcommand_prints_its_usage(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        run_cli(command, "--help")
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: gan-lab {command}") and "(default: " in out
    assert all(key in out for key in KEYS[command]), out


def test_help_states_no_run_times_and_points_at_the_readme(capsys: pytest.CaptureFixture) -> None:
    # the README's "What a run costs" holds the measured times, with command and machine; times in a
    # --help drifted from them ("under a minute" and "~2 h" beside the README's measured figures)
    import re

    from gan_lab.app.cli import USAGE

    texts = {"gan-lab": USAGE}
    for command in ["train", *KEYS]:
        with pytest.raises(SystemExit):
            run_cli(command, "--help")
        texts[command] = capsys.readouterr().out
    duration = re.compile(r"\d\s*(s|sec|seconds?|min|minutes?|h|hours?)\b|\b(a|one|two) (minute|hour)s?\b", re.I)
    assert not {name: duration.search(text)[0] for name, text in texts.items() if duration.search(text)}
    assert "What a run costs" in texts["train"] and "README" in texts["train"], texts["train"]


# every subcommand, one front: (a key its --help must list with its default, a misspelt key, the key meant)
FRONT = {"train": ("train.steps=", "sedd=1", "seed"), "sample": ("n=", "sedd=1", "seed"),
         "eval": ("seed=", "sedd=1", "seed"), "report": ("sort=", "sortt=x", "sort"),
         "classifier": ("epochs=", "sedd=1", "seed")}


@pytest.mark.parametrize("command", list(FRONT))
def test_every_subcommand_has_one_help_shape_and_one_typo_paragraph(command: str,
                                                                     capsys: pytest.CaptureFixture) -> None:
    import re

    key, typo, meant = FRONT[command]
    helps = []
    for args in ([command, "-h"], [command, "--help"], ["help", command]):
        with pytest.raises(SystemExit) as stop:
            run_cli(*args)
        assert stop.value.code == 0, args
        helps.append(capsys.readouterr().out)
    assert helps[0] == helps[1] == helps[2]  # -h, --help and help <command> alike
    text = helps[0]
    # usage line, a description, the keys with meanings and defaults, examples: in that order
    shape = re.compile(rf"usage: gan-lab {command} [^\n]*\n\n\S[^\n]*\n.*\nkeys:\n.*\nexamples:\n  gan-lab {command}\b",
                       re.S)
    assert shape.match(text), text
    keys = text.split("\nkeys:\n", 1)[1].split("\n\n", 1)[0]
    line = next(line for line in keys.splitlines() if line.strip().startswith(key))
    assert len(line.split(key, 1)[1].strip()) > 3, line  # a meaning beside the key
    assert re.search(rf"\b{re.escape(key)}.*?\(default: [^)]+\)", keys, re.S), keys
    # a misspelt key: the same paragraph from every subcommand, exit 2, no traceback
    message = user_error(capsys, command, typo)
    assert message == (f"gan-lab: error: gan-lab {command}: unknown argument '{typo}': no key {typo.split('=')[0]}; "
                       f"did you mean {meant}? " + message.split("? ", 1)[1]), message
    assert message.endswith(f"Run gan-lab {command} --help for its keys and what each one means."), message


def test_options_take_both_spellings_typed_and_refuse_unknown_keys(tmp_path: Path, capsys) -> None:
    from gan_lab.errors import GanLabError
    from gan_lab.app.commands import sample_parser
    from gan_lab.app.options import parse

    opts = parse(sample_parser(), ["checkpoint=run", "--n", "5", "--interpolate=true", "label=null", "seed=-1"])
    assert opts == {"checkpoint": "run", "n": 5, "seed": -1, "interpolate": True, "label": None, "device": "cpu",
                    "out": None, "rejection": "none"}
    with pytest.raises(GanLabError, match=r"n='five' is not valid: it must be a whole number"):
        parse(sample_parser(), ["n=five"])
    with pytest.raises(SystemExit) as stop:
        run_cli("report", str(tmp_path), "colour=red")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "unknown argument 'colour=red'" in err and "sort=, columns=" in err
    assert "Traceback" not in err and "usage:" not in err  # one paragraph, not argparse's usage dump


def test_no_developer_paths_in_user_facing_text(capsys: pytest.CaptureFixture) -> None:
    shipped = [*REPO.joinpath("gan_lab").glob("*.py"), *REPO.joinpath("conf").rglob("*.yaml")]
    assert not [p.name for p in shipped if "shared/data" in p.read_text()]
    from gan_lab.app.cli import USAGE

    assert "data.root=/path/to/data" in USAGE


# --- Ctrl-C: one line, exit 130, nothing half-written -----------------------------------------

def one_line_interrupt(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(("training the", "classifier step"))]
    assert len(lines) == 1 and lines[0].startswith("gan-lab: interrupted"), stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


@pytest.mark.slow
def test_ctrl_c_during_classifier_training_is_one_line_and_exit_130(tmp_path: Path) -> None:
    root, cache = make_tiny_mnist(tmp_path / "data", n=8), tmp_path / "cache"  # 8 images: quick steps
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gan_lab", "classifier", "train", f"data.root={root}",
                             "data.download=false", f"cache_dir={cache}", "epochs=4000", "device=cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            # a shell's background job (`.ci/run &`) starts with SIGINT ignored, and Python keeps
                            # an ignored SIGINT ignored: give the child the default a terminal's Ctrl-C meets
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stderr:  # piped: progress lines, so we know training is under way
        seen.append(line)
        if line.startswith("classifier step"):
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "it/s" in seen[-1] and "ETA" in seen[-1]
    one_line_interrupt(rest)
    assert not cache.exists() or not list(cache.iterdir())  # no half-written classifier


def test_ctrl_c_while_importing_is_one_line(tmp_path: Path) -> None:
    # a Ctrl-C lands while `gan-lab` imports torch and Hydra: simulated by the import of hydra raising it
    code = ("import builtins, sys\n"
            "real = builtins.__import__\n"
            "def interrupted(name, *args, **kwargs):\n"
            "    if name == 'hydra':\n"
            "        raise KeyboardInterrupt\n"
            "    return real(name, *args, **kwargs)\n"
            "builtins.__import__ = interrupted\n"
            "sys.argv = ['gan-lab', 'train']\n"
            "from gan_lab.__main__ import main\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 130
    one_line_interrupt(out.stderr)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("toy")
    run_cli("train", *TINY, *TINY_MLP, "metrics=false", "seed=0", f"hydra.run.dir={run_dir}")
    return run_dir


def test_ctrl_c_in_eval_sample_and_report(toy_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    import gan_lab.app.commands

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    def half_then_ctrl_c(obj, file, *args, **kwargs):  # a Ctrl-C in the middle of writing a file
        Path(file).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(gan_lab.app.commands, "rebuild_data", ctrl_c)
    monkeypatch.setattr(torch, "save", half_then_ctrl_c)
    monkeypatch.setattr(gan_lab.app.commands, "plot_runs", ctrl_c)
    capsys.readouterr()
    for args in (["eval", f"checkpoint={toy_run}"], ["sample", f"checkpoint={toy_run}", f"out={tmp_path / 's'}"],
                 ["report", str(toy_run), f"out={tmp_path / 'r'}", "x=seed", "plot=loss/critic"]):
        with pytest.raises(SystemExit) as stop:
            run_cli(*args)
        assert stop.value.code == 130, args
        one_line_interrupt(capsys.readouterr().err)
    assert not (toy_run / "eval.json").exists()
    assert not list((tmp_path / "s").iterdir())  # the half-written .pt was never put in place
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.csv", "report.md"]  # whole, no temp files


# --- progress where there is no terminal ------------------------------------------------------

def test_piped_step_lines_carry_speed_and_eta(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_cli("train", *TINY, *TINY_MLP, "metrics=false", f"hydra.run.dir={tmp_path}")
    steps = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert len(steps) == 2 and all(" it/s  ETA " in line and "critic" in line for line in steps), steps
    assert steps[-1].split("ETA ")[1].startswith("0:00:00")  # nothing left at the last step


def test_piped_output_keeps_a_long_path_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # a pipe or a log is no terminal: rich wrapped every line at 80 columns there, cutting paths in two
    run_dir = tmp_path / ("a_long_folder_name_" * 12) / ("and_another_" * 12) / "run"  # far past any width
    run_cli("train", *TINY, *TINY_MLP, "metrics=false", f"inception_weights={run_dir.parent}", f"hydra.run.dir={run_dir}")
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "run directory" in line and str(run_dir) in line], err
    assert [line for line in err.splitlines() if f"inception_weights: {run_dir.parent}" in line], err  # the config tree


@pytest.mark.slow
def test_first_use_classifier_training_reports_progress_when_piped(tmp_path: Path, capsys) -> None:
    from gan_lab.evaluation.classifier import load_or_train_classifier

    root = make_tiny_mnist(tmp_path / "data", n=16)
    load_or_train_classifier("mnist", str(root), tmp_path / "cache", epochs=40)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("classifier step")]
    assert len(lines) == 20 and lines[-1].startswith("classifier step 40/40") and "it/s" in lines[0], lines


# --- a busy machine ---------------------------------------------------------------------------

def fake_cpu(others: float, threads: int):
    """CPU counters advancing 10 s per read: this process busy on `threads` cores, others on `others`."""
    clock = {"t": 0.0}

    def read() -> CpuSample:
        clock["t"] += 10
        return CpuSample(clock["t"], threads * clock["t"], (threads + others) * clock["t"])
    return read


def test_cpu_watch_speaks_once_when_others_oversubscribe_the_cores() -> None:
    watch = CpuWatch(2, cores=2, read=fake_cpu(1.0, 2))
    hint = watch.check()
    assert hint and "threads=1 (or the default threads=auto" in hint and "1.0 of its 2 cores" in hint
    assert watch.check() is None  # once
    assert CpuWatch(2, cores=2, read=fake_cpu(0.1, 2)).check() is None  # an idle machine
    assert CpuWatch(2, cores=8, read=fake_cpu(3.0, 2)).check() is None  # room for everyone
    assert CpuWatch(1, cores=2, read=fake_cpu(4.0, 1)).check() is None  # one thread waits on no other
    # at the start, from the load average: this process's own recent threads are not counted as others
    assert CpuWatch(2, cores=2, read=fake_cpu(0, 2)).start(load=2.0) is None
    assert "threads=1 (or the default" in CpuWatch(2, cores=2, read=fake_cpu(0, 2)).start(load=3.5)


def test_a_busy_machine_is_named_once_in_the_run_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    import gan_lab.runs.busy

    monkeypatch.setattr(gan_lab.runs.busy, "read_cpu", fake_cpu(1.0, 2))
    monkeypatch.setattr(gan_lab.runs.busy.os, "getloadavg", lambda: (3.5, 3.5, 3.5))  # also busy at the start
    # the run believes it has torch's two threads (really two would crawl on the busy machines that run tests)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # threads=2 below must not reach torch either
    # a count given by hand is kept: the run only says what would be faster
    run_cli("train", *TINY, *TINY_MLP, "metrics=false", "threads=2", f"hydra.run.dir={tmp_path}")
    assert " ".join(capsys.readouterr().err.split()).count("threads=1 (or the default threads=auto") == 1


def test_cpu_watch_follows_the_free_cores_with_a_margin() -> None:
    counts: list[int] = []
    clock = {"others": 1.0, "t": 0.0, "own": 0.0, "busy": 0.0}

    def read() -> CpuSample:  # 10 s per read; this process busy on its current thread count
        threads = counts[-1] if counts else 2
        clock["t"] += 10
        clock["own"] += 10 * threads
        clock["busy"] += 10 * (threads + clock["others"])
        return CpuSample(clock["t"], clock["own"], clock["busy"])

    watch = CpuWatch(2, cores=2, read=read, adapt=True, set_threads=counts.append)
    note = watch.check()  # one core held by another process: one thread
    assert counts == [1] and note and "training on 1 thread (of 2)" in note and "threads=2 fixes" in note
    clock["others"] = 0.5  # within the margin of both counts: no flapping
    assert watch.check() is None and counts == [1]
    clock["others"] = 0.1  # free again
    assert "free again: training on 2 threads" in watch.check() and counts == [1, 2]
    clock["others"] = 0.5
    assert watch.check() is None and counts == [1, 2]
    clock["others"] = 1.0
    watch.check()
    watch.restore()  # the next job of a sweep, or the next test, gets the count the process had
    assert counts == [1, 2, 1, 2]
    # at the start, from the load average: this process's own recent threads are not counted as others
    assert CpuWatch(2, cores=2, read=read, adapt=True, set_threads=counts.append).start(load=2.0) is None
    assert "training on 1 thread" in CpuWatch(2, cores=2, read=read, adapt=True, set_threads=counts.append).start(load=3.2)


@pytest.mark.slow
def test_threads_auto_trains_on_the_free_cores_and_gives_them_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture) -> None:
    import gan_lab.runs.busy

    monkeypatch.setattr(gan_lab.runs.busy, "read_cpu", fake_cpu(1.0, 2))
    monkeypatch.setattr(gan_lab.runs.busy.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # idle at the start
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    counts: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", counts.append)
    run_cli("train", *TINY, *TINY_MLP, "metrics=false", f"hydra.run.dir={tmp_path}")  # threads=auto, the default
    err = " ".join(capsys.readouterr().err.split())
    assert "training on 1 thread (of 2)" in err
    assert counts == [1, 2]  # one thread while the other process held a core, torch's count again after the run
    assert "training on 1 thread (of 2)" in (tmp_path / "train.log").read_text().replace("\n", " ")
    # the record says what the log said: the count training ran on, not the one given back after it
    status = read_status(tmp_path)
    assert status["threads"] == 1 and status["threads_used"] == [2, 1], status


def test_the_eta_follows_the_recent_rate() -> None:
    now = {"t": 0.0}
    pace = Pace(total=1000, start=0, window=30, clock=lambda: now["t"])
    for step in range(10, 110, 10):  # 100 steps in 10 s: 10 it/s
        now["t"] += 1
        pace(step)
    for step in range(101, 161):  # then the machine gets busy: 1 it/s for 60 s
        now["t"] += 1
        line = pace(step)
    # a whole-run mean (160 steps in 70 s) would still say 2.3 it/s and 6 minutes
    assert line.startswith("1.0 it/s") and "ETA 0:14:00" in line, line
# --- TensorBoard ------------------------------------------------------------------------------

def test_image_samples_are_scaled_up_and_captioned(tmp_path: Path, tiny_mnist_root: Path) -> None:
    run_cli("train", "data=mnist", f"data.root={tiny_mnist_root}", *TINY, *TINY_DCGAN, f"hydra.run.dir={tmp_path}")
    image = read_events(tmp_path).Images("samples")[-1]
    # an 8x8 grid of 28x28 digits is 242 px: now at least 480 px wide, with a 26 px caption strip on top
    assert image.width >= 480 and image.height == image.width + 26
    from PIL import Image

    png = Image.open(tmp_path / "samples" / "step_00000004.png").convert("L")
    strip = torch.from_numpy(np.asarray(png)[:26].copy())
    assert strip.min() < 100 and (strip == 255).float().mean() > 0.8  # dark text on a white strip


def test_scatter_draws_real_points_over_generated_ones() -> None:
    from gan_lab.runs.plots import critic_landscape, scatter_2d

    real, fake = torch.randn(50, 2) * 0.01, torch.randn(50, 2)
    for fig in (scatter_2d(real, fake, 7), critic_landscape(lambda x: x.sum(1), real, fake, 7)):
        for ax in fig.axes:
            points = {c.get_label(): c for c in ax.collections if c.get_label() in ("real", "generated")}
            if points:
                assert points["real"].get_zorder() > points["generated"].get_zorder()
                assert points["real"].get_alpha() > points["generated"].get_alpha()


@pytest.mark.slow
def test_busy_bench_prints_idle_and_busy_side_by_side() -> None:
    # scripts/busy_bench.py end to end, on tiny runs: each threads setting idle, its ratio to itself is 1
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "busy_bench.py"), "--steps", "20", "--spinners", "0"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "threads" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["auto", "1", str(len(os.sched_getaffinity(0)))]
    for row in rows:
        seconds, ratio = row.split("|")[3].strip(), row.split("|")[4].strip()
        assert float(seconds) > 0 and ratio.startswith("1.00x"), row
