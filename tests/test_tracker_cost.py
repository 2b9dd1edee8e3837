"""The start-of-run cost line and the ETA a slow run shows from its first minute (gan_lab.runs.tracker)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gan_lab.runs import tracker as tracker_module
from gan_lab.runs.tracker import Tracker


def test_a_slow_run_says_its_cost_after_its_first_steps_and_an_eta_every_minute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # 3 steps in 4 minutes, as a CPU at 32 px with model=resnet: the old bar showed no ETA, and no line
    # came before the first log step
    now = [1000.0]
    monkeypatch.setattr(tracker_module.time, "perf_counter", lambda: now[0])
    with Tracker(tmp_path, total_steps=100) as tracker:
        tracker.pace.clock = lambda: now[0]
        tracker.advance(1)  # the first step: warm-up, not counted
        for step in (2, 3, 4):
            now[0] += 80.0
            tracker.advance(step)
        out = " ".join(capsys.readouterr().err.split())
        assert "cost 80 s a step (steps 2-4): 100 steps take about 2:13:20, 2:08:00 from now" in out, out
        assert out.count("cost ") == 1
        tracker.advance(4)
        assert not re.search(r"step \d+/100", capsys.readouterr().err)  # under a minute since the last line
        now[0] += 61.0
        tracker.advance(5)
        line = " ".join(capsys.readouterr().err.split())
        # the rate over Pace's window: 1 step in 61 s, 95 to go
        assert line == "step 5/100 0.0 it/s ETA 1:36:35", line
