"""A framework backend as an evaluator: given weights loaded into a freshly built model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import Backend
from ..model.spec import ModelSpec
from ..model.weights import Weights
from .base import EVAL_BATCH_SIZE


@dataclass
class NativeEvaluator:
    """``backend`` running ``model`` in eval mode."""

    backend: Backend
    model: Any
    name: str
    provenance: str
    exact: bool = False
    has_layers: bool = True

    @classmethod
    def build(cls, backend: Backend, spec: ModelSpec, weights: Weights, name: str, weights_from: str,
              device: str = "cpu") -> NativeEvaluator:
        """A new model of ``spec`` on ``device`` holding ``weights`` (from ``weights_from``, for provenance)."""
        model = backend.build(spec, device)
        backend.set_weights(model, weights)
        return cls(backend, model, name, f"{backend.name} on {device} with {weights_from}")

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.backend.predict(self.model, x, EVAL_BATCH_SIZE)

    def activations(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.backend.activations(self.model, x)
