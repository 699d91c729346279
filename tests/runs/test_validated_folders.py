"""Run folders from elsewhere: every field of run.json, predictions.npz and weights.npz is checked before use, and
a folder that is no run is called so (never "delete it")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from harness.cli.main import main

TINY = ["--dataset", "synthetic", "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--batch-size", "16",
        "--quiet"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """A finished PyTorch run and a MindSpore run of the same config (compare --runs needs both)."""
    out = tmp_path_factory.mktemp("pair")
    for backend in ("pytorch", "mindspore"):
        assert main(["run", "--backend", backend, *TINY, "--out", str(out)]) == 0
    return (next(p for p in out.iterdir() if "-pytorch-" in p.name),
            next(p for p in out.iterdir() if "-mindspore-" in p.name))


def _copies(tmp: Path, pair: tuple[Path, Path]) -> tuple[Path, Path]:
    return tuple(shutil.copytree(run, tmp / "runs" / run.name) for run in pair)


def _one_line(capsys, argv: list[str], *fragments: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert all(fragment in err for fragment in fragments) and "Traceback" not in err, err
    return err


def _edit_json(name: str, **changes) -> Callable[[Path], None]:
    def edit(run_dir: Path) -> None:
        data = json.loads((run_dir / name).read_text())
        data.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del data[key]  # None: drop the field
        (run_dir / name).write_text(json.dumps(data))
    return edit


def _edit_arrays(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(run_dir: Path) -> None:
        with np.load(run_dir / name, allow_pickle=False) as archive:
            arrays = dict(archive)
        change(arrays)
        np.savez(run_dir / name, **arrays)  # np.savez: the file comes from elsewhere, not from save_arrays
    return edit


def _set(**arrays) -> Callable[[dict], None]:
    return lambda found: found.update(arrays)


def _short(found: dict) -> None:
    found.update({key: value[:10] for key, value in found.items()})


# id -> (edit of the PyTorch run, fragments the one error line holds). Array cases name the file and the member
# only: the reader (harness.runs.arrays) may refuse a shape by its header before load_run looks at the values.
CASES = {
    "predictions-wrong-shape": (_edit_arrays("predictions.npz", _set(logits_native=np.zeros((32, 5), np.float32))),
                                ("predictions.npz", "logits_native", "(32, 5)")),
    "predictions-short": (_edit_arrays("predictions.npz", _short),
                          ("predictions.npz: labels should be integers of shape (32,)",)),
    "predictions-strings": (_edit_arrays("predictions.npz", _set(labels=np.array(["cat"] * 32))),
                            ("predictions.npz", "labels")),
    "predictions-scalar": (_edit_arrays("predictions.npz", _set(logits_onnx=np.float32(1.0))),
                           ("predictions.npz", "logits_onnx")),
    "predictions-other-labels": (_edit_arrays("predictions.npz", _set(labels=np.zeros(32, np.int64))),
                                 ("predictions.npz: labels differ from the test set's labels",)),
    "weights-strings": (_edit_arrays("weights.npz", _set(**{"fc3.bias": np.array(["w"] * 10)})),
                        ("weights.npz", "fc3.bias")),
    "run-json-no-backend": (_edit_json("run.json", backend=None),
                            ("run.json: field 'backend' should be a str, got no such field",)),
    "run-json-no-run-id": (_edit_json("run.json", run_id=None),
                           ("run.json: field 'run_id' should be a str, got no such field",)),
    "run-json-no-config-hash": (_edit_json("run.json", config_hash=None),
                                ("run.json: field 'config_hash' should be a str, got no such field",)),
    "run-json-backend-list": (_edit_json("run.json", backend=["pytorch"]),
                              ("run.json: field 'backend' should be a str, got a list",)),
    "run-json-unknown-backend": (_edit_json("run.json", backend="jax"),
                                 ("run.json: field 'backend' is 'jax', expected one of: pytorch, mindspore",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_compare_runs_refuses_a_bad_field_in_one_line(case, pair, tmp_path, capsys):
    edit, fragments = CASES[case]
    torch_run, ms_run = _copies(tmp_path, pair)
    edit(torch_run)
    _one_line(capsys, ["compare", "--runs", str(torch_run), str(ms_run), "--reports", str(tmp_path / "rep")],
              *fragments)
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("case", ["predictions-wrong-shape", "predictions-strings", "weights-strings"])
def test_report_refuses_bad_arrays_in_one_line(case, pair, tmp_path, capsys):
    edit, fragments = CASES[case]
    torch_run, _ = _copies(tmp_path, pair)
    edit(torch_run)
    _one_line(capsys, ["report", "--runs", str(tmp_path / "runs"), "--reports", str(tmp_path / "rep")],
              *fragments)
    assert not (tmp_path / "rep").exists()


def test_report_skips_a_run_json_whose_backend_is_a_list(pair, tmp_path, capsys):
    torch_run, _ = _copies(tmp_path, pair)
    _edit_json("run.json", backend=["pytorch"])(torch_run)
    code = main(["report", "--runs", str(tmp_path / "runs"), "--reports", str(tmp_path / "rep")])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and code in (0, 1, 2, 3), err  # a broken folder is never reported, nor a crash
    assert torch_run.name not in out


@pytest.mark.parametrize("where", ["runs-folder", "dataset-folder", "empty-folder"])
def test_a_folder_that_is_no_run_is_called_so_and_never_to_be_deleted(where, pair, tmp_path, capsys):
    _copies(tmp_path, pair)
    folder = {"runs-folder": tmp_path / "runs", "dataset-folder": tmp_path / "data" / "MNIST" / "raw",
              "empty-folder": tmp_path / "empty"}[where]
    folder.mkdir(parents=True, exist_ok=True)
    if where == "dataset-folder":
        (folder / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 0]))
    for argv in (["run", "--resume", str(folder), "--quiet"],
                 ["compare", "--runs", str(folder), str(pair[1]), "--reports", str(tmp_path / "rep")]):
        err = _one_line(capsys, argv, f"{folder} is not a run folder: it has no run.json; pass a folder written by "
                                      "`harness run`")
        assert "delete" not in err


def test_a_run_folder_missing_run_json_keeps_the_documented_message(pair, tmp_path, capsys):
    torch_run, ms_run = _copies(tmp_path, pair)
    (torch_run / "run.json").unlink()
    err = _one_line(capsys, ["compare", "--runs", str(torch_run), str(ms_run)], "run.json is missing or corrupt")
    assert "delete" not in err
