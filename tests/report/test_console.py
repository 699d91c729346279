"""The console text of ``harness compare``: 80 columns, whole names, each check's own measures in words."""

from __future__ import annotations

import pandas as pd

from harness.report.summary import verdict_table
from harness.report.tables import Report

WIDTH = 80
BASE = {"model": "lenet5", "dataset": "mnist-sample", "n": 200, "status": "ok"}
SAME = {**BASE, "kind": "same-weights", "mean_abs": 1e-7, "p99_abs": 1e-6, "max_rel": 1e-5, "cosine": 1.0,
        "top1_agree": 1.0, "flipped": 0, "atol": 1e-5, "rtol": 1.3e-6}
LONG_A = "mindspore:onnxruntime[pytorch weights, exported opset 17]"
LONG_B = "reference:float64[pytorch weights, exported opset 17]"
TRAINED = {**BASE, "kind": "trained", "evaluator_a": "pytorch:native", "evaluator_b": "mindspore:native",
           "top1_agree": 0.985, "flipped": 3, "accuracy_a": 0.975, "accuracy_b": 0.97, "accuracy_delta": 0.005,
           "delta_ci_low": -0.002, "delta_ci_high": 0.012, "min_top1_agree": 0.97, "passed": True}


def _table(rows: list[dict], verdict: str = "failed") -> list[str]:
    return verdict_table(Report({"agreement": pd.DataFrame(rows)}, {}, verdict, "t")).splitlines()


def _block(lines: list[str], start: str) -> list[str]:
    """The line of the check starting with ``start`` and the indented lines below it."""
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    end = next((i for i in range(first + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[first:end]


def test_a_long_pair_wraps_before_vs_and_keeps_both_names_whole():
    lines = _table([{**SAME, "evaluator_a": LONG_A, "evaluator_b": LONG_B, "max_abs": 2e-6, "passed": True}],
                   "passed")
    assert all(len(line) <= WIDTH for line in lines), max(lines, key=len)
    assert len(f"{LONG_A} vs {LONG_B}") > WIDTH  # the case the old table cut to `mindspore:onn...opset 17]`
    assert lines[1].startswith(LONG_A) and lines[1].endswith("PASS")
    assert lines[2] == f"  vs {LONG_B}"
    assert lines[3].startswith("    max_abs 2.00e-06 (atol/rtol 1e-05/1.3e-06)")
    assert "..." not in "\n".join(lines)


def test_a_name_longer_than_a_line_is_printed_whole_on_its_own():
    huge = "reference:float64[" + "x" * 90 + "]"
    lines = _table([{**SAME, "evaluator_a": "pytorch:native", "evaluator_b": huge, "max_abs": 2e-6, "passed": True}],
                   "passed")
    assert lines[1].startswith("pytorch:native") and lines[1].endswith("PASS") and lines[2] == f"  vs {huge}"
    assert [line for line in lines if len(line) > WIDTH] == [lines[2]]


def test_a_trained_pair_shows_its_own_measures_in_words():
    lines = _table([{**SAME, "evaluator_a": "pytorch:native", "evaluator_b": "pytorch:onnxruntime", "max_abs": 2e-6,
                     "passed": True}, TRAINED], "passed")
    assert all(len(line) <= WIDTH for line in lines), max(lines, key=len)
    trained = _block(lines, "pytorch:native vs mindspore:native")
    assert trained[0].endswith("PASS")
    assert trained[1].startswith("    accuracy delta +0.50pp (band +-") and trained[1].endswith("pp)")
    assert trained[2] == "    top-1 agreement 98.50% (floor 97.0%)"
    assert not any("max_abs" in line or "dacc" in line for line in trained)  # not under another measure's name
    assert "max_abs" not in lines[0]  # the header names no measure that only some checks have


def test_a_failed_row_names_its_first_divergent_layer():
    layer = "conv2 (max_abs 2.00e-04; 3.10e-06 where it entered act1)"
    failed = {**SAME, "evaluator_a": "mindspore[pytorch weights]", "evaluator_b": "reference:float64[pytorch weights]",
              "max_abs": 3e-3, "atol": 1e-4, "rtol": 1e-4, "first_divergent_layer": layer, "passed": False}
    passed = {**failed, "evaluator_a": "pytorch:native", "first_divergent_layer": "conv9", "passed": True}
    lines = _table([passed, failed])
    assert all(len(line) <= WIDTH for line in lines), max(lines, key=len)
    block = _block(lines, "mindspore[pytorch weights] vs reference:float64[pytorch weights]")
    assert block[0].endswith("FAIL") and block[2].startswith("    first divergent layer: conv2 (max_abs")
    assert " ".join(" ".join(block[2:]).split()) == f"first divergent layer: {layer}"  # wrapped, whole
    assert not any("conv9" in line for line in lines)  # a passing row has nothing to point at
    assert lines[-1] == "verdict: FAILED (1 of 2 checks failed)"


def test_an_error_is_wrapped_at_words_and_an_inconclusive_row_says_so():
    error = "onnxruntime could not load " + "/a/long/path/to/model.onnx: Unsupported op Foo " * 12
    rows = [{**BASE, "kind": "run", "evaluator_a": "mindspore:native", "status": "error", "error": error},
            {**TRAINED, "status": "inconclusive", "passed": None, "reason": "the control run is missing"}]
    lines = _table(rows, "error")
    assert all(len(line) <= WIDTH for line in lines), max(lines, key=len)
    block = _block(lines, "mindspore:native (run)")
    assert block[0].endswith("ERROR") and block[1].startswith("    error: onnxruntime could not load /a/long/path")
    assert len(block) == 5 and block[-1].endswith(" ...")  # four lines at most; agreement.csv has the rest
    assert all(word in error.split() for line in block[1:] for word in line.split()[1 if line is block[1] else 0:]
               if word != "...")  # cut between words, never inside one
    assert _block(lines, "pytorch:native vs mindspore:native")[0].endswith(" INCONCLUSIVE")
