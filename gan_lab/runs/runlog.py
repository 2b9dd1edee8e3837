"""The run's log file: what the console showed, as plain text, in run_dir/train.log.

gan-lab prints through one rich console (gan_lab.runs.tracker.console); Hydra's job log file only
receives Python `logging` records, which gan-lab does not use, so it stayed empty. While a job
runs, a render hook copies everything the console prints (config tree, warnings, summary,
errors) into the file through a second, colourless console; the step lines that a live
progress bar only shows on a terminal are written with `line(console, text)`; Python warnings and a bug's
traceback are added too. The file is opened for appending: a resumed run continues it.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console, ConsoleRenderable, RenderHook
from rich.control import Control
from rich.text import Text

from gan_lab.runs.files import disk_full


class _Tee(RenderHook):
    def __init__(self, log: RunLog, target: Console):
        self.log, self.target, self.failed = log, target, False

    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        printable = [r for r in renderables if not isinstance(r, Control)]  # cursor moves of a live display
        if printable and not self.failed:
            try:
                self.target.print(*printable)
            except OSError as err:
                if not disk_full(err):
                    raise
                # the console goes on; whatever write of the run comes next stops it with its error
                self.failed = True
                note = Text(f"note: {self.target.file.name} is not written any more: no space left on its disk.",
                            style="yellow")
                return [*renderables, note]
        return renderables


class RunLog:
    """Copies a console's output into a plain-text file while it is attached."""

    def __init__(self, console: Console, path: Path):
        self.console, self.file = console, path.open("a", encoding="utf-8")
        # not a terminal: no colour codes, no live display; wide enough for the config tree and tables
        self.plain = Console(file=self.file, width=120, no_color=True, force_terminal=False, highlight=False,
                             soft_wrap=True)
        self.hook = _Tee(self, self.plain)
        console.push_render_hook(self.hook)
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._warning

    def _warning(self, message: Any, category: Any, filename: str, lineno: int, file: TextIO | None = None,
                 line: str | None = None) -> None:
        self._showwarning(message, category, filename, lineno, file, line)
        if self.hook.failed:
            return
        with self._unless_full():
            self.file.write(warnings.formatwarning(message, category, filename, lineno, line))
            self.file.flush()

    def line(self, text: str) -> None:
        """A line for the file only (what the live progress bar shows on the terminal)."""
        if self.hook.failed:
            return
        with self._unless_full():
            self.plain.print(text, markup=False)

    def exception(self) -> None:
        """The traceback of the exception being handled (a bug: it keeps its traceback here too)."""
        if self.hook.failed:
            return
        with self._unless_full():
            self.file.write(traceback.format_exc())
            self.file.flush()

    @contextmanager
    def _unless_full(self) -> Iterator[None]:
        # once its disk is full the log stops (callers skip it), and the run's own error says why
        try:
            yield
        except OSError as err:
            if not disk_full(err):
                raise
            self.hook.failed = True

    def close(self) -> None:
        """Detach from the console and close the file, saying so when a Ctrl-C is ending the job."""
        if isinstance(sys.exc_info()[1], KeyboardInterrupt):  # the job's finally: its Ctrl-C on the way out
            self.file.write("gan-lab: interrupted (Ctrl-C)\n")
        hooks = self.console._render_hooks  # pop_render_hook would drop whichever hook is last
        if self.hook in hooks:
            hooks.remove(self.hook)
        if warnings.showwarning == self._warning:
            warnings.showwarning = self._showwarning
        try:
            self.file.close()  # flushes what is left, which a full disk refuses; the file is closed all the same
        except OSError as err:
            if not disk_full(err):
                raise


def attached(console: Console) -> RunLog | None:
    """The run log copying this console's output, if one is attached (a job is running in this process)."""
    # found through the console it hooks into, so no module global carries it between layers
    return next((hook.log for hook in console._render_hooks if isinstance(hook, _Tee)), None)


def line(console: Console, text: str) -> None:
    """Write a line to the log file attached to this console only, when there is one."""
    log = attached(console)
    if log is not None:
        log.line(text)
