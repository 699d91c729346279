"""A train-mode forward and backward pass of any ModelSpec in numpy: the referee for gradients.

``harness.reference.forward`` judges eval-mode outputs; training parity also needs the
gradient of the mean cross-entropy and BatchNorm's batch statistics. This module
computes both with plain numpy (it must never import a framework), in float64 by
default: about 1e-15 relative from the real-number result, so it tells how far
each float32 framework lands from exact. Run in float32 (``dtype``), the same
code is the harness's own float32 implementation, a third float32 sample that
belongs to neither framework.

Some results of a float32 computation hinge on decisions: a ReLU input or a max-pool
runner-up within float32 rounding of the threshold or of the maximum. Where float32
cannot decide, two correct frameworks may go either way, and in deep narrow layers
(VGG11-BN at 4x4 and 2x2) one such decision moves a gradient by percent.
``backward`` with ``widths`` takes every decision closer than its layer's rounding
width the other way, which measures how far float32 can honestly land.

BatchNorm follows torch's train mode: normalise with the batch mean and biased
variance, update the running variance with the unbiased one. Dropout has random
masks no other implementation can reproduce, so only ``p == 0`` is accepted
(``harness.parity.modes.parity_spec`` removes dropout layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..model.spec import BatchNorm2d, Conv2d, ModelSpec
from ..model.weights import Weights
from .forward import check_input, run_graph
from .layers import decides, layer_backward, layer_forward, running_statistics
from .losses import cross_entropy_and_grad


@dataclass
class Tape:
    """One train-mode forward pass: each layer's cache, the logits, the updated running statistics."""

    spec: ModelSpec
    caches: list
    logits: np.ndarray
    buffers: Weights

    def decision_inputs(self) -> dict[str, np.ndarray]:
        """The inputs of every ReLU and max-pool layer by layer name: where float32 must decide."""
        deciding = set(decision_layers(self.spec))
        return {layer.name: cache[0] for layer, cache in zip(self.spec.layers, self.caches) if layer.name in deciding}


def decision_layers(spec: ModelSpec) -> list[str]:
    """Names of the layers whose backward branches on their input: ReLU gates and max-pool choices."""
    return [layer.name for layer in spec.layers if decides(layer)]


@dataclass
class TrainPass:
    """What one train-mode pass gives: the loss, the gradients and the updated running statistics."""

    loss: float
    grads: Weights
    buffers: Weights
    logits: np.ndarray


def train_forward(spec: ModelSpec, weights: Weights, x: np.ndarray, dtype=np.float64) -> Tape:
    """The train-mode forward pass of ``spec`` on a batch (BatchNorm with batch statistics).

    Args:
        spec: the model; Dropout layers must have ``p == 0`` (see ``harness.parity.modes.parity_spec``).
        weights: canonical weights and BatchNorm running statistics, any float dtype.
        x: NCHW input ``(N, *spec.input_shape)``.
        dtype: the arithmetic: float64 for the reference, float32 for the harness's own float32 run.

    Returns:
        The tape: caches for ``backward``, logits, and the running statistics after this batch.

    Raises:
        ValueError: a shape mismatch, missing weights, a dropout with ``p > 0``, or an unknown layer kind.
    """
    x = np.asarray(x)
    check_input(spec, weights, x)
    caches, buffers = [], {}

    def apply(layer, inputs):
        out, cache = layer_forward(layer, weights, *inputs)
        caches.append(cache)
        if isinstance(layer, BatchNorm2d):
            count = inputs[0].size // inputs[0].shape[1]  # values per channel: BatchNorm's sample size
            buffers.update(running_statistics(layer, weights, cache, count, dtype))
        return out

    values = run_graph(spec, x.astype(dtype), apply)
    return Tape(spec, caches, values[-1], buffers)


class Backward(NamedTuple):
    """``backward``'s result."""

    loss: float
    grads: Weights  # by canonical name, in spec.trainable_names() order
    flipped: int  # decisions taken the other way
    term_sizes: Weights  # per conv bias, the sum of |terms| its gradient adds up (see backward)


