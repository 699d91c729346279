"""Batches: epoch order, the last partial batch, and crop/flip augmentation, all in numpy.

Every backend trains on what ``iterate_batches`` yields, so the sample order and
every augmentation draw are fixed by (seed, epoch) alone, whatever the framework.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import DataError

AUGMENT_STREAM = 0xA06  # keeps augmentation draws apart from the shuffling stream
CROP_PADDING = 4
# The rows of several batches are gathered at once, up to this many bytes of images, and dealt out as views: the
# same bytes, fewer numpy calls. Between two framework steps every call runs with cold caches; the gather of one
# LeNet5 batch of 1 took 27 us there (3.8 alone) and 16 us a batch gathered 64 batches at a time.
GATHER_BYTES = 4 << 20


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches per epoch with the last partial batch kept."""
    return -(-n // batch_size)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of an epoch: ``np.random.default_rng([seed, epoch]).permutation(n)``.

    This exact formula is the contract every backend relies on to see the same batches.
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


def random_crop_flip(batch: np.ndarray, rng: np.random.Generator, fill: np.ndarray,
                     padding: int = CROP_PADDING) -> np.ndarray:
    """RandomCrop(padding) then RandomHorizontalFlip(0.5) on a float NCHW batch, vectorised.

    Draws, in order: ``rng.integers(0, 2 * padding + 1, (2, B))`` (row, column
    offsets) then ``rng.random(B) < 0.5`` (flips). ``fill`` is the per-channel
    padding value (``normalised_zero`` equals torchvision's zero pad before Normalize).
    """
    count, channels, height, width = batch.shape
    padded = np.empty((count, channels, height + 2 * padding, width + 2 * padding), np.float32)
    padded[...] = np.asarray(fill, np.float32).reshape(-1, 1, 1)
    padded[:, :, padding:padding + height, padding:padding + width] = batch
    offsets = rng.integers(0, 2 * padding + 1, size=(2, count))
    flips = rng.random(count) < 0.5
    windows = np.lib.stride_tricks.sliding_window_view(padded, (height, width), axis=(2, 3))
    out = np.ascontiguousarray(windows[np.arange(count), :, offsets[0], offsets[1]])
    out[flips] = out[flips, :, :, ::-1]
    return out


def iterate_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int, augment: bool = False,
                    shuffle: bool = True, fill: float | Sequence[float] | None = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields ``(xb float32 C-contiguous, yb int64)`` batches, the last partial one included.

    The order is ``epoch_permutation(len(x), seed, epoch)`` (or file order without
    shuffle); augmentation draws come from ``default_rng([seed, epoch, AUGMENT_STREAM])``,
    batch after batch, so (seed, epoch) fixes every byte for every backend. Batches are views into blocks
    of up to ``GATHER_BYTES`` gathered at once: memory of their own, never the dataset's.

    Args:
        fill: per-channel crop padding, required with ``augment`` (``Dataset.pad_fill``).
    """
    if len(x) != len(y):
        raise DataError(f"{len(x)} inputs but {len(y)} labels; counts must match")
    if batch_size < 1:
        raise DataError(f"batch_size={batch_size} must be a positive integer")
    if augment and fill is None:
        raise ValueError("iterate_batches(augment=True) needs fill=dataset.pad_fill: the normalised value of a "
                         "raw 0 pixel, so the crop padding matches torchvision RandomCrop before Normalize")
    order = epoch_permutation(len(x), seed, epoch) if shuffle else None
    rng = np.random.default_rng([seed, epoch, AUGMENT_STREAM]) if augment else None
    fill_values = np.broadcast_to(np.asarray(fill if augment else 0, np.float32), (x.shape[1],))
    # Whole batches per gather, so every batch starts where it would one at a time (the partial one stays last).
    chunk = batch_size * max(1, GATHER_BYTES // max(1, batch_size * x[:1].nbytes))
    for first in range(0, len(x), chunk):
        picked = slice(first, first + chunk) if order is None else order[first:first + chunk]
        # Own copies, so a consumer that edits its batch in place cannot reach the dataset: fancy indexing
        # (the shuffled case) already made one, a slice is a view and is copied here; never both.
        copy = True if order is None else None
        xs, ys = np.array(x[picked], np.float32, order="C", copy=copy), np.array(y[picked], np.int64, copy=copy)
        for start in range(0, len(xs), batch_size):
            xb, yb = xs[start:start + batch_size], ys[start:start + batch_size]
            yield (random_crop_flip(xb, rng, fill_values) if augment else xb), yb

