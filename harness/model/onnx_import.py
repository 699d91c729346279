"""A user's ONNX graph as a ``ModelSpec``, its initializers as the run's initial weights.

``import_onnx`` walks the graph's nodes in their (topological) order. Each node that computes on the
images becomes a spec layer; a node whose inputs are all constants (initializers, ``Constant`` nodes, or
shapes, whose batch axis stays a symbol) is folded here, so the shape arithmetic and casts exporters emit
around a flatten or a clip never reach the spec. Element-wise arithmetic on one tensor (``Div``, ``Erf``,
``Mul``, ``Pow``...) is an activation written out, as torch exports GELU below opset 20: the smallest run
of such nodes that has one output is evaluated here in float64 and named by the activation it equals.

Names: a layer is named after its weights' initializers (``layer1.0.conv1.weight`` -> ``layer1_0_conv1``),
else after its node, made an identifier and unique; ``spec.source_names`` maps each canonical tensor name
to the initializer it came from, so reports can show the user's own names.

Everything the spec cannot express is a one-line ``HarnessError`` naming the node, the op or the attribute
and its value, and what is supported; nothing is approximated.
"""

from __future__ import annotations

import functools
import keyword
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper

from ..config import EXTERNAL_DATA_SUFFIX, MODEL_FILE_LIMITS, printable, read_limited
from ..errors import HarnessError
from .spec import (MODEL_INPUT, Activation, Add, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool, Layer,
                   Linear, ModelSpec, Pool)
from .specfile import RESERVED_NAMES
from .weights import Weights

MAX_ONNX_BYTES = MODEL_FILE_LIMITS[".onnx"]
# The batch axis inside a shape the graph computes (Shape -> Gather -> Concat -> Reshape): a value no real
# dimension has, carried through the data-movement ops and refused by arithmetic.
BATCH = -(2**62) + 1
# Element-wise runs recognised as one activation may be this long (torch's tanh-GELU is 9 nodes).
MAX_RUN_NODES = 24
# The most values one folded constant may have: exporters fold shapes and scalars; a hostile file's
# ConstantOfShape([10**9, 10**9]) must be refused, not allocated.
MAX_FOLDED_VALUES = 2**24
# What a malformed node raises from numpy or protobuf (an attribute of the wrong type, a shape that does not
# fit); reported as one line naming the node.
MALFORMED = (ValueError, TypeError, IndexError, KeyError, AttributeError, ZeroDivisionError, OverflowError)
# torch.nn's parameter names: an initializer that ends in one (``layer1.0.bn1.running_var``) names its module.
TORCH_SUFFIXES = ("weight", "bias", "running_mean", "running_var")
SUPPORTED_OPS = ("Conv", "BatchNormalization", "Relu", "Clip", "HardSwish", "LeakyRelu", "Gelu", "Sigmoid", "Tanh",
                 "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Gemm", "MatMul", "Add", "Flatten",
                 "Reshape", "Dropout", "Identity")
SUPPORTED = (f"supported: {', '.join(SUPPORTED_OPS)}, element-wise arithmetic that spells out an activation, "
             "and constant or shape arithmetic")


@dataclass(frozen=True)
class _Const:
    """A value known here: an initializer, a Constant, or folded; ``origin`` is the initializer it is
    (perhaps cast, transposed or renamed by Identity), for ``source_names``."""

    value: np.ndarray
    origin: str | None = None


@dataclass(frozen=True)
class _Data:
    """A tensor computed from the images: the layer (or ``MODEL_INPUT``) that outputs it, its shape per image."""

    source: str
    shape: tuple[int, ...]


Value = _Const | _Data


def import_onnx(path: str | Path) -> tuple[ModelSpec, Weights]:
    """A spec and its initial weights from an ONNX file.

    Args:
        path: the ``.onnx`` file; external weights are read from ``<file>.data`` beside it, as torch.onnx
            and ``onnx.save`` name them.

    Returns:
        The spec (input shape and class count from the graph) and float32 weights by canonical name.

    Raises:
        HarnessError: a file that is too large or not ONNX, or a graph the spec cannot express (one line
            naming the node, the op or attribute and value, and what is supported).
    """
    path = Path(path)
    model = load_model(path)
    return _Importer(model, printable(path.name), _spec_name(path)).run()


def load_model(path: Path) -> onnx.ModelProto:
    """Parse ``path`` (bounded: ``MAX_ONNX_BYTES`` for the file and for its external data), external weights read in.

    Raises:
        HarnessError: too large, not a regular file, not ONNX, or external data the harness does not read.
    """
    data = read_limited(path, MAX_ONNX_BYTES, "ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise HarnessError(f"{printable(path)} is not an ONNX model (protobuf: {str(error)[:120]}); pass a file written by "
                           "torch.onnx.export or onnx.save") from None
    if not model.HasField("graph") or not model.graph.node or not model.graph.output:
        raise HarnessError(f"{printable(path)} is not an ONNX model (it parses, but holds no graph with nodes and an output); "
                           "pass a file written by torch.onnx.export or onnx.save")
    external = [t for t in _all_tensors(model.graph) if t.data_location == TensorProto.EXTERNAL]
    if external:
        _read_external(path, external)
    return model


def _all_tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    tensors = list(graph.initializer)
    for node in graph.node:
        tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    return tensors


def _read_external(path: Path, tensors: list[onnx.TensorProto]) -> None:
    """Fill each tensor's bytes from ``<file>.data``: the one external file read, so the run's hash covers it."""
    wanted = path.name + EXTERNAL_DATA_SUFFIX
    for tensor in tensors:
        location = {entry.key: entry.value for entry in tensor.external_data}.get("location", "")
        if location != wanted:
            raise HarnessError(f"{printable(path)}: initializer {tensor.name[:80]!r} keeps its data in {location[:80]!r}; harness "
                               f"reads external data only from {wanted} beside the model (torch.onnx's name): "
                               "save the model as one file (torch.onnx.export(..., external_data=False))")
    blob = read_limited(path.with_name(wanted), MAX_ONNX_BYTES, "ONNX external data file")
    for tensor in tensors:
        info = {entry.key: entry.value for entry in tensor.external_data}
        try:
            size = math.prod(tensor.dims) * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            offset, length = int(info.get("offset", 0)), int(info.get("length", size))
        except MALFORMED:  # an unknown data type, or an offset that is not a number
            size, offset, length = 0, -1, -1
        if offset < 0 or size < 0 or length != size or offset + size > len(blob):
            raise HarnessError(f"{printable(path)}: initializer {tensor.name[:80]!r} wants bytes {info.get('offset', 0)}.."
                               f"+{info.get('length', size)} of {wanted} ({len(blob)} bytes, {size} needed for its "
                               "shape): the external data file does not belong to this model")
        tensor.raw_data = blob[offset:offset + size]
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]


