"""Statistics across seeds on hand-made numbers: t quantiles, per-backend summaries, and each verdict."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.sweep.stats import (ERROR, FAIL, INCONCLUSIVE, PASS, backend_table, judge, mean_interval, overall,
                                 pair_table, t_cdf, t_quantile)

BAND = 0.01


@pytest.mark.parametrize("p, df, expected", [
    # Student t quantiles to the digits printed in NIST/SEMATECH's e-Handbook, section 1.3.6.7.2 (and scipy)
    (0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776), (0.975, 9, 2.262), (0.975, 30, 2.042),
    (0.95, 5, 2.015), (0.995, 10, 3.169), (0.5, 7, 0.0),
])
def test_t_quantiles_match_the_table(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=5e-4)


def test_t_quantiles_match_scipy_to_rounding():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 7, 19, 60, 200):
        for p in (0.6, 0.9, 0.975, 0.999):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-12)
            assert t_cdf(1.7, df) == pytest.approx(stats.t.cdf(1.7, df), abs=1e-15)


def test_mean_interval_of_two_and_of_one():
    both = mean_interval([0.90, 0.92])
    half = 12.706204736 * math.sqrt(0.0002) / math.sqrt(2)
    assert both["n"] == 2 and both["mean"] == pytest.approx(0.91)
    assert (both["low"], both["high"]) == pytest.approx((0.91 - half, 0.91 + half))
    one = mean_interval([0.9, None, float("nan")])
    assert one["n"] == 1 and one["mean"] == 0.9 and math.isnan(one["low"]) and math.isnan(one["std"])


def _seeds(a: list[float], b: list[float], agree=None, floor=0.98, status="ok", failed="", error=None):
    n = len(a)
    return pd.DataFrame({"variant": "v1", "config": "base", "model": "lenet5", "dataset": "synthetic",
                         "seed": range(n), "backend_a": "pytorch", "backend_b": "mindspore", "status": status,
                         "accuracy_a": a, "accuracy_b": b, "top1_agree": agree or [0.995] * n,
                         "min_top1_agree": floor, "control_top1_agree": 0.996, "checks_failed": 1 if failed else 0,
                         "failed_checks": failed, "reason": "", "error": error})


def test_equal_accuracies_over_five_seeds_pass():
    row = judge(_seeds([0.910, 0.905, 0.920, 0.915, 0.908], [0.912, 0.903, 0.921, 0.913, 0.909]), BAND)
    assert row["verdict"] == PASS and row["passed"] is True and row["seeds"] == 5
    assert -BAND < row["delta_ci_low"] < row["accuracy_delta_mean"] < row["delta_ci_high"] < BAND
    assert "within ±1.0 points" in row["reason"]


def test_a_consistent_gap_fails():
    row = judge(_seeds([0.95, 0.96, 0.955, 0.95], [0.90, 0.905, 0.91, 0.90]), BAND)
    assert row["verdict"] == FAIL and row["delta_ci_low"] > BAND and "wholly outside ±1.0 points" in row["reason"]


def test_a_wide_interval_is_inconclusive_and_says_more_seeds():
    row = judge(_seeds([0.91, 0.93], [0.91, 0.91]), BAND)  # mean +1 point, t(0.975, 1) = 12.7: far too wide
    assert row["verdict"] == INCONCLUSIVE and "more seeds would decide" in row["reason"]


def test_one_seed_is_inconclusive():
    row = judge(_seeds([0.91], [0.91]), BAND)
    assert row["verdict"] == INCONCLUSIVE and "needs at least 2" in row["reason"]


def test_a_failed_same_weights_check_fails_whatever_the_accuracies():
    frame = _seeds([0.91, 0.91], [0.91, 0.91], failed="pytorch:onnxruntime vs pytorch:native (test)")
    row = judge(frame, BAND)
    assert row["verdict"] == FAIL and "same-weights checks failed: seed 0: pytorch:onnxruntime" in row["reason"]


def test_agreement_below_the_floor_in_every_seed_fails():
    row = judge(_seeds([0.91, 0.912, 0.909], [0.91, 0.911, 0.91], agree=[0.90, 0.91, 0.905]), BAND)
    assert row["verdict"] == FAIL and "below the control's floor" in row["reason"]
    mixed = judge(_seeds([0.91, 0.912, 0.909], [0.91, 0.911, 0.91], agree=[0.99, 0.97, 0.995]), BAND)
    assert mixed["verdict"] == INCONCLUSIVE and mixed["seeds_below_floor"] == 1


def test_models_that_did_not_learn_and_missing_runs():
    unlearned = judge(_seeds([0.10, 0.11], [0.10, 0.11], status="inconclusive"), BAND)
    assert unlearned["verdict"] == INCONCLUSIVE and "have not learned in 2 of 2 seeds" in unlearned["reason"]
    frame = _seeds([0.91, 0.91], [0.91, 0.91])
    frame.loc[1, ["status", "error"]] = ["error", "mindspore run failed: device 'npu' is not usable"]
    row = judge(frame, BAND)
    assert row["verdict"] == ERROR and row["passed"] is False and "seed 1: mindspore run failed" in row["reason"]
    only_errors = pd.DataFrame({"variant": ["v1"], "backend_a": "pytorch", "backend_b": "mindspore", "seed": 0,
                                "status": "error", "error": "mindspore run failed"})  # no accuracy columns at all
    assert pair_table(only_errors, BAND).verdict[0] == ERROR


def test_per_backend_rows_and_the_overall_verdict():
    runs = pd.DataFrame({"variant": "v1", "config": "lr=0.1", "model": "lenet5", "dataset": "synthetic",
                         "learning_rate": 0.1, "seed": [0, 0, 1, 1, 2, 2], "device": "cpu", "role": "run",
                         "backend": ["pytorch", "mindspore"] * 3,
                         "status": ["completed"] * 5 + ["failed"], "test_accuracy": [0.9, 0.91, 0.92, 0.93, 0.94, None],
                         "train_seconds": 1.0, "images_per_s": 100.0})
    table = backend_table(runs, ("learning_rate",))
    pytorch, mindspore = table.iloc[0], table.iloc[1]
    assert list(table.backend) == ["pytorch", "mindspore"] and pytorch.learning_rate == 0.1
    assert pytorch.seeds == 3 and pytorch.seed_list == "0 1 2" and pytorch.accuracy_mean == pytest.approx(0.92)
    assert pytorch.accuracy_std == pytest.approx(0.02) and pytorch.failed == 0
    assert mindspore.seeds == 2 and mindspore.failed == 1 and mindspore.accuracy_max == pytest.approx(0.93)
    pairs = pair_table(pd.concat([_seeds([0.91, 0.91], [0.91, 0.91]),
                                  _seeds([0.95, 0.96, 0.95], [0.90, 0.90, 0.91]).assign(variant="v2")]), BAND)
    assert list(pairs.verdict) == [PASS, FAIL] and overall(pairs) == FAIL
    assert overall(pairs.iloc[:1]) == PASS and overall(pd.DataFrame()) == INCONCLUSIVE
