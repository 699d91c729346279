"""How ``harness parity`` measures one row: differences relative to a tensor's size, with float64 columns.

Each row compares side a with side b for one tensor (``rel``: the largest difference
over the tensor's scale) and, where the float64 reference ran, reports each side's
distance from it (``rel64_a``, ``rel64_b``) and float32's ``spread`` on the same scale.
"""

from __future__ import annotations

import numpy as np

from ..config import TrainConfig
from ..model.spec import ModelSpec
from .spread import Gradients

TENSOR_FLOOR = 0.1  # see scales
CANCELLED = 1e-9  # see gradient_scales: float64 leaves ~1e-16 of the terms where a sum cancels exactly


def relative(diff: float, scale: float) -> float:
    """``diff / scale``; a zero scale gives 0 for no difference and inf for any."""
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def scales(tensors: dict[str, np.ndarray], names) -> dict[str, float]:
    """Per tensor, the size a difference is measured against: its own largest value, but at least
    ``TENSOR_FLOOR`` of the model's largest, so a tensor whose true value is ~0 (a conv bias before
    BatchNorm has a zero gradient) is not judged by its rounding noise alone."""
    largest = {n: float(np.abs(tensors[n]).max()) for n in names}
    model_max = max(largest.values(), default=0.0)
    return {n: max(v, TENSOR_FLOOR * model_max) for n, v in largest.items()}


def explained_part(gap: np.ndarray, allowance) -> float:
    """How much of ``max gap`` an elementwise ``allowance`` explains: the largest difference less the
    largest difference left once each element's allowance is taken off."""
    return float(gap.max() - np.maximum(gap - allowance, 0.0).max()) if gap.size else 0.0


def _beyond_ulp(gap: np.ndarray, ulp, scale: float) -> float:
    """The largest ``gap`` with ``ulp`` (one stored ulp, or 0) taken off each element, over ``scale``."""
    return relative(float(np.maximum(gap - ulp, 0.0).max()), scale)


def float64_columns(a: np.ndarray, b: np.ndarray, exact: np.ndarray, flipped: np.ndarray, ulp, scale: float) -> dict:
    """Each side's distance from the float64 result (one stored ulp discounted) and float32's spread."""
    def gap(side: np.ndarray) -> float:
        return _beyond_ulp(np.abs(side.astype(np.float64) - exact), ulp, scale)

    return {"rel64_a": gap(a), "rel64_b": gap(b), "spread": relative(float(np.abs(flipped - exact).max()), scale)}


def weight_rows(mode: str, step: int, before, wa, wb, spec: ModelSpec, exact=None, flipped=None,
                 own=None, floors=None, allowance=None) -> list[dict]:
    """Per-tensor differences; for synchronised mode the updates (w - before) are compared.

    Weights are stored in float32, so two correct frameworks may round the new weight
    one unit in the last place (ulp) apart; the update comparison discounts that one
    ulp (``rel``) and reports it (``max_ulps``), else a tiny update's rounding of a
    large weight would read as a large relative difference. With ``exact`` and
    ``flipped`` (float64 weights after the step) the float64 columns are added,
    measuring ``own`` (default: ``wa`` and ``wb``) against ``exact``. ``floors``: see ``tensor_scales``.
    With ``allowance`` (absolute, elementwise, by tensor) the ``noise`` column is the part of ``rel`` it
    explains (``explained_part``).
    """
    names = list(spec.param_shapes())
    scale = tensor_scales(before, wa, spec, floors)
    own_a, own_b = own or (wa, wb)
    rows = []
    for name in names:
        new_a, new_b = wa[name].astype(np.float64), wb[name].astype(np.float64)
        ulp = _stored_ulp(wa[name], wb[name])
        a = new_a - before[name] if before is not None else new_a
        b = new_b - before[name] if before is not None else new_b
        gap = np.abs(a - b)
        excess = np.maximum(gap - ulp, 0.0) if before is not None else gap
        norm = np.linalg.norm(a) * np.linalg.norm(b)
        row = {"mode": mode, "step": step, "param": name, "max_abs": float(gap.max()),
               "max_ulps": float((np.abs(new_a - new_b) / ulp).max()),
               "rel": relative(float(excess.max()), scale[name]),
               "cosine": float((a * b).sum() / norm) if norm else float("nan")}
        if exact is not None:
            row.update(float64_columns(own_a[name], own_b[name], exact[name], flipped[name],
                                        ulp if before is not None else 0.0, scale[name]))
        if allowance is not None:
            row["noise"] = relative(explained_part(excess, allowance.get(name, 0.0)), scale[name])
        rows.append(row)
    return rows


