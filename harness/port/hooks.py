"""Per-layer outputs of the user's two models, compared in the user's names, and placed on the spec's layers.

Each side's layer calls come from forward hooks (``PortSupport.trace``: torch forward hooks, MindSpore Cell
hooks in PyNative mode). Paired calls (``mapping.align``) are compared with each other and, where the spec has
the layer, with the float64 referee's output of that layer. A spec layer that a model computes without a layer
of its own (``F.relu``, ``x + identity``, ``out.view(...)``) has no hook: ``complete`` fills it with the
harness's float32 of that layer from the model's own values before it, so the harness's checks (which want
every layer) run; those layers are labelled in ``layers.csv`` and never named as where a divergence enters.
"""

from __future__ import annotations

import numpy as np

from ..compare.metrics import within
from ..model.spec import ModelSpec
from ..model.weights import Weights
from ..reference.forward import forward
from ..reference.layers import apply_layer
from ..tolerances import policies


def complete(spec: ModelSpec, weights: Weights, x: np.ndarray, found: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every spec layer's output: ``found``'s where a hook gave it, else float32 of the harness's layer applied to
    the values before it (so a model's functional ``F.relu`` gets the output its input implies)."""
    values: dict[int, np.ndarray] = {0: np.asarray(x)}
    out = {}
    for index, layer in enumerate(spec.layers):
        value = found.get(layer.name)
        if value is None or tuple(value.shape[1:]) != tuple(spec.output_shapes[index]):
            inputs = [np.asarray(values[source], np.float64) for source in spec.wiring[index]]
            value = apply_layer(layer, weights, *inputs).astype(np.float32)
        values[index + 1] = value
        out[layer.name] = value
    return out


def confirmed(spec: ModelSpec, weights: Weights, x: np.ndarray, calls: list[dict], found: dict[str, int]) -> \
        dict[str, int]:
    """The PyTorch side's spec layer -> call pairs whose call output is the layer's float64 output (the model holds
    the spec's own weights): order and shape place a layer, its values confirm it, so a module that passes its
    input on (an empty ``nn.Sequential`` shortcut) is never taken for the ReLU beside it."""
    outputs = forward(spec, weights, np.asarray(x, np.float64), collect=True)[1]
    kept = {}
    for layer, index in found.items():
        value, exact = calls[index]["value"], outputs[layer]
        if value is None or value.shape != exact.shape:
            continue
        scale = max(1.0, float(np.abs(exact).max(initial=0.0)))
        if float(np.abs(value - exact).max(initial=0.0)) <= 1e-3 * scale:
            kept[layer] = index
    return kept


def _difference(a: np.ndarray | None, b: np.ndarray | None) -> dict:
    if a is None or b is None:
        return {"max_abs": float("nan"), "rel": float("nan"), "passed": None}
    if a.shape != b.shape:
        return {"max_abs": float("inf"), "rel": float("inf"), "passed": False}
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    max_abs = float(np.nanmax(diff)) if diff.size and np.isfinite(diff).any() else float("nan")
    scale = float(np.abs(b).max()) if b.size else 0.0
    return {"max_abs": max_abs, "rel": max_abs / scale if scale else max_abs,
            "passed": within(a, b, policies().layer)}


def layer_rows(torch_calls: list[dict], ms_calls: list[dict], pairs: list[tuple[int | None, int | None]],
               referee: dict[int, np.ndarray]) -> list[dict]:
    """One row per paired (or unpaired) layer call in execution order: both sides' names, types and shapes,
    MindSpore against PyTorch, and each against the referee's output of that layer (``referee``: torch call
    index -> float64 output) where there is one."""
    rows = []
    for i, j in pairs:
        t = torch_calls[i] if i is not None else None
        m = ms_calls[j] if j is not None else None
        row = {"torch_layer": t["name"] if t else "", "torch_type": t["type"] if t else "",
               "torch_shape": str(t["shape"]) if t else "", "mindspore_layer": m["name"] if m else "",
               "mindspore_type": m["type"] if m else "", "mindspore_shape": str(m["shape"]) if m else "",
               "mindspore_line": m["line"] if m else ""}
        if t is not None and m is not None:
            row.update(_difference(m["value"], t["value"]))
        else:
            row.update({"max_abs": float("nan"), "rel": float("nan"), "passed": None})
        ref = referee.get(i) if i is not None else None
        for side, call in (("torch", t), ("mindspore", m)):
            got = _difference(call["value"] if call else None, ref)
            row[f"{side}_vs_float64"] = got["max_abs"]
            row[f"{side}_float64_passed"] = got["passed"]
        rows.append(row)
    return rows


def first_divergence(rows: list[dict]) -> dict | None:
    """The first paired layer whose outputs differ beyond the layer tolerance (or in shape), in execution order."""
    return next((row for row in rows if row["passed"] is False), None)


def divergence_line(row: dict | None) -> str:
    """``first divergence: torch features.5 (MaxPool2d) <-> mindspore features.5 (AvgPool2d): max_abs 3.10e-01``."""
    if row is None:
        return "first divergence: none (every paired layer agrees within the layer tolerance)"
    how = f"max_abs {row['max_abs']:.2e}" if np.isfinite(row["max_abs"]) else \
        f"shapes {row['torch_shape']} vs {row['mindspore_shape']}"
    return (f"first divergence: torch {row['torch_layer']} ({row['torch_type']}) <-> mindspore "
            f"{row['mindspore_layer']} ({row['mindspore_type']}): {how}")


def user_layer_names(spec: ModelSpec, torch_calls: list[dict], ms_calls: list[dict], torch_of: dict[str, int],
                     ms_of: dict[str, int]) -> dict[str, str]:
    """Spec layer name -> ``torch features.5 (MaxPool2d) <-> mindspore features.5 (AvgPool2d)``, for the spec's
    layers that a hook saw on at least one side (the others keep the spec's name plus "(no module)")."""
    names = {}
    for layer in spec.layers:
        parts = []
        for side, calls, where in (("torch", torch_calls, torch_of), ("mindspore", ms_calls, ms_of)):
            index = where.get(layer.name)
            parts.append(f"{side} {calls[index]['name']} ({calls[index]['type']})" if index is not None
                         else f"{side} (no module: {layer.name})")
        names[layer.name] = " <-> ".join(parts)
    return names
