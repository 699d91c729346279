"""One run end to end: data, spec, initial weights, training, artefacts in ``runs/<run_id>/``.

A run folder holds config.json (+ hash), metrics.csv, weights.npz, the native
checkpoint, model.onnx, predictions.npz and run.json (versions, device,
timings, status). Every file is written atomically; run.json is written first
with status ``running`` so an interrupted run is recognisable as such, and
checkpoint.npz (``harness.training.checkpoint``) lets ``harness run --resume`` continue it.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..backend import backend_names, get_backend
from ..config import RunConfig
from ..data.batches import steps_per_epoch
from ..data.fit import Dataset, prepare
from ..data.locate import LAYOUTS, search_dataset
from ..data.registry import load_raw
from ..errors import DISK_ERRNOS, HarnessError, RunInterrupted, write_failed
from ..evaluators.base import EVAL_BATCH_SIZE
from ..evaluators.onnxrt import run_session, session
from ..machine import LoadMeter
from ..model.resolve import model_spec, native_shape, run_initial_weights
from ..model.spec import ModelSpec
from ..reference.losses import accuracy
from ..runs.arrays import save_arrays
from ..runs.files import atomic_path, remove_temporaries, write_json
from ..runs.folder import create_run_dir, read_run_config, read_run_info
from .checkpoint import CHECKPOINT_NAME, Checkpoint, read_checkpoint, write_checkpoint
from .loop import Checkpointing, TrainResult, train


@dataclass
class RunOutcome:
    """Where a run landed and its headline numbers."""

    run_dir: Path
    summary: dict


# The last (spec, data) load_data made in this process, by what it was made from: `harness compare` trains two
# backends and a control of one config and then judges them, and read and prepared the same data four times.
_LAST_LOADED: dict[tuple, tuple[ModelSpec, Dataset]] = {}


def _files_stamp(path: Path) -> tuple:
    """Name, size and modification time of a file, or of each file in a folder: a change to any is a new key."""
    files = [path] if path.is_file() else sorted(child for child in path.iterdir() if child.is_file())
    return tuple((str(file.resolve()), stat.st_size, stat.st_mtime_ns) for file in files for stat in [file.stat()])


def _load_key(config: RunConfig, data_dir: Path | None) -> tuple | None:
    """Everything ``load_data``'s result depends on, files included; None where that cannot be told (a missing
    file or folder: loading again reports it as ever)."""
    m, d = config.model, config.data
    key = [m.model, m.activation, m.pool, m.init, config.model_sha256, d.dataset, d.fit, d.limit_train,
           d.limit_test, config.train.seed if d.dataset == "synthetic" else None]
    try:
        if Path(m.model).suffix.lower() in (".onnx", ".json"):  # a model file read from disk
            key.append(_files_stamp(Path(m.model)))
        if d.dataset in LAYOUTS:  # files found under the data roots (--data-dir, $HARNESS_DATA_DIR, ./data)
            folder = search_dataset(d.dataset, data_dir)[0]
            if folder is None:
                return None
            key.append(_files_stamp(folder))
    except (OSError, HarnessError):
        return None
    return tuple(key)


def load_data(config: RunConfig, data_dir: Path | None) -> tuple[ModelSpec, Dataset]:
    """The spec fitted to the dataset's channels and classes (an imported model's are its own), and the data
    prepared for it (synthetic data drawn at the model's own input shape).

    The same settings and unchanged files give the result of the last call again, not a new copy: nothing
    writes into a Dataset's arrays (batches are copies).
    """
    key = _load_key(config, data_dir)
    if key is not None and key in _LAST_LOADED:
        return _LAST_LOADED[key]
    m, d = config.model, config.data
    synthetic_shape = native_shape(m.model, config.model_sha256)
    raw = load_raw(d.dataset, data_dir=data_dir, synthetic_shape=synthetic_shape, seed=config.train.seed)
    channels, classes = raw.train_images.shape[1], raw.info.num_classes
    spec = model_spec(m.model, channels, classes, m.activation, m.pool, m.init, config.model_sha256)
    loaded = spec, prepare(raw, spec.input_shape, d.fit, d.limit_train, d.limit_test)
    _LAST_LOADED.clear()  # one entry: the data of the config at hand, not every dataset ever loaded
    if key is not None:
        _LAST_LOADED[key] = loaded
    return loaded


def _write_metrics(path: Path, result: TrainResult) -> None:
    frame = pd.concat([pd.DataFrame(result.step_rows).assign(kind="step"),
                       pd.DataFrame(result.epoch_rows).assign(kind="epoch")], ignore_index=True)
    columns = ["kind", "epoch", "step", "loss", "lr", "train_loss", "test_loss", "test_accuracy",
               "seconds", "images_per_s"]
    with atomic_path(path) as tmp:
        frame.reindex(columns=columns).to_csv(tmp, index=False)


def _export_and_check(backend, model, run_dir: Path, dataset: Dataset, result: TrainResult) -> dict:
    """Export to ONNX, run it on the test set, save both predictions; time both inferences for the report.

    Both run the whole test set at the loop's evaluation batch size, each after a warm-up (native: the
    loop's own evaluation compiled and cached it; ONNX Runtime: one batch first), so their images/s compare.
    The native time is the loop's last evaluation where an earlier one warmed it up (a run of two or more
    epochs): it is the same work, and the same logits, so it is not done twice.
    """
    native = result.test_logits
    onnx_path = run_dir / "model.onnx"
    with atomic_path(onnx_path) as tmp:
        backend.export_onnx(model, tmp)
    ort_session = session(onnx_path)
    run_session(ort_session, dataset.test_x[:EVAL_BATCH_SIZE], EVAL_BATCH_SIZE)  # warm-up: first-run allocations
    started = time.perf_counter()
    onnx_logits = run_session(ort_session, dataset.test_x, EVAL_BATCH_SIZE)
    onnx_seconds = time.perf_counter() - started
    native_seconds = result.test_seconds
    if not result.test_warm:
        started = time.perf_counter()
        backend.predict(model, dataset.test_x, EVAL_BATCH_SIZE)
        native_seconds = time.perf_counter() - started
    with atomic_path(run_dir / "predictions.npz") as tmp:
        save_arrays(tmp, {"labels": dataset.test_y, "logits_native": native, "logits_onnx": onnx_logits})
    count = len(dataset.test_y)
    return {"onnx_test_accuracy": accuracy(onnx_logits, dataset.test_y),
            "onnx_max_abs_diff": float(np.abs(onnx_logits - native).max()),
            "infer_native_images_per_s": count / max(native_seconds, 1e-9),
            "infer_onnx_images_per_s": count / max(onnx_seconds, 1e-9)}


def _start_info(config: RunConfig, backend, device: str, spec: ModelSpec, dataset: Dataset, run_dir: Path) -> dict:
    return {"run_id": run_dir.name, "status": "running", "backend": config.backend, "device": device,
            "model": spec.name, "dataset": config.data.dataset, "data_source": dataset.source,
            "config_hash": config.config_hash, "num_params": spec.num_params,
            "num_train": len(dataset.train_y), "num_test": len(dataset.test_y),
            "versions": {"harness": __version__, "python": platform.python_version(), **backend.versions()},
            "command": " ".join(["harness", *sys.argv[1:]]), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _write_artefacts(backend, model, run_dir: Path, dataset: Dataset, result: TrainResult) -> dict:
    _write_metrics(run_dir / "metrics.csv", result)
    with atomic_path(run_dir / "weights.npz") as tmp:
        save_arrays(tmp, backend.get_weights(model))
    with atomic_path(run_dir / f"model{backend.checkpoint_suffix}") as tmp:
        backend.save(model, tmp)
    return _export_and_check(backend, model, run_dir, dataset, result)


def _mark_stopped(run_dir: Path, info: dict, error: BaseException) -> BaseException | None:
    """Record in run.json why the run stopped before completing; never leave it saying ``running``.

    Returns:
        The exception to raise instead of ``error``, or None to re-raise ``error`` itself (a harness bug keeps
        its traceback). A disk that refused a write becomes a one-line ``WriteFailed``; when run.json cannot be
        written either (the same full or read-only disk), the one line says so.
    """
    if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
        error = write_failed(error, error.filename or f"a file of {run_dir}")
    info.update(status="interrupted" if isinstance(error, KeyboardInterrupt) else "failed",
                error=f"{type(error).__name__}: {error}")
    unmarked = ""
    try:
        write_json(run_dir / "run.json", info)
    except (HarnessError, OSError) as failed:
        unmarked = f"; {run_dir}/run.json could not be marked {info['status']} either ({failed})"
    if isinstance(error, RunInterrupted):
        return RunInterrupted(f"{error}; continue with: harness run --resume {run_dir}{unmarked}")
    if isinstance(error, HarnessError):
        return HarnessError(f"{error}{unmarked}") if unmarked else error
    return None


def _train_and_write(config: RunConfig, run_dir: Path, info: dict, dataset: Dataset, model, spec: ModelSpec,
                     quiet: bool, checkpoint_every: int, resume: Checkpoint | None) -> RunOutcome:
    """Train (or continue), write the artefacts, and keep run.json's status true at every moment."""
    backend = get_backend(config.backend)
    saving = Checkpointing(lambda state: write_checkpoint(run_dir, state), config.config_hash, checkpoint_every)
    role = "control" if config.model.init_ulps else "train"  # a control run: initial weights one ulp up
    try:
        with LoadMeter() as meter:
            result = train(backend, model, spec, dataset, config, quiet=quiet, saving=saving, resume=resume,
                           label=f"{config.backend} {role}")
        info.update(_write_artefacts(backend, model, run_dir, dataset, result))
    except BaseException as error:
        replacement = _mark_stopped(run_dir, info, error)
        if replacement is None:
            raise
        raise replacement from None
    last = result.epoch_rows[-1]
    info.update(status="completed", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                test_accuracy=last["test_accuracy"], test_loss=last["test_loss"], train_loss=last["train_loss"],
                epochs=len(result.epoch_rows), train_seconds=result.train_seconds,
                images_per_s=result.steady_images_per_s(), first_epoch_images_per_s=result.first_epoch_images_per_s(),
                **meter.load.as_dict())
    info.pop("error", None)
    try:
        write_json(run_dir / "run.json", info)
    except BaseException as error:
        replacement = _mark_stopped(run_dir, info, error)
        raise (replacement or error) from None
    (run_dir / CHECKPOINT_NAME).unlink(missing_ok=True)  # the finished artefacts supersede it
    remove_temporaries(run_dir)  # e.g. half a model.onnx from a process killed before this run was resumed
    return RunOutcome(run_dir, info)


