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

Every gradient, update and trajectory is also computed in float64 by the harness
(``harness.parity.spread``), with and without the decisions float32 cannot make: each row
reports both sides' distance from float64 (``rel64_a``, ``rel64_b``) and float32's
``spread``, and passes when ``rel <= budget + spread_factor * spread`` (``allowed``).
A synchronised step over the budget also gets ``rel_matched``: the difference left once each
side is compared with the float64 step taking that side's own undecidable decisions, and each
side's distance from that step (``rel64_matched_a``, ``rel64_matched_b``): whose rounding it is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np

from ..backend import Backend, get_backend
from ..compare.metrics import layer_differences
from ..config import RunConfig, TrainConfig
from ..data.batches import steps_per_epoch
from ..data.fit import Dataset
from ..model.resolve import run_initial_weights
from ..model.spec import MODEL_INPUT, Activation, Dropout, ModelSpec
from ..progress import Progress, format_seconds
from ..reference.forward import forward
from ..reference.grad import train_forward
from ..tolerances import policies
from ..training.schedule import decayed_names, learning_rates
from . import spread
from .rows import (adam_rows, cancelled_update_scales, float64_columns, gradient_scales, matched_rel, moment_scales,
                   relative, weight_rows)

DIVERGENCE_BATCH = 16
# parity.csv's columns, in order (reports/README.md); a mode leaves the ones it has no value for empty.
COLUMNS = ("mode", "step", "param", "pair", "max_abs", "rel", "passed", "allowed", "rel64_a", "rel64_b", "spread",
           "undecided", "rel_matched", "rel64_matched_a", "rel64_matched_b", "noise", "max_ulps", "cosine", "loss_a",
           "loss_b", "loss_diff", "loss_explained", "model", "backend_a", "backend_b")


def parity_spec(spec: ModelSpec) -> ModelSpec:
    """``spec`` without Dropout layers, each reader of one rewired to what the Dropout read; every layer
    and parameter name is unchanged, and a chain stays a chain (no layer names its input).

    A reader that named a Dropout, or took it as the layer before, now names the Dropout's own input,
    unless that is the layer before it once the Dropout is gone. A Dropout whose output is the logits
    and whose input is not the layer before it becomes an identity Activation: the logits must stay last.
    """
    source: dict[str, str] = {}  # a removed Dropout -> the layer (or model input) it read, through Dropout chains
    layers = []
    for index, layer in enumerate(spec.layers):
        reads = tuple(source.get(name, name) for name in spec.input_names(index))
        if isinstance(layer, Dropout) and (index + 1 < len(spec.layers) or reads[0] == _before(layers)):
            source[layer.name] = reads[0]
            continue
        if isinstance(layer, Dropout):
            layer = Activation(layer.name, "identity", inputs=layer.inputs)
        if reads != spec.input_names(index):  # it read a Dropout: name its inputs unless the default is right
            layer = replace(layer, inputs=() if reads == (_before(layers),) else reads)
        layers.append(layer)
    return replace(spec, layers=tuple(layers))


def _before(layers: list) -> str:
    """What a layer appended to ``layers`` reads by default: the last one, or the model's input."""
    return layers[-1].name if layers else MODEL_INPUT


@dataclass
class Side:
    """One backend's model and trainer."""

    name: str
    backend: Backend
    model: Any
    trainer: Any = None


