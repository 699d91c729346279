"""The training loop, owned by the harness so every backend runs the same one.

Batches, their order and augmentation come from ``harness.data``; the learning
rate of each step from ``harness.schedule``; the backend only takes the step.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from .backend import Backend
from .config import RunConfig
from .data import Dataset, steps_per_epoch
from .errors import HarnessError
from .metrics import accuracy, cross_entropy
from .schedule import decayed_names, learning_rates
from .spec import ModelSpec

EVAL_BATCH_SIZE = 1000


@dataclass
class TrainResult:
    """What a finished loop hands back: metric rows and the final test logits."""

    step_rows: list[dict] = field(default_factory=list)
    epoch_rows: list[dict] = field(default_factory=list)
    test_logits: np.ndarray | None = None
    train_seconds: float = 0.0


def evaluate(backend: Backend, model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Test loss, accuracy and logits, eval mode."""
    logits = backend.predict(model, x, EVAL_BATCH_SIZE)
    return cross_entropy(logits, y), accuracy(logits, y), logits


def _progress(total: int, epoch: int, epochs: int, quiet: bool) -> tqdm:
    enabled = not quiet and sys.stderr.isatty()
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="step", leave=False,
                disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def _check_finite(loss: float, step: int) -> None:
    if not np.isfinite(loss):
        raise HarnessError(f"training diverged: loss is {loss} at step {step}; lower --learning-rate or check the data")


def train(backend: Backend, model: Any, spec: ModelSpec, dataset: Dataset, config: RunConfig,
          quiet: bool = False, on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train ``model`` for ``config.train.epochs`` and evaluate after each epoch.

    Args:
        backend: the framework backend.
        model: its model handle, already holding the initial weights.
        spec: the model's spec (for the weight decay set).
        dataset: prepared data.
        config: the run's settings.
        quiet: no progress bar.
        on_epoch: called with each epoch row as soon as it exists.

    Returns:
        Per-step and per-epoch metric rows and the final test logits.
    """
    t = config.train
    per_epoch = steps_per_epoch(len(dataset.train_x), t.batch_size)
    rates = learning_rates(t, per_epoch)
    trainer = backend.make_trainer(model, t, decayed_names(spec, t.decay_scope))
    result, step = TrainResult(), 0
    for epoch in range(t.epochs):
        started, seen, losses = time.perf_counter(), 0, []
        with _progress(per_epoch, epoch, t.epochs, quiet) as bar:
            for xb, yb in dataset.train_batches(t.batch_size, t.seed, epoch, augment=config.data.augment):
                loss = trainer.step(xb, yb, float(rates[step]))
                _check_finite(loss, step)
                losses.append(loss)
                result.step_rows.append({"epoch": epoch + 1, "step": step + 1, "loss": loss, "lr": rates[step]})
                step, seen = step + 1, seen + len(yb)
                bar.update(1)
                if bar.n % 20 == 0:
                    bar.set_postfix(loss=f"{loss:.4f}")
        seconds = time.perf_counter() - started
        result.train_seconds += seconds
        test_loss, test_acc, result.test_logits = evaluate(backend, model, dataset.test_x, dataset.test_y)
        row = {"epoch": epoch + 1, "step": step, "train_loss": float(np.mean(losses)), "test_loss": test_loss,
               "test_accuracy": test_acc, "lr": float(rates[step - 1]), "seconds": seconds,
               "images_per_s": seen / seconds}
        result.epoch_rows.append(row)
        if on_epoch:
            on_epoch(row)
    return result
