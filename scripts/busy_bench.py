"""The default run on an idle machine and with other processes holding cores, side by side.

Issue #23: with one of two cores held by another process, `gan-lab train` must take at most 2x its
idle time. Each row trains the README's default run (`gan-lab train`, or a shorter one with --steps)
in a fresh run directory, with 0, 1 or 2 processes spinning on the CPU beside it, under
`threads=auto` (the default: follows the free cores, gan_lab.runs.busy) and under a pinned
`threads=<cores>` (torch's default count, what gan-lab did before). The rounds alternate the order of
the rows, and each row reports its training time (status.json's time/seconds, start-up excluded) and
its ratio to the idle run of the same setting in the same round.

    python scripts/busy_bench.py                      # 3,000 steps, 1 round: about 10 min on 2 cores
    python scripts/busy_bench.py --steps 500 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from generated_doc import cpu_name  # scripts/generated_doc.py

SPIN = "while True: pass"  # one process that keeps one core busy


def train_seconds(root: Path, name: str, steps: int | None, threads: str, spinners: int) -> float:
    """Train one default run beside `spinners` busy processes; its training time in seconds."""
    run_dir = root / name
    busy = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(spinners)]
    try:
        command = [sys.executable, "-m", "gan_lab", "train", f"threads={threads}", "metrics=false",
                   f"hydra.run.dir={run_dir}", *([f"train.steps={steps}"] if steps else [])]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    return float(json.loads((run_dir / "status.json").read_text())["metrics"]["time/seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="generator steps (default: the default run's 3,000)")
    parser.add_argument("--rounds", type=int, default=1, help="repetitions, alternating the rows' order")
    parser.add_argument("--spinners", type=int, nargs="+", default=[0, 1, 2], help="busy processes per row")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    rows = [(threads, spinners) for threads in ("auto", "1", str(cores)) for spinners in args.spinners]
    times: dict[tuple[str, int], list[float]] = {row: [] for row in rows}
    ratios: dict[tuple[str, int], list[float]] = {row: [] for row in rows}
    with tempfile.TemporaryDirectory() as root:
        for round_ in range(args.rounds):
            order = rows if round_ % 2 == 0 else rows[::-1]
            seconds = {row: train_seconds(Path(root), f"r{round_}_{row[0]}_{row[1]}", args.steps, *row) for row in order}
            for threads, spinners in rows:
                times[threads, spinners].append(seconds[threads, spinners])
                ratios[threads, spinners].append(seconds[threads, spinners] / seconds[threads, 0])
            print(f"round {round_ + 1}: " + ", ".join(f"threads={t} busy={s}: {seconds[t, s]:.1f} s" for t, s in rows),
                  flush=True)
    print(f"\n{cpu_name()}, {cores} cores; `gan-lab train metrics=false` "
          f"({args.steps or 'default'} steps), {args.rounds} round(s); training seconds (median) and the ratio to "
          f"the idle run of the same threads setting (range over rounds)\n")
    print("| threads | other busy processes | training s | vs idle |\n|---|---|---|---|")
    for threads, spinners in rows:
        r = ratios[threads, spinners]
        print(f"| {threads} | {spinners} | {statistics.median(times[threads, spinners]):.1f} | "
              f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f}) |")


if __name__ == "__main__":
    main()
