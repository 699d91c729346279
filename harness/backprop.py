"""Train-mode forward and backward of each spec layer in numpy, for ``harness.reference_grad``.

Every function works in the dtype of its input (float64 for the reference, float32
for the harness's own float32 run) and never imports a framework. Forward functions
return the output and what the backward needs; backward functions return the
gradient of the input, the parameter gradients by suffix, and how many decisions
(ReLU gates, max-pool choices) within ``width`` of their threshold they took the
other way (see ``harness.reference_grad``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .reference import _ACTIVATIONS, _im2col, pool
from .spec import Activation, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear, Pool

Weights = dict[str, np.ndarray]


def _param(weights: Weights, layer: Layer, suffix: str, dtype) -> np.ndarray:
    return np.asarray(weights[f"{layer.name}.{suffix}"], dtype=dtype)


def _conv_forward(layer: Conv2d, weights: Weights, x: np.ndarray):
    p = layer.padding
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
    weight = _param(weights, layer, "weight", x.dtype)
    cols, ho, wo = _im2col(padded, layer.kernel_size, layer.stride)
    out = weight.reshape(len(weight), -1) @ cols
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
    cols, weight, padded_shape = cache
    n, o, ho, wo = grad.shape
    g = grad.transpose(1, 0, 2, 3).reshape(o, n * ho * wo)
    grads = {"weight": (g @ cols.T).reshape(weight.shape)}
    if layer.bias:
        grads["bias"] = g.sum(axis=1)
    if not need_input:
        return None, grads
    dx = _col2im(weight.reshape(o, -1).T @ g, padded_shape, layer.kernel_size, layer.stride, ho, wo)
    p = layer.padding
    return (dx[:, :, p:-p, p:-p] if p else dx), grads


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


def _activation_backward(kind: str, cache, grad: np.ndarray, width: float, decide) -> tuple[np.ndarray, int]:
    x, out = cache
    if kind == "relu":
        # torch's slope at exactly 0 is 0; within ``width`` of 0 the gate is taken the other way.
        z = x if decide is None else decide
        undecided = np.abs(z) <= width if width > 0 else np.zeros(z.shape, dtype=bool)
        return np.where((z > 0) ^ undecided, grad, 0), int(undecided.sum())
    # In terms of the output, as the frameworks do.
    if kind == "tanh":
        return grad * (1 - out * out), 0
    return grad * out * (1 - out), 0


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


def layer_forward(layer: Layer, weights: Weights, x: np.ndarray) -> tuple[np.ndarray, Any]:
    """One layer in train mode.

    Args:
        layer: a spec layer; Dropout only with ``p == 0``.
        weights: canonical weights (cast to ``x``'s dtype).
        x: the layer's input.

    Returns:
        The output and the cache ``layer_backward`` needs.

    Raises:
        ValueError: an unknown kind, or a dropout with ``p > 0`` (its masks cannot be reproduced).
    """
    if isinstance(layer, Conv2d):
        return _conv_forward(layer, weights, x)
    if isinstance(layer, Pool):
        if layer.kind not in ("max", "avg"):
            raise ValueError(f"{layer.name}: unknown pool kind {layer.kind!r}")
        out = pool(layer, x)
        return out, (x, out)
    if isinstance(layer, Activation):
        if layer.kind not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {layer.kind!r}")
        out = _ACTIVATIONS[layer.kind](x)  # the eval forward's own: keeps the input's dtype
        return out, (x, out)
    if isinstance(layer, BatchNorm2d):
        return _bn_forward(layer, weights, x)
    if isinstance(layer, Flatten):
        return x.reshape(len(x), -1), x.shape
    if isinstance(layer, Linear):
        return _linear_forward(layer, weights, x)
    if isinstance(layer, Dropout) and layer.p == 0:
        return x, None
    raise ValueError(f"no train-mode reference for layer {layer!r} (dropout masks cannot be reproduced)")


def layer_backward(layer: Layer, cache, grad: np.ndarray, need_input: bool = True, width: float = 0.0,
                   decide: np.ndarray | None = None) -> tuple[np.ndarray | None, Weights, int]:
    """One layer's backward.

    Args:
        layer: the spec layer ``cache`` came from.
        cache: ``layer_forward``'s second result.
        grad: the gradient of the loss with respect to the layer's output.
        need_input: compute the input's gradient (not needed below the first layer).
        width: ReLU gates and max-pool choices closer than this to their threshold are taken the other way.
        decide: the layer's input from another pass (float64) to take ReLU and max-pool decisions by,
            instead of this pass's own input.

    Returns:
        The input's gradient (None when not needed), parameter gradients by suffix, decisions taken the other way.
    """
    if isinstance(layer, Conv2d):
        return (*_conv_backward(layer, cache, grad, need_input), 0)
    if isinstance(layer, BatchNorm2d):
        return (*_bn_backward(cache, grad), 0)
    if isinstance(layer, Linear):
        x, weight = cache
        grads = {"weight": grad.T @ x, **({"bias": grad.sum(axis=0)} if layer.bias else {})}
        return (grad @ weight if need_input else None), grads, 0
    if isinstance(layer, Pool):
        dx, flipped = _pool_backward(layer, cache, grad, width, decide)
        return dx, {}, flipped
    if isinstance(layer, Activation):
        dx, flipped = _activation_backward(layer.kind, cache, grad, width, decide)
        return dx, {}, flipped
    if isinstance(layer, Flatten):
        return grad.reshape(cache), {}, 0
    return grad, {}, 0  # Dropout(p=0)
