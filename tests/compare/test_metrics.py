"""Agreement metrics and trained-pair statistics, checked against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.compare.divergence import DIVERGENCE_IMAGES, describe_divergence, worst_images
from harness.compare.metrics import (confusion_matrix, first_divergent_layer, layer_differences, mcnemar_exact,
                                     pair_metrics, trained_pair, within)
from harness.evaluators.float64 import Float64Evaluator
from harness.model.weights import init_weights
from harness.model.zoo import build_model
from harness.tolerances import Tolerance, policies
from tests.support import forward_with_error

TOL = Tolerance(rtol=1e-4, atol=1e-4, why="the cross budget, for these tests")


def test_pair_metrics_numbers():
    b = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
    a = b + np.array([[0.0, 1e-5, 0.0], [2e-3, 0.0, 0.0]])
    m = pair_metrics(a, b, TOL)
    assert m["n"] == 2 and m["max_abs"] == pytest.approx(2e-3) and m["mean_abs"] == pytest.approx((1e-5 + 2e-3) / 6)
    assert m["max_rel"] == pytest.approx(2e-3 / 1e-7)  # |b| = 0 there: the floor, not a division by zero
    assert m["p99_abs"] == pytest.approx(np.quantile(np.abs(a - b), 0.99))
    assert m["cosine"] == pytest.approx(float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b)))
    assert m["top1_agree"] == 1.0 and m["flipped"] == 0
    assert m["passed"] is False  # 2e-3 > 1e-4 + 1e-4 * 0


def test_pair_passes_inside_tolerance_and_counts_flips():
    b = np.array([[1.0, 1.00001], [3.0, 0.0]])
    a = np.array([[1.00002, 1.0], [3.0, 0.0]])  # a tiny change that flips the first argmax
    m = pair_metrics(a, b, TOL)
    assert m["passed"] is True and m["flipped"] == 1 and m["top1_agree"] == 0.5


def test_nan_never_passes():
    b = np.ones((2, 3))
    a = b.copy()
    a[0, 0] = np.nan
    assert not within(a, b, TOL) and pair_metrics(a, b, TOL)["passed"] is False
    assert not within(b, a, TOL)
    assert not within(np.full((1, 2), np.inf), np.full((1, 2), np.inf), TOL)


@pytest.mark.parametrize("b01,b10", [(0, 0), (3, 9), (10, 10), (1, 40), (700, 760)])
def test_mcnemar_matches_binomial(b01, b10):
    n, k = b01 + b10, min(b01, b10)
    expected = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    assert mcnemar_exact(b01, b10) == pytest.approx(expected, rel=1e-9)
    scipy_stats = pytest.importorskip("scipy.stats")
    if n:
        assert mcnemar_exact(b01, b10) == pytest.approx(scipy_stats.binomtest(k, n, 0.5).pvalue, rel=1e-6)


def test_trained_pair_statistics():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    eye = np.eye(3)
    predicted_a = np.array([0, 1, 2, 0, 1, 2, 1, 0])  # 6 right
    predicted_b = np.array([0, 1, 2, 1, 1, 0, 0, 0])  # 5 right
    stats = trained_pair(eye[predicted_a], eye[predicted_b], labels)
    assert stats["accuracy_a"] == 6 / 8 and stats["accuracy_b"] == 5 / 8
    assert stats["accuracy_delta"] == pytest.approx(1 / 8)
    diffs = (predicted_a == labels).astype(float) - (predicted_b == labels)
    half = 1.96 * diffs.std(ddof=1) / math.sqrt(8)
    assert stats["delta_ci_low"] == pytest.approx(1 / 8 - half) and stats["delta_ci_high"] == pytest.approx(1 / 8 + half)
    assert (stats["mcnemar_b01"], stats["mcnemar_b10"]) == (2, 1)
    assert stats["top1_agree"] == 5 / 8 and stats["flipped"] == 3


def test_confusion_matrix_counts():
    counts = confusion_matrix(np.eye(3)[[0, 2, 2, 1]], np.array([0, 2, 1, 1]), 3)
    assert counts.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_first_divergent_layer_names_the_first_failure():
    acts = {"conv1": np.ones((2, 3)), "act1": np.ones((2, 3)), "fc1": np.ones((2, 2))}
    broken = {**acts, "act1": acts["act1"] + 1e-2, "fc1": acts["fc1"] + 1.0}
    found = first_divergent_layer(list(acts), broken, acts, TOL)
    assert found["layer"] == "act1" and found["max_abs"] == pytest.approx(1e-2)
    assert first_divergent_layer(list(acts), acts, acts, TOL) is None


def test_layer_differences_measure_every_layer_against_its_scale():
    acts = {"conv1": np.full((2, 3), 4.0), "pool1": np.ones((2, 1))}
    near = {"conv1": acts["conv1"] + 2e-5, "pool1": np.ones((2, 2))}
    rows = layer_differences(list(acts), near, acts, TOL)
    assert [r["layer"] for r in rows] == ["conv1", "pool1"]
    assert rows[0]["max_abs"] == pytest.approx(2e-5) and rows[0]["rel"] == pytest.approx(5e-6) and rows[0]["passed"]
    assert rows[1]["rel"] == float("inf") and not rows[1]["passed"]  # a shape changed: nothing to subtract


def test_divergence_search_looks_at_the_worst_images():
    b = np.zeros((20, 3))
    a = b.copy()
    a[3, 1], a[10, 0], a[7, 2] = 1e-3, 5e-2, np.nan
    worst = worst_images(a, b, TOL)
    assert len(worst) == DIVERGENCE_IMAGES and list(worst) == sorted(worst) and {3, 7, 10} <= set(worst)


def test_divergence_search_names_where_a_difference_enters():
    spec = build_model("lenet5-lecun")
    weights = init_weights(spec, seed=0)
    x = np.random.default_rng(0).standard_normal((16, *spec.input_shape)).astype(np.float32)
    referee = Float64Evaluator(spec, weights, "reference:float64", "the harness")

    class Faulty:  # an evaluator whose act1 (tanh) is off by `error`, carried downstream
        name, provenance, exact, has_layers = "fake:native", "a test", False, True

        def __init__(self, error: float) -> None:
            self.error = error

        def activations(self, xs):
            return forward_with_error(spec, weights, xs, "act1", self.error)

    def search(error: float) -> str:
        return describe_divergence(spec, weights, x[:8], Faulty(error), referee)

    # Under act1's tolerance there, but conv2 sums 150 such inputs and crosses its own.
    grown = search(9e-5)
    assert grown.startswith("conv2 (max_abs ")
    assert grown.endswith("; largest own error: act1 (tanh) in fake:native, 9.00e-05 from float64 on its own input")
    assert search(2e-4) == "act1 (max_abs 2.00e-04)"  # beyond tolerance where it enters: nothing to add
    assert search(0.0).startswith("none when recomputed")


def test_budget_file_values_and_reasons():
    assert (policies().onnx.rtol, policies().onnx.atol) == (1.3e-6, 1e-5)
    assert (policies().cross.rtol, policies().cross.atol) == (1e-4, 1e-4)
    assert all(getattr(policies(), kind).why for kind in ("onnx", "cross", "reference", "layer"))
    assert policies().trained.accuracy_band == 0.01
