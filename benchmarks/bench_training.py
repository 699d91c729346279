"""Kept so that old commands still work: forwards its arguments to ``harness bench``.

    python benchmarks/bench_training.py --backends pytorch,mindspore --model lenet5 --dataset mnist --repeats 3

The benchmark itself lives in ``harness/bench.py`` (the bare loops in ``backends/<name>/bare.py``).
The old flags ``--model`` and ``--batch-size`` mean ``--models`` and ``--batch-sizes``; ``--epochs`` is
gone (``harness bench`` times a fixed number of steps: ``--steps``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.cli import main  # noqa: E402

RENAMED = {"--model": "--models", "--batch-size": "--batch-sizes"}

if __name__ == "__main__":
    sys.exit(main(["bench", *(RENAMED.get(arg, arg) for arg in sys.argv[1:])]))
