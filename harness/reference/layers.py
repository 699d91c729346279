"""The one table of layer kinds for the float64 referee: eval forward, train forward, backward, decisions.

Every function works in the dtype of its input (float64 for the reference, float32
for the harness's own float32 run) and never imports a framework. Train-mode
forward functions return the output and what the backward needs; backward
functions return the gradient of the input, the parameter gradients by suffix, and
how many decisions (activation kinks such as ReLU gates, max-pool choices) within ``width`` of their
threshold they took the other way (see ``harness.reference.grad``).

A kind is added by one entry in ``RULES``; ``tests/reference`` fails when a kind of
``harness.model.spec.LAYER_KINDS`` has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..model.spec import Activation, Add, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool, Layer, Linear, Pool
from ..model.weights import Weights


def _param(weights: Weights, layer: Layer, suffix: str, dtype) -> np.ndarray:
    return np.asarray(weights[f"{layer.name}.{suffix}"], dtype=dtype)


def _im2col(x: np.ndarray, kernel: int, stride: int) -> tuple[np.ndarray, int, int]:
    """Columns ``(C*k*k, N*Ho*Wo)`` of NCHW ``x``, rows in OIHW's (C, kh, kw) order, and Ho, Wo.

    Filled one kernel tap at a time: each copy moves whole image rows, which is
    2-3x faster for LeNet's 1-6 channel layers than materialising a window view.
    """
    n, c, h, w = x.shape
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    channels_first = x.transpose(1, 0, 2, 3)  # so each tap lands as (C, N, Ho, Wo)
    cols = np.empty((c, kernel, kernel, n, ho, wo), dtype=x.dtype)  # float32 too, for the harness's own float32 run
    for i in range(kernel):
        for j in range(kernel):
            rows = slice(i, i + stride * (ho - 1) + 1, stride)
            cols[:, i, j] = channels_first[:, :, rows, j : j + stride * (wo - 1) + 1 : stride]
    return cols.reshape(c * kernel * kernel, n * ho * wo), ho, wo


def _grouped(layer: Conv2d, weight: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weight as ``(G, O/G, C/G*k*k)`` and the columns as ``(G, C/G*k*k, N*Ho*Wo)``: one GEMM per group.

    ``_im2col``'s rows run channel-major, so each group's channels are one contiguous block of rows.
    """
    groups = layer.groups
    return weight.reshape(groups, len(weight) // groups, -1), cols.reshape(groups, len(cols) // groups, -1)


def _depthwise(layer: Conv2d) -> bool:
    """One filter per channel (MobileNet's 3x3): computed tap by tap on the image, not through im2col,
    whose columns would be k*k times the activation (450 MB in float64 for a 96-channel 32x32 batch of 64)."""
    return layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels


def _depthwise_forward(layer: Conv2d, padded: np.ndarray, weight: np.ndarray, ho: int, wo: int) -> np.ndarray:
    out = None
    for tap, window in zip(_conv_taps(layer, ho, wo), weight.reshape(len(weight), -1).T):
        term = padded[tap] * window[None, :, None, None]
        out = term if out is None else np.add(out, term, out=out)
    return out


def _depthwise_backward(layer: Conv2d, cache, grad: np.ndarray, need_input: bool):
    padded, weight, _ = cache
    ho, wo = grad.shape[2:]
    taps = list(_conv_taps(layer, ho, wo))
    grads = {"weight": np.stack([(grad * padded[tap]).sum(axis=(0, 2, 3)) for tap in taps], axis=1)
             .reshape(weight.shape)}
    if layer.bias:
        grads["bias"] = grad.sum(axis=(0, 2, 3))
    if not need_input:
        return None, grads
    dx = np.zeros_like(padded)
    for tap, window in zip(taps, weight.reshape(len(weight), -1).T):
        dx[tap] += grad * window[None, :, None, None]
    p = layer.padding
    return (dx[:, :, p:-p, p:-p] if p else dx), grads


def _conv_taps(layer: Conv2d, ho: int, wo: int):
    """Each kernel offset's strided window of the padded input, row-major as OIHW's (kh, kw)."""
    k, s = layer.kernel_size, layer.stride
    for i in range(k):
        for j in range(k):
            yield (slice(None), slice(None), slice(i, i + s * (ho - 1) + 1, s), slice(j, j + s * (wo - 1) + 1, s))


def _conv_forward(layer: Conv2d, weights: Weights, x: np.ndarray):
    """Cross-correlation with zero padding, as torch.nn.functional.conv2d (im2col + one GEMM per group,
    batched), a depthwise conv tap by tap."""
    p = layer.padding
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
    weight = _param(weights, layer, "weight", x.dtype)
    if _depthwise(layer):
        size = lambda n: (n - layer.kernel_size) // layer.stride + 1  # noqa: E731
        out = _depthwise_forward(layer, padded, weight, size(padded.shape[2]), size(padded.shape[3]))
        if layer.bias:
            out += _param(weights, layer, "bias", x.dtype)[None, :, None, None]
        return out, (padded, weight, padded.shape)
    cols, ho, wo = _im2col(padded, layer.kernel_size, layer.stride)
    if layer.groups == 1:
        out = weight.reshape(len(weight), -1) @ cols
    else:
        out = np.matmul(*_grouped(layer, weight, cols)).reshape(len(weight), -1)
    if layer.bias:
        out += _param(weights, layer, "bias", x.dtype)[:, None]
    out = np.ascontiguousarray(out.reshape(len(weight), len(x), ho, wo).transpose(1, 0, 2, 3))
    return out, (cols, weight, padded.shape)


def _col2im(dcols: np.ndarray, shape: tuple[int, ...], kernel: int, stride: int, ho: int, wo: int) -> np.ndarray:
    """The adjoint of ``_im2col``: every tap's column block added back onto the input it was copied from."""
    n, c = shape[:2]
    taps = dcols.reshape(c, kernel, kernel, n, ho, wo)
    dx = np.zeros((c, n, *shape[2:]), dtype=dcols.dtype)  # channels first, as _im2col reads
    for i in range(kernel):
        for j in range(kernel):
            dx[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride] += taps[:, i, j]
    return dx.transpose(1, 0, 2, 3)


def _conv_backward(layer: Conv2d, cache, grad: np.ndarray, need_input: bool):
    if _depthwise(layer):
        return _depthwise_backward(layer, cache, grad, need_input)
    cols, weight, padded_shape = cache
    n, o, ho, wo = grad.shape
    g = grad.transpose(1, 0, 2, 3).reshape(o, n * ho * wo)
    if layer.groups == 1:
        # (cols g^T)^T, not g cols^T: OpenBLAS runs the long-K product 5-7x faster with the wide operand first.
        grads = {"weight": (cols @ g.T).T.reshape(weight.shape)}
    else:
        grouped_weight, grouped_cols = _grouped(layer, weight, cols)
        grouped_g = g.reshape(layer.groups, o // layer.groups, -1)
        grads = {"weight": np.matmul(grouped_g, grouped_cols.transpose(0, 2, 1)).reshape(weight.shape)}
    if layer.bias:
        grads["bias"] = g.sum(axis=1)
    if not need_input:
        return None, grads
    if layer.groups == 1:
        dcols = weight.reshape(o, -1).T @ g
    else:
        dcols = np.matmul(grouped_weight.transpose(0, 2, 1), grouped_g).reshape(len(cols), -1)
    dx = _col2im(dcols, padded_shape, layer.kernel_size, layer.stride, ho, wo)
    p = layer.padding
    return (dx[:, :, p:-p, p:-p] if p else dx), grads


def pool(layer: Pool, x: np.ndarray) -> np.ndarray:
    """Max or average pooling without padding, floor mode (trailing rows/cols dropped)."""
    k, s = layer.kernel_size, layer.stride
    ho, wo = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
    # Reduce one window offset (tap) at a time: k*k strided element-wise passes are
    # 4-8x faster than numpy reducing over small trailing axes of a window view.
    reduce = np.maximum if layer.kind == "max" else np.add
    out = None
    for i in range(k):
        for j in range(k):
            tap = x[:, :, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s]
            out = tap.copy() if out is None else reduce(out, tap, out=out)
    return out if layer.kind == "max" else out / (k * k)


def _taps(layer: Pool, shape: tuple[int, ...]):
    """Each window offset (i, j) with the strided slices it reads, in row-major order."""
    k, s = layer.kernel_size, layer.stride
    ho, wo = (shape[2] - k) // s + 1, (shape[3] - k) // s + 1
    for i in range(k):
        for j in range(k):
            yield (slice(None), slice(None), slice(i, i + s * (ho - 1) + 1, s), slice(j, j + s * (wo - 1) + 1, s))


def _pool_backward(layer: Pool, cache, grad: np.ndarray, width: float, decide) -> tuple[np.ndarray, int]:
    x, out = cache
    dx = np.zeros_like(x)
    taps = list(_taps(layer, x.shape))
    if layer.kind == "avg":
        for tap in taps:
            dx[tap] += grad / len(taps)
        return dx, 0
    if (width > 0 or decide is not None) and len(taps) > 1:
        return _max_pool_routed(taps, x if decide is None else decide, grad, width)
    # The gradient goes to the first maximum of each window in row-major order, as torch's kernels pick it.
    unclaimed = np.ones(out.shape, dtype=bool)
    for tap in taps:
        hit = unclaimed & (x[tap] == out)
        dx[tap] += np.where(hit, grad, 0)
        unclaimed &= ~hit
    return dx, 0


def _max_pool_routed(taps, values: np.ndarray, grad: np.ndarray, width: float) -> tuple[np.ndarray, int]:
    """Max-pool backward choosing by ``values``: the first maximum, or the runner-up wherever it is
    within ``width`` of the maximum.

    Exact ties are left alone: equal values come from equal inputs (a blank background),
    so either choice gives the same gradient.
    """
    stacked = np.stack([values[tap] for tap in taps])
    order = np.argsort(-stacked, axis=0, kind="stable")[:2]  # stable: the first maximum first
    top = np.take_along_axis(stacked, order, axis=0)
    undecided = (top[0] - top[1] > 0) & (top[0] - top[1] <= width)
    chosen = np.where(undecided, order[1], order[0])
    dx = np.zeros(values.shape, dtype=grad.dtype)
    for index, tap in enumerate(taps):
        dx[tap] += np.where(chosen == index, grad, 0)
    return dx, int(undecided.sum())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The textbook form keeps full relative precision for very negative x, where
    # 0.5*(1+tanh(x/2)) would cancel; exp(-x) overflowing to inf gives the exact limit 0.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


_ERF = np.frompyfunc(math.erf, 1, 1)  # numpy has no erf; math.erf is correctly rounded enough for float64
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_KAPPA = 0.044715  # the tanh formula's cubic coefficient, as torch's


def _erf(x: np.ndarray) -> np.ndarray:
    return _ERF(x).astype(x.dtype)  # keeps the input's dtype: the float32 run rounds each value once


def _gelu(layer: Activation, x: np.ndarray) -> np.ndarray:
    """torch.nn.GELU: x * Phi(x) with the erf, or its tanh formula when ``approximate == "tanh"``."""
    if layer.approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + _GELU_KAPPA * x * x * x)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


# Python scalars keep a float32 input float32 (NEP 50), so the harness's float32 run stays in float32.
_ACTIVATIONS: dict[str, Callable[[Activation, np.ndarray], np.ndarray]] = {
    "relu": lambda layer, x: np.maximum(x, 0.0),
    "tanh": lambda layer, x: np.tanh(x),
    "sigmoid": lambda layer, x: _sigmoid(x),
    "relu6": lambda layer, x: np.clip(x, 0.0, 6.0),
    "hardswish": lambda layer, x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "leaky_relu": lambda layer, x: np.where(x > 0, x, x * layer.negative_slope),
    "gelu": _gelu,
    "identity": lambda layer, x: x,
}


def _activation(layer: Activation) -> Callable[[np.ndarray], np.ndarray]:
    if layer.kind not in _ACTIVATIONS:
        raise ValueError(f"{layer.name}: unknown activation {layer.kind!r}")
    return lambda x: _ACTIVATIONS[layer.kind](layer, x)


# Where each piecewise-linear part's slope jumps, and the side torch's backward takes at the threshold itself
# (True: the side above it): relu and leaky_relu give the lower slope at 0 (``x > 0``), relu6 the outer
# slope 0 at 0 and 6 (hardtanh_backward's ``min < x < max``), hardswish the outer slopes, 0 at -3 and 1 at 3
# (only ``-3 < x < 3`` takes x/3 + 1/2; measured against torch in tests/reference/test_new_kinds.py).
# GELU, tanh, sigmoid and identity are smooth: no kink, no decision.
_KINKS: dict[str, tuple[tuple[float, bool], ...]] = {
    "relu": ((0.0, False),),
    "leaky_relu": ((0.0, False),),
    "relu6": ((0.0, False), (6.0, True)),
    "hardswish": ((-3.0, False), (3.0, True)),
}


def _sides(kind: str, z: np.ndarray, width: float) -> tuple[list[np.ndarray], int]:
    """Per kink of ``kind``, whether ``z`` is taken above it; within ``width`` of it, the other way.

    Returns:
        One boolean array per kink, and how many decisions were taken the other way.
    """
    sides, flipped = [], 0
    for threshold, tie_above in _KINKS[kind]:
        above = (z > threshold) | ((z == threshold) & tie_above)
        if width > 0:
            undecided = np.abs(z - threshold) <= width
            above ^= undecided
            flipped += int(undecided.sum())
        sides.append(above)
    return sides, flipped


def _piecewise_backward(layer: Activation, x: np.ndarray, sides: list[np.ndarray], grad: np.ndarray) -> np.ndarray:
    """The input's gradient of a piecewise-linear kind at ``x`` on the chosen sides of its kinks."""
    kind = layer.kind
    if kind == "relu":
        return np.where(sides[0], grad, 0)  # a gate, not a product: a closed gate gives +0, as torch's
    if kind == "relu6":
        return np.where(sides[0] & ~sides[1], grad, 0)
    if kind == "leaky_relu":
        return np.where(sides[0], grad, grad * layer.negative_slope)
    # hardswish: 0 below -3, x/3 + 1/2 between (at x itself: a flip lands on the other side's limit), 1 above 3.
    return np.where(~sides[0], 0, np.where(sides[1], grad, grad * (x / 3.0 + 0.5)))


def _gelu_slope(layer: Activation, x: np.ndarray) -> np.ndarray:
    """d/dx GELU: Phi(x) + x * phi(x), or the tanh formula's derivative as torch's GeluBackward computes it."""
    if layer.approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (x + _GELU_KAPPA * x * x * x)
        t = np.tanh(inner)
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_KAPPA * x * x)
    cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
    return cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _check_pool(layer: Pool) -> Pool:
    if layer.kind not in ("max", "avg"):
        raise ValueError(f"{layer.name}: unknown pool kind {layer.kind!r}")
    return layer


