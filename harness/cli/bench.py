"""``harness bench``: images/s of the harness loop, a bare loop and inference, per backend."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import HarnessError
from .settings import backend_list


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..bench.measure import BenchSettings, parse_models, parse_positive_ints, run_bench
    from ..bench.report import progress_line, ratio_lines, write_bench
    from ..runs.files import ensure_writable_dir

    for flag, given in (("--repeats", args.repeats), ("--steps", args.steps), ("--warmup", args.warmup),
                        ("--threads", args.threads)):
        if given is not None and given < 1:
            raise HarnessError(f"{flag} {given} must be >= 1")
    settings = BenchSettings(backend_list(args.backends), parse_models(args.models),
                             parse_positive_ints(args.batch_sizes, "--batch-sizes"), args.repeats, args.steps,
                             args.warmup, args.dataset, args.device, args.data_dir, args.threads,
                             quiet=args.quiet)
    ensure_writable_dir(args.reports, "reports folder")  # before minutes of measuring, not after
    rows = run_bench(settings, lambda part: print(progress_line(part), flush=True))
    frame, csv, png = write_bench(rows, args.reports)
    print("\n".join(ratio_lines(frame)))
    print(f"reports: {csv}" + (f", {png}" if png else ""))
    return 0


def register(commands) -> None:
    """Add ``bench`` to the CLI's subcommands."""
    from ..backend import backend_names
    from ..data.registry import DATASETS
    from ..model.zoo import MODELS
    from .settings import DATA_DIR_HELP, DEVICE_HELP

    bench = commands.add_parser("bench", help="images/s of the harness loop, a bare loop and inference, per backend")
    bench.add_argument("--backends", default="pytorch,mindspore",
                       help=f"a comma-separated subset of {', '.join(backend_names())} (default pytorch,mindspore)")
    bench.add_argument("--models", default="lenet5",
                       help=f"a comma-separated subset of {', '.join(MODELS)} (default lenet5)")
    bench.add_argument("--batch-sizes", default="1,64,256", help="comma-separated (default 1,64,256)")
    bench.add_argument("--repeats", type=int, default=3,
                       help="timed runs per measurement; the median is reported (default 3)")
    bench.add_argument("--steps", type=int, help="timed steps per measurement (default 200; 5 for VGG, ResNet, MobileNetV2)")
    bench.add_argument("--warmup", type=int,
                       help="untimed steps first, graph compilation included (default 5; 2 for VGG, ResNet, MobileNetV2)")
    bench.add_argument("--dataset", help="default: mnist (cifar10 for 3-channel models) if found, else synthetic; "
                       f"one of {', '.join(DATASETS)}")
    bench.add_argument("--device", default="cpu", help=f"device of every backend (default cpu); {DEVICE_HELP}")
    bench.add_argument("--threads", type=int, help="CPU threads of every framework and ONNX Runtime "
                       "(default: each one's own default)")
    bench.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    bench.add_argument("--reports", type=Path, default=Path("reports"),
                       help="where bench.csv and bench.png go (default reports/)")
    bench.add_argument("--quiet", action="store_true",
                       help="no progress bars or lines while measuring; results are still printed (default off)")
    bench.set_defaults(handler=_cmd_bench)
