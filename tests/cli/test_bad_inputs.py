"""The bad-input table (docs/bad-inputs.md): each row is one line on stderr, exit 2, nothing half-written.

The table in docs/ is the source of the expected messages: this file only knows
how to provoke each row (``CASES``), and a test keeps the two in step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from harness.cli.main import main
from tests.support import REPO_ROOT

TABLE = REPO_ROOT / "docs" / "bad-inputs.md"
TINY = ["--model", "lenet-tiny", "--dataset", "synthetic", "--limit-train", "64", "--limit-test", "32",
        "--epochs", "1", "--batch-size", "32", "--quiet"]
MNIST = ["--model", "lenet-tiny", "--dataset", "mnist", "--epochs", "1", "--quiet"]


def _idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(">u1" if type_code == 0x08 else ">f4").tobytes())
    return path


def _mnist(tmp: Path, **replace: bytes | None) -> list[str]:
    """A tiny valid MNIST folder, with the named files' bytes replaced (None: a folder in their place)."""
    raw = tmp / "data" / "MNIST" / "raw"
    for split, n in (("train", 64), ("t10k", 32)):
        _idx(raw / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28), np.uint8))
        _idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)
    for name, content in replace.items():
        target = raw / name.replace("_", "-")
        target.unlink()
        target.mkdir() if content is None else target.write_bytes(content)
    return [*MNIST, "--data-dir", str(tmp / "data")]


def _valid_labels(n: int) -> bytes:
    return bytes([0, 0, 8, 1]) + struct.pack(">I", n) + bytes(n)


def _toml(tmp: Path, text: str) -> list[str]:
    (tmp / "settings.toml").write_text(text)
    return ["run", *TINY, "--config", str(tmp / "settings.toml"), "--out", str(tmp / "out")]


def _run_copy(tmp: Path, finished: Path, edit: Callable[[Path], None]) -> Path:
    copy = tmp / "runs" / finished.name
    shutil.copytree(finished, copy)
    edit(copy)
    return copy


def _compare(tmp: Path, finished: Path, edit: Callable[[Path], None]) -> list[str]:
    return ["compare", "--runs", str(_run_copy(tmp, finished, edit)), str(_partner(finished)),
            "--reports", str(tmp / "out")]


def _edit_json(name: str, **changes) -> Callable[[Path], None]:
    def edit(run_dir: Path) -> None:
        data = json.loads((run_dir / name).read_text())
        (run_dir / name).write_text(json.dumps({**data, **changes}))
    return edit


def _resume(tmp: Path, finished: Path, edit: Callable[[Path], None]) -> list[str]:
    return ["run", "--resume", str(_run_copy(tmp, finished, edit)), "--quiet"]


def _interrupted(run_dir: Path) -> None:
    _edit_json("run.json", status="interrupted")(run_dir)


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / name).write_bytes(content)


def _run(*flags: str) -> Callable[[Path, Path], list[str]]:
    """``harness run`` on tiny data with ``flags`` added."""
    return lambda tmp, finished: ["run", *TINY, *flags, "--out", str(tmp / "out")]


def _file_at(tmp: Path) -> Path:
    (tmp / "a-file").write_text("")
    return tmp / "a-file"


