"""Resume, Ctrl-C and divergence: nothing lost, and the result as if the run had never stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest

from harness.cli.main import main
from harness.config import build_config
from harness.model.weights import init_weights
from harness.training import loop
from harness.training.checkpoint import CHECKPOINT_NAME, read_checkpoint
from harness.training.loop import Checkpointing, train
from harness.training.run import load_data
from tests.support import REPO_ROOT

# 2 epochs x 16 steps; a checkpoint every 5 steps lands mid-epoch.
SETTINGS = ["--model", "lenet5", "--dataset", "synthetic", "--limit-train", "512", "--limit-test", "64",
            "--epochs", "2", "--batch-size", "32", "--quiet"]


def _config(backend: str, model: str = "lenet5", **extra):
    settings = {"backend": backend, "model": model, "dataset": "synthetic", "limit_train": 256, "limit_test": 32,
                "epochs": 2, "batch_size": 32, **extra}
    return build_config(settings)


def _harness(*args: str) -> subprocess.Popen:
    # Separate processes, as users run them: nothing process-wide (thread counts) leaks in from other tests.
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _start(backend: str, out: Path) -> subprocess.Popen:
    return _harness("run", "--backend", backend, *SETTINGS, "--checkpoint-every", "5", "--out", str(out))


def _checkpoint_step(run_dir: Path) -> int:
    with np.load(run_dir / CHECKPOINT_NAME, allow_pickle=False) as archive:
        return json.loads(archive["meta"].tobytes())["position"]["step"]


def _first_checkpoint(process: subprocess.Popen, out: Path, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        found = list(out.glob(f"*/{CHECKPOINT_NAME}"))
        if found:
            return found[0].parent
        time.sleep(0.002)
    process.kill()
    pytest.fail(f"no checkpoint appeared; exit {process.poll()}: {process.communicate()[1][-500:]}")


def test_sigkill_mid_epoch_then_resume_gives_byte_identical_weights(backend_name, tmp_path):
    straight_run = _harness("run", "--backend", backend_name, *SETTINGS, "--out", str(tmp_path / "straight"))
    process = _start(backend_name, tmp_path / "killed")
    run_dir = _first_checkpoint(process, tmp_path / "killed")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # died without a word
    assert 5 <= _checkpoint_step(run_dir) < 32 and not (run_dir / "weights.npz").exists()

    resumed = _harness("run", "--resume", str(run_dir), "--quiet")
    assert resumed.wait() == 0 and straight_run.wait() == 0, resumed.communicate()[1] + straight_run.communicate()[1]
    (straight,) = (tmp_path / "straight").iterdir()
    assert (run_dir / "weights.npz").read_bytes() == (straight / "weights.npz").read_bytes()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["resumed"][0]["at_step"] >= 5
    assert not (run_dir / CHECKPOINT_NAME).exists()
    losses = [np.loadtxt(d / "metrics.csv", delimiter=",", skiprows=1, usecols=3, max_rows=32) for d in (run_dir, straight)]
    np.testing.assert_array_equal(*losses)


def test_ctrl_c_finishes_the_step_checkpoints_and_exits_130(tmp_path, capsys):
    process = _start("pytorch", tmp_path)
    run_dir = _first_checkpoint(process, tmp_path)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.count("\n") == 1 and f"harness run --resume {run_dir}" in err and "Traceback" not in err
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted" and f"step {_checkpoint_step(run_dir)}" in err
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0, capsys.readouterr().err
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


def _train_in_memory(backend, config, resume=None, every: int = 0):
    """Train in-process, keeping every checkpoint in a list instead of on disk."""
    spec, dataset = load_data(config, None)
    model = backend.build(spec, "cpu")
    backend.set_weights(model, init_weights(spec, config.train.seed))
    saved = []
    saving = Checkpointing(lambda state: saved.append(deepcopy(state)) or Path("memory"), config.config_hash, every)
    result = train(backend, model, spec, dataset, config, quiet=True, saving=saving, resume=resume)
    return backend.get_weights(model), saved, result


@pytest.mark.parametrize("model,optimizer,ahead", [("lenet5", "adam", False), ("simple-cnn", "sgd", False),
                                                   ("simple-cnn", "sgd", True)])
def test_resume_in_process_restores_optimizer_and_dropout_state(backend_name, backend, model, optimizer, ahead,
                                                                 monkeypatch, request):
    if ahead:  # batches made on the background thread while a step runs (PyTorch's Dropout noise with them)
        monkeypatch.setattr(loop._Loop, "ahead_by", lambda self, batch_size, image_bytes: 1)
        request.getfixturevalue("core_left_free")
    config = _config(backend_name, model, optimizer=optimizer, learning_rate=1e-3, momentum=0.9)
    straight, saved, _ = _train_in_memory(backend, config, every=3)
    mid_epoch = next(c for c in saved if c.position.batch and c.position.epoch == 1)
    resumed, _, result = _train_in_memory(backend, config, resume=mid_epoch)
    for name in straight:
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)
    assert [row["epoch"] for row in result.epoch_rows] == [1, 2]


def test_nan_loss_stops_with_one_line_naming_step_and_kept_checkpoint(tmp_path, capsys):
    code = main(["run", "--backend", "pytorch", *SETTINGS, "--lr", "10", "--momentum", "0.9", "--checkpoint-every", "1",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "training diverged" in err, err
    (run_dir,) = tmp_path.iterdir()
    kept = read_checkpoint(run_dir / CHECKPOINT_NAME, load_data(_config("pytorch"), None)[0],
                           json.loads((run_dir / "config.json").read_text())["config_hash"])
    assert f"step {kept.position.step}" in err and all(np.isfinite(w).all() for w in kept.weights.values())
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
