"""The model registry: every network of the tutorials this harness grew from, as data.

Each entry states its native input size (H, W); the channel count and class
count come from the dataset. ``build_model`` is the one way to get a spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import HarnessError
from .spec import Activation, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear, ModelSpec, Pool

ACTIVATIONS = ("relu", "tanh", "sigmoid", "relu6", "hardswish", "leaky_relu", "gelu", "identity")
POOLS = ("max", "avg")
INITS = ("default", "normal0.02")
VGG11_PLAN = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class _Stack:
    """Appends layers with names numbered per kind (conv1, conv2, act1, ...)."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []
        self._counts: dict[str, int] = {}

    def _name(self, prefix: str) -> str:
        self._counts[prefix] = self._counts.get(prefix, 0) + 1
        return f"{prefix}{self._counts[prefix]}"

    def conv(self, cin: int, cout: int, kernel: int, padding: int = 0) -> None:
        self.layers.append(Conv2d(self._name("conv"), cin, cout, kernel, 1, padding))

    def pool(self, kind: str, kernel: int = 2, stride: int = 2) -> None:
        self.layers.append(Pool(self._name("pool"), kind, kernel, stride))

    def act(self, kind: str) -> None:
        self.layers.append(Activation(self._name("act"), kind))

    def dropout(self, p: float) -> None:
        self.layers.append(Dropout(self._name("drop"), p))

    def bn(self, channels: int) -> None:
        self.layers.append(BatchNorm2d(self._name("bn"), channels))

    def flatten(self) -> None:
        self.layers.append(Flatten("flatten"))

    def fc(self, fin: int, fout: int) -> None:
        self.layers.append(Linear(self._name("fc"), fin, fout))


def _lenet5(c: int, k: int, activation: str, pool: str) -> list[Layer]:
    s = _Stack()
    s.conv(c, 6, 5), s.act(activation), s.pool(pool)
    s.conv(6, 16, 5), s.act(activation), s.pool(pool)
    s.flatten(), s.fc(400, 120), s.act(activation), s.fc(120, 84), s.act(activation), s.fc(84, k)
    return s.layers


def _lenet5_lecun(c: int, k: int, activation: str, pool: str) -> list[Layer]:
    s = _Stack()
    s.conv(c, 6, 5, padding=2), s.act(activation), s.pool(pool)
    s.conv(6, 16, 5), s.act(activation), s.pool(pool)
    s.conv(16, 120, 5), s.act(activation)
    s.flatten(), s.fc(120, 84), s.act(activation), s.fc(84, k)
    return s.layers


def _lenet_sigmoid(c: int, k: int, activation: str, pool: str) -> list[Layer]:
    s = _Stack()
    s.conv(c, 6, 5), s.act(activation), s.pool(pool)
    s.conv(6, 16, 5), s.act(activation), s.pool(pool)
    s.flatten(), s.fc(256, 120), s.act(activation), s.fc(120, 84), s.act(activation), s.fc(84, k)
    return s.layers


def _lenet_tiny(c: int, k: int, activation: str, pool: str) -> list[Layer]:
    s = _Stack()
    s.conv(c, 4, 3, padding=1), s.act(activation), s.pool(pool)
    s.conv(4, 8, 3, padding=1), s.act(activation), s.pool(pool)
    s.flatten(), s.fc(392, 32), s.act(activation), s.fc(32, k)
    return s.layers


def _mlp(c: int, k: int, activation: str, pool: str) -> list[Layer]:
    s = _Stack()
    s.flatten(), s.fc(c * 28 * 28, 784), s.act(activation), s.fc(784, k)
    return s.layers


def _simple_cnn(c: int, k: int, activation: str, pool: str) -> list[Layer]:
    s = _Stack()
    s.conv(c, 10, 5, padding=2), s.act(activation), s.pool(pool, kernel=2, stride=1), s.dropout(0.2)
    s.flatten(), s.fc(7290, 128), s.act(activation), s.fc(128, k)
    return s.layers