def backward(tape: Tape, y: np.ndarray, widths: dict[str, float] | None = None,
             decide: dict[str, np.ndarray] | None = None) -> Backward:
    """The mean cross-entropy of ``tape``'s logits and its gradient for every trainable tensor.

    Args:
        tape: ``train_forward``'s result.
        y: integer labels ``(N,)``.
        widths: per layer name, ReLU gates and max-pool choices closer than this to their
            threshold are taken the other way (see ``rounding_widths``); None takes none.
        decide: per ReLU and max-pool layer name, input values (``Tape.decision_inputs()`` of the
            same batch and weights, e.g. float64's, or a backend's) that take its decisions: a
            float32 backward then branches exactly where float64 does.

    Returns:
        The loss, the gradients, how many decisions were flipped, and per conv bias the sum
        of the magnitudes of the terms its gradient adds up: under train-mode BatchNorm
        that gradient is exactly zero, a cancellation float32 can only resolve relative to them.
    """
    spec, widths = tape.spec, widths or {}
    loss, grad = cross_entropy_and_grad(tape.logits, np.asarray(y))
    grads: Weights = {}
    term_sizes: Weights = {}
    flipped = 0
    deciding = decide or {}
    # The gradient of each value (model input, then every layer's output), summed over its readers.
    pending: list[np.ndarray | None] = [None] * len(spec.layers) + [grad]
    for index in range(len(spec.layers) - 1, -1, -1):
        layer, sources = spec.layers[index], spec.wiring[index]
        grad, pending[index + 1] = pending[index + 1], None
        if grad is None:  # nothing reads this layer's output: its parameters get zero gradients
            grad = np.zeros((len(tape.logits), *spec.output_shapes[index]), dtype=tape.logits.dtype)
        if isinstance(layer, Conv2d) and layer.bias:
            term_sizes[f"{layer.name}.bias"] = np.abs(grad).sum(axis=(0, 2, 3))
        dx, layer_grads, count = layer_backward(layer, tape.caches[index], grad, any(sources),
                                                widths.get(layer.name, 0.0), deciding.get(layer.name))
        grads.update({f"{layer.name}.{suffix}": g for suffix, g in layer_grads.items()})
        flipped += count
        for source, value in zip(sources, dx if isinstance(dx, tuple) else (dx,)):
            if source:  # the model input's gradient is not needed
                pending[source] = value if pending[source] is None else pending[source] + value
    return Backward(loss, {name: grads[name] for name in spec.trainable_names()}, flipped, term_sizes)


def rounding_widths(exact: Tape, rounded: Tape, factor: float) -> dict[str, float]:
    """How close to its threshold a decision must be for float32 to go either way, per layer.

    Args:
        exact: the float64 tape.
        rounded: a float32 tape of the same weights and batch.
        factor: a safety multiple of the float32 error observed here (frameworks' kernels round differently).

    Returns:
        Per ReLU/max-pool layer, ``factor`` times the largest difference of its input between the tapes.
    """
    inputs = rounded.decision_inputs()
    return {name: factor * float(np.abs(inputs[name].astype(np.float64) - value).max())
            for name, value in exact.decision_inputs().items()}


def loss_and_gradients(spec: ModelSpec, weights: Weights, x: np.ndarray, y: np.ndarray,
                       dtype=np.float64) -> TrainPass:
    """One train-mode forward and backward pass, as one framework step computes it before the optimizer.

    Args:
        spec: the model; Dropout layers must have ``p == 0``.
        weights: canonical weights and BatchNorm running statistics, any float dtype.
        x: NCHW input ``(N, *spec.input_shape)``.
        y: integer labels ``(N,)``.
        dtype: float64 for the reference, float32 for the harness's own float32 run.

    Returns:
        The mean cross-entropy, every trainable tensor's gradient, the BatchNorm running
        statistics after this batch, and the logits; arrays in ``dtype``.

    Raises:
        ValueError: a shape mismatch, a dropout with ``p > 0``, or an unknown layer kind.
    """
    tape = train_forward(spec, weights, x, dtype)
    result = backward(tape, y)
    return TrainPass(result.loss, result.grads, tape.buffers, tape.logits)
