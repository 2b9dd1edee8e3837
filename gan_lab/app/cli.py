"""The composition root: the only code that sees the whole Hydra config.

`gan-lab <command>` is dispatched here. `gan-lab train [overrides]` composes conf/ into one
config, prints it, builds the objects (data, models, loss, optimizers) and hands them to
`train.train(...)`; the job around that (run folder, status, resume policy, signals, final
summary) is gan_lab.app.job. Errors a user can cause surface as one readable paragraph and
exit code 2.
"""

from __future__ import annotations

import inspect
import re
import sys
import traceback
from dataclasses import fields
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.tree import Tree

from gan_lab import sweeps
from gan_lab.app import job
from gan_lab.app.job import report_error
from gan_lab.data import build_data, check_batch_size
from gan_lab.errors import GanLabError
from gan_lab.losses import Loss
from gan_lab.models import check_critic
from gan_lab.app.options import conf_options, did_you_mean, unknown_key
from gan_lab.runs.rebuild import BUILD_TIME
from gan_lab.runs.tracker import console
from gan_lab.training.settings import CriticSchedule, TrainSettings

USAGE = """usage: gan-lab <command> [key=value ...]

commands:
  train    train a GAN composed from the config groups loss, model, data, optimizer
  sample   sample from a checkpoint: gan-lab sample checkpoint=<run dir or .pt> n=64 [interpolate=true]
  eval     every metric that applies to a checkpoint's data: gan-lab eval checkpoint=<run dir or .pt>
  report   one table of a sweep's runs (+ CSV, Markdown, PNG): gan-lab report <sweep dir> [sort=-metric] [x=key]
  classifier  train the digit classifier the MNIST-like metrics use: gan-lab classifier train data=mnist
           [data.root=/path/to/data] [force=true] (the metrics otherwise train it on first use)

gan-lab <command> --help (or -h, or gan-lab help <command>) lists a command's keys, their meanings and defaults.

examples:
  gan-lab train
  gan-lab train loss=wgan_gp data=mnist data.root=/path/to/data
  gan-lab train -m loss=wgan_gp loss.lambda_gp=0.1,1,10,100
  gan-lab report outputs/multirun/<date_time> sort=-metrics/modes_covered
"""


# Modules whose frames lie between a config key and the code it reaches. An exception raised with
# only these on its stack is about the call itself (a key the builder does not take, a target that
# does not exist, an optimizer setting torch.optim refuses): a bad override. One raised inside a
# model, loss or data class is a bug there, and keeps its traceback.
_PLUMBING = ("gan_lab.app.cli", "hydra.", "omegaconf.", "importlib", "_frozen_importlib", "torch.optim.")


def _bad_override(err: BaseException) -> bool:
    """Whether a failed build is the config's fault rather than a bug in the code it calls."""
    root = err
    while root.__cause__ is not None:  # Hydra wraps what the call raised; judge the original
        root = root.__cause__
    if root is not err and not isinstance(root, (TypeError, ValueError, ImportError)):
        return False
    frames = [frame.f_globals.get("__name__", "") for frame, _ in traceback.walk_tb(root.__traceback__)]
    return all(name.startswith(_PLUMBING) for name in frames)


def _takes(target: Any) -> list[str]:
    # the keyword arguments a builder (a _target_ string or a callable) declares; [] when it cannot be read
    try:
        builder = hydra.utils.get_object(target) if isinstance(target, str) else target
        return [name for name in inspect.signature(builder).parameters if name not in BUILD_TIME]
    except (ImportError, AttributeError, TypeError, ValueError):
        return []


def _unknown_key(err: BaseException, node: str | Callable[[str], str], target: Any,
                 known: Iterable[str]) -> GanLabError | None:
    # "unexpected keyword argument 'x'" from a builder called with a key its config node gained by
    # +node.x=...: the key that was meant, from the node's own keys and the builder's arguments
    found = _UNEXPECTED.search(str(err.__cause__ or err))
    if not found:
        return None
    key = found.group(1)
    node = node if isinstance(node, str) else node(key)
    name = target if isinstance(target, str) else getattr(target, "__qualname__", str(target))
    takes = [k for k in dict.fromkeys([*known, *_takes(target)]) if k != key and not k.startswith("_")]
    hint = did_you_mean(key, takes, f"{node}.")
    return GanLabError(f"no key {node}.{key}{hint}" + (" " if hint else f": {name} takes {', '.join(takes)}. ")
                       + f"Check the overrides against `gan-lab train --cfg job`, which prints every key.")


_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


