"""A spec as a JSON file: ``harness import --save SPEC.json`` writes one, ``--model SPEC.json`` reads it back.

The file holds every layer's kind and fields (its inputs included), the input shape, the class count,
the initialisation and the user's tensor names; no weights: a JSON spec trains from the harness's own
initial weights. Reading trusts nothing: the size is capped before parsing, and every key, kind, field
and value is checked, each refusal one line naming the file and the layer.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import fields
from pathlib import Path

from ..config import MODEL_FILE_LIMITS, printable, read_limited
from ..errors import HarnessError
from ..runs.files import write_json
from .spec import LAYER_KINDS, BatchNorm2d, Conv2d, Dropout, ModelSpec, Pool
from .zoo import INITS

FORMAT = "harness-spec"
VERSION = 1
MAX_SPEC_BYTES = MODEL_FILE_LIMITS[".json"]
# Far beyond any model harness trains on a CPU, and small enough that initial weights of this many float32
# values (drawn before the first step) fit in memory: a spec file cannot ask for terabytes.
MAX_SPEC_VALUES = 2**28
MAX_LAYERS = 10_000
# Names a layer cannot have: Python keywords aside, the model input and attributes of torch's nn.Sequential and
# MindSpore's SequentialCell that a module path could plausibly spell (both refuse a child of that name).
RESERVED_NAMES = frozenset({
    "input", "forward", "construct", "training", "train", "eval", "to", "cpu", "cuda", "float", "double",
    "half", "type", "apply", "children", "modules", "parameters", "buffers", "cells", "outputs", "wiring",
    "chain", "phase", "compile", "insert", "append", "extend", "pop", "compiled", "offload", "recompute",
    "shard", "xpu", "ipu", "mtia", "cell_list", "state_dict", "requires_grad",
})
KINDS = {kind.__name__: kind for kind in LAYER_KINDS}
KEYS = ("format", "version", "name", "input_shape", "num_classes", "init", "layers", "source_names")
# A spec's name names run folders: characters any file system takes.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def spec_to_dict(spec: ModelSpec) -> dict:
    """The JSON form of ``spec``: every field of every layer, ``inputs`` as a list."""
    layers = []
    for layer in spec.layers:
        row = {"type": type(layer).__name__}  # not "kind": Activation and Pool have a field of that name
        for f in fields(layer):
            value = getattr(layer, f.name)
            row[f.name] = list(value) if isinstance(value, tuple) else value
        layers.append(row)
    return {"format": FORMAT, "version": VERSION, "name": spec.name, "input_shape": list(spec.input_shape),
            "num_classes": spec.num_classes, "init": spec.init, "layers": layers,
            "source_names": dict(spec.source_names)}


def save_spec(spec: ModelSpec, path: Path) -> None:
    """Write ``spec`` as JSON, atomically.

    Raises:
        HarnessError: the file cannot be written.
    """
    write_json(Path(path), spec_to_dict(spec))


def load_spec(path: Path) -> ModelSpec:
    """Read a spec written by ``save_spec`` (or by hand in its form).

    Raises:
        HarnessError: too large, not JSON, or not a valid spec; one line naming the file and what is wrong.
    """
    path = Path(path)
    data = read_limited(path, MAX_SPEC_BYTES, "spec file")
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as error:  # bad JSON or UTF-8, or nesting deeper than the parser's stack
        raise HarnessError(f"{printable(path)} is not JSON ({str(error)[:120]}); expected a spec written by "
                           "`harness import PATH.onnx --save SPEC.json`") from None
    return spec_from_dict(document, printable(path))


def spec_from_dict(document, where: str) -> ModelSpec:
    """The spec ``document`` describes, every key and value checked.

    Args:
        document: parsed JSON.
        where: the file, for messages.

    Raises:
        HarnessError: one line naming ``where``, the key or layer, and what is expected.
    """
    def fail(problem: str) -> HarnessError:
        return HarnessError(f"{where}: {problem}")

    if not isinstance(document, dict):
        raise fail(f"holds a {type(document).__name__}, expected a JSON object written by harness import --save")
    if document.get("format") != FORMAT or document.get("version") != VERSION:
        raise fail(f"format {str(document.get('format'))[:40]!r} version {str(document.get('version'))[:10]}, "
                   f"expected {FORMAT!r} version {VERSION} (written by harness import --save)")
    unknown, missing = sorted(set(document) - set(KEYS)), [key for key in KEYS if key not in document]
    if unknown or missing:
        raise fail(f"unknown keys {[str(k)[:40] for k in unknown[:5]]}, missing keys {missing}; expected exactly "
                   f"{', '.join(KEYS)}")
    name, shape, classes = document["name"], document["input_shape"], document["num_classes"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise fail(f"name {str(name)[:70]!r} should be 1-64 letters, digits, '_', '.' or '-' (it names run folders)")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_count(v) for v in shape)):
        raise fail(f"input_shape {str(shape)[:70]} should be [C, H, W] of positive integers")
    if not _count(classes):
        raise fail(f"num_classes {str(classes)[:40]} should be a positive integer")
    if document["init"] not in INITS:
        raise fail(f"init {str(document['init'])[:40]!r} is not one of {', '.join(INITS)}")
    layers = document["layers"]
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        raise fail(f"layers should be a list of 1 to {MAX_LAYERS} layer objects")
    built = tuple(_layer(row, index, fail) for index, row in enumerate(layers))
    sources = document["source_names"]
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        raise fail("source_names should map canonical tensor names to the user's names (strings)")
    try:
        spec = ModelSpec(name, tuple(shape), classes, built, document["init"], tuple(sources.items()))
    except ValueError as error:
        raise fail(str(error)) from None
    _check_values(spec, fail)
    shapes = spec.param_shapes()
    strange = [key for key in sources if key not in shapes]
    if strange:
        raise fail(f"source_names names {strange[0][:60]!r}, which is none of the spec's tensors")
    values = sum(math.prod(s) for s in shapes.values()) + math.prod(shape)
    if values > MAX_SPEC_VALUES:
        raise fail(f"the spec has {values:,} weight values, more than the {MAX_SPEC_VALUES:,} harness trains")
    return spec


def _check_values(spec: ModelSpec, fail) -> None:
    """No layer outputs or holds an empty tensor (a kernel larger than its input, a zero-width layer)."""
    for layer, shape in zip(spec.layers, spec.output_shapes):
        if min(shape) < 1 or any(min(s) < 1 for s in layer.param_shapes().values()):
            raise fail(f"layer {layer.name!r} has an empty output {shape} or tensor {layer.param_shapes()}")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 2**31


def _layer(row, index: int, fail):
    if not isinstance(row, dict) or row.get("type") not in KINDS:
        kind = row.get("type") if isinstance(row, dict) else row
        raise fail(f"layer {index}: type {str(kind)[:40]!r} is not one of {', '.join(KINDS)}")
    kind = KINDS[row["type"]]
    known = {f.name: f for f in fields(kind)}
    label = f"layer {index} ({row['type']} {str(row.get('name', ''))[:40]!r})"
    unknown = sorted(set(row) - set(known) - {"type"})
    if unknown:
        raise fail(f"{label}: unknown field {str(unknown[0])[:40]!r}; {row['type']} has {', '.join(known)}")
    values = {}
    for name, f in known.items():
        if name not in row:
            continue  # a missing field with no default is reported by the constructor below
        values[name] = _field(row[name], str(f.type), f"{label}: field {name}", fail)
    if isinstance(values.get("name"), str) and values["name"] in RESERVED_NAMES:
        raise fail(f"{label}: the name {values['name']!r} is reserved (a module attribute in torch or MindSpore)")
    try:
        layer = kind(**values)
    except (TypeError, ValueError) as error:  # TypeError: a required field is missing
        raise fail(f"{label}: {str(error)[:160]}") from None
    problem = _bad_value(layer)
    if problem:
        raise fail(f"{label}: {problem}")
    return layer


def _bad_value(layer) -> str:
    """What a layer kind leaves to its builders, refused here in one line rather than deep in a framework."""
    if isinstance(layer, (Conv2d, Pool)) and (layer.stride < 1 or layer.kernel_size < 1):
        return f"kernel_size {layer.kernel_size} and stride {layer.stride} should be >= 1"
    if isinstance(layer, Conv2d) and layer.padding < 0:
        return f"padding {layer.padding} should be >= 0"
    if isinstance(layer, Dropout) and not 0 <= layer.p < 1:
        return f"p {layer.p} should be in [0, 1)"
    if isinstance(layer, BatchNorm2d) and not (layer.eps > 0 and 0 <= layer.momentum <= 1):
        return f"eps {layer.eps} should be > 0 and momentum {layer.momentum} in [0, 1]"
    return ""


def _field(value, annotation: str, label: str, fail):
    """``value`` checked against the dataclass field's annotation (``int``, ``float``, ``str``, ``bool``,
    ``tuple[str, ...]``)."""
    if annotation.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(f"{label} should be a list of layer names, got {str(value)[:60]}")
        return tuple(value)
    if annotation == "bool":
        ok = isinstance(value, bool)
    elif annotation == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and -2**31 <= value <= 2**31
    elif annotation == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        wanted = {"int": "an integer", "float": "a finite number", "bool": "true or false"}.get(annotation, "a string")
        raise fail(f"{label} should be {wanted}, got {str(value)[:60]!r}")
    return value
