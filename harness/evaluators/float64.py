"""The float64 numpy reference as an evaluator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.spec import ModelSpec
from ..model.weights import Weights
from ..reference.forward import forward, predict


@dataclass
class Float64Evaluator:
    """``spec`` with ``weights`` evaluated in float64 by the harness (no framework)."""

    spec: ModelSpec
    weights: Weights
    name: str
    provenance: str
    exact: bool = True
    has_layers: bool = True

    def logits(self, x: np.ndarray) -> np.ndarray:
        return predict(self.spec, self.weights, x)

    def activations(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return forward(self.spec, self.weights, x, collect=True)[1]
