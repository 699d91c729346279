"""Which MindSpore layer is which PyTorch layer, and which Parameter holds which tensor.

Layers are paired by execution order: each side's layer calls (``PortSupport.trace``) are aligned as two
sequences, a pair costing nothing when kind and output shape agree, a little when only the kind does (a wrong
padding changes every shape after it), more when only the shape does (max vs average pooling are one kind,
ReLU vs Sigmoid too; an activation may stand where a Dropout is), and a gap costing one. The same alignment
places a spec's layers (the PyTorch model as imported from ONNX) on either side's calls.

Tensors are paired in four steps, each shown in the table as its rule: a ``--map`` file's pairs; tensors of
paired layers by role (weight, bias; BatchNorm's gamma/beta/moving_mean/moving_variance are torch's
weight/bias/running_mean/running_var), a 2-D tensor of reversed shape taken transposed; names equal once
MindSpore's BatchNorm names are torch's; and a tensor whose shape no other unpaired tensor has on either side.
A PyTorch tensor left unpaired is a one-line error and a MAP.toml to complete.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HarnessError
from ..model.spec import (Activation, Add, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool, Linear, ModelSpec,
                          Pool)
from ..runs.files import atomic_path

GAP, SAME_KIND, SAME_SHAPE = 1.0, 0.5, 0.9
# Kinds whose outputs have their input's shape and no tensors: a layer of one may stand where the other is. Not
# "other": an empty nn.Sequential shortcut passes its input on, and must not stand for a ReLU beside it.
INTERCHANGEABLE = {"activation", "dropout"}
SPEC_KINDS = {Conv2d: "conv", Pool: "pool", Activation: "activation", Dropout: "dropout", BatchNorm2d: "batchnorm",
              Flatten: "flatten", Linear: "linear", GlobalAvgPool: "global_pool", Add: "add"}
# MindSpore's BatchNorm Parameter names -> torch's state_dict names.
_MS_TO_TORCH = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_TORCH_BN_ROLES = {"weight": "gamma", "bias": "beta", "running_mean": "mean", "running_var": "var"}
_MS_ROLES = {"gamma": "gamma", "beta": "beta", "moving_mean": "mean", "moving_variance": "var"}
MAP_FILE = "MAP.toml"


def _cost(a: tuple[str, tuple | None], b: tuple[str, tuple | None]) -> float | None:
    (kind_a, shape_a), (kind_b, shape_b) = a, b
    if kind_a == kind_b:
        return 0.0 if shape_a == shape_b else SAME_KIND
    if shape_a == shape_b and kind_a in INTERCHANGEABLE and kind_b in INTERCHANGEABLE:
        return SAME_SHAPE
    return None


def align(a: list[tuple[str, tuple | None]], b: list[tuple[str, tuple | None]]) -> list[tuple[int | None, int | None]]:
    """Pair two sequences of (kind, output shape) in order at the least cost; unpaired items pair with None."""
    n, m = len(a), len(b)
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 or j == 0:
                best[i][j] = GAP * (i + j)
                continue
            options = [best[i - 1][j] + GAP, best[i][j - 1] + GAP]
            cost = _cost(a[i - 1], b[j - 1])
            if cost is not None:
                options.append(best[i - 1][j - 1] + cost)
            best[i][j] = min(options)
    pairs, i, j = [], n, m
    while i or j:  # walk back, preferring a pair, then a gap in b, then in a (ties resolved the same way every time)
        cost = _cost(a[i - 1], b[j - 1]) if i and j else None
        if cost is not None and abs(best[i][j] - (best[i - 1][j - 1] + cost)) < 1e-9:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i and abs(best[i][j] - (best[i - 1][j] + GAP)) < 1e-9:
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    return pairs[::-1]


def call_keys(calls: list[dict]) -> list[tuple[str, tuple | None]]:
    """(kind, output shape) of each layer call."""
    return [(call["settings"]["kind"], call["shape"]) for call in calls]


def spec_keys(spec: ModelSpec) -> list[tuple[str, tuple]]:
    """(kind, output shape) of each spec layer."""
    return [(SPEC_KINDS[type(layer)], tuple(shape)) for layer, shape in zip(spec.layers, spec.output_shapes)]


def layer_calls(spec: ModelSpec, calls: list[dict]) -> dict[str, int]:
    """Spec layer name -> the index of the call that computes it on one side (layers without one are left out)."""
    pairs = align(spec_keys(spec), call_keys(calls))
    return {spec.layers[i].name: j for i, j in pairs if i is not None and j is not None}


@dataclass(frozen=True)
class TensorPair:
    """One PyTorch tensor and the MindSpore Parameter that holds it."""

    torch: str
    mindspore: str
    shape: tuple[int, ...]  # torch's
    rule: str
    transposed: bool = False


@dataclass
class Mapping:
    """Every tensor pair found, and what is left on each side (name -> shape)."""

    pairs: list[TensorPair] = field(default_factory=list)
    unmatched_torch: dict[str, tuple] = field(default_factory=dict)
    unmatched_mindspore: dict[str, tuple] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether every PyTorch tensor has its Parameter. A MindSpore Parameter left over does not stop the port
        (no torch tensor gives it a value, so it keeps the port's own, and the checks show what it does)."""
        return not self.unmatched_torch

    def torch_to_mindspore(self) -> dict[str, TensorPair]:
        """The pairs by PyTorch name."""
        return {pair.torch: pair for pair in self.pairs}


