"""Keep a CPU run fast when other work shares the machine: follow the free cores, or say what to do.

torch splits each CPU op over its intra-op threads, which then wait for one another; when
another process holds one of the cores, every op waits for the thread that shares a core with
it, and a run slows down several times over (the default run: 3.7x with one other busy process
on 2 cores, 1,063 s instead of ~60 s with heavier load). One thread fewer loses only the share of
the machine that the other process holds.

With `threads: auto` (the default for a single run), a CPU run therefore follows the cores that
are actually free: it measures, between log steps a second or more apart, how many cores other
processes kept busy, and sets torch's thread count to what is left (at least 1, at most torch's
default), with a margin so it does not flap. A count given by hand (`threads=N`) is kept, and the
run says once that threads=1 would be faster. The thread count can change the last digits of a
run's results (the default 2-D MLP run: bit-identical at 1 and 2 threads; a DCGAN on MNIST: differs
from the 4th digit after 3 steps), so a run that must be bit-reproducible on a shared machine pins it.
"""

from __future__ import annotations

import os
import time
from typing import Callable, NamedTuple

import torch

MARGIN = 0.6  # cores: change the thread count only when the free cores are this far from it (no flapping)


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
    """Between two checks, measures how many cores other processes kept busy, and acts on it.

    adapt=True (threads: auto): sets torch's thread count to the free cores and says so when it
    changes; adapt=False (threads given): the hint that threads=1 is faster, once.
    """

    def __init__(self, threads: int, cores: int | None = None, read: Callable[[], CpuSample | None] | None = None,
                 min_seconds: float = 1.0, adapt: bool = False,
                 set_threads: Callable[[int], None] | None = None):
        self.threads = self.most = threads  # the count in use, and the most it may be (torch's default)
        self.used = [threads]  # the counts training ran on, in order (status.json records them, not the restored one)
        self.cores, self.adapt = cores or len(_cores()), adapt
        self.set_threads = set_threads or torch.set_num_threads
        self.read, self.min_seconds = read or read_cpu, min_seconds
        self.said = threads <= 1 and not adapt  # one thread waits on no other: nothing to say
        self.since = None if self.said else self.read()

    def start(self, load: float | None = None) -> str | None:
        """At the start, from the 1-minute load average: fewer threads (adapt) or the hint, when others are busy."""
        if self.said:
            return None
        if load is None:
            try:
                load = os.getloadavg()[0]
            except (AttributeError, OSError):
                return None
        # this process may have kept up to `threads` cores busy in the last minute (data, classifier): a lower bound
        return self._act(load - self.threads)

    def check(self) -> str | None:
        """After at least min_seconds since the last check: what to say about the others' load, if anything."""
        if self.said or self.since is None:
            return None
        now = self.read()
        if now is None or now.wall - self.since.wall < self.min_seconds:
            return None  # too short an interval to measure: wait for a later check
        seconds = now.wall - self.since.wall
        others = ((now.busy - self.since.busy) - (now.own - self.since.own)) / seconds  # in cores
        self.since = now
        return self._act(others)

    def restore(self) -> None:
        """Give the process back the thread count it started with (a sweep's next job, a test)."""
        if self.adapt and self.threads != self.most:
            self.set_threads(self.most)
            self.threads = self.most

    def _act(self, others: float) -> str | None:
        return self._follow(others) if self.adapt else self._hint(others)

    def _follow(self, others: float) -> str | None:
        free = self.cores - max(others, 0.0)
        if abs(free - self.threads) < MARGIN:
            return None
        wanted = min(self.most, max(1, round(free)))
        if wanted == self.threads:
            return None
        self.set_threads(wanted)
        self.threads = wanted
        self.used.append(wanted)
        if wanted < self.most:
            return (f"gan-lab: other processes keep {max(others, 0):.1f} of this machine's {self.cores} cores busy: "
                    f"training on {wanted} thread{'s' if wanted > 1 else ''} (of {self.most}) until they free "
                    f"up, since threads that share a core wait for each other. threads={self.most} fixes the count "
                    f"(the thread count can change the last digits of the results).")
        return f"gan-lab: the cores are free again: training on {wanted} threads."

    def _hint(self, others: float) -> str | None:
        if others < 0.75 or others + self.threads <= self.cores:
            return None
        self.said = True
        return (f"gan-lab: this machine is busy: other processes keep {others:.1f} of its {self.cores} cores "
                f"busy, and threads={self.threads} runs this job on {self.threads} threads, which then wait for "
                f"each other. threads=1 (or the default threads=auto, which follows the free cores) will be "
                f"faster.")
