"""The composition root: the only code that sees the whole Hydra config.

`gan-lab <command>` is dispatched here. `gan-lab train [overrides]` composes conf/ into one
config, prints it, builds the objects (data, models, loss, optimizers) and hands them to
`train.train(...)`; the job around that (run folder, status, resume policy, signals, final
summary) is gan_lab.app.job. Errors a user can cause surface as one readable paragraph and
exit code 2.

What is checked or translated lives beside what owns it: Hydra's build errors in app/building.py,
the typo check of the command line in app/overrides.py, optimizer presets in gan_lab/optimizers.py,
the rules of a combination with what they check (models.check_critic, data.check_batch_size,
training/distributed.py, training/unroll.py).
"""

from __future__ import annotations

import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gan_lab import optimizers, sweeps
from gan_lab.app import job
from gan_lab.app.building import build
from gan_lab.app.job import print_config, report_error, report_interrupt
from gan_lab.app.options import USAGE, did_you_mean
from gan_lab.app.overrides import check_overrides, refuse_rerun
from gan_lab.data import build_data, check_batch_size, declared
from gan_lab.errors import GanLabError
from gan_lab.losses import Loss
from gan_lab.models import check_critic
from gan_lab.runs.tracker import console, flat_hparams
from gan_lab.table_data import steps_for_epochs
from gan_lab.training.settings import CriticSchedule, TrainSettings


# ${table_steps:...}: conf/data/table.yaml's train.steps, from epochs over the table's rows. Registered on import,
# so a joblib or submitit worker that unpickles this module's job resolves it too.
OmegaConf.register_new_resolver("table_steps", steps_for_epochs, replace=True)


def build_optimizer(shared: DictConfig, per_network: DictConfig, params: Any, network: str,
                    lr_scale: float = 1) -> torch.optim.Optimizer:
    """One network's optimizer: conf/optimizer's settings for it (gan_lab.optimizers), built on its parameters."""
    cfg, node = optimizers.settings(OmegaConf.to_container(shared, resolve=True),
                                    OmegaConf.to_container(per_network, resolve=True), network, lr_scale)
    return build(f"{network} optimizer", lambda: instantiate(cfg)(params), node, cfg.get("_target_"), cfg.keys())


def build_loss(node: dict[str, Any]) -> tuple[Loss, CriticSchedule]:
    """The `loss` node as the loss (its math and penalties) and the critic's schedule (n_critic, reg_every, ...)."""
    knobs = [f.name for f in fields(CriticSchedule)]  # the training knobs: the loop reads them, the loss never
    schedule = build("loss", lambda: CriticSchedule(**{k: node[k] for k in knobs if k in node}), "loss",
                     CriticSchedule, node)
    loss = build("loss", lambda: instantiate({k: v for k, v in node.items() if k not in knobs}), "loss",
                 node.get("_target_"), node)
    return loss, schedule