def _vgg11(c: int, k: int, activation: str, pool: str, batch_norm: bool = False) -> list[Layer]:
    s, channels = _Stack(), c
    for item in VGG11_PLAN:
        if item == "M":
            s.pool(pool)
            continue
        s.conv(channels, item, 3, padding=1)
        if batch_norm:
            s.bn(item)
        s.act(activation)
        if not batch_norm:
            s.dropout(0.5)
        channels = item
    s.flatten()
    if batch_norm:
        s.fc(512, k)
    else:
        s.fc(512, 100), s.act(activation), s.fc(100, k)
    return s.layers


@dataclass(frozen=True)
class ModelEntry:
    """A registry entry: how to build the layers, and the defaults the tutorial used."""

    build: Callable[..., list[Layer]]
    size: int  # native input height == width
    channels: int  # the tutorial's input channels (synthetic data uses them)
    activation: str
    pool: str
    description: str


MODELS: dict[str, ModelEntry] = {
    "lenet5": ModelEntry(_lenet5, 32, 1, "relu", "max", "LeNet5, 32x32, conv-pool x2, fc 400-120-84"),
    "lenet5-lecun": ModelEntry(_lenet5_lecun, 28, 1, "tanh", "avg", "LeNet-5 as LeCun: pad 2, tanh, avgpool, conv 120"),
    "lenet-sigmoid": ModelEntry(_lenet_sigmoid, 28, 1, "sigmoid", "max", "LeNet, 28x28 unpadded, sigmoid"),
    "lenet-tiny": ModelEntry(_lenet_tiny, 28, 1, "relu", "max", "tiny LeNet, 3x3 convs with 4 and 8 channels"),
    "mlp": ModelEntry(_mlp, 28, 1, "relu", "max", "MLP 784-784-10"),
    "simple-cnn": ModelEntry(_simple_cnn, 28, 1, "relu", "max", "one conv, maxpool stride 1, dropout 0.2"),
    "vgg11": ModelEntry(_vgg11, 32, 3, "relu", "max", "VGG11 for 32x32, dropout 0.5 after each conv"),
    "vgg11-bn": ModelEntry(
        lambda c, k, a, p: _vgg11(c, k, a, p, batch_norm=True), 32, 3, "relu", "max", "VGG11 with BatchNorm"
    ),
}


def _check_choice(what: str, value: str, valid) -> None:
    if value not in valid:
        raise HarnessError(f"unknown {what} {value!r}; expected one of: {', '.join(valid)}")


def build_model(
    name: str,
    channels: int = 1,
    num_classes: int = 10,
    activation: str | None = None,
    pool: str | None = None,
    init: str = "default",
) -> ModelSpec:
    """Build a registry model's spec for a dataset's channel and class count.

    Args:
        name: a key of ``MODELS``.
        channels: input channels (1 for MNIST, 3 for CIFAR-10).
        num_classes: size of the output layer.
        activation: override the model's nonlinearity (one of ``ACTIVATIONS``; leaky_relu and gelu with torch's
            default negative_slope 0.01 and approximate "none").
        pool: override the pooling kind (max, avg).
        init: ``default`` (PyTorch's default formulas) or ``normal0.02``.

    Returns:
        The ModelSpec, its input shape ``(channels, size, size)``.

    Raises:
        HarnessError: an unknown name or option, listing the valid ones.
    """
    _check_choice("model", name, MODELS)
    entry = MODELS[name]
    activation = activation or entry.activation
    pool = pool or entry.pool
    _check_choice("activation", activation, ACTIVATIONS)
    _check_choice("pool", pool, POOLS)
    _check_choice("init", init, INITS)
    layers = entry.build(channels, num_classes, activation, pool)
    return ModelSpec(name, (channels, entry.size, entry.size), num_classes, tuple(layers), init)
