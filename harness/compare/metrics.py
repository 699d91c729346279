"""Agreement metrics between two evaluators, and statistics between two trained models.

Pure numpy: an evaluator's output is just an (N, classes) logits array, so the
same functions judge PyTorch vs MindSpore, a framework vs ONNX Runtime, and
float32 vs the float64 reference.
"""

from __future__ import annotations

import math

import numpy as np

from ..tolerances import Tolerance

REL_FLOOR = 1e-7  # relative difference = |a-b| / (|b| + REL_FLOOR): no blow-up near zero


def within(a: np.ndarray, b: np.ndarray, tol: Tolerance) -> bool:
    """Every element within ``atol + rtol*|b|`` and no NaN/Inf on either side."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
        return False
    return bool(np.all(np.abs(a64 - b64) <= tol.atol + tol.rtol * np.abs(b64)))


def pair_metrics(a: np.ndarray, b: np.ndarray, tol: Tolerance) -> dict:
    """How closely logits ``a`` follow ``b`` (b is the reference side).

    Returns:
        n, max_abs, mean_abs, p99_abs, max_rel, cosine, top1_agree, flipped,
        atol, rtol, passed. NaN anywhere makes every distance NaN and passed False.
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = np.abs(a64 - b64)
    norm = np.linalg.norm(a64) * np.linalg.norm(b64)
    same_top1 = a64.argmax(axis=1) == b64.argmax(axis=1)
    return {
        "n": len(a64),
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "p99_abs": float(np.quantile(diff, 0.99)) if diff.size else 0.0,
        "max_rel": float((diff / (np.abs(b64) + REL_FLOOR)).max()) if diff.size else 0.0,
        "cosine": float((a64 * b64).sum() / norm) if norm else float("nan"),
        "top1_agree": float(same_top1.mean()),
        "flipped": int((~same_top1).sum()),
        "atol": tol.atol,
        "rtol": tol.rtol,
        "passed": within(a64, b64, tol),
    }


def mcnemar_exact(b01: int, b10: int) -> float:
    """Two-sided exact McNemar p-value: a binomial(b01 + b10, 1/2) test on the discordant counts."""
    n = b01 + b10
    if n == 0:
        return 1.0
    k = min(b01, b10)
    # log-space terms: n can reach thousands, where 0.5**n underflows
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
                 for i in range(k + 1)]
    return min(1.0, 2.0 * sum(math.exp(t) for t in log_terms))


def above_chance_p(correct: int, n: int, classes: int) -> float:
    """One-sided exact binomial p-value of ``correct`` right out of ``n`` when each is right with chance 1/classes."""
    if n == 0:
        return 1.0
    chance = 1.0 / classes
    hits = np.arange(correct, n + 1)
    log_terms = (np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in hits])
                 + hits * math.log(chance) + (n - hits) * math.log1p(-chance))
    top = log_terms.max(initial=-np.inf)
    return float(min(1.0, math.exp(top) * np.exp(log_terms - top).sum())) if np.isfinite(top) else 0.0


def learned_fraction(accuracy: float, classes: int) -> float:
    """How much of the gap from chance (1/classes) to perfect accuracy a model closed: 0 at chance, 1 at 100%."""
    chance = 1.0 / classes
    return (accuracy - chance) / (1.0 - chance)


def trained_pair(logits_a: np.ndarray, logits_b: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy of each, their paired difference with a 95% CI, McNemar's test, top-1 agreement."""
    right_a = logits_a.argmax(axis=1) == labels
    right_b = logits_b.argmax(axis=1) == labels
    per_image = right_a.astype(np.float64) - right_b
    delta, n = float(per_image.mean()), len(labels)
    half_width = 1.96 * float(per_image.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    b01, b10 = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    same = logits_a.argmax(axis=1) == logits_b.argmax(axis=1)
    return {"n": n, "accuracy_a": float(right_a.mean()), "accuracy_b": float(right_b.mean()),
            "accuracy_delta": delta, "delta_ci_low": delta - half_width, "delta_ci_high": delta + half_width,
            "mcnemar_b01": b01, "mcnemar_b10": b10, "mcnemar_p": mcnemar_exact(b01, b10),
            "top1_agree": float(same.mean()), "flipped": int((~same).sum())}


def confusion_matrix(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels, logits.argmax(axis=1)), 1)
    return counts


def layer_differences(layer_names: list[str], acts_a: dict[str, np.ndarray], acts_b: dict[str, np.ndarray],
                      tol: Tolerance) -> list[dict]:
    """Per layer, in execution order, how far ``a``'s outputs are from ``b``'s.

    Returns:
        ``{"layer", "max_abs", "rel", "passed"}`` per layer: ``rel`` is max_abs over max |b| (the scale
        of the layer's output, as weight differences are over max |W|); ``passed`` is ``within(tol)``.
    """
    rows = []
    for name in layer_names:
        a, b = np.asarray(acts_a[name], np.float64), np.asarray(acts_b[name], np.float64)
        if a.shape != b.shape:  # e.g. a pooling stride translated wrongly: nothing to subtract
            rows.append({"layer": name, "max_abs": float("inf"), "rel": float("inf"), "passed": False})
            continue
        diff = np.abs(a - b)
        max_abs = float(np.nanmax(diff)) if np.isfinite(diff).any() else float("nan")
        scale = float(np.abs(b).max()) if b.size else 0.0
        rows.append({"layer": name, "max_abs": max_abs, "rel": max_abs / scale if scale else max_abs,
                     "passed": within(a, b, tol)})
    return rows


def first_divergent_layer(layer_names: list[str], acts_a: dict[str, np.ndarray], acts_b: dict[str, np.ndarray],
                          tol: Tolerance) -> dict | None:
    """The first layer, in execution order, whose outputs differ beyond ``tol``, with the numbers.

    Returns:
        The ``layer_differences`` row of the first failing layer, or None if every layer agrees.
    """
    return next((row for row in layer_differences(layer_names, acts_a, acts_b, tol) if not row["passed"]), None)
