"""A report set is one unit: a full disk keeps the previous set whole, two writers end with one whole set."""

from __future__ import annotations

import errno
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import harness.report.plots as plots
import harness.runs.files as files
from harness.errors import HarnessError
from harness.report.folder import SET_FILES, write_reports
from harness.report.tables import COLUMNS, Report

OTHERS = {"README.md": "# reports/\n", "parity.csv": "mode,step\nforward,\n", "bench.csv": "backend\npytorch\n"}


def _report(title: str, with_diffs: bool = True) -> Report:
    runs = pd.DataFrame([{"run_id": f"run-{title}", "backend": "pytorch", "model": "lenet5", "dataset": "synthetic",
                          "status": "completed"}])
    agreement = pd.DataFrame([{"model": "lenet5", "dataset": "synthetic", "kind": "same-weights",
                               "evaluator_a": "pytorch:native", "evaluator_b": "pytorch:onnxruntime", "n": 10,
                               "max_abs": 1e-7, "atol": 1e-5, "rtol": 1e-6, "passed": True, "status": "ok"}])
    diffs = {"pytorch:native vs pytorch:onnxruntime": np.linspace(0, 1e-6, 100)} if with_diffs else {}
    return Report({"runs": runs, "agreement": agreement}, diffs, "passed", title)


def _prov(tag: str) -> dict:
    return {"config_hash": f"hash-{tag}", "generated_at": f"2025-01-01T00:00:{tag}"}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def _stagings(folder: Path) -> list[Path]:
    return [*folder.parent.glob(f".{folder.name}.set-*"), *folder.glob(".set-*"), *folder.glob(".*.tmp*")]


def _assert_one_whole_set(folder: Path, tag: str, title: str) -> None:
    for name in COLUMNS:
        frame = pd.read_csv(folder / f"{name}.csv", dtype=str)
        assert list(frame.columns)[-3:] == ["config_hash", "harness_version", "generated_at"], name
        assert set(frame["generated_at"]) <= {_prov(tag)["generated_at"]}, name
    assert (pd.read_csv(folder / "runs.csv")["run_id"] == [f"run-{title}"]).all()
    summary = (folder / "summary.md").read_text()
    assert summary.startswith(f"# {title}") and _prov(tag)["generated_at"] in summary


@pytest.fixture
def reports(tmp_path) -> Path:
    """A reports folder holding a first set and files of other commands."""
    folder = tmp_path / "reports"
    folder.mkdir()
    for name, text in OTHERS.items():
        (folder / name).write_text(text)
    write_reports(_report("first"), folder, _prov("01"))
    return folder


@pytest.mark.parametrize("where", ["plot", "summary"])
def test_a_full_disk_midway_keeps_the_previous_set_whole_and_leaves_no_staging(reports, monkeypatch, where):
    before = _snapshot(reports)
    if where == "plot":
        def full(fig, path):
            plots.plt.close(fig)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        monkeypatch.setattr(plots, "save_figure", full)
    else:
        write_text = Path.write_text

        def full(self, *args, **kwargs):
            if self.name == "summary.md":
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
            return write_text(self, *args, **kwargs)
        monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(HarnessError) as raised:
        write_reports(_report("second"), reports, _prov("02"))
    message = str(raised.value)
    assert "\n" not in message and "ENOSPC" in message and str(reports) in message
    assert "previous report, unchanged" in message
    assert _snapshot(reports) == before  # every file of the first set, byte for byte, and the others' files
    assert _stagings(reports) == []


def test_a_failed_write_through_atomic_path_names_the_set_not_the_staging_folder(reports, monkeypatch):
    mkstemp = files.tempfile.mkstemp

    def refused(*args, **kwargs):
        if ".set-" in str(kwargs.get("dir", "")):
            raise OSError(errno.EROFS, "Read-only file system")
        return mkstemp(*args, **kwargs)
    monkeypatch.setattr(files.tempfile, "mkstemp", refused)  # the plots' atomic writes into the staging folder
    before = _snapshot(reports)
    with pytest.raises(HarnessError, match=r"could not write the report set to .*reports/: .*\(EROFS\)") as raised:
        write_reports(_report("second"), reports, _prov("02"))
    assert ".set-" not in str(raised.value)
    assert _snapshot(reports) == before and _stagings(reports) == []


def test_a_second_writer_finishing_midway_leaves_the_last_set_whole_and_both_say_so(reports, monkeypatch, capsys):
    save_figure = plots.save_figure
    calls = []

    def second_writer_runs_now(fig, path):
        calls.append(path)
        if len(calls) == 1:  # inside the first writer, after its CSVs: the second writes a whole set
            write_reports(_report("middle", with_diffs=False), reports, _prov("02"))
        return save_figure(fig, path)
    monkeypatch.setattr(plots, "save_figure", second_writer_runs_now)
    write_reports(_report("last"), reports, _prov("03"))
    _assert_one_whole_set(reports, "03", "last")
    assert (reports / "logit_diffs.png").exists()
    assert all((reports / name).read_text() == text for name, text in OTHERS.items())
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 2 and all(line.startswith("note: another report") for line in notes)
    assert "will hold the one that finishes last" in notes[0]  # the middle one, which loses
    assert "holds this one, the one that finished last" in notes[1]
    assert _stagings(reports) == []


def test_writers_in_threads_end_with_one_whole_set_every_time(reports):
    for round_ in range(3):
        errors = []

        def write(tag: str) -> None:
            try:
                write_reports(_report(f"thread-{tag}", with_diffs=tag == "11"), reports, _prov(tag))
            except BaseException as error:  # noqa: BLE001  (reported below)
                errors.append(error)
        threads = [threading.Thread(target=write, args=(tag,)) for tag in ("11", "12", "13")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        tag = (reports / "summary.md").read_text().split("thread-", 1)[1][:2]  # whoever finished last
        _assert_one_whole_set(reports, tag, f"thread-{tag}")
        assert (reports / "logit_diffs.png").exists() == (tag == "11")  # the winner's plots only
        assert all((reports / name).read_text() == text for name, text in OTHERS.items())
        assert _stagings(reports) == [], round_


def test_without_an_exchange_files_are_renamed_in_and_the_old_sets_rest_dropped(reports, monkeypatch):
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)  # a filesystem without renameat2's exchange
    assert (reports / "logit_diffs.png").exists()
    inode = reports.stat().st_ino
    paths = write_reports(_report("second", with_diffs=False), reports, _prov("02"))
    _assert_one_whole_set(reports, "02", "second")
    assert not (reports / "logit_diffs.png").exists() and reports.stat().st_ino == inode
    assert all(path.exists() for path in paths) and all(path.parent == reports for path in paths)
    assert {p.name for p in reports.iterdir()} == {p.name for p in paths} | set(OTHERS)
    assert _stagings(reports) == []


def test_a_staging_folder_left_by_a_killed_writer_is_removed(reports):
    finished = subprocess.Popen(["true"])  # noqa: S603,S607  (a pid no process has now)
    finished.wait()
    stale = reports.parent / f".reports.set-{finished.pid}-abcdef.tmp"
    stale.mkdir()
    (stale / "summary.md").write_text("half a set")
    write_reports(_report("second"), reports, _prov("02"))
    assert not stale.exists()
    _assert_one_whole_set(reports, "02", "second")


def test_the_set_is_every_file_a_compare_writes():
    assert SET_FILES == {*(f"{name}.csv" for name in COLUMNS), "curves.png", "confusion.png", "logit_diffs.png",
                         "summary.md"}