def _build(what: str, make: Callable[[], Any], node: str | Callable[[str], str] | None = None,
           target: Any = None, known: Iterable[str] = ()) -> Any:
    # Hydra wraps whatever the target raises: unwrap our own errors, explain a bad override in one
    # paragraph, and let a bug inside a builder raise as itself, with the line that failed. `node`:
    # the config key the builder's arguments come from (or key -> that node), `target` the builder,
    # `known` the node's keys: a key the builder does not take then gets the key that was meant.
    try:
        return make()
    except (InstantiationException, TypeError, ValueError) as err:
        if isinstance(err.__cause__, GanLabError):
            raise err.__cause__ from None
        if not _bad_override(err):
            cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
            raise cause from cause.__cause__
        unknown = _unknown_key(err, node, target, known) if node else None
        if unknown is not None:
            raise unknown from None
        what_failed = " ".join(str(err).split())  # Hydra's message spans lines: one paragraph
        raise GanLabError(f"Could not build the {what} from its config: {what_failed}. "
                          f"Check the {what}'s overrides against `gan-lab train --cfg job`.") from None


def check_overrides(args: list[str]) -> None:
    """Refuse a key or group option of `gan-lab train` that does not exist, naming the one that was meant.

    Hydra itself only says it "could not override" a misspelt key (and suggests appending it with
    +, which then fails in the builder), or lists a group's options. Keys are looked up in the
    config composed with the command line's group choices (a sweep's first choice, then each other
    one); anything this check cannot judge is left to Hydra.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    parser, conf = OverridesParser.create(), files("gan_lab.conf")
    choices: list[tuple[str, list[Any]]] = []  # (group override's prefix and name, its options)
    keys: list[tuple[str, str]] = []  # (key, the argument that names it)
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue  # flags (-m, --cfg job) and their values
        try:
            override = parser.parse_override(arg)
        except Exception:  # Hydra's own error says what is wrong with it
            continue
        name = override.key_or_group
        if name.split(".")[0].split("/")[0] == "hydra" or override.package is not None or override.is_delete():
            continue
        if conf.joinpath(name).is_dir():  # a config group: each option is a YAML in conf/<group>/
            value = override.value()
            values = value.list if isinstance(value, ChoiceSweep) else [value]
            options = conf_options(name)
            for option in values:
                if isinstance(option, str) and option not in options:
                    raise GanLabError(f"no option {name}={option}{did_you_mean(option, options, f'{name}=')} "
                                      f"The {name} options are: {', '.join(options)}.")
            if all(isinstance(option, str) for option in values):
                prefix = "++" if override.is_force_add() else "+" if override.is_add() else ""
                choices.append((prefix + name, values))
        elif not (override.is_add() or override.is_force_add()):
            keys.append((name, arg))
    if not keys:
        return
    # the config of the first choice of every group, then of each other choice of one group
    picks = [[f"{name}={values[0]}" for name, values in choices]]
    picks += [[f"{n}={v if n == name else vs[0]}" for n, vs in choices] for name, values in choices
              for v in values[1:]]
    configs = []
    for pick in picks[:16]:  # a few compositions at most: this check must stay quick
        try:
            with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
                configs.append(compose("train", overrides=pick))
        except Exception:  # a choice that does not compose: Hydra says why
            return
    for key, arg in keys:
        missing = [_missing(cfg, key) for cfg in configs]
        if all(missing):
            where, part, known = missing[0]
            raise unknown_key("train", arg, part, known, f"{where}." if where else "", listing=(
                f"{'The config' if not where else where} has the keys {', '.join(known)}. To add a key the config "
                f"does not have (an argument its builder takes), write +{key}=... (`gan-lab train --cfg job` prints "
                f"the composed config)."))


def _missing(cfg: DictConfig, key: str) -> tuple[str, str, list[str]] | None:
    # (the node, its first missing part, the node's keys) when the dotted key is not in cfg; None when
    # it is, or when a part of it is not a mapping (Hydra judges those)
    node, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return None
        if part not in node:
            return ".".join(parts[:i]), part, [str(k) for k in node.keys() if not str(k).startswith("_")]
        node = node._get_node(part)  # not node[part]: no interpolation is resolved here
    return None


def build_optimizer(shared: DictConfig, per_network: DictConfig, params: Any, network: str,
                    lr_scale: float = 1) -> torch.optim.Optimizer:
    """The shared optimizer config, a preset's `per_network.<network>` node and this network's non-null overrides.

    A preset (conf/optimizer/adam_ttur.yaml) sets per-network values inside the optimizer node, since a
    group YAML cannot set the top-level optimizer_<network> nodes (train.yaml's own nulls merge after it).
    """
    overrides = {k: v for k, v in OmegaConf.to_container(per_network, resolve=True).items() if v is not None}
    preset = OmegaConf.to_container(shared, resolve=True).pop("per_network", None) or {}
    if not isinstance(preset, dict) or not all(isinstance(preset.get(n, {}), dict) for n in ("generator", "critic")):
        raise GanLabError(f"optimizer.per_network={preset!r} is not a mapping of generator / critic settings, "
                          f"e.g. optimizer.per_network.critic.lr=4e-4.")
    cfg = OmegaConf.merge({k: v for k, v in shared.items() if k != "per_network"}, preset.get(network, {}), overrides)
    lr = cfg.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        key = (f"optimizer_{network}" if "lr" in overrides
               else f"optimizer.per_network.{network}" if "lr" in preset.get(network, {}) else "optimizer")
        raise GanLabError(f"{key}.lr={lr} is out of range: the learning rate must be a number > 0, "
                          f"e.g. {key}.lr=1e-4.")
    cfg.lr = lr * lr_scale
    def node(key: str) -> str:  # where the key came from: the command line's, the preset's or the shared node
        return (f"optimizer_{network}" if key in overrides else f"optimizer.per_network.{network}"
                if key in preset.get(network, {}) else "optimizer")

    return _build(f"{network} optimizer", lambda: instantiate(cfg)(params), node, cfg.get("_target_"), cfg.keys())


def build_loss(node: dict[str, Any]) -> tuple[Loss, CriticSchedule]:
    """The `loss` node as the loss (its math and penalties) and the critic's schedule (n_critic, reg_every, ...)."""
    knobs = [f.name for f in fields(CriticSchedule)]  # the training knobs: the loop reads them, the loss never
    schedule = _build("loss", lambda: CriticSchedule(**{k: node[k] for k in knobs if k in node}), "loss",
                      CriticSchedule, node)
    loss = _build("loss", lambda: instantiate({k: v for k, v in node.items() if k not in knobs}), "loss",
                  node.get("_target_"), node)
    return loss, schedule


def print_config(cfg: DictConfig) -> None:
    """The composed config as a rich tree, interpolations resolved."""
    tree = Tree("[bold]config")

    def add(node: Tree, value: Any) -> None:
        for key, child in value.items():
            if isinstance(child, dict):
                add(node.add(f"[bold cyan]{key}"), child)
            else:
                node.add(f"[cyan]{key}[/]: {child}")

    add(tree, OmegaConf.to_container(cfg, resolve=True))
    console.print(tree)


def run_training(cfg: DictConfig, run_dir: Path, on_start: Callable[[dict[str, Any]], None] = lambda plain: None,
                 follow_free_cores: bool = False) -> dict[str, float]:
    """Build every object the config describes and train; returns the final scalars.

    follow_free_cores: a CPU run on one process sets its thread count to the cores other processes
    leave free (threads: auto, gan_lab.runs.busy); otherwise it keeps the count it was given.

    on_start(resolved config) is called once everything is built and checked, just before training.
    """
    from gan_lab.runs.tracker import NullTracker, Tracker
    from gan_lab.training import distributed
    from gan_lab.training.train import train

    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise GanLabError(f"The config does not resolve: {err}") from None
    settings = _build("train settings", lambda: TrainSettings(**plain["train"]), "train", TrainSettings,
                      plain["train"])
    device = distributed.device_for(distributed.launched(), str(cfg.device)) or distributed.choose_device(str(cfg.device))
    torch.manual_seed(int(cfg.seed))  # the same initial weights on every rank

    data = _build("data set", lambda: build_data(plain["data"], device), "data", plain["data"].get("_target_"),
                  plain["data"])
    G, critic = _build("model", lambda: instantiate(cfg.model, shape=data.shape, n_classes=data.n_classes,
                                                    augment=list(data.augment)),
                       "model", plain["model"].get("_target_"), plain["model"])
    G, critic = G.to(device), critic.to(device)
    loss, schedule = build_loss(plain["loss"])
    for note in check_critic(critic, loss, settings.batch_size):  # what trains, but means something else
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True, highlight=False)
    check_batch_size(data, settings.batch_size)
    ranks = distributed.world_size()
    if ranks > 1:
        if critic.norm == "batch":
            raise GanLabError("Data-parallel training needs a critic without batch norm: each rank would "
                              "normalise its own real and fake batches apart. Use model.critic_norm=layer.")
        torch.manual_seed(int(cfg.seed) + distributed.rank())  # each rank its own batches and noise
    if cfg.lr_scaling not in ("none", "linear"):
        raise GanLabError(f"lr_scaling={cfg.lr_scaling!r} is not known: use none or linear.")
    lr_scale = ranks if cfg.lr_scaling == "linear" else 1
    opt_g = build_optimizer(cfg.optimizer, cfg.optimizer_generator, G.parameters(), "generator", lr_scale)
    opt_d = build_optimizer(cfg.optimizer, cfg.optimizer_critic, critic.parameters(), "critic", lr_scale)
    if schedule.unroll:
        from gan_lab.training.unroll import check

        check(opt_d, ranks, compiled=bool(settings.compile))
    if ranks > 1:
        console.print(f"[bold]data-parallel[/] {ranks} ranks x batch {settings.batch_size} = effective batch "
                      f"{ranks * settings.batch_size}; learning rates "
                      f"{'x ' + str(ranks) + ' (lr_scaling=linear)' if lr_scale > 1 else 'unchanged (lr_scaling=none)'}")
    resume = job.load_resume(cfg.resume, run_dir, plain, bool(cfg.resume_force), settings.steps)
    evaluator = None
    if cfg.metrics and distributed.is_main():
        from gan_lab.evaluation.evaluate import make_evaluator, no_metrics_note

        evaluator = make_evaluator(data, cfg.data.get("root"), inception_weights=cfg.inception_weights)
        if evaluator is None:
            console.print(f"[yellow]note:[/] {no_metrics_note(data)}", soft_wrap=True, highlight=False)

    print_config(cfg)  # only now: a refused config gets its one-paragraph error alone
    on_start(plain)
    console.print(f"[bold]device[/] {device}  [bold]run directory[/] {run_dir}")
    console.print("[bold]parameters[/] " + "  ".join(f"{name} {sum(p.numel() for p in net.parameters()):,}"
                                                     for name, net in (("G", G), ("critic", critic))))
    start = resume["step"] if resume else 0
    reporter = Tracker if distributed.is_main() else NullTracker  # rank 0 alone writes
    cpu_threads = torch.get_num_threads() if device.type == "cpu" else 0  # watched for a busy machine
    with reporter(run_dir, settings.steps, start_step=start, cpu_threads=cpu_threads,
                  adapt_threads=follow_free_cores and ranks == 1) as tracker:
        result = train(G, critic, loss, schedule, data, opt_g, opt_d, settings, tracker, run_dir, plain, resume,
                       evaluator)
        tracker.hparams(_hparams(plain))
    return result


