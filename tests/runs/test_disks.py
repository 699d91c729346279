"""Disks that refuse writes (full, read-only, no permission, name too long): one line, exit 2, run.json honest."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import harness.runs.files as files
import harness.training.run as run_module
from harness.backend import is_installed
from harness.cli.main import main
from harness.errors import HarnessError
from harness.report.folder import write_reports
from harness.report.tables import Report
from harness.training.checkpoint import CHECKPOINT_NAME

pytestmark = pytest.mark.skipif(not is_installed("pytorch"), reason="needs the pytorch backend")

TINY = ["--backend", "pytorch", "--model", "lenet-tiny", "--dataset", "synthetic", "--limit-train", "64",
        "--limit-test", "32", "--epochs", "1", "--batch-size", "32", "--quiet"]
# As tests/training/test_resume.py: 2 epochs of 16 steps, a checkpoint every 5 steps lands mid-epoch.
TWO_EPOCHS = ["--backend", "pytorch", "--model", "lenet5", "--dataset", "synthetic", "--limit-train", "512",
              "--limit-test", "64", "--epochs", "2", "--batch-size", "32", "--quiet", "--checkpoint-every", "5"]
LEFTOVERS = (".checkpoint.npz.x.tmp.npz", ".model.onnx.k1ll3d.tmp.onnx")


def _refuse(monkeypatch, code: int, names: set[str], then: frozenset[str] = frozenset()) -> None:
    """Make the rename that puts any of ``names`` in place fail with ``code``, as that disk would; ``then``: also
    refuse these names once the first refusal happened (a disk that stays full)."""
    replace = os.replace
    names = set(names)

    def refused(source, target, *args, **kwargs):
        if Path(target).name in names:
            names.update(then)
            raise OSError(code, os.strerror(code), str(target))
        return replace(source, target, *args, **kwargs)
    monkeypatch.setattr(files.os, "replace", refused)


def _only_run(out: Path) -> Path:
    (run_dir,) = [path for path in out.iterdir() if path.is_dir()]
    return run_dir


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err.strip()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENAMETOOLONG])
def test_a_refused_artefact_write_is_one_line_exit_2_and_the_run_is_marked_failed(tmp_path, monkeypatch, capsys,
                                                                                  code):
    _refuse(monkeypatch, code, {"weights.npz"})
    assert main(["run", *TINY, "--out", str(tmp_path)]) == 2
    line = _error_line(capsys)
    name = errno.errorcode[code]
    assert f"({name})" in line and "weights.npz" in line and "could not write" in line
    run_dir = _only_run(tmp_path)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and name in info["error"]
    assert not list(run_dir.glob(".*.tmp*"))


def test_when_run_json_cannot_be_marked_either_the_one_line_says_so(tmp_path, monkeypatch, capsys):
    _refuse(monkeypatch, errno.ENOSPC, {"model.onnx"}, then=frozenset({"run.json"}))
    assert main(["run", *TINY, "--out", str(tmp_path)]) == 2
    line = _error_line(capsys)
    assert "model.onnx" in line and "(ENOSPC)" in line and "run.json could not be marked failed either" in line


def test_a_too_long_out_is_one_line(tmp_path, capsys):
    assert main(["run", *TINY, "--out", str(tmp_path / ("x" * 300))]) == 2
    assert "(ENAMETOOLONG)" in _error_line(capsys)


def _interrupted_run(out: Path, monkeypatch, capsys) -> Path:
    """A run stopped after its first checkpoint (step 5), with run.json saying ``interrupted``."""
    write_checkpoint = run_module.write_checkpoint

    def then_stop(run_dir, state):
        write_checkpoint(run_dir, state)
        raise KeyboardInterrupt  # as if Ctrl-C landed right after the checkpoint
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "write_checkpoint", then_stop)
        assert main(["run", *TWO_EPOCHS, "--out", str(out)]) == 130
    capsys.readouterr()
    run_dir = _only_run(out)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert (run_dir / CHECKPOINT_NAME).exists()
    return run_dir


def test_resume_removes_temporaries_a_killed_run_left(tmp_path, monkeypatch, capsys):
    run_dir = _interrupted_run(tmp_path, monkeypatch, capsys)
    for name in LEFTOVERS:
        (run_dir / name).write_bytes(b"half a file")
    with monkeypatch.context() as patch:  # the next start removes them, even when that start then fails
        patch.setattr(run_module, "train", lambda *a, **k: (_ for _ in ()).throw(HarnessError("stopped here")))
        assert main(["run", "--resume", str(run_dir), "--quiet"]) == 2
    assert "stopped here" in _error_line(capsys)
    assert not list(run_dir.glob(".*.tmp*"))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    for name in LEFTOVERS:
        (run_dir / name).write_bytes(b"half a file")
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0, capsys.readouterr().err
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert not list(run_dir.glob(".*.tmp*")) and not (run_dir / CHECKPOINT_NAME).exists()


def test_resume_on_a_read_only_disk_is_one_line_and_leaves_run_json_as_it_was(tmp_path, monkeypatch, capsys):
    run_dir = _interrupted_run(tmp_path, monkeypatch, capsys)
    before = (run_dir / "run.json").read_bytes()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 2
    line = _error_line(capsys)
    assert "(EROFS)" in line and "run.json" in line and "read-only" in line
    assert (run_dir / "run.json").read_bytes() == before


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs, where this machine lets us mount one (root in a permissive container); else skipped."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],  # noqa: S603,S607
                             capture_output=True, check=False) if os.geteuid() == 0 else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and the right to mount)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)  # noqa: S603,S607


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until about ``leave`` bytes are free."""
    stats = os.statvfs(disk)
    with open(disk / "filler", "wb") as filler:
        filler.write(b"\0" * max(stats.f_bavail * stats.f_frsize - leave, 0))


@pytest.mark.parametrize("leave", [0, 48 * 1024])
def test_a_real_full_disk_gives_one_line_and_no_run_left_running(small_disk, capsys, leave):
    _fill(small_disk, leave)
    assert main(["run", *TINY, "--out", str(small_disk / "runs")]) == 2
    line = _error_line(capsys)
    assert "(ENOSPC)" in line
    run_dir = _only_run(small_disk / "runs")
    status = json.loads((run_dir / "run.json").read_text())["status"] if (run_dir / "run.json").exists() else None
    assert status == "failed" or "run.json could not be marked failed" in line, (status, line)
    assert not list(run_dir.glob(".*.tmp*"))


def test_a_report_set_on_a_real_full_disk_keeps_the_previous_one(small_disk):
    reports = small_disk / "reports"
    frame = pd.DataFrame([{"run_id": "r", "backend": "pytorch", "model": "lenet5", "dataset": "synthetic"}])
    write_reports(Report({"runs": frame}, {}, "passed", "first"), reports, {"config_hash": "a"})
    before = {path.name: path.read_bytes() for path in reports.iterdir()}
    _fill(small_disk, 0)
    big = Report({"runs": frame}, {"a vs b": np.random.default_rng(0).random(10_000)}, "passed", "second")
    with pytest.raises(HarnessError, match=r"\(ENOSPC\).*previous report, unchanged"):
        write_reports(big, reports, {"config_hash": "b"})
    assert {path.name: path.read_bytes() for path in reports.iterdir()} == before
    assert sorted(path.name for path in small_disk.iterdir()) == ["filler", "reports"]  # no staging folder left
