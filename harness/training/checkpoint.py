"""Resume checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint is one ``checkpoint.npz`` in the run folder (no pickled objects):
canonical weights, optimizer state, the framework RNG state (dropout masks),
and a JSON record of the loop's position and metric rows. The batch order and
augmentation draws need no saved generator: they are fixed by (seed, epoch)
(``harness.data.batches``), so the position (epoch, batches done) restores them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..errors import HarnessError
from ..model.spec import ModelSpec
from ..model.weights import Weights, check_weights
from ..runs.arrays import READ_ERRORS, read_arrays, save_arrays
from ..runs.files import atomic_path

CHECKPOINT_NAME = "checkpoint.npz"
FORMAT_VERSION = 1
_GROUPS = ("weights", "optimizer", "rng")


@dataclass
class Position:
    """Where the loop stands: ``step`` steps taken, ``batch`` of them in epoch ``epoch`` (0-based)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    epoch_seconds: float = 0.0  # time spent in the unfinished epoch so far
    epoch_images: int = 0
    train_seconds: float = 0.0  # time spent in finished epochs
    warmup_seconds: float = 0.0  # time the run's first WARMUP_STEPS steps took (graph compilation, caches)
    warmup_images: int = 0
    step_rows: list[dict] = field(default_factory=list)
    epoch_rows: list[dict] = field(default_factory=list)


@dataclass
class Checkpoint:
    """One resumable state of a run."""

    config_hash: str
    position: Position
    weights: Weights
    optimizer: dict[str, np.ndarray]
    rng: dict[str, np.ndarray]


def write_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Atomically replace ``run_dir/checkpoint.npz``: a kill mid-write leaves the previous one whole."""
    meta = {"format": FORMAT_VERSION, "config_hash": checkpoint.config_hash, "position": asdict(checkpoint.position)}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for group in _GROUPS:
        arrays.update({f"{group}/{name}": value for name, value in getattr(checkpoint, group).items()})
    path = Path(run_dir) / CHECKPOINT_NAME
    with atomic_path(path) as tmp:
        save_arrays(tmp, arrays)
    return path


def _read_checkpoint_arrays(path: Path, spec: ModelSpec) -> dict[str, np.ndarray]:
    # The weights group is checked against the spec before its bytes are read; the optimizer and RNG groups
    # and the position record are bounded by read_arrays' overall cap.
    expected = {f"weights/{name}": (shape, None) for name, shape in spec.param_shapes().items()}
    try:
        return read_arrays(path, expected)
    except FileNotFoundError:
        raise HarnessError(f"no checkpoint {path}: the run stopped before its first checkpoint; "
                           "start it again with `harness run`") from None
    except READ_ERRORS as error:
        raise HarnessError(f"cannot read checkpoint {path} ({error}); expected a checkpoint.npz "
                           "written by harness run; start the run again") from None


# Position fields by kind, and the keys of the loop's metric rows (harness.training.loop writes them).
_COUNT_FIELDS = ("step", "epoch", "batch", "epoch_images", "warmup_images")
_SECONDS_FIELDS = ("epoch_seconds", "train_seconds", "warmup_seconds")
ROW_KEYS = {"step_rows": ("epoch", "step", "loss", "lr"),
            "epoch_rows": ("epoch", "step", "train_loss", "test_loss", "test_accuracy", "lr", "seconds",
                           "images_per_s")}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _position_problem(p: Position, train: TrainConfig | None, per_epoch: int | None) -> str | None:
    """What is wrong with a checkpoint's position (types, ranges, and the counts that must agree), or None."""
    for name in _COUNT_FIELDS:
        value = getattr(p, name)
        if type(value) is not int or value < 0:  # JSON's 1e9 is a float, and True an int to isinstance
            return f"position field {name!r} is {str(value)[:40]!r}, expected an integer >= 0"
    for name in _SECONDS_FIELDS:
        value = getattr(p, name)
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            return f"position field {name!r} is {str(value)[:40]!r}, expected a number of seconds >= 0"
    for name, keys in ROW_KEYS.items():
        rows = getattr(p, name)
        if not isinstance(rows, list):
            return f"position field {name!r} is a {type(rows).__name__}, expected a list of metric rows"
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or set(row) != set(keys) or not all(_is_number(row[k]) for k in keys):
                return (f"position field {name!r}: row {i} is {str(row)[:60]!r}, expected numbers for exactly "
                        f"{', '.join(keys)}")
    within = train is not None and per_epoch is not None
    if within and (p.epoch > train.epochs or (p.epoch == train.epochs and p.batch)):
        return f"position field 'epoch'={p.epoch} (batch {p.batch}) lies beyond the run's {train.epochs} epoch(s)"
    # batch == per_epoch is real: Ctrl-C after an epoch's last step saves before that epoch's row is written.
    if within and p.batch > per_epoch:
        return f"position field 'batch'={p.batch} is beyond an epoch of this run (0..{per_epoch} steps)"
    # The loop appends one step row per step and one epoch row per finished epoch.
    if len(p.step_rows) != p.step or len(p.epoch_rows) != p.epoch:
        return (f"position fields 'step'={p.step} and 'epoch'={p.epoch} disagree with its {len(p.step_rows)} "
                f"step_rows and {len(p.epoch_rows)} epoch_rows (one per step, one per finished epoch)")
    if within and p.step != p.epoch * per_epoch + p.batch:
        return (f"position field 'step'={p.step} disagrees with epoch {p.epoch} x {per_epoch} steps + batch "
                f"{p.batch}; the run has {train.epochs * per_epoch} steps in all")
    return None


