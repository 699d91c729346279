"""Run folders packed on a worker and unpacked by the driver: byte for byte, checked, never trusted."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest

from harness.errors import HarnessError
from harness.sweep.worker import PACK_MAGIC, find_resumable, pack_folder, unpack_folder


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "worker" / "20260101-000000-lenet5-pytorch-0123abcd"
    folder.mkdir(parents=True)
    for name, data in {"weights.npz": bytes(range(256)) * 40, "run.json": b'{"status": "completed"}',
                       "model.onnx": b"\x08\x07onnx", "metrics.csv": b"kind,epoch\n"}.items():
        (folder / name).write_bytes(data)
    (folder / ".model.onnx.x.tmp.onnx").write_bytes(b"half")  # a temporary: never travels
    return folder


def test_a_packed_folder_comes_back_byte_identical(run_dir, tmp_path):
    payload = pack_folder(run_dir)
    landed = unpack_folder(payload, hashlib.sha256(payload).hexdigest(), tmp_path / "driver")
    assert landed == tmp_path / "driver" / run_dir.name
    assert {p.name for p in landed.iterdir()} == {"weights.npz", "run.json", "model.onnx", "metrics.csv"}
    for path in landed.iterdir():
        assert path.read_bytes() == (run_dir / path.name).read_bytes()
    again = unpack_folder(payload, hashlib.sha256(payload).hexdigest(), tmp_path / "driver")
    assert again.name == f"{run_dir.name}-1"  # never over an existing folder


def test_a_damaged_payload_is_refused_and_nothing_is_written(run_dir, tmp_path):
    payload = pack_folder(run_dir)
    digest = hashlib.sha256(payload).hexdigest()
    flipped = bytearray(payload)
    flipped[-5] ^= 1
    with pytest.raises(HarnessError, match="came back from its worker damaged .sha256"):
        unpack_folder(bytes(flipped), digest, tmp_path / "driver")
    assert not (tmp_path / "driver").exists()


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", ".hidden", "a/b", ""])
def test_names_that_would_leave_the_folder_are_refused(tmp_path, name):
    header = json.dumps({"name": "run", "files": [[name, 1, hashlib.sha256(b"x").hexdigest()]]}).encode()
    payload = PACK_MAGIC + struct.pack(">Q", len(header)) + header + b"x"
    with pytest.raises(HarnessError, match="damaged .its header"):
        unpack_folder(payload, hashlib.sha256(payload).hexdigest(), tmp_path / "driver")
    assert not (tmp_path / "driver").exists() and not (tmp_path / "escape").exists()


def test_sizes_that_do_not_add_up_are_refused(tmp_path):
    header = json.dumps({"name": "run", "files": [["a", 5, hashlib.sha256(b"x").hexdigest()]]}).encode()
    payload = PACK_MAGIC + struct.pack(">Q", len(header)) + header + b"x"
    with pytest.raises(HarnessError, match="does not match its length"):
        unpack_folder(payload, hashlib.sha256(payload).hexdigest(), tmp_path / "driver")


def test_only_an_unfinished_run_with_a_checkpoint_is_resumed(tmp_path):
    from harness.config import build_config
    from harness.runs.files import write_json

    config = build_config({"dataset": "synthetic", "epochs": 2, "backend": "pytorch"})
    h = config.config_hash

    def folder(stamp: str, status: str, checkpoint: bool, device: str = "cpu"):
        path = tmp_path / f"{stamp}-lenet5-pytorch-{h[:8]}"
        path.mkdir()
        saved = build_config({"dataset": "synthetic", "epochs": 2, "backend": "pytorch", "device": device})
        write_json(path / "config.json", {"config": saved.to_dict(), "config_hash": h})
        write_json(path / "run.json", {"run_id": path.name, "backend": "pytorch", "config_hash": h, "status": status})
        if checkpoint:
            (path / "checkpoint.npz").write_bytes(b"")
        return path

    folder("20260101-000001", "running", False)  # killed before its first checkpoint: nothing to resume
    folder("20260101-000002", "failed", True)  # diverged: resuming would diverge again
    killed = folder("20260101-000003", "running", True)
    folder("20260101-000004", "interrupted", True, device="cuda")  # another device request
    assert find_resumable(tmp_path, config) == killed