def _spec_name(path: Path) -> str:
    # The spec's name names run folders: keep it to characters a path can hold anywhere.
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("._-")[:64] or "onnx-model"


def identifier(text: str) -> str:
    """``text`` as a layer name: a Python identifier, no dots, not reserved (``forward`` -> ``forward_``)."""
    name = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", text)).strip("_")
    if not name:
        name = "layer"
    if name[0].isdigit():
        name = f"layer_{name}"
    if keyword.iskeyword(name) or name in RESERVED_NAMES:
        name += "_"
    return name


def _node_path(name: str) -> str:
    """A node name without the exporters' decoration: torch's scopes ``/layer1/layer1.0/Relu`` ->
    ``layer1.0/Relu`` (each scope repeats its parent's), dynamo's ``node_relu_1`` -> ``relu_1``."""
    parts = [part for part in name.split("/") if part]
    kept = [part for i, part in enumerate(parts) if i + 1 == len(parts) or not parts[i + 1].startswith(part + ".")]
    return "/".join(kept).removeprefix("node_")


def _f32(value: float) -> float:
    """The shortest decimal that is the same float32: an attribute's 0.2 back as 0.2, not 0.200000003."""
    return float(str(np.float32(value)))


def _torch_momentum(onnx_momentum: float) -> float:
    """ONNX's BatchNormalization momentum weights the old running value (as MindSpore's); torch's the new batch."""
    target = np.float32(onnx_momentum)
    for digits in range(1, 10):
        candidate = round(1.0 - float(target), digits)
        if np.float32(1.0 - candidate) == target:
            return candidate
    return 1.0 - float(target)


def _attrs(node: onnx.NodeProto) -> dict:
    values = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        values[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return values


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _clip(args: list, attrs: dict) -> np.ndarray:
    low = args[1] if len(args) > 1 and args[1] is not None else attrs.get("min", -np.inf)
    high = args[2] if len(args) > 2 and args[2] is not None else attrs.get("max", np.inf)
    return np.minimum(np.maximum(args[0], low), high)


def _div(args: list, attrs: dict) -> np.ndarray:
    a, b = args
    if np.issubdtype(np.result_type(a, b), np.integer):
        return (np.trunc(a / b)).astype(np.result_type(a, b))  # ONNX's integer Div truncates
    return a / b


# Element-wise arithmetic in numpy: folded when every input is a constant, evaluated in float64 to name an
# activation written out node by node. (inputs, attributes) -> output.
MATH: dict[str, Callable[[list, dict], np.ndarray]] = {
    "Add": lambda a, _: a[0] + a[1], "Sub": lambda a, _: a[0] - a[1], "Mul": lambda a, _: a[0] * a[1],
    "Div": _div, "Pow": lambda a, _: np.power(a[0], a[1]), "Neg": lambda a, _: -a[0],
    "Sqrt": lambda a, _: np.sqrt(a[0]), "Exp": lambda a, _: np.exp(a[0]), "Abs": lambda a, _: np.abs(a[0]),
    "Reciprocal": lambda a, _: 1 / a[0], "Erf": lambda a, _: _erf(a[0]), "Tanh": lambda a, _: np.tanh(a[0]),
    "Sigmoid": lambda a, _: 1 / (1 + np.exp(-a[0])), "Relu": lambda a, _: np.maximum(a[0], 0),
    "Clip": _clip, "Min": lambda a, _: functools.reduce(np.minimum, a),
    "Max": lambda a, _: functools.reduce(np.maximum, a),
    "HardSigmoid": lambda a, t: np.clip(t.get("alpha", 0.2) * a[0] + t.get("beta", 0.5), 0, 1),
    "HardSwish": lambda a, _: a[0] * np.clip(a[0] / 6 + 0.5, 0, 1),
    "LeakyRelu": lambda a, t: np.where(a[0] >= 0, a[0], t.get("alpha", 0.01) * a[0]),
    "Gelu": lambda a, t: (0.5 * a[0] * (1 + np.tanh(math.sqrt(2 / math.pi) * (a[0] + 0.044715 * a[0] ** 3)))
                          if t.get("approximate", "none") == "tanh" else 0.5 * a[0] * (1 + _erf(a[0] / math.sqrt(2)))),
    "Identity": lambda a, _: a[0],
}
# The activations a run of element-wise nodes may equal, in float64 (leaky_relu's slope is read off at -1).
_PROBE = np.concatenate([np.linspace(-10, 10, 4001), np.logspace(-8, 12, 41), -np.logspace(-8, 12, 41)])
CANDIDATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda x: x, "relu": lambda x: np.maximum(x, 0), "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "tanh": np.tanh,
    "hardswish": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "gelu-tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
}


def identify_activation(f: np.ndarray) -> Activation | None:
    """The activation whose values on ``_PROBE`` are ``f``, else None.

    Within 1e-6 of the larger of the value and the input (up to 1): a float32 constant's rounding (1/6 as
    0.16666667) moves a product near a kink by ~1e-8 of the input, where the value itself is near 0;
    the nearest two candidates, GELU's erf and tanh forms, differ by 2e-4 near x = 2.
    """
    scale = np.minimum(np.abs(_PROBE), 1)

    def equal(g: np.ndarray) -> bool:
        return bool(np.all(np.abs(f - g) <= 1e-6 * (np.abs(g) + scale)))

    with np.errstate(all="ignore"):
        for kind, g in CANDIDATES.items():
            if equal(g(_PROBE)):
                if kind == "gelu-tanh":
                    return Activation("", "gelu", approximate="tanh")
                return Activation("", kind)
        slope = -float(f[np.argmin(np.abs(_PROBE + 1))])
        if 0 < slope < 1 and equal(np.where(_PROBE >= 0, _PROBE, slope * _PROBE)):
            return Activation("", "leaky_relu", negative_slope=_f32(slope))
    return None


