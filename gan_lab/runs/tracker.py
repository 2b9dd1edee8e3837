"""Reporting: the one place that writes TensorBoard and the console.

Training code reports named scalars and samples; the tracker decides how they look.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta
from pathlib import Path
from collections import deque
from typing import Any, Callable

import torch
from rich.console import Console, ConsoleDimensions
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn)
from rich.markup import escape
from rich.text import Text
from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from gan_lab.runs import runlog
from gan_lab.runs.busy import CpuWatch
from gan_lab.runs.files import disk_full, write_on_to_devnull



class _Console(Console):
    """rich's Console, except that in a pipe or a log file it never breaks a line.

    rich wraps at the terminal's width, and at 80 columns where there is no terminal: a path or an
    override cut in two there no longer copy-pastes, nor greps. There, every line is as long as it
    needs (tables and trees take the width of their content).
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(UNWRAPPED_WIDTH, size.height)

    def on_broken_pipe(self) -> None:
        """Nobody reads the console any more (rich's default: exit 1, ending a run mid-step): write on into
        /dev/null, and the run trains, checkpoints and stops on its signals as before."""
        write_on_to_devnull(self.file)


UNWRAPPED_WIDTH = 100_000  # characters: no line gan-lab prints comes near
console = _Console(stderr=True)
SAMPLE_GRID_WIDTH = 480  # pixels: small images (MNIST's 28x28) are scaled up to at least this width
CAPTION_HEIGHT = 26  # pixels of the white strip above a sample grid that names its step
COST_STEPS = 3  # steps after the first that the start-of-run cost line is measured over
LINE_EVERY = 60.0  # seconds: in a log or pipe, a progress line (with its ETA) at least this often


class Pace:
    """Steps per second and the time left, for plain progress lines (logs and pipes have no live bar).

    The rate is measured over the last `window` seconds, so the ETA follows a machine whose load
    changed (a whole-run average keeps its first estimate long after); evaluations inside the
    window count, as they take time too.
    """

    def __init__(self, total: int, start: int = 0, window: float = 30.0, clock: Callable[[], float] = time.perf_counter):
        self.total, self.window, self.clock = total, window, clock
        self.seen: deque[tuple[float, int]] = deque([(clock(), start)])  # (time, step), oldest first

    def __call__(self, step: int) -> str:
        """'12.3 it/s  ETA 0:04:05' at `step`, from the rate over the recent window."""
        now = self.clock()
        while len(self.seen) > 1 and now - self.seen[1][0] >= self.window:
            self.seen.popleft()  # keep one point at least `window` old, so the rate spans the whole window
        then, first = self.seen[0]
        self.seen.append((now, step))
        done, seconds = step - first, now - then
        if done <= 0 or seconds <= 0:
            return "... it/s  ETA ..."
        rate = done / seconds
        return f"{rate:.1f} it/s  ETA {timedelta(seconds=math.ceil((self.total - step) / rate))}"


class _SpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:6.1f} it/s" if task.speed else "   ... it/s", style="cyan")


def _after_earlier_event_files(log_dir: Path) -> None:
    """Wait, if need be, until this second is later than every event file's in log_dir.

    TensorBoard reads a directory's event files in name order, and the name starts with the
    second the file was created in (then host and pid). A resume's purge only drops the
    earlier events when its file is read after theirs, so its name must sort after theirs.
    """
    stamps = [f.name.split(".")[3] for f in log_dir.glob("events.out.tfevents.*")]  # events.out.tfevents.<second>.
    seconds = [int(stamp) for stamp in stamps if stamp.isdigit()]
    while seconds and time.time() < max(seconds) + 1:
        time.sleep(0.05)  # at most a second, and only for a resume started within a second of its first run


def _quiet_writer_threads() -> None:
    """Let TensorBoard's writer thread fail on a full disk without printing a traceback of its own.

    The thread keeps its exception, and the writer raises it again in the training thread at the
    next write or flush, where it becomes the run's one-paragraph error.
    """
    if getattr(threading.excepthook, "quiet_disk_full", False):
        return
    hook = threading.excepthook

    def excepthook(args: Any) -> None:
        if not (isinstance(args.thread, _AsyncWriterThread) and disk_full(args.exc_value)):
            hook(args)
    excepthook.quiet_disk_full = True  # type: ignore[attr-defined]
    threading.excepthook = excepthook


def flat_hparams(plain: dict[str, Any], choices: dict[str, Any]) -> dict[str, Any]:
    """A resolved config as flat keys for the HParams dashboard: the groups' choices, then their settings."""
    # TensorBoard lists the keys whose values differ between runs (a sweep's) first, then the others
    # in name order, and ticks the first 5: the choices are capitalised (Loss, Model, Data, Optimizer) so that they sort
    # before every setting, and the swept keys and the choices are what the dashboard shows at first.
    flat: dict[str, Any] = {}
    for group in ("loss", "model", "data", "optimizer"):
        flat[group.capitalize()] = choices.get(group)
        for key, value in plain[group].items():
            if not key.startswith("_") and not isinstance(value, (dict, list)):
                flat[f"{group}.{key}"] = value
    flat.update({f"train.{k}": v for k, v in plain["train"].items()})
    flat["seed"] = plain["seed"]
    return flat