def execute(config: RunConfig, out: Path, data_dir: Path | None = None, quiet: bool = False,
            checkpoint_every: int = 0) -> RunOutcome:
    """Train one backend per ``config`` and write its run folder.

    Args:
        config: the run's settings.
        out: the folder that receives the new run folder.
        data_dir: where datasets are (None: $HARNESS_DATA_DIR or ./data).
        quiet: no progress bar.
        checkpoint_every: also checkpoint every this many steps (0: at each epoch's end only).

    Raises:
        HarnessError: bad settings, missing data, unusable backend or device, divergence.
        RunInterrupted: Ctrl-C; the run folder holds a checkpoint to resume from.
    """
    backend = get_backend(config.backend)
    device = backend.resolve_device(config.device)
    spec, dataset = load_data(config, data_dir)
    run_dir = create_run_dir(out, config.backend, spec.name, config.config_hash)
    info = _start_info(config, backend, device, spec, dataset, run_dir)
    try:
        write_json(run_dir / "config.json", {"config": config.to_dict(), "config_hash": config.config_hash})
        write_json(run_dir / "run.json", info)
        model = backend.build(spec, device)
        info["versions"].update(backend.versions())  # some settle at build: MindSpore's oneDNN ISA cap
        backend.set_weights(model, run_initial_weights(config, spec))
    except BaseException as error:
        replacement = _mark_stopped(run_dir, info, error)
        if replacement is None:
            raise
        raise replacement from None
    return _train_and_write(config, run_dir, info, dataset, model, spec, quiet, checkpoint_every, None)


