"""What `gan-lab report <sweep dir>` shows: one row per run, the swept keys as columns, sortable by any metric.

Reads each run's `status.json` (written by the job: its state, overrides and final
scalars; Hydra's `.hydra/overrides.yaml` when there is none) and `config_resolved.yaml` (the
config that ran, so a value that came from an interpolation, such as a data set's recommended
lambda_gp, shows as the number it was), prints a rich table, and
writes report.csv, report.md and report.png (chosen metrics against a swept key, one
line per combination of the other swept keys, error bars over seeds). Failed, interrupted
and still-running jobs get a row of their own; they are never dropped. The runs'
`gan-lab eval` records (eval.json, eval_drs.json, ...) follow as a second table, one row
per evaluation, and in report_eval.csv.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.markup import escape
from rich.table import Table

from gan_lab.errors import GanLabError
from gan_lab.runs.files import atomic_writer
from gan_lab.runs.status import read_status

STYLE = {"completed": "green", "failed": "bold red", "interrupted": "yellow", "running": "cyan", "stopped": "magenta",
         "unknown": "dim"}
# Shown by default after the objective and any metrics/*: scalars every run has (columns=all: every one).
BASIC = ["critic/wasserstein_estimate", "step", "time/seconds"]
SEED = "seed"


@dataclass
class Run:
    """One run directory as the report sees it."""

    path: Path
    name: str  # the job number of a sweep, or the path below the report's root
    status: str  # running | completed | failed | interrupted | unknown (no status.json)
    params: dict[str, str]  # override key -> value as typed on the command line (+ resolved keys that differ)
    metrics: dict[str, float] = field(default_factory=dict)
    objective: str | None = None
    error: str = ""
    resolved: dict[str, str] = field(default_factory=dict)  # the config that ran, flattened
    diagnosis: str = ""  # what the run's diagnosis named (gan_lab.training.diagnosis): "none", or its episodes


def load_run(path: Path, root: Path) -> Run:
    """The run's status, overrides and final scalars."""
    status = read_status(path) or {}
    overrides = status.get("overrides")
    if overrides is None:  # a run that wrote no status: Hydra's record of its overrides
        file = path / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(file)) if file.is_file() else []
    params = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if sep and not key.startswith("~"):
            params[key.lstrip("+")] = value
    relative = path.relative_to(root).as_posix() if path != root else path.name
    head = path.name.split("_", 1)[0]
    name = head if head.isdigit() and path.parent == root else relative
    metrics = {k: float(v) for k, v in (status.get("metrics") or {}).items() if _is_number(v)}
    objective = next(iter(status.get("objective") or {}), None)
    diagnosis = status.get("diagnosis") if isinstance(status.get("diagnosis"), dict) else {}
    return Run(path, name, status.get("status", "unknown"), params, metrics, objective, status.get("error") or "",
               _resolved(path), str(diagnosis.get("summary") or ""))


def _resolved(path: Path) -> dict[str, str]:
    # config_resolved.yaml, written when the run's training started (absent before, and in older runs)
    from gan_lab.runs.rundirs import RESOLVED

    file = path / RESOLVED
    if not file.is_file():
        return {}
    flat: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = str(node)

    walk(OmegaConf.to_container(OmegaConf.load(file)), "")
    return flat


def load_evaluations(runs: list[Run]) -> list[Run]:
    """Each run's `gan-lab eval` records (eval*.json in its directory), one row each, the plain one first."""
    from gan_lab.evaluation.evaluate import EVAL_SEED, evaluation_label

    found = []
    for run in runs:
        for file in sorted(run.path.glob("eval*.json"), key=lambda f: (f.name != "eval.json", f.name)):
            try:
                record = json.loads(file.read_text())
            except (OSError, ValueError):
                continue  # not an evaluation record (nor readable): not gan-lab eval's
            if not isinstance(record, dict) or "checkpoint" not in record:
                continue
            # older records lack "rejection" (there was none); the label is what the record says, whatever its name
            label = evaluation_label(str(record["checkpoint"]), record.get("seed", EVAL_SEED),
                                     str(record.get("rejection", "none")))
            metrics = {k: float(v) for k, v in record.items() if "/" in k and _is_number(v)}
            found.append(Run(file, run.name, label, run.params, metrics))
    return found


