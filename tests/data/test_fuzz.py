"""Property-based fuzzing of every reader of untrusted input: dataset files and settings.

Each property feeds random bytes, or a valid file mutated (truncated, flipped
bytes, a random tail, gzipped or not), and accepts exactly two outcomes: data
that satisfies the reader's contract, or a one-line HarnessError. Any other
exception is a bug in the reader.
"""

from __future__ import annotations

import gzip
import json
import math
import pickle
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.config import (SECTIONS, RunConfig, build_config, config_from_dict, config_from_json, read_settings_file,
                            valid_keys)
from harness.data import readers
from harness.errors import HarnessError
from tests.support import py2_cifar_pickle

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def _file(data: bytes, name: str = "input"):
    """A fresh temporary file per example (function fixtures are shared across hypothesis examples)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        yield path


def _read(reader, data: bytes, name: str = "input"):
    """``reader(file)``, or None after checking the HarnessError is one line naming the file."""
    with _file(data, name) as path:
        try:
            return reader(path)
        except HarnessError as error:
            message = str(error)
            assert "\n" not in message and str(path) in message, message
            return None


@st.composite
def _mutated(draw, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid file, then some of: truncated, bytes flipped, a random tail, gzipped."""
    data = bytearray(draw(valid))
    if data and draw(st.booleans()):
        del data[draw(st.integers(0, len(data) - 1)):]
    for _ in range(draw(st.integers(0, 3)) if data else 0):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    data += draw(st.binary(max_size=16)) if draw(st.booleans()) else b""
    return gzip.compress(bytes(data), mtime=0) if draw(st.booleans()) else bytes(data)


def _fuzzed(valid: st.SearchStrategy[bytes], heads: list[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes, a format's magic + random bytes, or a mutated valid file."""
    random_tail = st.builds(bytes.__add__, st.sampled_from(heads), st.binary(max_size=64))
    return st.one_of(st.binary(max_size=64), random_tail, valid, _mutated(valid))


def _plain(data: bytes) -> bytes:
    return gzip.decompress(data) if data.startswith(readers.GZIP_MAGIC) else data


# --- IDX ---------------------------------------------------------------------------------------


@st.composite
def _idx_files(draw) -> bytes:
    code = draw(st.sampled_from(sorted(readers.IDX_DTYPES)))
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    payload = draw(st.binary(min_size=math.prod(shape) * readers.IDX_DTYPES[code].itemsize,
                             max_size=math.prod(shape) * readers.IDX_DTYPES[code].itemsize))
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


@FUZZ
@given(_fuzzed(_idx_files(), [b"\x00\x00\x08\x01", b"\x00\x00\x0d\x03", b"\x00\x00\x0e\x00", b"\x1f\x8b"]))
def test_idx(data):
    array = _read(readers.read_idx, data)
    if array is not None:
        plain = _plain(data)
        assert array.dtype.isnative and array.dtype == readers.IDX_DTYPES[plain[2]].newbyteorder("=")
        assert array.shape == struct.unpack_from(f">{array.ndim}I", plain, 4)
        assert 4 + 4 * array.ndim + array.nbytes == len(plain) and array.flags.writeable


# --- CIFAR-10 ----------------------------------------------------------------------------------


def _check_images(images: np.ndarray, labels: np.ndarray, shape: tuple[int, ...]) -> None:
    assert images.dtype == np.uint8 and images.shape == (len(labels), *shape)
    assert labels.dtype == np.int64 and labels.shape == (len(images),)
    assert ((labels >= 0) & (labels <= 9)).all()


_labels = st.lists(st.integers(0, 11), max_size=3)


@st.composite
def _cifar_binary(draw) -> bytes:
    labels = draw(_labels)
    return b"".join(bytes([label]) + draw(st.binary(min_size=3072, max_size=3072)) for label in labels)


@FUZZ
@given(_fuzzed(_cifar_binary(), [b"\x00", b"\x1f\x8b"]))
def test_cifar_binary_batch(data):
    result = _read(readers.read_cifar_binary_batch, data)
    if result is not None:
        _check_images(*result, readers.CIFAR_IMAGE_SHAPE)
        assert len(result[1]) * readers.CIFAR_RECORD_BYTES == len(_plain(data))


@st.composite
def _cifar_pickles(draw) -> bytes:
    labels = draw(_labels)
    images = np.frombuffer(draw(st.binary(min_size=3072 * len(labels), max_size=3072 * len(labels))),
                           np.uint8).reshape(len(labels), 3072)
    if draw(st.booleans()):
        return py2_cifar_pickle(images, labels)
    return pickle.dumps({b"data": images, b"labels": labels}, protocol=4)


# Values that unpickle without a forbidden import, to reach the checks after unpickling.
_leaves = st.one_of(st.none(), st.integers(-2, 2**70), st.floats(), st.binary(max_size=8), st.text(max_size=4),
                    st.builds(np.array, st.lists(st.integers(0, 255), max_size=4)))
_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from([b"data", b"labels", "data", 1]), inner, max_size=3), max_leaves=8)


