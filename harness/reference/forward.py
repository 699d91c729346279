"""A float64 numpy forward pass of any ModelSpec: the neutral referee for framework outputs.

Both backends compute in float32 with their own kernels, so neither can judge the
other. This module evaluates the same spec and canonical weights in float64 with
plain numpy (it must never import a framework), in eval mode: dropout is the
identity and BatchNorm uses its running statistics. Its outputs differ from the
true real-number result by ~1e-15 relative, far below float32's ~1e-7, so any
float32 deviation it reports belongs to the framework.
"""

from __future__ import annotations

import numpy as np

from ..model.spec import ModelSpec
from ..model.weights import Weights
from .layers import apply_layer


def check_input(spec: ModelSpec, weights: Weights, x: np.ndarray) -> None:
    """Raise ValueError unless ``x`` is ``(N, *spec.input_shape)`` and ``weights`` holds every tensor."""
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
    check_input(spec, weights, x)
    values = run_graph(spec, x.astype(np.float64), lambda layer, inputs: apply_layer(layer, weights, *inputs),
                       keep=collect)
    out = values[-1]
    if not collect:
        return out
    return out, {layer.name: value for layer, value in zip(spec.layers, values[1:])}


def run_graph(spec: ModelSpec, x: np.ndarray, apply, keep: bool = False) -> list:
    """Run ``apply(layer, inputs)`` over the spec's layers in order, each on the values its wiring names.

    Args:
        spec: the model.
        x: the model's input.
        apply: computes one layer's value from the list of its input values.
        keep: keep every value; otherwise each is dropped after its last reader, to bound memory.

    Returns:
        ``[x, value of layer 0, layer 1, ...]``; dropped values are None.
    """
    last_read = {source: index for index, sources in enumerate(spec.wiring) for source in sources}
    values = [x]
    for index, (layer, sources) in enumerate(zip(spec.layers, spec.wiring)):
        values.append(apply(layer, [values[source] for source in sources]))
        if not keep:
            for source in sources:
                if last_read[source] == index:
                    values[source] = None
    return values


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
    check_input(spec, weights, x)
    # Converted once, not per chunk.
    weights64 = {name: np.asarray(weights[name], dtype=np.float64) for name in spec.param_shapes()}
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
    rows = []
    values = [np.asarray(x, np.float64)] + [np.asarray(outputs[layer.name], np.float64) for layer in spec.layers]
    for index, layer in enumerate(spec.layers):
        out = values[index + 1]
        exact = apply_layer(layer, weights, *(values[source] for source in spec.wiring[index]))
        if exact.shape != out.shape:
            rows.append({"layer": layer.name, "max_abs": float("inf"), "ratio": float("inf")})
            break
        error = np.abs(out - exact)
        error[~np.isfinite(error)] = np.inf  # a NaN is the largest error there is
        ratio = error / (atol + rtol * np.abs(exact))
        rows.append({"layer": layer.name, "max_abs": float(error.max(initial=0.0)),
                     "ratio": float(np.nan_to_num(ratio, nan=np.inf).max(initial=0.0))})
    return rows