def run_training(cfg: DictConfig, run_dir: Path, on_start: Callable[[dict[str, Any]], None] = lambda plain: None,
                 follow_free_cores: bool = False) -> dict[str, float]:
    """Build every object the config describes and train; returns the final scalars.

    follow_free_cores: a CPU run on one process sets its thread count to the cores other processes
    leave free (threads: auto, gan_lab.runs.busy); otherwise it keeps the count it was given.

    on_start(resolved config) is called once everything is built and checked, just before training.
    The result's "cpu_s": this process's CPU seconds from here to the end of training (the data read and
    its transform fitted, the models built, training, evaluation at train.eval_every and checkpoints).
    """
    started = time.process_time()
    from gan_lab.runs.tracker import NullTracker, Tracker
    from gan_lab.training import distributed
    from gan_lab.training.train import train

    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise GanLabError(f"The config does not resolve: {err}") from None
    settings = build("train settings", lambda: TrainSettings(**plain["train"]), "train", TrainSettings,
                     plain["train"])
    device = distributed.device_for(distributed.launched(), str(cfg.device)) or distributed.choose_device(str(cfg.device))
    torch.manual_seed(int(cfg.seed))  # the same initial weights on every rank

    say = lambda text: console.print(text, soft_wrap=True, highlight=False)  # noqa: E731 - a folder's progress
    models = []  # built from the data's shape as soon as it is known: a data set that reads files says so first

    def build_models(data: Any) -> None:
        layout = declared(plain["model"].get("_target_"), {"layout": getattr(data, "layout", None)})  # a table model's
        models.extend(build("model", lambda: instantiate(cfg.model, shape=data.shape, n_classes=data.n_classes,
                                                         augment=list(data.augment), **layout),
                            "model", plain["model"].get("_target_"), plain["model"]))

    data = build("data set", lambda: build_data(plain["data"], device, rank=distributed.rank(),
                                                world_size=distributed.world_size(), say=say,
                                                before_reading=build_models),
                 "data", plain["data"].get("_target_"), plain["data"])
    if not models:
        build_models(data)
    G, critic = models
    G, critic = G.to(device), critic.to(device)
    loss, schedule = build_loss(plain["loss"])
    for note in check_critic(critic, loss, settings.batch_size):  # what trains, but means something else
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True, highlight=False)
    check_batch_size(data, settings.batch_size)
    ranks = distributed.world_size()
    distributed.check_critic_norm(critic.norm, ranks)
    if ranks > 1:
        torch.manual_seed(int(cfg.seed) + distributed.rank())  # each rank its own batches and noise
    lr_scale = distributed.lr_scale(cfg.lr_scaling, ranks)
    opt_g = build_optimizer(cfg.optimizer, cfg.optimizer_generator, G.parameters(), "generator", lr_scale)
    opt_d = build_optimizer(cfg.optimizer, cfg.optimizer_critic, critic.parameters(), "critic", lr_scale)
    if schedule.unroll:
        from gan_lab.training.unroll import check

        check(opt_d, ranks, compiled=bool(settings.compile))
    if ranks > 1:
        console.print(distributed.describe(ranks, settings.batch_size, lr_scale))
    resume = job.load_resume(cfg.resume, run_dir, plain, bool(cfg.resume_force), settings.steps)
    evaluator, protocol = None, {}
    if cfg.metrics and distributed.is_main():
        from gan_lab.evaluation.evaluate import evaluation_protocol, make_evaluator, no_metrics_note

        evaluator = make_evaluator(data, cfg.data.get("root"), inception_weights=cfg.inception_weights)
        if evaluator is None:
            console.print(f"[yellow]note:[/] {no_metrics_note(data)}", soft_wrap=True, highlight=False)
        protocol = evaluation_protocol(evaluator)  # Inception's: which FID metrics/fid is

    print_config(plain)  # only now: a refused config gets its one-paragraph error alone
    on_start(plain)
    console.print(f"[bold]device[/] {device}  [bold]run directory[/] {run_dir}")
    console.print("[bold]parameters[/] " + "  ".join(f"{name} {sum(p.numel() for p in net.parameters()):,}"
                                                     for name, net in (("G", G), ("critic", critic))))
    start = resume["step"] if resume else 0
    reporter = Tracker if distributed.is_main() else NullTracker  # rank 0 alone writes
    cpu_threads = torch.get_num_threads() if device.type == "cpu" else 0  # watched for a busy machine
    with reporter(run_dir, settings.steps, start_step=start, cpu_threads=cpu_threads,
                  adapt_threads=follow_free_cores and ranks == 1) as tracker:
        if "fid" in protocol:  # once: the console, and a TensorBoard text entry beside the curve
            from gan_lab.evaluation.inception import short_protocol

            console.print(f"[bold]metrics[/] {short_protocol(protocol)}", soft_wrap=True, highlight=False)
            tracker.text("metrics/protocol", short_protocol(protocol), start)
        result = train(G, critic, loss, schedule, data, opt_g, opt_d, settings, tracker, run_dir, plain, resume,
                       evaluator)
        tracker.hparams(flat_hparams(plain, HydraConfig.get().runtime.choices))
        result["cpu_s"] = time.process_time() - started  # type: ignore[assignment]  # job.py: status.json
        result["threads"] = tracker.threads_used()  # type: ignore[assignment]  # job.py takes it into status.json
        if protocol:
            result["metrics_protocol"] = protocol  # type: ignore[assignment]  # likewise
    return result


