"""The float64 side of ``harness parity``: exact gradients and steps, and how far float32 may land.

Two correct float32 frameworks differ by rounding, and where a ReLU input or a
max-pool runner-up lies within rounding of its threshold, by which way they
decide it. The first is small and judged by the fixed budget; the second is not
small in deep, narrow BatchNorm layers (one decision moves VGG11-BN's conv5
gradient by ~5%), and neither framework is wrong. This module measures it
without either framework: the float64 result, and a result that takes every
decision float32 cannot make (``harness.reference.grad.rounding_widths``) the other way
(for one step: the harness's own float32 backward; for a trajectory: float64).
Their distance, the *spread*, is how far a correct float32 implementation can
land from exact.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import ThreadpoolController

from ..config import TrainConfig
from ..model.spec import MODEL_INPUT, BatchNorm2d, ModelSpec
from ..model.weights import Weights
from ..reference.grad import backward, decision_layers, rounding_widths, train_forward
from ..reference.losses import cross_entropy_and_grad
from ..reference.optim import AdamRange, optimizer_step
from ..tolerances import policies


@functools.cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()  # inspecting the loaded libraries takes a while: once


def single_blas_thread(function):
    """Run ``function`` with numpy's BLAS on one thread.

    The frameworks' thread pools live in the same process; beside them OpenBLAS's two
    threads wait on each other (measured in the parity tests: LeNet5's 20-step reference
    9 s on two threads, 0.4 s on one; VGG11-BN's 1.6x faster on one).
    """
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _controller().limit(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return wrapper


def width_factor() -> float:
    """The safety multiple on the harness's own float32 error (``[float32] width_factor``)."""
    return policies().float32.width_factor


@dataclass
class Gradients:
    """One batch's gradients: exact, and float32 with its undecidable decisions flipped; and the loss."""

    loss: float
    exact: Weights
    flipped: Weights
    undecided: int
    buffers: Weights  # BatchNorm running statistics after the batch (exact)
    widths: dict[str, float] = field(default_factory=dict)
    term_sizes: Weights = field(default_factory=dict)  # see harness.reference.grad.backward


def _tapes(spec: ModelSpec, weights: Weights, x: np.ndarray):
    """The float64 and float32 tapes of one batch and the rounding widths they imply."""
    exact, rounded = train_forward(spec, weights, x), train_forward(spec, weights, x, np.float32)
    return exact, rounded, rounding_widths(exact, rounded, width_factor())


@single_blas_thread
def gradients(spec: ModelSpec, weights: Weights, x: np.ndarray, y: np.ndarray) -> Gradients:
    """Exact gradients of one batch, and the harness's float32 gradients with every decision float32
    cannot make taken the other way (decisions by the float64 values, so exact ties stay ties).

    Args:
        spec: the model (no dropout).
        weights: canonical weights and running statistics.
        x: the batch.
        y: its labels.

    Returns:
        Both gradients (float64), the number of decisions flipped, the widths used, and the
        conv-bias term sizes.
    """
    tape, rounded, widths = _tapes(spec, weights, x)
    exact, flipped = backward(tape, y), backward(rounded, y, widths, decide=tape.decision_inputs())
    as64 = {name: g.astype(np.float64) for name, g in flipped.grads.items()}
    return Gradients(exact.loss, exact.grads, as64, flipped.flipped, tape.buffers, widths, exact.term_sizes)


@single_blas_thread
def batch_loss(spec: ModelSpec, weights: Weights, x: np.ndarray, y: np.ndarray) -> float:
    """The train-mode mean cross-entropy of ``weights`` on a batch (harness float32: ~1e-7 from exact)."""
    return cross_entropy_and_grad(train_forward(spec, weights, x, np.float32).logits, np.asarray(y))[0]


@dataclass
class Trajectory:
    """A float64 training trajectory: weights (with running statistics) and optimizer state."""

    weights: Weights
    state: dict = field(default_factory=dict)

    def step(self, train: TrainConfig, lr: float, decay: set[str], grads: Weights, buffers: Weights) -> None:
        """Apply one optimizer step with ``grads`` and take the batch's running statistics."""
        updated, self.state = optimizer_step(train, lr, decay, self.weights, self.state, grads)
        self.weights = {**self.weights, **updated, **buffers}


@single_blas_thread
def synchronised_step(spec: ModelSpec, train: TrainConfig, decay: set[str], weights: Weights, state: dict,
                      x: np.ndarray, y: np.ndarray, lr: float) -> tuple[Trajectory, Trajectory, Gradients]:
    """The float64 step from ``weights`` and ``state``, and the same step with decisions flipped.

    Returns:
        The exact and the flipped outcome (weights and optimizer state) and the gradients.
    """
    grads = gradients(spec, weights, x, y)
    start = {name: np.asarray(v, dtype=np.float64) for name, v in weights.items()}
    outcomes = []
    for which in (grads.exact, grads.flipped):
        trajectory = Trajectory(start, dict(state))
        trajectory.step(train, lr, decay, which, grads.buffers)
        outcomes.append(trajectory)
    return outcomes[0], outcomes[1], grads


@single_blas_thread
def matched_steps(spec: ModelSpec, train: TrainConfig, decay: set[str], weights: Weights, state: dict,
                  x: np.ndarray, y: np.ndarray, lr: float, taken: list[dict[str, np.ndarray]]) -> list[Trajectory]:
    """The float64 step as each backend decided it: exact arithmetic, with the ReLU gates and max-pool
    choices that float32 cannot make taken as the backend took them.

    Args:
        taken: per backend, its train-mode inputs of the ReLU and max-pool layers (by layer name).
            Each value is moved at most its layer's rounding width from float64's, so a backend
            decides only what float32 could decide either way: a wrong translation's decisions
            stay float64's and its difference is not explained away.

    Returns:
        One outcome (weights and optimizer state) per backend.
    """
    tape, _, widths = _tapes(spec, weights, x)
    start = {name: np.asarray(v, dtype=np.float64) for name, v in weights.items()}
    outcomes = []
    for inputs in taken:
        decide = {name: exact + np.clip(inputs[name] - exact, -widths[name], widths[name])
                  for name, exact in tape.decision_inputs().items()}
        trajectory = Trajectory(start, dict(state))
        trajectory.step(train, lr, decay, backward(tape, y, decide=decide).grads, tape.buffers)
        outcomes.append(trajectory)
    return outcomes


def normalised_biases(spec: ModelSpec) -> list[tuple[str, BatchNorm2d]]:
    """Each bias whose layer's output a BatchNorm reads (along the wiring, wherever the two sit in the
    layer order), with that BatchNorm: its batch mean holds the bias, so its running mean carries the
    bias's noise (``LockstepReference``)."""
    params = spec.param_shapes()
    return [(f"{source}.bias", layer) for index, layer in enumerate(spec.layers) if isinstance(layer, BatchNorm2d)
            for source in spec.input_names(index) if f"{source}.bias" in params]


def decision_inputs(spec: ModelSpec, x: np.ndarray, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The input of every deciding layer (``harness.reference.grad.decision_layers``) in one pass: the model's
    input or the output of the layer its wiring names, from that pass's outputs by layer name."""
    values = {MODEL_INPUT: x, **outputs}
    names = [layer.name for layer in spec.layers]
    return {name: values[spec.input_names(names.index(name))[0]] for name in decision_layers(spec)}


class LockstepReference:
    """Two float64 trajectories run alongside the backends: exact, and one taking every decision
    float32 cannot make the other way at every step. Their distance is how far apart correct
    float32 trajectories can drift on these batches (chaos amplifies it step by step). With Adam,
    ``noise`` holds per tensor and element how far the two sides may also part along float32 noise."""

    def __init__(self, spec: ModelSpec, train: TrainConfig, decay: set[str], weights: Weights) -> None:
        start = {name: np.asarray(v, dtype=np.float64) for name, v in weights.items()}
        self.spec, self.train, self.decay = spec, train, decay
        self.exact, self.flipped = Trajectory(dict(start)), Trajectory(dict(start))
        self.undecided = 0
        self.noise: Weights = {}  # absolute, elementwise; see _noise_step
        self._steps, self._ranges = 0, {name: AdamRange() for name in spec.trainable_names()}
        self._normalised_by = normalised_biases(spec)

    @single_blas_thread
    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> None:
        """Advance both trajectories by one batch."""
        tape, rounded, widths = _tapes(self.spec, self.exact.weights, x)
        exact = backward(tape, y)
        other = train_forward(self.spec, self.flipped.weights, x)
        flipped = backward(other, y, widths)
        self.undecided = flipped.flipped
        self.exact.step(self.train, lr, self.decay, exact.grads, tape.buffers)
        self.flipped.step(self.train, lr, self.decay, flipped.grads, other.buffers)
        self._steps += 1
        if self.train.optimizer != "sgd":
            self._noise_step(exact.grads, backward(rounded, y).grads, lr)

    def _noise_step(self, exact: Weights, rounded: Weights, lr: float) -> None:
        """float32 pins each gradient down only to its error (the harness's own float32 gradient's distance
        from exact, times ``width_factor``). Where that error is not small against the gradient (every conv
        bias under train-mode BatchNorm: an exact cancellation, so pure noise; a few weights near zero or
        near eps), Adam's normalisation makes it a large update difference: the two sides may part by the
        width of ``AdamRange``'s updates. BatchNorm's running mean averages in the bias before it."""
        for bias, norm in self._normalised_by:  # the batch mean holds the bias from before the step
            mean = f"{norm.name}.mean"
            carried = (1 - norm.momentum) * self.noise.get(mean, 0.0)
            self.noise[mean] = carried + norm.momentum * self.noise.get(bias, 0.0)
        for name, grad in exact.items():
            error = width_factor() * float(np.abs(rounded[name] - grad).max())
            if self.train.optimizer == "adam" and name in self.decay:  # L2: the sides' weights enter the gradient
                error = error + self.train.weight_decay * self.noise.get(name, 0.0)
            width = self._ranges[name].step(self.train, self._steps, grad - error, grad + error)
            self.noise[name] = self.noise.get(name, 0.0) + lr * width
