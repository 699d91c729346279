"""What several test modules share: the repository root, real-data lookup, an independent torch
referee of spec layers, and builders of test inputs. Test modules import this, never each other."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from harness.data.locate import search_dataset
from harness.model.spec import Activation, BatchNorm2d, Conv2d, Dropout, Flatten, ModelSpec, Pool
from harness.reference.layers import apply_layer

REPO_ROOT = Path(__file__).resolve().parent.parent


def real_data_root(name: str) -> Path:
    """A root holding the real dataset ``name`` (HARNESS_DATA_DIR or ../shared/datasets), or skip."""
    shared = REPO_ROOT.parent / "shared" / "datasets"
    for root in filter(None, [os.environ.get("HARNESS_DATA_DIR"), shared]):
        if Path(root).is_dir() and search_dataset(name, root)[0] is not None:
            return Path(root)
    if name == "fashion-mnist" and search_dataset(name, None)[0] is not None:
        return search_dataset(name, None)[0]
    pytest.skip(f"real {name} not found under HARNESS_DATA_DIR or {shared}")


def torch_layer(layer, x, p, training=False):
    """One spec layer in torch.nn.functional; ``p`` maps canonical names to tensors (dtype as given)."""
    import torch  # only the tests that use the referee pay for importing it
    import torch.nn.functional as F

    name = layer.name
    if isinstance(layer, Conv2d):
        return F.conv2d(x, p[f"{name}.weight"], p.get(f"{name}.bias"), layer.stride, layer.padding)
    if isinstance(layer, Pool):
        pool = F.max_pool2d if layer.kind == "max" else F.avg_pool2d
        return pool(x, layer.kernel_size, layer.stride)
    if isinstance(layer, Activation):
        functions = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu6": F.relu6,
                     "hardswish": F.hardswish, "identity": lambda t: t,
                     "leaky_relu": lambda t: F.leaky_relu(t, layer.negative_slope),
                     "gelu": lambda t: F.gelu(t, approximate=layer.approximate)}
        return functions[layer.kind](x)
    if isinstance(layer, Dropout):
        return x  # eval mode; training tests use specs without dropout
    if isinstance(layer, BatchNorm2d):
        return F.batch_norm(x, p[f"{name}.mean"], p[f"{name}.var"], p[f"{name}.gamma"], p[f"{name}.beta"],
                            training=training, momentum=layer.momentum, eps=layer.eps)
    if isinstance(layer, Flatten):
        return x.flatten(1)
    return F.linear(x, p[f"{name}.weight"], p.get(f"{name}.bias"))


def randomise_batch_norm(spec: ModelSpec, weights: dict, seed: int = 1) -> dict:
    """Non-trivial running statistics and affine terms, so BatchNorm is really exercised."""
    rng, weights = np.random.default_rng(seed), dict(weights)
    for layer in spec.layers:
        if isinstance(layer, BatchNorm2d):
            n, name = layer.num_features, layer.name
            weights[f"{name}.gamma"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
            weights[f"{name}.beta"] = rng.normal(0.0, 0.5, n).astype(np.float32)
            weights[f"{name}.mean"] = rng.normal(0.0, 0.5, n).astype(np.float32)
            weights[f"{name}.var"] = rng.uniform(0.2, 3.0, n).astype(np.float32)
    return weights


def forward_with_error(spec: ModelSpec, weights: dict, x: np.ndarray, layer_name: str, error: float) -> dict:
    """Every layer's float64 output, with ``error`` added to one layer's output and carried downstream."""
    out, outputs = x.astype(np.float64), {}
    for layer in spec.layers:
        out = apply_layer(layer, weights, out) + (error if layer.name == layer_name else 0.0)
        outputs[layer.name] = out
    return outputs


def _short(value: bytes) -> bytes:
    return b"U" + bytes([len(value)]) + value if len(value) < 256 else b"T" + struct.pack("<i", len(value)) + value


def _int(value: int) -> bytes:
    return b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)


def py2_cifar_pickle(images: np.ndarray, labels: list[int]) -> bytes:
    """A batch exactly as Python 2 numpy pickled the real files (protocol 2, str = bytes)."""
    dtype = (b"cnumpy\ndtype\n" + _short(b"u1") + _int(0) + _int(1) + b"\x87R"
             + b"(" + _int(3) + _short(b"|") + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _int(0) + b"\x85" + _short(b"b")
             + b"\x87R" + b"(" + _int(1) + _int(images.shape[0]) + _int(images.shape[1]) + b"\x86"
             + dtype + b"\x89" + _short(images.tobytes()) + b"tb")
    label_list = b"](" + b"".join(_int(v) for v in labels) + b"e"
    names = b"](" + b"".join(_short(f"img_{i}.png".encode()) for i in range(len(labels))) + b"e"
    return (b"\x80\x02}(" + _short(b"batch_label") + _short(b"training batch 1 of 5")
            + _short(b"labels") + label_list + _short(b"data") + array + _short(b"filenames") + names + b"u.")