def _activation_backward(layer: Activation, cache, grad: np.ndarray, width: float,
                         decide) -> tuple[np.ndarray, int]:
    x, out = cache
    if layer.kind in _KINKS:
        # Each kink's side is decided on ``decide`` (another pass's input) when given; within ``width`` of a
        # kink the other side is taken. The slope between kinks is this pass's own (hardswish's x/3 + 1/2).
        sides, flipped = _sides(layer.kind, x if decide is None else decide, width)
        return _piecewise_backward(layer, x, sides, grad), flipped
    if layer.kind == "gelu":
        return grad * _gelu_slope(layer, x), 0
    if layer.kind == "identity":
        return grad, 0
    # In terms of the output, as the frameworks do.
    if layer.kind == "tanh":
        return grad * (1 - out * out), 0
    return grad * out * (1 - out), 0


def _bn_eval(layer: BatchNorm2d, weights: Weights, x: np.ndarray) -> np.ndarray:
    """Eval-mode BatchNorm: (x - mean) / sqrt(var + eps) * gamma + beta per channel, running statistics."""
    get = lambda suffix: _param(weights, layer, suffix, x.dtype)[None, :, None, None]  # noqa: E731
    return (x - get("mean")) / np.sqrt(get("var") + layer.eps) * get("gamma") + get("beta")


