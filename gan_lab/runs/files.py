"""Output files written whole or not at all: a Ctrl-C, a crash or a full disk mid-write never leaves half a file."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gan_lab.errors import GanLabError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device; the user's disk quota used up


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode open() gives a new file: 0666 less the umask (mkstemp's files are private, 0600)."""
    return 0o666 & ~_umask()


def disk_full(err: BaseException) -> bool:
    """Whether an exception is a write that found no space (ENOSPC) or no quota (EDQUOT) left."""
    return isinstance(err, OSError) and err.errno in DISK_FULL


def free_bytes(folder: str | Path) -> int | None:
    """The bytes an unprivileged write may still use on the disk holding folder; None when unknown."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def size_text(n: int) -> str:
    """A byte count for people: '812.6 KiB'."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class DiskFull(GanLabError):
    """A write that found its disk full: names the folder, the free space and what the write needed.

    `outcome` (what survived and how to go on) is added by whoever knows, e.g. the training loop.
    """

    def __init__(self, folder: str | Path, what: str, needed: int | None = None, quota: bool = False,
                 outcome: str = ""):
        self.folder, self.what, self.needed, self.quota = Path(folder), what, needed, quota
        self.free, self.outcome = free_bytes(self.folder), outcome
        super().__init__(what)

    def __str__(self) -> str:
        full = "its disk quota is used up" if self.quota else "its disk is full"
        needed = f"the write needed {size_text(self.needed)}, and " if self.needed else ""
        free = f"{size_text(self.free)} are free there" if self.free is not None else "the free space is unknown"
        outcome = self.outcome or "Nothing was left half-written."
        return (f"No space left to write {self.what} in {self.folder} ({full}): {needed}{free}. {outcome} "
                f"Free some space (older runs, or fewer step files: train.keep_checkpoints) or write to a "
                f"larger disk (hydra.run.dir=...).")


@contextmanager
def disk_full_explained(folder: str | Path, outcome: Callable[[], str] = lambda: "") -> Iterator[None]:
    """Any write in the block that finds no space becomes one DiskFull paragraph, with outcome() added."""
    try:
        yield
    except DiskFull as err:
        err.outcome = err.outcome or outcome()
        raise
    except OSError as err:
        if not disk_full(err):
            raise
        what = Path(err.filename).name if err.filename else "the run's files"
        raise DiskFull(folder, what, quota=err.errno == errno.EDQUOT, outcome=outcome()) from None


def low_space(folder: str | Path, size: int, count: int = 3) -> str | None:
    """A warning when the disk holding folder has room for fewer than `count` more files of `size` bytes."""
    free = free_bytes(folder)
    if free is None or free >= count * size:
        return None
    return (f"only {size_text(free)} free on the disk holding {folder}, less than {count} checkpoints' worth "
            f"({size_text(size)} each): free some space, or the run stops at the checkpoint that no longer "
            f"fits (the one before it is kept).")


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; it replaces `path` only when the block ends normally.

    The temporary name keeps the suffix (matplotlib and PIL pick the format from it). On any
    exception, KeyboardInterrupt included, it is removed and `path` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes it private; give it an ordinary file's mode
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to path atomically."""
    with atomic_writer(path) as tmp:
        tmp.write_text(text)


def write_on_to_devnull(stream: object) -> None:
    """The reader of `stream` (stdout or stderr) is gone: a closed pipe (the parent that read it died, `| tee`
    was killed). Point its file descriptor at /dev/null, so later writes succeed and go nowhere: a run keeps
    training and checkpointing (its log file, runs/runlog.py, keeps every line) instead of ending on the next
    line it prints."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())  # type: ignore[attr-defined]
    finally:
        os.close(devnull)
