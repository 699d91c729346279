"""Command-line flags: one per RunConfig setting, and a parser whose errors are one line.

The flags' own defaults are unset, so that a recipe or config file shows
through; each flag's help names RunConfig's default and the valid choices.
"""

from __future__ import annotations

import argparse
import ast
import re
import textwrap
from dataclasses import fields
from difflib import get_close_matches
from pathlib import Path

from ..backend import backend_names
from ..config import (DECAY_SCOPES, FITS, OPTIMIZERS, SCHEDULES, SECTIONS, TOP_LEVEL, RunConfig, read_recipe,
                      read_settings_file, recipe_names, valid_keys)
from ..data.registry import DATASETS
from ..errors import HarnessError
from ..model.zoo import ACTIVATIONS, INITS, MODELS, POOLS


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help layout, but a line never breaks inside a name (``lenet-`` / ``sigmoid``) or a path."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (exit 2) instead of usage + error.

    The line suggests the closest valid flag or subcommand and names the ``--help`` of the
    (sub)command that was mistyped, not the top-level one.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--epoch 3` is a typo to report, not `--epochs 3`
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self.subcommands = None  # the action add_subparsers made: its names go into error messages

    def add_subparsers(self, **kwargs):
        """argparse's ``add_subparsers``, remembered so errors can list (and suggest) the subcommands."""
        self.subcommands = super().add_subparsers(**kwargs)
        return self.subcommands

    def parse_args(self, args=None, namespace=None):
        """argparse's ``parse_args``, but unknown flags are reported by the subcommand they were given to.

        argparse collects a subcommand's unknown flags and reports them from the top-level parser, whose
        ``--help`` does not list them; this walks down to the subcommand that was chosen.
        """
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self
            while isinstance(parser, Parser) and parser.subcommands is not None:
                chosen = getattr(parsed, parser.subcommands.dest, None)
                if chosen not in parser.subcommands.choices:
                    break
                parser = parser.subcommands.choices[chosen]
            parser.error(f"unrecognized arguments: {' '.join(extras)}{parser.flag_hint(extras)}")
        return parsed

    def flag_hint(self, extras: list[str]) -> str:
        """``"; did you mean --model?"`` for mistyped flags among ``extras``, or "" when none is close."""
        # argparse keeps the flags here and offers no public accessor for them
        flags = [flag for flag in self._option_string_actions if flag.startswith("--")]
        guesses = []
        for typed in (token.split("=", 1)[0] for token in extras if token.startswith("-") and token != "-"):
            close = get_close_matches(typed, flags, n=1)
            if close:
                guesses.append((typed, close[0]))
        if len(guesses) < 2:
            return "".join(f"; did you mean {flag}?" for _, flag in guesses)
        return "; did you mean " + ", ".join(f"{flag} for {typed}" for typed, flag in guesses) + "?"

    def error(self, message: str) -> None:
        """Raise a one-line HarnessError: argparse's message made specific, and where to read more."""
        raise HarnessError(f"{self._explain(message)} (see `{self.prog} --help`)")

    def _explain(self, message: str) -> str:
        """argparse's message, with the subcommands listed where one is missing and a suggestion for a typo."""
        commands = self.subcommands
        names = list(commands.choices) if commands is not None else []
        missing = message.partition("the following arguments are required: ")[2].split(", ")
        if commands is not None and commands.dest in missing:  # argparse would say `data_command`
            return f"{self.prog} needs a subcommand: {', '.join(names)}"
        invalid = re.match(r"argument (\S+): invalid choice: ('(?:[^'\\]|\\.)*'|\"[^\"]*\")", message)
        if not invalid:
            return message
        typed = ast.literal_eval(invalid[2])  # argparse quotes the value with repr()
        if commands is not None and invalid[1] in (commands.dest, commands.metavar):
            close = get_close_matches(typed, names, n=1)
            guess = f"; did you mean {close[0]}?" if close else ""
            return f"{self.prog} has no subcommand {typed!r} (valid: {', '.join(names)}){guess}"
        # argparse keeps the actions here and offers no public accessor for them
        choices = next((list(map(str, action.choices)) for action in self._actions
                        if action.choices and invalid[1] in ("/".join(action.option_strings), action.dest)), [])
        close = get_close_matches(str(typed), choices, n=1)
        return message + (f"; did you mean {close[0]}?" if close else "")


def _flag_type(annotation: str):
    if annotation.startswith("bool"):
        return None
    if annotation.startswith("tuple"):
        return str  # "91,136": config.py reads it as a list
    return next(t for n, t in (("int", int), ("float", float), ("str", str)) if annotation.startswith(n))


_CHOICES = {"model": tuple(MODELS), "dataset": tuple(DATASETS), "activation": ACTIVATIONS, "pool": POOLS,
            "init": INITS, "fit": FITS, "optimizer": OPTIMIZERS, "decay_scope": DECAY_SCOPES, "schedule": SCHEDULES}
# Devices are not a fixed set (cuda:N for any N), so their help names the forms and where to see the usable ones.
DEVICE_HELP = "auto, cpu, cuda[:N] or npu[:N]; `harness list` shows which work here"
DATA_DIR_HELP = "where datasets are (default: $HARNESS_DATA_DIR, then ./data)"
MODEL_FILE_HELP = (" or a file: PATH.onnx (your own network exported with torch.onnx.export: its layers, input "
                   "shape, classes and weights; see `harness import`) or SPEC.json (written by harness import "
                   "--save; trains from harness's own initial weights)")
_TOP_DEFAULTS = {f.name: f.default for f in fields(RunConfig) if f.name in TOP_LEVEL}


def _setting_help(name: str, default) -> str:
    if default is None:
        shown = "the model's own" if name in ("activation", "pool") else "all samples"
    else:
        shown = default
    if name == "device":
        return f"default: {shown}; {DEVICE_HELP}"
    choices = backend_names() if name == "backend" else _CHOICES.get(name)
    text = f"default: {shown}" + (f"; one of {', '.join(choices)}" if choices else "")
    return text + (MODEL_FILE_HELP if name == "model" else "")


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig setting (``--batch-size`` ...), default unset so files and recipes show through."""
    group = parser.add_argument_group("settings (override --recipe and --config)")
    for cls in SECTIONS.values():
        for f in fields(cls):
            flags = [f"--{f.name.replace('_', '-')}"] + (["--lr"] if f.name == "learning_rate" else [])
            kind = _flag_type(str(f.type))
            # argparse's default stays None so a recipe or config file shows through; the help names RunConfig's.
            shown = _setting_help(f.name, f.default)
            if kind is None:
                group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                   help=shown)
            else:
                group.add_argument(*flags, dest=f.name, type=kind, default=None, metavar=f.name.upper(), help=shown)
    for name in TOP_LEVEL:
        group.add_argument(f"--{name}", dest=name, default=None, help=_setting_help(name, _TOP_DEFAULTS[name]))
    parser.add_argument("--recipe", help=f"start from a shipped recipe: {', '.join(recipe_names())}")
    parser.add_argument("--config", type=Path, help="start from a flat TOML file of settings")
    parser.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar on a terminal and no progress lines in a log (default off)")


def settings_from_args(args: argparse.Namespace) -> dict:
    """Flat settings: recipe, then config file, then explicit flags."""
    settings: dict = {}
    if args.recipe:
        settings.update(read_recipe(args.recipe))
    if args.config:
        settings.update(read_settings_file(args.config))
    settings.update({n: getattr(args, n) for n in valid_keys() if getattr(args, n, None) is not None})
    return settings


def backend_list(text: str) -> list[str]:
    """``--backends a,b`` as names, each a known backend."""
    names = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in backend_names()]
    if unknown or not names:
        raise HarnessError(f"unknown backend(s) {unknown} in --backends {text!r}; "
                           f"expected a comma-separated subset of {', '.join(backend_names())}")
    return names