def _onnx_reshape(array: np.ndarray, shape: np.ndarray, allowzero: int) -> np.ndarray:
    target = [int(d) for d in shape]
    if not allowzero:
        target = [array.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return array.reshape(target)


class _Importer:
    """One walk over one graph: values by name, the layers made so far, their weights and source names."""

    def __init__(self, model: onnx.ModelProto, file: str, name: str) -> None:
        self.graph, self.file, self.name = model.graph, file, name
        self.values: dict[str, Value] = {}
        self.layers: list[Layer] = []
        self.weights: Weights = {}
        self.sources: dict[str, str] = {}  # canonical -> the user's name
        self.taken: set[str] = set()
        self.batch: int | None = None  # the input's batch dimension when the graph fixes it
        self.nodes = list(self.graph.node)
        self.producer = {output: index for index, node in enumerate(self.nodes) for output in node.output if output}
        self.initializers = {tensor.name for tensor in self.graph.initializer}
        self.renamed = {node.output[0] for node in self.nodes if node.op_type == "Identity" and node.output}
        self.done: set[int] = set()
        self.pending_bias: dict[str, str] = {}  # a Linear made from a MatMul -> the MatMul's output

    # -- errors ---------------------------------------------------------------------------------------------

    def _label(self, node: onnx.NodeProto) -> str:
        index = self.nodes.index(node)
        shown = repr(node.name[:80]) if node.name else f"#{index}"
        return f"{self.file}: node {shown} ({node.op_type})"

    def fail(self, node: onnx.NodeProto, problem: str) -> HarnessError:
        return HarnessError(f"{self._label(node)}: {problem}")

    # -- the walk --------------------------------------------------------------------------------------------

    def run(self) -> tuple[ModelSpec, Weights]:
        self._inputs()
        needed = self._needed()
        self.consumers = self._consumers(needed)
        # Constants first, wherever they sit: an activation written out may read one that its nodes precede.
        for index in sorted(needed):
            node = self.nodes[index]
            if node.op_type in _FOLDERS.keys() - _FOLDS_WITH_DATA or node.op_type in MATH:
                if all(not name or isinstance(self.values.get(name), _Const) for name in node.input):
                    self.done.add(index)
                    self._node(node)
        for index in sorted(needed - self.done):
            if index not in self.done:  # an activation written out takes the nodes after its first
                self.done.add(index)
                self._node(node=self.nodes[index])
        return self._finish()

    def _inputs(self) -> None:
        for tensor in self.graph.initializer:
            try:
                array = numpy_helper.to_array(tensor)
            except MALFORMED as error:
                raise HarnessError(f"{self.file}: initializer {tensor.name[:80]!r} is malformed ({str(error)[:120]}); "
                                   "re-export the model") from None
            self.values[tensor.name] = _Const(array, tensor.name)
        inputs = [value for value in self.graph.input if value.name not in self.values]
        if len(inputs) != 1:
            names = [value.name[:40] for value in inputs]
            raise HarnessError(f"{self.file}: the graph has {len(inputs)} inputs {names}; harness imports a model "
                               "of one input, a batch of images (N, C, H, W)")
        if len(self.graph.output) != 1:
            raise HarnessError(f"{self.file}: the graph has {len(self.graph.output)} outputs; harness imports a "
                               "model of one output, the logits (N, classes)")
        value = inputs[0]
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor.elem_type != TensorProto.FLOAT:
            kind = helper.tensor_dtype_to_string(tensor.elem_type) if value.type.HasField("tensor_type") else \
                "not a tensor"
            raise HarnessError(f"{self.file}: input {value.name[:40]!r} is {kind}; harness trains float32 images "
                               "(N, C, H, W)")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
        if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            raise HarnessError(f"{self.file}: input {value.name[:40]!r} has shape {dims}; harness needs images "
                               "(N, C, H, W) with fixed C, H and W (the batch N may be symbolic)")
        self.batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        self.input_shape = tuple(dims[1:])
        self.values[value.name] = _Data(MODEL_INPUT, self.input_shape)

    def _needed(self) -> set[int]:
        """The nodes the output depends on: the others (unused branches, training outputs) are never read."""
        needed, stack = set(), [self.graph.output[0].name]
        while stack:
            index = self.producer.get(stack.pop())
            if index is not None and index not in needed:
                needed.add(index)
                stack += [name for name in self.nodes[index].input if name]
        return needed

    def _consumers(self, needed: set[int]) -> dict[str, list[int]]:
        consumers: dict[str, list[int]] = {self.graph.output[0].name: [-1]}  # -1: the graph's output
        for index in sorted(needed):
            for name in self.nodes[index].input:
                if name:
                    consumers.setdefault(name, []).append(index)
        return consumers

    def _args(self, node: onnx.NodeProto) -> list[Value | None]:
        args = []
        for name in node.input:
            if not name:
                args.append(None)  # an optional input left out
            elif name not in self.values:
                raise self.fail(node, f"reads {name[:80]!r}, which no earlier node, initializer or input defines "
                                      "(the graph is not in topological order, or is incomplete)")
            else:
                args.append(self.values[name])
        return args

    def _node(self, node: onnx.NodeProto) -> None:
        try:
            self._dispatch(node)
        except MALFORMED as error:
            raise self.fail(node, f"malformed ({type(error).__name__}: {str(error)[:120]}); re-export the "
                                  "model") from None

    def _dispatch(self, node: onnx.NodeProto) -> None:
        if node.domain not in ("", "ai.onnx"):
            raise self.fail(node, f"op {node.domain}::{node.op_type} is outside the ONNX standard; {SUPPORTED}")
        args = self._args(node)
        present = [arg for arg in args if arg is not None]
        if node.op_type == "Shape" or (node.op_type == "CastLike" and isinstance(args[0], _Const)) \
                or all(isinstance(arg, _Const) for arg in present):
            self._fold(node, args)
            return
        handler = _HANDLERS.get(node.op_type)
        if handler is not None:
            handler(self, node, args)
        elif node.op_type in MATH:
            self._elementwise_run(node)
        else:
            raise self.fail(node, f"op {node.op_type} is not supported; {SUPPORTED}")

    # -- constants and shapes ------------------------------------------------------------------------------

    def _fold(self, node: onnx.NodeProto, args: list[Value | None]) -> None:
        op, attrs = node.op_type, _attrs(node)
        if op in MATH:
            arrays = [arg.value if arg is not None else None for arg in args]
            if any(a is not None and a.dtype.kind in "iu" and (a == BATCH).any() for a in arrays):
                raise self.fail(node, "does arithmetic with the batch size; the spec's only batch-dependent "
                                      "reshape is a flatten to (N, -1)")
            present = [a for a in arrays if a is not None]
            self._bounded(node, math.prod(np.broadcast_shapes(*(a.shape for a in present))))
            with np.errstate(all="ignore"):
                result = np.asarray(MATH[op](arrays, attrs))
            dtype = np.result_type(*[a for a in arrays if a is not None])
            # numpy widens float32 with a Python float to float64; ONNX keeps the inputs' type.
            self._set(node, _Const(result.astype(dtype) if result.dtype.kind == dtype.kind else result))
            return
        folder = _FOLDERS.get(op)
        if folder is None:
            if op in _HANDLERS:  # a layer's op applied to constants: the spec only computes on images
                raise self.fail(node, f"{op} of constants only; harness folds shape and arithmetic ops, and "
                                      "imports layers that compute on the images")
            raise self.fail(node, f"op {op} is not supported; {SUPPORTED}")
        origin = args[0].origin if args and isinstance(args[0], _Const) and op in _KEEPS_ORIGIN else None
        try:
            result = folder(self, node, args, attrs)
        except (ValueError, IndexError, TypeError) as error:
            raise self.fail(node, f"cannot fold it on constants ({str(error)[:120]})") from None
        self._set(node, _Const(np.asarray(result), origin))

    def _set(self, node: onnx.NodeProto, value: Value) -> None:
        self.values[node.output[0]] = value
        for extra in node.output[1:]:
            if extra and self.consumers.get(extra):
                raise self.fail(node, f"its output {extra[:60]!r} is used; harness imports only the first "
                                      "output of a node (inference form: no BatchNorm statistics, Dropout masks "
                                      "or MaxPool indices)")

    def _shape(self, node, args, attrs) -> np.ndarray:
        value = args[0]
        shape = [BATCH, *value.shape] if isinstance(value, _Data) else list(value.value.shape)
        if isinstance(value, _Data) and self.batch is not None:
            shape[0] = self.batch
        return np.array(shape[attrs.get("start", 0):attrs.get("end", len(shape))], np.int64)

    def _constant(self, node, args, attrs) -> np.ndarray:
        for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in attrs:
                value = attrs[key]
                return numpy_helper.to_array(value) if dtype is None else np.array(value, dtype)
        raise self.fail(node, f"Constant with {sorted(attrs)}; harness reads numeric constants only")

    def _cast(self, node, args, attrs) -> np.ndarray:
        if node.op_type == "CastLike":
            like = args[1]
            dtype = np.float32 if isinstance(like, _Data) else like.value.dtype
        else:
            dtype = helper.tensor_dtype_to_np_dtype(attrs["to"])
        value = args[0].value
        if value.dtype.kind in "iu" and (value == BATCH).any() and np.dtype(dtype).kind not in "iu":
            raise self.fail(node, "casts the batch size to a float; the spec's only batch-dependent reshape is "
                                  "a flatten to (N, -1)")
        return value.astype(dtype)

    def _axes(self, args, attrs, position: int = 1) -> list[int] | None:
        if len(args) > position and args[position] is not None:
            return [int(a) for a in args[position].value.reshape(-1)]
        return attrs.get("axes")

    def _squeeze(self, node, args, attrs) -> np.ndarray:
        value, axes = args[0].value, self._axes(args, attrs)
        return np.squeeze(value, axis=tuple(axes)) if axes else np.squeeze(value)

    def _unsqueeze(self, node, args, attrs) -> np.ndarray:
        value, axes = args[0].value, self._axes(args, attrs)
        for axis in sorted(a % (value.ndim + len(axes)) for a in axes):
            value = np.expand_dims(value, axis)
        return value

    def _slice(self, node, args, attrs) -> np.ndarray:
        value = args[0].value
        if len(args) > 1:  # opset 10+: starts, ends, axes, steps as inputs
            starts, ends = args[1].value, args[2].value
            axes = args[3].value if len(args) > 3 and args[3] is not None else range(len(starts))
            steps = args[4].value if len(args) > 4 and args[4] is not None else [1] * len(starts)
        else:
            starts, ends = attrs["starts"], attrs["ends"]
            axes, steps = attrs.get("axes", range(len(starts))), [1] * len(starts)
        index = [slice(None)] * value.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps):
            index[int(axis)] = slice(int(start), int(end), int(step))
        return value[tuple(index)]

    def _expand(self, node, args, attrs) -> np.ndarray:
        value, shape = args[0].value, [int(d) for d in args[1].value]
        self._bounded(node, math.prod(np.broadcast_shapes(value.shape, tuple(shape))))
        return value * np.ones(shape, value.dtype)

    def _constant_of_shape(self, node, args, attrs) -> np.ndarray:
        shape = [int(d) for d in args[0].value.reshape(-1)]
        self._bounded(node, math.prod(shape) if min(shape, default=1) >= 0 else 0)
        value = numpy_helper.to_array(attrs["value"]).reshape(()) if "value" in attrs else np.float32(0)
        return np.full(shape, value)

    def _bounded(self, node, count: int) -> None:
        if count > MAX_FOLDED_VALUES:
            raise self.fail(node, f"folds to {count:,} values, more than the {MAX_FOLDED_VALUES:,} an exporter's "
                                  "shape arithmetic needs")

    # -- layers ---------------------------------------------------------------------------------------------

    def _data(self, node: onnx.NodeProto, arg: Value | None, rank: int | None = None) -> _Data:
        if not isinstance(arg, _Data):
            raise self.fail(node, "its first input is a constant; harness imports layers that compute on the images")
        if rank is not None and len(arg.shape) != rank:
            want = "(N, C, H, W)" if rank == 3 else "(N, features)"
            raise self.fail(node, f"its input is {('N', *arg.shape)}; the spec's {node.op_type} takes {want}")
        return arg

    def _const(self, node: onnx.NodeProto, args: list, position: int, what: str) -> _Const | None:
        arg = args[position] if len(args) > position else None
        if isinstance(arg, _Data):
            raise self.fail(node, f"its {what} {node.input[position][:60]!r} is computed from the images, not a "
                                  "constant; harness imports weights stored as initializers or Constant nodes")
        return arg

    def _name(self, node: onnx.NodeProto, weight: _Const | None = None, weight_name: str = "") -> str:
        """The layer's name: its weight's initializer (``layer1.0.conv1.weight``) minus the parameter suffix,
        else its node's name, else its op; an identifier none of the earlier layers has."""
        stem = ""
        for candidate in (weight_name, weight.origin if weight else None):
            if candidate and "." in candidate and candidate.rsplit(".", 1)[1] in TORCH_SUFFIXES:
                stem = candidate.rsplit(".", 1)[0]
                break
        return self._unique(identifier(stem or _node_path(node.name) or node.op_type.lower()))

    def _unique(self, base: str) -> str:
        name, count = base, 1
        while name in self.taken:
            count += 1
            name = f"{base}_{count}"
        self.taken.add(name)
        return name

    def _add_layer(self, node: onnx.NodeProto, layer: Layer, sources: list[_Data],
                   tensors: dict[str, tuple[np.ndarray, str | None]] | None = None) -> _Data:
        """Append ``layer`` reading ``sources``; its tensors by suffix as (array, the user's name)."""
        layer = replace(layer, inputs=tuple(source.source for source in sources))  # made implicit at the end
        try:
            shape = layer.output_shape(*(source.shape for source in sources))
        except ValueError as error:
            raise self.fail(node, str(error)) from None
        for suffix, (array, user_name) in (tensors or {}).items():
            canonical = f"{layer.name}.{suffix}"
            self.weights[canonical] = np.ascontiguousarray(array, np.float32)
            if user_name:
                self.sources[canonical] = user_name
        self.layers.append(layer)
        output = _Data(layer.name, shape)
        self._set(node, output)
        return output

    def _user_name(self, node: onnx.NodeProto, position: int, value: _Const) -> str | None:
        # The name the node reads (torch's legacy exporter renames shared tensors through Identity: the
        # Identity's output is the user's parameter name), else the initializer behind a fold.
        name = node.input[position]
        return name if name in self.initializers or name in self.renamed else value.origin

    def _float_weight(self, node: onnx.NodeProto, value: _Const, what: str) -> np.ndarray:
        if value.value.dtype.kind != "f":
            raise self.fail(node, f"its {what} is {value.value.dtype} ({node.op_type} of a quantized model?); "
                                  "harness imports float weights")
        return value.value.astype(np.float32)

    def _conv(self, node, args) -> None:
        x = self._data(node, args[0], 3)
        weight = self._const(node, args, 1, "weight")
        bias = self._const(node, args, 2, "bias")
        attrs = _attrs(node)
        w = self._float_weight(node, weight, "weight")
        if w.ndim != 4:
            raise self.fail(node, f"weight of shape {w.shape}; the spec's Conv2d is 2-D (a 4-D weight)")
        kernel = list(attrs.get("kernel_shape", w.shape[2:]))
        self._require(node, kernel[0] == kernel[1] and list(w.shape[2:]) == kernel, "kernel_shape", kernel,
                      "square kernels only")
        strides = list(attrs.get("strides", [1, 1]))
        self._require(node, len(set(strides)) == 1, "strides", strides, "one stride for both axes")
        dilations = list(attrs.get("dilations", [1, 1]))
        self._require(node, set(dilations) == {1}, "dilations", dilations, "the spec's Conv2d has no dilation")
        pads = self._pads(node, attrs)
        group = int(attrs.get("group", 1))
        tensors = {"weight": (w, self._user_name(node, 1, weight))}
        has_bias = bias is not None
        if has_bias and bias.origin is None and not bias.value.any():
            # torch's dynamo exporter without its optimizer materialises a bias-less conv's zero bias
            # (Expand of a 0): not a parameter of the user's model.
            has_bias = False
        if has_bias:
            tensors["bias"] = (self._float_weight(node, bias, "bias").reshape(-1), self._user_name(node, 2, bias))
        name = self._name(node, weight, node.input[1])
        try:
            layer = Conv2d(name, w.shape[1] * group, w.shape[0], kernel[0], strides[0], pads, has_bias, group)
        except ValueError as error:
            raise self.fail(node, str(error)) from None
        self._add_layer(node, layer, [x], tensors)

    def _require(self, node, ok: bool, attribute: str, value, supported: str) -> None:
        if not ok:
            raise self.fail(node, f"attribute {attribute}={value}; {supported}")

    def _pads(self, node, attrs, allow: bool = True) -> int:
        auto_pad = attrs.get("auto_pad", "NOTSET")
        self._require(node, auto_pad in ("NOTSET", "VALID"), "auto_pad", auto_pad,
                      "the spec pads explicitly (NOTSET with pads, or VALID)")
        pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
        if auto_pad == "VALID":
            pads = [0, 0, 0, 0]
        if not allow:
            self._require(node, not any(pads), "pads", pads, "the spec's Pool has no padding")
        self._require(node, len(set(pads)) == 1, "pads", pads, "symmetric padding only, one amount on every side")
        return pads[0]

    def _batch_norm(self, node, args) -> None:
        x = self._data(node, args[0], 3)
        attrs = _attrs(node)
        self._require(node, not attrs.get("training_mode", 0), "training_mode", attrs.get("training_mode"),
                      "inference form only (training_mode 0: the running statistics are used)")
        self._require(node, attrs.get("spatial", 1) == 1, "spatial", attrs.get("spatial"), "spatial 1 only")
        tensors = {}
        for position, suffix in enumerate(("gamma", "beta", "mean", "var"), start=1):
            value = self._const(node, args, position, suffix)
            array = self._float_weight(node, value, suffix).reshape(-1)
            tensors[suffix] = (array, self._user_name(node, position, value))
        name = self._name(node, args[1], node.input[1])
        layer = BatchNorm2d(name, x.shape[0], eps=_f32(attrs.get("epsilon", 1e-5)),
                            momentum=_torch_momentum(attrs.get("momentum", 0.9)))
        self._add_layer(node, layer, [x], tensors)

    def _activation(self, node, args) -> None:
        x = self._data(node, args[0])
        attrs, op = _attrs(node), node.op_type
        if op == "LeakyRelu":
            layer = Activation("", "leaky_relu", negative_slope=_f32(attrs.get("alpha", 0.01)))
        elif op == "Gelu":
            approximate = attrs.get("approximate", "none")
            self._require(node, approximate in ("none", "tanh"), "approximate", approximate, "none or tanh")
            layer = Activation("", "gelu", approximate=approximate)
        elif op == "Clip":
            layer = self._clip_activation(node, args, attrs)
        else:
            layer = Activation("", {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hardswish"}[op])
        self._add_layer(node, replace(layer, name=self._name(node)), [x])

    def _clip_activation(self, node, args, attrs) -> Activation:
        bounds = []
        for position, key in ((1, "min"), (2, "max")):
            value = self._const(node, args, position, key)
            if value is not None and value.value.size != 1:
                raise self.fail(node, f"its {key} has shape {value.value.shape}; Clip bounds are scalars")
            bounds.append(float(value.value.reshape(())) if value is not None else attrs.get(key))
        low, high = bounds
        if low == 0 and high == 6:
            return Activation("", "relu6")
        if low == 0 and (high is None or high == np.inf):
            return Activation("", "relu")
        raise self.fail(node, f"Clip to [{low}, {high}]; supported: Clip(0, 6) as ReLU6 and Clip(0) as ReLU")

    def _pool(self, node, args) -> None:
        x = self._data(node, args[0], 3)
        attrs = _attrs(node)
        kernel = list(attrs.get("kernel_shape", []))
        self._require(node, len(kernel) == 2 and kernel[0] == kernel[1], "kernel_shape", kernel, "square windows only")
        strides = list(attrs.get("strides", [1, 1]))
        self._require(node, len(set(strides)) == 1, "strides", strides, "one stride for both axes")
        self._require(node, set(attrs.get("dilations", [1, 1])) == {1}, "dilations", attrs.get("dilations"),
                      "the spec's Pool has no dilation")
        self._require(node, not attrs.get("ceil_mode", 0), "ceil_mode", attrs.get("ceil_mode"),
                      "floor mode only (ceil_mode 0)")
        self._require(node, not attrs.get("storage_order", 0), "storage_order", attrs.get("storage_order"),
                      "row-major only")
        self._pads(node, attrs, allow=False)
        kind = "max" if node.op_type == "MaxPool" else "avg"
        self._add_layer(node, Pool(self._name(node), kind, kernel[0], strides[0]), [x])

    def _global_pool(self, node, args) -> None:
        x = self._data(node, args[0], 3)
        keep = True
        if node.op_type == "ReduceMean":
            attrs = _attrs(node)
            axes = self._axes([None, self._const(node, args, 1, "axes")], attrs)
            axes = sorted({a % 4 for a in axes}) if axes else None
            self._require(node, axes == [2, 3], "axes", axes, "the mean over H and W (axes 2, 3): global pooling")
            keep = bool(attrs.get("keepdims", 1))
        pooled = self._add_layer(node, GlobalAvgPool(self._name(node)), [x])
        if not keep:  # x.mean((2, 3)): the pooled (C, 1, 1) flattened
            self._add_layer(node, Flatten(self._unique(f"{pooled.source}_flatten")), [pooled])

    def _flatten(self, node, args) -> None:
        x = self._data(node, args[0])
        axis = _attrs(node).get("axis", 1)
        self._require(node, axis % (len(x.shape) + 1) == 1, "axis", axis, "Flatten from axis 1: (N, -1)")
        self._flatten_to(node, x)

    def _flatten_to(self, node, x: _Data) -> None:
        if len(x.shape) == 1:  # already (N, features): nothing to do
            self._set(node, x)
        else:
            self._add_layer(node, Flatten(self._name(node)), [x])

    def _reshape(self, node, args) -> None:
        x = self._data(node, args[0])
        target = self._const(node, args, 1, "shape")
        shape = [int(d) for d in target.value.reshape(-1)]
        allowzero = _attrs(node).get("allowzero", 0)
        features = math.prod(x.shape)
        batch = {BATCH, self.batch} - {None} | ({0} if not allowzero else set())
        flat = len(shape) == 2 and ((shape[0] in batch and shape[1] in (-1, features))
                                    or (shape[0] == -1 and shape[1] == features))
        if not flat:
            shown = ["N" if d == BATCH else d for d in shape]
            raise self.fail(node, f"Reshape of {('N', *x.shape)} to {shown}; the spec reshapes only to (N, -1) "
                                  "(a flatten)")
        self._flatten_to(node, x)

    def _gemm(self, node, args) -> None:
        x = self._data(node, args[0], 1)
        attrs = _attrs(node)
        for key in ("alpha", "beta"):
            self._require(node, attrs.get(key, 1.0) == 1.0, key, attrs.get(key), f"{key} 1 only (a plain Linear)")
        self._require(node, not attrs.get("transA", 0), "transA", attrs.get("transA"), "transA 0 only")
        weight = self._const(node, args, 1, "weight")
        w = self._float_weight(node, weight, "weight")
        w = w if attrs.get("transB", 0) else w.T
        bias = self._const(node, args, 2, "bias")
        self._linear(node, x, w, weight, 1, bias)

    def _linear(self, node, x: _Data, w: np.ndarray, weight: _Const, position: int, bias: _Const | None) -> None:
        if w.ndim != 2 or w.shape[1] != x.shape[0]:
            raise self.fail(node, f"weight of shape {w.shape} does not take {x.shape[0]} features")
        tensors = {"weight": (w, self._user_name(node, position, weight))}
        if bias is not None:
            b = self._float_weight(node, bias, "bias")
            if b.size != w.shape[0]:
                raise self.fail(node, f"bias of shape {b.shape}; expected ({w.shape[0]},), one per output")
            tensors["bias"] = (b.reshape(-1), self._user_name(node, 2, bias) if node.op_type == "Gemm" else bias.origin)
        name = self._name(node, weight, node.input[position])
        self._add_layer(node, Linear(name, w.shape[1], w.shape[0], bias is not None), [x], tensors)

    def _matmul(self, node, args) -> None:
        x = self._data(node, args[0], 1)
        weight = self._const(node, args, 1, "weight")
        w = self._float_weight(node, weight, "weight")
        if w.ndim != 2:
            raise self.fail(node, f"weight of shape {w.shape}; the spec's Linear takes a 2-D weight")
        self._linear(node, x, w.T, weight, 1, None)
        self.pending_bias[self.layers[-1].name] = node.output[0]

    def _add(self, node, args) -> None:
        data = [arg for arg in args if isinstance(arg, _Data)]
        if len(data) == 2:
            if data[0].shape != data[1].shape:
                raise self.fail(node, f"adds {('N', *data[0].shape)} and {('N', *data[1].shape)}; the spec's Add "
                                      "sums tensors of one shape (no broadcasting)")
            self._add_layer(node, Add(self._name(node), inputs=("a", "b")), data)
            return
        x, bias = data[0], next(arg for arg in args if isinstance(arg, _Const))
        matmul = self.pending_bias.get(x.source)
        if matmul in node.input and self.consumers.get(matmul) == [self.nodes.index(node)]:
            index = next(i for i, layer in enumerate(self.layers) if layer.name == x.source)
            layer = self.layers[index]
            b = self._float_weight(node, bias, "bias")
            if b.size == layer.out_features and b.ndim <= 2:
                # MatMul then Add of a constant: one Linear with a bias, as torch.nn.Linear on 3-D input exports.
                self.layers[index] = replace(layer, bias=True)
                self.weights[f"{layer.name}.bias"] = b.reshape(-1)
                if bias.origin:
                    self.sources[f"{layer.name}.bias"] = bias.origin
                del self.pending_bias[x.source]
                self._set(node, x)
                return
        self._elementwise_run(node)

    def _dropout(self, node, args) -> None:
        x = self._data(node, args[0])
        attrs = _attrs(node)
        ratio = self._const(node, args, 1, "ratio")
        training = self._const(node, args, 2, "training_mode")
        if training is not None and training.value.any():
            raise self.fail(node, "training_mode true; harness imports the inference form (Dropout as a layer "
                                  "that is the identity in eval mode)")
        p = _f32(float(ratio.value.reshape(())) if ratio is not None else attrs.get("ratio", 0.5))
        self._add_layer(node, Dropout(self._name(node), p), [x])

    def _identity(self, node, args) -> None:
        if node.op_type == "CastLike" and not (isinstance(args[1], _Data) or args[1].value.dtype == np.float32):
            raise self.fail(node, f"casts the images to {args[1].value.dtype}; harness computes in float32")
        if node.op_type == "Cast" and helper.tensor_dtype_to_np_dtype(_attrs(node)["to"]) != np.float32:
            raise self.fail(node, f"casts the images to {helper.tensor_dtype_to_string(_attrs(node)['to'])}; "
                                  "harness computes in float32")
        self._set(node, self._data(node, args[0]))  # the same tensor under another name

    # -- activations written out ------------------------------------------------------------------------------

    def _elementwise_run(self, start: onnx.NodeProto) -> None:
        """Grow the smallest run of element-wise nodes from ``start`` that reads one tensor and has one
        output, until its float64 values name an activation; that run becomes one layer."""
        first = self.nodes.index(start)
        data = {arg.source: name for name, arg in zip(start.input, self._args(start)) if isinstance(arg, _Data)}
        if len(data) != 1:
            raise self.fail(start, f"{start.op_type} of {len(data)} tensors; the spec combines tensors only by Add")
        x_name = next(iter(data.values()))
        x = self.values[x_name]
        run = {first}
        while len(run) <= MAX_RUN_NODES:
            outputs = self._run_outputs(run)
            if len(outputs) == 1:
                activation = identify_activation(self._evaluate(run, x_name))
                if activation is not None:
                    self.done |= run
                    last = self.nodes[max(run)]
                    layer = replace(activation, name=self._unique(identifier(self._run_stem(run))))
                    self._add_layer(last, layer, [x])
                    self.values[outputs[0]] = self.values[last.output[0]]
                    return
            if not self._grow(run, outputs, x_name):
                break
        ops = ", ".join(self.nodes[i].op_type for i in sorted(run))
        raise self.fail(start, f"element-wise arithmetic ({ops}) that is none of the spec's activations (relu, "
                               "relu6, sigmoid, tanh, hardswish, leaky_relu, gelu, identity); harness folds "
                               "arithmetic on constants only")

    def _run_stem(self, run: set[int]) -> str:
        """The scope the run's nodes share (torch's ``/act/act.0/Div``, ``/act/act.0/Erf`` -> ``act.0``), else
        its last node's name (dynamo names the node that completes GELU ``node_gelu``)."""
        names = [self.nodes[i].name for i in sorted(run)]
        shared = os.path.commonprefix(names)
        scope = _node_path(shared[:shared.rindex("/")]) if "/" in shared else ""
        return scope or _node_path(names[-1]) or self.nodes[max(run)].op_type.lower()

    def _run_outputs(self, run: set[int]) -> list[str]:
        """Outputs of ``run`` read by a node outside it, or by the graph."""
        return [name for i in run for name in self.nodes[i].output
                if name and any(c not in run for c in self.consumers.get(name, []))]

    def _grow(self, run: set[int], outputs: list[str], x_name: str) -> bool:
        """Add the earliest outside reader of ``run``'s outputs, with whatever else it reads from ``x``."""
        readers = sorted({c for name in outputs for c in self.consumers.get(name, []) if c >= 0 and c not in run})
        if not readers:
            return False
        added = self._with_ancestors(readers[0], run, x_name)
        if added is None:
            return False
        run |= added
        return True

    def _with_ancestors(self, index: int, run: set[int], x_name: str) -> set[int] | None:
        node = self.nodes[index]
        if node.op_type not in MATH or index in self.done or len(run) >= MAX_RUN_NODES:
            return None
        added = {index}
        produced = {name for i in run for name in self.nodes[i].output}
        for name in node.input:
            if not name or name == x_name or name in produced:
                continue
            value = self.values.get(name)
            if isinstance(value, _Const):
                continue
            producer = self.producer.get(name)
            if producer is None or value is not None:  # another layer's tensor, or the model input
                return None
            more = self._with_ancestors(producer, run | added, x_name)
            if more is None:
                return None
            added |= more
        return added

    def _evaluate(self, run: set[int], x_name: str) -> np.ndarray:
        """The run's output on ``_PROBE`` in float64, its constants as stored (float32 rounding included)."""
        known: dict[str, np.ndarray] = {x_name: _PROBE}
        result = _PROBE
        with np.errstate(all="ignore"):
            for index in sorted(run):
                node = self.nodes[index]
                inputs = []
                for name in node.input:
                    if not name:
                        inputs.append(None)
                    elif name in known:
                        inputs.append(known[name])
                    else:
                        value = self.values[name].value
                        if value.size != 1:  # a per-channel constant: no activation is
                            return np.full_like(_PROBE, np.nan)
                        inputs.append(value.astype(np.float64).reshape(()))
                result = np.broadcast_to(MATH[node.op_type](inputs, _attrs(node)), _PROBE.shape).astype(np.float64)
                known[node.output[0]] = result
        return result

    # -- the spec -------------------------------------------------------------------------------------------

    def _finish(self) -> tuple[ModelSpec, Weights]:
        output = self.values.get(self.graph.output[0].name)
        if not isinstance(output, _Data) or not self.layers:
            raise HarnessError(f"{self.file}: the output {self.graph.output[0].name[:60]!r} is not computed by "
                               "any layer; harness imports a network from images to logits")
        if len(output.shape) != 1:
            raise HarnessError(f"{self.file}: the output has shape {('N', *output.shape)}; harness needs logits "
                               "(N, classes): flatten before the last layer")
        # The output's layer last (an activation written out was placed at its first node): nothing reads it.
        layers = [layer for layer in self.layers if layer.name != output.source]
        layers.append(next(layer for layer in self.layers if layer.name == output.source))
        # A layer that reads the one before it names nothing, so a chain stays a chain (as the zoo writes it).
        layers = [layer if isinstance(layer, Add) or layer.inputs != ((layers[i - 1].name if i else MODEL_INPUT),)
                  else replace(layer, inputs=()) for i, layer in enumerate(layers)]
        order = [f"{layer.name}.{suffix}" for layer in layers for suffix in layer.param_shapes()]
        try:
            spec = ModelSpec(self.name, self.input_shape, output.shape[0], tuple(layers),
                             source_names=tuple((name, self.sources[name]) for name in order if name in self.sources))
        except ValueError as error:
            raise HarnessError(f"{self.file}: {error}") from None
        return spec, {name: self.weights[name] for name in order}


_HANDLERS: dict[str, Callable[[_Importer, onnx.NodeProto, list], None]] = {
    "Conv": _Importer._conv, "BatchNormalization": _Importer._batch_norm,
    "Relu": _Importer._activation, "Sigmoid": _Importer._activation, "Tanh": _Importer._activation,
    "HardSwish": _Importer._activation, "LeakyRelu": _Importer._activation, "Gelu": _Importer._activation,
    "Clip": _Importer._activation, "MaxPool": _Importer._pool, "AveragePool": _Importer._pool,
    "GlobalAveragePool": _Importer._global_pool, "ReduceMean": _Importer._global_pool,
    "Flatten": _Importer._flatten, "Reshape": _Importer._reshape, "Gemm": _Importer._gemm,
    "MatMul": _Importer._matmul, "Add": _Importer._add, "Dropout": _Importer._dropout,
    "Identity": _Importer._identity, "Cast": _Importer._identity, "CastLike": _Importer._identity,
}
# Folds of constants (and of shapes: ``Shape`` and ``CastLike`` read only a tensor's shape or type).
_FOLDERS: dict[str, Callable] = {
    "Constant": _Importer._constant, "Identity": lambda self, node, args, attrs: args[0].value,
    "Cast": _Importer._cast, "CastLike": _Importer._cast, "Shape": _Importer._shape,
    "Gather": lambda self, node, args, attrs: np.take(args[0].value, args[1].value, axis=attrs.get("axis", 0)),
    "Squeeze": _Importer._squeeze, "Unsqueeze": _Importer._unsqueeze, "Slice": _Importer._slice,
    "Concat": lambda self, node, args, attrs: np.concatenate([a.value for a in args], axis=attrs.get("axis", 0)),
    "Reshape": lambda self, node, args, attrs: _onnx_reshape(args[0].value, args[1].value,
                                                             attrs.get("allowzero", 0)),
    "Transpose": lambda self, node, args, attrs: np.transpose(args[0].value, attrs.get("perm")),
    "Expand": _Importer._expand, "ConstantOfShape": _Importer._constant_of_shape,
}
_FOLDS_WITH_DATA = {"Shape", "CastLike"}
_KEEPS_ORIGIN = ("Identity", "Cast", "CastLike", "Transpose", "Reshape", "Squeeze", "Unsqueeze")