def train_job(cfg: DictConfig) -> float | None:
    """The Hydra task behind `gan-lab train`: one job of a run or of a sweep (gan_lab.app.job); its objective."""
    return job.run_job(cfg, run_training)


# A plain module-level task function, wrapped rather than decorated: joblib and submitit
# pickle the task to run it in another process, and they can only pickle it by reference
# when `gan_lab.app.cli.train_job` names this very function.
train_app = hydra.main(version_base="1.3", config_path="pkg://gan_lab.conf", config_name="train")(train_job)


def train_command(args: list[str]) -> None:
    """`gan-lab train [overrides]`: the Hydra app."""
    from gan_lab.runs import rundirs
    from gan_lab.training import distributed

    refuse_rerun(args)
    if {"-h", "--help"} & set(args):  # every subcommand's help, through the same front (gan_lab.app.options)
        from gan_lab.app.options import train_parser

        train_parser([a for a in args if a not in ("-h", "--help")]).print_help()
        sys.exit(0)
    info = distributed.launched()
    if info.enabled:  # under torchrun: join the group, agree on one run directory, let rank 0 talk
        distributed.init(info)
        console.quiet = not info.main
        args = distributed.shared_run_dir(info, args)
    if not {"--help", "-h", "--hydra-help", "--info"} & set(args):
        check_overrides(args)  # before anything is made: a typo gets the key that was meant
    if not {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info"} & set(args):
        args = rundirs.own_output_dir(args, main=info.main or not info.enabled)
        if args is None:  # a finished run asked for again: nothing to do
            if info.enabled:
                distributed.finish()
            return
    sys.argv = ["gan-lab train", *args]  # Hydra reads its overrides from sys.argv
    sweep_dir = _sweep_dir(args)
    if sweep_dir is not None:  # a verdict left by an earlier sweep into this folder is not this one's
        (sweep_dir / sweeps.SUMMARY).unlink(missing_ok=True)
    try:
        train_app()
    finally:
        rundirs.let_go()
    summary = sweeps.read_summary(sweep_dir) if sweep_dir is not None else None  # SweepSummary wrote it
    if summary and summary[1]:
        raise GanLabError(sweeps.failure_message(sweep_dir, *summary))
    if info.enabled:
        distributed.finish()


def _sweep_dir(args: list[str]) -> Path | None:
    # a multirun's folder, as own_output_dir passed it to Hydra (None for a single run, or one Hydra resolves)
    if not {"-m", "--multirun"} & set(args):
        return None
    given = next((a.split("=", 1)[1] for a in args if a.startswith("hydra.sweep.dir=")), None)
    return Path(given) if given and "${" not in given else None


# Subcommands: name -> function taking the remaining arguments.
def _lazy(module: str, name: str) -> Callable[[list[str]], None]:
    # import a command's module only when it runs: `gan-lab train` stays quick to start
    def command(args: list[str]) -> None:
        import importlib

        getattr(importlib.import_module(module), name)(args)
    return command


COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "train": train_command,
    "sample": _lazy("gan_lab.app.commands", "sample_command"),
    "eval": _lazy("gan_lab.app.commands", "eval_command"),
    "report": _lazy("gan_lab.app.commands", "report_command"),
    "classifier": _lazy("gan_lab.app.commands", "classifier_command"),
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `gan-lab` command: dispatch to a subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["help"] and len(argv) > 1:  # `gan-lab help <command>` is `gan-lab <command> --help`
        argv = [argv[1], "--help", *argv[2:]]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    try:
        command = COMMANDS.get(argv[0])
        if command is None:
            meant = did_you_mean(argv[0], COMMANDS)  # '; did you mean train?', or ''
            raise GanLabError(f"Unknown command {argv[0]!r}{meant or '.'} gan-lab knows: {', '.join(COMMANDS)}. "
                              f"Run gan-lab --help for usage.")
        command(argv[1:])
    except GanLabError as err:
        report_error(err)
        sys.exit(2)
    except KeyboardInterrupt:
        report_interrupt()

