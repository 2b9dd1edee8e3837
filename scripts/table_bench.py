"""gan-lab's table defaults against CTGAN at its defaults, side by side on public tables -> docs/table.md (#33).

Each (system, table, seed) fits on a table's fixed training split, samples as many rows as that split,
and is scored by the same code against the held-out split: SDMetrics' QualityReport (its score and
its Column Shapes and Column Pair Trends properties) and TSTR (HistGradientBoosting at scikit-learn's
defaults, random_state 0, trained on the synthetic rows, scored on the held-out rows: F1-macro for a
class target, R^2 for a numeric one) beside the same model trained on the real training split. The
CPU time is the process time of the fit (transform fitting included), one thread.

ctgan, rdt and copulas (sdmetrics' dependency) are under the Business Source License: gan-lab neither
depends on them nor imports them. They live only in the benchmark's own venv, which --setup makes;
everything that needs them (and pandas, scikit-learn, the tables' packages) runs there, in
scripts/table_bench_worker.py, as a subprocess reading and writing CSV and JSON.

Each result is cached as JSON under the cache folder, keyed by the system's version, its settings,
the split's bytes, the seed and the scoring packages' versions: a later run reuses CTGAN's results
(hours of CPU) and only fits what is missing.

    python scripts/table_bench.py --setup                                  # the venv + ctgan, sdmetrics, tables
    nice -n 19 python scripts/table_bench.py --systems ctgan               # fits what the cache lacks (hours)
    python scripts/table_bench.py --systems ctgan,gan-lab --doc docs/table.md   # from a clean commit

The cache (default ~/.cache/gan-lab/table-bench, or --cache) holds venv/, tables/<table>/ (the
split, written once), runs/<table>/<system>-seed<k>-<key>/ (synthetic.csv, fit.json) and
results/<table>/<system>-seed<k>-<key>.json.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import resource
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from generated_doc import cpu_name, made_at, source_state, write_keeping_notes  # scripts/generated_doc.py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "table_bench_worker.py"
DEFAULT_CACHE = Path(os.environ.get("GAN_LAB_TABLE_BENCH", Path.home() / ".cache" / "gan-lab" / "table-bench"))
TABLES = ("diamonds", "penguins", "txhousing")  # the worker's TABLES, in the doc's order
# What the venv gets; pinned, since a result's cache key names these versions.
PACKAGES = ("ctgan==0.12.1", "sdmetrics==0.32.0", "scikit-learn==1.9.1", "pandas==2.3.3", "plotnine==0.15.9",
            "palmerpenguins==0.1.6")
SCORING = 1  # bump when the worker's score() changes meaning: cached fits are then scored again
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
GAN_LAB = [sys.executable, "-m", "gan_lab"]  # the CLI of the gan-lab this script sits in (its venv's python)


def ganlab_train(table_dir: Path, info: dict[str, Any], seed: int, run_dir: Path, *overrides: str) -> list[str]:
    """`gan-lab train` on a benchmark table's training split at the table defaults: its discrete columns named,
    one thread on the CPU, no metrics while training (the bench and `gan-lab eval` score afterwards), then
    `overrides`."""
    return [*GAN_LAB, "train", "data=table", f"data.path={table_dir / 'train.csv'}",
            f"data.discrete=[{','.join(info['discrete'])}]", "metrics=false", f"seed={seed}", "threads=1",
            "device=cpu", f"hydra.run.dir={run_dir}", *overrides]


class Bench:
    """The benchmark's venv and cache folder, and the worker steps run in that venv."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.python = cache / "venv" / "bin" / "python"

    def worker(self, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run one worker step in the venv with one thread; its JSON result (the last stdout line)."""
        if not self.python.exists():
            sys.exit(f"error: no benchmark venv at {self.python.parent.parent}: run `python {sys.argv[0]} --setup"
                     f"{'' if self.cache == DEFAULT_CACHE else f' --cache {self.cache}'}` first.")
        done = subprocess.run([str(self.python), str(WORKER), *args], capture_output=True, text=True,
                              env={**os.environ, **ONE_THREAD, **(env or {})})
        if done.returncode != 0:
            sys.exit(f"error: worker step {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def table(self, name: str) -> tuple[Path, dict[str, Any]]:
        """The table's folder (its fixed split, written on first use) and its description."""
        folder = self.cache / "tables" / name
        return folder, self.worker("prepare", name, str(folder))


def setup(cache: Path, torch_spec: str) -> None:
    """Make the benchmark's venv under cache and install the pinned packages (ctgan, sdmetrics, the tables)."""
    venv = cache / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install"]
    # torch first, so a CPU-only wheel (a path or an index) can be chosen instead of the CUDA one ctgan would pull
    subprocess.run([*pip, *shlex.split(torch_spec)], check=True)
    subprocess.run([*pip, *PACKAGES], check=True)
    print(f"benchmark venv ready: {venv}")


def key_of(*parts: Any) -> str:
    """A short, stable hash of JSON-able parts: the cache key's file-name part."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def ctgan_runner(drop_missing_numbers: bool) -> Callable[..., dict[str, Any]]:
    """CTGAN at its defaults in the venv (optionally on the training rows that have all their numbers)."""
    def run(bench: Bench, table_dir: Path, info: dict[str, Any], seed: int, out: Path) -> dict[str, Any]:
        env = {"TABLE_BENCH_DROP_MISSING_NUMBERS": "1" if drop_missing_numbers else "0"}
        return bench.worker("ctgan", str(table_dir), str(seed), str(out), env=env)
    return run


def ganlab_runner(overrides: tuple[str, ...] = ()) -> Callable[..., dict[str, Any]]:
    """gan-lab at its table defaults (plus `overrides`) through its CLI: `gan-lab train data=table ...`, then
    `gan-lab sample ...`.

    Writes out/synthetic.csv with as many rows as the training split. The fit's CPU time is the one the
    run records in status.json (cpu_s: reading the table, fitting its transform, building and training),
    as CTGAN's is timed around fit(): Python's start and imports are left out of both, and recorded
    beside it (process_cpu_s, the whole train command). metrics=false: gan-lab's own evaluation during
    training is off (the bench scores both systems with the same code afterwards).
    """
    def run(bench: Bench, table_dir: Path, info: dict[str, Any], seed: int, out: Path) -> dict[str, Any]:
        run_dir = out / "run"
        # data.held_out=0: the bench's training split is already what CTGAN fits on; gan-lab's own held-out
        # share (0.2 by default) would train it on fewer rows than CTGAN
        train = ganlab_train(table_dir, info, seed, run_dir, "data.held_out=0", *overrides)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(train, check=True, env={**os.environ, **ONE_THREAD})
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([*GAN_LAB, "sample", f"checkpoint={run_dir}", f"n={info['train_rows']}",
                        f"out={out / 'synthetic.csv'}"], check=True, env={**os.environ, **ONE_THREAD})
        status = json.loads((run_dir / "status.json").read_text())
        fit = {"seed": seed, "fit_rows": info["train_rows"], "version": ganlab_version(),
               "overrides": list(overrides), "fit_cpu_s": status["cpu_s"],
               "process_cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}
        (out / "fit.json").write_text(json.dumps(fit, indent=1) + "\n")
        return fit
    return run


def ganlab_version() -> str:
    """What gan-lab's side runs: the git trees of gan_lab/ and conf/ (the code and configs a fit reads), with
    -dirty when either has uncommitted changes. A commit touching only docs, scripts or tests keeps the key, so
    its fits are reused; one touching the package or its configs fits again."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()
    trees = "+".join(git("rev-parse", f"HEAD:{path}")[:12] for path in ("gan_lab", "conf"))
    return trees + ("-dirty" if git("status", "--porcelain", "--", "gan_lab", "conf") else "")


# name -> (runner, label in the doc, settings that enter the cache key, whether it runs only where ctgan refuses)
SYSTEMS: dict[str, tuple[Callable[..., dict[str, Any]], str, dict[str, Any], bool]] = {
    "ctgan": (ctgan_runner(False), "CTGAN", {"ctgan": "CTGAN() defaults", "threads": 1}, False),
    "ctgan-dropna": (ctgan_runner(True), "CTGAN, rows with a missing number dropped",
                     {"ctgan": "CTGAN() defaults", "threads": 1, "drop_missing_numbers": True}, True),
    "gan-lab": (ganlab_runner(), "gan-lab", {"gan-lab": "data=table defaults", "threads": 1, "fit_cpu": "run"},
                False),
}


def result_for(bench: Bench, system: str, table: str, seed: int, versions: dict[str, str],
               fit_missing: bool = True) -> dict[str, Any] | None:
    """The cached result of (system, table, seed), fitting and scoring what the cache lacks; None if not run.

    With fit_missing False nothing is fitted or scored: a result the cache lacks is None.
    """
    runner, _, settings, only_if_refused = SYSTEMS[system]
    table_dir, info = bench.table(table)
    has_missing_numbers = any(c not in info["discrete"] for c in info["missing"])
    if only_if_refused and not has_missing_numbers:
        return None
    version = ganlab_version() if system.startswith("gan-lab") else {p: versions[p] for p in ("ctgan", "torch")}
    fit_key = key_of(system, version, settings, info["digest"], seed)
    scoring = {"scoring": SCORING, **{p: versions[p] for p in ("sdmetrics", "scikit-learn", "pandas")}}
    result_path = bench.cache / "results" / table / f"{system}-seed{seed}-{key_of(fit_key, scoring)}.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    if not fit_missing:
        return None
    run_dir = bench.cache / "runs" / table / f"{system}-seed{seed}-{fit_key}"
    if (run_dir / "fit.json").exists():  # fitted before, scored with other versions: score again only
        fit = json.loads((run_dir / "fit.json").read_text())
    else:
        print(f"fitting {system} on {table}, seed {seed} ...", flush=True)
        fit = runner(bench, table_dir, info, seed, run_dir)
    scores = {} if "refused" in fit else bench.worker("score", str(table_dir), str(run_dir / "synthetic.csv"),
                                                       str(run_dir / "score.json"))
    result = {"system": system, "table": table, "seed": seed, "version": version, "settings": settings,
              "split": info["digest"], "scoring": scoring, "fit": fit, "scores": scores,
              "cpu": cpu_name(), "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"  {system} {table} seed {seed}: " + (fit["refused"] if "refused" in fit else
          f"quality {scores['quality']:.3f}, TSTR {scores['tstr']:.3f}, fit {fit['fit_cpu_s']:.0f} CPU s"), flush=True)
    return result


