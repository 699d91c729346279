"""The Evaluator interface: logits (and per-layer outputs) for given inputs, with a name and provenance.

Native PyTorch, native MindSpore, each one's ONNX export in ONNX Runtime, the float64
reference and cross-loaded weights are all evaluators; the agreement matrix, the
first-divergent-layer search and parity pair them without knowing which is which.
An evaluator's ``name`` is what reports show (``pytorch:native``,
``reference:float64[pytorch weights]``, ...; reports/README.md lists them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

EVAL_BATCH_SIZE = 1000  # images per forward when evaluating: bounds memory on any test set


class Evaluator(Protocol):
    """Anything that computes a model's outputs for inputs."""

    name: str  # as reports show it
    provenance: str  # what computes it, with which weights
    exact: bool  # the float64 reference: exact by definition, no own error to look for
    has_layers: bool  # whether ``activations`` gives every layer's output

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Eval-mode logits ``(N, classes)`` of NCHW inputs."""

    def activations(self, x: np.ndarray) -> dict[str, np.ndarray] | None:
        """Every layer's output by layer name in execution order; None where ``has_layers`` is False."""


def _prefix_of(x: np.ndarray, inputs: np.ndarray) -> bool:
    """Whether ``x`` is ``inputs`` or a leading slice of it (the same memory, not equal copies)."""
    return (x.dtype == inputs.dtype and x.shape[1:] == inputs.shape[1:] and len(x) <= len(inputs)
            and x.strides == inputs.strides
            and x.__array_interface__["data"][0] == inputs.__array_interface__["data"][0])


@dataclass
class Recorded:
    """The logits a run recorded for its test inputs, and a live evaluator for any other input.

    A run's own predictions (``predictions.npz``) are what its process computed; this keeps them
    the evidence for those inputs and asks ``live`` (the same weights, rebuilt) for the rest.
    """

    live: Evaluator
    inputs: np.ndarray
    recorded: np.ndarray
    source: str  # the file the logits came from

    @property
    def name(self) -> str:
        return self.live.name

    @property
    def provenance(self) -> str:
        return f"{self.source} (recorded); otherwise {self.live.provenance}"

    @property
    def exact(self) -> bool:
        return self.live.exact

    @property
    def has_layers(self) -> bool:
        return self.live.has_layers

    def logits(self, x: np.ndarray) -> np.ndarray:
        if _prefix_of(x, self.inputs):
            return self.recorded[:len(x)]
        return self.live.logits(x)

    def activations(self, x: np.ndarray) -> dict[str, np.ndarray] | None:
        return self.live.activations(x)