def resume(run_dir: Path, data_dir: Path | None = None, quiet: bool = False, checkpoint_every: int = 0) -> RunOutcome:
    """Continue an interrupted run from its checkpoint, in its own folder.

    The final weights are bit-identical to an uninterrupted run's (same device and
    thread count; for MindSpore models with Dropout, see the README).

    Raises:
        HarnessError: not a run folder, already completed, no or corrupt checkpoint, config changed.
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir, backend_names())
    config = read_run_config(run_dir)
    if info["status"] == "completed":
        raise HarnessError(f"run {run_dir} is already completed; nothing to resume (start a new run instead)")
    if config.config_hash != info["config_hash"]:
        raise HarnessError(f"{run_dir}/config.json (hash {config.config_hash[:12]}) does not match run.json "
                           f"({info['config_hash'][:12]}): the folder was edited; start the run again")
    if config.backend != info["backend"]:  # the hash leaves the backend out: an edit there would go unseen
        raise HarnessError(f"{run_dir}/config.json says {config.backend} but run.json says {info['backend']}: the "
                           "folder was edited; resume only with the backend that made it")
    backend = get_backend(config.backend)
    device = backend.resolve_device(config.device)
    spec, dataset = load_data(config, data_dir)
    path = run_dir / CHECKPOINT_NAME
    checkpoint = read_checkpoint(path, spec, config.config_hash, config.train,
                                 steps_per_epoch(len(dataset.train_x), config.train.batch_size))
    # Built and its RNG state tried before run.json says `running`: a backend that cannot run or a state it
    # refuses leaves the folder as it was (the loop restores the state again when it starts).
    model = backend.build(spec, device)
    try:
        backend.set_rng_state(model, checkpoint.rng)
    except HarnessError as error:
        raise HarnessError(f"checkpoint {path}: {error}; start the run again with `harness run`") from None
    info.update(status="running", device=device)
    resumed = info.get("resumed")
    info["resumed"] = [*(resumed if isinstance(resumed, list) else []),
                       {"at_step": checkpoint.position.step, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    write_json(run_dir / "run.json", info)  # a read-only disk stops here with one WriteFailed line, run.json as it was
    remove_temporaries(run_dir)  # left by the process that was killed: nothing else writes this folder now
    versions = info.get("versions")  # not one of run.json's checked fields: an edited one is replaced
    info["versions"] = {**(versions if isinstance(versions, dict) else {}), **backend.versions()}
    return _train_and_write(config, run_dir, info, dataset, model, spec, quiet, checkpoint_every, checkpoint)
