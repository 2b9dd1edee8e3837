"""The one front of every subcommand: its keys, its --help and its mistakes.

Users know `key=value` from `gan-lab train` (Hydra's overrides), so every option of the small
subcommands (sample, eval, report, classifier) is accepted both as `key=value` and as
`--key value` / `--key=value`; values are typed (a whole number stays a whole number,
true/false are booleans, null is None). Every subcommand, `train` included, prints its --help
through build_parser (usage line, description, keys with meanings and defaults, examples) and
reports a key it does not have with unknown_key's paragraph: one GanLabError (exit 2 in the
CLI) instead of argparse's usage dump.
"""

from __future__ import annotations

import argparse
import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from gan_lab.errors import GanLabError

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

TRUE, FALSE, NULL = ("true", "yes", "on", "1"), ("false", "no", "off", "0"), ("null", "none", "~", "")


@dataclass(frozen=True)
class Option:
    """One key of a subcommand: its default, type (int, float, bool or str) and meaning."""

    key: str
    default: Any
    type: type
    help: str
    aliases: tuple[str, ...] = ()  # other spellings, e.g. data.root for root (what `gan-lab train` calls it)


def _typed(option: Option) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        if text.strip().lower() in NULL and option.default is None:
            return None  # optional keys (no default) can be reset with key=null
        if option.type is bool:
            if text.strip().lower() in TRUE:
                return True
            if text.strip().lower() in FALSE:
                return False
        else:
            try:
                return option.type(text)
            except ValueError:
                pass
        kind = {int: "a whole number", float: "a number", bool: "true or false"}[option.type]
        raise argparse.ArgumentTypeError(f"{option.key}={text!r} is not valid: it must be {kind}")
    return convert


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """'; did you mean <prefix><closest>?' for a misspelt key or option, or '' when nothing is close."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {' or '.join(prefix + c for c in close)}?" if close else ""


def _more(prog: str) -> str:
    return f"Run {prog} --help for its keys and what each one means."


def unknown_key(command: str, arg: str, key: str, choices: Iterable[str], prefix: str = "",
                listing: str = "") -> GanLabError:
    """The paragraph every subcommand gives for a key it does not have: the key meant, `listing` (what it has), --help."""
    return GanLabError(f"gan-lab {command}: unknown argument {arg!r}: no key {prefix}{key}"
                       f"{did_you_mean(key, choices, prefix) or '.'} {listing} {_more(f'gan-lab {command}')}")


class _Parser(argparse.ArgumentParser):
    # argparse prints usage and exits on a mistake; gan-lab reports one paragraph instead
    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("argument --") and ": " in message:
            message = message.split(": ", 1)[1]  # our type errors name the key themselves
        raise GanLabError(f"{self.prog}: {message}. {_more(self.prog)}")


class _Help(argparse.RawDescriptionHelpFormatter):
    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return "  ".join(f"{s[2:]}=" for s in action.option_strings if s.startswith("--"))


SPELLINGS = "Every key is given as key=value (or --key value)."


def build_parser(command: str, summary: str, options: list[Option],
                 positionals: list[tuple[str, str]] = (), examples: str = "", usage: str | None = None,
                 note: str = SPELLINGS) -> argparse.ArgumentParser:
    """An argparse parser for `gan-lab <command>`: optional positionals, then the key=value options.

    Its --help is every subcommand's: the usage line, the summary, the keys with their meanings and
    defaults, `note`, and the examples.
    """
    usage = usage or f"gan-lab {command} {' '.join(f'[{name}]' for name, _ in positionals)} [key=value ...]"
    parser = _Parser(prog=f"gan-lab {command}", description=summary, formatter_class=_Help, allow_abbrev=False,
                     usage=usage.replace("  ", " "),
                     epilog=note + (f"\n\nexamples:\n{examples}" if examples else ""))
    for name, meaning in positionals:
        parser.add_argument(name, nargs="?", help=meaning)
    keys = parser.add_argument_group("keys")
    for option in options:
        shown = "none" if option.default is None else str(option.default).lower() if option.type is bool \
            else option.default
        keys.add_argument(*(f"--{k}" for k in (option.key, *option.aliases)), dest=option.key, type=_typed(option),
                          default=option.default, metavar="",
                          help=option.help if "default:" in option.help or "required" in option.help
                          else f"{option.help} (default: {shown})")
    return parser


def parse(parser: argparse.ArgumentParser, args: list[str]) -> dict[str, Any]:
    """Parse `key=value` / `--key value` arguments; --help prints the usage and exits 0."""
    known = [s[2:] for action in parser._actions for s in action.option_strings if s.startswith("--")]
    tokens: list[str] = []
    for arg in args:
        key, sep, value = arg.partition("=")
        name = key[2:] if arg.startswith("--") else key if sep and not arg.startswith("-") else None
        if name is not None and name not in known:
            raise unknown_key(parser.prog.removeprefix("gan-lab "), arg, name, known,
                              listing=f"It takes key=value arguments: {', '.join(f'{k}=' for k in known if k != 'help')}.")
        # key=value is --key=value: one parser for both spellings
        tokens.append(f"--{arg}" if sep and not arg.startswith("-") else arg)
    return vars(parser.parse_args(tokens))


# ---- gan-lab train's --help: the same shape, its keys read from conf/ ------------------------

TRAIN_SUMMARY = """Train a GAN composed from one option of each config group (group=option), with any key overridden.