def tensor_scales(before, wa: dict, spec: ModelSpec, floors: dict[str, float] | None = None) -> dict[str, float]:
    """``scales`` of the updates ``wa - before`` (of the weights ``wa`` when ``before`` is None), the
    trainable tensors and the BatchNorm running statistics apart: a statistic moves ~0.1 x its batch's
    deviation whatever the learning rate, so a floor shared with it measures the weights on its scale
    (VGG11-BN, SGD lr 0.01, first step: bn5.mean moves 0.113, conv1.weight at most 0.0038). ``floors``
    raises single tensors' scales (``cancelled_update_scales``)."""
    values = {n: wa[n].astype(np.float64) - (before[n] if before is not None else 0.0) for n in spec.param_shapes()}
    trainable = spec.trainable_names()
    statistics = [n for n in values if n not in trainable]
    out = {**scales(values, trainable), **scales(values, statistics)}
    return {n: max(v, (floors or {}).get(n, 0.0)) for n, v in out.items()}


def _stored_ulp(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One unit in the last place of the larger float32 weight, elementwise (float64)."""
    return np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float32)).astype(np.float64)


def matched_rel(before: dict, wa: dict, wb: dict, state: tuple[dict, dict], outcomes: tuple, spec: ModelSpec,
                train: TrainConfig, moment_scale: dict, floors: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per tensor (for Adam: per moment and BatchNorm statistic), the difference left once each side is
    measured against float64 taking the side's own undecidable decisions (``harness.parity.spread.matched_steps``):
    ``rel_matched`` is ``|(a - b) - (ref_a - ref_b)|`` on ``rel``'s scale, one stored ulp discounted for
    weights. Where the two sides differ only by rounding and by decisions float32 cannot make, this is
    rounding alone; ``rel64_matched_a`` and ``_b`` (``|a - ref_a|``, ``|b - ref_b|``) say whose rounding."""
    ref_a, ref_b = outcomes
    scale = tensor_scales(before, wa, spec, floors)
    # Adam's weight rows already compare b with torch's formula on b's own moments (no decision in that):
    # for Adam only the moments and BatchNorm's statistics are matched.
    trainable = set(spec.trainable_names()) if train.optimizer != "sgd" else set()
    pairs = {name: (wa[name], wb[name], ref_a.weights[name], ref_b.weights[name], _stored_ulp(wa[name], wb[name]),
                    scale[name]) for name in spec.param_shapes() if name not in trainable}
    state_a, state_b = state
    pairs.update({key: (state_a[key], state_b[key], ref_a.state[key], ref_b.state[key], 0.0, key_scale)
                  for key, key_scale in moment_scale.items()})  # Adam's moments, on adam_rows' scales
    return {name: _matched_columns(*values) for name, values in pairs.items()}


def _matched_columns(a: np.ndarray, b: np.ndarray, ref_a: np.ndarray, ref_b: np.ndarray, ulp, scale: float) -> dict:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return {name: _beyond_ulp(np.abs(gap), ulp, scale) for name, gap in
            (("rel_matched", a - b - (ref_a - ref_b)), ("rel64_matched_a", a - ref_a), ("rel64_matched_b", b - ref_b))}


def adam_rows(step: int, before: dict, wa: dict, wb: dict, state_a: dict, state_b: dict, train: TrainConfig,
               lr: float, decay: set[str], spec: ModelSpec, reference: tuple, moment_scale: dict) -> list[dict]:
    """Adam's update divides by sqrt(v)+eps, so where |g| is near eps a gradient rounding difference
    becomes a large update difference: comparing the two updates would judge that conditioning, not
    the port. Instead judge the two parts apart: the moments (linear and quadratic in the gradient)
    against each other, with float32's spread from ``reference`` (the exact and flipped float64
    outcomes), and b's update against torch's formula applied to b's own moments (no spread: no
    decision enters it). The update rows still report both sides' distance from the float64 update."""
    exact, flipped = reference
    t = float(state_b["step"])
    bias1, bias2_sqrt = 1 - train.beta1 ** t, np.sqrt(1 - train.beta2 ** t)
    expected = dict(wa)  # BatchNorm statistics are not Adam's: compared to a directly
    for name in spec.trainable_names():
        start = before[name].astype(np.float64)
        if train.optimizer == "adamw" and name in decay:
            start = start * (1 - lr * train.weight_decay)
        m, v = state_b[f"{name}.exp_avg"].astype(np.float64), state_b[f"{name}.exp_avg_sq"].astype(np.float64)
        expected[name] = start - lr / bias1 * m / (np.sqrt(v) / bias2_sqrt + train.eps)
    rows = weight_rows("synchronised", step, before, expected, wb, spec, exact.weights, exact.weights, (wa, wb))
    for key, scale in moment_scale.items():
        diff = float(np.abs(state_a[key].astype(np.float64) - state_b[key]).max())
        rows.append({"mode": "synchronised", "step": step, "param": key, "max_abs": diff, "rel": relative(diff, scale),
                     **float64_columns(state_a[key], state_b[key], exact.state[key], flipped.state[key], 0.0, scale)})
    return rows


def moment_scales(state: dict, spec: ModelSpec, train: TrainConfig, ref: Gradients) -> dict[str, float]:
    """``scales`` of Adam's moments, slot by slot, except a cancelled gradient's first moment (see
    ``gradient_scales``): it holds (1 - beta1) x the rounding of terms that sum to zero, so it is measured
    against (1 - beta1) x those terms (VGG11-BN's conv1.bias read 1e-3 apart on its own noise)."""
    out = {}
    for slot in ("exp_avg", "exp_avg_sq"):
        out.update(scales(state, [f"{n}.{slot}" for n in spec.trainable_names()]))
    for name, largest in _cancelled(ref).items():
        out[f"{name}.exp_avg"] = max(out[f"{name}.exp_avg"], (1 - train.beta1) * largest)
    return out


def cancelled_update_scales(ref: Gradients, lr: float) -> dict[str, float]:
    """An SGD step moves a tensor whose gradient is an exact cancellation by lr x rounding of the terms
    that cancel (see ``gradient_scales``): its update is measured against lr x those terms."""
    return {name: lr * largest for name, largest in _cancelled(ref).items()}


def gradient_scales(ref: Gradients, names: list[str]) -> dict[str, float]:
    """``scales`` of the exact gradients, except where a gradient is an exact cancellation (a conv bias
    under train-mode BatchNorm): its float32 value is rounding of terms that sum to zero, so it is
    measured against the size of those terms."""
    scale = scales(ref.exact, names)
    for name, largest in _cancelled(ref).items():
        scale[name] = max(scale[name], largest)
    return scale


def _cancelled(ref: Gradients) -> dict[str, float]:
    """Gradients that are an exact cancellation, with the largest sum of |terms| they add up."""
    largest = {name: float(sizes.max()) for name, sizes in ref.term_sizes.items()}
    return {name: size for name, size in largest.items() if float(np.abs(ref.exact[name]).max()) <= CANCELLED * size}
