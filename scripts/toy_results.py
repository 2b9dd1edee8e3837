"""Mode coverage of every loss on ring8 and grid25 (optionally MNIST) over several seeds -> docs/results.md.

Each run is a real `gan-lab train` (a subprocess, fixed settings, the data set's
defaults) followed by `gan-lab eval`; the table reports modes covered, the
high-quality percentage and the reverse KL (mean ± standard error over seeds) under
the VEEGAN / PacGAN protocol, beside the rows those papers published.

    python scripts/toy_results.py                       # every loss in conf/loss x 2 data sets x 5 seeds
    python scripts/toy_results.py --losses wgan_gp --seeds 2 --steps 500 --out /tmp/r.md
    python scripts/toy_results.py --losses wgan_gp --steps 20000 --device cuda --jobs 3 --out /tmp/r.md  # longer, on a GPU
    python scripts/toy_results.py --data mnist --seeds 2 --steps 5000 --out docs/results_mnist.md \
        --extra data.root=../shared/data          # digit coverage with gan-lab's classifier (slow on a CPU)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gan_lab.app.options import conf_options
from generated_doc import cpu_name, made_at, source_state, write_keeping_notes  # scripts/generated_doc.py

CONF = Path(__file__).resolve().parents[1] / "conf"
LOSSES = conf_options("loss")  # every loss the CLI offers
DATA = ["ring8", "grid25"]

# Published rows for the same protocol (2,500 samples, 3-sigma high quality), as printed in
# VEEGAN (Srivastava et al. 2017, Table 1) and PacGAN (Lin et al. 2018, Table 1); their
# architectures and training lengths differ from gan-lab's, so compare the trends.
PUBLISHED = {
    "ring8": [("GAN (VEEGAN paper)", "1.0", "99.3", "—"), ("Unrolled GAN (VEEGAN paper)", "7.6", "35.6", "—"),
              ("VEEGAN", "8.0", "52.9", "—"), ("GAN (PacGAN paper)", "6.3", "98.2", "0.45"),
              ("PacGAN2", "7.9", "95.6", "0.07")],
    "grid25": [("GAN (VEEGAN paper)", "3.3", "0.5", "—"), ("Unrolled GAN (VEEGAN paper)", "23.6", "16.0", "—"),
               ("VEEGAN", "24.6", "40.0", "—"), ("GAN (PacGAN paper)", "17.3", "94.8", "0.70"),
               ("PacGAN2", "23.8", "91.3", "0.13")],
}


def recommended(key: str, data: list[str]) -> str:
    """A data set default the presets read (lambda_gp, gamma), as "0.1 on ring8, 1 on grid25"."""
    from omegaconf import OmegaConf

    return ", ".join(f"{OmegaConf.load(CONF / 'data' / f'{d}.yaml').recommended[key]} on {d}" for d in data)


def run_one(loss: str, data: str, seed: int, steps: int | None, root: Path, threads: int, extra: list[str],
            device: str = "cpu", overrides: list[str] | None = None, rejection: bool = False) -> dict:
    """Train and evaluate one run; returns its metrics (or the error).

    `loss` names the run (a loss, or a row of scripts/cures.py) and `overrides` set it up
    (default: loss=<loss>); `rejection` evaluates it a second time with rejection=drs, whose
    metrics come back under "drs".
    """
    run_dir = root / f"{data}_{loss}_seed{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "gan_lab", "train", *(overrides if overrides is not None else [f"loss={loss}"]),
           f"data={data}", f"seed={seed}", f"device={device}", "metrics=false", "train.sample_every=1000000",
           f"hydra.run.dir={run_dir}"]
    cmd += ([f"train.steps={steps}"] if steps else []) + extra
    started = time.perf_counter()
    train = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if train.returncode != 0:
        return {"loss": loss, "data": data, "seed": seed, "error": train.stderr.strip().splitlines()[-1:]}
    trained = json.loads((run_dir / "status.json").read_text()).get("code", {})

    def evaluate(name: str, *options: str) -> dict:
        subprocess.run([sys.executable, "-m", "gan_lab", "eval", f"checkpoint={run_dir}", "seed=0",
                        f"out={run_dir / name}", *options], capture_output=True, text=True, env=env, check=True)
        metrics = json.loads((run_dir / name).read_text())
        metrics["code"] = [trained, metrics.get("code", {})]  # the code that trained and that evaluated the run
        return metrics

    metrics = evaluate("eval.json")
    if rejection:
        metrics["drs"] = evaluate("eval_drs.json", "rejection=drs")
    shown = ", ".join(f"{k.removeprefix('metrics/')} {v:.3g}" for k, v in metrics.items()
                      if k.startswith("metrics/") and v is not None)
    print(f"{data:7s} {loss:14s} seed {seed}: {shown} ({time.perf_counter() - started:.0f} s)", flush=True)
    return {"loss": loss, "data": data, "seed": seed, **metrics}


def moved_code(results: list[dict], commit: str, dirty: bool) -> list[str]:
    """The commits, other than the script's own, that trained or evaluated any of the runs."""
    codes = [code for r in results if "error" not in r for m in (r, r.get("drs", {})) for code in m.get("code", [])]
    return sorted({str(code.get("commit", "unknown"))[:7] for code in codes
                   if code.get("commit") != commit or code.get("dirty") != dirty})


