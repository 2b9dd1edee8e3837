"""What each layer's tests cost: run a pytest tier once and sum its test time by test file and by layer.

    python scripts/test_cost.py                 # the quick tier (-m "not slow")
    python scripts/test_cost.py --marker ""     # the whole suite

A test file is charged to the layer of the module it is named for (tests/test_train.py -> gan_lab.training.train ->
training); a file named for no module is charged to the highest layer it imports, or to app when it imports none
(it drives the command line). The layers are tests/test_layout.py's. Prints seconds per layer and the ten
costliest files, and pytest's own wall time beside their sum (setup and collection are the difference),
and its CPU time: on a shared machine, what its wall time would be on an idle one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_layout import LAYERS, imports, layer, modules  # noqa: E402  (the rule the layout test holds)


def charged_layer(test_file: Path, known: dict[str, Path]) -> str:
    """The layer a test file's time is charged to (see the module docstring)."""
    stem = test_file.stem.removeprefix("test_")
    named = [name for name in known if name.rsplit(".", 1)[-1] in (stem, stem.rstrip("s"))]
    if named:
        return layer(named[0])
    imported = [layer(name) for name in imports(test_file, set(known))]
    return max(imported, key=LAYERS.__getitem__) if imported else "app"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--marker", default="not slow", help='pytest -m expression ("": every test)')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
        command += ["-m", args.marker] if args.marker else []
        started, cpu = time.perf_counter(), os.times()
        subprocess.run(command, cwd=ROOT, check=False)
        wall, after = time.perf_counter() - started, os.times()
        # the tests run on one thread: their CPU time is what an idle machine's wall time would be
        cpu_seconds = (after.children_user - cpu.children_user) + (after.children_system - cpu.children_system)
        cases = ElementTree.parse(report).getroot().iter("testcase")
        per_file: dict[str, float] = defaultdict(float)
        for case in cases:
            per_file[case.get("classname", "").split(".")[-1]] += float(case.get("time", 0))
    known = modules()
    per_layer: dict[str, float] = defaultdict(float)
    for name, seconds in per_file.items():
        per_layer[charged_layer(ROOT / "tests" / f"{name}.py", known)] += seconds
    total = sum(per_file.values())
    print(f"\n{args.marker or 'every test'}: {total:.1f} s in tests; pytest took {wall:.1f} s of wall time and "
          f"{cpu_seconds:.1f} s of CPU (the wall time of an idle machine: the tests run on one thread)")
    for name in sorted(per_layer, key=lambda n: (-LAYERS[n], n)):
        print(f"  {name:<11} {per_layer[name]:7.1f} s  {per_layer[name] / total:6.1%}")
    print("costliest files:")
    for name, seconds in sorted(per_file.items(), key=lambda item: -item[1])[:10]:
        print(f"  {name:<24} {seconds:7.1f} s")


if __name__ == "__main__":
    main()
