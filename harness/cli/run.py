"""``harness run``: train one backend and write runs/<run_id>/, or continue one with ``--resume``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import build_config
from ..errors import HarnessError
from .settings import add_setting_flags, settings_from_args


def _cmd_run(args: argparse.Namespace) -> int:
    from ..training.run import execute, resume  # lazy: `harness --help` needs no numpy stack

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


def register(commands) -> None:
    """Add ``run`` to the CLI's subcommands."""
    run = commands.add_parser("run", help="train one backend and write runs/<run_id>/")
    add_setting_flags(run)
    run.add_argument("--out", type=Path, help="folder for run folders (default runs/)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    run.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                     help="also checkpoint every N steps (default 0: at each epoch's end only)")
    run.set_defaults(handler=_cmd_run)
