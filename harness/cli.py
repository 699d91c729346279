"""The command line: ``harness run | compare | parity | report | list | data | bench``.

User and environment errors (HarnessError, bad flags) print one line and exit
2; Ctrl-C exits 130; anything else is a harness bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from .backend import backend_names
from .config import build_config
from .errors import HarnessError
from .flags import Parser, add_setting_flags, settings_from_args
from .tolerances import value

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import execute, resume

    if args.checkpoint_every < 0:
        raise HarnessError(f"--checkpoint-every {args.checkpoint_every} must be >= 0 (0: at each epoch's end only)")
    if args.resume:
        given = sorted(settings_from_args(args)) + (["out"] if args.out is not None else [])
        if given:
            raise HarnessError(f"--resume takes every setting from {args.resume}/config.json, but "
                               f"{', '.join(given)} was also given; drop those flags")
        outcome = resume(args.resume, args.data_dir, args.quiet, args.checkpoint_every)
    else:
        config = build_config(settings_from_args(args))
        outcome = execute(config, args.out or Path("runs"), args.data_dir, args.quiet, args.checkpoint_every)
    s = outcome.summary
    print(f"{s['model']} on {s['dataset']} with {s['backend']}/{s['device']}: test accuracy "
          f"{s['test_accuracy']:.2%} (onnxruntime {s['onnx_test_accuracy']:.2%}, max |logit diff| "
          f"{s['onnx_max_abs_diff']:.1e}), {s['epochs']} epochs in {s['train_seconds']:.1f} s, "
          f"{s['images_per_s']:,.0f} images/s -> {outcome.run_dir}")
    return 0


def _backend_list(text: str) -> list[str]:
    """``--backends a,b`` as names, each a known backend."""
    names = [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in backend_names()]
    if unknown or not names:
        raise HarnessError(f"unknown backend(s) {unknown} in --backends {text!r}; "
                           f"expected a comma-separated subset of {', '.join(backend_names())}")
    return names


def _finish_report(report, config, reports_dir: Path) -> int:
    from .report import verdict_table
    from .workflow import exit_code, write

    write(report, config, reports_dir)
    print(verdict_table(report))
    print(f"reports: {reports_dir}/ (summary.md, agreement.csv, runs.csv, ... and PNG plots)")
    return exit_code(report)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .runs import read_run_info
    from .workflow import build_report, check_comparable, obtain_control, obtain_runs, saved_controls

    if args.runs:
        config = check_comparable(args.runs)
        runs = {read_run_info(run_dir)["backend"]: run_dir for run_dir in args.runs}
        # Controls that an earlier compare left beside the given folders (they are never trained here).
        controls = saved_controls(config, list(runs), args.runs[0].parent) if args.control else {}
    else:
        config = build_config(settings_from_args(args))
        backends = _backend_list(args.backends)
        runs = obtain_runs(config, backends, args.out, args.fresh, args.data_dir, args.quiet)
        trained = [name for name in backends if isinstance(runs[name], Path)]
        control = obtain_control(config, trained[0], args.out, args.fresh, args.data_dir, args.quiet) \
            if args.control and len(trained) > 1 else None  # a control serves a pair of trained runs
        if isinstance(control, str):
            print(f"note: no control run ({control}); trained pairs keep the fixed top-1 floor")
        controls = {trained[0]: control} if isinstance(control, Path) else {}
    return _finish_report(build_report(config, runs, args.data_dir, controls), config, args.reports)


def _cmd_report(args: argparse.Namespace) -> int:
    from .workflow import build_report, check_comparable, latest_runs_by_backend, saved_controls

    runs = latest_runs_by_backend(args.runs)
    config = check_comparable(list(runs.values()))
    controls = saved_controls(config, list(runs), args.runs)
    return _finish_report(build_report(config, dict(runs), args.data_dir, controls), config, args.reports)


def _allowance_note(row) -> str:
    """Says so when a row is over its fixed budget and within it only by float32's spread or, in lockstep,
    by Adam's steps along float32 noise."""
    spread, noise = (float(row.get(key, 0.0)) for key in ("spread", "noise"))
    spread, noise = (0.0 if math.isnan(v) else v for v in (spread, noise))  # the column is absent in other modes
    if not row.get("passed", False) or not (spread > 0 or noise > 0):
        return ""
    factor = value("float32", "spread_factor")
    budget = float(row["allowed"]) - factor * spread - noise
    if float(row["rel"]) <= budget:
        return ""
    parts = [f"{factor:g} x float32's spread {spread:.1e} from {int(row['undecided'])} ReLU/max-pool decisions "
             "float32 cannot make"] if spread > 0 else []
    if noise > 0:
        parts.append(f"{noise:.1e} for Adam's steps along float32 noise (gradients float32 cannot tell from zero)")
    return f" (over the {budget:.0e} budget, under {float(row['allowed']):.1e} = budget + {' + '.join(parts)})"


