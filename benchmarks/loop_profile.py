"""Where one step of the harness loop goes beyond the framework's own step, part by part.

    python benchmarks/loop_profile.py                        # lenet5 and simple-cnn, both backends, batch 1,64,256
    python benchmarks/loop_profile.py --threads 1 --models lenet5 --batch-sizes 64

Each part is timed on its own, step after step, inside a real training sequence (so its caches are as in a run),
median microseconds over ``--steps`` steps:

- ``gather``: the next batch of ``Dataset.train_batches`` (epoch order; numpy fancy index of a block of batches, dealt
  out as views);
- ``augment``: ``random_crop_flip`` on it (what ``--augment`` adds; the 3-channel recipes use it);
- ``convert``: the trainer's ``preparer()`` (numpy -> framework input; MindSpore's Dropout masks included, and
  PyTorch's Dropout noise on a CPU: in C where ``bernoulli.c`` is built, else only where its threads leave a core
  free);
- ``masks``: MindSpore's host-drawn Dropout masks, drawn again on their own after the step (``convert`` holds them
  too; PyTorch without ``bernoulli.c``, on every core, draws its noise inside the step);
- ``step``: the trainer's ``step_prepared`` (learning rate, forward, backward, update, loss read);
- ``loop+gather``: ``train`` with a trainer that does nothing, per step: the gather above plus the loop's own
  bookkeeping (loss check, step row, progress), with no framework step between them;
- ``evaluation`` and ``checkpoint``: once per epoch in a run (the 10,000 test images; the checkpoint file),
  spread over the steps of one MNIST epoch at that batch size.

It prints a markdown table and the load other processes put on the machine before it started.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.backend import get_backend  # noqa: E402
from harness.bench.measure import SETTINGS, load_bench_data, make_plan  # noqa: E402
from harness.config import build_config  # noqa: E402
from harness.data.batches import random_crop_flip  # noqa: E402
from harness.model.resolve import initial_weights  # noqa: E402
from harness.training import loop  # noqa: E402
from harness.training.checkpoint import Checkpoint, Position, write_checkpoint  # noqa: E402
from harness.training.schedule import decayed_names  # noqa: E402

PARTS = ("gather", "augment", "convert", "masks", "step", "loop+gather", "evaluation", "checkpoint")


class _Idle:
    """A trainer and backend that do nothing: what is left of ``train`` is the loop's own work."""

    name = "idle"

    def make_trainer(self, *args):
        return self

    def preparer(self):
        return lambda x, y: (x, y)

    def step_prepared(self, prepared, learning_rate: float) -> float:
        return 0.5

    def prepare_ahead(self) -> bool:
        return False

    def prepared_bytes(self, batch_size: int) -> int:
        return 0

    def predict(self, model, x, batch_size):
        return np.zeros((len(x), 10), np.float32)


def _median_us(seconds: list[float]) -> float:
    return 1e6 * statistics.median(seconds)


def profile(backend_name: str, model: str, batch_size: int, steps: int, data_dir: Path | None) -> dict[str, float]:
    """Median microseconds per step of each part (``PARTS``) for one backend, model and batch size."""
    backend = get_backend(backend_name)
    spec, data = load_bench_data(model, "mnist", data_dir, 8192, SETTINGS["seed"])
    config = build_config({"model": model, "backend": backend_name, "batch_size": batch_size, "epochs": 1,
                           **SETTINGS})
    handle = backend.build(spec, "cpu")
    backend.set_weights(handle, initial_weights(spec.name, spec, SETTINGS["seed"]))
    trainer = backend.make_trainer(handle, config.train, decayed_names(spec, config.train.decay_scope))
    times: dict[str, list[float]] = {part: [] for part in PARTS}
    batches = data.train_batches(batch_size, SETTINGS["seed"], 0)
    prepare, rng, fill = trainer.preparer(), np.random.default_rng(1), np.zeros(spec.input_shape[0], np.float32)
    clock = time.perf_counter
    for index in range(steps + 5):  # the first 5 compile and warm up
        started = clock()
        xb, yb = next(batches)
        gathered = clock()
        random_crop_flip(xb, rng, fill)
        augmented = clock()
        prepared = prepare(xb, yb)
        converted = clock()
        trainer.step_prepared(prepared, SETTINGS["learning_rate"])
        stepped = clock()
        masks = getattr(prepared, "masks", ())
        if index >= 5:
            times["gather"].append(gathered - started)
            times["augment"].append(augmented - gathered)
            times["convert"].append(converted - augmented)
            times["step"].append(stepped - converted)
            if masks:  # drawn again with the same keys: the share of convert that is the masks
                from harness.backends.mindspore.trainer import mask_arrays  # here: only a MindSpore trainer has masks

                again = clock()
                mask_arrays(spec, SETTINGS["seed"], prepared.dropout_step, len(xb))
                times["masks"].append(clock() - again)
    plan = make_plan(len(data.train_x), batch_size, 2000 if batch_size == 1 else 400)
    subset = dataclasses.replace(data, train_x=data.train_x[:plan.images], train_y=data.train_y[:plan.images],
                                 test_x=data.test_x[:10], test_y=data.test_y[:10])
    idle_config = build_config({"model": model, "backend": backend_name, "batch_size": batch_size,
                                "epochs": plan.epochs, **SETTINGS})
    for _ in range(3):
        seconds = loop.train(_Idle(), None, spec, subset, idle_config, quiet=True).train_seconds
        times["loop+gather"].append(seconds / plan.steps)
    test_x, test_y = _mnist_sized_test_set(data)
    steps_per_epoch = 60_000 // batch_size
    for _ in range(3):
        started = clock()
        loop.score_test_set(backend, handle, test_x, test_y)
        times["evaluation"].append((clock() - started) / steps_per_epoch)
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(3):  # as the loop saves: the weights checked finite, the optimizer and RNG state, the file
            started = clock()
            weights = backend.get_weights(handle)
            assert all(np.isfinite(value).all() for value in weights.values())
            write_checkpoint(Path(folder), Checkpoint(config.config_hash, Position(), weights, trainer.state(),
                                                      backend.rng_state(handle)))
            times["checkpoint"].append((clock() - started) / steps_per_epoch)
    return {part: (_median_us(values) if values else 0.0) for part, values in times.items()}


def _mnist_sized_test_set(data) -> tuple[np.ndarray, np.ndarray]:
    """10,000 test images, as MNIST's test split (the pool's own repeated where it has fewer)."""
    repeats = -(-10_000 // len(data.test_x))
    return np.tile(data.test_x, (repeats, 1, 1, 1))[:10_000], np.tile(data.test_y, repeats)[:10_000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="pytorch,mindspore")
    parser.add_argument("--models", default="lenet5,simple-cnn")
    parser.add_argument("--batch-sizes", default="1,64,256")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("HARNESS_DATA_DIR"))
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f} (1-minute average); threads: {args.threads or 'default'}")
    print("| backend | model | batch | " + " | ".join(PARTS) + " |")
    print("|---|---|---:|" + "---:|" * len(PARTS))
    for backend_name in args.backends.split(","):
        if args.threads is not None:
            get_backend(backend_name).set_threads(args.threads)
        for model in args.models.split(","):
            for batch_size in map(int, args.batch_sizes.split(",")):
                row = profile(backend_name, model, batch_size, args.steps, args.data_dir)
                cells = " | ".join(f"{row[part]:,.1f}" for part in PARTS)
                print(f"| {backend_name} | {model} | {batch_size} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
