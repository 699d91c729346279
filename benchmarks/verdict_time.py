"""Time to a verdict: `harness compare` on its defaults with full MNIST, wall time and where it goes.

    HARNESS_DATA_DIR=/path/to/datasets python benchmarks/verdict_time.py OUT_FOLDER

It runs ``harness compare --dataset mnist --fresh --quiet`` (LeNet5, 3 epochs, both backends and the PyTorch
control, every check, the reports) into OUT_FOLDER, with inclusive timers around the public functions each
phase goes through, and prints the wall time, the load other processes put on the machine, and one line per
phase: seconds and calls. ``execute`` less its ``load_data`` and ``train`` is the run's setup and artefacts (the
model built, weights.npz, the native checkpoint, the ONNX export and its check in ONNX Runtime); ``build_report``
holds the same-weights checks (the float64 reference, native and ONNX Runtime evaluations).
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import harness  # noqa: E402

# An editable install maps harness.backends to the checkout it was made from (pyproject.toml's package-dir): this
# checkout's own backends/ instead, so that a worktree of another commit is timed with that commit's backends.
_spec = importlib.util.spec_from_file_location("harness.backends", ROOT / "backends" / "__init__.py")
harness.backends = sys.modules["harness.backends"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness.backends)

from harness.cli.main import main as harness_main  # noqa: E402
from harness.compare import session  # noqa: E402
from harness.evaluators import float64, native, onnxrt  # noqa: E402
from harness.training import loop, run  # noqa: E402

SECONDS: dict[str, float] = collections.defaultdict(float)
CALLS: collections.Counter = collections.Counter()


def _timed(owner, name: str, label: str) -> None:
    function = getattr(owner, name)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SECONDS[label] += time.perf_counter() - started
            CALLS[label] += 1

    setattr(owner, name, wrapper)


PHASES = [  # (where the name is looked up at call time, name, label); indented labels are parts of the one above
    (session, "execute", "training runs (execute)"),
    (run, "load_data", "  data read and prepared (load_data)"),
    (run, "train", "  training loop (train)"),
    (loop, "score_test_set", "    per-epoch test-set evaluation"),
    (session, "build_report", "checks (build_report)"),
    (session, "load_data", "  data read and prepared again (load_data)"),
    (float64.Float64Evaluator, "logits", "  float64 reference"),
    (native.NativeEvaluator, "logits", "  native evaluations"),
    (onnxrt.OnnxEvaluator, "logits", "  ONNX Runtime evaluations"),
    (session, "write", "reports (write)"),
]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("verdict-time")
    for owner, name, label in PHASES:
        _timed(owner, name, label)
    load_before = os.getloadavg()
    started = time.perf_counter()
    code = harness_main(["compare", "--dataset", "mnist", "--out", str(out / "runs"), "--reports",
                         str(out / "reports"), "--fresh", "--quiet"])
    wall = time.perf_counter() - started
    print(f"exit {code}, wall {wall:.1f} s, load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    for _, _, label in PHASES:
        if CALLS[label]:
            print(f"{SECONDS[label]:8.2f} s  x{CALLS[label]:<3d} {label}")


if __name__ == "__main__":
    main()
