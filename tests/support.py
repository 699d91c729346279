"""What several test modules share: the repository root, real-data lookup, an independent torch
referee of spec layers, and builders of test inputs. Test modules import this, never each other."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from harness.data import locate, readers
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


def torch_graph(spec: ModelSpec, x, p: dict, training: bool = False, masks=()) -> list:
    """Every layer's output of ``spec`` run along its wiring in torch.nn.functional, in order: ``torch_layer``
    for one-input kinds, plus grouped convolutions, GlobalAvgPool and Add (``p`` as ``torch_layer``'s); with
    ``masks`` (one array per Dropout, in order) each Dropout multiplies by its mask."""
    import torch  # only the tests that use the referee pay for importing it
    import torch.nn.functional as F

    from harness.model.spec import Add, GlobalAvgPool

    values, masks = [torch.as_tensor(x)], list(masks)
    for layer, sources in zip(spec.layers, spec.wiring):
        inputs = [values[source] for source in sources]
        if isinstance(layer, Add):
            out = inputs[0]
            for value in inputs[1:]:
                out = out + value
        elif isinstance(layer, GlobalAvgPool):
            out = F.adaptive_avg_pool2d(inputs[0], 1)
        elif isinstance(layer, Dropout) and masks:
            out = inputs[0] * torch.as_tensor(masks.pop(0), dtype=inputs[0].dtype)
        elif isinstance(layer, Conv2d):  # torch_layer predates groups
            out = F.conv2d(inputs[0], p[f"{layer.name}.weight"], p.get(f"{layer.name}.bias"), layer.stride,
                           layer.padding, 1, layer.groups)
        else:
            out = torch_layer(layer, inputs[0], p, training)
        values.append(out)
    return values[1:]


def residual_depthwise_spec(dropout: float = 0.0, channels: int = 3, size: int = 8, classes: int = 4) -> ModelSpec:
    """A small graph with every new kind: a basic residual block (BatchNorm in the branch, the stem read
    twice), a stride-2 depthwise conv with a strided 1x1 shortcut, a groups=2 conv, GlobalAvgPool; with
    ``dropout`` > 0 a Dropout on the shortcut, read by name from a later Add (not by the layer after it)."""
    from harness.model.spec import Add, GlobalAvgPool, Linear

    shortcut = "b2_short"
    layers = [
        Conv2d("stem", channels, 8, 3, padding=1, bias=False), BatchNorm2d("stem_bn", 8),
        Activation("stem_act", "relu"),
        Conv2d("b1_conv1", 8, 8, 3, padding=1, bias=False), BatchNorm2d("b1_bn1", 8), Activation("b1_act1", "relu"),
        Conv2d("b1_conv2", 8, 8, 3, padding=1, bias=False), BatchNorm2d("b1_bn2", 8),
        Add("b1_add", ("b1_bn2", "stem_act")), Activation("b1_act2", "relu"),
        Conv2d("b2_short", 8, 16, 1, stride=2)]
    if dropout:
        layers.append(Dropout("b2_drop", dropout))
        shortcut = "b2_drop"
    layers += [
        Conv2d("b2_dw", 8, 8, 3, stride=2, padding=1, groups=8, bias=False, inputs=("b1_act2",)),
        BatchNorm2d("b2_bn1", 8), Activation("b2_act1", "relu6"),
        Conv2d("b2_pw", 8, 16, 1, bias=False), BatchNorm2d("b2_bn2", 16),
        Add("b2_add", ("b2_bn2", shortcut)), Activation("b2_act2", "hardswish"),
        Conv2d("g2", 16, 16, 3, padding=1, groups=2), Activation("g2_act", "relu"), Pool("pool", "max", 2, 2),
        GlobalAvgPool("gap"), Flatten("flatten"), Linear("fc", 16, classes)]
    return ModelSpec("residual-depthwise", (channels, size, size), classes, tuple(layers))


# ResNet-18 and MobileNetV2 add no layer kind to ResNet-20's (their depthwise convs and ReLU6 are in
# residual_depthwise_spec, which tests/backends/test_graph_models.py runs everywhere): the costliest
# registry-wide tests (MindSpore compiles of 68 and 153 layers) leave them out.
HEAVY_MODELS = ("resnet18", "mobilenetv2")

# The graph models end in global average pooling, so they build at any size: the registry-wide tests run them
# at 8x8 (1/16 of their 32x32 arithmetic; ResNet-18 and MobileNetV2 reach 1x1), the chains at their own sizes.
SMALL_SIZES = {"resnet20": 8, "resnet18": 8, "mobilenetv2": 8}


def registry_spec(name: str, **options) -> ModelSpec:
    """A registry model for its own channel count, the graph models at ``SMALL_SIZES``."""
    from harness.model.zoo import MODELS, build_model

    return build_model(name, MODELS[name].channels, size=SMALL_SIZES.get(name), **options)


def shrink_registry(monkeypatch) -> None:
    """Make ``SMALL_SIZES`` the graph models' native sizes for one test (runs and parity build through
    the registry, and synthetic data takes the entry's size)."""
    from dataclasses import replace

    from harness.model.zoo import MODELS

    for name, size in SMALL_SIZES.items():
        monkeypatch.setitem(MODELS, name, replace(MODELS[name], size=size))


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file's bytes: the magic (type code, rank), the big-endian shape, the values."""
    dtype = readers.IDX_DTYPES[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.asarray(array, dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    payload = idx_bytes(array)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_mnist_folder(folder: Path, train: int = 6, test: int = 4, gz: bool = False) -> None:
    """The four MNIST IDX files in ``folder``, random images and labels (``gz``: gzipped, as downloaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        image_stem, label_stem = locate.IDX_STEMS[split]
        suffix = ".gz" if gz else ""
        write_idx(folder / f"{image_stem}{suffix}", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), gz)
        write_idx(folder / f"{label_stem}{suffix}", rng.integers(0, 10, count, dtype=np.uint8), gz)
