"""The training loop, owned by the harness so every backend runs the same one.

Batches, their order and augmentation come from ``harness.data``; the learning
rate of each step from ``harness.training.schedule``; the backend only takes the step.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..backend import Backend, Trainer
from ..config import RunConfig
from ..data.batches import steps_per_epoch
from ..data.fit import Dataset
from ..errors import HarnessError, RunInterrupted
from ..evaluators.base import EVAL_BATCH_SIZE
from ..model.spec import ModelSpec
from ..progress import Progress, format_seconds
from ..reference.losses import accuracy, mean_cross_entropy
from .checkpoint import CHECKPOINT_NAME, Checkpoint, Position
from .schedule import decayed_names, learning_rates


# Steps at the start of a run that compile graphs and warm caches: the steady-state speed leaves them out.
WARMUP_STEPS = 5


@dataclass
class TrainResult:
    """What a finished loop hands back: metric rows and the final test logits."""

    step_rows: list[dict] = field(default_factory=list)
    epoch_rows: list[dict] = field(default_factory=list)
    test_logits: np.ndarray | None = None
    train_seconds: float = 0.0
    warmup_seconds: float = 0.0  # of the first epoch, in its first WARMUP_STEPS steps
    warmup_images: int = 0

    def first_epoch_images_per_s(self) -> float:
        """Training speed of the first epoch, graph compilation and warm-up included."""
        return self.epoch_rows[0]["images_per_s"]

    def steady_images_per_s(self) -> float:
        """Training speed without the warm-up: the epochs after the first, or for a one-epoch run the first
        epoch without its first ``WARMUP_STEPS`` steps (where too few steps are left: the whole epoch)."""
        later = self.epoch_rows[1:]
        if later:
            return sum(r["images_per_s"] * r["seconds"] for r in later) / sum(r["seconds"] for r in later)
        first = self.epoch_rows[0]
        images = first["images_per_s"] * first["seconds"] - self.warmup_images
        seconds = first["seconds"] - self.warmup_seconds
        return images / seconds if self.warmup_images and images > 0 and seconds > 0 else first["images_per_s"]


def score_test_set(backend: Backend, model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Test loss, accuracy and logits, eval mode."""
    logits = backend.predict(model, x, EVAL_BATCH_SIZE)
    return mean_cross_entropy(logits, y), accuracy(logits, y), logits


@dataclass
class Checkpointing:
    """When the loop saves its state, and where (``save`` writes a Checkpoint and returns its path)."""

    save: Callable[[Checkpoint], Path]
    config_hash: str
    every_steps: int = 0  # 0: only at the end of each epoch
    last_saved: str = "none yet (nothing was saved before this step)"


class _SigintLatch:
    """The first Ctrl-C asks the loop to stop after the current step; a second one stops at once."""

    def __enter__(self) -> "_SigintLatch":
        self.requested, self._previous = False, None
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def resumed_from(checkpoint: Checkpoint) -> str:
    """``Checkpointing.last_saved`` of a resumed run before it saves: the checkpoint an earlier run of this
    folder wrote, which stays on disk (never overwritten with NaN/Inf weights)."""
    return (f"{CHECKPOINT_NAME} of an earlier run of this folder (step {checkpoint.position.step}, "
            "the one this run resumed from)")


def _diverged(what: str, step: int, saving: Checkpointing | None) -> HarnessError:
    kept = f"; the last good checkpoint is {saving.last_saved}, kept" if saving else ""
    return HarnessError(f"training diverged: {what} at step {step}{kept}; lower --learning-rate "
                        "(or check the data) and start the run again")


class _Loop:
    """One training run's moving parts; ``position`` is everything a checkpoint must restore."""

    def __init__(self, backend: Backend, model: Any, trainer: Trainer, saving: Checkpointing | None) -> None:
        self.backend, self.model, self.trainer, self.saving = backend, model, trainer, saving
        self.position = Position()

    def restore(self, checkpoint: Checkpoint) -> None:
        self.backend.set_weights(self.model, checkpoint.weights)
        self.trainer.load_state(checkpoint.optimizer)
        self.backend.set_rng_state(self.model, checkpoint.rng)
        self.position = checkpoint.position
        if self.saving is not None:  # until this run saves, the good checkpoint on disk is the one resumed from
            self.saving.last_saved = resumed_from(checkpoint)

    def save(self) -> None:
        if self.saving is None:
            return
        weights = self.backend.get_weights(self.model)
        bad = [name for name, value in weights.items() if not np.isfinite(value).all()]
        if bad:
            raise _diverged(f"{bad[0]} holds NaN/Inf", self.position.step, self.saving)
        state = Checkpoint(self.saving.config_hash, self.position, weights, self.trainer.state(),
                           self.backend.rng_state(self.model))
        path = self.saving.save(state)
        self.saving.last_saved = f"{path} (step {self.position.step})"

    def step(self, xb: np.ndarray, yb: np.ndarray, epoch: int, learning_rate: float) -> float:
        loss = self.trainer.step(xb, yb, learning_rate)
        p = self.position
        if not np.isfinite(loss):
            raise _diverged(f"loss is {loss}", p.step + 1, self.saving)
        p.step_rows.append({"epoch": epoch + 1, "step": p.step + 1, "loss": loss, "lr": learning_rate})
        p.step, p.batch, p.epoch_images = p.step + 1, p.batch + 1, p.epoch_images + len(yb)
        return loss


