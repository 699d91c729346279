"""What Ray costs a sweep against the local pool, and how much a sweep's pool overlaps its runs.

    python benchmarks/sweep.py                  # its own one-node Ray cluster, on loopback in a network namespace
    python benchmarks/sweep.py --address H:P    # an existing cluster instead (its nodes need this harness)

1. Overhead per run: one sweep (1 config x 3 seeds x 2 backends, no control, synthetic LeNet5), one run in
   flight at a time and every run trained afresh, on the local pool (``--workers 1``) and on Ray (``--workers 1``:
   one task in flight; ``--storage ship``, so every run folder travels through the object store). Per run: the
   driver's wall time less the run's own time in its worker (scheduling, worker start, the transfer, checking
   and unpacking it), and the bytes shipped.
2. Overlap: a 2-model x 5-seed x 2-backend synthetic sweep (20 runs, no control) on the local pool with its
   default workers: the sweep's wall time against the sum of its runs' own times.

It prints both, and the load other processes put on the machine before it started (a shared machine's timings
say how busy it was); it writes ``sweep_bench.csv`` (into ``--out``, else its work folder). Without
``--address`` it starts a Ray head inside ``unshare --net --pid`` with only loopback up (as tests/sweep do), so
nothing listens beyond this machine and the cluster ends with the script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from harness.machine import LoadMeter, cores

ADDRESS = "127.0.0.1:6379"
NAMESPACES = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"]
SMALL = """
control = false
[base]
dataset = "synthetic"
epochs = 2
limit_train = 256
limit_test = 128
[axes]
seed = [0, 1, 2]
backend = ["pytorch", "mindspore"]
"""
MATRIX = """
control = false
[base]
dataset = "synthetic"
epochs = 2
limit_train = 256
limit_test = 128
[axes]
model = ["lenet5", "lenet-tiny"]
seed = [0, 1, 2, 3, 4]
backend = ["pytorch", "mindspore"]
"""


def _sweep(work: Path, name: str, *flags: str) -> tuple[pd.DataFrame, float]:
    """Run ``harness sweep`` on ``<work>/<name>.toml`` afresh; its sweep_runs table and wall seconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness", "sweep", str(work / f"{name}.toml"), "--fresh", "--quiet",
                           "--no-seed-reports", "--out", str(work / f"runs-{name}"),
                           "--reports", str(work / f"rep-{name}"), *flags], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1, 3):
        raise SystemExit(f"harness sweep {name} {' '.join(flags)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return pd.read_csv(work / f"rep-{name}" / "sweep_runs.csv"), wall


def _overhead(runs: pd.DataFrame, executor: str) -> dict:
    extra = runs.wall_seconds - runs.seconds
    return {"measure": "overhead per run", "executor": executor, "runs": len(runs),
            "run_seconds_median": round(runs.seconds.median(), 2), "overhead_seconds_median": round(extra.median(), 3),
            "overhead_seconds_max": round(extra.max(), 3),
            "bytes_shipped_median": runs.bytes_shipped.median() if runs.bytes_shipped.notna().any() else 0}


def measure(work: Path, address: str) -> list[dict]:
    """The two measurements, as rows."""
    (work / "small.toml").write_text(SMALL)
    (work / "matrix.toml").write_text(MATRIX)
    rows = []
    local, _ = _sweep(work, "small", "--workers", "1", "--threads", "1")
    rows.append(_overhead(local, "local"))
    ray, _ = _sweep(work, "small", "--executor", "ray", "--address", address, "--workers", "1", "--threads", "1",
                    "--storage", "ship")
    rows.append(_overhead(ray, "ray"))
    matrix, wall = _sweep(work, "matrix")
    total = float(matrix.seconds.sum())
    rows.append({"measure": "2 models x 5 seeds x 2 backends", "executor": "local", "runs": len(matrix),
                 "wall_seconds": round(wall, 1), "sum_of_run_seconds": round(total, 1),
                 "speedup": round(total / wall, 2)})
    return rows


def _inside(work: Path) -> None:
    """In the namespaces: start a one-node cluster with every core, measure, write the rows."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HARNESS_SWEEP_SCRATCH": str(work / "scratch")}
    os.environ.update(env)
    subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
                    "--port", ADDRESS.split(":")[1], "--num-cpus", str(cores()), "--include-dashboard", "false",
                    "--disable-usage-stats", "--temp-dir", temp], env=env, check=True, capture_output=True)
    try:
        (work / "rows.json").write_text(json.dumps(measure(work, ADDRESS)))
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    # Returning ends this namespace's first process: the kernel then ends the cluster's processes with it.


def main() -> None:
    """Measure, print the table, write sweep_bench.csv."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="an existing Ray cluster (default: start one on loopback)")
    parser.add_argument("--out", type=Path, help="where sweep_bench.csv goes (default: the work folder it prints)")
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)  # the re-run inside the namespaces
    args = parser.parse_args()
    if args.inside:
        _inside(args.inside)
        return
    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    with LoadMeter() as meter:
        time.sleep(5)  # what the machine does without us
    busy = "?" if meter.load.other_cores is None else f"{meter.load.other_cores:.2f}"
    print(f"before: load average {meter.load.load_average_end}, other processes kept {busy} of {meter.load.cores} "
          "cores busy")
    if args.address:
        rows = measure(work, args.address)
    else:
        command = f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} --inside {work}"
        subprocess.run([*NAMESPACES, "sh", "-c", command], check=True, cwd=Path(__file__).resolve().parent.parent)
        rows = json.loads((work / "rows.json").read_text())
    table = pd.DataFrame(rows)
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "sweep_bench.csv", index=False)
    print(table.to_string(index=False))
    print(f"after: load average {os.getloadavg()[0]:.2f}; work folder {work}")


if __name__ == "__main__":
    main()
