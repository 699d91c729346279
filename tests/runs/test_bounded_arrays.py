""".npz reading bounded by what the file and the caller allow: claims are checked before any allocation.

weights.npz, checkpoint.npz and predictions.npz all go through ``read_arrays``. A member's sizes in the zip
directory and its .npy header are claims: a deflate bomb or a header naming 2**40 elements must be refused
from the claim, in one line naming the file, not by running out of memory.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from harness.config import RunConfig
from harness.errors import HarnessError
from harness.model.weights import init_weights, load_weights
from harness.model.zoo import build_model
from harness.runs.arrays import READ_ERRORS, ArrayLimitError, ArrayMismatch, read_arrays, save_arrays
from harness.training.checkpoint import read_checkpoint

SPEC = build_model("lenet-tiny")


def _npy_header(shape: tuple[int, ...], descr: str = "<f4", fortran: bool = False) -> bytes:
    """A .npy header (format 1.0) that claims ``shape`` of ``descr``, written by numpy's public API."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return out.getvalue()  # magic, header length and the padded dict


def _npz(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def _honest(**extra: np.ndarray) -> dict[str, bytes]:
    """The members of lenet-tiny's initial weights as .npy bytes, plus ``extra``."""
    members = {}
    for name, value in {**init_weights(SPEC, 0), **extra}.items():
        out = io.BytesIO()
        np.lib.format.write_array(out, value, allow_pickle=False)
        members[name] = out.getvalue()
    return members


def test_round_trip_keeps_values_dtypes_order_and_writability(tmp_path):
    arrays = {"big_endian": np.arange(12, dtype=">f8").reshape(3, 4), "scalar": np.float32(3.5),
              "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
              "empty": np.zeros((0, 5), np.int64), "meta": np.frombuffer(b'{"a": 1}', np.uint8)}
    save_arrays(tmp_path / "a.npz", arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays)  # deflated members read the same way
    for name in ("a.npz", "c.npz"):
        got = read_arrays(tmp_path / name)
        assert set(got) == set(arrays)
        for key, value in arrays.items():
            value = np.asarray(value)
            assert got[key].dtype == value.dtype and got[key].shape == value.shape and np.array_equal(got[key], value)
            assert got[key].flags.writeable
        assert got["fortran"].flags.f_contiguous


def test_a_header_claiming_2_to_the_40_elements_is_refused_before_allocation(tmp_path):
    path = _npz(tmp_path / "w.npz", {"w": _npy_header((2**40,)) + bytes(64)})
    with pytest.raises(ArrayLimitError, match=r"w.npy claims shape \(1099511627776,\) of float32, i.e. 4398046511104 "
                                              r"bytes, more than the 1073741824 bytes left of the cap"):
        read_arrays(path)


def test_a_header_claiming_more_than_the_member_holds_is_refused(tmp_path):
    path = _npz(tmp_path / "w.npz", {"w": _npy_header((1000,)) + bytes(64)})
    with pytest.raises(ArrayLimitError, match=r"claims shape \(1000,\) of float32, i.e. 4000 bytes, but holds 64"):
        read_arrays(path)


def test_a_deflate_bomb_is_refused_by_its_directory_sizes(tmp_path, monkeypatch):
    path = _npz(tmp_path / "w.npz", {"w": _npy_header((2**24,)) + bytes(2**26)}, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2**18  # 64 MiB of zeros deflate to about 64 KB

    def inflate(*_args, **_kwargs):
        raise AssertionError("a member was opened: the directory alone should have refused it")
    monkeypatch.setattr(zipfile.ZipFile, "open", inflate)
    with pytest.raises(ArrayLimitError, match=r"member w.npy unpacks to 67108992 bytes, more than the 1048576 bytes"):
        read_arrays(path, max_bytes=2**20)


@pytest.mark.parametrize("dtype, what", [(np.dtype(object), "pickled objects"),
                                         (np.dtype([("a", "<f4")]), "expected plain numbers")])
def test_objects_and_structured_dtypes_are_refused(tmp_path, dtype, what):
    path = _npz(tmp_path / "w.npz", {"w": _npy_header((2,), np.lib.format.dtype_to_descr(dtype)) + bytes(16)})
    with pytest.raises(ValueError, match=what):
        read_arrays(path)


def test_a_member_that_is_no_npy_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "w.npz", "w") as archive:
        archive.writestr("data.pkl", b"\x80\x04N.")
    with pytest.raises(ArrayLimitError, match="member data.pkl is not a .npy array"):
        read_arrays(tmp_path / "w.npz")


def test_expected_shapes_are_checked_from_the_header(tmp_path):
    path = _npz(tmp_path / "p.npz", {"labels": _npy_header((3,), "<i8") + bytes(24),
                                     "logits": _npy_header((3, 7)) + bytes(84)})
    with pytest.raises(ArrayMismatch, match=r"logits has shape \(3, 7\), expected \(N, 10\)"):
        read_arrays(path, {"labels": ((None,), None), "logits": ((None, 10), None)})
    assert read_arrays(path, {"labels": ((None,), np.int64), "logits": ((None, 7), np.float32)})["logits"].shape \
        == (3, 7)
    with pytest.raises(ArrayMismatch, match="labels has dtype int64, expected float32"):
        read_arrays(path, {"labels": ((3,), np.float32)})


def test_fifos_and_devices_are_not_read(tmp_path):
    os.mkfifo(tmp_path / "fifo.npz")
    for path in (tmp_path / "fifo.npz", Path("/dev/zero")):
        with pytest.raises(ArrayLimitError, match="not a regular file"):
            read_arrays(path)


def test_a_file_bigger_than_the_cap_is_refused_by_its_size(tmp_path):
    path = tmp_path / "w.npz"
    with open(path, "wb") as handle:  # sparse
        handle.truncate(2**31)
    with pytest.raises(ArrayLimitError, match=f"the file has {2**31} bytes, more than the"):
        read_arrays(path)


def test_limit_errors_are_read_errors():
    assert issubclass(ArrayLimitError, READ_ERRORS) and issubclass(ArrayMismatch, ArrayLimitError)


# --- through the callers: one line naming the file -------------------------------------------------


def _one_line(error: pytest.ExceptionInfo, path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_weights_with_a_huge_claim_are_one_line(tmp_path):
    members = _honest()
    members["conv1.weight"] = _npy_header((2**40,)) + bytes(64)
    path = _npz(tmp_path / "weights.npz", members)
    with pytest.raises(HarnessError) as error:
        load_weights(SPEC, path)
    message = _one_line(error, path)
    assert "conv1.weight has shape (1099511627776,), expected (4, 1, 3, 3)" in message
    assert "pass the matching --model" in message


def test_weights_may_not_unpack_to_more_than_twice_the_model(tmp_path):
    path = _npz(tmp_path / "weights.npz", _honest(extra=np.zeros(2**20, np.float32)))
    with pytest.raises(HarnessError) as error:
        load_weights(SPEC, path)
    assert "cannot read weights" in _one_line(error, path) and "-byte cap" in str(error.value)


def test_weights_as_deflate_bomb_are_one_line(tmp_path):
    path = _npz(tmp_path / "weights.npz", _honest(extra=np.zeros(2**24, np.float32)), zipfile.ZIP_DEFLATED)
    with pytest.raises(HarnessError) as error:
        load_weights(SPEC, path)
    assert "member extra.npy unpacks to 67108992 bytes" in _one_line(error, path)


def test_checkpoint_with_a_huge_claim_is_one_line(tmp_path):
    members = {f"weights/{name}": data for name, data in _honest().items()}
    members["optimizer/conv1.weight.exp_avg"] = _npy_header((2**40,)) + bytes(64)
    path = _npz(tmp_path / "checkpoint.npz", members)
    with pytest.raises(HarnessError) as error:
        read_checkpoint(path, SPEC, RunConfig().config_hash)
    assert "cannot read checkpoint" in _one_line(error, path) and "claims shape (1099511627776,)" in str(error.value)


def test_checkpoint_weights_are_checked_against_the_spec_before_reading(tmp_path):
    members = {f"weights/{name}": data for name, data in _honest().items()}
    members["weights/fc1.weight"] = _npy_header((2**20, 2**20)) + bytes(64)
    path = _npz(tmp_path / "checkpoint.npz", members)
    with pytest.raises(HarnessError) as error:
        read_checkpoint(path, SPEC, RunConfig().config_hash)
    assert "weights/fc1.weight has shape (1048576, 1048576), expected" in _one_line(error, path)
