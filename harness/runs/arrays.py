"""Arrays on disk as .npz without pickles: byte-reproducible writing, bounded reading that refuses pickled objects."""

from __future__ import annotations

import math
import os
import stat
import zipfile
from pathlib import Path

import numpy as np

# The most bytes one .npz may unpack to, all members together. The largest honest file is a resume checkpoint
# of VGG11(-BN) with Adam: 35 MiB of weights, twice that of moments, metric rows: about 110 MiB. 1 GiB leaves
# room for bigger models while a hostile file stays well under the 1.5 GiB a reader may ever take.
MAX_ARRAY_BYTES = 2**30
_ZIP_SLACK = 2**20  # zip and .npy headers on top of the data: a stored file is at most this much bigger
_CHUNK = 2**20  # members are read this many bytes at a time straight into the array, never whole


class ArrayLimitError(ValueError):
    """A .npz member that claims more than the file or the caller allows, or that is no plain numeric array."""


class ArrayMismatch(ArrayLimitError):
    """A member whose shape or dtype differs from what the caller expects (e.g. another model's weights)."""


# What reading a bad file raises: EOFError (empty), BadZipFile (not a zip, truncated, bad CRC), ValueError
# (pickled objects, a corrupt .npy header, ArrayLimitError), OSError (missing, unreadable), TypeError (kept
# for callers that caught np.load's errors).
READ_ERRORS = (OSError, ValueError, EOFError, TypeError, zipfile.BadZipFile)

# Member name -> (shape, dtype); a None dimension or dtype accepts any.
Expected = dict[str, tuple[tuple, object]]


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


def read_arrays(path: Path, expected: Expected | None = None,
                max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """Every member of a .npz by name; a pickled member is refused, never run, and no claim is trusted.

    Sizes are checked before anything is allocated: the file's size, each member's sizes in the zip
    directory, and each ``.npy`` header's shape and dtype, against ``max_bytes`` and against the bytes the
    member really holds. Then exactly the claimed bytes are read, in chunks, into the array.

    Args:
        path: the .npz file.
        expected: shape and dtype by member name (without ``.npy``) for the members the caller knows; a
            ``None`` dimension or dtype accepts any. Members not named here are bounded by ``max_bytes`` only.
        max_bytes: the most bytes all arrays together may take.

    Returns:
        Arrays by member name, writable, in the dtype and order the file stores.

    Raises:
        One of ``READ_ERRORS`` for a missing, unreadable, corrupt or oversized file (``ArrayLimitError`` for
        a claim beyond a limit, ``ArrayMismatch`` for a shape the caller did not expect): the caller says
        which file it was.
    """
    info = os.stat(path)
    # A FIFO would block and a device never ends; a directory is left to open() and its usual error.
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
        raise ArrayLimitError("not a regular file")
    if info.st_size > max_bytes + _ZIP_SLACK:
        raise ArrayLimitError(f"the file has {info.st_size} bytes, more than the {max_bytes}-byte cap")
    arrays: dict[str, np.ndarray] = {}
    left = max_bytes
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            name = member.filename.removesuffix(".npy")
            if name == member.filename:
                raise ArrayLimitError(f"member {member.filename} is not a .npy array")
            # The directory's sizes bound a deflate bomb before one byte of it is inflated; zipfile stops
            # at file_size and checks the CRC, so a directory that lies about it cannot read further either.
            if member.file_size > left + _ZIP_SLACK:
                raise ArrayLimitError(f"member {member.filename} unpacks to {member.file_size} bytes, more than "
                                      f"the {left} bytes left of the {max_bytes}-byte cap")
            arrays[name] = _read_member(archive, member, (expected or {}).get(name), left)
            left -= arrays[name].nbytes
    return arrays


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, expected, left: int) -> np.ndarray:
    """One member: its .npy header checked against the limits, then exactly the bytes it claims."""
    with archive.open(member) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:  # 3.0 only exists for unicode field names of structured dtypes, refused below anyway
            raise ArrayLimitError(f"member {member.filename} has .npy format version {version}; expected 1.0 or 2.0")
        if dtype.hasobject:
            raise ValueError(f"member {member.filename} holds pickled objects; refusing to load them")
        if dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize == 0:
            raise ArrayLimitError(f"member {member.filename} has dtype {dtype}; expected plain numbers")
        if expected is not None:  # first: another model's weights are best told by the shape they differ in
            _check_expected(member.filename, shape, dtype, expected)
        if any(dim < 0 for dim in shape):
            raise ArrayLimitError(f"member {member.filename} claims the negative shape {shape}")
        # Python ints: a hostile shape cannot overflow the product.
        size = math.prod(shape) * dtype.itemsize
        if size > left:
            raise ArrayLimitError(f"member {member.filename} claims shape {shape} of {dtype}, i.e. {size} bytes, "
                                  f"more than the {left} bytes left of the cap")
        if handle.tell() + size != member.file_size:
            raise ArrayLimitError(f"member {member.filename} claims shape {shape} of {dtype}, i.e. {size} bytes, "
                                  f"but holds {member.file_size - handle.tell()}")
        flat = np.empty(size, np.uint8)
        view, done = memoryview(flat), 0
        while done < size:
            got = handle.readinto(view[done:done + _CHUNK])
            if not got:
                raise EOFError(f"member {member.filename} ends after {done} of its {size} bytes")
            done += got
        handle.read(1)  # at the end of the member: zipfile checks its CRC now
    array = flat.view(dtype)
    # A Fortran-order .npy stores the reversed shape C-ordered, as np.load reads it.
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


def _check_expected(filename: str, shape: tuple[int, ...], dtype: np.dtype, expected) -> None:
    want_shape, want_dtype = expected
    if len(shape) != len(want_shape) or any(w is not None and w != s for s, w in zip(shape, want_shape)):
        wanted = str(tuple(want_shape)).replace("None", "N")
        raise ArrayMismatch(f"{filename.removesuffix('.npy')} has shape {shape}, expected {wanted}")
    if want_dtype is not None and dtype != np.dtype(want_dtype):
        raise ArrayMismatch(f"{filename.removesuffix('.npy')} has dtype {dtype}, expected {np.dtype(want_dtype)}")
