"""`harness compare` and `harness report` end to end on small data, including the ways they must fail."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness import backend as backend_registry
from harness.cli.main import main
from harness.compare.matrix import Matrix, trained_rows
from harness.runs.arrays import save_arrays
from harness.runs.folder import read_run_config, read_run_info

pytestmark = pytest.mark.parity
# Small, but trained (86.8% on both backends here): a pair of untrained models would be INCONCLUSIVE, and a
# constant lr 0.05 was so chaotic that one float32 step in the initial weights changed 38% of the predictions.
SMALL = ["--dataset", "mnist-sample", "--limit-train", "2048", "--limit-test", "500", "--epochs", "2",
         "--batch-size", "32", "--learning-rate", "0.02", "--quiet"]
REPORT_FILES = {"runs.csv", "agreement.csv", "curves.csv", "per_class.csv", "confusion.csv", "onnx_graphs.csv",
                "speed.csv", "summary.md", "curves.png", "confusion.png", "logit_diffs.png"}


@pytest.fixture(scope="module")
def lenet_compare(tmp_path_factory):
    """One compare of both backends on LeNet5, shared by the tests that read its report."""
    root = tmp_path_factory.mktemp("compare")
    code = main(["compare", "--model", "lenet5", *SMALL, "--out", str(root / "runs"), "--reports", str(root / "rep")])
    return code, root


def test_compare_passes_and_writes_every_file(both_backends, lenet_compare):
    code, root = lenet_compare
    assert code == 0
    assert REPORT_FILES <= {p.name for p in (root / "rep").iterdir()}
    agreement = pd.read_csv(root / "rep" / "agreement.csv")
    assert agreement.passed.all() and (agreement.config_hash.nunique() == 1)
    reference_rows = agreement[agreement.evaluator_b.str.startswith("reference:float64")]
    assert len(reference_rows) == 12 and (reference_rows.max_abs <= 1e-4).all()  # test images and probes
    cross = agreement[agreement.evaluator_a.isin(["mindspore[pytorch weights]", "pytorch[mindspore weights]"])
                      & agreement.evaluator_b.str.endswith(":native")]
    assert len(cross) == 4 and (cross.max_abs <= 1e-4).all()
    trained = agreement[agreement.kind == "trained"].iloc[0]
    assert trained.n == 500 and abs(trained.accuracy_delta) <= 0.01 and trained.status == "ok"
    # The control: the first backend again from initial weights one float32 step up, in a folder of its own.
    (control,) = (root / "runs" / "control").iterdir()
    assert read_run_info(control)["backend"] == "pytorch" and read_run_config(control).model.init_ulps == 1
    (torch_run,) = [d for d in (root / "runs").iterdir() if d.name.endswith(f"pytorch-{trained.config_hash[:8]}")]
    predicted = [np.load(d / "predictions.npz")["logits_native"].argmax(1) for d in (torch_run, control)]
    shared = np.mean(predicted[0] == predicted[1])
    assert trained.control_top1_agree == pytest.approx(shared)
    assert trained.min_top1_agree == pytest.approx(min(0.98, 1 - 2 * (1 - shared)))
    runs = pd.read_csv(root / "rep" / "runs.csv")
    assert set(runs.backend) == {"pytorch", "mindspore"} and (runs.status == "completed").all()
    assert set(pd.read_csv(root / "rep" / "per_class.csv").class_name.astype(str)) == {str(d) for d in range(10)}


def test_compare_reuses_runs_and_report_rebuilds(both_backends, lenet_compare, capsys):
    code, root = lenet_compare
    before = sorted(p.relative_to(root) for p in (root / "runs").glob("**/run.json"))
    assert main(["compare", "--model", "lenet5", *SMALL, "--out", str(root / "runs"),
                 "--reports", str(root / "rep2")]) == 0
    # matching config: no new training, the control's included
    assert sorted(p.relative_to(root) for p in (root / "runs").glob("**/run.json")) == before
    assert main(["report", "--runs", str(root / "runs"), "--reports", str(root / "rep3")]) == 0
    rebuilt = pd.read_csv(root / "rep3" / "agreement.csv")
    original = pd.read_csv(root / "rep" / "agreement.csv")
    np.testing.assert_array_equal(rebuilt.max_abs, original.max_abs)  # NaN (trained rows) equals NaN here
    np.testing.assert_array_equal(rebuilt.control_top1_agree, original.control_top1_agree)  # report found it
    assert original.control_top1_agree.notna().sum() == 1


def _copy_with_weights(run_dir, tmp_path, edit):
    """A copy of ``run_dir`` whose weights.npz was changed in place by ``edit(weights)``."""
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    with np.load(copy / "weights.npz") as archive:
        weights = {k: archive[k] for k in archive.files}
    edit(weights)
    save_arrays(copy / "weights.npz", weights)
    return copy


def _predicting(labels: np.ndarray, wrong: np.ndarray) -> SimpleNamespace:
    """A stand-in run whose logits give the label, or the next class on the ``wrong`` images."""
    predicted = labels.copy()
    predicted[wrong] = (predicted[wrong] + 1) % 10
    return SimpleNamespace(predictions={"logits_native": np.eye(10)[predicted]})


def test_the_control_sets_the_top1_floor():
    labels = np.arange(1000) % 10
    a, b = _predicting(labels, np.arange(0, 50)), _predicting(labels, np.arange(50, 100))  # both 95%, 90% shared
    control = _predicting(labels, np.r_[0:20, 100:130])  # 6% of a's predictions move with one float32 step
    judged = Matrix(None, SimpleNamespace(test_y=labels, info=SimpleNamespace(classes=tuple(range(10)))))
    trained_rows(judged, {"pytorch": a, "mindspore": b}, {"pytorch": control})
    row = judged.rows[0]
    assert row["top1_agree"] == pytest.approx(0.90) and row["control_top1_agree"] == pytest.approx(0.94)
    assert row["min_top1_agree"] == pytest.approx(0.88) and row["passed"]
    fixed = Matrix(None, SimpleNamespace(test_y=labels, info=SimpleNamespace(classes=tuple(range(10)))))
    trained_rows(fixed, {"pytorch": a, "mindspore": b}, {})  # no control: the budget's 98% floor
    assert np.isnan(fixed.rows[0]["control_top1_agree"]) and fixed.rows[0]["min_top1_agree"] == 0.98
    assert not fixed.rows[0]["passed"]


def test_perturbed_weights_fail_the_comparison(both_backends, lenet_compare, tmp_path, capsys):
    code, root = lenet_compare
    run_dirs = sorted((root / "runs").iterdir())
    broken = _copy_with_weights(run_dirs[0], tmp_path, lambda w: w["fc1.weight"].__iadd__(np.float32(1e-2)))
    assert main(["compare", "--runs", str(broken), str(run_dirs[1]), "--reports", str(tmp_path / "rep")]) == 1
    agreement = pd.read_csv(tmp_path / "rep" / "agreement.csv")
    failed = agreement[~agreement.passed.astype(bool)]
    name = run_dirs[0].name.split("-")[3]  # the backend whose weights were perturbed
    assert f"{name}:native vs reference:float64[{name} weights]" in set(failed.evaluator_a + " vs " + failed.evaluator_b)
    # every layer recomputed from the (perturbed) weights agrees: the saved logits are what no longer fit
    assert failed.first_divergent_layer.dropna().str.contains("do not come from these weights").all()
    assert "verdict: FAILED" in capsys.readouterr().out


def test_nan_weights_are_failed_never_passed(both_backends, lenet_compare, tmp_path, capsys):
    code, root = lenet_compare
    run_dirs = sorted((root / "runs").iterdir())
    broken = _copy_with_weights(run_dirs[1], tmp_path, lambda w: w["fc3.bias"].__setitem__(0, np.nan))
    assert main(["compare", "--runs", str(run_dirs[0]), str(broken), "--reports", str(tmp_path / "rep")]) == 1
    agreement = pd.read_csv(tmp_path / "rep" / "agreement.csv")
    from_nan = agreement[agreement.evaluator_a.str.contains(f"{broken.name.split('-')[3]} weights")
                         | agreement.evaluator_b.str.contains(f"{broken.name.split('-')[3]} weights")]
    assert len(from_nan) and not from_nan.passed.astype(bool).any()
    assert "verdict: FAILED" in capsys.readouterr().out


def test_runs_with_different_configs_are_refused(both_backends, lenet_compare, tmp_path, capsys):
    code, root = lenet_compare
    other = tmp_path / "other"
    three_epochs = [*SMALL[:SMALL.index("--epochs")], "--epochs", "3", *SMALL[SMALL.index("--epochs") + 2:]]
    assert main(["run", "--backend", "mindspore", "--model", "lenet5", *three_epochs, "--out", str(other)]) == 0
    run_dir = next(other.iterdir())
    first = sorted((root / "runs").iterdir())[0]
    assert main(["compare", "--runs", str(first), str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "differ in epochs" in err and err.count("\n") == 1


def test_no_control_keeps_the_fixed_floor(both_backends, tmp_path):
    tiny = [*SMALL[:SMALL.index("--limit-train")], "--limit-train", "64", *SMALL[SMALL.index("--limit-test"):]]
    assert main(["compare", "--model", "lenet-tiny", *tiny, "--no-control", "--out", str(tmp_path / "runs"),
                 "--reports", str(tmp_path / "rep")]) in (0, 1, 3)  # 64 images may not teach it: inconclusive
    assert not (tmp_path / "runs" / "control").exists()
    trained = pd.read_csv(tmp_path / "rep" / "agreement.csv").query("kind == 'trained'").iloc[0]
    assert np.isnan(trained.control_top1_agree) and trained.min_top1_agree == 0.98


def test_missing_backend_becomes_error_rows(tmp_path, monkeypatch, capsys):
    real = backend_registry.is_installed
    monkeypatch.setattr(backend_registry, "is_installed", lambda name: name != "mindspore" and real(name))
    code = main(["compare", "--model", "lenet-tiny", *SMALL, "--out", str(tmp_path / "runs"),
                 "--reports", str(tmp_path / "rep")])
    assert code == 2
    runs = pd.read_csv(tmp_path / "rep" / "runs.csv")
    error = runs[runs.backend == "mindspore"].iloc[0]
    assert error.status == "error" and "not installed" in error.error
    assert (tmp_path / "rep" / "summary.md").exists()


@pytest.mark.parametrize("model", ["vgg11", "vgg11-bn"])
def test_vgg_compare_end_to_end(both_backends, model, tmp_path):
    code = main(["compare", "--model", model, "--dataset", "synthetic", "--limit-train", "32", "--limit-test", "16",
                 "--epochs", "1", "--batch-size", "16", "--quiet", "--out", str(tmp_path / "runs"),
                 "--reports", str(tmp_path / "rep")])
    agreement = pd.read_csv(tmp_path / "rep" / "agreement.csv")
    same = agreement[agreement.kind == "same-weights"]
    assert len(same) == 20 and same.passed.all(), same[["evaluator_a", "evaluator_b", "inputs", "max_abs"]]
    assert (same.inputs == "probe").sum() == 10
    # One epoch on 32 images leaves VGG at chance: the trained pair cannot decide, and the verdict says so.
    trained = agreement[agreement.kind == "trained"].iloc[0]
    assert trained.status == "inconclusive" and code == 3
