"""Build a MindSpore nn.Cell from a ModelSpec and move canonical weights in and out.

Every MindSpore default that differs from PyTorch's is passed explicitly, with
the reason next to it (docs/findings.md has the measurements).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from harness.model.spec import (Activation, Add, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool, Linear,
                                ModelSpec, Pool)
from harness.model.weights import check_weights


class Hardswish(nn.Cell):
    """torch's Hardswish, ``x * relu6(x + 3) / 6``, from ReLU6 and arithmetic.

    nn.HSwish (2.10's name) computes the same function, but MindSpore 2.10's ONNX exporter has no HSwish
    ("Can not find key HSwish in convert map"); these ops export. Both kernels are within 2 float32 steps
    of float64 on [-8, 8] (docs/findings.md, 2026-12-05), neither correctly rounded.
    """

    def __init__(self) -> None:
        super().__init__()
        self.relu6 = nn.ReLU6()

    def construct(self, x):
        return x * self.relu6(x + 3.0) / 6.0


# Activation kind -> its cell; docs/findings.md (2026-12-05) has each CPU kernel measured against float64.
_ACTIVATIONS: dict[str, Callable[[Activation], nn.Cell]] = {
    "relu": lambda layer: nn.ReLU(),
    "tanh": lambda layer: nn.Tanh(),
    "sigmoid": lambda layer: nn.Sigmoid(),
    "relu6": lambda layer: nn.ReLU6(),  # min(max(0, x), 6), as torch's; no parameters
    "hardswish": lambda layer: Hardswish(),  # not nn.HSwish: its primitive has no ONNX export (class says more)
    # MindSpore's alpha defaults to 0.2 (torch's negative_slope: 0.01): always pass the spec's slope.
    "leaky_relu": lambda layer: nn.LeakyReLU(alpha=layer.negative_slope),
    # MindSpore's default approximate=True is the tanh formula, torch's default "none" the exact erf: map the
    # spec's string onto 2.10's bool explicitly (its CPU kernel does run the erf form, measured).
    "gelu": lambda layer: nn.GELU(approximate=layer.approximate == "tanh"),
    "identity": lambda layer: nn.Identity(),  # a Cell whose construct returns its input
}
# Canonical BatchNorm suffixes -> MindSpore's attribute names on nn.BatchNorm2d.
_BN_NAMES = {"gamma": "gamma", "beta": "beta", "mean": "moving_mean", "var": "moving_variance"}


class Sum(nn.Cell):
    """An ``Add`` layer: the element-wise sum of its inputs, as a residual block's ``out + identity``.

    ``+`` is ops.Add, which has no settings; the spec gives every input one shape, so no broadcasting
    happens. Summed left to right, ((a + b) + c), as torch's Sum and the float64 referee: each addition is
    one correctly rounded float32 operation in both frameworks (docs/findings.md, 2026-12-05 graph kernels).
    """

    def construct(self, *inputs):
        out = inputs[0] + inputs[1]
        for value in inputs[2:]:
            out = out + value
        return out


class GlobalAvgPool2d(nn.Cell):
    """torch's AdaptiveAvgPool2d(1): the mean over H and W, kept as (N, C, 1, 1).

    ``ops.ReduceMean`` over axes (2, 3) is what nn.AdaptiveAvgPool2d(1) computes, without its output-size
    bookkeeping; MindSpore 2.10's ONNX exporter maps ReduceMean (to ONNX ReduceMean), but not nn.AdaptiveAvgPool2d
    ("Can not find key AdaptiveAvgPool2D in convert map", measured). Its CPU kernel is correctly rounded or
    within 1.1 float32 steps of float64 on 8x8 to 112x112 planes, torch's mean within 2.5 (docs/findings.md).
    """

    def __init__(self) -> None:
        super().__init__()
        # keep_dims defaults to False, which would give (N, C): torch's AdaptiveAvgPool2d(1) keeps (N, C, 1, 1).
        self.mean = ops.ReduceMean(keep_dims=True)

    def construct(self, x):
        return self.mean(x, (2, 3))


class GraphCell(nn.SequentialCell):
    """The spec's layers as child cells named by layer name (so parameter names are canonical),
    run along the spec's wiring; unrolled when the graph compiles."""

    def __init__(self, cells: OrderedDict, wiring: tuple[tuple[int, ...], ...]) -> None:
        super().__init__(cells)
        self.wiring = wiring

    def construct(self, x):
        return self.outputs(x)[-1]

    def outputs(self, x, masks=None):
        """``(x, each layer's output...)``; with ``masks`` (one per Dropout, in order) each Dropout
        multiplies by its mask instead of drawing one (trainer.py says why)."""
        values = (x,)
        k = 0
        for cell, sources in zip(self.cell_list, self.wiring):
            args = ()
            for source in sources:
                args = args + (values[source],)
            if masks is not None and isinstance(cell, nn.Dropout):
                values = values + (args[0] * masks[k],)
                k = k + 1
            else:
                values = values + (cell(*args),)
        return values


@dataclass
class MsModel:
    """The opaque model handle: the cell, its spec, its device and cached compiled helpers."""

    spec: ModelSpec
    net: GraphCell
    device: str
    params: dict[str, ms.Parameter]  # canonical name -> the Parameter object inside ``net``
    cache: dict[str, Any] = field(default_factory=dict)  # eval cells compiled once per model
    dropout_steps: int = 0  # train steps whose Dropout masks were drawn: the mask stream's position


def _conv(layer: Conv2d) -> nn.Cell:
    # MindSpore defaults to pad_mode='same' and has_bias=False; torch pads explicitly and has a bias.
    pad_mode = "pad" if layer.padding else "valid"  # 'valid' = no padding; 'pad' is needed for padding > 0
    # `group` is torch's `groups` (weight (out, in / group, k, k) in both); group == in_channels is depthwise.
    return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                     pad_mode=pad_mode, padding=layer.padding, dilation=1, group=layer.groups,
                     has_bias=layer.bias, weight_init="zeros", bias_init="zeros")  # harness loads the weights


