"""Resume checkpoints: everything a run needs to continue as if it had never stopped.

A checkpoint is one ``checkpoint.npz`` in the run folder (no pickled objects):
canonical weights, optimizer state, the framework RNG state (dropout masks),
and a JSON record of the loop's position and metric rows. The batch order and
augmentation draws need no saved generator: they are fixed by (seed, epoch)
(``harness.data.batches``), so the position (epoch, batches done) restores them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

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


def _read_checkpoint_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        return read_arrays(path)
    except FileNotFoundError:
        raise HarnessError(f"no checkpoint {path}: the run stopped before its first checkpoint; "
                           "start it again with `harness run`") from None
    except READ_ERRORS as error:
        raise HarnessError(f"cannot read checkpoint {path} ({error}); expected a checkpoint.npz "
                           "written by harness run; start the run again") from None


def read_checkpoint(path: Path, spec: ModelSpec, config_hash: str) -> Checkpoint:
    """Load and validate a checkpoint written by ``write_checkpoint`` for this spec and config.

    Raises:
        HarnessError: missing, unreadable or corrupt file, or one made with another config.
    """
    path = Path(path)
    arrays = _read_checkpoint_arrays(path)
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
    check_weights(spec, groups["weights"], str(path))
    return Checkpoint(saved_hash, position, groups["weights"], groups["optimizer"], groups["rng"])
