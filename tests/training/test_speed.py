"""Honest speed in run.json: the steady state apart from the first epoch (compilation), and the machine's load."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.config import build_config, read_recipe
from harness.training.loop import TrainResult
from harness.training.run import execute


def test_steady_state_leaves_out_the_first_epoch_or_its_warm_up():
    rows = [{"images_per_s": 100.0, "seconds": 10.0}, {"images_per_s": 300.0, "seconds": 2.0},
            {"images_per_s": 200.0, "seconds": 3.0}]
    two = TrainResult(epoch_rows=rows)
    assert two.first_epoch_images_per_s() == 100.0
    assert two.steady_images_per_s() == pytest.approx((600 + 600) / 5)  # epochs 2 and 3 only
    one = TrainResult(epoch_rows=rows[:1], warmup_seconds=8.0, warmup_images=200)
    assert one.steady_images_per_s() == pytest.approx((1000 - 200) / (10 - 8))  # epoch 1 after its warm-up
    assert TrainResult(epoch_rows=rows[:1]).steady_images_per_s() == 100.0  # too short to tell: the whole epoch


def test_run_json_records_both_speeds_and_the_load(tmp_path):
    config = build_config({"backend": "pytorch", "dataset": "synthetic", "epochs": 2, "limit_train": 256,
                           "limit_test": 64, "batch_size": 32})
    outcome = execute(config, tmp_path, quiet=True)
    info = json.loads((outcome.run_dir / "run.json").read_text())
    epochs = pd.read_csv(outcome.run_dir / "metrics.csv").query("kind == 'epoch'")
    assert info["first_epoch_images_per_s"] == pytest.approx(epochs.images_per_s.iloc[0])
    assert info["images_per_s"] == pytest.approx(epochs.images_per_s.iloc[1])
    assert {"load_average_start", "load_average_end", "other_cores_busy", "cores", "under_load"} <= set(info)
    assert isinstance(info["under_load"], bool) and info["cores"] >= 1


@pytest.mark.slow
def test_the_demo_recipe_trains_both_backends_past_95_percent(tmp_path, backend_name):
    """make demo runs `harness compare --recipe demo`: each backend must show a trained model."""
    config = build_config({**read_recipe("demo"), "backend": backend_name})
    assert execute(config, tmp_path, quiet=True).summary["test_accuracy"] >= 0.95