def failure_lines(results: list[dict]) -> list[str]:
    """A doc's line naming each run that failed, and why (none when all trained)."""
    failures = [r for r in results if "error" in r]
    return ["Failed runs: " + "; ".join(f"{r['data']} {r['loss']} seed {r['seed']}: {r['error']}"
                                       for r in failures), ""] if failures else []


def mean_se(values: list[float]) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "—"
    mean = statistics.fmean(finite)
    note = f" ({len(values) - len(finite)} undefined)" if len(finite) < len(values) else ""
    if len(finite) == 1:
        return f"{significant(mean)}{note}"  # one seed: no standard error to show
    se = statistics.stdev(finite) / math.sqrt(len(finite))
    return f"{significant(mean)} ± {se:.2g}{note}"


def significant(x: float) -> str:
    """Three significant digits, never in exponent form: a reverse KL of 0.004 is not "0.00"."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:#.3g}".rstrip(".")


def digit_table(results: list[dict], data: str, losses: list[str]) -> list[str]:
    lines = [f"### {data} (10 classes, gan-lab's classifier)", "",
             "| loss | classes covered | class KL | confidence | Fréchet distance (classifier features) | precision "
             "| recall | density | coverage |",
             "|---|---|---|---|---|---|---|---|---|"]
    for loss in losses:
        rows = [r for r in results if r["data"] == data and r["loss"] == loss and "error" not in r]
        cells = [mean_se([r[f"metrics/{k}"] for r in rows]) if rows else "failed"
                 for k in ("classes_covered", "class_kl", "confidence", "frechet_distance", "precision", "recall",
                           "density", "coverage")]
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return lines + [""]


def table(results: list[dict], data: str, losses: list[str], published: dict | None = None) -> list[str]:
    """The markdown table of one data set: a row per loss (or cure), then the published rows."""
    published = published or PUBLISHED
    if data not in PUBLISHED:
        return digit_table(results, data, losses)
    n_modes = 8 if data == "ring8" else 25
    lines = [f"### {data} ({n_modes} modes)", "",
             "| loss | modes covered | all modes in | high quality % | lowest seed's high quality % | reverse KL |",
             "|---|---|---|---|---|---|"]
    for loss in losses:
        rows = [r for r in results if r["data"] == data and r["loss"] == loss and "error" not in r]
        if not rows:
            lines.append(f"| {loss} | failed | | | | |")
            continue
        modes = [r["metrics/modes_covered"] for r in rows]
        hq = [100 * r["metrics/high_quality"] for r in rows]
        kl = [r["metrics/reverse_kl"] for r in rows]
        full = sum(m == n_modes for m in modes)
        lines.append(f"| {loss} | {mean_se(modes)} | {full}/{len(rows)} seeds | {mean_se(hq)} | {min(hq):.1f} | "
                     f"{mean_se(kl)} |")
    lines += ["", "Published (same protocol, their own architectures and training lengths):", "",
              "| method | modes covered | high quality % | reverse KL |", "|---|---|---|---|"]
    lines += [f"| {name} | {m} | {h} | {k} |" for name, m, h, k in published[data]]
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--losses", nargs="+", default=LOSSES)
    parser.add_argument("--data", nargs="+", default=DATA)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="generator steps (default: the data set's)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--root", type=Path, default=Path("outputs/toy_results"))
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run, e.g. data.root=...")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: on CUDA each run replays CUDA graphs")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run from a tree with uncommitted changes (the doc then says so)")
    args = parser.parse_args()

    commit, dirty = source_state(args.allow_dirty)  # at the start: what every run must have used
    started = time.perf_counter()
    grid = [(loss, data, seed) for data in args.data for loss in args.losses for seed in range(args.seeds)]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: run_one(*job, args.steps, args.root, threads, args.extra, args.device),
                                grid))
    # every run (train and eval, each in its own process) must report the commit the script started from
    moved = moved_code(results, commit, dirty)
    if moved:
        sys.exit(f"error: the tree changed while the runs trained (runs report {', '.join(moved)}, the script started "
                 f"at {commit[:7]}{' with uncommitted changes' if dirty else ''}); {args.out} was not written.")
    toy = all(data in PUBLISHED for data in args.data)
    extra = f", and {' '.join(f'`{o}`' for o in args.extra)} for every run" if args.extra else ""
    lines = ["# Mode coverage on the 2-D mixtures" if toy else "# Class coverage", "",
             f"Measured with `python scripts/{Path(__file__).name} {' '.join(sys.argv[1:])}` at "
             f"{made_at(commit, dirty)}, {len(grid)} runs in {(time.perf_counter() - started) / 60:.0f} min on "
             f"{os.cpu_count()} CPU cores ({cpu_name()}){' and ' + args.device if args.device != 'cpu' else ''} "
             f"({args.jobs} runs at a time).", ""]
    if toy:
        lines += ["Settings: each loss's preset (optimizer, n_critic, clip; lambda_gp for WGAN-GP = the data set's: "
                  f"{recommended('lambda_gp', args.data)}; R1 = R2 gamma for R3GAN = the data set's: "
                  f"{recommended('gamma', args.data)}), `model=mlp` (3 x 128 ReLU, z_dim 2), batch 256, "
                  f"{args.steps or 3000} generator steps, seeds 0..{args.seeds - 1}{extra}. Protocol (VEEGAN / "
                  "PacGAN): 2,500 samples; a sample is high quality within 3 sigma of its nearest mode; a mode is "
                  "covered when it is the nearest mode of at least one high-quality sample; reverse KL is "
                  "KL(generated mode histogram of the high-quality samples || uniform). Mean ± standard error "
                  "over seeds.", ""]
    else:
        lines += ["Settings: each loss's preset (optimizer, n_critic, clip; lambda_gp and R3GAN's gamma the data "
                  f"set's: {recommended('lambda_gp', args.data)}; {recommended('gamma', args.data)}), the data set's defaults "
                  "(`model=dcgan`, z_dim 100, batch 64), "
                  f"{args.steps or 'the data set’s'} generator steps, seeds 0..{args.seeds - 1}{extra}. Metrics "
                  "(`gan-lab eval`): 10,000 generated images classified by gan-lab's own classifier; classes "
                  "covered (of 10), class KL = KL(generated class histogram || the real images'), mean "
                  "top-class confidence, and the Fréchet distance between the classifier's penultimate features "
                  "of 10,000 real and the generated images; improved precision and recall (Kynkäänniemi et al. 2019) and "
                  "density and coverage (Naeem et al. 2020) on the same features (k = 3 and 5 nearest "
                  "neighbours as the papers), 5,000 real and 5,000 generated images. Mean ± standard error over seeds (one seed: the value).",
                  ""]
    for data in args.data:
        lines += table(results, data, args.losses)
    lines += failure_lines(results)
    write_keeping_notes(args.out, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
