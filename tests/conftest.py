"""Shared fixtures: the backend fixture over installed frameworks, and real-data lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import data
from harness.backend import backend_names, get_backend, is_installed

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption("--backends", default=None,
                     help="comma-separated backends to test (default: every installed one)")


def selected_backends(config) -> list[str]:
    """Installed backends, limited by --backends."""
    wanted = config.getoption("--backends")
    names = wanted.split(",") if wanted else backend_names()
    return [name for name in names if is_installed(name)]


def pytest_generate_tests(metafunc):
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", selected_backends(metafunc.config))


@pytest.fixture
def backend(backend_name):
    """Each installed backend in turn (see --backends)."""
    return get_backend(backend_name)


@pytest.fixture(scope="session")
def both_backends(pytestconfig):
    """PyTorch and MindSpore together, for cross-backend checks; skipped unless both are installed."""
    names = selected_backends(pytestconfig)
    if not {"pytorch", "mindspore"} <= set(names):
        pytest.skip(f"needs pytorch and mindspore; installed and selected: {names}")
    return get_backend("pytorch"), get_backend("mindspore")


def real_data_root(name: str) -> Path:
    """A root holding the real dataset ``name`` (HARNESS_DATA_DIR or ../shared/datasets), or skip."""
    shared = REPO_ROOT.parent / "shared" / "datasets"
    for root in filter(None, [os.environ.get("HARNESS_DATA_DIR"), shared]):
        if Path(root).is_dir() and data.search_dataset(name, root)[0] is not None:
            return Path(root)
    if name == "fashion-mnist" and data.search_dataset(name, None)[0] is not None:
        return data.search_dataset(name, None)[0]
    pytest.skip(f"real {name} not found under HARNESS_DATA_DIR or {shared}")
