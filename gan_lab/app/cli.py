"""The composition root: the only code that sees the whole Hydra config.

`gan-lab train [overrides]` composes conf/ into one config, prints it, builds the
objects (data, models, loss, optimizers) and hands them to `train.train(...)`.
Errors a user can cause surface as one readable paragraph and exit code 2.
"""

from __future__ import annotations

import inspect
import re
import sys
import traceback
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from gan_lab import sweeps
from gan_lab.data import build_data, check_batch_size
from gan_lab.errors import GanLabError
from gan_lab.models import check_critic
from gan_lab.options import did_you_mean
from gan_lab.runs.checkpoint import LAST, load_checkpoint, resume_hint
from gan_lab.runs.files import disk_full_explained
from gan_lab.runs.safety import Interrupted, config_differences, hand_over
from gan_lab.runs.tracker import console
from gan_lab.sweeps import job_threads, objective_value, read_status, write_status

USAGE = """usage: gan-lab <command> [key=value ...]

commands:
  train    train a GAN composed from the config groups loss, model, data, optimizer
  sample   sample from a checkpoint: gan-lab sample checkpoint=<run dir or .pt> n=64 [interpolate=true]
  eval     every metric that applies to a checkpoint's data: gan-lab eval checkpoint=<run dir or .pt>
  report   one table of a sweep's runs (+ CSV, Markdown, PNG): gan-lab report <sweep dir> [sort=-metric] [x=key]
  classifier  train the digit classifier the MNIST-like metrics use: gan-lab classifier train data=mnist
           [data.root=/path/to/data] [force=true] (the metrics otherwise train it on first use)

gan-lab <command> --help lists a command's keys, their meanings and defaults.

examples:
  gan-lab train
  gan-lab train loss=wgan_gp data=mnist data.root=/path/to/data
  gan-lab train -m loss=wgan_gp loss.lambda_gp=0.1,1,10,100
  gan-lab report outputs/multirun/<date_time> sort=-metrics/modes_covered
"""


def report_error(err: Exception) -> None:
    """Print a user error as one paragraph, no traceback."""
    # soft_wrap: no hard line breaks inside paths and overrides, so they copy-paste whole
    console.print(f"[bold red]gan-lab: error:[/] {escape(str(err))}", soft_wrap=True, highlight=False)


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


# Arguments a builder gets from gan-lab at build time, never from its config node.
_NOT_KEYS = ("self", "args", "kwargs", "settings", "shape", "n_classes", "augment", "device", "params")


def _takes(target: Any) -> list[str]:
    # the keyword arguments a builder (a _target_ string or a callable) declares; [] when it cannot be read
    try:
        builder = hydra.utils.get_object(target) if isinstance(target, str) else target
        return [name for name in inspect.signature(builder).parameters if name not in _NOT_KEYS]
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
    keys = []
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
            options = sorted(f.name.removesuffix(".yaml") for f in conf.joinpath(name).iterdir()
                             if f.name.endswith(".yaml"))
            for option in values:
                if isinstance(option, str) and option not in options:
                    raise GanLabError(f"no option {name}={option}{did_you_mean(option, options, f'{name}=')} "
                                      f"The {name} options are: {', '.join(options)}.")
            if all(isinstance(option, str) for option in values):
                prefix = "++" if override.is_force_add() else "+" if override.is_add() else ""
                choices.append((prefix + name, values))
        elif not (override.is_add() or override.is_force_add()):
            keys.append(name)
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
    for key in keys:
        missing = [_missing(cfg, key) for cfg in configs]
        if all(missing):
            where, part, known = missing[0]
            hint = did_you_mean(part, known, f"{where}." if where else "")
            raise GanLabError(f"no key {(where + '.' if where else '') + part}{hint}" + (
                " " if hint else f": {'the config' if not where else where} has the keys {', '.join(known)}. "
                f"To add a key the config does not have (an argument its builder takes), write +{key}=... ") +
                "`gan-lab train --cfg job` prints every key.")


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


def summary_table(result: dict[str, float]) -> Table:
    """The end-of-run table: final losses, metrics, steps and time."""
    table = Table(title="gan-lab train: done", show_header=False, title_justify="left")
    table.add_column(style="cyan")
    table.add_column(justify="right")
    table.add_row("generator steps", f"{int(result['step'])}")
    table.add_row("time", f"{result['time/seconds']:.1f} s")
    for tag, value in result.items():
        if tag.startswith(("loss/", "critic/wasserstein", "grad_norm/", "metrics/", "metrics_raw/")):
            table.add_row(tag, f"{value:.4f}")
    return table


