"""The command line: ``harness run | list | data``.

User and environment errors (HarnessError, bad flags) print one line and exit
2; Ctrl-C exits 130; anything else is a harness bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

from .config import SECTIONS, TOP_LEVEL, build_config, read_recipe, read_settings_file, recipe_names
from .errors import HarnessError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (exit 2) instead of usage + error."""

    def error(self, message: str) -> None:
        raise HarnessError(f"{message} (see `{self.prog} --help`)")


def _flag_type(annotation: str):
    if annotation.startswith("bool"):
        return None
    return next(t for n, t in (("int", int), ("float", float), ("str", str)) if annotation.startswith(n))


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig setting (``--batch-size`` ...), default unset so files and recipes show through."""
    group = parser.add_argument_group("settings (override --recipe and --config)")
    for cls in SECTIONS.values():
        for f in fields(cls):
            flags = [f"--{f.name.replace('_', '-')}"] + (["--lr"] if f.name == "learning_rate" else [])
            kind = _flag_type(str(f.type))
            if kind is None:
                group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
            else:
                group.add_argument(*flags, dest=f.name, type=kind, default=None, metavar=f.name.upper())
    for name in TOP_LEVEL:
        group.add_argument(f"--{name}", dest=name, default=None)
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
    names = [f.name for cls in SECTIONS.values() for f in fields(cls)] + list(TOP_LEVEL)
    settings.update({n: getattr(args, n) for n in names if getattr(args, n, None) is not None})
    return settings


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import execute

    config = build_config(settings_from_args(args))
    outcome = execute(config, args.out, args.data_dir, quiet=args.quiet)
    s = outcome.summary
    print(f"{s['model']} on {s['dataset']} with {s['backend']}/{s['device']}: test accuracy "
          f"{s['test_accuracy']:.2%} (onnxruntime {s['onnx_test_accuracy']:.2%}, max |logit diff| "
          f"{s['onnx_max_abs_diff']:.1e}), {s['epochs']} epochs in {s['train_seconds']:.1f} s, "
          f"{s['images_per_s']:,.0f} images/s -> {outcome.run_dir}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .listing import print_listing

    print_listing(args.data_dir)
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import download

    root = args.data_dir or Path(os.environ.get("HARNESS_DATA_DIR", "data"))
    print(f"{args.name} is in {download(args.name, root)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full CLI parser."""
    parser = _Parser(prog="harness", description="Train one model spec in PyTorch and MindSpore; compare them.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="train one backend and write runs/<run_id>/")
    add_setting_flags(run)
    run.add_argument("--out", type=Path, default=Path("runs"), help="folder for run folders (default runs/)")
    run.set_defaults(handler=_cmd_run)
    listing = commands.add_parser("list", help="models, datasets and backends available here")
    listing.add_argument("--data-dir", type=Path)
    listing.set_defaults(handler=_cmd_list)
    data = commands.add_parser("data", help="dataset utilities")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    download = data_commands.add_parser("download", help="download a dataset with torchvision (needs internet)")
    download.add_argument("name")
    download.add_argument("--data-dir", type=Path)
    download.set_defaults(handler=_cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
