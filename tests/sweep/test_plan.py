"""Sweep files: what a valid one becomes, and every refusal as one line naming the key and the valid ones."""

from __future__ import annotations

import sys

import pytest

from harness.cli.main import main
from harness.errors import HarnessError
from harness.sweep.executors import task_resources
from harness.sweep.plan import MAX_RUNS, read_plan

GOOD = """
control = true
[base]
dataset = "synthetic"
epochs = 2
[axes]
seed = [0, 1, 2]
learning_rate = [0.01, 0.05]
backend = ["pytorch", "mindspore"]
[devices]
pytorch = "cpu"
"""


def _file(tmp_path, text: str):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_a_sweep_file_becomes_variants_groups_and_runs(tmp_path):
    plan = read_plan(_file(tmp_path, GOOD))
    assert plan.backends == ("pytorch", "mindspore") and plan.seeds == (0, 1, 2) and plan.control
    assert plan.axis_names == ("learning_rate",)
    assert [v.label for v in plan.variants] == ["learning_rate=0.01", "learning_rate=0.05"]
    assert len(plan.groups) == 6 and len(plan.tasks) == 6 * 3
    assert plan.describe() == "2 configs x 3 seeds x 2 backends + 6 controls = 18 runs"
    group = plan.groups[1]
    assert group.seed == 1 and [t.config.backend for t in group.runs] == ["pytorch", "mindspore"]
    assert group.runs[0].config.config_hash == group.runs[1].config.config_hash  # backends share the hash
    assert group.control.folder == "control" and group.control.config.model.init_ulps == 1
    assert len({task.key for task in plan.tasks}) == len(plan.tasks)
    assert {t.config.device for t in plan.tasks} == {"cpu"}
    # the variant key ignores seed and backend: one per config, stable
    assert len({t.variant.key for t in plan.tasks}) == 2


def test_recipe_base_devices_and_a_single_backend(tmp_path):
    plan = read_plan(_file(tmp_path, 'recipe = "demo"\n[base]\nepochs = 1\nbackend = "pytorch"\n'
                                     '[devices]\npytorch = "cuda:1"\n'))
    assert plan.backends == ("pytorch",) and not plan.control  # a control serves a pair
    config = plan.tasks[0].config
    assert config.train.epochs == 1 and config.device == "cuda:1" and len(plan.tasks) == 1