def _bn_forward(layer: BatchNorm2d, weights: Weights, x: np.ndarray):
    mean = x.mean(axis=(0, 2, 3))
    centred = x - mean[None, :, None, None]
    var = (centred * centred).mean(axis=(0, 2, 3))  # biased: what normalises
    inv_std = 1 / np.sqrt(var + layer.eps)
    normalised = centred * inv_std[None, :, None, None]
    gamma, beta = (_param(weights, layer, s, x.dtype) for s in ("gamma", "beta"))
    out = normalised * gamma[None, :, None, None] + beta[None, :, None, None]
    return out, (normalised, inv_std, gamma, mean, var)


def _bn_backward(cache, grad: np.ndarray):
    normalised, inv_std, gamma, _, _ = cache
    axes = (0, 2, 3)
    grads = {"gamma": (grad * normalised).sum(axis=axes), "beta": grad.sum(axis=axes)}
    # d/dx of gamma*(x - mean)/std: the batch mean and variance depend on x too.
    centred_grad = grad - grad.mean(axis=axes)[None, :, None, None]
    projection = (grad * normalised).mean(axis=axes)[None, :, None, None]
    dx = (centred_grad - normalised * projection) * (gamma * inv_std)[None, :, None, None]
    return dx, grads


def running_statistics(layer: BatchNorm2d, weights: Weights, cache, count: int, dtype) -> Weights:
    """torch's running-statistics update: the unbiased batch variance, ``momentum`` weighting the batch."""
    _, _, _, mean, var = cache
    m = layer.momentum
    return {f"{layer.name}.mean": (1 - m) * _param(weights, layer, "mean", dtype) + m * mean,
            f"{layer.name}.var": (1 - m) * _param(weights, layer, "var", dtype) + m * var * count / (count - 1)}


