"""The training loop, owned by the harness so every backend runs the same one.

Batches, their order and augmentation come from ``harness.data``; the learning
rate of each step from ``harness.training.schedule``; the backend only takes the step.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import queue
import signal
import threading
import time
from collections.abc import Iterable, Iterator
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
# Batches made ready (gathered, augmented, converted, Dropout masks drawn) on a background thread ahead of the step
# that takes them. One hides that work behind the current step; more would only hold memory (MindSpore's VGG11
# masks at batch 256 are ~150 MB a batch). 0: every batch made on the stepping thread, just before its step.
PREFETCH_BATCHES = 1
# Only batches whose making writes at least this many bytes (images, Dropout noise or masks): only the bulk copies
# and draws run beside the step (numpy and torch release the GIL for them); the rest of making a batch is Python,
# which the stepping thread then waits for at the GIL. PyTorch, one thread, harness/bare in two blocks of 5 repeats:
# LeNet5 at batch 64 (256 KiB of images) 1.010 and 1.005 in line, 1.003 and 1.002 ahead; at batch 256 (1 MiB) 0.999
# and 1.004 in line, 1.004 and 1.019 ahead; simple-cnn at batch 1 (3 KiB of images, 29 KiB of noise) 1.031 and 1.025
# in line, 1.009 and 1.007 ahead. MindSpore's LeNet5 at batch 64 read the same either way.
PREFETCH_MIN_BYTES = 512 * 1024


@dataclass
class TrainResult:
    """What a finished loop hands back: metric rows and the final test logits."""

    step_rows: list[dict] = field(default_factory=list)
    epoch_rows: list[dict] = field(default_factory=list)
    test_logits: np.ndarray | None = None
    train_seconds: float = 0.0
    warmup_seconds: float = 0.0  # of the first epoch, in its first WARMUP_STEPS steps
    warmup_images: int = 0
    test_seconds: float = 0.0  # the evaluation that gave ``test_logits``: the whole test set, EVAL_BATCH_SIZE
    test_warm: bool = False  # an evaluation ran before it in this call (graphs compiled, caches warm)

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


class _Ahead:
    """Iterates ``items`` on a background thread, at most ``depth`` items ahead of the consumer (``depth`` 0: on
    the consumer's thread, as a plain loop). An exception there is raised here, at the item it stopped at; leaving
    the ``with`` block stops the thread, whatever is left unread."""

    _END = object()

    def __init__(self, items: Iterable, depth: int) -> None:
        self._items, self._depth = items, depth
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "_Ahead":
        if self._depth > 0:
            # A daemon: a second Ctrl-C (KeyboardInterrupt at once) must never wait for it.
            self._thread = threading.Thread(target=self._produce, name="harness-batches", daemon=True)
            self._thread.start()
        return self

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._put((item, None)):
                    return
        except BaseException as error:  # handed to the consumer, raised there with its traceback
            self._put((None, error))
            return
        self._put((self._END, None))

    def _put(self, entry: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator:
        if self._thread is None:
            yield from self._items
            return
        while True:
            item, error = self._queue.get()
            if error is not None:
                raise error
            if item is self._END:
                return
            yield item

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        with contextlib.suppress(queue.Empty):  # a producer waiting to put sees the stop within its timeout
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=10)


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

    def ahead_by(self, batch_size: int, image_bytes: int) -> int:
        """How many batches of ``batch_size`` images of ``image_bytes`` each to make ahead on a background thread
        (0: each on this thread, just before its step)."""
        made = batch_size * image_bytes + self.trainer.prepared_bytes(batch_size)
        gains = made >= PREFETCH_MIN_BYTES and self.trainer.prepare_ahead()
        return PREFETCH_BATCHES if gains else 0

    def prepared(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[int, Any]]:
        """(images, the step's inputs) for each host batch, in order; made lazily, wherever it is iterated."""
        # The preparer is taken here, on this thread, before any step of this stream: MindSpore's numbers its
        # Dropout masks from the steps taken so far.
        prepare = self.trainer.preparer()
        return ((len(yb), prepare(xb, yb)) for xb, yb in batches)

    def step(self, images: int, inputs: Any, epoch: int, learning_rate: float) -> float:
        loss = self.trainer.step_prepared(inputs, learning_rate)
        p = self.position
        if not math.isfinite(loss):
            raise _diverged(f"loss is {loss}", p.step + 1, self.saving)
        p.step_rows.append({"epoch": epoch + 1, "step": p.step + 1, "loss": loss, "lr": learning_rate})
        p.step, p.batch, p.epoch_images = p.step + 1, p.batch + 1, p.epoch_images + images
        return loss


def _epoch_row(loop: _Loop, dataset: Dataset, seconds: float, learning_rate: float
               ) -> tuple[dict, np.ndarray, float]:
    """The epoch's metrics row, the test logits, and the seconds the test set took."""
    p = loop.position
    losses = [row["loss"] for row in p.step_rows if row["epoch"] == p.epoch + 1]
    started = time.perf_counter()
    test_loss, test_acc, logits = score_test_set(loop.backend, loop.model, dataset.test_x, dataset.test_y)
    test_seconds = time.perf_counter() - started
    row = {"epoch": p.epoch + 1, "step": p.step, "train_loss": float(np.mean(losses)), "test_loss": test_loss,
           "test_accuracy": test_acc, "lr": learning_rate, "seconds": seconds, "images_per_s": p.epoch_images / seconds}
    return row, logits, test_seconds


def _interrupt(loop: _Loop) -> RunInterrupted:
    loop.save()
    return RunInterrupted(f"stopped cleanly after step {loop.position.step}; checkpoint "
                          f"{loop.saving.last_saved}")


def _run_epoch(loop: _Loop, dataset: Dataset, config: RunConfig, rates: np.ndarray, latch, progress: Progress) -> None:
    t, p = config.train, loop.position
    per_epoch, every = steps_per_epoch(len(dataset.train_x), t.batch_size), loop.saving.every_steps if loop.saving else 0
    started = time.perf_counter() - p.epoch_seconds
    batches = dataset.train_batches(t.batch_size, t.seed, p.epoch, augment=config.data.augment)
    # Batches already taken are drawn again and dropped: their augmentation draws advance the stream. The next
    # batch is made on a background thread while the current step runs, where that gains (``_Loop.ahead_by``).
    ahead_by = loop.ahead_by(t.batch_size, dataset.train_x[:1].nbytes)
    with _Ahead(loop.prepared(itertools.islice(batches, p.batch, None)), ahead_by) as ahead:
        for images, inputs in ahead:
            loss = loop.step(images, inputs, p.epoch, float(rates[p.step]))
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
    p, logits, evaluations, test_seconds = loop.position, None, 0, 0.0
    progress = Progress(label or f"{backend.name} train", len(rates), quiet, initial=p.step)
    with (_SigintLatch() if saving else contextlib.nullcontext()) as latch, progress:
        while p.epoch < t.epochs:
            _run_epoch(loop, dataset, config, rates, latch, progress)
            row, logits, test_seconds = _epoch_row(loop, dataset, p.epoch_seconds, float(rates[p.step - 1]))
            evaluations += 1
            p.epoch_rows.append(row)
            p.train_seconds += p.epoch_seconds
            progress.line(_epoch_line(row, t.epochs, progress, p.train_seconds, (p.step, len(rates))))
            p.epoch, p.batch, p.epoch_seconds, p.epoch_images = p.epoch + 1, 0, 0.0, 0
            loop.save()
    if logits is None:  # resumed after the last epoch's checkpoint: nothing left to train
        started = time.perf_counter()
        logits = score_test_set(backend, model, dataset.test_x, dataset.test_y)[2]
        test_seconds, evaluations = time.perf_counter() - started, 1
    return TrainResult(p.step_rows, p.epoch_rows, logits, p.train_seconds, p.warmup_seconds, p.warmup_images,
                       test_seconds, evaluations > 1)
