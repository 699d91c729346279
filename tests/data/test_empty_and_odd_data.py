"""Datasets from elsewhere: empty splits, non-integer labels and a data path too long for the file system are one
error line, exit 2, before any run folder is made."""

from __future__ import annotations

import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from harness.cli.main import main
from harness.data import readers

TINY = ["--model", "lenet-tiny", "--epochs", "1", "--quiet"]


def _idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.asarray(array, readers.IDX_DTYPES[type_code]).tobytes())


def _mnist(root: Path, train: int = 64, test: int = 32, labels: np.ndarray | None = None, code: int = 0x08) -> Path:
    raw = root / "MNIST" / "raw"
    for split, n in (("train", train), ("t10k", test)):
        _idx(raw / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28), np.uint8))
        _idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10 if labels is None else labels, code)
    return root


def _cifar(root: Path, test_labels: object = None, empty: str = "") -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for stem in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = 0 if stem.startswith(empty or "-") else 4
        labels = test_labels if stem == "test_batch" and test_labels is not None else [i % 10 for i in range(n)]
        batch = {b"data": np.zeros((n, 3072), np.uint8), b"labels": labels}
        (folder / stem).write_bytes(pickle.dumps(batch, protocol=4))
    return root


def _fails(capsys, tmp_path: Path, argv: list[str], fragment: str) -> str:
    code = main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err and "Traceback" not in err and "Warning" not in err, err
    assert not (tmp_path / "out").exists()  # refused before any run folder was made
    return err


@pytest.mark.parametrize("split,sizes", [("train", (0, 32)), ("test", (64, 0))])
def test_an_empty_idx_split_is_refused(split, sizes, tmp_path, capsys):
    root = _mnist(tmp_path / "data", *sizes)
    _fails(capsys, tmp_path, ["run", *TINY, "--dataset", "mnist", "--data-dir", str(root)],
           f"{split} split from {root / 'MNIST' / 'raw'}: the {split} split holds no images")


@pytest.mark.parametrize("empty,split", [("data_batch", "train"), ("test_batch", "test")])
def test_an_empty_cifar_split_is_refused(empty, split, tmp_path, capsys):
    root = _cifar(tmp_path / "data", empty=empty)
    _fails(capsys, tmp_path, ["run", *TINY, "--dataset", "cifar10", "--data-dir", str(root)],
           f"the {split} split holds no images")


def test_float_idx_labels_are_refused_not_truncated(tmp_path, capsys):
    labels = np.full(64, 3.7)
    raw = _mnist(tmp_path / "data") / "MNIST" / "raw"
    _idx(raw / "train-labels-idx1-ubyte", labels, 0x0D)
    _fails(capsys, tmp_path, ["run", *TINY, "--dataset", "mnist", "--data-dir", str(tmp_path / "data")],
           f"{raw / 'train-labels-idx1-ubyte'}: IDX labels are float32, expected an integer type")


# readers.read_cifar_python_batch's own wording (its label check is shared with the pickle-size work there).
NOT_INTEGERS = "b'labels' is not a list of integers"


@pytest.mark.parametrize("labels", [[3.7, 1, 2, 3], [True, False, True, False], ["1", "2", "3", "4"],
                                    [float("nan"), 1, 2, 3], np.array([np.nan, 1, 2, 3]), [None, 1, 2, 3]],
                         ids=["float", "bool", "str", "nan", "nan-array", "none"])
def test_cifar_labels_must_be_integers(labels, tmp_path, capsys):
    root = _cifar(tmp_path / "data", test_labels=labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's RuntimeWarning for NaN must not reach the user
        _fails(capsys, tmp_path, ["run", *TINY, "--dataset", "cifar10", "--data-dir", str(root)],
               f"test_batch: {NOT_INTEGERS}")


@pytest.mark.parametrize("how", ["--data-dir", "HARNESS_DATA_DIR", "list --data-dir"])
def test_a_data_path_too_long_for_the_file_system_is_one_line(how, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    long = str(tmp_path / ("a" * 200)) * 22  # over PATH_MAX (4096) and over NAME_MAX per component
    argv = ["run", *TINY, "--dataset", "mnist"]
    if how == "--data-dir":
        argv += ["--data-dir", long]
    elif how == "HARNESS_DATA_DIR":
        monkeypatch.setenv("HARNESS_DATA_DIR", long)
    if how.startswith("list"):
        assert main(["list", "--data-dir", long]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
    else:
        err = _fails(capsys, tmp_path, argv, "")
    assert f"data path {long[:80]}... is {len(long):,} characters long" in err and "ENAMETOOLONG" in err, err
