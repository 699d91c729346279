"""No file the harness reads can run code: every loader gets a malicious pickle and must refuse it.

Each payload, if unpickled by a plain ``pickle.load`` / ``np.load(allow_pickle=True)`` /
``torch.load(weights_only=False)``, creates a marker file. Every loader of the
code base (dataset readers, weights, resume checkpoints, run folders, settings,
ONNX files, both backends' native checkpoints) must answer with a one-line
HarnessError naming the file, and the marker must not exist afterwards.
"""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from harness.compare.matrix import load_run
from harness.config import RunConfig, read_settings_file
from harness.data import readers
from harness.errors import HarnessError
from harness.evaluators.onnxrt import graph_summary, session
from harness.model.weights import init_weights, load_weights
from harness.model.zoo import build_model
from harness.runs.arrays import save_arrays
from harness.runs.folder import read_run_config, read_run_info
from harness.training.checkpoint import read_checkpoint

SPEC = build_model("lenet-tiny")
# torch.load notes that the protocol-4 payloads are not its default protocol before refusing them.
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")


class _Touch:
    """Unpickling this creates ``marker``: the proof that a loader ran code from a file."""

    def __init__(self, marker: Path, how: str):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "open":
            return open, (str(self.marker), "w")
        return Path.touch, (Path(self.marker),)


def _payload(kind: str, marker: Path, folder: Path) -> bytes:
    """The bytes of one malicious file of the given ``kind``."""
    evil = {"w": _Touch(marker, "touch" if kind.endswith("touch") else "open")}
    if kind.startswith("pickle"):
        data = pickle.dumps(evil, protocol=2 if kind == "pickle2-touch" else 4)
        return gzip.compress(data) if kind == "pickle.gz" else data
    scratch = folder / f"scratch-{kind}"
    if kind == "npy":  # a bare .npy whose object array is a pickle
        np.save(scratch.with_suffix(".npy"), np.array([evil["w"]], dtype=object), allow_pickle=True)
        return scratch.with_suffix(".npy").read_bytes()
    if kind == "npz":  # an .npz with one pickled member among valid ones
        np.savez(scratch.with_suffix(".npz"), **init_weights(SPEC, 0), w=np.array([evil["w"]], dtype=object))
        return scratch.with_suffix(".npz").read_bytes()
    torch = pytest.importorskip("torch")
    torch.save(evil, scratch)  # torch's zip format around a malicious data.pkl
    return scratch.read_bytes()


PAYLOADS = ["pickle", "pickle2-touch", "pickle.gz", "npy", "npz", "torch"]


def _run_folder(folder: Path) -> Path:
    """A valid completed run folder of ``SPEC`` (the loader under test then gets one file replaced)."""
    folder.mkdir()
    config = RunConfig()
    (folder / "run.json").write_text(json.dumps({"run_id": folder.name, "status": "completed"}))
    (folder / "config.json").write_text(json.dumps({"config": config.to_dict(), "config_hash": config.config_hash}))
    save_arrays(folder / "weights.npz", init_weights(SPEC, 0))
    save_arrays(folder / "predictions.npz", {"labels": np.zeros(2, np.int64),
                                             "logits_native": np.zeros((2, 10), np.float32),
                                             "logits_onnx": np.zeros((2, 10), np.float32)})
    (folder / "metrics.csv").write_text("kind,step,loss\nstep,1,2.3\n")
    return folder


LOADERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "cifar-python": ("data_batch_1", readers.read_cifar_python_batch),
    "cifar-binary": ("data_batch_1.bin", readers.read_cifar_binary_batch),
    "idx": ("train-images-idx3-ubyte", readers.read_idx),
    "mnist-sample-csv": ("mnist_5k.csv.gz", readers.read_mnist_sample_csv),
    "weights": ("weights.npz", lambda path: load_weights(SPEC, path)),
    "resume-checkpoint": ("checkpoint.npz", lambda path: read_checkpoint(path, SPEC, RunConfig().config_hash)),
    "run-weights": ("weights.npz", lambda path: load_run(path.parent, SPEC)),
    "run-predictions": ("predictions.npz", lambda path: load_run(path.parent, SPEC)),
    "run-metrics": ("metrics.csv", lambda path: load_run(path.parent, SPEC)),
    "run-info": ("run.json", lambda path: read_run_info(path.parent)),
    "run-config": ("config.json", lambda path: read_run_config(path.parent)),
    "onnxruntime": ("model.onnx", session),
    "onnx-graph": ("model.onnx", graph_summary),
    "settings-toml": ("settings.toml", read_settings_file),
}


def _refused(load: Callable[[Path], object], path: Path, marker: Path) -> str:
    """Run ``load(path)``; check it raised a one-line HarnessError naming ``path`` and ran nothing."""
    try:
        with pytest.raises(HarnessError) as error:
            load(path)
    finally:
        assert not marker.exists(), f"loading {path.name} ran code from the file"
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_payloads_would_run_code(tmp_path):
    """The payloads are live: a trusting loader creates the marker."""
    for kind in ("pickle", "pickle2-touch", "pickle.gz"):
        marker = tmp_path / f"pwned-{kind}"
        data = _payload(kind, marker, tmp_path)
        pickle.loads(gzip.decompress(data) if kind == "pickle.gz" else data)
        assert marker.exists()
    marker = tmp_path / "pwned-npz"
    _payload("npz", marker, tmp_path)
    with np.load(tmp_path / "scratch-npz.npz", allow_pickle=True) as archive:
        assert archive["w"].dtype == object and marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
@pytest.mark.parametrize("loader", list(LOADERS))
def test_harness_loaders_refuse_code(tmp_path, loader, kind):
    marker = tmp_path / "pwned"
    name, load = LOADERS[loader]
    path = _run_folder(tmp_path / "run") / name
    path.write_bytes(_payload(kind, marker, tmp_path))
    _refused(load, path, marker)


@pytest.mark.parametrize("kind", PAYLOADS)
def test_backend_checkpoints_refuse_code(tmp_path, backend, kind):
    """model.pt / model.ckpt: torch.load(weights_only=True) refuses globals; MindSpore parses protobuf."""
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{backend.checkpoint_suffix}"
    path.write_bytes(_payload(kind, marker, tmp_path))
    _refused(lambda p: backend.load(SPEC, p, "cpu"), path, marker)


def test_backend_checkpoint_of_another_model(tmp_path, backend):
    """Same parameter names, other shapes: a one-line HarnessError, not the framework's RuntimeError."""
    path = tmp_path / f"model{backend.checkpoint_suffix}"
    backend.save(backend.build(build_model("lenet-tiny", 3), "cpu"), path)
    assert "does not hold lenet-tiny's weights" in _refused(lambda p: backend.load(SPEC, p, "cpu"), path,
                                                             tmp_path / "pwned")
