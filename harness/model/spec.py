"""A framework-neutral model spec: layers as frozen data, shapes inferred, parameters counted.

Backends realise a ``ModelSpec`` layer by layer; nothing here knows a framework.
Canonical parameter names are ``<layer>.<suffix>`` with layouts conv OIHW and
linear (out, in); BatchNorm carries ``gamma``/``beta`` (trained) and
``mean``/``var`` (running statistics, not trained).

A spec is a graph in execution order: each layer reads the layers named in its
``inputs``, the previous layer (or the model's input, ``MODEL_INPUT``) when empty,
so a chain names nothing and a residual block names its shortcut in an ``Add``.
The last layer's output is the logits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from math import prod

Shape = tuple[int, ...]
MODEL_INPUT = "input"  # the name a layer's ``inputs`` gives the model's input images
# Layer names become module and parameter names in both frameworks, which refuse dots in a child's name.
_LAYER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Conv2d:
    """2-D convolution, square kernel, symmetric zero padding; ``groups`` splits the channels
    (``groups == in_channels``: depthwise), the weight ``(out, in / groups, k, k)`` as torch's."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    bias: bool = True
    groups: int = 1
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.groups < 1 or self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{self.name}: groups {self.groups} must divide in_channels {self.in_channels} "
                             f"and out_channels {self.out_channels}")

    def output_shape(self, shape: Shape) -> Shape:
        channels, height, width = shape
        if channels != self.in_channels:
            raise ValueError(f"{self.name}: expects {self.in_channels} channels, got {channels}")
        size = lambda n: (n + 2 * self.padding - self.kernel_size) // self.stride + 1  # noqa: E731
        if size(height) < 1 or size(width) < 1:
            raise ValueError(f"{self.name}: a {self.kernel_size}x{self.kernel_size} kernel does not fit "
                             f"{height}x{width} with padding {self.padding}")
        return (self.out_channels, size(height), size(width))

    def param_shapes(self) -> dict[str, Shape]:
        shapes = {"weight": (self.out_channels, self.in_channels // self.groups, self.kernel_size,
                             self.kernel_size)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes


@dataclass(frozen=True)
class Pool:
    """Max or average pooling, no padding, floor mode; stride always explicit."""

    name: str
    kind: str  # "max" | "avg"
    kernel_size: int
    stride: int
    inputs: tuple[str, ...] = ()

    def output_shape(self, shape: Shape) -> Shape:
        channels, height, width = shape
        size = lambda n: (n - self.kernel_size) // self.stride + 1  # noqa: E731
        if size(height) < 1 or size(width) < 1:
            raise ValueError(f"{self.name}: a {self.kernel_size}x{self.kernel_size} window does not fit "
                             f"{height}x{width}")
        return (channels, size(height), size(width))

    def param_shapes(self) -> dict[str, Shape]:
        return {}


# The element-wise nonlinearities, as torch.nn names them: relu, tanh, sigmoid, relu6, hardswish,
# leaky_relu (``negative_slope``), gelu (``approximate``) and identity.
ACTIVATION_KINDS = ("relu", "tanh", "sigmoid", "relu6", "hardswish", "leaky_relu", "gelu", "identity")
GELU_APPROXIMATIONS = ("none", "tanh")  # torch.nn.GELU's: the exact erf form, or the tanh formula


@dataclass(frozen=True)
class Activation:
    """Element-wise nonlinearity, one of ``ACTIVATION_KINDS``.

    Attributes:
        name: the layer's name.
        kind: the nonlinearity.
        negative_slope: leaky_relu's slope below 0 (torch's default); ignored by the other kinds.
        approximate: gelu's form, ``none`` (erf, torch's default) or ``tanh``; ignored by the other kinds.
    """

    name: str
    kind: str
    negative_slope: float = 0.01
    approximate: str = "none"
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Refused here, not only by a table lookup: a spec that exists is one every backend can build.
        if self.kind not in ACTIVATION_KINDS:
            raise ValueError(f"{self.name}: unknown activation {self.kind!r}; expected one of {ACTIVATION_KINDS}")
        if self.approximate not in GELU_APPROXIMATIONS:
            raise ValueError(f"{self.name}: unknown GELU approximation {self.approximate!r}")

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def param_shapes(self) -> dict[str, Shape]:
        return {}


@dataclass(frozen=True)
class Dropout:
    """Dropout with drop probability ``p`` (identity in eval mode)."""

    name: str
    p: float
    inputs: tuple[str, ...] = ()

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def param_shapes(self) -> dict[str, Shape]:
        return {}


@dataclass(frozen=True)
class BatchNorm2d:
    """Batch normalisation over channels; ``momentum`` in PyTorch's convention."""

    name: str
    num_features: int
    eps: float = 1e-5
    momentum: float = 0.1
    inputs: tuple[str, ...] = ()

    def output_shape(self, shape: Shape) -> Shape:
        if shape[0] != self.num_features:
            raise ValueError(f"{self.name}: expects {self.num_features} channels, got {shape[0]}")
        return shape

    def param_shapes(self) -> dict[str, Shape]:
        return {suffix: (self.num_features,) for suffix in ("gamma", "beta", "mean", "var")}


@dataclass(frozen=True)
class Flatten:
    """Flatten (C, H, W) to C*H*W in C-order, as both frameworks do."""

    name: str
    inputs: tuple[str, ...] = ()

    def output_shape(self, shape: Shape) -> Shape:
        return (prod(shape),)

    def param_shapes(self) -> dict[str, Shape]:
        return {}


@dataclass(frozen=True)
class Linear:
    """Fully connected layer, weight (out, in)."""

    name: str
    in_features: int
    out_features: int
    bias: bool = True
    inputs: tuple[str, ...] = ()

    def output_shape(self, shape: Shape) -> Shape:
        if shape != (self.in_features,):
            raise ValueError(f"{self.name}: expects ({self.in_features},), got {shape}")
        return (self.out_features,)

    def param_shapes(self) -> dict[str, Shape]:
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes


@dataclass(frozen=True)
class GlobalAvgPool:
    """The mean over each channel's whole plane, (C, H, W) -> (C, 1, 1): torch's AdaptiveAvgPool2d(1),
    ONNX's GlobalAveragePool."""

    name: str
    inputs: tuple[str, ...] = ()

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 3:
            raise ValueError(f"{self.name}: expects (C, H, W), got {shape}")
        return (shape[0], 1, 1)

    def param_shapes(self) -> dict[str, Shape]:
        return {}


@dataclass(frozen=True)
class Add:
    """The element-wise sum of two or more layers' outputs of one shape: a residual connection."""

    name: str
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.inputs) < 2:
            raise ValueError(f"{self.name}: Add sums two or more inputs, got {list(self.inputs)}")

    def output_shape(self, *shapes: Shape) -> Shape:
        if len(set(shapes)) != 1:
            raise ValueError(f"{self.name}: adds outputs of different shapes {list(shapes)} "
                             f"(from {list(self.inputs)})")
        return shapes[0]

    def param_shapes(self) -> dict[str, Shape]:
        return {}


