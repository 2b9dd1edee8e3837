"""Reporting: the one place that writes TensorBoard and the console.

Training code reports named scalars and samples; the tracker decides how they look.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from gan_lab import runlog

console = Console(stderr=True)


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


class Tracker:
    """Writes scalars, samples and hparams to TensorBoard and shows a rich progress bar."""

    def __init__(self, log_dir: str | Path, total_steps: int, start_step: int = 0):
        self.log_dir, self.total_steps = Path(log_dir), total_steps
        # a live bar on a terminal; in logs and pipes (CI, clusters) one plain line per log step
        self.live = console.is_terminal
        # purge_step: when a run resumes in its own directory, drop the events its previous
        # life wrote after the checkpoint, so the curves continue without a fold
        if start_step:
            _after_earlier_event_files(self.log_dir)
        self.writer = SummaryWriter(str(self.log_dir), purge_step=start_step + 1 if start_step else None)
        self.progress = Progress(
            TextColumn("[bold]step"), BarColumn(), MofNCompleteColumn(), _SpeedColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[latest]}"),
            console=console, disable=not self.live, transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, latest="")

    def __enter__(self) -> Tracker:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()
        self.writer.close()

    def stop_progress(self) -> None:
        """End the live progress bar (before a summary is printed)."""
        self.progress.stop()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Log named scalars at a step and show the losses on the progress bar."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        shown = "  ".join(f"{k.split('/', 1)[1]} {v:+.4f}" for k, v in values.items() if k.startswith("loss/"))
        self.progress.update(self.task, latest=shown)
        if not self.live:
            console.print(f"step {step}/{self.total_steps}  {shown}", highlight=False)
        else:  # the bar shows it on the terminal; the run's log file gets the plain line
            runlog.line(f"step {step}/{self.total_steps}  {shown}")

    def advance(self, step: int) -> None:
        """Move the progress bar to `step`."""
        self.progress.update(self.task, completed=step)

    def images(self, step: int, grid: Tensor, path: Path | None = None) -> None:
        """Log an image grid (C, H, W in [0, 1]) and optionally save it as a PNG."""
        self.writer.add_image("samples", grid, step)
        if path is not None:
            import torchvision.utils

            path.parent.mkdir(parents=True, exist_ok=True)
            torchvision.utils.save_image(grid, path)

    def figure(self, tag: str, step: int, fig: Any, path: Path | None = None) -> None:
        """Log a matplotlib figure and optionally save it as a PNG; closes the figure."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=100)
        self.writer.add_figure(tag, fig, step, close=True)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Log hyper-parameters and final metrics to the HParams dashboard, in this run's own event file."""
        params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        metrics = {f"hparams/{k}": v for k, v in metrics.items()}
        for summary in hparams_summary(params, metrics):
            self.writer._get_file_writer().add_summary(summary)  # the writer's own event file
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value)
        self.writer.flush()


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

    def images(self, step: int, grid: Tensor, path: Path | None = None) -> None:
        pass

    def figure(self, tag: str, step: int, fig: Any, path: Path | None = None) -> None:
        import matplotlib.pyplot as plt

        plt.close(fig)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        pass

    def stop_progress(self) -> None:
        pass
