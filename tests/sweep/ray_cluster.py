"""The Ray side of tests/sweep/test_sweep.py, run as a script inside its own network and PID namespaces.

    unshare --net --pid --fork --mount-proc --kill-child=SIGKILL \
        sh -c 'ip link set lo up && exec python tests/sweep/ray_cluster.py WORKDIR'

The namespace has only loopback, so Ray registers its nodes at 127.0.0.1 and no traffic leaves the machine
(outside it, Ray 2.60 registers at the network interface's address even when told 127.0.0.1). The script is
the namespace's first process: when it exits, the kernel ends every process left in the namespace, so the
cluster stops even when a step here fails or the test's timeout kills ``unshare``. Before exiting it ends them
itself, one by one by process id (each was started by this script, and no other process lives there).

It starts a head and a second node that declares ``{"NPU": 1}``, then runs, each as ``harness sweep``:
- ``ray.toml`` with ``--executor ray --storage ship`` (run folders come back through the object store);
- ``kill.toml``: a long PyTorch run, whose Ray worker is killed (SIGKILL) once the run has written its first
  checkpoint, and a MindSpore run on ``npu``, which only the second node can take (and which fails there: no
  Ascend here).
It writes WORKDIR/result.json: the nodes' addresses and each command's exit code and output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ADDRESS = "127.0.0.1:6379"
BIN = Path(sys.executable).parent


def _ray(*args: str, env: dict) -> None:
    subprocess.run([str(BIN / "ray"), "start", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                    "--object-store-memory", str(100 * 2**20), "--disable-usage-stats", *args],
                   env=env, check=True, capture_output=True, timeout=180)


def _nodes() -> list[str]:
    import ray

    ray.init(address=ADDRESS, logging_level="ERROR", log_to_driver=False)
    try:
        return sorted(f"{node['NodeManagerAddress']} {json.dumps(node['Resources'], sort_keys=True)}"
                      for node in ray.nodes() if node["Alive"])
    finally:
        ray.shutdown()


def _sweep(workdir: Path, name: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "harness", "sweep", str(workdir / f"{name}.toml"), "--executor", "ray",
            "--address", ADDRESS, "--out", str(workdir / f"runs-{name}"), "--reports", str(workdir / f"rep-{name}"),
            "--quiet", *flags]


def _titles() -> dict[int, str]:
    """pid -> command line of every process in this namespace (its own /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
    return found


def _kill_mid_run(workdir: Path, env: dict) -> dict:
    """Start kill.toml's sweep, SIGKILL the Ray worker of its PyTorch run after its first checkpoint."""
    process = subprocess.Popen(_sweep(workdir, "kill"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    killed, deadline = None, time.monotonic() + 240
    while killed is None and process.poll() is None and time.monotonic() < deadline:
        if list((workdir / "runs-kill").glob("*-pytorch-*/checkpoint.npz")):
            workers = [pid for pid, title in _titles().items()
                       if title.startswith("ray::harness-run") and "pytorch" in title]
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed = workers[0]
        time.sleep(0.02)
    out, err = process.communicate(timeout=400)
    return {"code": process.returncode, "stdout": out, "stderr": err, "killed": killed}


def _end_everything_else() -> None:
    """End every other process of this namespace, by id: the Ray processes this script started."""
    me = os.getpid()
    others = [pid for pid in _titles() if pid != me]
    for pid in others:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in others):
        time.sleep(0.1)
    for pid in others:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # as the namespace's first process, this one reaps its orphans
    except ChildProcessError:
        pass
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def main(workdir: Path) -> None:
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HARNESS_SWEEP_SCRATCH": str(workdir / "scratch")}
    result: dict = {}
    try:
        started = time.monotonic()
        _ray("--head", "--port", ADDRESS.split(":")[1], "--include-dashboard", "false", "--temp-dir", temp, env=env)
        _ray("--address", ADDRESS, "--resources", json.dumps({"NPU": 1}), env=env)
        result["nodes"] = _nodes()
        result["start_seconds"] = time.monotonic() - started
        done = subprocess.run(_sweep(workdir, "ray", "--storage", "ship"), env=env, capture_output=True, text=True,
                              timeout=400)
        result["ray"] = {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        result["kill"] = _kill_mid_run(workdir, env)
    except Exception as error:  # noqa: BLE001 - reported to the test, which fails with it
        detail = getattr(error, "stderr", None) or ""
        result["error"] = f"{type(error).__name__}: {error} {str(detail)[-2000:]}"
    finally:
        _end_everything_else()
        shutil.rmtree(temp, ignore_errors=True)
        (workdir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