def _hparams(plain: dict[str, Any]) -> dict[str, Any]:
    # flat keys for the HParams dashboard: the groups' choices and their settings. TensorBoard lists
    # the keys whose values differ between runs (a sweep's) first, then the others in name order, and
    # ticks the first 5: the choices are capitalised (Loss, Model, Data, Optimizer) so that they sort
    # before every setting, and the swept keys and the choices are what the dashboard shows at first.
    flat: dict[str, Any] = {}
    choices = HydraConfig.get().runtime.choices
    for group in ("loss", "model", "data", "optimizer"):
        flat[group.capitalize()] = choices.get(group)
        for key, value in plain[group].items():
            if not key.startswith("_") and not isinstance(value, (dict, list)):
                flat[f"{group}.{key}"] = value
    flat.update({f"train.{k}": v for k, v in plain["train"].items()})
    flat["seed"] = plain["seed"]
    return flat


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

    # Hydra's rerun unpickles the named file: any file could run any code, so it is never offered
    # (argparse also takes any unique prefix of it, down to --e)
    if any(len(name) >= 3 and "--experimental-rerun".startswith(name) for name in (a.split("=", 1)[0] for a in args)):
        raise GanLabError("gan-lab train does not take Hydra's --experimental-rerun: it unpickles the file it "
                          "is given, which can run any code. Re-run a job with the overrides it recorded "
                          "(<run dir>/.hydra/overrides.yaml), or continue it with resume=<run dir>.")
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
    sweeps.last_sweep = None
    try:
        train_app()
    finally:
        rundirs.let_go()
    if sweeps.last_sweep and sweeps.last_sweep[2]:  # set by the SweepSummary callback of a multirun
        raise GanLabError(sweeps.failure_message(*sweeps.last_sweep))
    if info.enabled:
        distributed.finish()


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
            raise GanLabError(f"Unknown command {argv[0]!r}. gan-lab knows: {', '.join(COMMANDS)}. "
                              f"Run gan-lab --help for usage.")
        command(argv[1:])
    except GanLabError as err:
        report_error(err)
        sys.exit(2)
    except KeyboardInterrupt:
        report_interrupt()


def report_interrupt() -> NoReturn:
    """Ctrl-C outside the training loop (which checkpoints first): one line and exit 130, no traceback."""
    # every file gan-lab writes is written atomically, so what is on disk is whole
    sys.stderr.write("\ngan-lab: interrupted (Ctrl-C); files are written whole or not at all, so none is "
                     "left half-written.\n")
    sys.exit(130)  # 128 + SIGINT, what shells report for a Ctrl-C