class MaxPool2d(nn.Cell):
    """Max pooling without padding, floor mode; on CPU the training graph uses a faster-to-train kernel.

    Both kernels give the same values, and route the gradient of a tie to the first maximum, as torch.
    """

    def __init__(self, kernel_size: int, stride: int, fast_backward: bool) -> None:
        super().__init__()
        # Eval (and ONNX export): ops.MaxPool, what nn.MaxPool2d runs; the fastest forward.
        self.pool = ops.MaxPool(kernel_size=kernel_size, strides=stride, pad_mode="VALID")
        # Train on CPU: MaxPool's backward recomputes the pooling (fwd+bwd ~7 ms for LeNet5's pool1 at batch 64);
        # MaxPoolWithArgmax keeps the argmax and takes ~3 ms for both. (Deprecated in favour of
        # MaxPoolWithArgmaxV2, whose CPU backward is ~20x slower still; the warning is below GLOG_v=3.)
        self.fast_backward = fast_backward
        self.pool_with_argmax = ops.MaxPoolWithArgmax(kernel_size=kernel_size, strides=stride, pad_mode="VALID")

    def construct(self, x):
        if self.training and self.fast_backward:  # Python constants: resolved when the graph compiles
            return self.pool_with_argmax(x)[0]
        return self.pool(x)


def _pool(layer: Pool, device: str) -> nn.Cell:
    # MindSpore's pooling stride defaults to 1 (torch: the kernel size): always pass it.
    if layer.kind == "max":
        return MaxPool2d(layer.kernel_size, layer.stride, fast_backward=device.startswith("cpu"))
    return nn.AvgPool2d(kernel_size=layer.kernel_size, stride=layer.stride, pad_mode="valid")


def _batchnorm(layer: BatchNorm2d) -> nn.Cell:
    # MindSpore's momentum weighs the old running value (0.9), torch's the new batch (0.1).
    return nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=1.0 - layer.momentum,
                          affine=True, use_batch_statistics=None)  # None: batch stats in train, running in eval


def _dropout(layer: Dropout, device: str) -> nn.Cell:
    # Eval (identity) and export only: the train step multiplies by host-drawn masks (trainer.py says why).
    return nn.Dropout(p=layer.p)  # `p` is the drop probability, as torch (keep_prob is deprecated)