def _linear_forward(layer: Linear, weights: Weights, x: np.ndarray):
    weight = _param(weights, layer, "weight", x.dtype)
    out = x @ weight.T
    if layer.bias:
        out += _param(weights, layer, "bias", x.dtype)
    return out, (x, weight)


def _linear_backward(layer: Linear, cache, grad: np.ndarray, need_input: bool, width: float, decide):
    x, weight = cache
    grads = {"weight": grad.T @ x, **({"bias": grad.sum(axis=0)} if layer.bias else {})}
    return (grad @ weight if need_input else None), grads, 0


def _global_avg_pool(x: np.ndarray) -> np.ndarray:
    """The mean of each plane, kept as (N, C, 1, 1): a sum then one division, as torch's mean."""
    return x.mean(axis=(2, 3), keepdims=True)


def _global_avg_pool_backward(cache, grad: np.ndarray) -> np.ndarray:
    shape = cache
    return np.broadcast_to(grad / (shape[2] * shape[3]), shape).copy()


def _add(xs: tuple[np.ndarray, ...]) -> np.ndarray:
    out = xs[0] + xs[1]
    for x in xs[2:]:
        out = out + x
    return out


def _dropout_train(layer: Dropout, weights: Weights, x: np.ndarray):
    if layer.p != 0:
        raise ValueError(f"no train-mode reference for layer {layer!r} (dropout masks cannot be reproduced)")
    return x, None