def _role(framework: str, kind: str, local: str) -> str:
    if framework == "mindspore":
        return _MS_ROLES.get(local, local)
    return _TORCH_BN_ROLES.get(local, local) if kind == "batchnorm" else local


def _fits(torch_shape: tuple, ms_shape: tuple) -> bool | None:
    """True: as is; False: transposed (2-D, reversed); None: they do not fit."""
    if tuple(torch_shape) == tuple(ms_shape):
        return True
    if len(torch_shape) == 2 and tuple(torch_shape) == tuple(ms_shape)[::-1]:
        return False
    return None


def normalised(ms_name: str) -> str:
    """A MindSpore name with BatchNorm's Parameter names made torch's (``bn1.moving_mean`` -> ``bn1.running_mean``)."""
    path, _, local = ms_name.rpartition(".")
    return f"{path}.{_MS_TO_TORCH.get(local, local)}" if path else _MS_TO_TORCH.get(local, local)


def map_tensors(torch_calls: list[dict], ms_calls: list[dict], pairs: list[tuple[int | None, int | None]],
                torch_tensors: dict[str, tuple], ms_tensors: dict[str, tuple],
                given: dict[str, tuple[str, bool]] | None = None) -> Mapping:
    """Pair every PyTorch tensor with a MindSpore Parameter (see the module's docstring for the rules).

    Args:
        torch_calls, ms_calls: each side's layer calls in execution order.
        pairs: their alignment (``align``).
        torch_tensors, ms_tensors: every tensor of each model, name -> shape.
        given: a ``--map`` file's pairs, torch name -> (MindSpore name, transposed).

    Raises:
        HarnessError: a ``--map`` pair names a tensor that does not exist or whose shape does not fit.
    """
    found: list[TensorPair] = []
    left_t, left_m = dict(torch_tensors), dict(ms_tensors)

    def take(torch_name: str, ms_name: str, rule: str, transposed: bool) -> None:
        found.append(TensorPair(torch_name, ms_name, tuple(left_t.pop(torch_name)), rule, transposed))
        left_m.pop(ms_name)

    for torch_name, (ms_name, transposed) in (given or {}).items():
        if torch_name not in left_t or ms_name not in left_m:
            missing = torch_name if torch_name not in torch_tensors else ms_name
            side = "PyTorch tensor" if missing == torch_name else "MindSpore Parameter"
            raise HarnessError(f"--map pairs {torch_name!r} with {ms_name!r}, but there is no {side} {missing!r} "
                               "(or it is paired twice); use the names the MAP.toml comments list")
        torch_shape, ms_shape = tuple(torch_tensors[torch_name]), tuple(ms_tensors[ms_name])
        if (torch_shape != ms_shape[::-1] or len(torch_shape) != 2) if transposed else torch_shape != ms_shape:
            raise HarnessError(f"--map pairs {torch_name!r} {tuple(torch_tensors[torch_name])} with {ms_name!r} "
                               f"{tuple(ms_tensors[ms_name])}{' transposed' if transposed else ''}: the shapes do not "
                               "fit; pair tensors of one shape (transposed = true for a 2-D tensor stored (in, out))")
        take(torch_name, ms_name, "--map", transposed)
    seen_t, seen_m = set(), set()
    for i, j in pairs:
        if i is None or j is None or torch_calls[i]["name"] in seen_t or ms_calls[j]["name"] in seen_m:
            continue  # a module called twice has its tensors paired at its first call
        seen_t.add(torch_calls[i]["name"])
        seen_m.add(ms_calls[j]["name"])
        torch_roles = {_role("torch", torch_calls[i]["settings"]["kind"], local): entry["name"]
                       for local, entry in torch_calls[i]["tensors"].items()}
        ms_roles = {_role("mindspore", ms_calls[j]["settings"]["kind"], local): entry["name"]
                    for local, entry in ms_calls[j]["tensors"].items()}
        for role, torch_name in torch_roles.items():
            ms_name = ms_roles.get(role)
            if torch_name in left_t and ms_name in left_m:
                fits = _fits(left_t[torch_name], left_m[ms_name])
                if fits is not None:
                    take(torch_name, ms_name, "execution order" if fits else "execution order, transposed", not fits)
    by_name = {normalised(name): name for name in left_m}
    for torch_name in list(left_t):
        ms_name = by_name.get(torch_name)
        if ms_name in left_m and _fits(left_t[torch_name], left_m[ms_name]):
            take(torch_name, ms_name, "name", False)
    for torch_name in list(left_t):
        shape = tuple(left_t[torch_name])
        same_t = [n for n, s in left_t.items() if tuple(s) == shape]
        same_m = [n for n, s in left_m.items() if tuple(s) == shape]
        if len(same_t) == 1 and len(same_m) == 1:
            take(torch_name, same_m[0], "the only one of its shape left", False)
    order = {name: index for index, name in enumerate(torch_tensors)}
    found.sort(key=lambda pair: order[pair.torch])
    return Mapping(found, left_t, left_m)


