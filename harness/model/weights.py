"""Initial weights, generated once in numpy from the seed and loaded into every backend.

The frameworks' own initialisers use the same formulas but different random
streams, so "same seed" would not mean "same weights"; generating them here does.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import HarnessError
from ..runs.arrays import READ_ERRORS, ArrayMismatch, read_arrays
from .spec import Activation, Add, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool, Layer, Linear, ModelSpec, Pool

Weights = dict[str, np.ndarray]


def _rng(seed: int, name: str) -> np.random.Generator:
    # One stream per tensor, keyed by its name: adding a layer never shifts the others.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _uniform(seed: int, name: str, shape: tuple[int, ...], bound: float) -> np.ndarray:
    return _rng(seed, name).uniform(-bound, bound, size=shape).astype(np.float32)


def _fan_in(layer: Conv2d | Linear, seed: int, init: str) -> Weights:
    """PyTorch's default: weight kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)), bias U(+-1/sqrt(fan_in))."""
    shape = layer.param_shapes()["weight"]
    bound = 1.0 / np.sqrt(int(np.prod(shape[1:])))
    w_name, b_name = f"{layer.name}.weight", f"{layer.name}.bias"
    out = {w_name: _uniform(seed, w_name, shape, bound)}
    if layer.bias:
        out[b_name] = _uniform(seed, b_name, (shape[0],), bound)
    return out


def _linear(layer: Linear, seed: int, init: str) -> Weights:
    if init != "normal0.02":
        return _fan_in(layer, seed, init)
    # The MindSpore LeNet tutorial's Dense(weight_init=Normal(0.02)), biases zero.
    shape = layer.param_shapes()["weight"]
    w_name = f"{layer.name}.weight"
    out = {w_name: (_rng(seed, w_name).standard_normal(shape) * 0.02).astype(np.float32)}
    if layer.bias:
        out[f"{layer.name}.bias"] = np.zeros(shape[0], np.float32)
    return out


def _batch_norm(layer: BatchNorm2d, seed: int, init: str) -> Weights:
    ones, zeros = np.ones(layer.num_features, np.float32), np.zeros(layer.num_features, np.float32)
    return {f"{layer.name}.gamma": ones, f"{layer.name}.beta": zeros.copy(),
            f"{layer.name}.mean": zeros.copy(), f"{layer.name}.var": ones.copy()}


def _no_parameters(layer: Layer, seed: int, init: str) -> Weights:
    return {}


# One entry per layer kind of the spec: the initial tensors of a layer from the run seed and the spec's init.
INITIALISERS: dict[type, Callable[[Layer, int, str], Weights]] = {
    Conv2d: _fan_in, Linear: _linear, BatchNorm2d: _batch_norm,
    Pool: _no_parameters, Activation: _no_parameters, Dropout: _no_parameters, Flatten: _no_parameters,
    GlobalAvgPool: _no_parameters, Add: _no_parameters,
}


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
        weights.update(INITIALISERS[type(layer)](layer, seed, spec.init))
    for name in spec.trainable_names() if ulps else ():
        for _ in range(ulps):
            weights[name] = np.nextafter(weights[name], np.float32(np.inf))
    return weights


def check_weights(spec: ModelSpec, weights: Weights, source: str, finite: bool = False) -> None:
    """Raise HarnessError unless ``weights`` has exactly the spec's names and shapes, as float arrays.

    Args:
        spec: the model the weights must fit.
        weights: canonical name -> array.
        source: where they came from, for the message.
        finite: also refuse NaN/Inf. A checkpoint is only ever written with finite weights; a run's trained
            weights are not refused for them: comparing them must fail the check, not stop it.
    """
    expected = spec.param_shapes()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise HarnessError(
            f"{source} does not hold {spec.name}'s weights: missing {missing[:5]}, unexpected {extra[:5]}; "
            "it was written for another model: pass the matching --model"
        )
    for name, shape in expected.items():
        value = weights[name]
        # A string, object or integer array would be cast (or fail) deep inside a framework.
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            got = f"{value.dtype} array" if isinstance(value, np.ndarray) else type(value).__name__
            raise HarnessError(f"{source}: {name} is a {got}, expected float weights of shape {shape}")
        if tuple(value.shape) != shape:
            raise HarnessError(f"{source}: {name} has shape {value.shape}, expected {shape}")
        if finite and not np.isfinite(value).all():
            raise HarnessError(f"{source}: {name} holds NaN/Inf; a checkpoint is only written with finite "
                               "weights: the file was edited or damaged")


def load_weights(spec: ModelSpec, path: Path) -> Weights:
    """Read canonical weights written by ``harness.runs.arrays.save_arrays``, refusing pickled objects.

    Every tensor the spec names is checked against its shape before its bytes are read, and the file may
    unpack to at most twice the spec's float32 size (float64 weights fit; a bomb does not).
    """
    shapes = spec.param_shapes()
    honest = sum(math.prod(shape) for shape in shapes.values()) * np.dtype(np.float32).itemsize
    try:
        weights = read_arrays(path, {name: (shape, None) for name, shape in shapes.items()},
                              max_bytes=2 * honest + 2**20)
    except ArrayMismatch as error:
        raise HarnessError(f"{path} does not hold {spec.name}'s weights: {error}; "
                           "it was written for another model: pass the matching --model") from None
    except READ_ERRORS as error:
        raise HarnessError(f"cannot read weights {path}: {error}; expected a .npz written by harness run") from None
    check_weights(spec, weights, str(path))
    return weights
