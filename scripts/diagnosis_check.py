"""How often the live diagnosis fires on runs that end healthy, and misses runs that end collapsed -> docs/diagnosis.md.

Trains real `gan-lab train` runs (threads=1, under nice -n 19; a run already completed in --root is
reused), then replays each run's TensorBoard scalars through gan_lab.training.diagnosis.Diagnosis:
it reads nothing but those scalars, so the replay names what the live run named (the script checks
that it does, where the run was trained with the same thresholds). A run ended collapsed when its
final evaluation covers fewer than COLLAPSE_FRACTION of the modes, the rule the live check uses.

    python scripts/diagnosis_check.py                       # the default set below, seeds 0..4
    python scripts/diagnosis_check.py --seeds 2 --jobs 1 --root /tmp/diag_check --allow-dirty
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import statistics
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from generated_doc import cpu_name, made_at, source_state, write_keeping_notes  # scripts/generated_doc.py

from gan_lab.training import diagnosis as dx

# row -> overrides; the losses of docs/results.md (nonsaturating is docs/cures.md's baseline, "none"),
# and issue #25's example of a run that ends collapsed with nothing said
ROWS = {
    "minimax": ["loss=minimax"],
    "nonsaturating": ["loss=nonsaturating"],
    "hinge": ["loss=hinge"],
    "lsgan": ["loss=lsgan"],
    "wgan_gp": ["loss=wgan_gp"],
    "wgan_clip": ["loss=wgan_clip"],
    "r3gan": ["loss=r3gan"],
    "minimax_lr1e-3": ["loss=minimax", "optimizer.lr=1e-3"],
    # a Wasserstein critic with nothing keeping it Lipschitz: what the per-step rules are for
    "wgan_gp_lambda0": ["loss=wgan_gp", "loss.lambda_gp=0"],
    # a generator that barely learns against a fast critic: a critic that wins outright (issue #32's icon folder)
    "nonsaturating_g_frozen": ["loss=nonsaturating", "optimizer_generator.lr=1e-12", "optimizer_critic.lr=1e-2"],
}
BUILT_TO_FAIL = {"wgan_gp_lambda0", "nonsaturating_g_frozen"}  # failing by construction: counted apart from the healthy and collapsed runs
DEFAULT_ROWS = ["minimax", "nonsaturating", "hinge", "wgan_gp", "wgan_clip", "minimax_lr1e-3"]


def train_one(row: str, data: str, seed: int, root: Path) -> Path:
    """Train one run (unless --root already holds it, completed); its run directory."""
    run_dir = root / f"{data}_{row}_seed{seed}"
    status = run_dir / "status.json"
    if status.is_file() and json.loads(status.read_text()).get("status") in ("completed", "stopped"):
        print(f"{data:7s} {row:15s} seed {seed}: reused from {run_dir}", flush=True)
        return run_dir
    cmd = ["nice", "-n", "19", sys.executable, "-m", "gan_lab", "train", *ROWS[row], f"data={data}",
           f"seed={seed}", "device=cpu", "threads=1", "train.sample_every=1000000", f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    print(f"{data:7s} {row:15s} seed {seed}: exit {done.returncode} ({time.perf_counter() - started:.0f} s)",
          flush=True)
    return run_dir


def scalar_steps(run_dir: Path) -> list[tuple[int, dict[str, float]]]:
    """Every step's scalars from the run's event files, in step order, as the live diagnosis saw them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: dict[int, dict[str, float]] = defaultdict(dict)
    for file in sorted(run_dir.glob("events.out.tfevents.*")):
        events = EventAccumulator(str(file), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            if tag.startswith("diagnosis/") and tag != "diagnosis/sample_diversity":
                continue  # its own verdicts, not what it reads
            for event in events.Scalars(tag):
                steps[event.step][tag] = event.value
    return sorted(steps.items())


def replay(run_dir: Path, modes: bool = True) -> dx.Diagnosis:
    """The Diagnosis of the run's scalars; modes=False hides the mode metrics (the sample-diversity rule alone)."""
    loss = _resolved_loss(run_dir)
    diagnosis = dx.Diagnosis(_loss_class(loss), clipped=float(loss.get("clip", 0) or 0) > 0, images=False)
    for step, values in scalar_steps(run_dir):
        if not modes:
            values = {k: v for k, v in values.items() if not k.startswith("metrics/")}
        diagnosis.observe(step, values)
    return diagnosis


def margins(run_dir: Path) -> dict[str, float]:
    """The most extreme value each per-step rule saw hold PERSIST log steps in a row after the warm-up."""
    logs = [values for _, values in scalar_steps(run_dir) if "loss/critic" in values][dx.WARMUP:]
    wasserstein = _loss_class(_resolved_loss(run_dir)).wasserstein_critic

    def held(series: list[float], worst: Any) -> float:  # worst(window) over every PERSIST-long window
        windows = [series[i:i + dx.PERSIST] for i in range(len(series) - dx.PERSIST + 1)]
        return worst(windows) if windows else float("nan")

    found: dict[str, float] = {}
    tags = ["loss/critic", "loss/generator"] + (["critic/wasserstein_estimate"] if wasserstein else [])
    ratios = []
    for i, values in enumerate(logs):
        ratios.append(max(abs(values[t]) / max(1.0, statistics.median([abs(v[t]) for v in logs[:i]] or [0]))
                          for t in tags if t in values))
    found["runaway"] = held(ratios, lambda ws: max(min(w) for w in ws))
    if wasserstein:
        norms = [v.get("grad_norm/critic_input", float("nan")) for v in logs]
        found["input_grad_norm"] = held(norms, lambda ws: max(min(w) for w in ws))
    else:
        found["critic_loss"] = held([v["loss/critic"] for v in logs], lambda ws: min(max(w) for w in ws))
    if all("critic/r_t" in v for v in logs):  # the losses that declare undecided_at (runs from before #32: none)
        found["r_t"] = held([v["critic/r_t"] for v in logs], lambda ws: max(min(w) for w in ws))
    return found


def _loss_class(loss: dict) -> Any:
    """The Loss class a run's resolved loss node names, looked up among those conf/loss/ names (never imported)."""
    from gan_lab.losses import Loss
    from gan_lab.runs.rebuild import builders

    return builders("loss").get(loss.get("_target_"), Loss)  # unknown: the base class, which declares nothing


def _separation() -> str:
    """Each loss's separation threshold, as the docs' tables show it: 'nonsaturating 0.05, hinge 0.072, ...'."""
    from gan_lab.app.options import conf_options
    from gan_lab.runs.rebuild import builders
    from omegaconf import OmegaConf
    from importlib.resources import files

    shown = []
    for option in conf_options("loss"):
        target = OmegaConf.load(files("gan_lab.conf").joinpath("loss", f"{option}.yaml")).get("_target_")
        shown.append(f"{option} {builders('loss')[target].separated_below}")
    return ", ".join(shown)


def _resolved_loss(run_dir: Path) -> dict:
    from omegaconf import OmegaConf

    file = run_dir / "config_resolved.yaml"
    return dict(OmegaConf.to_container(OmegaConf.load(file))["loss"]) if file.is_file() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    parser.add_argument("--data", nargs="+", default=["ring8", "grid25"])
    parser.add_argument("--rows-for", nargs="*", default=[], metavar="DATA=ROW,ROW",
                        help="other rows for one data set, e.g. grid25=nonsaturating,wgan_gp")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--root", type=Path, default=Path("outputs/diagnosis_check"))
    parser.add_argument("--out", type=Path, default=Path("docs/diagnosis.md"))
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run from a tree with uncommitted changes (the doc then says so)")
    args = parser.parse_args()
    commit, dirty = source_state(args.allow_dirty)
    started = time.perf_counter()
    rows = {data: args.rows for data in args.data}
    for item in args.rows_for:
        data, _, names = item.partition("=")
        if data not in rows or not set(names.split(",")) <= set(ROWS):
            parser.error(f"--rows-for {item!r}: give DATA=ROW,ROW with DATA in --data and ROWs of {', '.join(ROWS)}")
        rows[data] = names.split(",")
    args.rows_by_data = rows
    # seed by seed: a check cut short still has every row
    plan = [(row, data, seed) for seed in range(args.seeds) for data in args.data for row in rows[data]]
    with ThreadPoolExecutor(args.jobs) as pool:
        run_dirs = list(pool.map(lambda job: train_one(*job, args.root), plan))
    minutes = (time.perf_counter() - started) / 60

    results = []
    for (row, data, seed), run_dir in zip(plan, run_dirs):
        status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").is_file() else {}
        metrics = status.get("metrics") or {}
        if status.get("status") != "completed" or "metrics/modes_covered" not in metrics:
            results.append({"row": row, "data": data, "seed": seed, "error": status.get("error", "no status")})
            continue
        covered, n = metrics["metrics/modes_covered"], metrics["metrics/n_modes"]
        replayed, diversity = replay(run_dir), replay(run_dir, modes=False)
        live = (status.get("diagnosis") or {}).get("summary")
        results.append({"row": row, "data": data, "seed": seed, "covered": covered, "n": n,
                        "collapsed": covered < dx.COLLAPSE_FRACTION * n, "steps": metrics.get("step"),
                        "episodes": replayed.episodes, "diversity_collapse": [e for e in diversity.episodes
                                                                              if e.kind == "mode_collapse"],
                        "margins": margins(run_dir), "live": live, "seconds": metrics.get("time/seconds", 0.0), "same_as_live": live == dx.summary(replayed.episodes),
                        "code": status.get("code", {})})
    write_doc(args, results, commit, dirty, minutes)


def write_doc(args: argparse.Namespace, results: list[dict], commit: str, dirty: bool, minutes: float) -> None:
    ok = [r for r in results if "error" not in r]
    judged = [r for r in ok if r["row"] not in BUILT_TO_FAIL]
    healthy, collapsed = [r for r in judged if not r["collapsed"]], [r for r in judged if r["collapsed"]]
    training_minutes = sum(r["seconds"] for r in ok) / 60
    trained_by = sorted({str(r["code"].get("commit", "?"))[:7] + ("+dirty" if r["code"].get("dirty") else "")
                         for r in ok})
    command = "python scripts/diagnosis_check.py " + " ".join(
        [f"--rows {' '.join(args.rows)}", f"--data {' '.join(args.data)}"]
        + ([f"--rows-for {' '.join(args.rows_for)}"] if args.rows_for else []) + [f"--seeds {args.seeds}",
         f"--jobs {args.jobs}", f"--root {args.root}"] + (["--allow-dirty"] if args.allow_dirty else []))
    lines = [
        "# The live diagnosis against how runs ended", "",
        f"Measured with `{command}` at {made_at(commit, dirty)}, {len(results)} runs (trained by "
        f"{', '.join(trained_by) or 'none'}; {training_minutes:.0f} min of training summed over the runs, "
        f"{minutes:.0f} min in this invocation, which reuses the runs --root already holds) on "
        f"{os.cpu_count()} CPU cores ({cpu_name()}), "
        f"{args.jobs} runs at a time, each `threads=1` under `nice -n 19` beside other users' jobs.", "",
        "Every run is `gan-lab train` with the row's overrides, the data set's defaults (`model=mlp`, batch 256, "
        "3,000 generator steps, metrics every 1,000 steps), seeds "
        f"0..{args.seeds - 1}. Its scalars are replayed from its event files through "
        "`gan_lab.training.diagnosis.Diagnosis` (what the live run calls at each log and evaluation step). "
        f"A run **ended collapsed** when its final evaluation covers fewer than {dx.COLLAPSE_FRACTION:g} of the "
        "modes (VEEGAN / PacGAN protocol, 2,500 samples), else it **ended healthy**.", "",
        f"Replay and live run named the same episodes in {sum(r['same_as_live'] for r in ok)} of {len(ok)} runs "
        "(they differ only where a run was trained with other thresholds than the replay's).", "",
        "## Summary", "",
        "| | runs | the diagnosis named | |", "|---|---|---|---|",
    ]
    for kind in dx.KINDS:
        fired = [r for r in healthy if any(e.kind == kind for e in r["episodes"])]
        lines.append(f"| ended healthy | {len(healthy)} | {dx.TITLES[kind]} | {len(fired)} (false alarms) |")
    named = [r for r in collapsed if any(e.kind == "mode_collapse" for e in r["episodes"])]
    lines.append(f"| ended collapsed | {len(collapsed)} | mode collapse | {len(named)} "
                 f"(missed {len(collapsed) - len(named)}) |")
    broken = [r for r in ok if r["row"] in BUILT_TO_FAIL]
    for kind in dx.KINDS:
        fired = [r for r in broken if any(e.kind == kind for e in r["episodes"])]
        if broken and (fired or kind == "non_lipschitz"):
            lines.append(f"| built to fail ({', '.join(sorted({r['row'] for r in broken}))}) | {len(broken)} | "
                         f"{dx.TITLES[kind]} | {len(fired)} |")
    early = [min(e.began for e in r["episodes"] if e.kind == "mode_collapse") for r in named]
    if early:
        before = sum(3000 - b for b in early) / len(early)
        span = f"{min(early):,}" if min(early) == max(early) else f"{min(early):,} to {max(early):,}"
        lines += ["", f"In the collapsed runs it named, the collapse was first named at step "
                      f"{span} (mean {sum(early) / len(early):,.0f}), on average "
                      f"{before:,.0f} generator steps before the end: what `train.on_failure=stop` saves."]
    div_false = [r for r in healthy if r["diversity_collapse"]]
    div_named = [r for r in collapsed if r["diversity_collapse"]]
    lines += ["", f"The sample-diversity rule alone (what data without modes or classes get: samples' mean pairwise "
                  f"distance below {dx.DIVERSITY_FRACTION:g} of the real data's), with the mode metrics hidden: it "
                  f"fired on {len(div_false)} of {len(healthy)} healthy runs and named {len(div_named)} of "
                  f"{len(collapsed)} collapsed runs."]
    lines += ["", "## Per row", "", "| data | row | seeds ended collapsed | named collapse | false alarms "
              "(healthy runs with any episode) | runs with each kind of episode | first seed with one |",
              "|---|---|---|---|---|---|---|"]
    for data in args.data:
        for row in args.rows_by_data[data]:
            runs = [r for r in ok if r["data"] == data and r["row"] == row]
            if not runs:
                continue
            bad = [r for r in runs if r["collapsed"]]
            hit = [r for r in bad if any(e.kind == "mode_collapse" for e in r["episodes"])]
            false = [r for r in runs if not r["collapsed"] and r["episodes"]]
            example = next((f"seed {r['seed']}: {dx.summary(r['episodes'])}" for r in runs if r["episodes"]), "none")
            kinds = ", ".join(f"{dx.TITLES[kind]} {n}/{len(runs)}" for kind in dx.KINDS
                              if (n := sum(any(e.kind == kind for e in r["episodes"]) for r in runs))) or "none"
            lines.append(f"| {data} | {row} | {len(bad)}/{len(runs)} | {len(hit)}/{len(bad)} | "
                         f"{'— (built to fail)' if row in BUILT_TO_FAIL else f'{len(false)}/{len(runs) - len(bad)}'} | "
                         f"{kinds} | {example} |")
    lines += ["", "## How close the healthy runs came", "",
              f"The most extreme value each per-step rule saw hold {dx.PERSIST} log steps in a row (after the "
              f"{dx.WARMUP}-step warm-up) in the runs that ended healthy, beside its threshold:", "",
              "| rule | healthy runs | most extreme held value | threshold |", "|---|---|---|---|"]
    for key, rule, pick, threshold in (
            ("runaway", "divergence: a loss over max(1, its median so far)", max, f"> {dx.RUNAWAY:g}"),
            ("input_grad_norm", "non-Lipschitz: Wasserstein critic's input-gradient norm", max,
             f"> {dx.LIPSCHITZ_FAR:g}"),
            ("critic_loss", "vanishing gradients: a non-Wasserstein critic's loss", min,
             f"< {_separation()} (the loss's separated_below)"),
            ("r_t", "a critic that wins: r_t = E[sign D(x_real)]", max,
             f"> {dx.R_T_WINS:g} (with the critic loss below its separated_below)")):
        seen = [r["margins"][key] for r in healthy if key in r["margins"] and r["margins"][key] == r["margins"][key]]
        if seen:
            lines.append(f"| {rule} | {len(seen)} | {pick(seen):.3g} | {threshold} |")
    failed = [r for r in results if "error" in r]
    if failed:
        lines += ["", "Runs left out (they did not complete): " + "; ".join(
            f"{r['data']} {r['row']} seed {r['seed']} ({str(r['error'])[:80]})" for r in failed)]
    lines += ["", "## Thresholds", "",
              "| rule | threshold | reads |", "|---|---|---|",
              f"| mode collapse | fewer than {dx.COLLAPSE_FRACTION:g} of the modes (classes) covered at an evaluation; "
              f"no mode metric: sample diversity below {dx.DIVERSITY_FRACTION:g} of the real data's | "
              "metrics/modes_covered, metrics/classes_covered, diagnosis/sample_diversity |",
              f"| vanishing generator gradients | critic loss below the loss's own separated_below ({_separation()}) and the "
              f"generator's gradient norm below {dx.GRAD_COLLAPSE:g} of its median so far, {dx.PERSIST} log steps "
              "in a row | loss/critic, grad_norm/generator |",
              f"| a critic that wins outright | critic loss below the loss's separated_below and r_t = "
              f"E[sign(D(x_real) - undecided_at)] above {dx.R_T_WINS:g} (StyleGAN2-ADA's overfitting signal), "
              f"{dx.PERSIST} log steps in a row, unless G's gradient vanished too | loss/critic, critic/r_t |",
              f"| a critic far from 1-Lipschitz | Wasserstein loss, input-gradient norm above {dx.LIPSCHITZ_FAR:g}, "
              f"{dx.PERSIST} log steps in a row | grad_norm/critic_input |",
              f"| divergence | a loss (or the Wasserstein estimate) above {dx.RUNAWAY:g} x max(1, its median so "
              f"far), {dx.PERSIST} log steps in a row; NaN / inf at once | loss/*, critic/wasserstein_estimate |",
              "", f"Per-step rules are judged after {dx.WARMUP} log steps and end after {dx.PERSIST} log steps "
              "without their condition; the mode rule begins and ends at single evaluations (they are 1,000 "
              "steps apart)."]
    write_keeping_notes(args.out, lines + [""])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
