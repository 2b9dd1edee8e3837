"""Which code produced a result: gan-lab's and torch's versions, and the git commit of gan-lab's checkout.

Recorded once, when a job starts (the first call is cached), in every run's status.json and
eval.json, so a figure can be traced back to the exact code that made it, and a script that
writes docs/ can check that all its runs came from one clean commit.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

from gan_lab import __version__

SOURCE = Path(__file__).resolve().parents[2]  # the checkout holding gan_lab/ (or site-packages)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(SOURCE), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):  # no git on this machine
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """{"gan_lab": version, "torch": version} plus "commit" and "dirty" (uncommitted changes) in a git checkout."""
    import torch  # its kernels set a result's last digits

    info: dict[str, Any] = {"gan_lab": __version__, "torch": torch.__version__}
    top = _git("rev-parse", "--show-toplevel")
    # only gan-lab's own repository: a venv inside some other project's checkout must not lend it its commit
    if top is None or Path(top).resolve() != SOURCE or not (SOURCE / "gan_lab" / "runs" / "provenance.py").is_file():
        return info
    commit, status = _git("rev-parse", "HEAD"), _git("status", "--porcelain")
    if commit is not None and status is not None:
        info.update(commit=commit, dirty=bool(status))
    return info
