"""Tests of harness.model.spec and harness.model.zoo: parameter counts by hand, shapes, options, errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.model.spec import Activation, Add, Conv2d, Flatten, GlobalAvgPool, Linear, ModelSpec, Pool
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


def conv_bn(cin: int, cout: int, k: int, groups: int = 1) -> int:
    """A bias-free conv (weight cout * cin/groups * k * k) and its BatchNorm's gamma and beta."""
    return cout * (cin // groups) * k * k + 2 * cout


def resnet_cifar(widths: tuple[int, ...], blocks: int, classes: int = 10) -> int:
    """3x3 stem, basic blocks (two 3x3 conv-BN; a 1x1 conv-BN projection where the shape changes), fc."""
    total, channels = conv_bn(3, widths[0], 3), widths[0]
    for stage, width in enumerate(widths):
        for block in range(blocks):
            total += conv_bn(channels, width, 3) + conv_bn(width, width, 3)
            if (stage and not block) or channels != width:
                total += conv_bn(channels, width, 1)
            channels = width
    return total + fc(channels, classes)


def mobilenetv2_cifar(classes: int = 10) -> int:
    """Stem 3x3 conv-BN to 32, the paper's 17 inverted residuals (expand 1x1 unless t = 1, depthwise 3x3,
    project 1x1), a 1x1 conv-BN to 1280, fc."""
    total, channels = conv_bn(3, 32, 3), 32
    for t, c, n in ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)):
        for _ in range(n):
            hidden = channels * t
            total += (conv_bn(channels, hidden, 1) if t != 1 else 0) + conv_bn(hidden, hidden, 3, hidden)
            total += conv_bn(hidden, c, 1)
            channels = c
    return total + conv_bn(channels, 1280, 1) + fc(1280, classes)


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
    ("resnet20", 3): resnet_cifar((16, 32, 64), 3),
    ("resnet18", 3): resnet_cifar((64, 128, 256, 512), 2),
    ("mobilenetv2", 3): mobilenetv2_cifar(),
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
    # CIFAR ResNet-18 as the reference CIFAR trainings (kuangliu/pytorch-cifar) print it: 11,173,962;
    # torchvision's mobilenet_v2(num_classes=10): 2,236,682 (its strides do not change the count);
    # ResNet-20 with projection shortcuts (option B): 272,474, the paper's "0.27M" (option A: 269,722).
    assert HAND_COUNTS[("resnet18", 3)] == 11_173_962
    assert HAND_COUNTS[("mobilenetv2", 3)] == 2_236_682
    assert HAND_COUNTS[("resnet20", 3)] == 272_474


@pytest.mark.parametrize(("name", "before_pooling"), [("resnet20", (64, 8, 8)), ("resnet18", (512, 4, 4)),
                                                      ("mobilenetv2", (1280, 4, 4))])
def test_graph_models_are_wired_as_their_papers(name, before_pooling):
    spec = build_model(name, 3)
    assert not spec.is_chain
    shapes = {layer.name: shape for layer, shape in zip(spec.layers, spec.output_shapes)}
    pooling = next(index for index, layer in enumerate(spec.layers) if type(layer).__name__ == "GlobalAvgPool")
    assert spec.output_shapes[pooling - 1] == before_pooling
    adds = [(index, layer) for index, layer in enumerate(spec.layers) if type(layer).__name__ == "Add"]
    # ResNet-20: 9 blocks, ResNet-18: 8, each adds its shortcut; MobileNetV2: only the 10 stride-1 blocks
    # whose input and output channels match (of 17).
    assert len(adds) == {"resnet20": 9, "resnet18": 8, "mobilenetv2": 10}[name]
    for index, add in adds:
        assert len(set(shapes[source] for source in add.inputs)) == 1 and len(spec.wiring[index]) == 2
    if name == "mobilenetv2":
        depthwise = [layer for layer in spec.layers if type(layer).__name__ == "Conv2d" and layer.groups > 1]
        assert len(depthwise) == 17 and all(layer.groups == layer.in_channels == layer.out_channels
                                            for layer in depthwise)


def test_graph_wiring_positions_and_names():
    layers = (Conv2d("stem", 1, 4, 3, padding=1), Activation("relu", "relu"),
              Conv2d("branch", 4, 4, 3, padding=1, groups=4), Add("add", ("relu", "branch")),
              GlobalAvgPool("gap"), Flatten("flatten"), Linear("fc", 4, 3))
    spec = ModelSpec("tiny-res", (1, 8, 8), 3, layers)
    assert spec.wiring == ((0,), (1,), (2,), (2, 3), (4,), (5,), (6,))
    assert spec.input_names(0) == ("input",) and spec.input_names(3) == ("relu", "branch")
    assert spec.param_shapes()["branch.weight"] == (4, 1, 3, 3)
    assert spec.output_shapes[4] == (4, 1, 1) and not spec.is_chain
    assert build_model("lenet5").is_chain


@pytest.mark.parametrize(("layers", "message"), [
    ((Conv2d("c", 1, 4, 3), Add("add", ("c", "later")), Flatten("f"), Linear("fc", 144, 3)),
     "add reads 'later', which is not an earlier layer"),
    ((Conv2d("c", 1, 4, 3), Conv2d("d", 1, 4, 3, inputs=("input",)), Add("add", ("c", "d")), Flatten("f"),
      Linear("fc", 144, 3, inputs=("c", "add"))), r"fc \(Linear\) takes one input"),
    ((Conv2d("c", 1, 4, 3), Conv2d("d", 4, 4, 3), Add("add", ("c", "d")), Flatten("f"), Linear("fc", 144, 3)),
     "adds outputs of different shapes"),
    ((Conv2d("layer1.conv", 1, 4, 3), Flatten("f"), Linear("fc", 144, 3)), "is not an identifier"),
    ((Conv2d("input", 1, 4, 3), Flatten("f"), Linear("fc", 144, 3)), "is not an identifier other than 'input'"),
])
def test_a_graph_that_cannot_be_wired_raises(layers, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec("bad", (1, 8, 8), 3, layers)


def test_conv_groups_must_divide_the_channels():
    with pytest.raises(ValueError, match="groups 3 must divide in_channels 4"):
        Conv2d("c", 4, 6, 3, groups=3)


def test_pool_override_is_refused_for_a_model_without_pooling():
    with pytest.raises(HarnessError, match="resnet20 has no max or average pooling layer"):
        build_model("resnet20", 3, pool="avg")


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
