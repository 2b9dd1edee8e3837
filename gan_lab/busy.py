"""Notice when other work competes with a CPU run's threads, and say once that threads=1 is faster.

torch splits each CPU op over its intra-op threads, which then wait for one another; when
another process holds one of the cores, every op waits for the slowest thread and a run
slows down many times over (the default run: 1,063 s instead of ~60 s on 2 cores with one
other busy job; one thread loses only its share of the machine). gan-lab does not switch
to one thread on its own: the thread count changes the order of floating-point sums, so
the results would then depend on what else the machine was doing (measured: the weights
after 20 Adam steps of an MLP differ in the 8th digit between 1 and 2 threads).
"""

from __future__ import annotations

import os
import time
from typing import Callable, NamedTuple


class CpuSample(NamedTuple):
    """Wall seconds, this process's CPU seconds, and busy CPU seconds of the cores it may run on."""

    wall: float
    own: float
    busy: float


def _cores() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def read_cpu() -> CpuSample | None:
    """The counters now (Linux /proc/stat); None where the system has no such file."""
    try:
        lines = open("/proc/stat").read().splitlines()
    except OSError:
        return None
    cores, tick = _cores(), os.sysconf("SC_CLK_TCK")
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            # user nice system idle iowait irq softirq steal: all but idle and iowait is busy
            values = [int(v) for v in fields[:8]]
            busy += sum(values) - values[3] - values[4]
    own = os.times()
    return CpuSample(time.monotonic(), own.user + own.system, busy / tick)


class CpuWatch:
    """Between two checks, measures how many cores other processes kept busy; the hint, once, if too many."""

    def __init__(self, threads: int, cores: int | None = None, read: Callable[[], CpuSample | None] | None = None,
                 min_seconds: float = 2.0):
        self.threads, self.cores = threads, cores or len(_cores())
        self.read, self.min_seconds = read or read_cpu, min_seconds
        self.said = threads <= 1  # one thread waits on no other: nothing to say
        self.since = None if self.said else self.read()

    def start(self, load: float | None = None) -> str | None:
        """At the start, from the 1-minute load average: the hint when others alone must oversubscribe the cores."""
        if self.said:
            return None
        if load is None:
            try:
                load = os.getloadavg()[0]
            except (AttributeError, OSError):
                return None
        # this process may have kept up to `threads` cores busy in the last minute (data, classifier): a lower bound
        return self._hint(load - self.threads)

    def check(self) -> str | None:
        """The hint the first time others' load plus our threads exceeds the cores; None otherwise."""
        if self.said or self.since is None:
            return None
        now = self.read()
        if now is None or now.wall - self.since.wall < self.min_seconds:
            return None  # too short an interval to measure: wait for a later check
        seconds = now.wall - self.since.wall
        others = ((now.busy - self.since.busy) - (now.own - self.since.own)) / seconds  # in cores
        self.since = now
        return self._hint(others)

    def _hint(self, others: float) -> str | None:
        if others < 0.75 or others + self.threads <= self.cores:
            return None
        self.said = True
        return (f"gan-lab: this machine is busy: other processes keep {others:.1f} of its {self.cores} cores "
                f"busy, and torch runs this job on {self.threads} threads, which then wait for each other. "
                f"threads=1 will be faster (one other busy job made a 60 s run take 1,063 s). gan-lab does not switch "
                f"on its own, because the thread count changes the last digits of the results.")