def mean(values: list[float]) -> float:
    """The arithmetic mean of a non-empty list."""
    return sum(values) / len(values)


def table_section(info: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One table's heading, description and results (a row per system and seed, then each system's means)."""
    missing = ", ".join(f"{c} {n}" for c, n in info["missing"].items()) or "none"
    metric = "F1-macro" if info["task"] == "classification" else "R^2"
    lines = [f"## {info['name']}", "",
             f"`{info['source']}`: {info['rows']:,} rows, {len(info['columns'])} columns "
             f"({len(info['discrete'])} discrete: {', '.join(info['discrete'])}); missing values: {missing}. "
             f"Held-out split {info['test_fraction']:.0%} ({info['test_rows']:,} rows, seed {info['split_seed']}); "
             f"TSTR target `{info['target']}` ({info['task']}, {metric}).", "",
             "| system | seed | quality | shapes | pair trends | TSTR | TSTR of real | fit CPU s | transforms CPU s |",
             "|---|---|---|---|---|---|---|---|---|"]
    means, notes = [], []
    for system, results in rows.items():
        label = SYSTEMS[system][1]
        scored = [r for r in results if r["scores"]]
        refusals: dict[str, list[str]] = {}  # one row per distinct refusal, naming its seeds
        for r in results:
            if not r["scores"]:
                refusals.setdefault(r["fit"]["refused"], []).append(str(r["seed"]))
        lines += [f"| {label} | {', '.join(seeds)} | refused: {why} | | | | | | |" for why, seeds in refusals.items()]
        fit_rows = sorted({r["fit"]["fit_rows"] for r in scored if "fit_rows" in r["fit"]})
        if fit_rows and fit_rows != [info["train_rows"]]:
            notes.append(f"{label}: fitted on {', '.join(f'{n:,}' for n in fit_rows)} of the {info['train_rows']:,} "
                         f"training rows, scored against the whole held-out split (its missing values included).")
        for r in scored:
            s, fit = r["scores"], r["fit"]
            transforms = "" if fit.get("transform_cpu_s") is None else f"{fit['transform_cpu_s']:.1f}"
            lines.append(f"| {label} | {r['seed']} | {s['quality']:.3f} | {s['shapes']:.3f} | {s['pair_trends']:.3f} "
                         f"| {s['tstr']:.3f} | {s['tstr_real']:.3f} | {fit['fit_cpu_s']:.1f} | {transforms} |")
        if scored:
            def m(field: str) -> float:
                return mean([r["scores"][field] for r in scored])
            transform = [r["fit"]["transform_cpu_s"] for r in scored if r["fit"].get("transform_cpu_s") is not None]
            means.append((system, {f: m(f) for f in ("quality", "tstr")},
                          mean([r["fit"]["fit_cpu_s"] for r in scored])))
            lines.append(f"| **{label}** | **mean of {len(scored)}** | {m('quality'):.3f} | {m('shapes'):.3f} "
                         f"| {m('pair_trends'):.3f} | {m('tstr'):.3f} | {m('tstr_real'):.3f} "
                         f"| {means[-1][2]:.1f} | {f'{mean(transform):.1f}' if transform else ''} |")
    if info["missing"].get(info["target"]):
        notes.append(f"TSTR leaves out the rows whose target `{info['target']}` is missing, on both sides.")
    notes += goal_lines(dict((s, (v, cpu)) for s, v, cpu in means))
    return lines + [line for note in notes for line in ("", note)] + [""]


def goal_lines(means: dict[str, tuple[dict[str, float], float]]) -> list[str]:
    """Issue #33's goal on one table: gan-lab's quality >= CTGAN's, TSTR within 0.02, at <= 1/3 of its CPU time."""
    reference = "ctgan" if "ctgan" in means else "ctgan-dropna" if "ctgan-dropna" in means else None
    if "gan-lab" not in means or reference is None:
        return ["Goal (quality >= CTGAN's, TSTR within 0.02 of CTGAN's, <= 1/3 of its CPU time): not measured "
                "yet (gan-lab's side has not run)."]
    (ours, our_cpu), (theirs, their_cpu) = means["gan-lab"], means[reference]
    checks = {"quality": ours["quality"] >= theirs["quality"], "TSTR": ours["tstr"] >= theirs["tstr"] - 0.02,
              "CPU": our_cpu <= their_cpu / 3}
    return [f"Goal against {SYSTEMS[reference][1]}: quality {ours['quality']:.3f} vs {theirs['quality']:.3f}, "
            f"TSTR {ours['tstr']:.3f} vs {theirs['tstr']:.3f}, CPU {our_cpu / their_cpu:.2f}x theirs: "
            + ("met." if all(checks.values()) else
               "short on " + ", ".join(name for name, ok in checks.items() if not ok) + ".")]


