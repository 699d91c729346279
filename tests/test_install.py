"""A non-editable install works from any folder: package data found, no top-level ``backends`` claimed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv

import pytest

from tests.support import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip install .`` (not editable) of a copy of the repository into a fresh venv that sees this
    environment's dependencies, so nothing is downloaded; returns (venv bin folder, its site-packages)."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # pip builds in the tree it installs: keep build/ out of the repository
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for name in ("harness", "backends"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    # The wheel is built by this environment's setuptools (the venv's own bundled one predates ext-modules in
    # pyproject.toml), C extension included, and installed into the fresh venv.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--wheel-dir", str(root / "wheel"), str(source)],
                   check=True, capture_output=True)
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    site = next((env_dir / "lib").glob("python*/site-packages"))
    (site / "harness-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, mindspore, ...
    subprocess.run([env_dir / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps",
                    "--disable-pip-version-check", *map(str, (root / "wheel").glob("*.whl"))],
                   check=True, capture_output=True)
    return env_dir / "bin", site


def test_the_install_claims_no_top_level_backends(installed):
    _, site = installed
    assert (site / "harness" / "backends" / "pytorch" / "backend.py").is_file()
    assert (site / "harness" / "tolerances.toml").is_file() and (site / "harness" / "recipes").is_dir()
    assert not (site / "backends").exists()
    if list((REPO_ROOT / "backends" / "pytorch").glob("bernoulli*.so")):  # built here, so a compiler was found
        assert list((site / "harness" / "backends" / "pytorch").glob("bernoulli*.so"))  # Dropout's noise in C


def test_list_shows_the_recipes_from_another_folder(installed, tmp_path):
    bin_dir, _ = installed
    done = subprocess.run([bin_dir / "harness", "list"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    recipes = done.stdout[done.stdout.index("recipes:"):]
    assert "lenet5-mnist" in recipes and "vgg11-cifar10" in recipes and "demo" in recipes


def test_compare_completes_from_another_folder(installed, tmp_path):
    bin_dir, site = installed
    command = [bin_dir / "harness", "compare", "--model", "lenet5", "--dataset", "mnist-sample", "--epochs", "1",
               "--no-control", "--quiet", "--limit-train", "512", "--limit-test", "256"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    # One epoch on 512 images does not teach LeNet5: every check runs and passes but the trained pair's,
    # which cannot decide (exit 3). What matters here: the installed harness completed a comparison.
    assert done.returncode == 3, done.stdout + done.stderr
    assert "verdict: INCONCLUSIVE (1 of 21 checks could not decide, 20 passed" in done.stdout
    where = subprocess.run([bin_dir / "python", "-c", "import harness; print(harness.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # the installed copy ran, not the repository's
    assert (tmp_path / "reports" / "summary.md").is_file() and sys.executable  # reports beside the user


def test_the_install_holds_every_package(installed):
    # pyproject lists packages by hand (backends/ installs as harness.backends): a new package missed there
    # would import from a checkout and fail installed.
    _, site = installed
    expected = {path.parent.relative_to(REPO_ROOT / "harness") for path in (REPO_ROOT / "harness").rglob("__init__.py")}
    for package in sorted(expected):
        assert (site / "harness" / package / "__init__.py").is_file(), f"harness/{package} is not installed"
    done = subprocess.run([installed[0] / "harness", "sweep", "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "SWEEP" in done.stdout.upper(), done.stderr