class Tracker:
    """Writes scalars, samples and hparams to TensorBoard and shows a rich progress bar."""

    def __init__(self, log_dir: str | Path, total_steps: int, start_step: int = 0, cpu_threads: int = 0,
                 adapt_threads: bool = False):
        self.log_dir, self.total_steps = Path(log_dir), total_steps
        self.pace = Pace(total_steps, start_step)
        # a CPU run with several threads: follow the free cores (threads: auto), or say once that
        # other processes make its threads wait for each other (gan_lab.runs.busy)
        self.cpu_watch = CpuWatch(cpu_threads, adapt=adapt_threads) if cpu_threads > 1 else None
        self._say(self.cpu_watch.start() if self.cpu_watch else None)
        # a live bar on a terminal; in logs and pipes (CI, clusters) one plain line per log step
        self.live = console.is_terminal
        # purge_step: when a run resumes in its own directory, drop the events its previous
        # life wrote after the checkpoint, so the curves continue without a fold
        if start_step:
            _after_earlier_event_files(self.log_dir)
        _quiet_writer_threads()
        self.writer = SummaryWriter(str(self.log_dir), purge_step=start_step + 1 if start_step else None)
        # the ETA from Pace, which keeps a rate over at least its window: rich's own estimate forgets steps older
        # than 30 s, so a run of one step a minute (a CPU at 128 px) never showed one
        self.progress = Progress(
            TextColumn("[bold]step"), BarColumn(), MofNCompleteColumn(), _SpeedColumn(),
            TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"), TextColumn("{task.fields[latest]}"),
            console=console, disable=not self.live, transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, latest="", eta="...")
        self.start_step, self.first_step_at, self.cost_said = start_step, None, False
        self.last_line = time.perf_counter()  # a plain line at least every LINE_EVERY seconds: an ETA in any log

    def __enter__(self) -> Tracker:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()
        if self.cpu_watch is not None:
            self.cpu_watch.restore()
        try:
            self.writer.close()
        except OSError as err:  # the writer thread's error, raised again by the final flush
            if exc[0] is None or not disk_full(err):
                raise
            # the run is already ending on an error (the disk is full): that error tells the user

    def stop_progress(self) -> None:
        """End the live progress bar (before a summary is printed)."""
        self.progress.stop()

    def threads_used(self) -> list[int]:
        """The CPU thread counts training ran on, in order (several when threads: auto followed the free cores)."""
        # read before __exit__ gives the process its starting count back, which training may not have used
        return list(self.cpu_watch.used) if self.cpu_watch is not None else [torch.get_num_threads()]

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Log named scalars at a step and show the losses on the progress bar."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        shown = "  ".join(f"{k.split('/', 1)[1]} {v:+.4f}" for k, v in values.items() if k.startswith("loss/"))
        if not shown:  # an evaluation step: its metrics
            shown = "  ".join(f"{k.removeprefix('metrics/')} {v:.4g}" for k, v in values.items())
        self.progress.update(self.task, latest=shown)
        if not self.live:
            self.last_line = time.perf_counter()
            console.print(f"step {step}/{self.total_steps}  {self.pace(step)}  {shown}", highlight=False,
                          soft_wrap=True)  # one line per step in a log, however long
        else:  # the bar shows it on the terminal; the run's log file gets the plain line
            runlog.line(console, f"step {step}/{self.total_steps}  {self.pace(step)}  {shown}")
        self._say(self.cpu_watch.check() if self.cpu_watch else None)

    def diagnosis(self, step: int, values: dict[str, float], lines: list[str]) -> None:
        """The diagnosis's scalars (no console line of their own) and what it names: console and a text entry."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        for line in lines:
            # escaped: a line quotes overrides (data.augment=[translation,...]) that rich would read as markup
            console.print(f"[bold yellow]diagnosis:[/] {escape(line)}", soft_wrap=True, highlight=False)
            self.writer.add_text("diagnosis", line, step)

    def text(self, tag: str, text: str, step: int) -> None:
        """A TensorBoard text entry (what a curve means: the protocol of metrics/fid)."""
        self.writer.add_text(tag, text, step)

    def _say(self, note: str | None) -> None:
        if note:
            console.print(f"[yellow]{note}[/]", soft_wrap=True, highlight=False)

    def advance(self, step: int) -> None:
        """Move the progress bar to `step`; once, the run's cost from its first steps; an ETA line every minute."""
        now, pace = time.perf_counter(), self.pace(step)
        self.progress.update(self.task, completed=step, eta=pace.rsplit("ETA ", 1)[-1])
        if self.first_step_at is None:  # the first step carries one-time costs (warm-up, allocation): not counted
            self.first_step_at = now
        elif not self.cost_said and step - self.start_step > COST_STEPS:
            self.cost_said = True
            seconds = (now - self.first_step_at) / (step - self.start_step - 1)
            left = self.total_steps - step
            console.print(f"[bold]cost[/] {seconds:.3g} s a step (steps 2-{step - self.start_step}): "
                          f"{self.total_steps - self.start_step:,} steps take about "
                          f"{timedelta(seconds=math.ceil(seconds * (self.total_steps - self.start_step)))}, "
                          f"{timedelta(seconds=math.ceil(seconds * left))} from now", highlight=False)
        if not self.live and now - self.last_line >= LINE_EVERY and step < self.total_steps:
            self.last_line = now
            console.print(f"step {step}/{self.total_steps}  {pace}", highlight=False)

    def images(self, step: int, grid: Tensor, path: Path | None = None) -> None:
        """Log an image grid (C, H, W in [0, 1]), scaled up and captioned with its step; optionally save it as a PNG."""
        grid = captioned(grid, f"step {step}")
        self.writer.add_image("samples", grid, step)
        if path is not None:
            import torchvision.utils

            path.parent.mkdir(parents=True, exist_ok=True)
            torchvision.utils.save_image(grid, path)

    def figure(self, tag: str, step: int, fig: Any, path: Path | None = None) -> None:
        """Log a matplotlib figure and optionally save it as a PNG; closes the figure."""
        import matplotlib.pyplot as plt
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from PIL import Image

        # drawn once, for the PNG and TensorBoard alike (savefig and add_figure would each draw it again:
        # the figures of a 2-D run's sample steps were most of a short run's time)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        rgb = np.asarray(canvas.buffer_rgba())[..., :3]
        plt.close(fig)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(path)
        self.writer.add_image(tag, rgb, step, dataformats="HWC")

    def hparams(self, params: dict[str, Any]) -> None:
        """Log the run's hyper-parameters for the HParams dashboard, in this run's own event file."""
        params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        # Only the session (its hparams, and its end). Without an experiment summary TensorBoard builds
        # the dashboard's columns from every run's hparams and marks those whose values differ (the
        # swept keys), listing them first, and its metrics from the runs' own scalar curves (whose last
        # point is the final value; add_hparams would add one-point hparams/* copies). With one it takes
        # some run's list as the whole experiment's, with nothing marked, in name order.
        _, session_start, session_end = hparams_summary(params, {})
        for summary in (session_start, session_end):
            self.writer._get_file_writer().add_summary(summary)  # the writer's own event file
        self.writer.flush()