def _whose_rounding(row) -> str:
    """Each side's distance from the float64 step with its own decisions, when the row has them."""
    sides = [(row.get(f"backend_{side}"), float(row.get(f"rel64_matched_{side}", math.nan))) for side in "ab"]
    if any(math.isnan(distance) for _, distance in sides):
        return ""
    return "; each side from that float64 step: " + ", ".join(f"{name} {distance:.1e}" for name, distance in sides)


def _parity_lines(frame, failure) -> list[str]:
    lines = []
    for mode in ("forward", "backward", "lockstep", "synchronised"):
        rows = frame[frame["mode"] == mode]
        if rows.empty:
            continue
        worst = rows.loc[rows["rel"].astype(float).idxmax()]
        where = (f"step {int(worst['step'])}, " if mode in ("lockstep", "synchronised")
                 else f"{worst['pair']}, " if mode == "forward" else "")
        lines.append(f"{mode:13s} worst rel. diff {float(worst['rel']):.2e} ({where}{worst['param']})"
                     f"  {'PASS' if rows['passed'].all() else 'FAIL'}{_allowance_note(worst)}")
        if "rel_matched" in rows and rows["rel_matched"].notna().any():
            left = rows.loc[rows["rel_matched"].astype(float).idxmax()]
            lines.append(f"{'':13s} decision-matched {float(left['rel_matched']):.2e} (step {int(left['step'])}, "
                         f"{left['param']}): left once each side is compared with float64 taking its own "
                         f"undecidable decisions{_whose_rounding(left)}")
    if failure:
        pair = f", {failure['pair']}" if failure["mode"] == "forward" else ""
        lines.append(f"verdict: FAILED: first divergence in {failure['mode']} at {failure['param']}{pair}"
                     f" (max_abs {failure['max_abs']:.2e}, rel {failure['rel']:.2e})")
    else:
        lines.append(f"verdict: PASSED ({len(frame)} checks)")
    return lines