def _dense(layer: Linear, device: str) -> nn.Cell:
    # MindSpore's Dense defaults to a normal init: zeros here, the harness loads the weights. Weight (out, in) as torch.
    return nn.Dense(layer.in_features, layer.out_features, weight_init="zeros", bias_init="zeros",
                    has_bias=layer.bias)


# One entry per layer kind of the spec (harness.model.spec.LAYER_KINDS): the cell that realises it on ``device``.
BUILDERS: dict[type, Callable[[Any, str], nn.Cell]] = {
    Conv2d: lambda layer, device: _conv(layer),
    Pool: _pool,
    Activation: lambda layer, device: _ACTIVATIONS[layer.kind](layer),
    Dropout: _dropout,
    BatchNorm2d: lambda layer, device: _batchnorm(layer),
    Flatten: lambda layer, device: nn.Flatten(start_dim=1, end_dim=-1),  # C-order over (C, H, W), as torch
    Linear: _dense,
    GlobalAvgPool: lambda layer, device: GlobalAvgPool2d(),
    Add: lambda layer, device: Sum(),
}


def build_layer(layer, device: str) -> nn.Cell:
    """The MindSpore cell of one spec layer on ``device``, through ``BUILDERS``."""
    if type(layer) not in BUILDERS:
        raise TypeError(f"no MindSpore translation for {type(layer).__name__}")
    return BUILDERS[type(layer)](layer, device)


def ms_name(canonical: str) -> str:
    """MindSpore parameter name of a canonical tensor name."""
    layer, suffix = canonical.rsplit(".", 1)
    return f"{layer}.{_BN_NAMES.get(suffix, suffix)}"


# GRAPH_MODE unrolls GraphCell's loop over the layers, and MindSpore's static analysis nests function calls
# for each step: 7-10 per layer, measured. MindSpore's default limit of 1000 calls refuses MobileNetV2's 153
# layers ("Exceed function call depth limit 1000", in predict and in the train step; 1500 compiles both) and a
# 164-layer residual graph (1300 compiles both). A 404-layer one compiled and trained at 4000 on the default
# 8 MiB stack. The limit is process-wide, so it is only ever raised; a deeper real depth could overflow the stack.
_CALLS_PER_LAYER = 16
_CALL_DEPTH = {"limit": 1000}  # MindSpore's default (mindspore.set_recursion_limit)


def _allow_call_depth(layers: int) -> None:
    """Raise MindSpore's compile-time call depth limit to what a graph of ``layers`` layers needs."""
    needed = _CALLS_PER_LAYER * layers
    if needed > _CALL_DEPTH["limit"]:
        ms.set_recursion_limit(needed)
        _CALL_DEPTH["limit"] = needed


def build(spec: ModelSpec, device: str) -> MsModel:
    """A GraphCell whose child names (and so parameter prefixes) are the spec's layer names."""
    _allow_call_depth(len(spec.layers))
    net = GraphCell(OrderedDict((layer.name, build_layer(layer, device)) for layer in spec.layers), spec.wiring)
    net.set_train(False)  # a new Cell starts in eval mode already; said here so no reader has to know
    by_attr = {}
    for layer in spec.layers:
        cell = net._cells[layer.name]  # pylint: disable=protected-access
        for suffix in layer.param_shapes():
            by_attr[f"{layer.name}.{suffix}"] = getattr(cell, _BN_NAMES.get(suffix, suffix))
    return MsModel(spec, net, device, by_attr)


def set_weights(model: MsModel, weights: dict[str, np.ndarray]) -> None:
    """Copy canonical weights into the cell (strict: exactly the spec's names and shapes)."""
    check_weights(model.spec, weights, "weights given to the mindspore backend")
    for name, param in model.params.items():
        # A private float32 copy: the Parameter must not alias the caller's array.
        param.set_data(ms.Tensor(np.array(weights[name], dtype=np.float32, copy=True)))


def get_weights(model: MsModel) -> dict[str, np.ndarray]:
    """Canonical float32 copies of every tensor, BatchNorm running statistics included."""
    return {name: np.array(param.asnumpy(), dtype=np.float32, copy=True) for name, param in model.params.items()}