What a run costs, measured on CPUs and GPUs: the README's "What a run costs"; a run prints its ETA.
Outputs go to outputs/<date>/<time>/ (multirun: outputs/multirun/<time>/<n>_<overrides>/), a directory
of its own for every run; train.log keeps what the console showed, config_resolved.yaml the config
that ran. The same command with hydra.run.dir=<dir> again: nothing to do once it completed, it
continues with a larger train.steps; -m with hydra.sweep.dir=<dir> again runs only unfinished jobs.
Open them with: tensorboard --logdir outputs

groups:
{groups}"""
TRAIN_NOTE = ("Every key is given as key=value (Hydra's overrides: +key=value adds a key, -m key=a,b sweeps it). "
              "The keys are those of the\ngroups chosen on this command line: gan-lab train loss=hinge --help lists "
              "hinge's. --cfg job prints the composed config,\n--hydra-help lists Hydra's own flags "
              "(Powered by Hydra, https://hydra.cc).")
TRAIN_EXAMPLES = """  gan-lab train                                   # WGAN-GP on ring8: quick on a CPU
  gan-lab train loss=wgan_gp data=mnist data.root=/path/to/data   # the headline run: a GPU job
  gan-lab train loss=wgan_gp data=mnist train.steps=500 train.eval_every=0   # a quick look on a CPU
  gan-lab train -m loss=wgan_gp loss.lambda_gp=0.1,1,10,100"""


def yaml_comments(text: str) -> dict[str, str]:
    """The comment beside each key of a YAML file, by dotted key; an indented comment line below one continues it."""
    found: dict[str, str] = {}
    nodes: list[tuple[int, str]] = []  # (indent, name) of the mappings the current line sits in
    last, last_indent = None, 0
    for line in text.splitlines():
        stripped, indent = line.strip(), len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            if last is not None and indent > last_indent:
                found[last] = f"{found[last]} {stripped[1:].strip()}".strip()
            continue
        match = re.match(r"([A-Za-z_][\w]*):(.*)$", stripped)
        last = None
        if not match:
            continue
        while nodes and nodes[-1][0] >= indent:
            nodes.pop()
        key = ".".join([name for _, name in nodes] + [match.group(1)])
        value, _, comment = match.group(2).partition(" #")
        if not value.strip():  # a mapping: its keys follow, indented
            nodes.append((indent, match.group(1)))
        found[key], last, last_indent = comment.strip(), key, indent
    return found


def train_parser(overrides: list[str]) -> argparse.ArgumentParser:
    """`gan-lab train`'s --help: its groups' options and every key of the config the overrides compose.

    Each key's meaning is the comment beside it in conf/ (the chosen option's YAML, else another
    option's of the same group), its default the composed value.
    """
    from importlib.resources import files

    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    conf = files("gan_lab.conf")
    groups = {d.name: sorted(f.name.removesuffix(".yaml") for f in d.iterdir() if f.name.endswith(".yaml"))
              for d in conf.iterdir() if d.is_dir() and d.name != "hydra"}
    groups = {name: options for name, options in sorted(groups.items()) if options}
    picked = [a for a in overrides if "=" in a and not a.startswith("-") and "," not in a]
    with initialize_config_module(config_module="gan_lab.conf", version_base="1.3"):
        try:
            cfg = compose("train", overrides=picked, return_hydra_config=True)
        except Exception:  # an override that does not compose: the defaults' keys (training says what is wrong)
            cfg = compose("train", return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    raw = OmegaConf.to_container(cfg, resolve=False)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. an interpolation of an environment variable that is not set
        resolved = raw

    comments: dict[str, dict[str, str]] = {}

    def meaning(key: str) -> str:
        top, _, rest = key.partition(".")
        if top not in groups:
            where = [("train", key)]
        else:
            chosen = str(choices.get(top))
            where = [(f"{top}/{option}", rest) for option in [chosen, *groups[top]] if option in groups[top]]
        for name, sub in where:
            if name not in comments:
                comments[name] = yaml_comments(conf.joinpath(f"{name}.yaml").read_text())
            if comments[name].get(sub):
                return comments[name][sub]
        return ""

    options = []

    def add(plain: dict, shown: dict, prefix: str) -> None:
        for key, value in plain.items():
            if str(key).startswith("_"):
                continue
            if isinstance(value, dict):
                add(value, shown[key], f"{prefix}{key}.")
                continue
            default = shown[key]
            text = "null" if default is None else str(default).lower() if isinstance(default, bool) else default
            source = f" from {value}" if isinstance(value, str) and value.startswith("${") else ""
            options.append(Option(f"{prefix}{key}", default, str,
                                  f"{meaning(prefix + str(key))} (default: {text}{source})".strip()))

    add(raw, resolved, "")
    listing = "\n".join(f"  {name}: {', '.join(options)}" + (f"  (chosen: {choices[name]})" if choices.get(name) else "")
                        for name, options in groups.items())
    return build_parser("train", TRAIN_SUMMARY.format(groups=listing), options, examples=TRAIN_EXAMPLES,
                        usage="gan-lab train [group=option ...] [key=value ...] [-m] [--cfg job]", note=TRAIN_NOTE)


def conf_options(group: str) -> list[str]:
    """The options of a config group, sorted: the names of conf/<group>/*.yaml (what `group=<option>` accepts).

    Tests, scripts, help texts and the typo check read their lists of losses, models, data sets and
    optimizers here, so adding a YAML adds the option everywhere. Read from the installed package (gan_lab.conf).
    """
    from importlib.resources import files

    folder = files("gan_lab.conf").joinpath(group)
    return sorted(f.name.removesuffix(".yaml") for f in folder.iterdir() if f.name.endswith(".yaml"))