def print_outputs(run_dir: Path) -> None:
    """Where the run's outputs are, as whole lines (a table cell would cut long paths)."""
    for name, where in (("run directory", run_dir), ("checkpoint", run_dir / "checkpoints" / "last.pt"),
                        ("compare runs", f"tensorboard --logdir {run_dir.parent}")):
        console.print(f"[cyan]{name}[/]: {escape(str(where))}", soft_wrap=True, highlight=False)


def run_training(cfg: DictConfig, run_dir: Path, on_start: Callable[[dict[str, Any]], None] = lambda plain: None,
                 follow_free_cores: bool = False) -> dict[str, float]:
    """Build every object the config describes and train; returns the final scalars.

    follow_free_cores: a CPU run on one process sets its thread count to the cores other processes
    leave free (threads: auto, gan_lab.runs.busy); otherwise it keeps the count it was given.

    on_start(resolved config) is called once everything is built and checked, just before training.
    """
    from gan_lab.runs.tracker import NullTracker, Tracker
    from gan_lab.training import distributed
    from gan_lab.training.train import TrainSettings, train

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
    loss = _build("loss", lambda: instantiate(cfg.loss), "loss", plain["loss"].get("_target_"), plain["loss"])
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
    if loss.unroll:
        from gan_lab.training.unroll import check

        check(opt_d, ranks, compiled=bool(settings.compile))
    if ranks > 1:
        console.print(f"[bold]data-parallel[/] {ranks} ranks x batch {settings.batch_size} = effective batch "
                      f"{ranks * settings.batch_size}; learning rates "
                      f"{'x ' + str(ranks) + ' (lr_scaling=linear)' if lr_scale > 1 else 'unchanged (lr_scaling=none)'}")
    resume = load_resume(cfg.resume, run_dir, plain, bool(cfg.resume_force), settings.steps)
    evaluator = None
    if cfg.metrics and distributed.is_main():
        from gan_lab.evaluation.evaluate import make_evaluator

        evaluator = make_evaluator(data, cfg.data.get("root"), inception_weights=cfg.inception_weights)

    print_config(cfg)  # only now: a refused config gets its one-paragraph error alone
    on_start(plain)
    console.print(f"[bold]device[/] {device}  [bold]run directory[/] {run_dir}")
    start = resume["step"] if resume else 0
    reporter = Tracker if distributed.is_main() else NullTracker  # rank 0 alone writes
    cpu_threads = torch.get_num_threads() if device.type == "cpu" else 0  # watched for a busy machine
    with reporter(run_dir, settings.steps, start_step=start, cpu_threads=cpu_threads,
                  adapt_threads=follow_free_cores and ranks == 1) as tracker:
        result = train(G, critic, loss, data, opt_g, opt_d, settings, tracker, run_dir, plain, resume, evaluator)
        tracker.hparams(_hparams(plain))
    console.print(summary_table(result))
    print_outputs(run_dir)
    return result


