"""`harness sweep` end to end on a 2-seed x 2-backend LeNet5 sweep on synthetic data: locally, again (training
nothing), and on a real Ray cluster (a head and a node with an NPU) on loopback, where a killed worker is
retried and resumes. One sweep per executor and one cluster for the whole module: Ray takes seconds to start."""

from __future__ import annotations

import importlib.util
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.cli.main import main
from tests.support import REPO_ROOT

BASE = """
[base]
dataset = "synthetic"
epochs = 1
limit_train = 128
limit_test = 64
batch_size = 32
[axes]
seed = [0, 1]
backend = ["pytorch", "mindspore"]
"""
# Long enough (10 epochs of 4 steps) that the PyTorch run is still going when its worker is killed after the
# first epoch's checkpoint; MindSpore on npu asks Ray for the NPU only the second node has, and fails there.
KILL = """
control = false
[base]
dataset = "synthetic"
epochs = 10
limit_train = 128
limit_test = 64
batch_size = 32
[axes]
backend = ["pytorch", "mindspore"]
[devices]
mindspore = "npu"
"""
HELPER = Path(__file__).with_name("ray_cluster.py")
NAMESPACES = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"]


def _sweep(workdir: Path, name: str, *flags: str) -> int:
    return main(["sweep", str(workdir / f"{name}.toml"), "--out", str(workdir / f"runs-{name}"),
                 "--reports", str(workdir / f"rep-{name}"), *flags])


def _runs(folder: Path) -> dict[str, Path]:
    """``<backend>-<hash8>`` (and ``control/...``) -> run folder: how two sweeps' runs of one config meet."""
    found = {}
    for run_json in sorted(folder.glob("**/run.json")):
        name = run_json.parent.name.split("-", 2)[2]  # drop the timestamp
        found[("control/" if run_json.parent.parent.name == "control" else "") + name.split("-", 1)[1]] = \
            run_json.parent
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "local.toml").write_text("control = true\n" + BASE)
    (folder / "ray.toml").write_text("control = false\n" + BASE)
    (folder / "kill.toml").write_text(KILL)
    (folder / "kill-local.toml").write_text(KILL.replace('["pytorch", "mindspore"]', '["pytorch"]'))
    return folder


@pytest.fixture(scope="module")
def ray_side(workdir):
    """The Ray side, started first as a background process: a cluster mostly waits while it starts and stops, so it
    runs beside the local sweep. Yields the process, or why there is none (the Ray tests then skip)."""
    if importlib.util.find_spec("ray") is None:
        yield "Ray is an optional extra: pip install -c constraints.txt '.[ray]'"
        return
    probe = subprocess.run([*NAMESPACES, "true"], capture_output=True, text=True)
    if probe.returncode:
        yield (f"unshare is not permitted here ({probe.stderr.strip()}): the Ray tests keep the cluster in a network "
               "namespace that has only loopback")
        return
    command = f"ip link set lo up && exec {sys.executable} {HELPER} {workdir}"
    with open(workdir / "ray.log", "w") as log:
        process = subprocess.Popen([*NAMESPACES, "sh", "-c", command], cwd=REPO_ROOT, stdout=log,
                                   stderr=subprocess.STDOUT)
    yield process
    if process.poll() is None:  # a test failed before waiting: --kill-child ends the namespace with unshare
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def local(workdir, both_backends, ray_side) -> int:
    """The local sweep: 2 workers of 1 thread, controls included (6 runs)."""
    return _sweep(workdir, "local", "--workers", "2", "--threads", "1", "--quiet")


def test_a_local_sweep_has_a_row_per_config_and_backend(workdir, local):
    assert local in (0, 3)  # PASS, or INCONCLUSIVE: one epoch on 128 images teaches LeNet5 little
    reports = workdir / "rep-local"
    runs = pd.read_csv(reports / "sweep_runs.csv")
    assert len(runs) == 6 and set(runs.status) == {"completed"} and set(runs.how) == {"trained"}
    table = pd.read_csv(reports / "sweep.csv")
    assert list(zip(table.backend, table.role)) == [("pytorch", "run"), ("mindspore", "run"), ("pytorch", "control")]
    assert set(table.seeds) == {2} and set(table.seed_list) == {"0 1"} and set(table.model) == {"lenet5"}
    mine = runs[(runs.backend == "mindspore")]
    assert table.accuracy_mean[1] == pytest.approx(mine.test_accuracy.mean())
    assert table.accuracy_std[1] == pytest.approx(mine.test_accuracy.std(ddof=1))
    pairs = pd.read_csv(reports / "sweep_pairs.csv")
    assert len(pairs) == 1 and (pairs.backend_a[0], pairs.backend_b[0], pairs.seeds[0]) == ("pytorch", "mindspore", 2)
    assert pairs.verdict[0] in ("PASS", "INCONCLUSIVE") and pairs.checks_failed[0] == 0
    seeds = pd.read_csv(reports / "sweep_seeds.csv")
    assert list(seeds.seed) == [0, 1] and (seeds.checks > 0).all() and (seeds.checks_failed == 0).all()
    assert seeds.control_top1_agree.notna().all()  # each seed's trained pair was judged against its control
    for link in seeds.report:
        assert (reports / link).is_file()  # each seed's own compare report
    summary = (reports / "summary.md").read_text()
    assert "## Pairs of backends, judged across seeds" in summary and "MLPerf" in summary
    assert (reports / "sweep.png").stat().st_size > 10_000


