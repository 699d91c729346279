"""``harness sweep SWEEP.toml``: a matrix of settings and seeds, here or on a Ray cluster, judged across seeds."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..errors import HarnessError
from .settings import DATA_DIR_HELP

# Flags whose value the continue-command repeats when it is not the default (--fresh never: continuing reuses).
_REPEATED = (("executor", "--executor", "local"), ("address", "--address", None), ("workers", "--workers", None),
             ("threads", "--threads", None), ("out", "--out", Path("runs")), ("reports", "--reports", Path("reports")),
             ("data_dir", "--data-dir", None), ("storage", "--storage", "auto"), ("retries", "--retries", 3),
             ("checkpoint_every", "--checkpoint-every", 0))


def continue_command(args: argparse.Namespace) -> str:
    """The command that continues this sweep: the same flags but --fresh (finished runs are reused)."""
    words = ["harness", "sweep", str(args.file)]
    for dest, flag, default in _REPEATED:
        value = getattr(args, dest)
        if value is not None and value != default:
            words += [flag, str(value)]
    words += [flag for dest, flag in (("quiet", "--quiet"),) if getattr(args, dest)]
    words += [] if args.seed_reports else ["--no-seed-reports"]
    return shlex.join(words)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ..sweep.plan import read_plan  # lazy: `harness --help` needs no numpy stack
    from ..sweep.session import Options, run_sweep

    for flag, value, least in (("--workers", args.workers, 1), ("--threads", args.threads, 1),
                               ("--retries", args.retries, 0), ("--checkpoint-every", args.checkpoint_every, 0)):
        if value is not None and value < least:
            raise HarnessError(f"{flag} {value} must be >= {least}")
    if args.executor == "local" and (args.address or args.storage != "auto"):
        flag = "--address" if args.address else "--storage"
        raise HarnessError(f"{flag} is for --executor ray; the local executor writes into --out itself")
    plan = read_plan(args.file)
    options = Options(args.executor, args.address, args.workers, args.threads, args.out, args.reports, args.fresh,
                      args.data_dir, args.quiet, args.storage, args.retries, args.checkpoint_every, args.seed_reports)
    argv = ["harness", "sweep", str(args.file)] + (["--fresh"] if args.fresh else [])
    return run_sweep(plan, options, tuple(argv), continue_command(args))


def register(commands) -> None:
    """Add ``sweep`` to the CLI's subcommands."""
    sweep = commands.add_parser(
        "sweep", help="train a matrix of settings and seeds (locally or on a Ray cluster) and judge across seeds",
        description="Train every run a sweep file asks for (reusing completed runs by config hash), compare each "
                    "config at each seed as `harness compare` does, and judge each pair of backends across seeds.")
    sweep.add_argument("file", type=Path, metavar="SWEEP.toml",
                       help="control = true|false, [base] settings (or recipe = \"name\"), [axes] lists (seed, "
                            "model, backend, ...), [devices] per backend")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: a pool of worker processes here (default); ray: one task per run on an "
                            "existing Ray cluster")
    sweep.add_argument("--address", metavar="HOST:PORT", help="the Ray head (default: $RAY_ADDRESS)")
    sweep.add_argument("--workers", type=int, metavar="N",
                       help="local: worker processes (default: min(4, cores)); ray: runs in flight at once "
                            "(default: all)")
    sweep.add_argument("--threads", type=int, metavar="N",
                       help="CPU threads per run (local default: cores // workers; ray default 1, and a cpu run "
                            "asks Ray for as many CPUs)")
    sweep.add_argument("--out", type=Path, default=Path("runs"),
                       help="run folders, reused when the config matches (default runs/)")
    sweep.add_argument("--reports", type=Path, default=Path("reports"),
                       help="where the sweep report goes (default reports/; each seed's under reports/sweep/)")
    sweep.add_argument("--fresh", action="store_true",
                       help="train again even where a matching completed run exists (default: reuse it)")
    sweep.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP + "; the same path on every Ray worker")
    sweep.add_argument("--storage", choices=("auto", "shared", "ship"), default="auto",
                       help="ray: auto (workers that see --out write there, others send the run folder back "
                            "through Ray's object store, checksummed), shared, or ship (default auto)")
    sweep.add_argument("--retries", type=int, default=3, metavar="N",
                       help="start a run again this many times when its worker process dies; it resumes from its "
                            "last checkpoint (default 3)")
    sweep.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                       help="also checkpoint every N steps (default 0: at each epoch's end only)")
    sweep.add_argument("--seed-reports", action=argparse.BooleanOptionalAction, default=True,
                       help="write each seed's compare report under <reports>/sweep/ (default on)")
    sweep.add_argument("--quiet", action="store_true", help="no progress lines or bar (default off)")
    sweep.set_defaults(handler=_cmd_sweep)
