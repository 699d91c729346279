"""A framework-neutral model spec: layers as frozen data, shapes inferred, parameters counted.

Backends realise a ``ModelSpec`` layer by layer; nothing here knows a framework.
Canonical parameter names are ``<layer>.<suffix>`` with layouts conv OIHW and
linear (out, in); BatchNorm carries ``gamma``/``beta`` (trained) and
``mean``/``var`` (running statistics, not trained).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Conv2d:
    """2-D convolution, square kernel, symmetric zero padding."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    bias: bool = True

    def output_shape(self, shape: Shape) -> Shape:
        channels, height, width = shape
        if channels != self.in_channels:
            raise ValueError(f"{self.name}: expects {self.in_channels} channels, got {channels}")
        size = lambda n: (n + 2 * self.padding - self.kernel_size) // self.stride + 1  # noqa: E731
        return (self.out_channels, size(height), size(width))

    def param_shapes(self) -> dict[str, Shape]:
        shapes = {"weight": (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)}
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

    def output_shape(self, shape: Shape) -> Shape:
        channels, height, width = shape
        size = lambda n: (n - self.kernel_size) // self.stride + 1  # noqa: E731
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

    def output_shape(self, shape: Shape) -> Shape:
        if shape != (self.in_features,):
            raise ValueError(f"{self.name}: expects ({self.in_features},), got {shape}")
        return (self.out_features,)

    def param_shapes(self) -> dict[str, Shape]:
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes


Layer = Conv2d | Pool | Activation | Dropout | BatchNorm2d | Flatten | Linear
# Every layer kind. Each place that must know a kind (initial weights, the float64 reference, each
# backend's builder) registers it in one table; a test fails when a table lacks one of these.
LAYER_KINDS: tuple[type, ...] = (Conv2d, Pool, Activation, Dropout, BatchNorm2d, Flatten, Linear)

# Running statistics: state that a backend must carry but no optimizer updates.
BUFFER_SUFFIXES = ("mean", "var")


@dataclass(frozen=True)
class ModelSpec:
    """A whole network for one input shape (C, H, W) and class count.

    Construction checks that every layer's shape fits the previous one, so a
    spec that exists is a spec every backend can build.
    """

    name: str
    input_shape: Shape
    num_classes: int
    layers: tuple[Layer, ...]
    init: str = "default"
    output_shapes: tuple[Shape, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: layer names repeat: {names}")
        shapes, shape = [], tuple(self.input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
            shapes.append(shape)
        if shape != (self.num_classes,):
            raise ValueError(f"{self.name}: ends with {shape}, expected ({self.num_classes},)")
        object.__setattr__(self, "output_shapes", tuple(shapes))

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
        """One row per layer: name, kind, output shape, parameter count."""
        rows = []
        for layer, shape in zip(self.layers, self.output_shapes):
            count = sum(prod(s) for k, s in layer.param_shapes().items() if k not in BUFFER_SUFFIXES)
            rows.append({"layer": layer.name, "kind": type(layer).__name__, "output": shape, "params": count})
        return rows
