"""The small subcommands' command lines: `gan-lab sample`, `eval`, `report` and `classifier`.

Each is its parser (keys, meanings, defaults, examples: gan_lab.app.options) and one command
function that parses, checks what only the command line knows, calls the computation in
gan_lab.evaluation and prints. Errors a user can cause are GanLabErrors: cli.main prints them
and exits 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch

from rich.console import Console

from gan_lab.app.options import Option, build_parser, parse
from gan_lab.data import import_torchvision
from gan_lab.errors import GanLabError
from gan_lab.evaluation import memorisation
from gan_lab.evaluation.classifier import (DATA_SETS, DEFAULT_EPOCHS, classifier_path, default_cache_dir,
                                           load_classifier, load_or_train_classifier)
from gan_lab.evaluation.evaluate import (EVAL_SEED, class_labels, data_root_here, describe_generator,
                                         describe_rejection, eval_file, eval_samples, evaluation_label,
                                         evaluation_protocol, held_out_reference,
                                         interpolation_z, load_generator, make_evaluator, no_metrics_note, rejection_sampler,
                                         run_dir_of)
from gan_lab.evaluation.inception import MIN_FID_SAMPLES, describe_protocol
from gan_lab.evaluation.report import (STYLE, add_resolved_keys, evaluation_columns, latest_sweep, load_evaluations,
                                       load_run, metric_columns, plot_plan, plot_runs, rich_tables, sort_runs,
                                       swept_keys, write_csv, write_markdown)
from gan_lab.runs.files import atomic_write_text, atomic_writer
from gan_lab.runs.provenance import code_version
from gan_lab.runs.rebuild import rebuild_data
from gan_lab.runs.tracker import console
from gan_lab.runs.status import find_runs

REJECTION_HELP = ("none, or drs: Discriminator Rejection Sampling (Azadi et al. 2019) with the run's critic; "
                  "prints the acceptance rate")


# ---- sample and eval ------------------------------------------------------------------------

def eval_parser() -> argparse.ArgumentParser:
    """`gan-lab eval`'s keys, their meanings and defaults (its --help)."""
    return build_parser("eval", "Every metric that applies to a checkpoint's data set, as a table and as JSON.", [
        Option("checkpoint", None, str, "a run directory (its checkpoints/last.pt) or a .pt file (required)"),
        Option("seed", EVAL_SEED, int, "seed of the generated samples (the run's own metrics use the default)"),
        Option("device", "cpu", str, "cpu or cuda[:N]"),
        Option("out", None, str, "the JSON file to write (default: <run dir>/eval.json, and for other settings "
                                 "their own file: eval_drs.json, eval_seed1.json, ...)"),
        Option("inception_weights", os.environ.get("GAN_LAB_INCEPTION_WEIGHTS"), str,
               "torch-fidelity's Inception .pth for FID/IS/KID on RGB data, checked with weights_only=True "
               "($GAN_LAB_INCEPTION_WEIGHTS; default: torch-fidelity's download)"),
        Option("fid_samples", None, int, "generated images for FID/IS/KID/precision/recall on RGB data (default: "
                                         "10,000, FID-10k; 50000: the papers' FID-50k)"),
        Option("rejection", "none", str, REJECTION_HELP),
        Option("data.root", None, str, "the folder holding the checkpoint's data set on this machine (default: the "
                                       "checkpoint's data.root, else $GAN_LAB_DATA_ROOT when that folder is not here)"),
    ], examples="  gan-lab eval checkpoint=outputs/<date>/<time>\n  gan-lab eval checkpoint=run/checkpoints/step_00001000.pt seed=1\n"
                "  gan-lab eval checkpoint=<run dir from another machine> data.root=/path/to/data\n"
                "  gan-lab eval checkpoint=<run dir> fid_samples=50000 inception_weights=/path/to/"
                "weights-inception-2015-12-05-6726825d.pth")