def write_doc(path: Path, results: dict[str, dict[str, list[dict[str, Any]]]], infos: dict[str, dict[str, Any]],
              versions: dict[str, str], commit: str, dirty: bool, cache: Path = DEFAULT_CACHE) -> None:
    """docs/table.md: a section per table and the losses' section (scripts/table_losses.py), from the cache,
    keeping its hand-written Notes."""
    command = "python scripts/table_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = ["# Tables: gan-lab against CTGAN, side by side", "",
             f"Generated by `{command}` from {made_at(commit, dirty)}; results cached on {cpu_name()}. "
             f"One thread each, seeds as listed; each system fits on the training split and samples as many "
             f"rows. quality, shapes and pair trends: SDMetrics {versions.get('sdmetrics')} QualityReport "
             f"(score, Column Shapes, Column Pair Trends) of the synthetic rows against the held-out split. "
             f"TSTR: scikit-learn {versions.get('scikit-learn')} HistGradientBoosting (defaults, random_state 0) "
             f"trained on the synthetic rows, scored on the held-out split; TSTR of real: the same model trained "
             f"on the real training split. fit CPU s: process time of the fit, transforms included (CTGAN: around "
             f"fit(); gan-lab: the run's cpu_s in status.json, reading the table to the last step, metrics=false; "
             f"Python's start and imports left out of both); transforms "
             f"CPU s: the part spent fitting and applying the data transformer. gan-lab: `gan-lab train data=table` "
             f"at its defaults (data.held_out=0: the split is the benchmark's). CTGAN {versions.get('ctgan')} "
             f"(torch {versions.get('torch')}) at its defaults: `CTGAN()`, 300 epochs, discrete columns named.", ""]
    for table, rows in results.items():
        lines += table_section(infos[table], rows)
    from table_losses import folder, results as loss_results, section  # scripts/table_losses.py: #33 item 7

    lines += section(loss_results(folder(cache)))
    write_keeping_notes(path, lines)


