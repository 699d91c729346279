"""Arrays on disk as .npz without pickles: byte-reproducible writing, reading that refuses pickled objects."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

# What np.load raises for a bad file: EOFError (empty), BadZipFile (truncated), TypeError (a bare .npy
# array is no context manager), ValueError (pickled objects), OSError (missing, unreadable).
READ_ERRORS = (OSError, ValueError, EOFError, TypeError, zipfile.BadZipFile)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as an uncompressed .npz that ``np.load(allow_pickle=False)`` reads.

    Unlike ``np.savez``, the bytes depend on the arrays alone: every member gets
    the same fixed timestamp, so equal weights give byte-identical files.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(value), allow_pickle=False)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every member of a .npz by name; a pickled member is refused, never run.

    Raises:
        One of ``READ_ERRORS`` for a missing, unreadable or corrupt file: the caller says which file it was.
    """
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