@pytest.mark.parametrize("text, fragment", [
    ("contorl = true\n", "unknown key(s) contorl; valid top-level keys: control, recipe, base, axes, devices"),
    ("control = 1\n", "control should be true or false, got 1"),
    ("[base]\nepoch = 3\n", "unknown setting(s) in [base]: epoch; valid settings: model,"),
    ("base = 3\n", "base should be a table ([base]), got int"),
    ("[axes]\nseeds = [0, 1]\n", "unknown axis(es) seeds; valid axes: model,"),
    ("[axes]\ndevice = [\"cpu\"]\n", "device is not an axis"),
    ("[axes]\nseed = 3\n", "axes.seed should be a non-empty list, e.g. seed = [...]"),
    ("[axes]\nseed = []\n", "axes.seed should be a non-empty list"),
    ("[axes]\nseed = [1, 1]\n", "axes.seed lists a value twice"),
    ("[axes]\nlearning_rate = [0.1, -1]\n", "axes.learning_rate value -1: learning_rate=-1.0 is out of range"),
    ("[axes]\nepochs = [\"two\"]\n", "axes.epochs value 'two': setting epochs='two' is not int"),
    ("[axes]\nbackend = [\"pytorch\", \"jax\"]\n", "unknown backend(s) ['jax']; expected some of: pytorch"),
    ("[devices]\njax = \"cpu\"\n", "[devices] names unknown backend(s) jax"),
    ("[devices]\npytorch = \"tpu\"\n", "device 'tpu' for pytorch is not a device name"),
    ("[base]\nmodel = \"lenet6\"\n", "unknown model 'lenet6'; expected one of: lenet5"),
    ("[base]\ndataset = \"imagenet\"\n", "unknown dataset 'imagenet'; valid names: mnist"),
    ("recipe = \"nope\"\n", "unknown recipe 'nope'"),
    ("recipe = \"demo\"\n[base]\nrecipe = \"demo\"\n", "recipe is given both at the top and in [base]"),
    ("[axes]\nlearning_rate = [0.1, 0.10000]\n", "lists a value twice"),
    ("[axes]\nepochs = [1.0, 1]\n", "axes give one config twice (epochs=1.0 and epochs=1)"),
    ("[axes]\nseed = [" + ", ".join(map(str, range(MAX_RUNS))) + "]\n", f"is more than {MAX_RUNS}; shorten an axis"),
    ("epochs = = 3\n", "cannot read config file"),
])
def test_bad_sweep_files_are_refused_in_one_line(tmp_path, capsys, text, fragment):
    path = _file(tmp_path, text)
    with pytest.raises(HarnessError, match=None) as caught:
        read_plan(path)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)
    # the CLI: one line on stderr, exit 2, nothing written
    before = set(tmp_path.rglob("*"))
    assert main(["sweep", str(path), "--out", str(tmp_path / "runs"), "--reports", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err
    assert set(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("argv, fragment", [
    (["--workers", "0"], "--workers 0 must be >= 1"),
    (["--threads", "0"], "--threads 0 must be >= 1"),
    (["--retries", "-1"], "--retries -1 must be >= 0"),
    (["--address", "127.0.0.1:1"], "--address is for --executor ray"),
    (["--executor", "slurm"], "invalid choice: 'slurm'"),
])
def test_bad_flags_are_refused_in_one_line(tmp_path, capsys, argv, fragment):
    path = _file(tmp_path, GOOD)
    assert main(["sweep", str(path), *argv, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err
    assert not (tmp_path / "runs").exists()


def test_ray_executor_without_ray_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["sweep", str(_file(tmp_path, GOOD)), "--executor", "ray", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "--executor ray needs Ray" in err and "pip install -c constraints.txt '.[ray]'" in err
    assert err.count("\n") == 1 and not (tmp_path / "runs").exists()


def test_ray_executor_needs_an_address_that_answers(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray", reason="ray is an optional extra: pip install -c constraints.txt '.[ray]'")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = str(_file(tmp_path, GOOD))
    assert main(["sweep", path, "--executor", "ray", "--out", str(tmp_path / "runs")]) == 2
    assert "needs a running cluster: pass --address HOST:PORT or set RAY_ADDRESS" in capsys.readouterr().err
    # loopback only, a port nothing listens on: refused at once, not after ray.init's minutes of retries
    assert main(["sweep", path, "--executor", "ray", "--address", "127.0.0.1:1", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("device, threads, expected", [
    ("cpu", 3, {"num_cpus": 3}),
    ("auto", 1, {"num_cpus": 1}),
    ("cuda:1", 4, {"num_cpus": 1, "num_gpus": 1}),
    ("gpu", 2, {"num_cpus": 1, "num_gpus": 1}),
    ("npu", 2, {"num_cpus": 1, "resources": {"NPU": 1}}),
    ("Ascend:3", 2, {"num_cpus": 1, "resources": {"NPU": 1}}),
])
def test_each_device_asks_ray_for_its_resource(device, threads, expected):
    assert task_resources(device, threads) == expected


def test_runs_no_node_can_take_are_refused_before_anything_runs():
    from types import SimpleNamespace

    from harness.sweep.executors import RayCluster

    head = {"Alive": True, "Resources": {"CPU": 2.0, "memory": 1e9, "node:127.0.0.1": 1.0}}
    npu = {"Alive": True, "Resources": {"CPU": 1.0, "NPU": 1.0}}
    cluster = object.__new__(RayCluster)  # no connection: only the resource check is exercised
    cluster.address, cluster.threads = "127.0.0.1:6379", 2
    cluster.ray = SimpleNamespace(nodes=lambda: [head, {**npu, "Alive": False}])
    with pytest.raises(HarnessError) as caught:
        cluster.check_feasible([], {"pytorch": "cpu", "mindspore": "npu"})
    message = str(caught.value)
    assert "no node of the Ray cluster at 127.0.0.1:6379 offers 1 CPU + 1 NPU, which each mindspore run on npu" \
        in message
    assert "nodes offer: CPU 2" in message and "--resources '{\"NPU\": 1}'" in message and "\n" not in message
    cluster.ray = SimpleNamespace(nodes=lambda: [head, npu])
    cluster.check_feasible([], {"pytorch": "cpu", "mindspore": "npu"})  # now one node has it
    cluster.threads = 4  # a cpu run asks for as many CPUs as it has threads
    with pytest.raises(HarnessError, match="offers 4 CPU, which each pytorch run on cpu asks for"):
        cluster.check_feasible([], {"pytorch": "cpu"})
