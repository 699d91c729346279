"""The real command on tiny data (the bad-input table is tests/test_bad_inputs.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from harness.cli.main import main
from harness.config import TrainConfig
from harness.model.zoo import ACTIVATIONS
from tests.support import REPO_ROOT

TINY = ["--dataset", "synthetic", "--limit-train", "96", "--limit-test", "32", "--epochs", "2",
        "--batch-size", "32", "--quiet"]


def _harness(*args: str, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd)


def test_run_writes_the_whole_run_folder(tmp_path):
    done = _harness("run", "--backend", "pytorch", "--model", "lenet-tiny", *TINY, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and "test accuracy" in done.stdout
    (run_dir,) = tmp_path.iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["config.json", "metrics.csv", "weights.npz", "model.pt", "model.onnx", "predictions.npz", "run.json"])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["num_train"] == 96 and info["num_test"] == 32
    assert info["config_hash"] == json.loads((run_dir / "config.json").read_text())["config_hash"]
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert (metrics.kind == "step").sum() == 2 * 3 and (metrics.kind == "epoch").sum() == 2
    predictions = np.load(run_dir / "predictions.npz")
    assert predictions["logits_native"].shape == (32, 10)
    assert np.abs(predictions["logits_native"] - predictions["logits_onnx"]).max() <= 1e-5
    assert info["test_accuracy"] == pytest.approx(np.mean(predictions["logits_native"].argmax(1) == predictions["labels"]))


def test_config_file_and_flags_layer_over_a_recipe(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('model = "lenet-tiny"\nepochs = 5\n[about]\nnote = "ignored"\n')
    code = main(["run", "--config", str(config), "--epochs", "1", *TINY[:-5], "--batch-size", "48", "--quiet",
                 "--out", str(tmp_path / "runs")])
    assert code == 0, capsys.readouterr().err
    (run_dir,) = (tmp_path / "runs").iterdir()
    saved = json.loads((run_dir / "config.json").read_text())["config"]
    assert saved["model"]["model"] == "lenet-tiny" and saved["train"]["epochs"] == 1
    assert saved["train"]["batch_size"] == 48


def test_bad_flag_through_the_real_entry_point_has_no_traceback(tmp_path):
    done = _harness("run", "--model", "nope", "--out", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def test_run_help_names_each_default_and_the_choices():
    done = _harness("run", "--help")
    text = " ".join(done.stdout.split())  # argparse wraps help lines by terminal width
    train = TrainConfig()
    assert done.returncode == 0
    assert f"--batch-size BATCH_SIZE default: {train.batch_size} " in text
    assert f"--learning-rate LEARNING_RATE, --lr LEARNING_RATE default: {train.learning_rate} " in text
    assert f"--schedule SCHEDULE default: {train.schedule}; one of constant, step, multistep, cosine, onecycle " in text
    assert f"--activation ACTIVATION default: the model's own; one of {', '.join(ACTIVATIONS)} " in text
    assert "--limit-train LIMIT_TRAIN default: all samples " in text
    assert "--backend BACKEND default: pytorch; one of pytorch, mindspore " in text


def test_list_shows_models_datasets_backends():
    done = _harness("list")
    assert done.returncode == 0, done.stderr
    for needle in ("lenet5", "61,706", "vgg11-bn", "mnist-sample", "cifar10", "pytorch", "recipes:"):
        assert needle in done.stdout


def test_parity_summary_says_when_a_pass_rests_on_float32s_spread_or_adams_noise():
    from harness.report.summary import allowance_note

    budget_only = {"rel": 5e-5, "allowed": 1e-4 + 2 * 3e-3, "spread": 3e-3, "undecided": 67, "passed": True}
    assert allowance_note(budget_only) == ""  # within the fixed budget: nothing to explain
    spread = {**budget_only, "rel": 2.97e-3}
    assert allowance_note(spread) == (" (over the 1e-04 budget, under 6.1e-03 = budget + 2 x float32's spread"
                                       " 3.0e-03 from 67 ReLU/max-pool decisions float32 cannot make)")
    assert allowance_note({**spread, "passed": False}) == ""  # a failure is reported as one
    assert allowance_note({"rel": 1.0, "allowed": 1e-4, "passed": True}) == ""  # forward rows have no spread
    noise = {"rel": 3e-2, "allowed": 1e-4 + 3.7e-2, "spread": float("nan"), "noise": 3.7e-2, "undecided": 0,
             "passed": True}  # a lockstep conv bias under BatchNorm with Adam, as read back from parity.csv
    assert allowance_note(noise) == (" (over the 1e-04 budget, under 3.7e-02 = budget + 3.7e-02 for Adam's steps"
                                      " along float32 noise (gradients float32 cannot tell from zero))")


def test_parity_summary_says_whose_rounding_the_decision_matched_difference_is():
    import pandas as pd

    from harness.report.summary import parity_lines

    step = {"mode": "synchronised", "step": 2, "allowed": 1.6e-1, "spread": 8e-2, "undecided": 71, "passed": True,
            "backend_a": "pytorch", "backend_b": "mindspore"}
    rows = pd.DataFrame([{**step, "param": "conv6.weight", "rel": 7.9e-2, "rel_matched": 1e-7,
                          "rel64_matched_a": 5e-8, "rel64_matched_b": 6e-8},
                         {**step, "param": "conv1.weight", "rel": 2.2e-4, "rel_matched": 2.2e-4,
                          "rel64_matched_a": 2.2e-4, "rel64_matched_b": 5.4e-6}])
    matched = parity_lines(rows, None)[1]
    assert matched.strip().startswith("decision-matched 2.20e-04 (step 2, conv1.weight)")
    assert matched.endswith("; each side from that float64 step: pytorch 2.2e-04, mindspore 5.4e-06")
    adam_weight = rows.assign(rel64_matched_a=float("nan"), rel64_matched_b=float("nan"))  # nothing matched
    assert parity_lines(adam_weight, None)[1].endswith("undecidable decisions")
