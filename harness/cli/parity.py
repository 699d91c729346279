"""``harness parity``: step-level parity of two backends and the first divergent layer, on the console."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..backend import backend_names
from ..config import build_config
from ..errors import EXIT_FAILED, HarnessError
from .settings import add_setting_flags, backend_list, settings_from_args


def _cmd_parity(args: argparse.Namespace) -> int:
    from ..parity.session import run_parity
    from ..report.summary import parity_lines

    config = build_config(settings_from_args(args))
    names = backend_list(args.backends)
    if len(names) != 2 or names[0] == names[1]:
        raise HarnessError(f"--backends {args.backends!r} must name two different backends of "
                           f"{', '.join(backend_names())}")
    if args.steps < 1:
        raise HarnessError(f"--steps {args.steps} must be >= 1")
    modes = ["lockstep", "synchronised"] if args.mode == "both" else [args.mode]
    frame, failure = run_parity(config, names, args.steps, modes, args.data_dir, args.reports, args.quiet)
    print("\n".join(parity_lines(frame, failure)))
    print(f"reports: {args.reports}/parity.csv, {args.reports}/parity.png")
    return EXIT_FAILED if failure else 0


def register(commands) -> None:
    """Add ``parity`` to the CLI's subcommands."""
    parity = commands.add_parser("parity", help="step-level parity of two backends and the first divergent layer")
    modes = ("lockstep", "synchronised", "both")
    add_setting_flags(parity)
    parity.add_argument("--backends", default="pytorch,mindspore",
                        help=f"two of {', '.join(backend_names())}, comma-separated (default pytorch,mindspore)")
    parity.add_argument("--steps", type=int, default=20, help="training steps per mode (default 20)")
    parity.add_argument("--mode", choices=modes, default="both", metavar="MODE",
                        help=f"one of {', '.join(modes)} (default both)")
    parity.add_argument("--reports", type=Path, default=Path("reports"),
                        help="where parity.csv and parity.png go (default reports/)")
    parity.set_defaults(handler=_cmd_parity)
