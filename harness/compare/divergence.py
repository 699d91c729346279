"""Where two evaluators part: the first layer beyond the layer tolerance, and the layer whose own error is largest.

Only run for a pair that failed, on the images that fail it most: the first images of the
test set can all pass while a few others fail (lenet5-lecun-mnist after 10 epochs did).
"""

from __future__ import annotations

import numpy as np

from ..evaluators.base import Evaluator
from ..model.spec import Conv2d, Layer, ModelSpec
from ..model.weights import Weights
from ..reference.forward import own_errors
from ..tolerances import Tolerance, policies
from .metrics import first_divergent_layer

DIVERGENCE_IMAGES = 8


def worst_images(a: np.ndarray, b: np.ndarray, tol: Tolerance) -> np.ndarray:
    """Indices of the DIVERGENCE_IMAGES images whose logits exceed ``tol`` the most (NaN first), in order."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    excess = np.abs(a64 - b64) - (tol.atol + tol.rtol * np.abs(b64))
    excess[~np.isfinite(excess)] = np.inf
    return np.sort(np.argsort(-excess.max(axis=1), kind="stable")[:DIVERGENCE_IMAGES])


def _kind(layer: Layer) -> str | None:
    """What the report adds to a layer's name: an activation's or pool's kind, a conv's grouping (a depthwise
    kernel is another kernel than a dense one); None where the name says enough."""
    if isinstance(layer, Conv2d) and layer.groups > 1:
        return "depthwise conv" if layer.groups == layer.in_channels else f"conv, groups={layer.groups}"
    return getattr(layer, "kind", None)


def describe_divergence(spec: ModelSpec, weights: Weights, x: np.ndarray, candidate: Evaluator,
                        referee: Evaluator) -> str:
    """The first layer, in execution order, where ``candidate`` leaves ``referee`` on images ``x``, and,
    when that is not where it starts, the layer with the largest own error (its float32 output against
    float64 of its own input), in the evaluators' and the spec's names.

    Both evaluators must give activations; ``weights`` are the weights both run.
    """
    names, tol = [layer.name for layer in spec.layers], policies().layer
    kinds = {layer.name: _kind(layer) for layer in spec.layers}
    acts = {side.name: side.activations(x) for side in (candidate, referee)}
    found = first_divergent_layer(names, acts[candidate.name], acts[referee.name], tol)
    if found is None:
        return "none when recomputed from weights.npz: the saved logits do not come from these weights"
    own = max(({**row, "side": side.name} for side in (candidate, referee) if not side.exact
               for row in own_errors(spec, weights, x, acts[side.name], tol.atol, tol.rtol)),
              key=lambda row: row["ratio"])
    text = f"{found['layer']} (max_abs {found['max_abs']:.2e})"
    if own["layer"] == found["layer"]:
        return text
    kind = kinds.get(own["layer"])
    return (f"{text}; largest own error: {own['layer']}{f' ({kind})' if kind else ''} in {own['side']}, "
            f"{own['max_abs']:.2e} from float64 on its own input")
