"""A float64 numpy forward pass of any ModelSpec: the neutral referee for framework outputs.

Both backends compute in float32 with their own kernels, so neither can judge the
other. This module evaluates the same spec and canonical weights in float64 with
plain numpy (it must never import a framework), in eval mode: dropout is the
identity and BatchNorm uses its running statistics. Its outputs differ from the
true real-number result by ~1e-15 relative, far below float32's ~1e-7, so any
float32 deviation it reports belongs to the framework.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .spec import Activation, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, Linear, ModelSpec, Pool

Weights = dict[str, np.ndarray]


def _f64(weights: Weights, name: str) -> np.ndarray:
    return np.asarray(weights[name], dtype=np.float64)


def _im2col(x: np.ndarray, kernel: int, stride: int) -> tuple[np.ndarray, int, int]:
    """Columns ``(C*k*k, N*Ho*Wo)`` of NCHW ``x``, rows in OIHW's (C, kh, kw) order, and Ho, Wo.

    Filled one kernel tap at a time: each copy moves whole image rows, which is
    2-3x faster for LeNet's 1-6 channel layers than materialising a window view.
    """
    n, c, h, w = x.shape
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    channels_first = x.transpose(1, 0, 2, 3)  # so each tap lands as (C, N, Ho, Wo)
    cols = np.empty((c, kernel, kernel, n, ho, wo), dtype=x.dtype)  # float32 too, for reference_grad
    for i in range(kernel):
        for j in range(kernel):
            rows = slice(i, i + stride * (ho - 1) + 1, stride)
            cols[:, i, j] = channels_first[:, :, rows, j : j + stride * (wo - 1) + 1 : stride]
    return cols.reshape(c * kernel * kernel, n * ho * wo), ho, wo


def conv2d(layer: Conv2d, weights: Weights, x: np.ndarray) -> np.ndarray:
    """Cross-correlation with zero padding, as torch.nn.functional.conv2d (im2col + one GEMM).

    Args:
        layer: the Conv2d spec (stride, padding, bias).
        weights: canonical weights; ``<name>.weight`` is OIHW.
        x: float64 NCHW input.

    Returns:
        float64 NCHW output.
    """
    p = layer.padding
    if p:
        x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    weight = _f64(weights, f"{layer.name}.weight")
    cols, ho, wo = _im2col(x, layer.kernel_size, layer.stride)
    out = weight.reshape(len(weight), -1) @ cols
    if layer.bias:
        out += _f64(weights, f"{layer.name}.bias")[:, None]
    # (O, N, Ho, Wo) -> NCHW, contiguous so the next layer's slices stay cheap.
    return np.ascontiguousarray(out.reshape(len(weight), len(x), ho, wo).transpose(1, 0, 2, 3))


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


def batch_norm(layer: BatchNorm2d, weights: Weights, x: np.ndarray) -> np.ndarray:
    """Eval-mode BatchNorm: (x - mean) / sqrt(var + eps) * gamma + beta per channel."""
    get = lambda suffix: _f64(weights, f"{layer.name}.{suffix}")[None, :, None, None]  # noqa: E731
    return (x - get("mean")) / np.sqrt(get("var") + layer.eps) * get("gamma") + get("beta")


def linear(layer: Linear, weights: Weights, x: np.ndarray) -> np.ndarray:
    """x @ W.T + b with W in (out, in) layout."""
    out = x @ _f64(weights, f"{layer.name}.weight").T
    if layer.bias:
        out += _f64(weights, f"{layer.name}.bias")
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The textbook form keeps full relative precision for very negative x, where
    # 0.5*(1+tanh(x/2)) would cancel; exp(-x) overflowing to inf gives the exact limit 0.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
}


def apply_layer(layer: Layer, weights: Weights, x: np.ndarray) -> np.ndarray:
    """One layer of the eval-mode forward pass in float64.

    Raises:
        ValueError: an unknown layer type or activation/pool kind.
    """
    if isinstance(layer, Conv2d):
        return conv2d(layer, weights, x)
    if isinstance(layer, Pool):
        if layer.kind not in ("max", "avg"):
            raise ValueError(f"{layer.name}: unknown pool kind {layer.kind!r}")
        return pool(layer, x)
    if isinstance(layer, Activation):
        if layer.kind not in _ACTIVATIONS:
            raise ValueError(f"{layer.name}: unknown activation {layer.kind!r}")
        return _ACTIVATIONS[layer.kind](x)
    if isinstance(layer, Dropout):
        return x  # eval mode: identity, no rescaling (frameworks scale at train time)
    if isinstance(layer, BatchNorm2d):
        return batch_norm(layer, weights, x)
    if isinstance(layer, Flatten):
        return x.reshape(len(x), -1)  # C-order, as both frameworks flatten
    if isinstance(layer, Linear):
        return linear(layer, weights, x)
    raise ValueError(f"no reference for layer {layer!r}")


def _check_input(spec: ModelSpec, weights: Weights, x: np.ndarray) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(spec.input_shape):
        raise ValueError(f"{spec.name}: expects input (N, {', '.join(map(str, spec.input_shape))}), got {x.shape}")
    missing = [name for name in spec.param_shapes() if name not in weights]
    if missing:
        raise ValueError(f"{spec.name}: weights lack {missing[:5]}")


def forward(
    spec: ModelSpec, weights: Weights, x: np.ndarray, collect: bool = False
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Eval-mode forward pass of ``spec`` in float64, all images at once.

    Args:
        spec: the model.
        weights: canonical weights by name (any float dtype; converted to float64).
        x: NCHW input of shape ``(N, *spec.input_shape)``, float32 or float64.
        collect: also return each layer's output, to find the first divergent layer.

    Returns:
        float64 logits ``(N, num_classes)``; with ``collect`` a tuple of the logits and
        a dict of every layer's float64 output by layer name, in execution order.

    Raises:
        ValueError: ``x`` does not match the spec's input shape, or weights are missing.
    """
    x = np.asarray(x)
    _check_input(spec, weights, x)
    out = x.astype(np.float64)
    outputs: dict[str, np.ndarray] = {}
    for layer in spec.layers:
        out = apply_layer(layer, weights, out)
        if collect:
            outputs[layer.name] = out
    return (out, outputs) if collect else out