@dataclass(frozen=True)
class LayerRule:
    """How the referee computes one layer kind.

    Attributes:
        forward: eval mode ``(layer, weights, *inputs) -> y``: dropout the identity, BatchNorm on running
            statistics. Every kind but ``Add`` has one input.
        train_forward: train mode ``(layer, weights, *inputs) -> (y, cache)``: BatchNorm on batch statistics.
        backward: ``(layer, cache, grad, need_input, width, decide) -> (dx or None, grads by suffix, flipped)``;
            ``dx`` is a tuple, one gradient per input, for a layer of several inputs.
        decides: whether the layer's backward branches on its input (activation kinks, max-pool choices): where
            float32 may decide either way (see ``harness.reference.grad``).
    """

    forward: Callable[[Any, Weights, np.ndarray], np.ndarray]
    train_forward: Callable[[Any, Weights, np.ndarray], tuple[np.ndarray, Any]]
    backward: Callable[..., tuple[np.ndarray | None, Weights, int]]
    decides: Callable[[Any], bool] = lambda layer: False


def _no_parameters(backward: Callable) -> Callable:
    """A backward of a layer without parameters, from ``(layer, cache, grad, width, decide) -> (dx, flipped)``."""
    def wrapped(layer, cache, grad, need_input, width, decide):
        dx, flipped = backward(layer, cache, grad, width, decide)
        return dx, {}, flipped
    return wrapped


def _with_cache(forward: Callable) -> Callable:
    """A train forward whose backward needs the input and the output."""
    def wrapped(layer, weights, x):
        out = forward(layer, weights, x)
        return out, (x, out)
    return wrapped


