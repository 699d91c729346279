"""The model registry: every network of the tutorials this harness grew from, as data.

Each entry states its native input size (H, W); the channel count and class
count come from the dataset. ``build_model`` is the one way to get a spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import HarnessError
from .spec import Activation, Add, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool, Layer, Linear, ModelSpec, Pool

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


class _Graph:
    """Appends layers named as a torch module's attributes would be (``layer1_0_conv1`` for ``layer1.0.conv1``:
    spec names cannot hold dots); each method returns the name of the layer it added, to wire later layers."""

    def __init__(self, activation: str) -> None:
        self.layers: list[Layer] = []
        self.activation = activation

    def _add(self, layer: Layer) -> str:
        self.layers.append(layer)
        return layer.name

    def conv_bn(self, name: str, source: str, cin: int, cout: int, kernel: int, stride: int = 1,
                groups: int = 1, act: bool = True, suffix: str = "") -> str:
        """A bias-free conv, its BatchNorm and (with ``act``) the nonlinearity: the ResNet/MobileNet unit."""
        self._add(Conv2d(f"{name}conv{suffix}", cin, cout, kernel, stride, kernel // 2, bias=False, groups=groups,
                         inputs=(source,)))
        last = self._add(BatchNorm2d(f"{name}bn{suffix}", cout))
        return self._add(Activation(f"{name}{self.activation}{suffix}", self.activation)) if act else last

    def add(self, name: str, *sources: str) -> str:
        return self._add(Add(name, tuple(sources)))

    def act(self, name: str, source: str) -> str:
        return self._add(Activation(name, self.activation, inputs=(source,)))

    def head(self, source: str, channels: int, k: int, dropout: float = 0.0) -> None:
        """Global average pooling, flatten, (dropout,) the classifier."""
        self._add(GlobalAvgPool("avgpool", inputs=(source,)))
        self._add(Flatten("flatten"))
        if dropout:
            self._add(Dropout("dropout", dropout))
        self._add(Linear("fc", channels, k))


def _basic_block(g: _Graph, name: str, source: str, cin: int, cout: int, stride: int) -> str:
    """He et al.'s basic block: two 3x3 conv-BN, the shortcut added before the last nonlinearity.

    Where the shape changes the shortcut is a 1x1 conv + BN projection (option B): option A's strided slice and
    zero channel padding are not layer kinds, and B is what torchvision's and most CIFAR ResNets use.
    """
    out = g.conv_bn(name, source, cin, cout, 3, stride, suffix="1")
    out = g.conv_bn(name, out, cout, cout, 3, 1, act=False, suffix="2")
    shortcut = source
    if stride != 1 or cin != cout:
        shortcut = g.conv_bn(f"{name}shortcut_", source, cin, cout, 1, stride, act=False)
    return g.act(f"{name}{g.activation}_out", g.add(f"{name}add", out, shortcut))


def _resnet(c: int, k: int, activation: str, widths: tuple[int, ...], blocks: int) -> list[Layer]:
    g, channels = _Graph(activation), widths[0]
    out = g.conv_bn("", "input", c, channels, 3, suffix="1")  # conv1, bn1: the 3x3 stem of the CIFAR variants
    for stage, width in enumerate(widths, start=1):
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            out = _basic_block(g, f"layer{stage}_{block}_", out, channels, width, stride)
            channels = width
    g.head(out, channels, k)
    return g.layers


# MobileNetV2's inverted-residual settings (expansion t, output channels c, blocks n, first stride s), as the
# paper's Table 2 with the CIFAR change of the reference CIFAR trainings: the stem and the 24-channel stage stride 1
# (32x32 inputs end at 4x4, as 224x224 ones end at 7x7).
MOBILENETV2_PLAN = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                    (6, 320, 1, 1))


def _inverted_residual(g: _Graph, name: str, source: str, cin: int, cout: int, stride: int, expansion: int) -> str:
    """Expand 1x1 (absent when t = 1), depthwise 3x3, linear 1x1 projection; the input added back only where
    stride 1 keeps the shape (the paper's block: no projection shortcut)."""
    hidden, out = cin * expansion, source
    if expansion != 1:
        out = g.conv_bn(f"{name}expand_", out, cin, hidden, 1)
    out = g.conv_bn(f"{name}dw_", out, hidden, hidden, 3, stride, groups=hidden)
    out = g.conv_bn(f"{name}project_", out, hidden, cout, 1, act=False)
    return g.add(f"{name}add", out, source) if stride == 1 and cin == cout else out


def _mobilenetv2(c: int, k: int, activation: str, pool: str) -> list[Layer]:
    g, channels = _Graph(activation), 32
    out = g.conv_bn("stem_", "input", c, channels, 3)
    index = 0
    for expansion, width, blocks, first_stride in MOBILENETV2_PLAN:
        for block in range(blocks):
            out = _inverted_residual(g, f"block{index}_", out, channels, width, first_stride if block == 0 else 1,
                                     expansion)
            channels, index = width, index + 1
    out = g.conv_bn("last_", out, channels, 1280, 1)
    g.head(out, 1280, k, dropout=0.2)  # torchvision's classifier: Dropout(0.2), Linear
    return g.layers


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
    "resnet20": ModelEntry(lambda c, k, a, p: _resnet(c, k, a, (16, 32, 64), 3), 32, 3, "relu", "max",
                           "ResNet-20 for CIFAR (He et al.): 3x3 basic blocks 16/32/64, projection shortcuts"),
    "resnet18": ModelEntry(lambda c, k, a, p: _resnet(c, k, a, (64, 128, 256, 512), 2), 32, 3, "relu", "max",
                           "ResNet-18, CIFAR variant: 3x3 stem, no max-pool, 64-512 channels"),
    "mobilenetv2": ModelEntry(_mobilenetv2, 32, 3, "relu6", "max",
                              "MobileNetV2 width 1.0, CIFAR strides: inverted residuals, depthwise 3x3, ReLU6"),
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
    size: int | None = None,
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
        size: input height and width instead of the entry's native size (the graph models, which end in
            global average pooling, build for any size their strides leave at least 1x1; tests shrink them).

    Returns:
        The ModelSpec, its input shape ``(channels, size, size)``.

    Raises:
        HarnessError: an unknown name or option, listing the valid ones.
    """
    _check_choice("model", name, MODELS)
    entry = MODELS[name]
    activation = activation or entry.activation
    explicit_pool, pool = pool, pool or entry.pool
    _check_choice("activation", activation, ACTIVATIONS)
    _check_choice("pool", pool, POOLS)
    _check_choice("init", init, INITS)
    layers = entry.build(channels, num_classes, activation, pool)
    if explicit_pool is not None and not any(isinstance(layer, Pool) for layer in layers):
        raise HarnessError(f"{name} has no max or average pooling layer for --pool {explicit_pool} to change; "
                           "leave --pool out")
    side = size or entry.size
    try:
        return ModelSpec(name, (channels, side, side), num_classes, tuple(layers), init)
    except ValueError as error:
        raise HarnessError(f"{name} does not build for {side}x{side} inputs: {error}") from None
