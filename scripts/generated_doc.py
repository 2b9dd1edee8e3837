"""Writing a generated document: from a clean commit, keeping its hand-written `## Notes` section.

scripts/bench.py and scripts/toy_results.py regenerate everything above the heading; what a
person wrote below it survives every re-run. They call source_state() when they start, so a
doc says which commit made it, and is not written from uncommitted code unless asked to.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

NOTES = "\n## Notes"
REPO = Path(__file__).resolve().parent.parent


def write_keeping_notes(path: Path, lines: list[str]) -> None:
    """Write the generated lines to path, followed by the Notes section the file already has."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    notes = [old[old.index(NOTES) + 1:]] if NOTES in old else []
    path.write_text("\n".join(lines + notes))


def source_state(allow_dirty: bool) -> tuple[str, bool]:
    """The commit the script starts from and whether the tree has uncommitted changes; exits on a dirty tree.

    A figure in docs/ must be reproducible from a clean checkout of the commit its doc names,
    so a tree with uncommitted changes is refused unless allow_dirty (the doc then says so).
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        commit, dirty = git("rev-parse", "HEAD"), bool(git("status", "--porcelain"))
    except (OSError, subprocess.CalledProcessError):
        sys.exit(f"error: {REPO} is not a git checkout (or git is missing): a generated doc must name the "
                 f"commit that made it.")
    if dirty and not allow_dirty:
        sys.exit("error: the tree has uncommitted changes (git status --porcelain is not empty), so the doc "
                 "could not be reproduced from a clean checkout. Commit first, or pass --allow-dirty and the "
                 "doc will say it was made from uncommitted code.")
    return commit, dirty


def made_at(commit: str, dirty: bool) -> str:
    """'commit abc1234', or with a warning when the tree was dirty, for a doc's header line."""
    return f"commit {commit[:7]}" + (" **with uncommitted changes** (`--allow-dirty`): the figures below cannot be "
                                     "reproduced from a clean checkout" if dirty else "")


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), for a doc's header line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def mnist_doc_parser(description: str, samples: int) -> argparse.ArgumentParser:
    """The options every MNIST-measuring doc script takes: the data root, the samples per case, the digit
    classifier's cache, the threads, and --allow-dirty (source_state)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", default=os.environ.get("GAN_LAB_DATA_ROOT", "data"))
    parser.add_argument("--samples", type=int, default=samples)
    parser.add_argument("--cache-dir", default=None, help="the digit classifier's cache (default: gan-lab's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--allow-dirty", action="store_true")
    return parser