Layer = Conv2d | Pool | Activation | Dropout | BatchNorm2d | Flatten | Linear | GlobalAvgPool | Add
# Every layer kind. Each place that must know a kind (initial weights, the float64 reference, each
# backend's builder) registers it in one table; a test fails when a table lacks one of these.
LAYER_KINDS: tuple[type, ...] = (Conv2d, Pool, Activation, Dropout, BatchNorm2d, Flatten, Linear, GlobalAvgPool, Add)

# Running statistics: state that a backend must carry but no optimizer updates.
BUFFER_SUFFIXES = ("mean", "var")


@dataclass(frozen=True)
class ModelSpec:
    """A whole network for one input shape (C, H, W) and class count.

    Construction checks that every layer's inputs come before it and that its shape fits them,
    so a spec that exists is a spec every backend can build.

    Attributes:
        name: the model's name.
        input_shape: (C, H, W) of one image.
        num_classes: the logits' length.
        layers: in execution order; the last one's output is the logits.
        init: how ``harness.model.weights`` draws initial weights (``default``, ``normal0.02``).
        source_names: canonical tensor name -> the name the user's own file gives it (an ONNX
            import's initializers); empty for the registry's models.
        wiring: per layer, positions of its inputs in ``(model input, layer 0, layer 1, ...)``.
        output_shapes: per layer, its output's shape without the batch axis.
    """

    name: str
    input_shape: Shape
    num_classes: int
    layers: tuple[Layer, ...]
    init: str = "default"
    source_names: tuple[tuple[str, str], ...] = ()
    wiring: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)
    output_shapes: tuple[Shape, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: layer names repeat: {names}")
        bad = [name for name in names if name == MODEL_INPUT or not _LAYER_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"{self.name}: layer name {bad[0]!r} is not an identifier other than "
                             f"{MODEL_INPUT!r} (letters, digits, underscores)")
        position = {MODEL_INPUT: 0}
        shapes: list[Shape] = [tuple(self.input_shape)]
        wiring = []
        for index, layer in enumerate(self.layers):
            sources = layer.inputs or ((names[index - 1] if index else MODEL_INPUT),)
            unknown = [source for source in sources if source not in position]
            if unknown:
                raise ValueError(f"{self.name}: {layer.name} reads {unknown[0]!r}, which is not an earlier layer")
            wiring.append(tuple(position[source] for source in sources))
            if not isinstance(layer, Add) and len(sources) != 1:
                raise ValueError(f"{self.name}: {layer.name} ({type(layer).__name__}) takes one input, "
                                 f"got {list(sources)}")
            shapes.append(layer.output_shape(*(shapes[p] for p in wiring[-1])))
            position[layer.name] = index + 1
        if not self.layers or shapes[-1] != (self.num_classes,):
            raise ValueError(f"{self.name}: ends with {shapes[-1]}, expected ({self.num_classes},)")
        object.__setattr__(self, "wiring", tuple(wiring))
        object.__setattr__(self, "output_shapes", tuple(shapes[1:]))

    @property
    def is_chain(self) -> bool:
        """Whether every layer reads the one before it (the model's input for the first)."""
        return all(sources == (index,) for index, sources in enumerate(self.wiring))

    def input_names(self, index: int) -> tuple[str, ...]:
        """The names of what layer ``index`` reads: earlier layers' names or ``MODEL_INPUT``."""
        return tuple(self.layers[p - 1].name if p else MODEL_INPUT for p in self.wiring[index])

    def source_name(self, canonical: str) -> str:
        """The user's own name of a canonical tensor (an ONNX initializer's), else the canonical name."""
        return dict(self.source_names).get(canonical, canonical)

    def dropouts(self) -> list[tuple[int, Dropout, Shape]]:
        """(layer index, layer, shape without the batch axis) of each Dropout, in execution order: where a
        backend draws masks outside its layers, one per Dropout and step."""
        return [(index, layer, shape) for index, (layer, shape) in enumerate(zip(self.layers, self.output_shapes))
                if isinstance(layer, Dropout)]

    def param_shapes(self) -> dict[str, Shape]:
        """Every canonical tensor (trainable and buffers) in execution order."""
        return {
            f"{layer.name}.{suffix}": shape
            for layer in self.layers
            for suffix, shape in layer.param_shapes().items()
        }

    def trainable_names(self) -> list[str]:
        """Names of the tensors an optimizer updates (BatchNorm statistics excluded)."""
        return [name for name in self.param_shapes() if name.rsplit(".", 1)[1] not in BUFFER_SUFFIXES]

    @property
    def num_params(self) -> int:
        """Trainable parameter count, as ``sum(p.numel() for p in model.parameters())``."""
        shapes = self.param_shapes()
        return sum(prod(shapes[name]) for name in self.trainable_names())

    def summary(self) -> list[dict]:
        """One row per layer: name, kind, inputs, output shape, parameter count."""
        rows = []
        for index, (layer, shape) in enumerate(zip(self.layers, self.output_shapes)):
            count = sum(prod(s) for k, s in layer.param_shapes().items() if k not in BUFFER_SUFFIXES)
            rows.append({"layer": layer.name, "kind": type(layer).__name__, "inputs": self.input_names(index),
                         "output": shape, "params": count})
        return rows