def _epoch_row(loop: _Loop, dataset: Dataset, seconds: float, learning_rate: float) -> tuple[dict, np.ndarray]:
    p = loop.position
    losses = [row["loss"] for row in p.step_rows if row["epoch"] == p.epoch + 1]
    test_loss, test_acc, logits = score_test_set(loop.backend, loop.model, dataset.test_x, dataset.test_y)
    row = {"epoch": p.epoch + 1, "step": p.step, "train_loss": float(np.mean(losses)), "test_loss": test_loss,
           "test_accuracy": test_acc, "lr": learning_rate, "seconds": seconds, "images_per_s": p.epoch_images / seconds}
    return row, logits


def _interrupt(loop: _Loop) -> RunInterrupted:
    loop.save()
    return RunInterrupted(f"stopped cleanly after step {loop.position.step}; checkpoint "
                          f"{loop.saving.last_saved}")


def _run_epoch(loop: _Loop, dataset: Dataset, config: RunConfig, rates: np.ndarray, latch, progress: Progress) -> None:
    t, p = config.train, loop.position
    per_epoch, every = steps_per_epoch(len(dataset.train_x), t.batch_size), loop.saving.every_steps if loop.saving else 0
    started = time.perf_counter() - p.epoch_seconds
    batches = dataset.train_batches(t.batch_size, t.seed, p.epoch, augment=config.data.augment)
    # Batches already taken are drawn again and dropped: their augmentation draws advance the stream.
    for xb, yb in itertools.islice(batches, p.batch, None):
        loss = loop.step(xb, yb, p.epoch, float(rates[p.step]))
        p.epoch_seconds = time.perf_counter() - started
        if p.epoch == 0 and p.batch == WARMUP_STEPS:
            p.warmup_seconds, p.warmup_images = p.epoch_seconds, p.epoch_images
        progress.update(1, **({"epoch": f"{p.epoch + 1}/{t.epochs}", "loss": f"{loss:.4f}"}
                              if p.batch % 20 == 0 else {}))
        if latch is not None and latch.requested:
            raise _interrupt(loop)
        if every and p.step % every == 0 and p.batch < per_epoch:
            loop.save()


def _epoch_line(row: dict, epochs: int, progress: Progress, done_seconds: float, steps: tuple[int, int]) -> str:
    """``epoch 2/3, loss 0.1234, test accuracy 97.12%, 8,123 images/s, elapsed 12 s, ETA 6.1 s``."""
    done, total = steps
    eta = done_seconds / done * (total - done) if done else 0.0
    return (f"epoch {row['epoch']}/{epochs}, loss {row['train_loss']:.4f}, test accuracy {row['test_accuracy']:.2%}, "
            f"{row['images_per_s']:,.0f} images/s, elapsed {format_seconds(progress.elapsed)}, "
            f"ETA {format_seconds(eta)}")


def train(backend: Backend, model: Any, spec: ModelSpec, dataset: Dataset, config: RunConfig,
          quiet: bool = False, saving: Checkpointing | None = None, resume: Checkpoint | None = None,
          label: str | None = None) -> TrainResult:
    """Train ``model`` for ``config.train.epochs`` and evaluate after each epoch.

    Args:
        backend: the framework backend.
        model: its model handle, already holding the initial weights.
        spec: the model's spec (for the weight decay set).
        dataset: prepared data.
        config: the run's settings.
        quiet: no progress bar and no epoch lines.
        saving: write checkpoints (every epoch and every ``every_steps``), and turn Ctrl-C into
            checkpoint + ``RunInterrupted``; None: no checkpoints, Ctrl-C stops at once.
        resume: continue from this checkpoint instead of step 0.
        label: what the progress bar and the epoch lines say this is (default ``<backend> train``).

    Returns:
        Per-step and per-epoch metric rows and the final test logits.

    Raises:
        HarnessError: the loss or a weight became NaN/Inf (naming the step and the last good checkpoint).
        RunInterrupted: Ctrl-C, after the current step and a checkpoint.
    """
    t = config.train
    rates = learning_rates(t, steps_per_epoch(len(dataset.train_x), t.batch_size))
    loop = _Loop(backend, model, backend.make_trainer(model, t, decayed_names(spec, t.decay_scope)), saving)
    if resume is not None:
        loop.restore(resume)
    p, logits = loop.position, None
    progress = Progress(label or f"{backend.name} train", len(rates), quiet, initial=p.step)
    with (_SigintLatch() if saving else contextlib.nullcontext()) as latch, progress:
        while p.epoch < t.epochs:
            _run_epoch(loop, dataset, config, rates, latch, progress)
            row, logits = _epoch_row(loop, dataset, p.epoch_seconds, float(rates[p.step - 1]))
            p.epoch_rows.append(row)
            p.train_seconds += p.epoch_seconds
            progress.line(_epoch_line(row, t.epochs, progress, p.train_seconds, (p.step, len(rates))))
            p.epoch, p.batch, p.epoch_seconds, p.epoch_images = p.epoch + 1, 0, 0.0, 0
            loop.save()
    if logits is None:  # resumed after the last epoch's checkpoint: nothing left to train
        logits = score_test_set(backend, model, dataset.test_x, dataset.test_y)[2]
    return TrainResult(p.step_rows, p.epoch_rows, logits, p.train_seconds, p.warmup_seconds, p.warmup_images)
