"""Each cure for mode collapse alone, and combinations, on one protocol -> docs/cures.md.

Every row is real `gan-lab train` runs (one base loss, the data set's defaults, one or two
overrides for the cure) evaluated by `gan-lab eval`, over several seeds, beside the rows the
PacGAN / VEEGAN papers published. Discriminator rejection sampling is a sampling-time cure:
its row is the baseline's own runs evaluated again with `rejection=drs`.

    python scripts/cures.py                                   # ring8 + grid25, 5 seeds, 3,000 steps
    python scripts/cures.py --steps 30000 --out docs/cures_long.md
    python scripts/cures.py --data mnist fashion_mnist --seeds 1 --steps 1000 \\
        --extra data.root=../shared/data --out docs/cures_mnist.md  # class coverage, FD, precision/recall
    python scripts/cures.py --cures none --combo "pack2_ema:model.pack=2 train.ema_kimg=10" --out /tmp/c.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from generated_doc import cpu_name, made_at, source_state, write_keeping_notes  # scripts/generated_doc.py
from toy_results import PUBLISHED, failure_lines, moved_code, run_one, table  # scripts/toy_results.py

# row -> the overrides that turn the cure on (over --loss); each names its paper in README's table
CURES = {
    "none": [],
    "pack2": ["model.pack=2"],  # PacGAN2 (Lin et al. 2018)
    "pack4": ["model.pack=4"],  # PacGAN4
    "minibatch_std4": ["model.minibatch_std=4"],  # ProGAN / StyleGAN2
    "unroll5": ["loss.unroll=5"],  # Unrolled GAN (Metz et al. 2017)
    "ema10": ["train.ema_kimg=10"],  # generator EMA, StyleGAN2-ADA's half-life (Yazıcı et al. 2019)
    "topk": ["train.topk=0.5"],  # top-k training (Sinha et al. 2020), decay 0.99 every 100 steps
    "ttur": ["optimizer=adam_ttur"],  # two time-scale update rule (Heusel et al. 2017), SAGAN's rates
    "diffaugment": ["data.augment=[translation,color,cutout]"],  # DiffAugment (Zhao et al. 2020): images only
}
IMAGES_ONLY = {"diffaugment"}
# PacGAN3 and PacGAN4 from the table docs/results.md quotes PacGAN2 from (Lin et al. 2018, Table 1, as
# the authors' repository fjxmlzn/PacGAN shows it; 10 trials each): modes, high quality %, reverse KL
PACGAN_3_4 = {"ring8": [("PacGAN3", "7.8", "97.7", "0.10"), ("PacGAN4", "7.8", "95.9", "0.07")],
              "grid25": [("PacGAN3", "24.6", "94.2", "0.06"), ("PacGAN4", "24.8", "93.6", "0.04")]}
PUBLISHED_CURES = {data: PUBLISHED[data] + PACGAN_3_4[data] for data in PUBLISHED}
DRS = "none+drs"  # the baseline's runs sampled through rejection=drs (Azadi et al. 2019)


def base_loss(overrides: list[str], loss: str) -> list[str]:
    """`loss=<--loss>` unless the row picks its own: on the command line it would beat an experiment's loss."""
    own = any(o.split("=", 1)[0].lstrip("+~") in ("loss", "experiment") for o in overrides)
    return [] if own else [f"loss={loss}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", default="nonsaturating", help="the base loss every row trains with")
    parser.add_argument("--cures", nargs="+", default=list(CURES), choices=list(CURES))
    parser.add_argument("--combo", action="append", default=[], metavar="NAME:OVERRIDES",
                        help='a combination row, e.g. "pack2_ema:model.pack=2 train.ema_kimg=10" (repeatable)')
    parser.add_argument("--data", nargs="+", default=["ring8", "grid25"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="generator steps (default: the data set's)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--root", type=Path, default=Path("outputs/cures"))
    parser.add_argument("--out", type=Path, default=Path("docs/cures.md"))
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run, e.g. data.root=...")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-drs", action="store_true", help="skip the rejection=drs evaluation of the baseline")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run from a tree with uncommitted changes (the doc then says so)")
    args = parser.parse_args()

    rows = {name: CURES[name] for name in args.cures}
    for combo in args.combo:
        name, _, overrides = combo.partition(":")
        if not name or not overrides or not name.replace("_", "").isalnum():
            parser.error(f"--combo {combo!r}: give NAME:OVERRIDES, NAME of letters, digits and _")
        rows[name] = overrides.split()
    commit, dirty = source_state(args.allow_dirty)  # at the start: what every run must have used
    started = time.perf_counter()
    grid = [(name, data, seed) for data in args.data for name in rows for seed in range(args.seeds)
            if not (name in IMAGES_ONLY and data in PUBLISHED)]  # DiffAugment has no meaning for 2-D points
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    drs = not args.no_drs and "none" in rows

    def job(item: tuple[str, str, int]) -> dict:
        name, data, seed = item
        return run_one(name, data, seed, args.steps, args.root, threads, args.extra, args.device,
                       overrides=[*base_loss(rows[name], args.loss), *rows[name]], rejection=drs and name == "none")

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(job, grid))
    moved = moved_code(results, commit, dirty)
    if moved:
        sys.exit(f"error: the tree changed while the runs trained (runs report {', '.join(moved)}, the script "
                 f"started at {commit[:7]}{' with uncommitted changes' if dirty else ''}); {args.out} was not written.")
    # the DRS row: the baseline's checkpoints, sampled through the critic
    results += [{"loss": DRS, "data": r["data"], "seed": r["seed"], **r["drs"]} for r in results if "drs" in r]

    toy = all(data in PUBLISHED for data in args.data)
    extra = f", and {' '.join(f'`{o}`' for o in args.extra)} for every run" if args.extra else ""
    lines = ["# Cures for mode collapse, side by side", "",
             f"Measured with `python scripts/{Path(__file__).name} {' '.join(sys.argv[1:])}` at "
             f"{made_at(commit, dirty)}, {len(grid)} training runs in {(time.perf_counter() - started) / 60:.0f} min "
             f"on {os.cpu_count()} CPU cores ({cpu_name()}){' and ' + args.device if args.device != 'cpu' else ''} "
             f"({args.jobs} runs at a time).", "",
             f"Every row trains `loss={args.loss}` (its preset optimizer; a row whose overrides pick a loss or an "
             f"experiment trains that one) with the data set's defaults "
             f"({'`model=mlp`, 3 x 128 ReLU, z_dim 2, batch 256' if toy else '`model=dcgan`, z_dim 100, batch 64'}), "
             f"{args.steps or 'the data set’s'} generator steps, seeds 0..{args.seeds - 1}{extra}, and these "
             f"overrides:", ""]
    lines += [f"- **{name}**: " + (" ".join(f"`{o}`" for o in overrides) if overrides else "none (the baseline)")
              for name, overrides in rows.items() if not (name in IMAGES_ONLY and toy)]
    if drs:
        rates = [r["rejection/acceptance_rate"] for r in results if r["loss"] == DRS]
        lines.append(f"- **{DRS}**: the baseline's runs evaluated with `gan-lab eval ... rejection=drs` "
                     f"(mean acceptance rate {statistics.fmean(rates):.3f})" if rates else
                     f"- **{DRS}**: the baseline's runs failed")
    lines += ["", "Metrics as docs/results.md (2-D: VEEGAN / PacGAN protocol on 2,500 samples) and "
              "docs/results_mnist.md (images: gan-lab's classifier); mean ± standard error over seeds. A run "
              "with the generator EMA is evaluated with G_ema.", ""]
    names = [name for name in rows] + ([DRS] if drs else [])
    for data in args.data:
        shown = [n for n in names if not (n in IMAGES_ONLY and data in PUBLISHED)]
        lines += [line.replace("| loss |", "| cure |", 1) for line in table(results, data, shown, PUBLISHED_CURES)]
    lines += failure_lines(results)
    write_keeping_notes(args.out, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
