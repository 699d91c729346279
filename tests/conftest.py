"""Shared fixtures: the backend fixture over installed frameworks (helpers live in tests/support.py)."""

from __future__ import annotations

import pytest

from harness.backend import backend_names, get_backend, is_installed


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


@pytest.fixture
def core_left_free():
    """PyTorch on one thread, so a core is left free: there its trainer draws Dropout noise with the batches."""
    if not is_installed("pytorch"):
        yield
        return
    backend = get_backend("pytorch")
    threads = backend.threads()
    backend.set_threads(1)
    try:
        yield
    finally:
        backend.set_threads(threads)
