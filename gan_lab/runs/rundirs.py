"""One run, one directory: fresh default directories, a lock per live run, re-runs that do no harm.

- A run (or sweep) started without hydra.run.dir / hydra.sweep.dir gets a directory of its own:
  the config's timestamped default, with `_2`, `_3`, ... appended when another run created that
  name in the same second. The name is claimed by an atomic mkdir, so processes started together
  (a shell loop, several terminals, a scheduler) can never share it.
- A live run holds its directory with an advisory lock (`flock` on `.gan-lab.lock`, which names
  the owner's pid and host). The kernel drops it when the process ends, however it ends, so no
  stale lock survives a crash or a SIGKILL. A second run naming a held directory is refused. A
  run that ends removes the file while it still holds it; whoever locks a file checks that it is
  still the one the name points to, so a removed file's lock never counts.
- A finished run re-run as it was is recognised (`finished`), so the re-run is a no-op.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gan_lab.errors import GanLabError
from gan_lab.runs.tracker import console
from gan_lab.runs.status import STATUS, read_status

LOCK = ".gan-lab.lock"
RESOLVED = "config_resolved.yaml"
# What a run refused before training leaves behind: Hydra's files and gan-lab's bookkeeping.
BOOKKEEPING = {".hydra", STATUS, LOCK, RESOLVED, "train.log"}

_held: dict[Path, int] = {}  # directory -> the open, locked file descriptor of this process
_created: dict[Path, list[Path]] = {}  # directory this process created -> the folders mkdir made for it


def default_dir(key: str) -> Path:
    """The packaged config's default for hydra.run.dir or hydra.sweep.dir, as of now."""
    import importlib.resources

    from hydra.core.utils import setup_globals

    setup_globals()  # registers Hydra's ${now:...} resolver
    conf = OmegaConf.load(importlib.resources.files("gan_lab.conf") / "train.yaml")
    return Path(str(OmegaConf.select(conf, key)))


def claim(base: Path) -> Path:
    """Create and return base, or base_2, base_3, ... when that name is taken (atomic mkdir)."""
    made = [p for p in reversed(base.parents) if not p.exists()]
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        candidate = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        _created[candidate.resolve()] = [candidate, *reversed(made)]
        return candidate
    raise GanLabError(f"Could not find a free run directory name next to {base}: clear out old runs.")


def hold(run_dir: Path, created: bool = False) -> None:
    """Lock run_dir for this process, or raise GanLabError when a live run holds it.

    created: this process made run_dir just before (so a refused run may remove it).
    """
    key = run_dir.resolve()
    if key in _held:
        return
    if created:
        _created.setdefault(key, [run_dir])
    if not run_dir.exists():
        made = [p for p in reversed(run_dir.parents) if not p.exists()]
        run_dir.mkdir(parents=True, exist_ok=True)
        _created.setdefault(key, [run_dir, *reversed(made)])
    while True:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise GanLabError(
                f"The run directory {run_dir} is in use by a live gan-lab run ({owner}); two runs never write one "
                f"directory. Wait for that run to end, or leave hydra.run.dir out (each run then gets a directory "
                f"of its own) or name another one.") from None
        if _same_file(fd, run_dir / LOCK):
            break
        os.close(fd)  # a run that ended removed this file after we opened it: lock the name's new file
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _held[key] = fd


def _same_file(fd: int, path: Path) -> bool:
    # the open file is still the one `path` names (not removed, nor replaced, since it was opened)
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def release(run_dir: Path) -> None:
    """Drop this process's lock on run_dir and remove the lock file, so a finished run leaves none behind."""
    fd = _held.pop(run_dir.resolve(), None)
    if fd is not None:
        # removed while still locked: a process that opened it meanwhile sees, once it holds the lock, that the
        # name no longer points to it (hold's _same_file), and starts again on a file of its own
        (run_dir / LOCK).unlink(missing_ok=True)
        os.close(fd)  # closing the last descriptor releases the flock


def held_elsewhere(run_dir: Path) -> bool:
    """True when another live process holds run_dir's lock (checked without writing anything)."""
    if run_dir.resolve() in _held or not (run_dir / LOCK).is_file():
        return False
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except FileNotFoundError:  # removed by the run that just ended
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock just taken


def remove_if_fresh(run_dir: Path, keep: set[str] = BOOKKEEPING) -> bool:
    """Delete run_dir when this process created it and it holds nothing but files named in keep."""
    made = _created.get(run_dir.resolve())
    if not made or not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - keep:
        return False
    release(run_dir)
    shutil.rmtree(run_dir)
    for folder in made[1:]:  # the date folder and any others mkdir made for it, when now empty
        try:
            folder.rmdir()
        except OSError:
            break
    _created.pop(run_dir.resolve(), None)
    return True


