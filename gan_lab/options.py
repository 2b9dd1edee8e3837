"""Arguments of the small subcommands (sample, eval, report, classifier) through argparse.

Users know `key=value` from `gan-lab train` (Hydra's overrides), so every option is
accepted both as `key=value` and as `--key value` / `--key=value`; values are typed
(a whole number stays a whole number, true/false are booleans, null is None), `--help`
lists each key with its meaning and default, and a mistake is one GanLabError paragraph
(exit 2 in the CLI) instead of argparse's usage dump.
"""

from __future__ import annotations

import argparse
import difflib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from gan_lab.errors import GanLabError

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


class _Parser(argparse.ArgumentParser):
    # argparse prints usage and exits on a mistake; gan-lab reports one paragraph instead
    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("argument --") and ": " in message:
            message = message.split(": ", 1)[1]  # our type errors name the key themselves
        raise GanLabError(f"{self.prog}: {message}. Run {self.prog} --help for its keys.")


class _Help(argparse.RawDescriptionHelpFormatter):
    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return "  ".join(f"{s[2:]}=" for s in action.option_strings if s.startswith("--"))


def build_parser(command: str, summary: str, options: list[Option],
                 positionals: list[tuple[str, str]] = (), examples: str = "") -> argparse.ArgumentParser:
    """An argparse parser for `gan-lab <command>`: optional positionals, then the key=value options."""
    parser = _Parser(prog=f"gan-lab {command}", description=summary, formatter_class=_Help, allow_abbrev=False,
                     usage=f"gan-lab {command} {' '.join(f'[{name}]' for name, _ in positionals)} [key=value ...]"
                     .replace("  ", " "),
                     epilog="Every key is given as key=value (or --key value)." + (f"\n\nexamples:\n{examples}"
                                                                                    if examples else ""))
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
            raise GanLabError(f"{parser.prog}: unknown argument {arg!r}: no key {name}{did_you_mean(name, known)}. "
                              f"It takes key=value arguments: {', '.join(f'{k}=' for k in known if k != 'help')}. "
                              f"Run {parser.prog} --help for what each one means.")
        # key=value is --key=value: one parser for both spellings
        tokens.append(f"--{arg}" if sep and not arg.startswith("-") else arg)
    return vars(parser.parse_args(tokens))


def conf_options(group: str) -> list[str]:
    """The options of a config group, sorted: the names of conf/<group>/*.yaml (what `group=<option>` accepts).

    Tests, scripts and help texts read their lists of losses, models, data sets and optimizers here,
    so adding a YAML adds the option everywhere. Read from the installed package (gan_lab.conf).
    """
    from importlib.resources import files

    folder = files("gan_lab.conf").joinpath(group)
    return sorted(f.name.removesuffix(".yaml") for f in folder.iterdir() if f.name.endswith(".yaml"))
