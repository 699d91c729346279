"""Checkpoints from elsewhere: every position field, the optimizer state and the RNG state are checked before
``--resume`` touches the run folder, and a folder whose config.json names another backend is refused."""

from __future__ import annotations

import json
import shutil
from copy import deepcopy
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from harness.backend import get_backend
from harness.cli.main import main
from harness.errors import HarnessError
from harness.model.weights import init_weights
from harness.runs.folder import read_run_config
from harness.training.checkpoint import CHECKPOINT_NAME, Checkpoint, write_checkpoint
from harness.training.loop import Checkpointing, train
from harness.training.run import load_data

# 64 images in batches of 16: 4 steps an epoch, 8 in all; a checkpoint every 2 steps lands mid-epoch at step 2.
TINY = ["--dataset", "synthetic", "--epochs", "2", "--limit-train", "64", "--limit-test", "32", "--batch-size", "16",
        "--checkpoint-every", "2", "--quiet"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, list[Checkpoint]]:
    """A finished PyTorch run (SGD, momentum 0.9) and every checkpoint its config writes, kept in memory."""
    out = tmp_path_factory.mktemp("made")
    assert main(["run", "--backend", "pytorch", *TINY, "--out", str(out)]) == 0
    run_dir = next(out.iterdir())
    config = read_run_config(run_dir)
    spec, dataset = load_data(config, None)
    backend = get_backend("pytorch")
    model = backend.build(spec, "cpu")
    backend.set_weights(model, init_weights(spec, config.train.seed))
    saved: list[Checkpoint] = []
    saving = Checkpointing(lambda state: saved.append(deepcopy(state)) or Path("memory"), config.config_hash, 2)
    train(backend, model, spec, dataset, config, quiet=True, saving=saving)
    return run_dir, saved


def _interrupted(tmp: Path, made, checkpoint: Checkpoint) -> Path:
    """A copy of the run, marked interrupted, holding ``checkpoint``."""
    run_dir = shutil.copytree(made[0], tmp / "runs" / made[0].name)
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    write_checkpoint(run_dir, checkpoint)
    return run_dir


def _position(**fields) -> Callable[[Checkpoint], Checkpoint]:
    return lambda c: replace(c, position=replace(c.position, **fields))


def _group(group: str, change: Callable[[dict], dict]) -> Callable[[Checkpoint], Checkpoint]:
    return lambda c: replace(c, **{group: change(dict(getattr(c, group)))})


def _without(*keys: str) -> Callable[[dict], dict]:
    return lambda found: {k: v for k, v in found.items() if not any(k.endswith(key) for key in keys)}


def _set(**arrays) -> Callable[[dict], dict]:
    return lambda found: {**found, **arrays}


# id -> (change to the mid-epoch checkpoint at step 2, fragment of the one error line)
CASES = {
    "batch-negative": (_position(batch=-1), "position field 'batch' is '-1', expected an integer >= 0"),
    "step-huge-float": (_position(step=1e9), "position field 'step' is '1000000000.0', expected an integer >= 0"),
    "step-string": (_position(step="abc"), "position field 'step' is 'abc', expected an integer >= 0"),
    "step-rows-garbage": (_position(step_rows="garbage"), "position field 'step_rows' is a str, expected a list"),
    "step-rows-bad-row": (_position(step_rows=[{"loss": "x"}, 7]), "position field 'step_rows': row 0"),
    "epoch-beyond-run": (_position(epoch=5, step_rows=[], epoch_rows=[], step=0, batch=0),
                         "position field 'epoch'=5 (batch 0) lies beyond the run's 2 epoch(s)"),
    "batch-beyond-epoch": (_position(batch=9), "position field 'batch'=9 is beyond an epoch of this run (0..4"),
    "step-inconsistent": (_position(epoch=1, batch=0), "position fields 'step'=2 and 'epoch'=1 disagree"),
    "optimizer-missing": (_group("optimizer", lambda found: {}),
                          "optimizer state lacks conv1.bias.momentum_buffer"),
    "optimizer-wrong-shape": (_group("optimizer", _set(**{"fc3.bias.momentum_buffer": np.zeros(3, np.float32)})),
                              "optimizer/fc3.bias.momentum_buffer is float32 (3,), expected finite floats of "
                              "shape (10,)"),
    "optimizer-extra": (_group("optimizer", _set(**{"fc3.bias.exp_avg": np.zeros(10, np.float32)})),
                        "optimizer state holds fc3.bias.exp_avg, which sgd (momentum 0.9) does not keep"),
    "rng-7-bytes": (_group("rng", _set(torch_cpu=np.zeros(7, np.uint8))),
                    "rng/torch_cpu is uint8 (7,), expected 5056 uint8 bytes"),
    "rng-missing": (_group("rng", _without("torch_cpu")), "rng/torch_cpu is missing"),
    "rng-floats": (_group("rng", lambda found: {k: v.astype(np.float32) for k, v in found.items()}),
                   "rng/torch_cpu is float32 (5056,)"),
    "weights-nan": (_group("weights", lambda w: {**w, "fc3.bias": np.full(10, np.nan, np.float32)}),
                    "fc3.bias holds NaN/Inf"),
}