def load_resume(resume: str | None, run_dir: Path, plain: dict[str, Any], force: bool,
                steps: int) -> dict[str, Any] | None:
    """The checkpoint to continue from, refused when the config changed what training means."""
    if resume == "auto":
        # a re-run in the same run directory (a requeued job, hydra.run.dir=...) continues it
        if not (run_dir / "checkpoints" / LAST).is_file():
            return None
        resume = str(run_dir)
    if not resume:
        return None
    state = load_checkpoint(resume)
    differences = config_differences(state["config"], plain)
    if differences and not force:
        raise GanLabError(
            f"Refusing to resume from {resume}: the config differs from the checkpoint's in keys that "
            f"change training: {'; '.join(differences)}. Use the checkpoint's values, start a fresh run "
            f"directory, or pass resume_force=true to resume anyway.")
    if state["step"] >= steps:
        raise GanLabError(f"The checkpoint {resume} is already at step {state['step']}, and "
                          f"train.steps={steps}: raise train.steps to train further.")
    console.print(f"[bold]resuming[/] from step {state['step']} of {resume}")
    return state


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
    """The Hydra task behind `gan-lab train`: one job of a run or of a sweep; returns its objective.

    The job holds its run directory (gan_lab.runs.rundirs) and writes run_dir/status.json when it
    starts and ends (for `gan-lab report`), and run_dir/train.log with what the console showed.
    A directory that already holds this very run, completed, is left as it is (a sweep
    re-launched into its own directory runs only its missing, failed or interrupted jobs). A
    refusal before training never rewrites the record of a completed or interrupted run there.
    In a sweep a user error fails only its own job: it is printed and marked, the sweeper gets
    None (Optuna records a failed trial; NaN would crash its Hydra plugin) and the other jobs
    go on; `gan-lab train -m` then exits 2 naming the failed jobs. A single run refused before
    training removes the directory it created. Bugs are marked too, then raised with their traceback.
    """
    from gan_lab.runs import rundirs, runlog
    from gan_lab.training import distributed

    job = HydraConfig.get()
    run_dir = Path(job.runtime.output_dir)
    overrides = list(job.overrides.task)
    sweep, main = job.mode == RunMode.MULTIRUN, distributed.is_main()  # under torchrun, rank 0 speaks for the run
    name = f"job {job.job.num} ({' '.join(overrides)})" if sweep else "the run"

    def mark(status: str, **fields: Any) -> None:
        if main:
            write_status(run_dir, status, overrides=overrides, **fields)

    if main:
        try:
            rundirs.hold(run_dir)  # a single run's is already held, since train_command
        except GanLabError as err:
            report_error(GanLabError(f"{name} skipped: {err}") if sweep else err)
            if sweep:
                return None
            sys.exit(2)
        runlog.current = runlog.RunLog(console, run_dir / f"{job.job.name}.log")
    previous = (read_status(run_dir) or {}).get("status")
    kept = previous in ("completed", "interrupted")  # results on disk that a refused re-run must not relabel
    began = False

    def start(plain: dict[str, Any]) -> None:
        nonlocal began
        began = True
        mark("running")
        if main:
            rundirs.write_resolved(run_dir, plain)

    if not kept:
        mark("running")
    result: dict[str, float] = {}
    try:
        record = _finished(cfg, run_dir)
        if record is not None:
            console.print(f"[bold green]gan-lab:[/] {run_dir} already holds {name}, completed at step "
                          f"{cfg.train.steps}: nothing to do (raise train.steps to train further).",
                          soft_wrap=True, highlight=False)
            return (record.get("metrics") or {}).get(str(cfg.objective))
        threads = job_threads(cfg.threads, job.launcher if sweep else None)
        if threads:
            torch.set_num_threads(threads)  # n parallel jobs x threads <= cores: no oversubscription
        with disk_full_explained(run_dir, lambda: resume_hint(run_dir)):  # a full disk: one paragraph
            # threads: auto on a single run (no launcher sharing the cores out): follow the free cores
            result = run_training(cfg, run_dir, start, follow_free_cores=threads is None and cfg.threads == "auto")
        # rank 0 alone computes metrics/*: the other ranks of a torchrun job have no objective to return
        objective = objective_value(result, str(cfg.objective)) if main else float("nan")
        mark("completed", objective={str(cfg.objective): objective}, metrics=result, threads=torch.get_num_threads())
    except GanLabError as err:
        if began or not kept:
            mark("failed", error=str(err), metrics=result)
        if sweep:
            report_error(GanLabError(f"{name} failed, the sweep goes on: {err}"))
            return None
        report_error(err)
        if main and not began:  # refused before training: leave no folder behind (if this run made it)
            _close_log()
            rundirs.remove_if_fresh(run_dir)
        sys.exit(2)
    except Interrupted as stop:
        mark("interrupted", error=str(stop))
        console.print(f"[bold yellow]gan-lab: stopped by {stop}[/]; a checkpoint of that step is in "
                      f"{run_dir / 'checkpoints'}. Continue this run in place with the same command plus "
                      f"hydra.run.dir={run_dir} (it resumes from that checkpoint on its own); resume={run_dir} "
                      f"instead continues it in a new run directory, leaving this one as it is.",
                      soft_wrap=True, highlight=False)
        hand_over(stop.signum)  # under submitit: its checkpoint() and requeue, then it exits
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:
        mark("interrupted", error="KeyboardInterrupt")
        raise
    except Exception as err:
        mark("failed", error=f"{type(err).__name__}: {err}")
        if runlog.current is not None:
            runlog.current.exception()
        raise
    finally:
        _close_log()
        rundirs.release(run_dir)
    return objective


def _finished(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    # the status record when run_dir already holds this run, completed (a config that does not
    # resolve is not: the run itself then reports why)
    from gan_lab.runs.rundirs import finished

    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        return None
    return finished(run_dir, plain)


def _close_log() -> None:
    from gan_lab.runs import runlog

    if runlog.current is not None:
        runlog.current.close()
        runlog.current = None


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
    "sample": _lazy("gan_lab.evaluation.evaluate", "sample_command"),
    "eval": _lazy("gan_lab.evaluation.evaluate", "eval_command"),
    "report": _lazy("gan_lab.evaluation.report", "report_command"),
    "classifier": _lazy("gan_lab.evaluation.classifier", "classifier_command"),
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `gan-lab` command: dispatch to a subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
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
