"""Step-level training parity between two backends, and the first layer where they part.

End-of-training comparisons cannot tell a framework difference from chaos (float32
rounding grows over thousands of steps). Two modes separate them:

- lockstep: both start from the same weights and take K steps on the same batches;
  the weight difference after each step is recorded (it may grow: chaos).
- synchronised: before every step both are reset to the same weights and optimizer
  state; the updates they produce are compared. This isolates one step's numeric
  difference, so its tolerance is tight.

Dropout layers are removed for parity (their masks cannot match across frameworks).
Per-parameter gradients come from any backend through the protocol: one plain SGD
step with learning rate lr from weights W gives W1 = W - lr*grad.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np

from . import reference
from .backend import Backend, get_backend
from .compare import first_divergent_layer
from .config import RunConfig, TrainConfig
from .data import Dataset, steps_per_epoch
from .schedule import decayed_names, learning_rates
from .spec import Dropout, ModelSpec
from .tolerances import tolerance, value
from .weights import init_weights

DIVERGENCE_BATCH = 16
TENSOR_FLOOR = 0.1  # see _scale


def parity_spec(spec: ModelSpec) -> ModelSpec:
    """``spec`` without Dropout layers; every parameter name is unchanged."""
    return replace(spec, layers=tuple(layer for layer in spec.layers if not isinstance(layer, Dropout)))


@dataclass
class Side:
    """One backend's model and trainer."""

    name: str
    backend: Backend
    model: Any
    trainer: Any = None