def sample_parser() -> argparse.ArgumentParser:
    """`gan-lab sample`'s keys, their meanings and defaults (its --help)."""
    return build_parser("sample", "Samples from a checkpoint's generator: a PNG (image grid or 2-D scatter) and a .pt.", [
        Option("checkpoint", None, str, "a run directory (its checkpoints/last.pt) or a .pt file (required)"),
        Option("n", 64, int, "how many samples"),
        Option("seed", 0, int, "seed of the noise z"),
        Option("interpolate", False, bool, "rows of 10 samples along straight lines in z instead of random z"),
        Option("label", None, int, "the class to draw, for a conditional model (default: every class in turn)"),
        Option("device", "cpu", str, "cpu or cuda[:N]"),
        Option("out", None, str, "the folder to write to (default: <run dir>/samples); a table's: a .csv, .tsv or "
                                 ".parquet file; condition.<column>=<value> fixes a table's discrete column"),
        Option("rejection", "none", str, REJECTION_HELP),
    ], examples="  gan-lab sample checkpoint=outputs/<date>/<time> n=64\n  gan-lab sample checkpoint=<run dir> n=30 interpolate=true"
                "\n  gan-lab sample checkpoint=<table run> n=1000 out=north.csv condition.region=North")


def eval_command(args: list[str]) -> None:
    """`gan-lab eval checkpoint=<run dir or .pt>`: every metric that applies, as a table and JSON."""
    from rich.table import Table

    opts = parse(eval_parser(), args)
    if not opts["checkpoint"]:
        raise GanLabError("gan-lab eval needs checkpoint=<run directory or .pt file>.")
    seed = opts["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GanLabError(f"seed={seed} is out of range: the seed of the evaluation's z must be a whole number >= 0.")
    fid_samples = opts["fid_samples"]
    if fid_samples is not None and (isinstance(fid_samples, bool) or not isinstance(fid_samples, int)
                                    or fid_samples < MIN_FID_SAMPLES):
        raise GanLabError(f"fid_samples={fid_samples} is out of range: the number of generated images for the "
                          f"Inception metrics must be a whole number >= {MIN_FID_SAMPLES} (default 10000; the "
                          f"papers' FID-50k: fid_samples=50000).")
    code = code_version()  # the code as it is when the evaluation starts
    G, state, file = load_generator(str(opts["checkpoint"]), opts["device"])
    config = state["config"]
    root = data_root_here(config, opts["data.root"])
    if root is not None:  # read where the data lives here, not where it lived when the run trained
        config = {**config, "data": {**config["data"], "root": root}}
    data = rebuild_data(config, file, opts["device"], shape=state.get("data_shape"))
    # every measure the data declares, those that run only here (memorisation) too, on the same samples
    evaluator = make_evaluator(data, root, inception_weights=opts["inception_weights"], seed=seed,
                               fid_samples=fid_samples, in_eval=True)
    if evaluator is None:
        raise GanLabError(f"gan-lab eval has nothing to measure: {no_metrics_note(data)}")
    sampler = rejection_sampler(opts["rejection"], state, file, opts["device"], seed)
    torch.manual_seed(seed)  # as training's evaluations do: a G that draws beyond z (a table's Gumbel noise) repeats
    metrics = evaluator(sampler if sampler is not None else G)
    if sampler is not None:  # beside the metrics: how much of G's output the critic let through
        metrics["rejection/acceptance_rate"] = sampler.acceptance_rate
    # each evaluation keeps its own record: rejection=drs or seed=1 never overwrites the plain one, and
    # neither does another protocol: another sample count, device or Inception weights
    protocol = evaluation_protocol(evaluator)  # Inception's: counts, real split, extractor, weights' sha256
    asked = fid_samples if fid_samples is not None and fid_samples != eval_samples(data) else None
    label = evaluation_label(str(file), seed, opts["rejection"], asked, str(opts["device"]), protocol)
    out = Path(opts["out"]) if opts["out"] else eval_file(run_dir_of(file), label)
    # JSON has no inf/NaN: a metric that is undefined (no high-quality sample) is written as null
    finite = {k: v if math.isfinite(v) else None for k, v in metrics.items()}
    # each metric's value for real images the generator never saw, under the same protocol: a reader's yardstick
    real = {k: v if math.isfinite(v) else None for k, v in held_out_reference(evaluator).items()}
    n = protocol.get("generated_images", eval_samples(data))
    atomic_write_text(out, json.dumps({"checkpoint": str(file), "seed": seed, "samples": n,
                                       "device": str(opts["device"]), "code": code, "rejection": opts["rejection"],
                                       **({"protocol": protocol} if protocol else {}),
                                       **({"real_held_out": real} if real else {}), **finite}, indent=2))
    console.print(f"[bold]gan-lab eval[/] {file}", soft_wrap=True, highlight=False)
    # the protocol, and whether it is the one behind the run's own final metrics/* (status.json, TensorBoard)
    same = (f"the run's own final metrics/* used the same, so they match on the device the run trained on"
            if seed == EVAL_SEED else f"the run's own metrics/* used seed {EVAL_SEED}, so these differ from them "
                                      f"by sampling noise")
    if sampler is not None:
        same = "these are after rejection=drs, so they differ from the run's own metrics/* (no rejection)"
    console.print(describe_generator(state), soft_wrap=True, highlight=False)
    console.print(f"protocol: {n} samples, z from seed {seed} (drawn on the CPU), G in eval mode on "
                  f"{opts['device']}; {same}.", soft_wrap=True, highlight=False)
    if protocol:
        console.print(describe_protocol(protocol), soft_wrap=True, highlight=False)
    table = Table()
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")
    if real:
        table.add_column("real held-out", justify="right")  # the same protocol on real images: what good looks like
    for key, value in metrics.items():
        yardstick = [] if not real else ["—" if real.get(key) is None else f"{real[key]:.4g}"]
        table.add_row(key.removeprefix("metrics/"), f"{value:.4g}", *yardstick)
    console.print(table)
    if sampler is not None:
        console.print(describe_rejection(sampler), soft_wrap=True, highlight=False)
    reports = getattr(evaluator, "reports", [])  # each writes its figure beside the record (memorisation's pairs)
    for report in reports:
        console.print(report(out), soft_wrap=True, highlight=False)
    if not reports:
        console.print(memorisation.not_applicable(data), soft_wrap=True, highlight=False)
    console.print(f"written to {out}", soft_wrap=True, highlight=False)


def sample_command(args: list[str]) -> None:
    """`gan-lab sample checkpoint=<run dir or .pt> n=64`: a PNG (grid or scatter) and the raw samples."""
    from gan_lab.app.table_sample import sample_table, split_conditions

    args, conditions = split_conditions(args)  # condition.<column>=<value>: a table's fixed condition
    opts = parse(sample_parser(), args)
    if not opts["checkpoint"]:
        raise GanLabError("gan-lab sample needs checkpoint=<run directory or .pt file>.")
    n = opts["n"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GanLabError(f"n={n} is out of range: the number of samples must be a whole number >= 1.")
    G, state, file = load_generator(str(opts["checkpoint"]), opts["device"])
    if "data_state" in state:  # a table: rows as the input had them
        out = Path(opts["out"]) if opts["out"] else run_dir_of(file) / "samples" / f"table_step{state['step']}.csv"
        frame = sample_table(G, state, n, int(opts["seed"]), out, conditions)
        console.print(f"{len(frame)} rows x {frame.shape[1]} columns of {file} (step {state['step']}) -> {out}",
                      soft_wrap=True, highlight=False)
        return
    if conditions:
        raise GanLabError(f"condition.{next(iter(conditions))}= fixes a column of a table, but {file} was not "
                          f"trained on data=table. Use label= for a conditional model's class.")
    config = state["config"]
    label = opts["label"]
    if label is not None and not G.n_classes:
        raise GanLabError(f"label={label} needs a conditional model, but {file} holds an "
                          f"unconditional one. Drop label=, or train with model.conditional=true.")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < G.n_classes):
        raise GanLabError(f"label={label} is out of range: this model knows labels 0 to {G.n_classes - 1}.")
    sampler = rejection_sampler(opts["rejection"], state, file, opts["device"], int(opts["seed"]))
    if sampler is not None and opts["interpolate"]:
        raise GanLabError("rejection=drs cannot draw an interpolation: rejecting points would break its straight "
                          "lines in z. Drop one of interpolate=true and rejection=drs.")
    torch.manual_seed(int(opts["seed"]))
    out = Path(opts["out"]) if opts["out"] else run_dir_of(file) / "samples"
    out.mkdir(parents=True, exist_ok=True)
    step = state["step"]
    z = interpolation_z(G.z_dim, n) if opts["interpolate"] else torch.randn(n, G.z_dim)
    device = next(G.parameters()).device
    if label is not None:
        y = torch.full((len(z),), label, dtype=torch.long, device=device)
    else:  # a conditional model without label=: every class in turn
        y = class_labels(G, len(z))
    with torch.no_grad():
        G.eval()
        x = (sampler if sampler is not None else G)(z.to(device), y).cpu()
    kind = "interpolation" if opts["interpolate"] else "sample"
    name = (f"{kind}_step{step}_seed{opts['seed']}" + (f"_label{label}" if label is not None else "")
            + ("_drs" if sampler is not None else ""))
    with atomic_writer(out / f"{name}.pt") as tmp:  # each file whole or absent, even after a Ctrl-C
        torch.save(x, tmp)
    if x.dim() == 4:
        torchvision = import_torchvision()  # one paragraph, not a traceback, when it does not fit this torch
        nrow = 10 if opts["interpolate"] else max(1, int(round(n ** 0.5)))
        with atomic_writer(out / f"{name}.png") as tmp:
            torchvision.utils.save_image(x, tmp, nrow=nrow, normalize=True, value_range=(-1, 1))
    else:
        from gan_lab.runs.plots import scatter_2d

        real, _ = rebuild_data(config, file, shape=state.get("data_shape")).sample(max(n, 1000))
        with atomic_writer(out / f"{name}.png") as tmp:
            scatter_2d(real, x, step).savefig(tmp, dpi=100)
    console.print(f"{n} samples of {file} (step {step}) -> {out / name}.png and .pt", soft_wrap=True,
                  highlight=False)
    console.print(describe_generator(state), soft_wrap=True, highlight=False)
    if sampler is not None:
        console.print(describe_rejection(sampler), soft_wrap=True, highlight=False)


# ---- report ---------------------------------------------------------------------------------

REPORT_SUMMARY = """One row per run of a sweep: its status, the swept keys and the final metrics.

Writes report.csv (every scalar of every run), report.md and report.png (metrics against x,
one line per combination of the other swept keys, mean and std over seeds) to out. The
printed table fits the terminal: columns that do not fit go to a further block of the
table, never cut or folded."""
REPORT_EXAMPLES = """  gan-lab report outputs/multirun/<date_time> sort=-metrics/modes_covered
  gan-lab report <sweep dir> columns=all plot=metrics/modes_covered,critic/wasserstein_estimate x=loss.lambda_gp"""


def report_parser() -> argparse.ArgumentParser:
    """`gan-lab report`'s keys, their meanings and defaults (its --help)."""
    return build_parser("report", REPORT_SUMMARY, [
        Option("sort", None, str, "sort by a metric or swept key, e.g. -metrics/modes_covered (a leading - sorts "
                                  "descending)"),
        Option("columns", None, str, "metrics to show, a,b or all (default: the objective, metrics/* and a few basics)"),
        Option("plot", None, str, "metrics to plot in report.png, a,b or none (default: the objective and headline "
                                  "metrics)"),
        Option("x", None, str, "the swept key to plot against (default: the first numeric one)"),
        Option("out", None, str, "the folder for report.csv, .md and .png (default: the sweep directory)"),
    ], positionals=[("sweep_dir", "a sweep directory, or any folder holding run directories (default: the newest "
                                  "in outputs/multirun)")], examples=REPORT_EXAMPLES)


def report_command(args: list[str]) -> None:
    """`gan-lab report [dir] [sort=metric] [columns=a,b|all] [plot=a,b|none] [x=key] [out=dir]`."""
    options = parse(report_parser(), args)
    positional = [options["sweep_dir"]] if options["sweep_dir"] else []
    root = Path(positional[0]) if positional else latest_sweep()
    if not root.is_dir():
        raise GanLabError(f"gan-lab report: {root} is not a directory. Give a sweep directory, e.g. "
                          f"outputs/multirun/<date_time>, or any folder holding run directories.")
    runs = [load_run(path, root) for path in find_runs(root)]
    if not runs:
        raise GanLabError(f"gan-lab report: no run directories under {root} (a run directory holds "
                          f".hydra/config.yaml). Sweeps write to outputs/multirun/<date_time>/.")
    add_resolved_keys(runs)
    keys = swept_keys(runs)
    metrics = metric_columns(runs, options["columns"])
    runs = sort_runs(runs, options["sort"])
    counts = {s: sum(r.status == s for r in runs) for s in STYLE if any(r.status == s for r in runs)}
    title = f"gan-lab report: {root} ({', '.join(f'{n} {s}' for s, n in counts.items())})"

    out = Path(options["out"] or root)
    out.mkdir(parents=True, exist_ok=True)
    evaluations = load_evaluations(runs)
    write_csv(runs, keys, out / "report.csv")
    write_markdown(runs, keys, metrics, out / "report.md", title, evaluations)
    written = [out / "report.csv", out / "report.md"]
    if evaluations:
        write_csv(evaluations, keys, out / "report_eval.csv", second="evaluation")
        written.append(out / "report_eval.csv")
    picture = plot_plan(runs, keys, options["plot"], options["x"])
    if picture:
        x, plotted = picture
        plot_runs(runs, keys, x, plotted, out / "report.png")
        written.append(out / "report.png")

    # a terminal's own width (or $COLUMNS); pipes and logs: wide, so a table rarely needs a second block
    console = Console(width=None if Console().is_terminal or os.environ.get("COLUMNS") else 200)
    console.print(title, soft_wrap=True, highlight=False)
    for table in rich_tables(runs, keys, metrics, console.width):
        console.print(table)
    if evaluations:
        console.print(f"evaluations (gan-lab eval): {len(evaluations)}", highlight=False)
        for table in rich_tables(evaluations, keys, evaluation_columns(evaluations), console.width, "evaluation"):
            console.print(table)
    console.print("wrote " + ", ".join(str(p) for p in written), soft_wrap=True, highlight=False)


# ---- classifier -----------------------------------------------------------------------------

def classifier_parser() -> argparse.ArgumentParser:
    """`gan-lab classifier`'s action and keys, their meanings and defaults (its --help)."""
    return build_parser("classifier", "Train the digit classifier the MNIST and Fashion-MNIST metrics use, and cache it\n"
                        "(the metrics otherwise train it on first use; its time on a CPU: the README's \"What a run costs\").", [
        Option("data", "mnist", str, f"the data set: {' or '.join(DATA_SETS)}"),
        Option("root", os.environ.get("GAN_LAB_DATA_ROOT", "data"), str,
               "the folder holding the data set ($GAN_LAB_DATA_ROOT)", ("data.root",)),
        Option("download", True, bool, "download the data set when it is missing", ("data.download",)),
        Option("seed", 0, int, "seed of the initial weights, dropout and batch order"),
        Option("epochs", DEFAULT_EPOCHS, int, "passes over the training split"),
        Option("device", "auto", str, "auto, cpu or cuda[:N]"),
        Option("force", False, bool, "train a new one even when one is cached, and replace it"),
        Option("cache_dir", None, str, "where classifiers are cached (default: $GAN_LAB_CACHE, else ~/.cache/gan-lab)"),
    ], positionals=[("action", "train: make the classifier now")],
        examples="  gan-lab classifier train data=mnist data.root=/path/to/data\n"
                 "  gan-lab classifier train data=fashion_mnist force=true")


def classifier_command(args: list[str]) -> None:
    """`gan-lab classifier train data=mnist [data.root=...] [force=true]`: make the metrics' classifier now.

    The metrics train it on first use anyway; this makes it explicitly (e.g. before a sweep, so
    parallel jobs do not each train one), reports its test accuracy, and with force=true
    replaces a cached one.
    """
    from gan_lab.training import distributed

    opts = parse(classifier_parser(), args)
    if opts["action"] != "train":
        raise GanLabError("gan-lab classifier takes one action: train, e.g. gan-lab classifier train data=mnist "
                          "data.root=/path/to/data (keys: data, data.root, data.download, seed, epochs, device, "
                          "force, cache_dir; gan-lab classifier --help says what each one means).")
    for key, low in {"seed": 0, "epochs": 1}.items():  # the parser made them whole numbers
        if opts[key] < low:
            raise GanLabError(f"gan-lab classifier train: {key}={opts[key]!r} must be a whole number >= {low}.")
    name = str(opts["data"])
    cache_dir = Path(str(opts["cache_dir"])) if opts["cache_dir"] else default_cache_dir()
    path = classifier_path(cache_dir, name)
    if name in DATA_SETS and path.exists() and not opts["force"]:
        _, saved = load_classifier(path, name)  # an unusable file says so here
        console.print(f"The {name} classifier is already cached at {path} (test accuracy "
                      f"{saved['test_accuracy']:.2%}, epochs {saved['epochs']}, seed {saved['seed']}); the metrics "
                      f"use it. Pass force=true to train a new one in its place.", soft_wrap=True, highlight=False)
        return
    load_or_train_classifier(name, str(opts["root"]), cache_dir, download=opts["download"],
                             device=distributed.choose_device(str(opts["device"])), epochs=opts["epochs"],
                             seed=opts["seed"], retrain=True)