def step_batches(dataset: Dataset, config: RunConfig, steps: int) -> Iterator[tuple[np.ndarray, np.ndarray, float]]:
    """The run's first ``steps`` batches with the learning rate of each: what both sides of a mode take."""
    t = config.train
    per_epoch = steps_per_epoch(len(dataset.train_y), t.batch_size)
    # The run's own schedule (its first `steps` rates); stretched only when parity asks for more steps than it has.
    rates = learning_rates(replace(t, epochs=max(t.epochs, -(-steps // per_epoch))), per_epoch)
    step, epoch = 0, 0
    while True:
        for xb, yb in dataset.train_batches(t.batch_size, t.seed, epoch, augment=config.data.augment):
            if step == steps:
                return
            yield xb, yb, float(rates[step])
            step += 1
        epoch += 1


def _loss_explained(spec: ModelSpec, before: tuple[dict, dict], x: np.ndarray, y: np.ndarray, gap: float) -> float:
    """How far apart the two sides' losses on this batch may be, given their weights before the step:
    a loss gap the weights imply is their drift (judged per tensor), not a fault. Only evaluated when
    ``gap`` exceeds the budget (else 0: nothing to explain)."""
    wa, wb = before
    if gap <= policies().lockstep.loss_abs or all(np.array_equal(wa[name], wb[name]) for name in wa):
        return 0.0
    return abs(spread.batch_loss(spec, wa, x, y) - spread.batch_loss(spec, wb, x, y))


def _float32_loss_error(spec: ModelSpec, weights: dict, x: np.ndarray, y: np.ndarray, exact: float,
                        gap: float) -> float:
    """How far apart float32 alone may put the two sides' losses at the same weights: ``spread_factor``
    times the harness's own float32 loss's distance from float64 (each side may land that far on either
    side). Only evaluated when ``gap`` exceeds the budget (else 0): a 150-layer MobileNetV2 at batch 8
    puts a float32 loss ~1e-5 from exact, the budget itself."""
    if gap <= policies().step.loss_abs:
        return 0.0
    return policies().float32.spread_factor * abs(spread.batch_loss(spec, weights, x, y) - exact)


def _statistics_over_budget(rows: list[dict], spec: ModelSpec) -> bool:
    """Whether a BatchNorm running statistic's row fails as ``judge`` would judge it without more allowance."""
    statistics = set(spec.param_shapes()) - set(spec.trainable_names())
    limit = policies().lockstep.weight_rel
    factor = policies().float32.spread_factor
    return any(row["rel"] > limit + factor * row.get("spread", 0.0) + row.get("noise", 0.0)
               for row in rows if row["param"] in statistics)


def _statistics_explained(spec: ModelSpec, before: tuple[dict, dict], x: np.ndarray) -> dict[str, np.ndarray]:
    """Per running statistic, elementwise, how far apart the two sides' weights before the step put it.

    A statistic after a step is a function of the weights and statistics before it: float64 applied to each
    side's own is what each side would hold computed exactly, so their distance is drift the weights already
    judged carry in (through ResNet-20's 20 BatchNorms, 5 steps of lockstep moved the means 1e-3 relative while
    exact-vs-flipped float64 moved them 4e-4), not a fault of this step. Only evaluated when a statistic would
    otherwise fail (two float64 train-mode forward passes).
    """
    wa, wb = before
    if all(np.array_equal(wa[name], wb[name]) for name in wa):
        return {}
    exact_a, exact_b = (train_forward(spec, side, x).buffers for side in (wa, wb))
    return {name: np.abs(exact_a[name] - exact_b[name]) for name in exact_a}


def lockstep(a: Side, b: Side, spec: ModelSpec, dataset: Dataset, config: RunConfig, steps: int,
             weights: dict, progress: Progress | None = None) -> list[dict]:
    """K steps side by side from the same weights, with the two reference trajectories; rows per step and tensor."""
    rows = []
    decay = decayed_names(spec, config.train.decay_scope)
    for side in (a, b):
        side.backend.set_weights(side.model, weights)
        side.trainer = side.backend.make_trainer(side.model, config.train, decay)
    ref, before = spread.LockstepReference(spec, config.train, decay, weights), (weights, weights)
    for step, (xb, yb, lr) in enumerate(step_batches(dataset, config, steps), start=1):
        loss_a, loss_b = a.trainer.step(xb, yb, lr), b.trainer.step(xb, yb, lr)
        ref.step(xb, yb, lr)
        explained = _loss_explained(spec, before, xb, yb, abs(loss_a - loss_b))
        wa, wb = a.backend.get_weights(a.model), b.backend.get_weights(b.model)
        step_rows = weight_rows("lockstep", step, None, wa, wb, spec, ref.exact.weights, ref.flipped.weights,
                                allowance=ref.noise)
        if _statistics_over_budget(step_rows, spec):
            step_rows = weight_rows("lockstep", step, None, wa, wb, spec, ref.exact.weights, ref.flipped.weights,
                                    allowance={**ref.noise, **_statistics_explained(spec, before, xb)})
        for row in step_rows:
            rows.append({**row, "loss_a": loss_a, "loss_b": loss_b, "loss_diff": abs(loss_a - loss_b),
                         "loss_explained": explained, "undecided": ref.undecided})
        before = (wa, wb)
        if progress is not None:
            progress.update()
    return rows


def synchronised(a: Side, b: Side, spec: ModelSpec, dataset: Dataset, config: RunConfig, steps: int,
                 weights: dict, progress: Progress | None = None) -> list[dict]:
    """K single steps, both sides reset to a's weights and optimizer state before each."""
    decay = decayed_names(spec, config.train.decay_scope)
    for side in (a, b):
        side.trainer = side.backend.make_trainer(side.model, config.train, decay)
    rows, state = [], {}
    for step, (xb, yb, lr) in enumerate(step_batches(dataset, config, steps), start=1):
        losses = []
        for side in (a, b):
            side.backend.set_weights(side.model, weights)
            side.trainer.load_state(state)
            losses.append(side.trainer.step(xb, yb, lr))
        exact, flipped, grads = spread.synchronised_step(spec, config.train, decay, weights, state,
                                                                   xb, yb, lr)
        wa, wb = a.backend.get_weights(a.model), b.backend.get_weights(b.model)
        state_a = a.trainer.state()
        if config.train.optimizer == "sgd":
            moment_scale, floors = {}, cancelled_update_scales(grads, lr)
            step_rows = weight_rows("synchronised", step, weights, wa, wb, spec, exact.weights, flipped.weights,
                                    floors=floors)
        else:
            moment_scale, floors = moment_scales(state_a, spec, config.train, grads), {}
            step_rows = adam_rows(step, weights, wa, wb, state_a, b.trainer.state(), config.train, lr, decay, spec,
                                  (exact, flipped), moment_scale)
        if any(row["rel"] > policies().step.update_rel for row in step_rows):  # else nothing to explain
            taken = [_decision_inputs(side, spec, weights, xb) for side in (a, b)]
            outcomes = spread.matched_steps(spec, config.train, decay, weights, state, xb, yb, lr, taken)
            matched = matched_rel(weights, wa, wb, (state_a, b.trainer.state()), outcomes, spec, config.train,
                                  moment_scale, floors)
            # Adam's weight rows have no decision to match (see adam_rows): rel_matched is their rel.
            step_rows = [{**row, **matched.get(row["param"], {"rel_matched": row["rel"]})} for row in step_rows]
        gap = abs(losses[0] - losses[1])
        explained = _float32_loss_error(spec, weights, xb, yb, grads.loss, gap)
        rows += [{**row, "loss_a": losses[0], "loss_b": losses[1], "loss_diff": gap, "loss_explained": explained,
                  "undecided": grads.undecided} for row in step_rows]
        weights, state = wa, state_a
        if progress is not None:
            progress.update()
    return rows


def _decision_inputs(side: Side, spec: ModelSpec, weights: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """The backend's own train-mode inputs of its ReLU and max-pool layers: the values it decided by."""
    side.backend.set_weights(side.model, weights)
    return spread.decision_inputs(spec, x, side.backend.activations(side.model, x, train=True))


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


def _backward_rows(a: Side, b: Side, spec: ModelSpec, x: np.ndarray, y: np.ndarray, weights: dict) -> list[dict]:
    """Per-parameter gradients of a and b against each other, with the float64 columns, loss end first."""
    grads_a, grads_b = gradients(a, spec, weights, x, y), gradients(b, spec, weights, x, y)
    ref = spread.gradients(spec, weights, x, y)
    budget, factor = policies().step.update_rel, policies().float32.spread_factor
    names = spec.trainable_names()
    scale = gradient_scales(ref, names)
    rows = []
    for name in reversed(names):  # backward order: the loss end first
        diff = float(np.abs(grads_a[name] - grads_b[name]).max())
        row = {"mode": "backward", "param": name, "pair": f"{a.name} vs {b.name}", "max_abs": diff,
               "rel": relative(diff, scale[name]), "undecided": ref.undecided,
               **float64_columns(grads_a[name], grads_b[name], ref.exact[name], ref.flipped[name], 0.0, scale[name])}
        row["allowed"] = budget + factor * row["spread"]
        rows.append({**row, "passed": row["rel"] <= row["allowed"]})
    return rows


def divergence(a: Side, b: Side, spec: ModelSpec, x: np.ndarray, y: np.ndarray, weights: dict) -> list[dict]:
    """Forward: per-layer activations of a, b and the float64 reference; backward: per-parameter gradients."""
    layer_tol, rows = policies().layer, []
    names = [layer.name for layer in spec.layers]
    acts = {}
    for side in (a, b):
        side.backend.set_weights(side.model, weights)
        acts[side.name] = side.backend.activations(side.model, x)
    acts["reference"] = forward(spec, weights, x, collect=True)[1]
    for left, right in ((a.name, b.name), (a.name, "reference"), (b.name, "reference")):
        rows += [{"mode": "forward", "param": layer.pop("layer"), "pair": f"{left} vs {right}", **layer}
                 for layer in layer_differences(names, acts[left], acts[right], layer_tol)]
    return rows + _backward_rows(a, b, spec, x, y, weights)


def judge(rows: list[dict]) -> list[dict]:
    """Mark each step/tensor row passed or failed: within the budget plus float32's spread (``allowed``;
    in lockstep also plus ``noise``, the part Adam's steps along float32 noise explain), and the loss gap
    within its budget plus what the two sides' weights explain (lockstep)."""
    factor = policies().float32.spread_factor
    budgets = {"synchronised": (policies().step.update_rel, policies().step.loss_abs),
               "lockstep": (policies().lockstep.weight_rel, policies().lockstep.loss_abs)}
    for row in rows:
        if row["mode"] in budgets:
            rel_budget, loss_budget = budgets[row["mode"]]
            row["allowed"] = rel_budget + factor * row.get("spread", 0.0) + row.get("noise", 0.0)
            loss_allowed = loss_budget + row.get("loss_explained", 0.0)
            row["passed"] = row["rel"] <= row["allowed"] and row["loss_diff"] <= loss_allowed
    return rows


def first_failure(rows: list[dict]) -> dict | None:
    """The first failing row in order: forward layers, backward params, then steps."""
    return next((row for row in rows if not row.get("passed", True)), None)


def divergence_batch(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """A fixed batch (the first training images) for the divergence search."""
    return dataset.train_x[:DIVERGENCE_BATCH], dataset.train_y[:DIVERGENCE_BATCH]


def check(config: RunConfig, spec: ModelSpec, dataset: Dataset, names: list[str], steps: int,
          modes: list[str], search: bool = True, quiet: bool = True) -> list[dict]:
    """Every parity check of ``harness parity``: divergence search (unless ``search`` is off), then each
    mode, judged; unless ``quiet``, a bar per mode on a terminal and a line per finished part elsewhere."""
    spec = parity_spec(spec)
    Progress("parity", quiet=quiet).line(f"building {' and '.join(names)} models of {spec.name}, "
                                         f"{len(dataset.train_x)} training images of {dataset.info.name}")
    sides = [Side(n, get_backend(n), None) for n in names]
    for side in sides:
        side.model = side.backend.build(spec, side.backend.resolve_device(config.device))
    weights = run_initial_weights(config, spec)  # an imported model's own, else seeded
    rows = []
    if search:
        with Progress("parity forward/backward", quiet=quiet) as progress:
            rows = divergence(*sides, spec, *divergence_batch(dataset), weights)
            progress.line(f"{len(spec.layers)} layers and {len(spec.trainable_names())} gradients compared in "
                          f"{format_seconds(progress.elapsed)}; {_passed(rows)}")
    for mode in modes:
        with Progress(f"parity {mode}", steps, quiet) as progress:
            judged = judge(MODES[mode](*sides, spec, dataset, config, steps, weights, progress=progress))
            progress.line(f"{steps} steps in {format_seconds(progress.elapsed)}; {_passed(judged)}")
        rows += judged
    return rows


def _passed(rows: list[dict]) -> str:
    failed = sum(not row.get("passed", True) for row in rows)
    return f"{len(rows) - failed} of {len(rows)} checks passed"