def predict(spec: ModelSpec, weights: Weights, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Float64 logits for many images, ``batch_size`` at a time to bound memory.

    VGG11's im2col matrices grow with the batch (about 1.2 MB per image for conv2),
    so chunking keeps the peak near a few hundred MB whatever ``len(x)`` is.

    Args:
        spec: the model.
        weights: canonical weights by name.
        x: NCHW input ``(N, *spec.input_shape)``.
        batch_size: images per chunk (positive).

    Returns:
        float64 logits ``(N, num_classes)``, equal to ``forward(spec, weights, x)`` up to BLAS rounding.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    x = np.asarray(x)
    _check_input(spec, weights, x)
    weights64 = {name: _f64(weights, name) for name in spec.param_shapes()}  # convert once, not per chunk
    chunks = [forward(spec, weights64, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, spec.num_classes))


def own_errors(spec: ModelSpec, weights: Weights, x: np.ndarray, outputs: dict[str, np.ndarray],
               atol: float, rtol: float) -> list[dict]:
    """Each layer's own error in a float32 forward pass: its output against this layer in float64
    applied to the same pass's input to it, so upstream differences do not count.

    A difference that builds up through the layers may cross a tolerance only at the logits; the
    layer with the largest own error is where it enters.

    Args:
        spec: the model.
        weights: the weights the pass ran with.
        x: the pass's input images.
        outputs: that pass's output of every layer, by layer name.
        atol, rtol: the scale each error is measured on (``ratio``).

    Returns:
        ``{"layer", "max_abs", "ratio"}`` per layer in execution order, ``ratio`` = max of
        ``|own error| / (atol + rtol |float64|)``; stops after a layer whose shape is wrong (ratio inf).
    """
    rows, inputs = [], np.asarray(x, np.float64)
    for layer in spec.layers:
        out = np.asarray(outputs[layer.name], np.float64)
        exact = apply_layer(layer, weights, inputs)
        if exact.shape != out.shape:
            rows.append({"layer": layer.name, "max_abs": float("inf"), "ratio": float("inf")})
            break
        error = np.abs(out - exact)
        error[~np.isfinite(error)] = np.inf  # a NaN is the largest error there is
        ratio = error / (atol + rtol * np.abs(exact))
        rows.append({"layer": layer.name, "max_abs": float(error.max(initial=0.0)),
                     "ratio": float(np.nan_to_num(ratio, nan=np.inf).max(initial=0.0))})
        inputs = out
    return rows
