"""The command line: ``harness run | compare | report | parity | port | list | data | import | bench | sweep``.

Each command is a module of this package with a ``register`` function. User and environment
errors (HarnessError, bad flags) print one line and exit 2; Ctrl-C exits 130; anything else is
a harness bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, HarnessError
from ..machine import keep_freed_memory
from . import bench, compare, inventory, onnx_import, parity, port, run, sweep
from .settings import Parser

# Each registers its subcommands, in help order.
COMMANDS = (run, compare, parity, port, inventory, onnx_import, bench, sweep)


def build_parser() -> argparse.ArgumentParser:
    """The full CLI parser."""
    parser = Parser(prog="harness", description="Train one model spec in PyTorch and MindSpore; compare them.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    keep_freed_memory()
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as interrupt:
        print(f"interrupted: {interrupt}" if str(interrupt) else "interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