RULES: dict[type, LayerRule] = {
    Conv2d: LayerRule(
        forward=lambda layer, weights, x: _conv_forward(layer, weights, x)[0],
        train_forward=_conv_forward,
        backward=lambda layer, cache, grad, need_input, width, decide: (
            *_conv_backward(layer, cache, grad, need_input), 0)),
    Pool: LayerRule(
        forward=lambda layer, weights, x: pool(_check_pool(layer), x),
        train_forward=_with_cache(lambda layer, weights, x: pool(_check_pool(layer), x)),
        backward=_no_parameters(_pool_backward),
        decides=lambda layer: layer.kind == "max"),
    Activation: LayerRule(
        forward=lambda layer, weights, x: _activation(layer)(x),
        train_forward=_with_cache(lambda layer, weights, x: _activation(layer)(x)),  # keeps the input's dtype
        backward=_no_parameters(_activation_backward),
        decides=lambda layer: layer.kind in _KINKS),
    Dropout: LayerRule(
        forward=lambda layer, weights, x: x,  # eval mode: identity, no rescaling (frameworks scale at train time)
        train_forward=_dropout_train,
        backward=lambda layer, cache, grad, need_input, width, decide: (grad, {}, 0)),
    BatchNorm2d: LayerRule(
        forward=_bn_eval,
        train_forward=_bn_forward,
        backward=lambda layer, cache, grad, need_input, width, decide: (*_bn_backward(cache, grad), 0)),
    Flatten: LayerRule(
        forward=lambda layer, weights, x: x.reshape(len(x), -1),  # C-order, as both frameworks flatten
        train_forward=lambda layer, weights, x: (x.reshape(len(x), -1), x.shape),
        backward=lambda layer, cache, grad, need_input, width, decide: (grad.reshape(cache), {}, 0)),
    Linear: LayerRule(
        forward=lambda layer, weights, x: _linear_forward(layer, weights, x)[0],
        train_forward=_linear_forward,
        backward=_linear_backward),
    GlobalAvgPool: LayerRule(
        forward=lambda layer, weights, x: _global_avg_pool(x),
        train_forward=lambda layer, weights, x: (_global_avg_pool(x), x.shape),
        backward=lambda layer, cache, grad, need_input, width, decide: (
            _global_avg_pool_backward(cache, grad), {}, 0)),
    Add: LayerRule(
        forward=lambda layer, weights, *xs: _add(xs),
        train_forward=lambda layer, weights, *xs: (_add(xs), len(xs)),
        # Every summand's gradient is the sum's: the same array, which no caller writes into.
        backward=lambda layer, cache, grad, need_input, width, decide: ((grad,) * cache, {}, 0)),
}


def rule(layer: Layer) -> LayerRule:
    """The referee's entry for ``layer``'s kind.

    Raises:
        ValueError: a kind the table does not hold.
    """
    try:
        return RULES[type(layer)]
    except KeyError:
        raise ValueError(f"no reference for layer {layer!r}") from None


def apply_layer(layer: Layer, weights: Weights, *inputs: np.ndarray) -> np.ndarray:
    """One layer of the eval-mode forward pass, in its input's dtype (an ``Add`` takes several inputs).

    Raises:
        ValueError: an unknown layer kind, activation or pool kind.
    """
    return rule(layer).forward(layer, weights, *inputs)


def layer_forward(layer: Layer, weights: Weights, *inputs: np.ndarray) -> tuple[np.ndarray, Any]:
    """One layer in train mode: the output and the cache ``layer_backward`` needs.

    Raises:
        ValueError: an unknown kind, or a dropout with ``p > 0`` (its masks cannot be reproduced).
    """
    return rule(layer).train_forward(layer, weights, *inputs)


def layer_backward(layer: Layer, cache, grad: np.ndarray, need_input: bool = True, width: float = 0.0,
                   decide: np.ndarray | None = None) -> tuple[np.ndarray | None, Weights, int]:
    """One layer's backward.

    Args:
        layer: the spec layer ``cache`` came from.
        cache: ``layer_forward``'s second result.
        grad: the gradient of the loss with respect to the layer's output.
        need_input: compute the input's gradient (not needed below the first layer).
        width: activation kinks (ReLU gates) and max-pool choices closer than this are taken the other way.
        decide: the layer's input from another pass (float64) to take ReLU and max-pool decisions by,
            instead of this pass's own input.

    Returns:
        The input's gradient (None when not needed; a tuple, one per input, for an ``Add``), parameter
        gradients by suffix, decisions taken the other way.
    """
    return rule(layer).backward(layer, cache, grad, need_input, width, decide)


def decides(layer: Layer) -> bool:
    """Whether ``layer``'s backward branches on its input: a ReLU gate or a max-pool choice."""
    return rule(layer).decides(layer)