def evaluation_columns(evaluations: list[Run]) -> list[str]:
    """metrics/* of the evaluations, then the share of samples that are copies of a training image
    (memorisation, in pixels and features), then the rejection sampler's acceptance rate."""
    present = {k for run in evaluations for k in run.metrics}
    return (sorted(k for k in present if k.startswith("metrics/"))
            + sorted(k for k in present if k.startswith("memorisation/") and k.endswith("/copies"))
            + sorted(k for k in present if k.startswith("rejection/")))


def add_resolved_keys(runs: list[Run]) -> None:
    """Add to each run's params the resolved values that differ between runs and that no override
    names, e.g. loss.lambda_gp in a sweep over data sets that each recommend their own."""
    named = {key for run in runs for key in run.params}
    keys = dict.fromkeys(key for run in runs for key in run.resolved)
    for key in keys:
        hidden = key.startswith("_") or "._" in key or key.startswith("data.recommended.")  # targets; the source
        covered = key in named or any(key.startswith(f"{name}.") for name in named)  # shown, or its group is
        if hidden or covered or len({run.resolved[key] for run in runs if key in run.resolved}) < 2:
            continue
        for run in runs:
            if key in run.resolved:
                run.params[key] = run.resolved[key]


def swept_keys(runs: list[Run]) -> list[str]:
    """Override keys whose values differ between runs (all override keys when none differ)."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.params if k not in keys]
    varying = [k for k in keys if len({run.params.get(k) for run in runs}) > 1]
    return varying or keys


def metric_columns(runs: list[Run], asked: str | None) -> list[str]:
    """The metrics to show: asked for (comma list, or all), else objective, metrics/*, basics."""
    present: list[str] = []
    for run in runs:
        present += [k for k in run.metrics if k not in present]
    if asked == "all":
        return present
    if asked:
        wanted = [c.strip() for c in asked.split(",") if c.strip()]
        _check_names(wanted, present, "columns")
        return wanted
    first = [run.objective for run in runs if run.objective]
    wanted = first + sorted(k for k in present if k.startswith("metrics/")) + BASIC
    return list(dict.fromkeys(k for k in wanted if k in present))


def sort_runs(runs: list[Run], key: str | None) -> list[Run]:
    """Sorted by a metric or swept key (`-key`: descending); runs without a value go last."""
    if not key:
        return runs
    descending, name = key.startswith("-"), key.lstrip("-")

    def value(run: Run) -> Any:
        raw = run.metrics.get(name, run.params.get(name))
        return float(raw) if _is_number(raw) else raw

    have = [r for r in runs if value(r) is not None and not (isinstance(value(r), float) and math.isnan(value(r)))]
    if not have and runs:
        known = sorted({k for r in runs for k in (*r.metrics, *r.params)})
        raise GanLabError(f"gan-lab report: sort={key!r}: no run has a value for {name!r}. "
                          f"Sort by one of: {', '.join(known)} (a leading - sorts descending).")
    kinds = {type(value(r)) for r in have}
    order = sorted(have, key=lambda r: value(r) if len(kinds) == 1 else str(value(r)), reverse=descending)
    return order + [r for r in runs if r not in have]


def _cell(run: Run, column: str) -> str:
    if column in run.params:
        return run.params[column]
    value = run.metrics.get(column)
    if value is None:
        return "—"
    return f"{int(value)}" if column == "step" else f"{value:.4g}"


def diagnosed(runs: list[Run]) -> list[str]:
    """["diagnosis"] when some run's status names its diagnosis (runs trained before it have none), else []."""
    return ["diagnosis"] if any(run.diagnosis for run in runs) else []


def rows(runs: list[Run], keys: list[str], metrics: list[str]) -> list[list[str]]:
    """The table's cells, row by row: run, status, swept keys, metrics, the diagnosis (when any), error."""
    return [[run.name, run.status, *[run.params.get(k, "—") for k in keys], *[_cell(run, m) for m in metrics],
             *[run.diagnosis or "—" for _ in diagnosed(runs)], run.error] for run in runs]


def rich_tables(runs: list[Run], keys: list[str], metrics: list[str], width: int,
                second: str = "status") -> list[Table]:
    """The report as rich tables no wider than `width`: the columns that do not fit go to a further table.

    Every table starts with the run column; a number is never folded or cut, and headers drop
    the metrics/ prefix and break after a '/' to stay narrow. The error column (only when a run
    has one) comes last.
    """
    cells = rows(runs, keys, metrics)
    styles = {1: "", **{2 + i: "cyan" for i in range(len(keys))}}
    headers = ["run", second, *keys, *(m.removeprefix("metrics/") for m in metrics), *diagnosed(runs)]

    def layout(wrap: bool) -> list[tuple[int, str, int]]:  # (index in a row, header, width) per column
        columns = []
        for i, header in enumerate(headers):
            data = max((len(row[i]) for row in cells), default=1)
            header = _wrap_name(header, max(data, 12)) if wrap else header
            columns.append((i, header, max(data, *(len(line) for line in header.splitlines()))))
        return columns

    # headers on one line when everything fits the width (a wide terminal, a log); else broken to stay narrow
    columns = layout(wrap=False)
    error_room = 23 if any(run.error for run in runs) else 0
    if sum(w + 3 for _, _, w in columns) + 1 + error_room > width:
        columns = layout(wrap=True)
    run_column, blocks, used = columns[0], [[columns[0]]], columns[0][2] + 4  # a column takes width + 3, the edge 1
    for column in columns[1:]:
        if used + column[2] + 3 > width and len(blocks[-1]) > 1:
            blocks.append([run_column])
            used = run_column[2] + 4
        blocks[-1].append(column)
        used += column[2] + 3
    errors = any(run.error for run in runs)
    if errors and width - used < 23:  # the error column wants 20 characters at least
        blocks.append([run_column])
        used = run_column[2] + 4

    tables = []
    for number, block in enumerate(blocks):
        table = Table(title=None if number == 0 else f"(continued, {number + 1}/{len(blocks)})", title_justify="left")
        for i, header, column_width in block:
            numeric = 2 + len(keys) <= i < 2 + len(keys) + len(metrics)
            table.add_column(header, style="bold" if i == 0 else styles.get(i, ""), justify="right" if numeric else "left",
                             width=min(column_width, max(1, width - 4)), overflow="fold")  # >= its widest cell
        if errors and number == len(blocks) - 1:
            table.add_column("error (first sentence; all of it in report.md)", overflow="fold",
                             width=max(20, min(80, width - used - 3)))
        for run, row in zip(runs, cells):
            shown = [f"[{STYLE[run.status]}]{run.status}[/]" if i == 1 and run.status in STYLE else escape(row[i])
                     for i, _, _ in block]
            if errors and number == len(blocks) - 1:
                shown.append(escape(run.error.split(". ", 1)[0]))
            table.add_row(*shown)
        tables.append(table)
    return tables


def _wrap_name(name: str, width: int) -> str:
    # a long header on several lines, broken after a / _ or . (critic/ | wasserstein_ | estimate)
    parts = re.findall(r"[^/_.]*[/_.]?", name)
    lines = [""]
    for part in filter(None, parts):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def write_csv(runs: list[Run], keys: list[str], path: Path, second: str = "status") -> None:
    """Every metric of every run, plus its directory (or evaluation record) and error."""
    metrics = metric_columns(runs, "all")
    with atomic_writer(path) as tmp, tmp.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["run", second, *keys, *metrics, *diagnosed(runs), "error", "path"])
        for run in runs:
            writer.writerow([run.name, run.status, *[run.params.get(k, "") for k in keys],
                             *[run.metrics.get(m, "") for m in metrics], *[run.diagnosis for _ in diagnosed(runs)],
                             run.error, str(run.path)])


def write_markdown(runs: list[Run], keys: list[str], metrics: list[str], path: Path, title: str,
                   evaluations: list[Run] = ()) -> None:
    """The table as a Markdown pipe table, and the evaluations' table after it."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    header = ["run", "status", *keys, *metrics, *diagnosed(runs), "error"]
    text = [f"# {title}", "", line(header), "|" + "---|" * len(header)]
    text += [line(cells) for cells in rows(runs, keys, metrics)]
    if evaluations:
        columns = evaluation_columns(evaluations)
        header = ["run", "evaluation", *keys, *columns]
        text += ["", "## Evaluations (gan-lab eval)", "", line(header), "|" + "---|" * len(header)]
        text += [line(cells[:-1]) for cells in rows(evaluations, keys, columns)]  # evaluations have no error
    with atomic_writer(path) as tmp:
        tmp.write_text("\n".join(text) + "\n")


def plot_runs(runs: list[Run], keys: list[str], x: str, metrics: list[str], path: Path) -> None:
    """Each metric against x: one line per combination of the other swept keys, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    others = [k for k in keys if k not in (x, SEED)]
    done = [r for r in runs if r.status == "completed" and _is_number(r.params.get(x))]
    bad = [r for r in runs if r.status != "completed" and _is_number(r.params.get(x))]
    lines: dict[str, dict[float, list[Run]]] = {}
    for run in done:
        label = ", ".join(f"{k}={run.params.get(k, '—')}" for k in others) or "all runs"
        lines.setdefault(label, {}).setdefault(float(run.params[x]), []).append(run)
    xs = [float(r.params[x]) for r in done + bad]
    log_x = bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 100

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, by_x in lines.items():
            points = sorted(by_x.items())
            values = [[r.metrics[metric] for r in group if math.isfinite(r.metrics.get(metric, math.nan))]
                      for _, group in points]
            kept = [(xv, v) for (xv, _), v in zip(points, values) if v]
            if not kept:
                continue
            means = [statistics.fmean(v) for _, v in kept]
            spreads = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in kept]  # over seeds
            ax.errorbar([xv for xv, _ in kept], means, yerr=spreads, marker="o", capsize=3, label=label)
        if log_x:
            ax.set_xscale("log")
        if bad:  # jobs that failed or have not finished: red crosses along the bottom, not dropped
            ax.autoscale_view()
            bottom = ax.get_ylim()[0]
            ax.plot([float(r.params[x]) for r in bad], [bottom] * len(bad), "x", color="red", markersize=9,
                    clip_on=False, label="failed / not finished", zorder=3)
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        with atomic_writer(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def default_x(runs: list[Run], keys: list[str]) -> str | None:
    """The first swept key (other than the seed) whose values are all numbers."""
    for key in keys:
        values = [r.params[key] for r in runs if key in r.params]
        if key != SEED and values and all(_is_number(v) for v in values) and len(set(values)) > 1:
            return key
    return None


def latest_sweep() -> Path:
    """The newest sweep under outputs/multirun, for `gan-lab report` without a directory."""
    sweeps = [p for p in Path("outputs/multirun").glob("*") if p.is_dir()]
    if not sweeps:
        raise GanLabError("gan-lab report: give the sweep directory, e.g. gan-lab report outputs/multirun/<date_time> "
                          "(there is no outputs/multirun here to take the newest from).")
    return max(sweeps, key=lambda p: p.stat().st_mtime)


def plot_plan(runs: list[Run], keys: list[str], plot: str | None, x: str | None) -> tuple[str, list[str]] | None:
    """What report.png shows for plot= and x= (None: the defaults): (the key on x, the metrics), or None for no plot."""
    asked = plot
    if asked == "none":
        return None
    given_x, x = x, x or default_x(runs, keys)
    if x is None:
        if asked or given_x:
            raise GanLabError("gan-lab report: no swept key with numeric values to plot against; name one with x=KEY "
                              f"(swept keys: {', '.join(keys) or 'none'}).")
        return None
    if not any(_is_number(r.params.get(x)) for r in runs):
        raise GanLabError(f"gan-lab report: x={x} has no numeric values in these runs. Swept keys: {', '.join(keys)}.")
    present = metric_columns(runs, "all")
    if asked:
        plotted = [m.strip() for m in asked.split(",") if m.strip()]
        _check_names(plotted, present, "plot")
    else:  # the objective and the headline metrics, as far as the runs have them
        plotted = [m for m in dict.fromkeys([*(r.objective for r in runs if r.objective), "metrics/modes_covered",
                                             "critic/wasserstein_estimate"]) if m in present][:3]
    return (x, plotted) if plotted else None


def _check_names(wanted: list[str], present: list[str], option: str) -> None:
    unknown = [w for w in wanted if w not in present]
    if unknown:
        raise GanLabError(f"gan-lab report: {option}={','.join(wanted)}: no run has {', '.join(unknown)}. "
                          f"The runs have: {', '.join(present) or 'no metrics yet'}.")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
