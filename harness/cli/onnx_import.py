"""``harness import PATH.onnx [--save SPEC.json]``: the spec harness reads from a user's ONNX file."""

from __future__ import annotations

import argparse
import textwrap
from math import prod
from pathlib import Path

from ..config import printable
from ..errors import HarnessError
from ..model.spec import MODEL_INPUT, ModelSpec
from .inventory import WIDTH, table


def _kind(layer) -> str:
    """The layer's kind with the settings that tell two of a kind apart (``Conv2d 3x3 s2 p1 g32``)."""
    kind = type(layer).__name__
    if kind == "Conv2d":
        k = layer.kernel_size
        extras = [f"s{layer.stride}" if layer.stride > 1 else "", f"p{layer.padding}" if layer.padding else "",
                  f"g{layer.groups}" if layer.groups > 1 else ""]
        return " ".join(filter(None, [f"Conv2d {k}x{k}", *extras]))
    if kind == "Pool":
        return f"{layer.kind.capitalize()}Pool {layer.kernel_size}x{layer.kernel_size} s{layer.stride}"
    if kind == "Activation":
        detail = {"leaky_relu": f" {layer.negative_slope}", "gelu": f" {layer.approximate}"}.get(layer.kind, "")
        return f"{layer.kind}{detail}"
    if kind == "Dropout":
        return f"Dropout {layer.p}"
    if kind == "BatchNorm2d" and (layer.eps, layer.momentum) != (1e-5, 0.1):
        return f"BatchNorm2d eps {layer.eps} momentum {layer.momentum}"
    return kind


def _user_names(names: list[str]) -> str:
    """``bn1.*`` for a layer's tensors that share one module name, else the names."""
    stems = {name.rsplit(".", 1)[0] for name in names}
    if len(names) > 1 and len(stems) == 1 and all("." in name for name in names):
        return f"{stems.pop()}.*"
    return ", ".join(names)


def describe(spec: ModelSpec, source: str) -> list[str]:
    """The lines ``harness import`` prints: a row per layer, then the totals and the user's names.

    Args:
        spec: the imported spec.
        source: the file it came from, for the first line.

    Returns:
        Lines without newlines; the table is ``harness list``'s, its last column (the file's names) wrapped.
    """
    shapes, named, trainable = spec.param_shapes(), dict(spec.source_names), set(spec.trainable_names())
    rows = []
    for index, (row, layer) in enumerate(zip(spec.summary(), spec.layers)):
        users = [named[name] for name in (f"{layer.name}.{suffix}" for suffix in layer.param_shapes()) if name in named]
        # "-" for the layer above, as a chain reads; a graph's other edges (a residual Add's) by name.
        above = (spec.layers[index - 1].name if index else MODEL_INPUT,)
        inputs = "-" if row["inputs"] == above else ", ".join(row["inputs"])
        rows.append([row["layer"], _kind(layer), inputs, "x".join(map(str, row["output"])),
                     f"{row['params']:,}", _user_names(users)])
    buffers = sum(prod(shape) for name, shape in shapes.items() if name not in trainable)
    statistics = f" (+ {buffers:,} BatchNorm running statistics)" if buffers else ""
    notes = [f"total: {spec.num_params:,} trainable parameters{statistics}",
             "legend: inputs - is the layer above; ONNX names X.* are X.weight, X.bias and, for BatchNorm, "
             "X.running_mean, X.running_var",
             f"names: harness calls each tensor <layer>.<suffix> (weights.npz, parity); {len(spec.source_names)} of "
             f"{len(shapes)} have a name in the file (ONNX names; the spec keeps them as source_names)"]
    return [f"{source}: {len(spec.layers)} layers, input {'x'.join(map(str, spec.input_shape))}, "
            f"{spec.num_classes} classes",
            *table(["layer", "kind", "inputs", "output", "params", "ONNX names"], rows, frozenset({4})),
            *(line for note in notes for line in textwrap.wrap(note, WIDTH, subsequent_indent="  ",
                                                               break_on_hyphens=False, break_long_words=False))]


def _cmd_import(args: argparse.Namespace) -> int:
    from ..model.onnx_import import import_onnx  # lazy: `harness --help` needs no onnx
    from ..model.specfile import save_spec

    if args.path.suffix.lower() != ".onnx":
        raise HarnessError(f"harness import reads an ONNX file (PATH.onnx), got {printable(args.path)}")
    if args.save is not None and args.save.suffix.lower() != ".json":
        raise HarnessError(f"--save {printable(args.save)}: the spec file must end in .json, so --model reads it as a spec")
    spec, _ = import_onnx(args.path)
    print("\n".join(describe(spec, str(args.path))))
    if args.save is not None:
        save_spec(spec, args.save)
        print(f"saved: {args.save} (--model {args.save} trains this spec from harness's own initial weights; "
              f"--model {args.path} from the file's)")
    else:
        print(f"next: harness compare --model {args.path} (the file's weights), or --save SPEC.json to keep the spec")
    return 0


def register(commands) -> None:
    """Add ``import`` to the CLI's subcommands."""
    parser = commands.add_parser("import", help="read a network exported to ONNX and print its spec")
    parser.add_argument("path", type=Path, metavar="PATH.onnx",
                        help="an ONNX file, e.g. from torch.onnx.export (external weights in PATH.onnx.data)")
    parser.add_argument("--save", type=Path, metavar="SPEC.json",
                        help="also write the spec as JSON, for --model SPEC.json (no weights)")
    parser.set_defaults(handler=_cmd_import)
