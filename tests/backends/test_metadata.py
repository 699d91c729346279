"""What a backend's files say about themselves: the ONNX producer fields and the file modes of a run folder."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.backend import get_backend, is_installed
from harness.model.weights import init_weights
from harness.model.zoo import build_model
from harness.runs.files import atomic_path, write_text

onnx = pytest.importorskip("onnx")


def _lenet5(name: str):
    """A LeNet5 with seeded weights from backend ``name`` (skipped where that framework is not installed)."""
    if not is_installed(name):
        pytest.skip(f"{name} is not installed")
    backend = get_backend(name)
    spec = build_model("lenet5")
    model = backend.build(spec, "cpu")
    backend.set_weights(model, init_weights(spec, 0))
    return backend, model


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _plain_mode(folder: Path) -> int:
    """The mode every harness file gets: that of a file written by harness.runs.files in ``folder``."""
    write_text(folder / "plain.txt", "plain\n")
    return _mode(folder / "plain.txt")


@pytest.mark.parametrize("batch_size", [None, 3])
def test_mindspore_onnx_names_the_installed_mindspore(tmp_path, batch_size):
    ms = pytest.importorskip("mindspore")
    backend, model = _lenet5("mindspore")
    path = backend.export_onnx(model, tmp_path / "m.onnx", batch_size)
    proto = onnx.load(str(path))
    assert (proto.producer_name, proto.producer_version) == ("MindSpore", ms.__version__)
    logits_batch = proto.graph.output[0].type.tensor_type.shape.dim[0]
    assert (logits_batch.dim_param or logits_batch.dim_value) == (batch_size or "batch")


def test_pytorch_onnx_names_the_installed_torch(tmp_path):
    torch = pytest.importorskip("torch")
    backend, model = _lenet5("pytorch")
    proto = onnx.load(str(backend.export_onnx(model, tmp_path / "m.onnx")))
    assert proto.producer_name == "pytorch"
    assert torch.__version__.startswith(proto.producer_version)


@pytest.mark.parametrize("name", ["model.ckpt", "model.weights"])  # a .ckpt name, and one MindSpore would extend
def test_mindspore_checkpoint_has_the_plain_file_mode(tmp_path, name):
    backend, model = _lenet5("mindspore")
    backend.save(model, tmp_path / name)
    assert oct(_mode(tmp_path / name)) == oct(_plain_mode(tmp_path))
    backend.load(model.spec, tmp_path / name, "cpu")  # still readable by the harness


def test_mindspore_checkpoint_through_atomic_path_has_the_plain_file_mode(tmp_path):
    backend, model = _lenet5("mindspore")
    backend.save(model, tmp_path / "model.ckpt")  # an earlier checkpoint (made read-only before the fix) is replaced
    with atomic_path(tmp_path / "model.ckpt") as tmp:  # as training/run.py writes model.ckpt
        backend.save(model, tmp)
    assert oct(_mode(tmp_path / "model.ckpt")) == oct(_plain_mode(tmp_path))


def test_mindspore_run_folder_has_one_file_mode(tmp_path):
    if not is_installed("mindspore"):
        pytest.skip("mindspore is not installed")
    out = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--backend", "mindspore", "--model", "lenet5", "--dataset",
         "synthetic", "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--quiet", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = out.iterdir()
    modes = {path.name: oct(_mode(path)) for path in run_dir.rglob("*") if path.is_file()}
    assert {"model.ckpt", "model.onnx", "run.json", "weights.npz"} <= set(modes)
    assert set(modes.values()) == {oct(_plain_mode(tmp_path))}, modes
