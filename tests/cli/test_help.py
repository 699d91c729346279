"""The command line's own text: help that lists valid values and defaults, typo suggestions, `harness list`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from harness.backend import backend_names
from harness.cli.main import build_parser, main
from harness.data.registry import DATASETS, TORCHVISION_CLASSES
from harness.model.zoo import MODELS
from tests.support import REPO_ROOT

WIDTH = 80


def _subparsers(parser: argparse.ArgumentParser, prog: str = "harness"):
    """(prog, parser) for every command and subcommand, e.g. ("harness data download", ...)."""
    yield prog, parser
    for action in parser._actions:  # argparse offers no public list of a parser's arguments
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, f"{prog} {name}")


@pytest.fixture
def parsers(monkeypatch) -> dict[str, argparse.ArgumentParser]:
    monkeypatch.setenv("COLUMNS", str(WIDTH))  # argparse wraps help at the terminal's width
    return dict(_subparsers(build_parser()))


def _help(parsers, prog: str) -> str:
    return " ".join(parsers[prog].format_help().split())  # one line: wrapping is the formatter's business


def test_every_command_is_reached(parsers):
    assert {"harness run", "harness compare", "harness report", "harness sweep", "harness parity", "harness port",
            "harness bench", "harness list", "harness data", "harness data download", "harness import"} <= set(parsers)


def test_help_lists_the_valid_models_and_datasets(parsers):
    models, datasets = ", ".join(MODELS), ", ".join(DATASETS)
    for prog in ("harness run", "harness compare", "harness parity"):
        text = _help(parsers, prog)
        assert f"--model MODEL default: lenet5; one of {models} " in text, prog
        assert f"--dataset DATASET default: mnist-sample; one of {datasets} " in text, prog
        assert "--device DEVICE default: cpu; auto, cpu, cuda[:N] or npu[:N]" in text, prog
    bench = _help(parsers, "harness bench")
    assert f"--models MODELS a comma-separated subset of {models} (default lenet5)" in bench
    assert f"one of {datasets}" in bench
    assert f"NAME one of {', '.join(TORCHVISION_CLASSES)} " in _help(parsers, "harness data download")


def test_help_lists_backends_and_modes(parsers):
    backends = ", ".join(backend_names())
    for prog in ("harness compare", "harness bench"):
        assert f"--backends BACKENDS a comma-separated subset of {backends} (default pytorch,mindspore)" \
            in _help(parsers, prog), prog
    parity = _help(parsers, "harness parity")
    assert f"--backends BACKENDS two of {backends}, comma-separated (default pytorch,mindspore)" in parity
    assert "--mode MODE one of lockstep, synchronised, both (default both)" in parity


def test_every_option_with_a_default_shows_it(parsers):
    missing = []
    for prog, parser in parsers.items():
        for action in parser._actions:
            if action.default in (None, False, argparse.SUPPRESS) or isinstance(action, argparse._SubParsersAction):
                continue
            if "default" not in (action.help or ""):
                missing.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []
    assert "--repeats REPEATS timed runs per measurement; the median is reported (default 3)" \
        in _help(parsers, "harness bench")


def test_help_never_breaks_a_name_across_lines(parsers):
    text = parsers["harness run"].format_help()
    assert all(len(line) <= WIDTH for line in text.splitlines())
    for name in [*MODELS, *DATASETS]:
        assert name in text, name  # argparse's own wrapping would print `lenet-` and `sigmoid` on two lines


def _error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


def test_a_mistyped_flag_suggests_the_closest_and_names_the_subcommands_help(capsys):
    err = _error(capsys, "run", "--modle", "lenet5")
    assert err == "error: unrecognized arguments: --modle lenet5; did you mean --model? (see `harness run --help`)"
    err = _error(capsys, "bench", "--model=lenet5", "--repeat", "2")
    assert "did you mean --models for --model, --repeats for --repeat?" in err
    assert err.endswith("(see `harness bench --help`)")
    assert _error(capsys, "list", "--data-dri", "x").endswith("did you mean --data-dir? (see `harness list --help`)")
    assert _error(capsys, "run", "--xyzzy").endswith("--xyzzy (see `harness run --help`)")  # nothing close


# In help order: each command module registers its own (harness.cli.main.COMMANDS).
SUBCOMMANDS = "run, compare, report, parity, port, list, data, import, bench, sweep"


def test_a_mistyped_subcommand_or_choice_suggests_the_closest(capsys):
    err = _error(capsys, "compre")
    assert f"harness has no subcommand 'compre' (valid: {SUBCOMMANDS})" in err
    assert err.endswith("; did you mean compare? (see `harness --help`)")
    assert _error(capsys, "data", "downlod").endswith("did you mean download? (see `harness data --help`)")
    err = _error(capsys, "parity", "--mode", "lock")
    assert err.endswith("did you mean lockstep? (see `harness parity --help`)")


def test_a_missing_subcommand_lists_the_valid_ones(capsys):
    assert _error(capsys, "data") == "error: harness data needs a subcommand: download (see `harness data --help`)"
    assert _error(capsys).startswith(f"error: harness needs a subcommand: {SUBCOMMANDS}")


def test_list_reads_in_80_columns_and_cuts_no_name_or_path(tmp_path):
    data_dir = tmp_path / ("a-folder-name-long-enough-that-its-path-cannot-fit-on-an-80-column-line" * 2)
    data_dir.mkdir()
    done = subprocess.run([sys.executable, "-m", "harness", "list", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # The one exception to the width: a path longer than a line, alone on its line from column 0.
    too_long = [line for line in lines if len(line) > WIDTH]
    assert too_long and all(" " not in line and len(line.rstrip(",")) > WIDTH for line in too_long), too_long
    assert any(line.rstrip(",") == str(data_dir) for line in lines)  # whole, never cut
    words = done.stdout.replace(",", " ").split()
    for name in [*MODELS, *DATASETS, *backend_names()]:
        assert name in words, name
    assert "61,706" in done.stdout and "recipes:" in lines