def _relative(diff: float, scale: float) -> float:
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def _batches(dataset: Dataset, config: RunConfig, steps: int) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
    t = config.train
    per_epoch = steps_per_epoch(len(dataset.train_y), t.batch_size)
    rates = learning_rates(replace(t, epochs=-(-steps // per_epoch)), per_epoch)
    step, epoch = 0, 0
    while True:
        for xb, yb in dataset.train_batches(t.batch_size, t.seed, epoch, augment=config.data.augment):
            if step == steps:
                return
            yield xb, yb, float(rates[step])
            step += 1
        epoch += 1


def _scale(tensors: dict[str, np.ndarray], names) -> dict[str, float]:
    """Per tensor, the size a difference is measured against: its own largest value, but at least
    ``TENSOR_FLOOR`` of the model's largest, so a tensor whose true value is ~0 (a conv bias before
    BatchNorm has a zero gradient) is not judged by its rounding noise alone."""
    largest = {n: float(np.abs(tensors[n]).max()) for n in names}
    model_max = max(largest.values(), default=0.0)
    return {n: max(v, TENSOR_FLOOR * model_max) for n, v in largest.items()}


def _weight_rows(mode: str, step: int, before, wa, wb, spec: ModelSpec) -> list[dict]:
    """Per-tensor differences; for synchronised mode the updates (w - before) are compared.

    Weights are stored in float32, so two correct frameworks may round the new weight
    one unit in the last place (ulp) apart; the update comparison discounts that one
    ulp (``rel``) and reports it (``max_ulps``), else a tiny update's rounding of a
    large weight would read as a large relative difference.
    """
    names = list(spec.param_shapes())
    ours = {n: wa[n].astype(np.float64) - (before[n] if before is not None else 0.0) for n in names}
    scale = _scale(ours, names)
    rows = []
    for name in names:
        new_a, new_b = wa[name].astype(np.float64), wb[name].astype(np.float64)
        ulp = np.spacing(np.maximum(np.abs(wa[name]), np.abs(wb[name])).astype(np.float32)).astype(np.float64)
        a = ours[name]
        b = new_b - before[name] if before is not None else new_b
        gap = np.abs(a - b)
        excess = np.maximum(gap - ulp, 0.0) if before is not None else gap
        norm = np.linalg.norm(a) * np.linalg.norm(b)
        rows.append({"mode": mode, "step": step, "param": name, "max_abs": float(gap.max()),
                     "max_ulps": float((np.abs(new_a - new_b) / ulp).max()),
                     "rel": _relative(float(excess.max()), scale[name]),
                     "cosine": float((a * b).sum() / norm) if norm else float("nan")})
    return rows


def lockstep(a: Side, b: Side, spec: ModelSpec, dataset: Dataset, config: RunConfig, steps: int,
             weights: dict) -> list[dict]:
    """K steps side by side from the same weights; rows per step and tensor."""
    rows = []
    for side in (a, b):
        side.backend.set_weights(side.model, weights)
        side.trainer = side.backend.make_trainer(side.model, config.train, decayed_names(spec, config.train.decay_scope))
    for step, (xb, yb, lr) in enumerate(_batches(dataset, config, steps), start=1):
        loss_a, loss_b = a.trainer.step(xb, yb, lr), b.trainer.step(xb, yb, lr)
        wa, wb = a.backend.get_weights(a.model), b.backend.get_weights(b.model)
        for row in _weight_rows("lockstep", step, None, wa, wb, spec):
            rows.append({**row, "loss_a": loss_a, "loss_b": loss_b, "loss_diff": abs(loss_a - loss_b)})
    return rows


def synchronised(a: Side, b: Side, spec: ModelSpec, dataset: Dataset, config: RunConfig, steps: int,
                 weights: dict) -> list[dict]:
    """K single steps, both sides reset to a's weights and optimizer state before each."""
    decay = decayed_names(spec, config.train.decay_scope)
    for side in (a, b):
        side.trainer = side.backend.make_trainer(side.model, config.train, decay)
    rows, state = [], {}
    for step, (xb, yb, lr) in enumerate(_batches(dataset, config, steps), start=1):
        losses = []
        for side in (a, b):
            side.backend.set_weights(side.model, weights)
            side.trainer.load_state(state)
            losses.append(side.trainer.step(xb, yb, lr))
        wa, wb = a.backend.get_weights(a.model), b.backend.get_weights(b.model)
        state_a = a.trainer.state()
        if config.train.optimizer == "sgd":
            step_rows = _weight_rows("synchronised", step, weights, wa, wb, spec)
        else:
            step_rows = _adam_rows(step, weights, wa, wb, state_a, b.trainer.state(), config.train, lr, decay, spec)
        rows += [{**row, "loss_a": losses[0], "loss_b": losses[1], "loss_diff": abs(losses[0] - losses[1])}
                 for row in step_rows]
        weights, state = wa, state_a
    return rows


def _adam_rows(step: int, before: dict, wa: dict, wb: dict, state_a: dict, state_b: dict, train: TrainConfig,
               lr: float, decay: set[str], spec: ModelSpec) -> list[dict]:
    """Adam's update divides by sqrt(v)+eps, so where |g| is near eps a gradient rounding difference
    becomes a large update difference: comparing the two updates would judge that conditioning, not
    the port. Instead judge the two parts apart: the moments (linear and quadratic in the gradient)
    against each other, and b's update against torch's formula applied to b's own moments."""
    t = float(state_b["step"])
    bias1, bias2_sqrt = 1 - train.beta1 ** t, np.sqrt(1 - train.beta2 ** t)
    expected = dict(wa)  # BatchNorm statistics are not Adam's: compared to a directly
    for name in spec.trainable_names():
        start = before[name].astype(np.float64)
        if train.optimizer == "adamw" and name in decay:
            start = start * (1 - lr * train.weight_decay)
        m, v = state_b[f"{name}.exp_avg"].astype(np.float64), state_b[f"{name}.exp_avg_sq"].astype(np.float64)
        expected[name] = start - lr / bias1 * m / (np.sqrt(v) / bias2_sqrt + train.eps)
    rows = _weight_rows("synchronised", step, before, expected, wb, spec)
    for slot in ("exp_avg", "exp_avg_sq"):
        keys = [f"{n}.{slot}" for n in spec.trainable_names()]
        scale = _scale(state_a, keys)
        for key in keys:
            diff = float(np.abs(state_a[key].astype(np.float64) - state_b[key]).max())
            rows.append({"mode": "synchronised", "step": step, "param": key, "max_abs": diff,
                         "rel": _relative(diff, scale[key])})
    return rows


MODES = {"lockstep": lockstep, "synchronised": synchronised}


def _sgd_step(side: Side, weights: dict, x: np.ndarray, y: np.ndarray, lr: float) -> dict[str, np.ndarray]:
    side.backend.set_weights(side.model, weights)
    plain = TrainConfig(optimizer="sgd", momentum=0.0, weight_decay=0.0)
    side.backend.make_trainer(side.model, plain, set()).step(x, y, lr)
    return side.backend.get_weights(side.model)


def gradients(side: Side, spec: ModelSpec, weights: dict, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per-parameter gradients of the mean loss, through the protocol: one plain SGD step gives W - lr*grad.

    A first step with lr 1 sizes the gradient; the second uses a power-of-two lr that makes
    lr*grad dwarf the weights, so float32 storage of W1 does not quantise the gradient.
    """
    names = spec.trainable_names()
    probe = _sgd_step(side, weights, x, y, 1.0)
    largest_grad = max(float(np.abs(weights[n].astype(np.float64) - probe[n]).max()) for n in names)
    largest_weight = max(float(np.abs(weights[n]).max()) for n in names)
    lr = 2.0 ** round(np.log2(max(1.0, 1e3 * largest_weight / max(largest_grad, 1e-30))))
    after = _sgd_step(side, weights, x, y, lr)
    return {n: (weights[n].astype(np.float64) - after[n]) / lr for n in names}


def divergence(a: Side, b: Side, spec: ModelSpec, x: np.ndarray, y: np.ndarray, weights: dict) -> list[dict]:
    """Forward: per-layer activations of a, b and the float64 reference; backward: per-parameter gradients."""
    layer_tol, rows = tolerance("layer"), []
    names = [layer.name for layer in spec.layers]
    acts = {}
    for side in (a, b):
        side.backend.set_weights(side.model, weights)
        acts[side.name] = side.backend.activations(side.model, x)
    acts["reference"] = reference.forward(spec, weights, x, collect=True)[1]
    for left, right in ((a.name, b.name), (a.name, "reference"), (b.name, "reference")):
        found = first_divergent_layer(names, acts[left], acts[right], layer_tol)
        rows.append({"mode": "forward", "param": found["layer"] if found else "", "pair": f"{left} vs {right}",
                     "max_abs": found["max_abs"] if found else 0.0, "rel": found["max_rel"] if found else 0.0,
                     "passed": found is None})
    grads_a, grads_b = gradients(a, spec, weights, x, y), gradients(b, spec, weights, x, y)
    budget = value("step", "update_rel")
    scale = _scale(grads_a, spec.trainable_names())
    for name in reversed(spec.trainable_names()):  # backward order: the loss end first
        diff = float(np.abs(grads_a[name] - grads_b[name]).max())
        rel = _relative(diff, scale[name])
        rows.append({"mode": "backward", "param": name, "pair": f"{a.name} vs {b.name}", "max_abs": diff,
                     "rel": rel, "passed": rel <= budget})
    return rows


def judge(rows: list[dict]) -> list[dict]:
    """Mark each step/tensor row passed or failed against the tolerance budget."""
    update_rel, loss_abs = value("step", "update_rel"), value("step", "loss_abs")
    weight_rel = value("lockstep", "weight_rel")
    for row in rows:
        if row["mode"] == "synchronised":
            row["passed"] = row["rel"] <= update_rel and row["loss_diff"] <= loss_abs
        elif row["mode"] == "lockstep":
            row["passed"] = row["rel"] <= weight_rel and row["loss_diff"] <= value("lockstep", "loss_abs")
    return rows


def first_failure(rows: list[dict]) -> dict | None:
    """The first failing row in order: forward layers, backward params, then steps."""
    return next((row for row in rows if not row.get("passed", True)), None)


def divergence_batch(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """A fixed batch (the first training images) for the divergence search."""
    return dataset.train_x[:DIVERGENCE_BATCH], dataset.train_y[:DIVERGENCE_BATCH]


def check(config: RunConfig, spec: ModelSpec, dataset: Dataset, names: list[str], steps: int,
          modes: list[str]) -> list[dict]:
    """Every parity check of ``harness parity``: divergence search, then each mode, judged."""
    spec = parity_spec(spec)
    sides = [Side(n, get_backend(n), None) for n in names]
    for side in sides:
        side.model = side.backend.build(spec, side.backend.resolve_device(config.device))
    weights = init_weights(spec, config.train.seed)
    rows = divergence(*sides, spec, *divergence_batch(dataset), weights)
    for mode in modes:
        rows += judge(MODES[mode](*sides, spec, dataset, config, steps, weights))
    return rows
