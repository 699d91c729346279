"""Initial weights, generated once in numpy from the seed and loaded into every backend.

The frameworks' own initialisers use the same formulas but different random
streams, so "same seed" would not mean "same weights"; generating them here does.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import HarnessError
from .spec import BatchNorm2d, Conv2d, Linear, ModelSpec

Weights = dict[str, np.ndarray]


def _rng(seed: int, name: str) -> np.random.Generator:
    # One stream per tensor, keyed by its name: adding a layer never shifts the others.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _uniform(seed: int, name: str, shape: tuple[int, ...], bound: float) -> np.ndarray:
    return _rng(seed, name).uniform(-bound, bound, size=shape).astype(np.float32)


def init_weights(spec: ModelSpec, seed: int, ulps: int = 0) -> Weights:
    """Canonical initial weights for ``spec``.

    ``default`` reproduces PyTorch's default formulas: conv and linear weights
    kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)), biases U(+-1/sqrt(fan_in)),
    BatchNorm gamma=1, beta=0, mean=0, var=1. ``normal0.02`` (the MindSpore LeNet
    tutorial's ``weight_init=Normal(0.02)`` on Dense) draws linear weights from
    N(0, 0.02) with zero biases and keeps the default for convolutions.

    Args:
        spec: the model.
        seed: the run seed.
        ulps: move every trainable value this many float32 steps up: the smallest perturbation there
            is, for a control run that shows how far float32 noise alone carries a training run.

    Returns:
        float32 arrays by canonical name, in ``spec.param_shapes()`` order.
    """
    weights: Weights = {}
    for layer in spec.layers:
        if isinstance(layer, (Conv2d, Linear)):
            shape = layer.param_shapes()["weight"]
            fan_in = int(np.prod(shape[1:]))
            bound = 1.0 / np.sqrt(fan_in)
            w_name, b_name = f"{layer.name}.weight", f"{layer.name}.bias"
            if isinstance(layer, Linear) and spec.init == "normal0.02":
                weights[w_name] = (_rng(seed, w_name).standard_normal(shape) * 0.02).astype(np.float32)
                bias = np.zeros(shape[0], np.float32)
            else:
                weights[w_name] = _uniform(seed, w_name, shape, bound)
                bias = _uniform(seed, b_name, (shape[0],), bound)
            if layer.bias:
                weights[b_name] = bias
        elif isinstance(layer, BatchNorm2d):
            n = layer.num_features
            ones, zeros = np.ones(n, np.float32), np.zeros(n, np.float32)
            weights.update({f"{layer.name}.gamma": ones, f"{layer.name}.beta": zeros.copy(),
                            f"{layer.name}.mean": zeros.copy(), f"{layer.name}.var": ones.copy()})
    for name in spec.trainable_names() if ulps else ():
        for _ in range(ulps):
            weights[name] = np.nextafter(weights[name], np.float32(np.inf))
    return weights


def check_weights(spec: ModelSpec, weights: Weights, source: str) -> None:
    """Raise HarnessError unless ``weights`` has exactly the spec's names and shapes."""
    expected = spec.param_shapes()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise HarnessError(
            f"{source} does not hold {spec.name}'s weights: missing {missing[:5]}, unexpected {extra[:5]}; "
            "it was written for another model: pass the matching --model"
        )
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise HarnessError(f"{source}: {name} has shape {weights[name].shape}, expected {shape}")


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


def save_weights(path: Path, weights: Weights) -> None:
    """Write canonical weights as an uncompressed, byte-reproducible .npz (no pickled objects)."""
    save_arrays(path, weights)


def load_weights(spec: ModelSpec, path: Path) -> Weights:
    """Read canonical weights written by ``save_weights``, refusing pickled objects."""
    # np.load reports a bad file in many ways: EOFError (empty), BadZipFile (truncated),
    # TypeError (a bare .npy array is no context manager), ValueError (pickled objects).
    try:
        with np.load(path, allow_pickle=False) as archive:
            weights = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, TypeError, zipfile.BadZipFile) as error:
        raise HarnessError(f"cannot read weights {path}: {error}; expected a .npz written by harness run") from None
    check_weights(spec, weights, str(path))
    return weights