# id -> (tmp, finished run folder) -> argv. The expected message of each id is in docs/bad-inputs.md.
CASES: dict[str, Callable[[Path, Path], list[str]]] = {
    "flag-model": _run("--model", "lenet6"),
    "flag-dataset": _run("--dataset", "imagenet"),
    "flag-backend": _run("--backend", "jax"),
    "flag-optimizer": _run("--optimizer", "rmsprop"),
    "flag-schedule": _run("--schedule", "linear"),
    "flag-activation": _run("--activation", "swish"),
    "flag-batch-size": _run("--batch-size", "0"),
    "flag-epochs": _run("--epochs", "0"),
    "flag-init-ulps": _run("--init-ulps", "101"),
    "flag-learning-rate": _run("--lr", "-1"),
    "flag-not-a-number": _run("--epochs", "three"),
    "flag-unknown": _run("--epoch", "3"),
    "flag-recipe": _run("--recipe", "nope"),
    "flag-checkpoint-every": _run("--checkpoint-every", "-1"),
    "flag-resume-with-settings": lambda t, r: ["run", "--resume", str(r), "--epochs", "3"],
    "flag-compare-backends": lambda t, r: ["compare", *TINY, "--backends", "pytorch,jax", "--out", str(t / "out")],
    "flag-parity-steps": lambda t, r: ["parity", *TINY, "--steps", "0", "--reports", str(t / "out")],
    "config-missing": lambda t, r: ["run", *TINY, "--config", str(t / "missing.toml"), "--out", str(t / "out")],
    "config-directory": lambda t, r: ["run", *TINY, "--config", str(t), "--out", str(t / "out")],
    "config-syntax": lambda t, r: _toml(t, "epochs = = 3\n"),
    "config-unknown-key": lambda t, r: _toml(t, "epoch = 3\n"),
    "config-wrong-type": lambda t, r: _toml(t, 'momentum = "high"\n'),
    "data-dir-missing": lambda t, r: ["run", *MNIST, "--data-dir", str(t / "nowhere"), "--out", str(t / "out")],
    "data-wrong-magic": lambda t, r: ["run", *_mnist(t, train_labels_idx1_ubyte=b"PK\x03\x04" + bytes(64)),
                                      "--out", str(t / "out")],
    "data-truncated": lambda t, r: ["run", *_mnist(t, train_labels_idx1_ubyte=_valid_labels(64)[:40]),
                                    "--out", str(t / "out")],
    "data-count-mismatch": lambda t, r: ["run", *_mnist(t, train_labels_idx1_ubyte=_valid_labels(63)),
                                         "--out", str(t / "out")],
    "data-wrong-dtype": lambda t, r: ["run", *_mnist(t, train_images_idx3_ubyte=bytes([0, 0, 0x0D, 3])
                                                     + struct.pack(">3I", 64, 28, 28) + bytes(64 * 28 * 28 * 4)),
                                      "--out", str(t / "out")],
    "data-wrong-shape": lambda t, r: ["run", *_mnist(t, train_images_idx3_ubyte=bytes([0, 0, 8, 2])
                                                     + struct.pack(">2I", 64, 784) + bytes(64 * 784)),
                                      "--out", str(t / "out")],
    "data-empty-file": lambda t, r: ["run", *_mnist(t, t10k_images_idx3_ubyte=b""), "--out", str(t / "out")],
    "data-directory": lambda t, r: ["run", *_mnist(t, t10k_labels_idx1_ubyte=None), "--out", str(t / "out")],
    "data-unreadable": lambda t, r: ["run", *_mnist(t), "--out", str(t / "out")],  # made unreadable below
    "run-not-a-folder": lambda t, r: ["compare", "--runs", str(t / "no-run"), "--reports", str(t / "out")],
    "run-missing-run-json": lambda t, r: _compare(t, r, lambda d: (d / "run.json").unlink()),
    "run-missing-weights": lambda t, r: _compare(t, r, lambda d: (d / "weights.npz").unlink()),
    "run-config-hash": lambda t, r: _compare(t, r, _edit_json("config.json", config_hash="0" * 64)),
    "run-edited-run-json": lambda t, r: _resume(t, r, _edit_json("run.json", status="interrupted", config_hash="1" * 64)),
    "run-corrupt-weights": lambda t, r: _compare(t, r, _write("weights.npz", b"PK\x03\x04 not really")),
    "run-corrupt-onnx": lambda t, r: _compare(t, r, _write("model.onnx", b"\x08\x07garbage")),
    "run-resume-completed": lambda t, r: _resume(t, r, lambda d: None),
    "run-resume-no-checkpoint": lambda t, r: _resume(t, r, _interrupted),
    "run-resume-corrupt-checkpoint": lambda t, r: _resume(t, r, lambda d: (_interrupted(d), _write("checkpoint.npz", b"\0" * 10)(d))),
    "env-out-not-writable": lambda t, r: ["run", *TINY, "--out", str(_file_at(t) / "runs")],
    "env-reports-not-writable": lambda t, r: ["compare", "--runs", str(r), str(_partner(r)),
                                              "--reports", str(_file_at(t) / "rep")],
    "env-device-unavailable": lambda t, r: ["run", *TINY, "--backend", "pytorch", "--device", "cuda:7",
                                            "--out", str(t / "out")],
}


def _table() -> dict[str, str]:
    """id -> expected message fragment, from the docs table's rows `| id | what | message |`."""
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|[^|]*\| `([^`]*)` \|$", TABLE.read_text(), flags=re.MULTILINE)
    return dict(rows)


def test_the_table_and_the_cases_list_the_same_inputs():
    table = _table()
    assert len(table) >= 30 and set(table) == set(CASES)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished PyTorch run, with a MindSpore run of the same config beside it (``_partner``)."""
    out = tmp_path_factory.mktemp("finished")
    for backend in ("pytorch", "mindspore"):
        assert main(["run", "--backend", backend, *TINY, "--out", str(out)]) == 0
    return next(p for p in out.iterdir() if "-pytorch-" in p.name)


def _partner(run: Path) -> Path:
    """The MindSpore run beside ``run``: compare needs two runs of different backends."""
    return next(p for p in run.parent.iterdir() if "-mindspore-" in p.name)


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_nothing_half_written(case, finished_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = CASES[case](tmp_path, finished_run)
    if case == "data-unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads files whatever their permissions")
        (tmp_path / "data" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").chmod(0)
    before = _snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert _table()[case] in err, err
    assert "Traceback" not in err
    written = set(_snapshot(tmp_path)) - set(before)
    assert not [p for p in written if not Path(p).is_dir()], written  # no file left behind, half or whole