def _optimizer_slots(train: TrainConfig) -> tuple[str, ...]:
    """The per-parameter state slots the optimizer keeps once it has taken a step (torch.optim's names)."""
    if train.optimizer == "sgd":
        return ("momentum_buffer",) if train.momentum > 0 else ()
    return ("exp_avg", "exp_avg_sq")


def _optimizer_problem(state: dict[str, np.ndarray], spec: ModelSpec, train: TrainConfig, step: int) -> str | None:
    """What is wrong with a checkpoint's optimizer state for this optimizer after ``step`` steps, or None.

    Missing state is refused rather than restarted from zero: momentum or Adam's moments would silently reset.
    """
    shapes = spec.param_shapes()
    expected = {f"{name}.{slot}": shapes[name] for slot in _optimizer_slots(train)
                for name in spec.trainable_names()} if step else {}
    counted = train.optimizer != "sgd" and step > 0  # Adam and AdamW also keep their step count
    wanted = set(expected) | ({"step"} if counted else set())
    missing, extra = sorted(wanted - set(state)), sorted(set(state) - wanted)
    if missing:
        return (f"optimizer state lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
                f"({len(missing)} of {len(wanted)}), which {train.optimizer} (momentum {train.momentum:g}) keeps "
                f"after step {step}; resuming without it would restart the optimizer from zero")
    if extra:
        return (f"optimizer state holds {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}, which "
                f"{train.optimizer} (momentum {train.momentum:g}) does not keep at step {step}")
    if not all(isinstance(value, np.ndarray) for value in state.values()):  # a zip member that is no .npy
        return "optimizer state holds a member that is not an array"
    for key, shape in expected.items():
        value = state[key]
        if value.dtype.kind != "f" or value.shape != shape or not np.isfinite(value).all():
            return f"optimizer/{key} is {value.dtype} {value.shape}, expected finite floats of shape {shape}"
    if counted:
        value = state["step"]
        if value.shape != () or value.dtype.kind not in "fiu" or float(value) != step:
            return f"optimizer/step is {value.dtype} {value.shape} {str(value)[:20]}, expected the scalar {step}"
    return None


def read_checkpoint(path: Path, spec: ModelSpec, config_hash: str, train: TrainConfig | None = None,
                    per_epoch: int | None = None) -> Checkpoint:
    """Load and validate a checkpoint written by ``write_checkpoint`` for this spec and config.

    Args:
        path: the checkpoint.npz.
        spec: the model its weights and optimizer state must fit.
        config_hash: the run's config hash, which the checkpoint must record.
        train: the run's training settings; with ``per_epoch``, the position must lie within the run and the
            optimizer state must hold every slot the optimizer keeps (None: only their own consistency).
        per_epoch: steps in one epoch of this run's training set.

    Raises:
        HarnessError: missing, unreadable or corrupt file, one made with another config, or a field that is out
            of range, of the wrong type or shape, or inconsistent with the run or with the others.
    """
    path = Path(path)
    arrays = _read_checkpoint_arrays(path, spec)
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        position = Position(**meta["position"])
        saved_hash = meta["config_hash"]
        if not isinstance(saved_hash, str):
            raise TypeError(f"config_hash is a {type(saved_hash).__name__}")
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise HarnessError(f"checkpoint {path} has no valid record of its position ({error}); "
                           "start the run again") from None
    if saved_hash != config_hash:
        raise HarnessError(f"checkpoint {path} was made with config {saved_hash[:12]}, the run folder says "
                           f"{config_hash[:12]}; resume only the run folder the checkpoint came from")
    groups = {group: {name.split("/", 1)[1]: value for name, value in arrays.items()
                      if name.startswith(f"{group}/")} for group in _GROUPS}
    check_weights(spec, groups["weights"], f"checkpoint {path}", finite=True)
    problem = _position_problem(position, train, per_epoch) or (
        _optimizer_problem(groups["optimizer"], spec, train, position.step) if train is not None else None)
    if problem:
        raise HarnessError(f"checkpoint {path}: {problem}; it was edited or damaged, so the run cannot continue "
                           "from it: start the run again with `harness run`")
    return Checkpoint(saved_hash, position, groups["weights"], groups["optimizer"], groups["rng"])