def let_go() -> None:
    """At the end of `gan-lab train`: release every lock, and remove the directories it created
    that nothing was written into (Hydra refused the overrides before its job started)."""
    for run_dir in [made[0] for made in _created.values()]:
        remove_if_fresh(run_dir, keep={LOCK})
    for run_dir in list(_held):
        release(run_dir)
    _created.clear()


def write_resolved(run_dir: Path, plain: dict[str, Any]) -> None:
    """Save the config that ran, every interpolation resolved, beside Hydra's .hydra/config.yaml."""
    OmegaConf.save(OmegaConf.create(plain), run_dir / RESOLVED)


def finished(run_dir: Path, plain: dict[str, Any]) -> dict[str, Any] | None:
    """The status record when run_dir already holds this very run, completed; else None.

    "This very run": status completed, resume=auto, its last checkpoint at exactly train.steps,
    and no training-relevant key changed (the keys a resume may change, such as log
    intervals or threads, may differ).
    """
    from gan_lab.runs.checkpoint import LAST, load_checkpoint
    from gan_lab.runs.safety import config_differences

    record = read_status(run_dir)
    if not record or record.get("status") != "completed" or plain.get("resume") != "auto":
        return None
    if not (run_dir / "checkpoints" / LAST).is_file():
        return None
    try:
        state = load_checkpoint(str(run_dir))
    except GanLabError:
        return None
    if state["step"] != plain["train"]["steps"] or config_differences(state["config"], plain):
        return None
    return record


def already_done(run_dir: Path, args: list[str]) -> dict[str, Any] | None:
    """Before Hydra writes anything: the status record when `gan-lab train args` would re-run a finished run."""
    if (read_status(run_dir) or {}).get("status") != "completed" or held_elsewhere(run_dir):
        return None
    from hydra import compose, initialize_config_module

    task = [a for a in args if not a.startswith("-") and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
            plain = OmegaConf.to_container(compose("train", overrides=task), resolve=True)
    except Exception:  # noqa: BLE001 - anything odd: let the real run decide and report it
        return None
    return finished(run_dir, plain)


def check_output_dir(overrides: list[str]) -> None:
    """Fail early, in one paragraph, when the run's output folder cannot be created.

    Hydra creates the run directory before any of gan-lab's code runs, and reports a
    failure there as a traceback; so the fixed part of the path is tried first here.
    """
    key = "hydra.sweep.dir=" if any(a in ("-m", "--multirun") for a in overrides) else "hydra.run.dir="
    target = next((a[len(key):] for a in overrides if a.startswith(key)), "outputs")
    fixed = Path(target.split("${", 1)[0] or ".")
    try:
        fixed.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GanLabError(f"Cannot create the output directory {fixed.absolute()}: {err.strerror or err}. "
                          f"Run from a writable folder or choose one with {key}<path>.") from None


def own_output_dir(args: list[str], main: bool = True) -> list[str] | None:
    """Give this run (or sweep) a directory no live run holds, before Hydra writes into it.

    Without hydra.run.dir / hydra.sweep.dir the config's timestamped default is claimed, with a
    suffix when another run took that name in the same second, and passed on to Hydra. A
    directory given is held for this process, or refused while a live run holds it. A single
    run whose directory already holds it, completed, returns None and touches nothing.
    """
    key = "hydra.sweep.dir=" if any(a in ("-m", "--multirun") for a in args) else "hydra.run.dir="
    given = next((a[len(key):] for a in args if a.startswith(key)), None)
    if given is None:
        try:
            target = claim(default_dir(key[:-1]))
        except OSError:
            check_output_dir(args)  # says why in one paragraph
            raise
        args = [*args, f"{key}{target}"]
        fresh = False  # claim() recorded that it made it
    elif "${" in given:  # resolved by Hydra: the job itself takes the lock
        check_output_dir(args)
        return args
    else:
        target = Path(given)
        if key == "hydra.run.dir=":
            record = already_done(target, args)
            if record is not None:
                console.print(f"[bold green]gan-lab:[/] {target} already holds this run, completed at step "
                              f"{int((record.get('metrics') or {}).get('step', 0))}: nothing to do (raise "
                              f"train.steps to train further).", soft_wrap=True, highlight=False)
                return None
        fresh = not target.exists()
        check_output_dir(args)
    if main:
        hold(target, created=fresh)
    return args