def read_map(path: Path) -> dict[str, tuple[str, bool]]:
    """A MAP.toml's pairs: torch name -> (MindSpore name, transposed).

    Raises:
        HarnessError: not readable TOML, no ``[tensors]`` table, or an entry still empty or of another form.
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise HarnessError(f"--map {path}: cannot read it as TOML ({error}); pass the MAP.toml harness port wrote, "
                           "completed") from None
    table = data.get("tensors")
    if not isinstance(table, dict):
        raise HarnessError(f"--map {path} has no [tensors] table; pass the MAP.toml harness port wrote, completed")
    pairs = {}
    for torch_name, value in table.items():
        if isinstance(value, dict):
            value, transposed = value.get("mindspore"), value.get("transposed", False)
        else:
            transposed = False
        if not isinstance(value, str) or not isinstance(transposed, bool):
            raise HarnessError(f"--map {path}: {torch_name!r} = {value!r} is not a MindSpore name (a string, or "
                               "{ mindspore = \"name\", transposed = true })")
        if not value:
            raise HarnessError(f"--map {path}: {torch_name!r} is still empty; give the MindSpore Parameter that "
                               "holds it (the file's comments list the unpaired ones)")
        pairs[torch_name] = (value, transposed)
    return pairs


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_map(folder: Path, mapping: Mapping, avoid: Path | None = None) -> Path:
    """A MAP.toml (MAP.new.toml where a MAP.toml is there already) with every pair found and an empty entry per
    unpaired PyTorch tensor, the unpaired MindSpore Parameters listed in its comments."""
    path = Path(folder) / MAP_FILE
    if path.exists() or (avoid is not None and path.resolve() == Path(avoid).resolve()):
        path = path.with_name("MAP.new.toml")
    lines = ["# harness port: the MindSpore Parameter that holds each PyTorch tensor.",
             "# Give each empty entry its MindSpore name (for a 2-D tensor stored (in, out): { mindspore = \"name\", "
             "transposed = true }),",
             "# then run harness port again with --map " + path.name + ".",
             "# MindSpore Parameters not paired yet:"]
    lines += [f"#   {name} {tuple(shape)}" for name, shape in mapping.unmatched_mindspore.items()] or ["#   (none)"]
    lines += ["", "[tensors]"]
    for pair in mapping.pairs:
        value = _quoted(pair.mindspore) if not pair.transposed else \
            f"{{ mindspore = {_quoted(pair.mindspore)}, transposed = true }}"
        lines.append(f"{_quoted(pair.torch)} = {value}  # {tuple(pair.shape)}, {pair.rule}")
    for name, shape in mapping.unmatched_torch.items():
        lines.append(f'{_quoted(name)} = ""  # {tuple(shape)}: not paired')
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def table_lines(mapping: Mapping) -> list[str]:
    """The mapping as a console table: torch name, MindSpore name, shape, rule; then the unpaired ones."""
    rows = [(p.torch, p.mindspore, str(tuple(p.shape)), p.rule) for p in mapping.pairs]
    rows += [(name, "-", str(tuple(shape)), "NOT PAIRED") for name, shape in mapping.unmatched_torch.items()]
    rows += [("-", name, str(tuple(shape)), "NOT PAIRED") for name, shape in mapping.unmatched_mindspore.items()]
    header = ("torch", "mindspore", "shape", "rule")
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(4)]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in [header, *rows]]
