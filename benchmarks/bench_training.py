"""Training throughput: the harness loop against a bare loop of the same framework, side by side.

    python benchmarks/bench_training.py [--backends pytorch,mindspore] [--model lenet5] [--dataset mnist]
                                        [--batch-size 64] [--epochs 1] [--repeats 3]

Runs alternate (harness, bare, harness, bare, ...) so a noisy machine hurts both
alike; the median of the repeats is reported. Same model, same initial weights,
same data; the harness figure excludes its per-epoch evaluation.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.backend import get_backend  # noqa: E402
from harness.config import build_config  # noqa: E402
from harness.loop import train  # noqa: E402
from harness.runner import load_data  # noqa: E402
from harness.weights import init_weights  # noqa: E402


def harness_images_per_s(backend, spec, dataset, config) -> float:
    model = backend.build(spec, "cpu")
    backend.set_weights(model, init_weights(spec, config.train.seed))
    result = train(backend, model, spec, dataset, config, quiet=True)
    return config.train.epochs * len(dataset.train_y) / result.train_seconds


def bare_images_per_s(name: str, backend, spec, dataset, config) -> float:
    bare = importlib.import_module(f"bare_{name}")
    model = backend.build(spec, "cpu")
    backend.set_weights(model, init_weights(spec, config.train.seed))
    return bare.bare_train(model, dataset.train_x, dataset.train_y, config.train.batch_size, config.train.epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="pytorch")
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = build_config({"model": args.model, "dataset": args.dataset, "batch_size": args.batch_size,
                           "epochs": args.epochs, "optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9})
    spec, dataset = load_data(config, None)
    print(f"{args.model} on {args.dataset} ({len(dataset.train_y)} images), batch {args.batch_size}, "
          f"{args.epochs} epoch(s) x {args.repeats} repeats")
    for name in args.backends.split(","):
        backend = get_backend(name)
        harness_runs, bare_runs = [], []
        for _ in range(args.repeats):
            harness_runs.append(harness_images_per_s(backend, spec, dataset, config))
            bare_runs.append(bare_images_per_s(name, backend, spec, dataset, config))
        h, b = statistics.median(harness_runs), statistics.median(bare_runs)
        print(f"{name:10s} harness {h:9,.0f} images/s  bare {b:9,.0f} images/s  harness/bare {h / b:.3f}  "
              f"(harness runs {[round(v) for v in harness_runs]}, bare runs {[round(v) for v in bare_runs]})")


if __name__ == "__main__":
    main()
