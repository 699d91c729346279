"""Full-MNIST training, as the README promises: LeNet5, 3 epochs, SGD 0.01 momentum 0.9 cosine, batch 64."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.config import build_config
from harness.training.run import execute
from tests.support import real_data_root

SETTINGS = {"model": "lenet5", "dataset": "mnist", "epochs": 3, "batch_size": 64, "optimizer": "sgd",
            "learning_rate": 0.01, "momentum": 0.9, "schedule": "cosine", "seed": 0}
_RUNS: dict[str, dict] = {}


def _mnist_run(backend_name: str, tmp_path_factory) -> dict:
    """Train once per backend per session; later tests reuse the run folder."""
    if backend_name not in _RUNS:
        root = real_data_root("mnist")
        config = build_config({**SETTINGS, "backend": backend_name})
        outcome = execute(config, tmp_path_factory.mktemp(backend_name), data_dir=root, quiet=True)
        predictions = dict(np.load(outcome.run_dir / "predictions.npz"))
        _RUNS[backend_name] = {**outcome.summary, **predictions, "run_dir": outcome.run_dir}
    return _RUNS[backend_name]


# The target. With the default cosine schedule, seeds 0-9 ended at 98.64-98.99% on both backends
# (AVX-512 Xeon; seed 0: PyTorch 98.91%, MindSpore 98.89%), so a regression of a few tenths fails it.
MIN_ACCURACY = 0.985


@pytest.mark.slow
def test_lenet5_mnist_three_epochs_accuracy(backend_name, tmp_path_factory):
    run = _mnist_run(backend_name, tmp_path_factory)
    # These settings are the issue's `harness run --model lenet5 --dataset mnist --epochs 3`, by its defaults.
    assert build_config({"model": "lenet5", "dataset": "mnist", "epochs": 3}).config_hash == run["config_hash"]
    assert run["num_train"] == 60000 and run["num_test"] == 10000
    assert run["test_accuracy"] >= MIN_ACCURACY
    assert np.mean(run["logits_native"].argmax(1) == run["labels"]) == run["test_accuracy"]
    assert np.abs(run["logits_onnx"] - run["logits_native"]).max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parity
def test_backends_trained_alike_agree_on_99_percent(both_backends, tmp_path_factory):
    torch_run = _mnist_run("pytorch", tmp_path_factory)
    mindspore_run = _mnist_run("mindspore", tmp_path_factory)
    assert torch_run["config_hash"] == mindspore_run["config_hash"]
    agreement = np.mean(torch_run["logits_native"].argmax(1) == mindspore_run["logits_native"].argmax(1))
    assert agreement >= 0.99
    # Same initial weights and the same first batch: the first losses agree to float32 rounding.
    first = [pd.read_csv(run["run_dir"] / "metrics.csv").query("kind == 'step'").loss.iloc[0]
             for run in (torch_run, mindspore_run)]
    assert abs(first[0] - first[1]) <= 1e-5