def _cmd_parity(args: argparse.Namespace) -> int:
    from .workflow import EXIT_FAILED, run_parity

    config = build_config(settings_from_args(args))
    names = _backend_list(args.backends)
    if len(names) != 2 or names[0] == names[1]:
        raise HarnessError(f"--backends {args.backends!r} must name two different backends of {', '.join(backend_names())}")
    if args.steps < 1:
        raise HarnessError(f"--steps {args.steps} must be >= 1")
    modes = ["lockstep", "synchronised"] if args.mode == "both" else [args.mode]
    frame, failure = run_parity(config, names, args.steps, modes, args.data_dir, args.reports)
    print("\n".join(_parity_lines(frame, failure)))
    print(f"reports: {args.reports}/parity.csv, {args.reports}/parity.png")
    return EXIT_FAILED if failure else 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .listing import print_listing

    print_listing(args.data_dir)
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import download

    root = args.data_dir or Path(os.environ.get("HARNESS_DATA_DIR", "data"))
    print(f"{args.name} is in {download(args.name, root)}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchSettings, parse_models, parse_positive_ints, run_bench
    from .bench_report import progress_line, ratio_lines, write_bench
    from .runs import ensure_writable_dir

    for flag, given in (("--repeats", args.repeats), ("--steps", args.steps), ("--warmup", args.warmup),
                        ("--threads", args.threads)):
        if given is not None and given < 1:
            raise HarnessError(f"{flag} {given} must be >= 1")
    settings = BenchSettings(_backend_list(args.backends), parse_models(args.models),
                             parse_positive_ints(args.batch_sizes, "--batch-sizes"), args.repeats, args.steps,
                             args.warmup, args.dataset, args.device, args.data_dir, args.threads)
    ensure_writable_dir(args.reports, "reports folder")  # before minutes of measuring, not after
    rows = run_bench(settings, lambda part: print(progress_line(part), flush=True))
    frame, csv, png = write_bench(rows, args.reports)
    print("\n".join(ratio_lines(frame)))
    print(f"reports: {csv}" + (f", {png}" if png else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full CLI parser."""
    parser = Parser(prog="harness", description="Train one model spec in PyTorch and MindSpore; compare them.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    run = commands.add_parser("run", help="train one backend and write runs/<run_id>/")
    add_setting_flags(run)
    run.add_argument("--out", type=Path, help="folder for run folders (default runs/)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    run.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                     help="also checkpoint every N steps (default 0: at each epoch's end only)")
    run.set_defaults(handler=_cmd_run)
    compare = commands.add_parser("compare", help="train every backend with one config and cross-check them")
    add_setting_flags(compare)
    compare.add_argument("--backends", default="pytorch,mindspore", help="comma-separated (default both)")
    compare.add_argument("--out", type=Path, default=Path("runs"), help="run folders (reused when the config matches)")
    compare.add_argument("--reports", type=Path, default=Path("reports"), help="where the report goes")
    compare.add_argument("--fresh", action="store_true", help="train again even if a matching run exists")
    compare.add_argument("--runs", type=Path, nargs="+", help="compare these run folders instead of training")
    compare.add_argument("--control", action=argparse.BooleanOptionalAction, default=True,
                         help="also train the first backend from initial weights one float32 step away, "
                              "so trained pairs are judged against what float32 noise alone does (default on)")
    compare.set_defaults(handler=_cmd_compare)
    parity = commands.add_parser("parity", help="step-level parity of two backends and the first divergent layer")
    add_setting_flags(parity)
    parity.add_argument("--backends", default="pytorch,mindspore", help="the two backends (default pytorch,mindspore)")
    parity.add_argument("--steps", type=int, default=20, help="training steps per mode (default 20)")
    parity.add_argument("--mode", choices=["lockstep", "synchronised", "both"], default="both")
    parity.add_argument("--reports", type=Path, default=Path("reports"))
    parity.set_defaults(handler=_cmd_parity)
    report = commands.add_parser("report", help="rebuild the reports from saved runs, without training")
    report.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run folders (default runs/)")
    report.add_argument("--reports", type=Path, default=Path("reports"))
    report.add_argument("--data-dir", type=Path)
    report.set_defaults(handler=_cmd_report)
    listing = commands.add_parser("list", help="models, datasets and backends available here")
    listing.add_argument("--data-dir", type=Path)
    listing.set_defaults(handler=_cmd_list)
    data = commands.add_parser("data", help="dataset utilities")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    download = data_commands.add_parser("download", help="download a dataset with torchvision (needs internet)")
    download.add_argument("name")
    download.add_argument("--data-dir", type=Path)
    download.set_defaults(handler=_cmd_data)
    bench = commands.add_parser("bench", help="images/s of the harness loop, a bare loop and inference, per backend")
    bench.add_argument("--backends", default="pytorch,mindspore", help="comma-separated (default both)")
    bench.add_argument("--models", default="lenet5", help="comma-separated model names (default lenet5)")
    bench.add_argument("--batch-sizes", default="1,64,256", help="comma-separated (default 1,64,256)")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the median is reported")
    bench.add_argument("--steps", type=int, help="timed steps per measurement (default 200; 5 for VGG)")
    bench.add_argument("--warmup", type=int,
                       help="untimed steps first, graph compilation included (default 5; 2 for VGG)")
    bench.add_argument("--dataset", help="default: mnist (cifar10 for 3-channel models) if found, else synthetic")
    bench.add_argument("--device", default="cpu", help="device of every backend (default cpu)")
    bench.add_argument("--threads", type=int, help="CPU threads of every framework and ONNX Runtime "
                       "(default: each one's own default)")
    bench.add_argument("--data-dir", type=Path)
    bench.add_argument("--reports", type=Path, default=Path("reports"), help="where bench.csv and bench.png go")
    bench.set_defaults(handler=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as interrupt:
        print(f"interrupted: {interrupt}" if str(interrupt) else "interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
