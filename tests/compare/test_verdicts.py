"""Three-valued verdicts: nothing passes without evidence. Untrained pairs are INCONCLUSIVE (exit 3),
``--runs`` needs two distinct runs to compare, and probe inputs exercise models the test images do not."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harness.cli.main import main
from harness.compare.matrix import Matrix, not_learned, probe_inputs, trained_rows
from harness.compare.metrics import above_chance_p, learned_fraction
from harness.compare.session import exit_code, label_runs
from harness.errors import EXIT_INCONCLUSIVE, HarnessError
from harness.report.tables import Report, outcome, overall_verdict

TEN = SimpleNamespace(classes=tuple(str(d) for d in range(10)))


def _predicting(labels: np.ndarray, right: float, seed: int) -> SimpleNamespace:
    """A stand-in run that gets a fraction ``right`` of the labels, guessing uniformly elsewhere."""
    rng = np.random.default_rng(seed)
    predicted = np.where(rng.random(len(labels)) < right, labels, rng.integers(0, 10, len(labels)))
    return SimpleNamespace(predictions={"logits_native": np.eye(10)[predicted]})


def test_binomial_test_against_chance_matches_the_exact_tail():
    # P(X >= 2 | n=2, p=0.1) = 0.01 and P(X >= 0) = 1, by hand.
    assert above_chance_p(2, 2, 10) == pytest.approx(0.01)
    assert above_chance_p(0, 5, 10) == pytest.approx(1.0)
    assert above_chance_p(102, 1000, 10) == pytest.approx(0.4318, abs=1e-4)  # scipy.stats.binomtest
    assert learned_fraction(0.55, 10) == pytest.approx(0.5) and learned_fraction(0.1, 10) == pytest.approx(0.0)


def test_a_model_at_chance_or_half_trained_has_not_learned():
    assert "not clearly above chance" in not_learned("pytorch", 0.1016, 1000, 10)
    assert "is under 55.00%" in not_learned("pytorch", 0.549, 1000, 10)  # the defaults after 2 epochs
    assert not_learned("pytorch", 0.98, 1000, 10) is None


def test_an_untrained_pair_is_inconclusive_not_passed():
    labels = np.arange(1000) % 10
    untrained = Matrix(None, SimpleNamespace(test_y=labels, info=TEN))
    trained_rows(untrained, {"pytorch": _predicting(labels, 0.0, 1), "mindspore": _predicting(labels, 0.0, 1)}, {})
    row = untrained.rows[0]
    assert row["top1_agree"] == 1.0  # identical predictions: the old check passed them
    assert outcome(row) == "INCONCLUSIVE" and row["passed"] is None
    assert "train longer" in row["reason"] and "pytorch:native" in row["reason"]
    learned = Matrix(None, SimpleNamespace(test_y=labels, info=TEN))
    trained_rows(learned, {"pytorch": _predicting(labels, 0.99, 2), "mindspore": _predicting(labels, 0.99, 2)}, {})
    assert outcome(learned.rows[0]) == "PASS"


@pytest.mark.parametrize("outcomes, expected", [
    (["PASS", "PASS"], "passed"), (["PASS", "INCONCLUSIVE"], "inconclusive"), (["INCONCLUSIVE", "FAIL"], "failed"),
    (["FAIL", "ERROR"], "error"), ([], "inconclusive")])
def test_the_verdict_of_a_set_of_checks(outcomes, expected):
    rows = [{"passed": o == "PASS", "status": {"ERROR": "error", "INCONCLUSIVE": "inconclusive"}.get(o, "ok")}
            for o in outcomes]
    assert overall_verdict(rows) == expected


def test_an_inconclusive_report_exits_3_not_0_1_or_2():
    report = Report(tables={}, logit_diffs={}, verdict="inconclusive", title="")
    assert exit_code(report) == EXIT_INCONCLUSIVE == 3


def test_probe_inputs_follow_the_test_sets_spread():
    rng = np.random.default_rng(0)
    test_x = (rng.standard_normal((500, 3, 8, 8)) * np.array([1.0, 2.0, 0.5])[None, :, None, None]
              + np.array([0.0, 1.0, -1.0])[None, :, None, None]).astype(np.float32)
    probes = probe_inputs(test_x, 256)
    assert probes.shape == (256, 3, 8, 8) and probes.dtype == np.float32
    np.testing.assert_allclose(probes.mean(axis=(0, 2, 3)), [0.0, 1.0, -1.0], atol=0.05)
    np.testing.assert_allclose(probes.std(axis=(0, 2, 3)), [1.0, 2.0, 0.5], rtol=0.05)
    assert np.array_equal(probes, probe_inputs(test_x, 256))  # fixed: every report probes the same images


def _run_folder(root: Path, name: str, backend: str, device: str = "cpu") -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"run_id": name, "backend": backend, "device": device,
                                                 "config_hash": "0" * 16, "status": "completed"}))
    return folder


def test_runs_to_compare_must_be_two_distinct_runs_of_different_backends(tmp_path):
    torch_run, ms_run = _run_folder(tmp_path, "a", "pytorch"), _run_folder(tmp_path, "b", "mindspore")
    assert label_runs([torch_run, ms_run]) == {"pytorch": torch_run, "mindspore": ms_run}
    with pytest.raises(HarnessError, match="at least two run folders"):
        label_runs([torch_run])
    with pytest.raises(HarnessError, match="twice"):
        label_runs([torch_run, tmp_path / "x" / ".." / "a"])
    with pytest.raises(HarnessError, match="both pytorch on cpu"):
        label_runs([torch_run, _run_folder(tmp_path, "c", "pytorch")])
    on_gpu = _run_folder(tmp_path, "d", "pytorch", "cuda")
    assert label_runs([torch_run, on_gpu]) == {"pytorch@cpu": torch_run, "pytorch@cuda": on_gpu}


def test_compare_runs_with_one_folder_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["compare", "--runs", str(_run_folder(tmp_path, "a", "pytorch"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --runs needs at least two run folders") and "\n" not in err


@pytest.mark.parity
def test_untrained_models_make_compare_inconclusive_end_to_end(both_backends, tmp_path, capsys):
    code = main(["compare", "--model", "lenet5", "--dataset", "synthetic", "--epochs", "1", "--learning-rate", "1e-9",
                 "--no-control", "--limit-train", "128", "--limit-test", "64", "--quiet",
                 "--out", str(tmp_path / "runs"), "--reports", str(tmp_path / "rep")])
    out = capsys.readouterr().out
    assert code == 3
    assert "verdict: INCONCLUSIVE" in out and "inconclusive: pytorch:native vs mindspore:native" in out
    assert "## Why inconclusive" in (tmp_path / "rep" / "summary.md").read_text()
    import pandas as pd

    agreement = pd.read_csv(tmp_path / "rep" / "agreement.csv")
    probes = agreement[agreement.inputs == "probe"]
    assert len(probes) == len(agreement[(agreement.inputs == "test") & (agreement.kind == "same-weights")]) == 10
    assert probes.passed.all() and (probes.n == 64).all()


def test_one_backend_alone_is_inconclusive(tmp_path, capsys):
    """Its export and float64 checks pass, but nothing compared two frameworks: not a PASS."""
    code = main(["compare", "--backends", "pytorch", "--model", "lenet5", "--dataset", "synthetic", "--epochs", "1",
                 "--limit-train", "64", "--limit-test", "32", "--quiet", "--out", str(tmp_path / "runs"),
                 "--reports", str(tmp_path / "rep")])
    out = capsys.readouterr().out
    assert code == 3 and "verdict: INCONCLUSIVE" in out and "only pytorch ran" in out
