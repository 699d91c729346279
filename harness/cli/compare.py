"""``harness compare`` (train every backend with one config and cross-check them) and ``harness report``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import build_config
from .settings import add_setting_flags, backend_list, settings_from_args


def _finish_report(report, config, reports_dir: Path) -> int:
    from ..compare.session import exit_code, write
    from ..report.summary import inconclusive_lines, verdict_table

    write(report, config, reports_dir)
    print(verdict_table(report))
    for line in inconclusive_lines(report):
        print(f"inconclusive: {line}")
    print(f"reports: {reports_dir}/ (summary.md, agreement.csv, runs.csv, ... and PNG plots)")
    print(f"next: read {reports_dir}/summary.md (the verdict, then every check) and look at curves.png, "
          f"confusion.png and logit_diffs.png; to go step by step: harness parity --model {config.model.model}")
    return exit_code(report)


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..compare.session import (build_report, check_comparable, label_runs, obtain_control, obtain_runs,
                                   saved_controls)

    if args.runs:
        runs = label_runs(args.runs)
        config = check_comparable(list(runs.values()))
        # Controls that an earlier compare left beside the given folders (they are never trained here).
        controls = saved_controls(config, list(runs), args.runs[0].parent) if args.control else {}
    else:
        config = build_config(settings_from_args(args))
        backends = backend_list(args.backends)
        runs = obtain_runs(config, backends, args.out, args.fresh, args.data_dir, args.quiet)
        trained = [name for name in backends if isinstance(runs[name], Path)]
        control = obtain_control(config, trained[0], args.out, args.fresh, args.data_dir, args.quiet) \
            if args.control and len(trained) > 1 else None  # a control serves a pair of trained runs
        if isinstance(control, str):
            print(f"note: no control run ({control}); trained pairs keep the fixed top-1 floor")
        controls = {trained[0]: control} if isinstance(control, Path) else {}
    return _finish_report(build_report(config, runs, args.data_dir, controls), config, args.reports)


def _cmd_report(args: argparse.Namespace) -> int:
    from ..compare.session import build_report, check_comparable, latest_runs_by_backend, saved_controls

    runs = latest_runs_by_backend(args.runs)
    config = check_comparable(list(runs.values()))
    controls = saved_controls(config, list(runs), args.runs)
    return _finish_report(build_report(config, dict(runs), args.data_dir, controls), config, args.reports)


def register(commands) -> None:
    """Add ``compare`` and ``report`` to the CLI's subcommands."""
    from ..backend import backend_names
    from .settings import DATA_DIR_HELP

    compare = commands.add_parser("compare", help="train every backend with one config and cross-check them")
    add_setting_flags(compare)
    compare.add_argument("--backends", default="pytorch,mindspore",
                         help=f"a comma-separated subset of {', '.join(backend_names())} (default pytorch,mindspore)")
    compare.add_argument("--out", type=Path, default=Path("runs"),
                         help="run folders, reused when the config matches (default runs/)")
    compare.add_argument("--reports", type=Path, default=Path("reports"),
                         help="where the report goes (default reports/)")
    compare.add_argument("--fresh", action="store_true",
                         help="train again even if a matching run exists (default: reuse it)")
    compare.add_argument("--runs", type=Path, nargs="+", help="compare these run folders instead of training")
    compare.add_argument("--control", action=argparse.BooleanOptionalAction, default=True,
                         help="also train the first backend from initial weights one float32 step away, "
                              "so trained pairs are judged against what float32 noise alone does (default on)")
    compare.set_defaults(handler=_cmd_compare)
    report = commands.add_parser("report", help="rebuild the reports from saved runs, without training")
    report.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run folders (default runs/)")
    report.add_argument("--reports", type=Path, default=Path("reports"),
                        help="where the report goes (default reports/)")
    report.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    report.set_defaults(handler=_cmd_report)