def main() -> None:
    """Parse the command line; set up the venv, fit and score what the cache lacks, write the doc."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup", action="store_true", help="make the benchmark venv and install its packages")
    parser.add_argument("--torch", default="torch", help="pip argument(s) for torch, installed first by --setup "
                        "(e.g. a CPU wheel's path, or 'torch --index-url https://download.pytorch.org/whl/cpu')")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"venv and results (default {DEFAULT_CACHE})")
    parser.add_argument("--systems", default="ctgan", help=f"comma-separated, of {', '.join(SYSTEMS)} "
                        "(ctgan-dropna runs where ctgan is listed and a table has missing numbers)")
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated table names")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--doc", type=Path, help="write this generated doc (docs/table.md) from the cache")
    parser.add_argument("--cached-only", action="store_true", help="fit nothing: use only what the cache holds")
    parser.add_argument("--gan-lab-overrides", default="", help="space-separated gan-lab overrides for a trial "
                        "beside the defaults (e.g. 'loss.n_critic=1'): its own label and cache key")
    parser.add_argument("--allow-dirty", action="store_true", help="write the doc from a tree with uncommitted changes")
    args = parser.parse_args()
    if args.gan_lab_overrides:  # a trial beside the defaults: its own system, label and cache key
        overrides = tuple(args.gan_lab_overrides.split())
        trial = f"gan-lab-trial-{key_of(overrides)[:8]}"  # a file-name-safe name
        SYSTEMS[trial] = (
            ganlab_runner(overrides), f"gan-lab {args.gan_lab_overrides}",
            {**SYSTEMS["gan-lab"][2], "overrides": list(overrides)}, False)
        args.systems = ",".join(s if s != "gan-lab" else trial for s in args.systems.split(","))
    if args.setup:
        return setup(args.cache, args.torch)
    commit, dirty = source_state(args.allow_dirty) if args.doc else ("", False)
    systems = [s for s in args.systems.split(",") if s]
    if "ctgan" in systems and "ctgan-dropna" not in systems:
        systems.insert(systems.index("ctgan") + 1, "ctgan-dropna")
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        sys.exit(f"error: unknown system(s) {', '.join(unknown)}: choose from {', '.join(SYSTEMS)}")
    bench = Bench(args.cache)
    versions = bench.worker("versions")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    infos = {}
    for table in args.tables.split(","):
        infos[table] = bench.table(table)[1]
        for system in systems:
            for seed in (int(s) for s in args.seeds.split(",")):
                result = result_for(bench, system, table, seed, versions, fit_missing=not args.cached_only)
                if result is not None:
                    results.setdefault(table, {}).setdefault(system, []).append(result)
    if args.doc:
        write_doc(args.doc, results, infos, versions, commit, dirty, args.cache)
        print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
