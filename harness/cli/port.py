"""``harness port``: check a hand-written MindSpore port of a PyTorch model, both the user's own files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import HarnessError
from .settings import add_setting_flags, settings_from_args

# Settings that choose or change the harness's own model: a port's models are the user's files.
_MODEL_SETTINGS = ("model", "activation", "pool", "init", "init_ulps", "backend")
MODES = ("lockstep", "synchronised", "both", "none")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise HarnessError(f"--input-shape {text!r} is not C,H,W of three positive integers, e.g. 1,32,32")
    return shape


def _cmd_port(args: argparse.Namespace) -> int:
    from ..port.load import parse_factory_args
    from ..port.session import PortRequest, run_port

    given = [f"--{key.replace('_', '-')}" for key in _MODEL_SETTINGS if getattr(args, key, None) is not None]
    if given:
        raise HarnessError(f"harness port takes its models from --torch and --mindspore; leave out {', '.join(given)}")
    settings = settings_from_args(args)
    dropped = {key: settings.pop(key) for key in _MODEL_SETTINGS if key in settings}
    if dropped:  # a recipe's or config file's model: its data and training settings still apply
        shown = ", ".join(f"{key}={value}" for key, value in dropped.items())
        print(f"note: {shown} from --recipe/--config left out: the port's models are the two files")
    if args.steps < 0:
        raise HarnessError(f"--steps {args.steps} must be >= 0")
    if args.num_classes is not None and args.num_classes < 1:
        raise HarnessError(f"--num-classes {args.num_classes} must be >= 1")
    modes = {"both": ("lockstep", "synchronised"), "none": ()}.get(args.mode, (args.mode,))
    request = PortRequest(
        torch=args.torch, mindspore=args.mindspore, factory_args=parse_factory_args(args.factory_args),
        input_shape=_shape(args.input_shape) if args.input_shape else None, num_classes=args.num_classes,
        map_file=args.map, weights_from={"torch": "pytorch"}.get(args.weights_from, args.weights_from),
        settings=settings, data_dir=args.data_dir, out=args.out, reports=args.reports, fresh=args.fresh,
        control=args.control, train=args.train, steps=args.steps if modes else 0, modes=modes, quiet=args.quiet)
    result = run_port(request)
    print(f"next: read {args.reports}/summary.md (the weight map, the conventions findings, every layer, then every "
          "check); fix the first finding or the first divergent layer and run harness port again")
    return result.code


def register(commands) -> None:
    """Add ``port`` to the CLI's subcommands."""
    port = commands.add_parser(
        "port", help="check your own MindSpore port of your own PyTorch model: weights, conventions, every layer, "
                     "steps, training")
    port.add_argument("--torch", required=True, metavar="FILE.py:FACTORY",
                      help="your PyTorch model: the file and the function (or class) in it that returns the nn.Module "
                           "(the file is imported from its own folder, so its siblings import)")
    port.add_argument("--mindspore", required=True, metavar="FILE.py:FACTORY",
                      help="your MindSpore port: the file and the function (or class) that returns the nn.Cell")
    port.add_argument("--factory-args", nargs="+", metavar="KEY=VALUE",
                      help="arguments for the factories, each a Python literal (num_classes=10 width=0.5); "
                           "each factory gets the ones it takes")
    port.add_argument("--input-shape", metavar="C,H,W",
                      help="the input of one image (default: worked out from the model where it can be)")
    port.add_argument("--num-classes", type=int, metavar="K",
                      help="the logits' length, checked against the model (default: the model's output)")
    port.add_argument("--map", type=Path, metavar="MAP.toml",
                      help="tensor pairs harness could not find itself: the MAP.toml it wrote, completed")
    port.add_argument("--weights-from", choices=("torch", "mindspore"), default="torch",
                      help="whose initial weights both models start from (default torch)")
    add_setting_flags(port)
    for action in port._actions:  # argparse offers no public accessor; the model flags stay only to be refused
        if action.dest in _MODEL_SETTINGS:
            action.help = argparse.SUPPRESS
    port.add_argument("--steps", type=int, default=5, help="training steps per parity mode (default 5)")
    port.add_argument("--mode", choices=MODES, default="both", metavar="MODE",
                      help=f"parity's step modes: one of {', '.join(MODES)} (default both)")
    port.add_argument("--train", action=argparse.BooleanOptionalAction, default=True,
                      help="train both models side by side and compare them as harness compare does (default on)")
    port.add_argument("--control", action=argparse.BooleanOptionalAction, default=True,
                      help="also train the PyTorch model from initial weights one float32 step away, so the trained "
                           "pair is judged against what float32 noise alone does (default on)")
    port.add_argument("--out", type=Path, default=Path("runs/port"),
                      help="the port's run folders, one folder per version of your two files (default runs/port/)")
    port.add_argument("--reports", type=Path, default=Path("reports"), help="where the report goes (default reports/)")
    port.add_argument("--fresh", action="store_true",
                      help="train again even if these files were trained with these settings (default: reuse)")
    port.set_defaults(handler=_cmd_port)