@FUZZ
@given(st.one_of(_fuzzed(_cifar_pickles(), [b"\x80\x02}", b"\x80\x04\x95"]),
                 st.builds(lambda batch: pickle.dumps(batch, protocol=4),
                           st.dictionaries(st.sampled_from([b"data", b"labels", b"x"]), _values, max_size=3))))
def test_cifar_python_batch(data):
    result = _read(readers.read_cifar_python_batch, data, "data_batch_1")
    if result is not None:
        _check_images(*result, readers.CIFAR_IMAGE_SHAPE)


# --- mnist-sample CSV --------------------------------------------------------------------------


@st.composite
def _csv_files(draw) -> bytes:
    # Pixels drawn as bytes: hypothesis draws 784 bytes far faster than 784 integers.
    rows = [[*draw(st.binary(min_size=784, max_size=784)), draw(st.integers(0, 12))]
            for _ in range(draw(st.integers(1, 2)))]
    return "\n".join(",".join(map(str, row)) for row in rows).encode()


_csv_text = st.text(alphabet="0123456789,-.e #\n\t\r\x00é", max_size=64).map(str.encode)


@FUZZ
@given(st.one_of(_fuzzed(_csv_files(), [b"0,", b"\x1f\x8b"]), _csv_text))
def test_mnist_sample_csv(data):
    result = _read(readers.read_mnist_sample_csv, data, "mnist_5k.csv.gz")
    if result is not None:
        _check_images(*result, (1, 28, 28))


# --- settings: TOML files, flat dicts, config.json ---------------------------------------------


def _check_config(config: RunConfig) -> None:
    """A built config: every field has its declared type and survives the JSON round trip."""
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            value = getattr(getattr(config, section), f.name)
            kinds = {"int": int, "float": float, "bool": bool, "str": str, "tuple[int,": tuple}
            kind = kinds[str(f.type).split(" ")[0]]
            assert (value is None and "None" in str(f.type)) or type(value) is kind, (f.name, value)
            assert kind is not tuple or all(type(item) is int for item in value), (f.name, value)
    assert config_from_json(json.dumps(config.to_dict())) == config


def _build(make, argument):
    """``make(argument)`` gives a config of the right types, or a one-line HarnessError."""
    try:
        config = make(argument)
    except HarnessError as error:
        assert "\n" not in str(error)
        return
    _check_config(config)


_any_value = st.one_of(st.none(), st.booleans(), st.integers(-2**65, 2**65), st.floats(), st.text(max_size=8),
                       st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                             max_size=2))
# Plausible values as well, so that many examples get past the type checks to the range checks.
_plausible = st.one_of(st.integers(-2, 70_000), st.floats(-1, 11), st.sampled_from(
    ["sgd", "adam", "adamw", "onecycle", "cosine", "step", "pad", "resize", "all", "weights", "relu", "max"]),
    st.sampled_from([0.0, 1e-8, 0.5, 0.99, float("nan"), float("inf"), -float("inf")]))
_flat = st.dictionaries(st.sampled_from(valid_keys()), st.one_of(_any_value, _plausible), max_size=8)
# Unknown keys too, control characters included (they appear in the message).
_unknown = st.dictionaries(st.one_of(st.sampled_from(valid_keys()), st.text(max_size=4)), _any_value, max_size=3)


@FUZZ
@given(st.one_of(_flat, _unknown))
def test_build_config(settings_):
    _build(build_config, settings_)


@FUZZ
@given(st.dictionaries(st.sampled_from([*SECTIONS, "backend", "device", "other"]),
                       st.one_of(_flat, _any_value), max_size=5))
def test_config_from_dict(nested):
    _build(config_from_dict, nested)


def _nested(flat: dict) -> dict:
    """``RunConfig.to_dict()``'s layout for flat settings."""
    nested = {section: {f.name: flat[f.name] for f in fields(cls) if f.name in flat}
              for section, cls in SECTIONS.items()}
    return nested | {key: flat[key] for key in ("backend", "device") if key in flat}


_valid_json = _flat.map(lambda flat: json.dumps(_nested(flat)))


@FUZZ
@given(st.one_of(st.text(max_size=64), _valid_json,
                 _mutated(_valid_json.map(str.encode)).map(lambda b: b.decode("utf-8", "replace"))))
def test_config_from_json(text):
    _build(config_from_json, text)


def _toml(flat: dict) -> bytes:
    """Flat TOML of simple values (enough for mutations to start from a valid file)."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in flat.items()
             if isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value))]
    return ("\n".join(lines) + '\n[about]\ntutorial = "x"\n').encode()


@FUZZ
@given(st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode),
                 _fuzzed(_flat.map(_toml), [b"epochs = ", b"[about]\n", b"\xef\xbb\xbf"])))
def test_settings_file(data):
    flat = _read(read_settings_file, data, "settings.toml")
    if flat is not None:
        assert isinstance(flat, dict) and "about" not in flat
        _build(build_config, flat)
