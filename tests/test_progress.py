"""Progress: a labelled bar on a terminal, one plain line per finished unit of work elsewhere, nothing when quiet."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from harness.progress import Progress, format_seconds
from tests.support import REPO_ROOT


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_go_where_no_bar_is_shown():
    log = io.StringIO()
    with Progress("pytorch train", 10, stream=log) as progress:
        progress.update(10)
        progress.line("epoch 1/1, loss 0.5")
    assert log.getvalue() == "pytorch train: epoch 1/1, loss 0.5\n"


def test_a_terminal_gets_a_labelled_bar_and_no_lines():
    screen = _Terminal()
    with Progress("parity lockstep", 4, stream=screen) as progress:
        progress.update(2)
        progress.line("not for a terminal")
    assert "parity lockstep" in screen.getvalue() and "not for a terminal" not in screen.getvalue()


@pytest.mark.parametrize("stream", [io.StringIO(), _Terminal()])
def test_quiet_shows_nothing(stream):
    with Progress("bench pytorch lenet5 b64", 3, quiet=True, stream=stream) as progress:
        progress.update(3)
        progress.line("x")
    assert stream.getvalue() == ""


def test_seconds_read_well():
    assert [format_seconds(s) for s in (3.25, 42, 185, 3725)] == ["3.2 s", "42 s", "3 min 05 s", "1 h 02 min"]


def test_a_run_in_a_log_prints_one_line_per_epoch(tmp_path):
    """stderr to a file (CI, `| tee`): no bar, a plain line per epoch naming the backend."""
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--backend", "pytorch", "--dataset", "synthetic",
                           "--epochs", "2", "--limit-train", "64", "--limit-test", "32", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("pytorch train: epoch")]
    assert len(lines) == 2 and lines[1].startswith("pytorch train: epoch 2/2, loss ")
    assert all(word in lines[0] for word in ("test accuracy", "images/s", "elapsed", "ETA"))
    assert "\r" not in done.stderr  # no bar redraws in a log