def test_a_second_sweep_trains_nothing(workdir, local, capsys):
    before = sorted((workdir / "runs-local").rglob("*"))
    assert _sweep(workdir, "local", "--workers", "2", "--threads", "1") == local
    err = capsys.readouterr().err
    assert "= 6 runs; 6 reused from" in err and "0 to run" in err and "[1/6]" not in err
    assert sorted((workdir / "runs-local").rglob("*")) == before
    assert set(pd.read_csv(workdir / "rep-local" / "sweep_runs.csv").how) == {"reused"}


@pytest.fixture(scope="module")
def reference(workdir, local) -> Path:
    """kill.toml's PyTorch run, trained locally without interruption: what a resumed run must equal byte for byte."""
    assert _sweep(workdir, "kill-local", "--workers", "1", "--threads", "1", "--quiet") == 3  # one backend
    [run_dir] = _runs(workdir / "runs-kill-local").values()
    return run_dir


def test_ctrl_c_keeps_what_finished_and_says_how_to_continue(workdir, reference):
    out = workdir / "runs-ctrl-c"
    command = [sys.executable, "-m", "harness", "sweep", str(workdir / "kill-local.toml"), "--workers", "1",
               "--threads", "1", "--out", str(out), "--reports", str(workdir / "rep-ctrl-c")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("*/checkpoint.npz")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)  # to the driver alone, as a terminal's Ctrl-C now reaches only it
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err[-3000:]
    [line] = [line for line in err.splitlines() if line.startswith("interrupted: ")]
    assert "0 of 1 runs are complete and kept" in line
    [run_dir] = out.iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert (run_dir / "checkpoint.npz").is_file()
    continuing = shlex.split(line.split("continue with: ", 1)[1])
    assert continuing[:2] == ["harness", "sweep"] and "--fresh" not in continuing
    assert main([*continuing[1:], "--quiet"]) == 3
    assert pd.read_csv(workdir / "rep-ctrl-c" / "sweep_runs.csv").how[0] == "resumed"
    assert (run_dir / "weights.npz").read_bytes() == (reference / "weights.npz").read_bytes()


@pytest.fixture(scope="module")
def cluster(workdir, reference, ray_side) -> dict:
    """What the Ray side found (nodes, the ray.toml and kill.toml sweeps), once it has stopped its cluster."""
    if isinstance(ray_side, str):
        pytest.skip(ray_side)
    ray_side.wait(timeout=900)
    log = (workdir / "ray.log").read_text()[-3000:]
    assert ray_side.returncode == 0, log
    result = json.loads((workdir / "result.json").read_text())
    assert "error" not in result, result["error"] + log
    return result


def test_the_cluster_is_a_head_and_an_npu_node_on_loopback(cluster):
    nodes = cluster["nodes"]
    assert len(nodes) == 2 and all(node.startswith("127.0.0.1 ") for node in nodes), nodes
    assert sum('"NPU": 1.0' in node for node in nodes) == 1


def test_ray_and_local_give_identical_weights(workdir, cluster):
    ray_run = cluster["ray"]
    assert ray_run["code"] in (0, 3), ray_run["stderr"][-3000:]
    ray_runs, local_runs = _runs(workdir / "runs-ray"), _runs(workdir / "runs-local")
    assert len(ray_runs) == 4 and set(ray_runs) <= set(local_runs)
    for key, run_dir in ray_runs.items():
        assert (run_dir / "weights.npz").read_bytes() == (local_runs[key] / "weights.npz").read_bytes(), key
    runs = pd.read_csv(workdir / "rep-ray" / "sweep_runs.csv")
    assert set(runs.status) == {"completed"} and (runs.bytes_shipped > 0).all()  # back through the object store
    assert len(list((workdir / "scratch").glob("*/*/run.json"))) == 4  # the workers' own copies
    ray_table, local_table = (pd.read_csv(workdir / f"rep-{name}" / "sweep.csv") for name in ("ray", "local"))
    assert list(ray_table.accuracy_mean) == list(local_table[local_table.role == "run"].accuracy_mean)


def test_a_killed_worker_is_retried_and_resumes_to_the_same_bytes(workdir, cluster, reference):
    killed = cluster["kill"]
    assert killed["killed"], killed["stderr"][-3000:]
    [run_dir] = [p for k, p in _runs(workdir / "runs-kill").items() if k.startswith("pytorch")]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["resumed"][0]["at_step"] >= 4  # after the first epoch
    assert (run_dir / "weights.npz").read_bytes() == (reference / "weights.npz").read_bytes()
    runs = pd.read_csv(workdir / "rep-kill" / "sweep_runs.csv")
    assert runs.set_index("backend").how["pytorch"] == "resumed"


def test_a_run_no_node_can_do_is_an_error_row_and_the_sweep_goes_on(workdir, cluster):
    killed = cluster["kill"]
    assert killed["code"] == 2  # ERROR: a run could not be made
    runs = pd.read_csv(workdir / "rep-kill" / "sweep_runs.csv").set_index("backend")
    assert runs.status["mindspore"] == "failed" and runs.status["pytorch"] == "completed"
    assert "device 'npu' is not usable by mindspore here" in runs.error["mindspore"]  # tried on the NPU node
    assert "ERROR" in killed["stdout"] and "seed(s) lack a run" in killed["stdout"]