def _resume_fails(capsys, run_dir: Path, fragment: str) -> str:
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    code = main(["run", "--resume", str(run_dir), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing written, status untouched
    return err


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_checkpoint_field_is_one_line_before_anything_is_written(case, made, tmp_path, capsys):
    change, fragment = CASES[case]
    mid_epoch = made[1][0]
    assert (mid_epoch.position.step, mid_epoch.position.batch) == (2, 2)
    run_dir = _interrupted(tmp_path, made, change(mid_epoch))
    err = _resume_fails(capsys, run_dir, fragment)
    assert f"{run_dir / CHECKPOINT_NAME}" in err


def test_config_json_naming_another_backend_is_refused(made, tmp_path, capsys):
    run_dir = _interrupted(tmp_path, made, made[1][0])
    saved = json.loads((run_dir / "config.json").read_text())
    saved["config"]["backend"] = "mindspore"  # the hash leaves the backend out: it still matches
    (run_dir / "config.json").write_text(json.dumps(saved))
    _resume_fails(capsys, run_dir, "config.json says mindspore but run.json says pytorch: the folder was edited; "
                                   "resume only with the backend that made it")


def test_a_checkpoint_after_the_last_epoch_finishes_as_completed(made, tmp_path, capsys):
    last = made[1][-1]
    assert (last.position.epoch, last.position.batch) == (2, 0)
    run_dir = _interrupted(tmp_path, made, last)
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0, capsys.readouterr().err
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and not (run_dir / CHECKPOINT_NAME).exists()


def test_divergence_after_resume_names_the_checkpoint_resumed_from(made, tmp_path, capsys):
    # Huge but finite weights pass every check, and the first step's loss overflows to NaN.
    huge = replace(made[1][0], weights={k: np.full_like(v, 1e30) for k, v in made[1][0].weights.items()})
    run_dir = _interrupted(tmp_path, made, huge)
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training diverged" in err, err
    assert f"last good checkpoint is {CHECKPOINT_NAME} of an earlier run of this folder (step 2" in err, err
    assert "none yet" not in err and (run_dir / CHECKPOINT_NAME).exists()


def test_adam_needs_its_moments_and_step(tmp_path):
    from harness.config import build_config
    from harness.training.checkpoint import read_checkpoint

    config = build_config({"backend": "pytorch", "dataset": "synthetic", "limit_train": 64, "limit_test": 32,
                           "epochs": 1, "batch_size": 16, "optimizer": "adam", "learning_rate": 1e-3})
    spec, dataset = load_data(config, None)
    backend = get_backend("pytorch")
    model = backend.build(spec, "cpu")
    backend.set_weights(model, init_weights(spec, config.train.seed))
    saved: list[Checkpoint] = []
    train(backend, model, spec, dataset, config, quiet=True,
          saving=Checkpointing(lambda s: saved.append(deepcopy(s)) or Path("memory"), config.config_hash, 2))
    good = saved[0]
    write_checkpoint(tmp_path, good)
    assert read_checkpoint(tmp_path / CHECKPOINT_NAME, spec, config.config_hash, config.train, 4).position.step == 2
    for change, fragment in [(_without("step"), "optimizer state lacks step"),
                             (_without(".exp_avg_sq"), "exp_avg_sq"),
                             (_set(step=np.asarray(7.0, np.float32)), "optimizer/step is float32 () 7.0, expected "
                                                                      "the scalar 2")]:
        write_checkpoint(tmp_path, _group("optimizer", change)(good))
        with pytest.raises(HarnessError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            read_checkpoint(tmp_path / CHECKPOINT_NAME, spec, config.config_hash, config.train, 4)


def test_mindspore_refuses_a_dropout_steps_that_is_no_integer_scalar():
    from harness.config import build_config

    config = build_config({"backend": "mindspore", "dataset": "synthetic", "limit_train": 64, "limit_test": 32})
    spec, _ = load_data(config, None)
    backend = get_backend("mindspore")
    model = backend.build(spec, "cpu")
    for bad in ({}, {"dropout_steps": np.asarray(1.5)}, {"dropout_steps": np.asarray([3], np.int64)},
                {"dropout_steps": np.asarray(-1, np.int64)}):
        with pytest.raises(HarnessError, match="rng/dropout_steps is .*expected an int64 scalar >= 0"):
            backend.set_rng_state(model, bad)
    backend.set_rng_state(model, {"dropout_steps": np.asarray(3, np.int64)})
    assert model.dropout_steps == 3
