"""Runs and reports written at the same time: no shared run folder, no half-written file."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pandas as pd

from harness.cli.main import main
from harness.runs.folder import REQUIRED_FILES, create_run_dir

TINY = ["--backend", "pytorch", "--model", "lenet-tiny", "--dataset", "synthetic", "--limit-train", "64",
        "--limit-test", "32", "--epochs", "1", "--batch-size", "32", "--quiet"]


def _claim_folders(out: str, count: int) -> list[str]:
    return [create_run_dir(Path(out), "pytorch", "lenet5", "f" * 64).name for _ in range(count)]


def test_processes_creating_run_folders_at_once_never_share_one(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        claimed = pool.starmap(_claim_folders, [(str(tmp_path), 25)] * 4)
    names = [name for batch in claimed for name in batch]
    assert len(names) == 100 and len(set(names)) == 100  # all made within a second or two: same stem


def _in_threads(*argvs: list[str]) -> list[int]:
    codes: list[int] = [None] * len(argvs)

    def call(index: int) -> None:
        codes[index] = main(argvs[index])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(argvs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


def test_two_runs_started_at_once_with_one_out_get_their_own_complete_folders(tmp_path):
    assert _in_threads(["run", *TINY, "--out", str(tmp_path)], ["run", *TINY, "--out", str(tmp_path)]) == [0, 0]
    folders = sorted(tmp_path.iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert json.loads((folder / "run.json").read_text())["status"] == "completed"
        assert all((folder / name).stat().st_size > 0 for name in REQUIRED_FILES)
        assert not list(folder.glob(".*.tmp*"))  # no temporary file left behind


def test_reports_written_at_once_into_one_folder_stay_whole(tmp_path):
    assert main(["run", *TINY, "--out", str(tmp_path / "runs")]) == 0
    reports = tmp_path / "reports"
    # One backend's run alone is INCONCLUSIVE (exit 3): what matters here is that every report stays whole.
    assert main(["report", "--runs", str(tmp_path / "runs"), "--reports", str(reports)]) == 3
    expected = {path.name: len(pd.read_csv(path)) for path in reports.glob("*.csv")}
    seen_partial: list[str] = []
    stop = threading.Event()

    def read_while_written() -> None:  # a reader must only ever see a whole old or a whole new file
        while not stop.is_set():
            for name, rows in expected.items():
                if len(pd.read_csv(reports / name)) != rows:
                    seen_partial.append(name)

    reader = threading.Thread(target=read_while_written)
    reader.start()
    argv = ["report", "--runs", str(tmp_path / "runs"), "--reports", str(reports)]
    codes = _in_threads(argv, argv, argv)
    stop.set()
    reader.join()
    assert codes == [3, 3, 3] and not seen_partial
    assert {path.name: len(pd.read_csv(path)) for path in reports.glob("*.csv")} == expected
    assert not list(reports.glob(".*.tmp*"))
