"""The lab's own question asked of tables: each loss on each benchmark table, 3 seeds (#33 item 7).

Every run is gan-lab end to end, as a user would: `gan-lab train data=table data.path=<the bench's
training split> data.target=<target> loss=<loss> seed=<k>` at the table defaults (gan-lab's own held-out
20% of those rows, recorded in the checkpoint), then `gan-lab eval checkpoint=<run>`, which scores 5,000
rows against the held-out rows: SDMetrics' quality, category and category-pair coverage (the table's
modes), TSTR beside train-on-real, and privacy (median distance to the closest training record, DCR, of
synthetic rows beside that of held-out real rows, and the exact-copy rate). One thread a run.

The tables are the benchmark's (scripts/table_bench.py --setup writes them into its cache); runs and
their eval.json stay in <cache>/losses/<version>/<table>/<loss>-seed<k>/ (version: table_bench's, the git
trees of gan_lab/ and conf/), so a second call trains nothing that is there, and a change to the package or
its configs trains again. scripts/table_bench.py --doc reads them (section()) into docs/table.md.

    python scripts/table_losses.py                       # every table, loss and seed the cache lacks
    python scripts/table_losses.py --tables penguins --losses hinge --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from table_bench import DEFAULT_CACHE, GAN_LAB, ONE_THREAD, ganlab_train, ganlab_version  # scripts/table_bench.py

LOSSES = ("wgan_gp", "nonsaturating", "hinge", "r3gan")
TABLES = ("penguins", "txhousing")  # diamonds (43k rows) costs ~5 CPU min a run: --tables diamonds adds it
# eval.json key -> the doc's column
COLUMNS = {"metrics/quality": "quality", "metrics/category_coverage": "category coverage",
           "metrics/category_pair_coverage": "pair coverage", "memorisation/dcr_synthetic_median": "DCR synthetic",
           "memorisation/dcr_held_out_median": "DCR held-out", "memorisation/exact_copy_rate": "exact copies"}


def folder(cache: Path) -> Path:
    """Where this version of gan-lab's runs go: <cache>/losses/<version>."""
    return cache / "losses" / ganlab_version()


def run_one(cache: Path, table: str, loss: str, seed: int) -> dict[str, Any]:
    """Train and evaluate one (table, loss, seed) unless its eval.json is there; the eval record."""
    info = json.loads((cache / "tables" / table / "table.json").read_text())
    run = folder(cache) / table / f"{loss}-seed{seed}"
    record = run / "eval.json"
    if not record.exists():
        env = {**os.environ, **ONE_THREAD}
        print(f"training {loss} on {table}, seed {seed} ...", flush=True)
        subprocess.run(ganlab_train(cache / "tables" / table, info, seed, run, f"data.target={info['target']}",
                                    f"loss={loss}"), check=True, env=env, capture_output=True)
        subprocess.run([*GAN_LAB, "eval", f"checkpoint={run}"], check=True, env=env, capture_output=True)
    found = json.loads(record.read_text())
    status = json.loads((run / "status.json").read_text())
    return {**found, "cpu_s": status.get("cpu_s"), "steps": status.get("metrics", {}).get("step")}


def results(runs: Path, tables: tuple[str, ...] = TABLES) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """What runs/ (folder(cache): this version's) holds: table -> loss -> the seeds' eval records (nothing is
    trained)."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for table in tables:
        for loss in LOSSES:
            for record in sorted((runs / table).glob(f"{loss}-seed*/eval.json")):
                status = json.loads((record.parent / "status.json").read_text())
                found.setdefault(table, {}).setdefault(loss, []).append(
                    {**json.loads(record.read_text()), "cpu_s": status.get("cpu_s")})
    return found


def tstr_key(record: dict[str, Any]) -> str | None:
    """The record's train-on-synthetic key (utility/tstr_<metric>), if it has one."""
    return next((k for k in record if k.startswith("utility/tstr_")), None)


def section(found: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """docs/table.md's losses section: per table, each loss's mean (and spread) over its seeds."""
    if not found:
        return ["## The losses on tables", "", "Not run yet: `python scripts/table_losses.py`.", ""]
    lines = ["## The losses on tables", "",
             "Each loss at the table defaults (`gan-lab train data=table data.target=... loss=<loss> seed=<k>`, "
             "then `gan-lab eval`), on the benchmark's training split with gan-lab's own held-out 20%: 5,000 "
             "rows scored against the held-out rows. Mean over the seeds, [min, max] beside it. Coverage: the "
             "share of the training rows' categories (and category pairs) the rows hold; DCR: the median "
             "distance to the closest training record (synthetic rows beside held-out real ones: a synthetic "
             "median far below the held-out one means copying). Made by `python scripts/table_losses.py`.", ""]
    for table, losses in found.items():
        first = next(iter(losses.values()))[0]
        tstr = tstr_key(first)
        columns = [*COLUMNS.values(), *(["TSTR " + tstr.removeprefix("utility/tstr_")] if tstr else []),
                   "CPU s", "seeds"]
        lines += [f"### {table}", "", "| loss | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for loss, records in losses.items():
            cells = []
            for key in [*COLUMNS, *([tstr] if tstr else [])]:
                values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
                cells.append(f"{sum(values) / len(values):.3f} [{min(values):.3f}, {max(values):.3f}]"
                             if values else "-")
            cpu = [r["cpu_s"] for r in records if r.get("cpu_s") is not None]
            cells += [f"{sum(cpu) / len(cpu):.0f}" if cpu else "-", str(len(records))]
            lines.append(f"| {loss} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def main() -> None:
    """Train and evaluate what the cache lacks; print the section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"the benchmark's cache ({DEFAULT_CACHE})")
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated table names")
    parser.add_argument("--losses", default=",".join(LOSSES), help="comma-separated losses")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    args = parser.parse_args()
    for table in args.tables.split(","):
        if not (args.cache / "tables" / table / "table.json").exists():
            sys.exit(f"error: no table {table} in {args.cache / 'tables'}: run scripts/table_bench.py --setup and "
                     f"one benchmark run first (they write the tables' splits).")
        for loss in args.losses.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                try:
                    run_one(args.cache, table, loss, seed)
                except subprocess.CalledProcessError as error:
                    sys.exit(f"error: {' '.join(map(str, error.cmd[:4]))} ... failed:\n{error.stderr[-3000:]}")
    print("\n".join(section(results(folder(args.cache), tuple(args.tables.split(","))))))


if __name__ == "__main__":
    main()
