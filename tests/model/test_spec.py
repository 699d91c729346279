"""Tests of harness.model.spec and harness.model.zoo: parameter counts by hand, shapes, options, errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.model.spec import Activation, Conv2d, Flatten, Linear, ModelSpec, Pool
from harness.model.zoo import MODELS, build_model

REPO_ROOT = Path(__file__).resolve().parent.parent


def conv(cin: int, cout: int, k: int) -> int:
    """Conv2d parameters with bias: cin * k * k * cout weights plus cout biases."""
    return cin * k * k * cout + cout


def fc(fin: int, fout: int) -> int:
    """Linear parameters with bias."""
    return fin * fout + fout


# Counted from the tutorials' layer lists, not from the spec: every spatial size below
# follows (n + 2p - k) // s + 1 by hand (noted per model).
VGG_CONVS = (conv(3, 64, 3) + conv(64, 128, 3) + conv(128, 256, 3) + conv(256, 256, 3)
             + conv(256, 512, 3) + 3 * conv(512, 512, 3))
VGG_BN_CHANNELS = 64 + 128 + 256 + 256 + 512 + 512 + 512 + 512
HAND_COUNTS = {
    # 32 -conv5-> 28 -pool-> 14 -conv5-> 10 -pool-> 5: 16*5*5 = 400 features.
    ("lenet5", 1): (1 * 25 * 6 + 6) + (6 * 25 * 16 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10),
    # 28 -conv5 pad2-> 28 -pool-> 14 -conv5-> 10 -pool-> 5 -conv5-> 1: 120 features.
    ("lenet5-lecun", 1): conv(1, 6, 5) + conv(6, 16, 5) + conv(16, 120, 5) + fc(120, 84) + fc(84, 10),
    # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4: 16*4*4 = 256 features.
    ("lenet-sigmoid", 1): conv(1, 6, 5) + conv(6, 16, 5) + fc(256, 120) + fc(120, 84) + fc(84, 10),
    # 28 -conv3 pad1-> 28 -pool-> 14 -conv3 pad1-> 14 -pool-> 7: 8*7*7 = 392 features.
    ("lenet-tiny", 1): conv(1, 4, 3) + conv(4, 8, 3) + fc(392, 32) + fc(32, 10),
    ("mlp", 1): fc(28 * 28, 784) + fc(784, 10),
    ("mlp", 3): fc(3 * 28 * 28, 784) + fc(784, 10),
    # 28 -conv5 pad2-> 28 -pool k2 s1-> 27: 10*27*27 = 7290 features.
    ("simple-cnn", 1): conv(1, 10, 5) + fc(10 * 27 * 27, 128) + fc(128, 10),
    # Five 2x2 pools take 32 to 1: 512 features.
    ("vgg11", 3): VGG_CONVS + fc(512, 100) + fc(100, 10),
    ("vgg11-bn", 3): VGG_CONVS + 2 * VGG_BN_CHANNELS + fc(512, 10),
}


def test_hand_counts_cover_the_registry():
    assert {name for name, _ in HAND_COUNTS} == set(MODELS)


@pytest.mark.parametrize(("name", "channels"), sorted(HAND_COUNTS))
def test_num_params_equals_the_hand_count(name, channels):
    assert build_model(name, channels).num_params == HAND_COUNTS[(name, channels)]


def test_known_totals():
    # Published figures: LeNet-5 has 61,706 parameters, VGG11's conv stack 9,220,480.
    assert HAND_COUNTS[("lenet5", 1)] == 61706 == HAND_COUNTS[("lenet5-lecun", 1)]
    assert VGG_CONVS == 9_220_480


def test_num_params_excludes_batchnorm_statistics():
    spec = build_model("vgg11-bn", 3)
    shapes = spec.param_shapes()
    assert shapes["bn1.mean"] == shapes["bn1.var"] == (64,)
    assert "bn1.mean" not in spec.trainable_names() and "bn1.gamma" in spec.trainable_names()
    total = sum(math.prod(shape) for shape in shapes.values())
    assert total - spec.num_params == 2 * VGG_BN_CHANNELS  # exactly the running mean and var


def shapes_by_name(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    return {layer.name: shape for layer, shape in zip(spec.layers, spec.output_shapes)}


@pytest.mark.parametrize(("name", "channels", "layer", "shape"), [
    ("lenet5", 1, "conv1", (6, 28, 28)),
    ("lenet5", 1, "pool2", (16, 5, 5)),
    ("lenet5", 1, "flatten", (400,)),
    ("lenet5-lecun", 1, "conv1", (6, 28, 28)),
    ("lenet5-lecun", 1, "conv3", (120, 1, 1)),
    ("lenet-sigmoid", 1, "pool2", (16, 4, 4)),
    ("lenet-tiny", 1, "pool2", (8, 7, 7)),
    ("simple-cnn", 1, "pool1", (10, 27, 27)),
    ("vgg11", 3, "pool1", (64, 16, 16)),
    ("vgg11", 3, "pool5", (512, 1, 1)),
    ("vgg11-bn", 3, "bn8", (512, 2, 2)),
    ("vgg11", 3, "fc2", (10,)),
])
def test_output_shapes_of_key_layers(name, channels, layer, shape):
    assert shapes_by_name(build_model(name, channels))[layer] == shape


def test_input_shape_and_classes_follow_the_dataset():
    spec = build_model("lenet5", channels=3, num_classes=7)
    assert spec.input_shape == (3, 32, 32) and spec.output_shapes[-1] == (7,)
    assert spec.param_shapes()["conv1.weight"] == (6, 3, 5, 5)
    assert spec.num_params == HAND_COUNTS[("lenet5", 1)] + 2 * 25 * 6 - 3 * (84 + 1)


def test_activation_and_pool_options_change_the_layers():
    default = build_model("lenet5")
    assert {l.kind for l in default.layers if isinstance(l, Activation)} == {"relu"}
    assert {l.kind for l in default.layers if isinstance(l, Pool)} == {"max"}
    for activation in ("tanh", "sigmoid"):
        spec = build_model("lenet5", activation=activation, pool="avg")
        acts = [l for l in spec.layers if isinstance(l, Activation)]
        assert len(acts) == 4 and {l.kind for l in acts} == {activation}
        assert {l.kind for l in spec.layers if isinstance(l, Pool)} == {"avg"}
        assert spec.num_params == default.num_params  # neither option has parameters
    lecun = build_model("lenet5-lecun")
    assert {l.kind for l in lecun.layers if isinstance(l, (Activation, Pool))} == {"tanh", "avg"}


@pytest.mark.parametrize(("kwargs", "listing"), [
    ({"name": "resnet"}, "expected one of: lenet5, lenet5-lecun, lenet-sigmoid, lenet-tiny, mlp, simple-cnn, "
                         "vgg11, vgg11-bn"),
    ({"name": "lenet5", "activation": "swish"},
     "unknown activation 'swish'; expected one of: relu, tanh, sigmoid, relu6, hardswish, leaky_relu, gelu, identity"),
    ({"name": "lenet5", "pool": "min"}, "unknown pool 'min'; expected one of: max, avg"),
    ({"name": "lenet5", "init": "xavier"}, "unknown init 'xavier'; expected one of: default, normal0.02"),
])
def test_unknown_choices_list_the_valid_ones(kwargs, listing):
    with pytest.raises(HarnessError) as error:
        build_model(**kwargs)
    assert listing in str(error.value)


@pytest.mark.parametrize(("layers", "message"), [
    ((Conv2d("c", 3, 4, 3), Flatten("f"), Linear("l", 4 * 30 * 30, 10)), "c: expects 3 channels, got 1"),
    ((Flatten("f"), Linear("l", 100, 10)), r"l: expects \(100,\), got \(1024,\)"),
    ((Flatten("f"), Linear("l", 1024, 5)), r"ends with \(5,\), expected \(10,\)"),
    ((Flatten("f"), Linear("l", 1024, 10), Linear("l", 10, 10)), "layer names repeat"),
])
def test_a_spec_whose_layers_do_not_fit_raises(layers, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec("bad", (1, 32, 32), 10, layers)


def test_every_registry_model_builds_for_one_and_three_channels():
    for name in MODELS:
        for channels in (1, 3):
            spec = build_model(name, channels)
            assert spec.output_shapes[-1] == (10,) and spec.input_shape[0] == channels


def test_core_modules_import_no_framework():
    code = ("import sys, harness.model.spec, harness.model.zoo, harness.model.weights, harness.config, "
            "harness.training.schedule; "
            "bad = {'torch', 'mindspore'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
