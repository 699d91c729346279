"""Command-line flags: one per RunConfig setting, and a parser whose errors are one line.

The flags' own defaults are unset, so that a recipe or config file shows
through; each flag's help names RunConfig's default and the valid choices.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from ..backend import backend_names
from ..config import (DECAY_SCOPES, FITS, OPTIMIZERS, SCHEDULES, SECTIONS, TOP_LEVEL, RunConfig, read_recipe,
                      read_settings_file, recipe_names, valid_keys)
from ..errors import HarnessError
from ..model.zoo import ACTIVATIONS, INITS, POOLS


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (exit 2) instead of usage + error."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--epoch 3` is a typo to report, not `--epochs 3`
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:
        raise HarnessError(f"{message} (see `{self.prog} --help`)")


def _flag_type(annotation: str):
    if annotation.startswith("bool"):
        return None
    return next(t for n, t in (("int", int), ("float", float), ("str", str)) if annotation.startswith(n))


_CHOICES = {"activation": ACTIVATIONS, "pool": POOLS, "init": INITS, "fit": FITS, "optimizer": OPTIMIZERS,
            "decay_scope": DECAY_SCOPES, "schedule": SCHEDULES}
_TOP_DEFAULTS = {f.name: f.default for f in fields(RunConfig) if f.name in TOP_LEVEL}


def _setting_help(name: str, default) -> str:
    if default is None:
        shown = "the model's own" if name in ("activation", "pool") else "all samples"
    else:
        shown = default
    choices = backend_names() if name == "backend" else _CHOICES.get(name)
    return f"default: {shown}" + (f"; one of {', '.join(choices)}" if choices else "")


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
    parser.add_argument("--data-dir", type=Path, help="where datasets are (default: $HARNESS_DATA_DIR, ./data)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


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
