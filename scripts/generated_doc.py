"""Writing a generated document that keeps its hand-written `## Notes` section.

scripts/bench.py and scripts/toy_results.py regenerate everything above the heading; what a
person wrote below it survives every re-run.
"""

from __future__ import annotations

from pathlib import Path

NOTES = "\n## Notes"


def write_keeping_notes(path: Path, lines: list[str]) -> None:
    """Write the generated lines to path, followed by the Notes section the file already has."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    notes = [old[old.index(NOTES) + 1:]] if NOTES in old else []
    path.write_text("\n".join(lines + notes))