def captioned(grid: Tensor, text: str) -> Tensor:
    """The grid scaled up (nearest neighbour, whole factors) to a readable width, with `text` in a strip above it."""
    import torch.nn.functional as F
    from PIL import Image, ImageDraw, ImageFont

    factor = max(1, math.ceil(SAMPLE_GRID_WIDTH / grid.shape[-1]))
    big = F.interpolate(grid[None].float(), scale_factor=factor, mode="nearest")[0]
    try:
        font = ImageFont.load_default(size=18)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, ImportError):
        font = ImageFont.load_default()  # older Pillow: the small bitmap font
    strip = Image.new("L", (big.shape[-1], CAPTION_HEIGHT), color=255)
    ImageDraw.Draw(strip).text((6, 3), text, fill=0, font=font)
    strip_tensor = torch.frombuffer(bytearray(strip.tobytes()), dtype=torch.uint8).view(1, CAPTION_HEIGHT, -1) / 255
    return torch.cat([strip_tensor.expand(big.shape[0], -1, -1), big], dim=1)


def scalars_to_floats(values: dict[str, Tensor | float]) -> dict[str, float]:
    """Device tensors -> Python floats in one transfer (the only sync point of a log step)."""
    tensors = {k: v for k, v in values.items() if isinstance(v, Tensor)}
    floats = {k: float(v) for k, v in values.items() if not isinstance(v, Tensor)}
    if tensors:
        stacked = torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).cpu().tolist()
        floats.update(zip(tensors, stacked))
    return floats


class NullTracker(Tracker):
    """What ranks other than 0 report to under DDP: nothing is written or shown."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def advance(self, step: int) -> None:
        pass

    def diagnosis(self, step: int, values: dict[str, float], lines: list[str]) -> None:
        pass

    def text(self, tag: str, text: str, step: int) -> None:
        pass

    def images(self, step: int, grid: Tensor, path: Path | None = None) -> None:
        pass

    def figure(self, tag: str, step: int, fig: Any, path: Path | None = None) -> None:
        import matplotlib.pyplot as plt

        plt.close(fig)

    def hparams(self, params: dict[str, Any]) -> None:
        pass

    def stop_progress(self) -> None:
        pass

    def threads_used(self) -> list[int]:
        return [torch.get_num_threads()]
