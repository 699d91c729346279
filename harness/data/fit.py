"""Fitting a loaded dataset to a model's input: pad or resize, scale, normalise.

``prepare`` turns uint8 ``RawData`` into the float32 ``Dataset`` every backend
trains on, with the same bits torchvision's ToTensor/Pad/Normalize would give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import FITS
from ..errors import DataError
from .batches import iterate_batches
from .registry import DatasetInfo, RawData


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset ready for training: float32 NCHW, normalised, fit to the model input."""

    info: DatasetInfo
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    source: str

    @property
    def pad_fill(self) -> tuple[float, ...]:
        """Per-channel value a raw 0 pixel becomes after normalisation (crop padding)."""
        return tuple(float(v) for v in normalised_zero(self.info))

    def train_batches(self, batch_size: int, seed: int, epoch: int, augment: bool = False):
        """``iterate_batches`` over the training split, with the right crop padding."""
        return iterate_batches(self.train_x, self.train_y, batch_size, seed, epoch,
                               augment=augment, fill=self.pad_fill)


def normalised_zero(info: DatasetInfo) -> np.ndarray:
    """Per-channel float32 value of a raw 0 pixel after ``prepare``: ``-mean / std``."""
    mean, std = np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32)
    return (np.float32(0) - mean) / std


def choose_fit(source: Sequence[int], target: Sequence[int], fit: str = "auto") -> str:
    """Decides how (C, H, W) images of ``source`` shape reach ``target``: 'none', 'pad' or 'resize'.

    'auto' picks none when equal, pad when the target is larger by an even margin
    on both sides (28 -> 32), else resize.

    Raises:
        DataError: unknown fit, channel counts that differ, or 'pad' that cannot work.
    """
    source, target = tuple(source), tuple(target)
    if fit not in FITS:
        raise DataError(f"unknown fit {fit!r}; expected one of {', '.join(FITS)}")
    if source[0] != target[0]:
        raise DataError(f"dataset images are {source} (C, H, W) but the model takes {target}: "
                        "channel counts differ; pick a dataset or model with matching channels")
    can_pad = all(t >= s and (t - s) % 2 == 0 for s, t in zip(source[1:], target[1:]))
    if fit == "pad" and not can_pad:
        raise DataError(f"cannot pad {source} to {target}: padding needs a target at least as large "
                        "with an even difference per side; use fit resize")
    if fit == "auto":
        return "none" if source == target else "pad" if can_pad else "resize"
    return fit


def _bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # torch's align_corners=False source index, in float32 like its CPU kernel.
    scale = np.float32(in_size / out_size)
    src = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    low = np.minimum(src.astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, np.clip(src - low, 0, 1).astype(np.float32)


def resize_bilinear(images: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize of float NCHW images to ``size`` = (H, W).

    Matches ``torch.nn.functional.interpolate(mode='bilinear', align_corners=False,
    antialias=False)``, computed separably: along W, then along H.
    """
    height, width = size
    images = np.asarray(images, np.float32)
    # np.take, not fancy indexing: it keeps C order, which is several times faster here.
    low, high, frac = _bilinear_taps(images.shape[3], width)
    rows = np.take(images, low, axis=3)
    rows *= 1 - frac
    rows += np.take(images, high, axis=3) * frac
    low, high, frac = _bilinear_taps(images.shape[2], height)
    out = np.take(rows, low, axis=2)
    out *= (1 - frac)[:, None]
    out += np.take(rows, high, axis=2) * frac[:, None]
    return out


def _to_model_input(images: np.ndarray, target: tuple[int, ...], method: str, info: DatasetInfo) -> np.ndarray:
    if method == "pad":
        # Zero raw pixels, like torchvision Pad before ToTensor; one allocation for pad and convert.
        out = np.zeros((len(images), *target), np.float32)
        top, left = (target[1] - images.shape[2]) // 2, (target[2] - images.shape[3]) // 2
        out[:, :, top:top + images.shape[2], left:left + images.shape[3]] = images
    else:
        out = images.astype(np.float32)
    out /= np.float32(255)  # as ToTensor: float32 division, so the bits match torchvision
    if method == "resize":
        out = resize_bilinear(out, target[1:])
    out -= np.asarray(info.mean, np.float32)[:, None, None]
    out /= np.asarray(info.std, np.float32)[:, None, None]
    return out


def _first(images: np.ndarray, labels: np.ndarray, limit: int | None, what: str):
    if limit is None:
        return images, labels
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise DataError(f"{what}={limit!r} must be a positive integer (or unset for all samples)")
    return images[:limit], labels[:limit]


def prepare(raw: RawData, input_shape: Sequence[int], fit: str = "auto", limit_train: int | None = None,
            limit_test: int | None = None) -> Dataset:
    """Turns ``raw`` into float32 NCHW fit to ``input_shape`` and normalised per channel.

    Args:
        raw: as from ``load_raw``.
        input_shape: the model's (C, H, W).
        fit: 'auto', 'pad' (zero border, even margins) or 'resize' (bilinear).
        limit_train: keep only the first N training samples.
        limit_test: keep only the first N test samples.

    Raises:
        DataError: bad shape, fit or limit, or channel counts that differ.
    """
    target = tuple(int(d) for d in input_shape)
    if len(target) != 3 or min(target) < 1:
        raise DataError(f"model input shape {tuple(input_shape)} should be (C, H, W) of positive ints")
    method = choose_fit(raw.info.image_shape, target, fit)
    train_images, train_y = _first(raw.train_images, raw.train_labels, limit_train, "limit_train")
    test_images, test_y = _first(raw.test_images, raw.test_labels, limit_test, "limit_test")
    return Dataset(raw.info, _to_model_input(train_images, target, method, raw.info),
                   train_y.astype(np.int64), _to_model_input(test_images, target, method, raw.info),
                   test_y.astype(np.int64), raw.source)
