"""User models from ONNX: a torch ResNet-20 and MobileNetV2 written as a user writes them, exported by
torch.onnx in the test, imported as a spec with the file's weights, and run by both backends and the float64
reference; every graph the spec cannot express refused in one line; the JSON spec file; model resolution."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from harness.config import build_config, config_from_json
from harness.errors import HarnessError
from harness.model import onnx_import, specfile
from harness.model.onnx_import import identifier, import_onnx
from harness.model.resolve import initial_weights, model_spec, native_shape
from harness.model.spec import Activation, BatchNorm2d, Conv2d, GlobalAvgPool, Pool
from harness.model.specfile import load_spec, save_spec, spec_to_dict
from harness.model.zoo import build_model
from harness.reference.forward import forward
from harness.tolerances import policies

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


# -- the user's models, as a user writes them -----------------------------------------------------------------

class BasicBlock(nn.Module):
    """He et al.'s basic block; a 1x1 conv + BatchNorm projection where the shape changes (option B)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20: 3 stages of 3 basic blocks, 16/32/64 channels."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.in_planes = 16
        self.layer1, self.layer2, self.layer3 = self._stage(16, 1), self._stage(32, 2), self._stage(64, 2)
        self.linear = nn.Linear(64, num_classes)

    def _stage(self, planes: int, stride: int) -> nn.Sequential:
        blocks = []
        for s in (stride, 1, 1):
            blocks.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(out.view(out.size(0), -1))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == oup
        layers = [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)] \
            if expand != 1 else []
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2, width 1.0, CIFAR variant (stride 1 in the stem and the second stage)."""

    plan = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        features = [nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True))]
        inp = 32
        for t, c, n, s in self.plan:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        features.append(nn.Sequential(nn.Conv2d(inp, 1280, 1, bias=False), nn.BatchNorm2d(1280),
                                      nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class Activations(nn.Module):
    """Every activation the spec has, both poolings, BatchNorm, a mean over H and W, and two Linears."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.Sequential(nn.GELU(), nn.GELU(approximate="tanh"), nn.LeakyReLU(0.2), nn.Hardswish(),
                                 nn.Sigmoid(), nn.Tanh(), nn.ReLU6())
        self.pool, self.pool2 = nn.MaxPool2d(2), nn.AvgPool2d(2, 2)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 5)

    def forward(self, x):
        x = self.pool2(self.pool(self.act(self.bn(self.conv(x)))))
        return self.fc2(torch.relu(self.fc1(x.mean((2, 3)))))


def _randomised(module: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so BatchNorm is really exercised; eval mode."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for child in module.modules():
            if isinstance(child, nn.BatchNorm2d):
                n = child.num_features
                child.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                child.bias.copy_(torch.rand(n, generator=generator) - 0.5)
                child.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                child.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return module.eval()


def export(module: nn.Module, path, shape, **options):
    """torch.onnx.export of ``module`` on a (2, *shape) input, its narration kept out of the test log."""
    if options.get("dynamo", True):
        options.setdefault("dynamic_shapes", ({0: torch.export.Dim("batch")},))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, *shape),), str(path), input_names=["x"], output_names=["logits"],
                          **options)
    return path


def _torch_logits(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _within(a: np.ndarray, b: np.ndarray, policy) -> None:
    assert np.all(np.abs(a - b) <= policy.atol + policy.rtol * np.abs(b)), float(np.abs(a - b).max())


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Each model exported once (ResNet-20 by the dynamo exporter without its optimizer, MobileNetV2 by the
    TorchScript exporter with training=PRESERVE: the two ways to keep BatchNormalization), then imported."""
    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    models = {}
    for name, module, options in (
            ("resnet20", ResNet20(), {"dynamo": True, "optimize": False, "external_data": False}),
            ("mobilenetv2", MobileNetV2(), {"dynamo": False, "training": torch.onnx.TrainingMode.PRESERVE,
                                            "dynamic_axes": {"x": {0: "N"}}})):
        module = _randomised(module)
        path = export(module, folder / f"{name}.onnx", (3, 32, 32), **options)
        spec, weights = import_onnx(path)
        models[name] = (module, path, spec, weights, x, _torch_logits(module, x))
    return models


MODELS = ("resnet20", "mobilenetv2")


@pytest.mark.parametrize("name", MODELS)
def test_the_spec_has_the_modules_parameters_under_its_names(imported, name):
    module, _, spec, weights, _, _ = imported[name]
    assert spec.num_params == sum(p.numel() for p in module.parameters())
    assert (spec.input_shape, spec.num_classes) == ((3, 32, 32), 10)
    state = module.state_dict()
    sources = dict(spec.source_names)
    assert set(sources) == set(spec.param_shapes())  # every tensor keeps the user's name
    for canonical, user in sources.items():
        np.testing.assert_array_equal(weights[canonical], state[user].numpy(), err_msg=canonical)
    kinds = {type(layer) for layer in spec.layers}
    assert {Conv2d, BatchNorm2d, GlobalAvgPool} <= kinds and not spec.is_chain


def test_names_come_from_the_users_modules(imported):
    spec = imported["resnet20"][2]
    layers = {layer.name: layer for layer in spec.layers}
    assert layers["layer2_0_shortcut_0"] == Conv2d("layer2_0_shortcut_0", 16, 32, 1, 2, 0, False, inputs=("relu_6",))
    assert spec.source_name("layer1_0_bn1.var") == "layer1.0.bn1.running_var"
    adds = [layer for layer in spec.layers if type(layer).__name__ == "Add"]
    assert len(adds) == 9 and all(len(layer.inputs) == 2 for layer in adds)
    mobile = imported["mobilenetv2"][2]
    depthwise = [layer for layer in mobile.layers if isinstance(layer, Conv2d) and layer.groups > 1]
    assert len(depthwise) == 17 and all(layer.groups == layer.in_channels for layer in depthwise)
    assert sum(isinstance(layer, Activation) and layer.kind == "relu6" for layer in mobile.layers) == 35


@pytest.mark.parametrize("name", MODELS)
def test_the_float64_reference_runs_the_imported_model_as_torch_does(imported, name):
    _, _, spec, weights, x, expected = imported[name]
    _within(forward(spec, weights, x.astype(np.float64)), expected, policies().reference)


@pytest.mark.parity
@pytest.mark.parametrize("name", MODELS)
def test_both_backends_run_the_imported_weights_as_torch_does(both_backends, imported, name):
    _, _, spec, weights, x, expected = imported[name]
    for backend in both_backends:
        model = backend.build(spec, "cpu")
        backend.set_weights(model, weights)
        _within(backend.predict(model, x, len(x)), expected, policies().cross)


@pytest.mark.parametrize("options", [
    {"dynamo": True},  # the default: BatchNorm folded into the convolutions, conv biases added
    {"dynamo": True, "optimize": False, "opset_version": 18},  # GELU written out with Erf, Tanh and Pow
    {"dynamo": False},
    {"dynamo": False, "opset_version": 13},  # GELU written out, Hardswish as HardSigmoid * x
], ids=["dynamo", "dynamo-opset18", "torchscript", "torchscript-opset13"])
def test_every_exporter_and_opset(tmp_path, options):
    torch.manual_seed(0)
    module = _randomised(Activations())
    path = export(module, tmp_path / "net.onnx", (3, 8, 8), external_data=False, **options) if options["dynamo"] \
        else export(module, tmp_path / "net.onnx", (3, 8, 8), **options)
    spec, weights = import_onnx(path)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    reference = forward(spec, weights, x.astype(np.float64))
    _within(reference, _torch_logits(module, x), policies().reference)
    users_file = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # The user's own file agrees too (the TorchScript exports here fix the batch at 2, as torch's example had).
    _within(users_file.run(None, {"x": x[:2]})[0], reference[:2], policies().reference)
    activations = [(layer.kind, layer.approximate, layer.negative_slope) for layer in spec.layers
                   if isinstance(layer, Activation)]
    assert activations == [("gelu", "none", 0.01), ("gelu", "tanh", 0.01), ("leaky_relu", "none", 0.2),
                           ("hardswish", "none", 0.01), ("sigmoid", "none", 0.01), ("tanh", "none", 0.01),
                           ("relu6", "none", 0.01), ("relu", "none", 0.01)]
    assert [layer.kind for layer in spec.layers if isinstance(layer, Pool)] == ["max", "avg"]
    folded = not any(isinstance(layer, BatchNorm2d) for layer in spec.layers)
    batch_norm = 0 if folded else 16
    assert spec.num_params == sum(p.numel() for p in module.parameters()) - 16 + batch_norm


def test_external_data_is_read_and_hashed(tmp_path):
    module = _randomised(Activations())
    path = export(module, tmp_path / "net.onnx", (3, 8, 8), external_data=True)  # torch's default
    data = tmp_path / "net.onnx.data"
    assert data.exists()
    spec, weights = import_onnx(path)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    _within(forward(spec, weights, x.astype(np.float64)), _torch_logits(module, x), policies().reference)
    config = build_config({"model": str(path)})
    blob = bytearray(data.read_bytes())
    blob[-1] ^= 1  # one bit of the last weight
    data.write_bytes(bytes(blob))
    changed = build_config({"model": str(path)})
    assert changed.config_hash != config.config_hash
    with pytest.raises(HarnessError, match="has changed since this run's settings were made"):
        model_spec(str(path), sha256=config.model_sha256)


# -- refusals --------------------------------------------------------------------------------------------------

def _node(op, inputs, outputs, name, **attrs):
    return helper.make_node(op, inputs, outputs, name=name, **attrs)


def _write(path, nodes, initializers=None, inputs=None, opset=17):
    """A model of ``nodes`` from input x (N, 2, 4, 4) to output y."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    tensors = [numpy_helper.from_array(np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "f" else
                                       np.asarray(v), name) for name, v in (initializers or {}).items()]
    graph = helper.make_graph(nodes, "g", inputs or [x], [y], initializer=tensors)
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString())
    return path


RNG = np.random.default_rng(0)
BASE = {"w": RNG.standard_normal((3, 2, 3, 3)), "fc.weight": RNG.standard_normal((5, 3)),
        "fc.bias": RNG.standard_normal(5)}


def _base(conv=None, act=None, flatten=None, pool=None):
    """conv -> act -> global pool -> flatten -> gemm, each replaceable."""
    return [conv or _node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1]),
            act or _node("Relu", ["c"], ["r"], "act"),
            pool or _node("GlobalAveragePool", ["r"], ["p"], "gap"),
            flatten or _node("Flatten", ["p"], ["f"], "flat"),
            _node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], "fc", transB=1)]


def test_the_base_graph_imports(tmp_path):
    spec, weights = import_onnx(_write(tmp_path / "g.onnx", _base(), BASE))
    assert [layer.name for layer in spec.layers] == ["conv", "act", "gap", "flat", "fc"] and spec.is_chain
    assert spec.source_names == (("conv.weight", "w"), ("fc.weight", "fc.weight"), ("fc.bias", "fc.bias"))
    x = RNG.standard_normal((2, 2, 4, 4))
    conv = F.relu(F.conv2d(torch.from_numpy(x), torch.from_numpy(BASE["w"]), padding=1)).mean((2, 3))
    expected = F.linear(conv, torch.from_numpy(BASE["fc.weight"]), torch.from_numpy(BASE["fc.bias"])).numpy()
    np.testing.assert_allclose(forward(spec, weights, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, batch", [([0, -1], "N"), ([-1, 3], "N"), ([2, -1], 2), ([2, 3], 2)])
def test_every_flatten_an_exporter_writes(tmp_path, shape, batch):
    """(N, -1), with N copied (0), inferred (-1) or the graph's fixed batch: torch's view(x.size(0), -1)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 4, 4])
    nodes = _base(flatten=_node("Reshape", ["p", "shape"], ["f"], "flat"))
    spec, _ = import_onnx(_write(tmp_path / "g.onnx", nodes, {**BASE, "shape": np.array(shape, np.int64)}, inputs=[x]))
    assert [type(layer).__name__ for layer in spec.layers] == ["Conv2d", "Activation", "GlobalAvgPool", "Flatten",
                                                               "Linear"]


REFUSALS = {
    "unsupported-op": (dict(act=_node("Softmax", ["c"], ["r"], "act", axis=1)),
                       "node 'act' (Softmax): op Softmax is not supported; supported: Conv"),
    "dilated-conv": (dict(conv=_node("Conv", ["x", "w"], ["c"], "conv", dilations=[2, 2], pads=[2, 2, 2, 2])),
                     "node 'conv' (Conv): attribute dilations=[2, 2]; the spec's Conv2d has no dilation"),
    "asymmetric-pads": (dict(conv=_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 0, 0])),
                        "node 'conv' (Conv): attribute pads=[1, 1, 0, 0]; symmetric padding only"),
    "auto-pad": (dict(conv=_node("Conv", ["x", "w"], ["c"], "conv", auto_pad="SAME_UPPER")),
                 "node 'conv' (Conv): attribute auto_pad=SAME_UPPER; the spec pads explicitly"),
    "non-constant-weight": (dict(conv=_node("Conv", ["x", "x"], ["c"], "conv")),
                            "node 'conv' (Conv): its weight 'x' is computed from the images, not a constant"),
    "reshape-to-other": (dict(flatten=_node("Reshape", ["p", "shape"], ["f"], "flat")),
                         "node 'flat' (Reshape): Reshape of ('N', 3, 1, 1) to [1, -1]; the spec reshapes only to "
                         "(N, -1)"),
    "clip-other": (dict(act=_node("Clip", ["c", "zero", "five"], ["r"], "act")),
                   "node 'act' (Clip): Clip to [0.0, 5.0]; supported: Clip(0, 6) as ReLU6 and Clip(0) as ReLU"),
    "ceil-mode": (dict(pool=_node("MaxPool", ["r"], ["p"], "gap", kernel_shape=[4, 4], ceil_mode=1)),
                  "node 'gap' (MaxPool): attribute ceil_mode=1; floor mode only"),
    "pool-pads": (dict(pool=_node("AveragePool", ["r"], ["p"], "gap", kernel_shape=[4, 4], pads=[1, 1, 1, 1],
                                  count_include_pad=1)),
                  "node 'gap' (AveragePool): attribute pads=[1, 1, 1, 1]; the spec's Pool has no padding"),
    "arithmetic": (dict(act=_node("Mul", ["c", "five"], ["r"], "act")),
                   "node 'act' (Mul): element-wise arithmetic (Mul) that is none of the spec's activations"),
    "foreign-op": (dict(act=_node("FusedRelu", ["c"], ["r"], "act", domain="com.example")),
                   "node 'act' (FusedRelu): op com.example::FusedRelu is outside the ONNX standard"),
    "non-square-kernel": (dict(conv=_node("Conv", ["x", "w31"], ["c"], "conv", pads=[1, 0, 1, 0])),
                          "node 'conv' (Conv): attribute kernel_shape=[3, 1]; square kernels only"),
    "batch-norm-training": (dict(act=_node("BatchNormalization", ["c", "one", "zero3", "zero3", "one"], ["r"], "act",
                                           training_mode=1)),
                            "node 'act' (BatchNormalization): attribute training_mode=1; inference form only"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_what_the_spec_cannot_express_is_one_line(tmp_path, case):
    replaced, expected = REFUSALS[case]
    constants = {**BASE, "shape": np.array([1, -1], np.int64), "zero": np.float32(0), "five": np.float32(5),
                 "w31": RNG.standard_normal((3, 2, 3, 1)), "one": np.ones(3), "zero3": np.zeros(3)}
    path = _write(tmp_path / "g.onnx", _base(**replaced), constants)
    with pytest.raises(HarnessError) as error:
        import_onnx(path)
    assert "\n" not in str(error.value) and str(error.value).startswith("g.onnx: ")
    assert expected in str(error.value)


def test_a_second_input_is_refused(tmp_path):
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 2, 4, 4]) for name in ("x", "z")]
    path = _write(tmp_path / "g.onnx", _base(), BASE, inputs=inputs)
    with pytest.raises(HarnessError, match=r"the graph has 2 inputs \['x', 'z'\]; harness imports a model of one "
                                           r"input, a batch of images \(N, C, H, W\)"):
        import_onnx(path)


def test_other_inputs_and_outputs_are_refused(tmp_path):
    flat = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])]
    with pytest.raises(HarnessError, match=r"input 'x' has shape \['N', 32\]; harness needs images"):
        import_onnx(_write(tmp_path / "a.onnx", [_node("Relu", ["x"], ["y"], "act")], inputs=flat))
    with pytest.raises(HarnessError, match=r"the output has shape \('N', 2, 4, 4\); harness needs logits"):
        import_onnx(_write(tmp_path / "b.onnx", [_node("Relu", ["x"], ["y"], "act")]))
    nodes = _base()[:-1] + [_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], "fc", transB=1, alpha=2.0)]
    with pytest.raises(HarnessError, match=r"node 'fc' \(Gemm\): attribute alpha=2.0; alpha 1 only"):
        import_onnx(_write(tmp_path / "c.onnx", nodes, BASE))


def test_files_that_are_not_models(tmp_path, monkeypatch):
    text = tmp_path / "notes.onnx"
    text.write_text("these are my notes, not a model\n" * 20)
    with pytest.raises(HarnessError, match="is not an ONNX model"):
        import_onnx(text)
    with pytest.raises(HarnessError, match="does not exist"):
        import_onnx(tmp_path / "missing.onnx")
    odd = tmp_path / "two\nlines.onnx"  # a file name with a newline still gives one line
    odd.write_text("not a model")
    with pytest.raises(HarnessError, match=r"two\\nlines.onnx' is not an ONNX model"):
        import_onnx(odd)
    path = _write(tmp_path / "g.onnx", _base(), BASE)
    monkeypatch.setattr(onnx_import, "MAX_ONNX_BYTES", 100)
    with pytest.raises(HarnessError, match="is larger than 100 bytes, the most harness reads"):
        import_onnx(path)


def test_external_data_elsewhere_is_refused(tmp_path):
    model = onnx.load_model_from_string(_write(tmp_path / "g.onnx", _base(), BASE).read_bytes())
    onnx.save_model(model, str(tmp_path / "h.onnx"), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    with pytest.raises(HarnessError, match="keeps its data in 'weights.bin'; harness reads external data only "
                                           "from h.onnx.data beside the model"):
        import_onnx(tmp_path / "h.onnx")


def test_layer_names_are_identifiers():
    assert identifier("layer1.0.conv1") == "layer1_0_conv1"
    assert identifier("0") == "layer_0"
    assert identifier("forward") == "forward_" and identifier("input") == "input_" and identifier("class") == "class_"
    assert identifier("/a b/c::d") == "a_b_c_d" and identifier("..") == "layer"


# -- the spec as JSON -------------------------------------------------------------------------------------------

def test_a_spec_file_round_trips(imported, tmp_path):
    spec = imported["resnet20"][2]
    save_spec(spec, tmp_path / "spec.json")
    assert load_spec(tmp_path / "spec.json") == spec
    assert json.loads((tmp_path / "spec.json").read_text())["layers"][0] == {
        "type": "Conv2d", "name": "conv1", "in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 1,
        "padding": 1, "bias": False, "groups": 1, "inputs": []}
    registry = build_model("lenet5", 1, 10, "gelu")
    save_spec(registry, tmp_path / "lenet.json")
    assert load_spec(tmp_path / "lenet.json") == registry


def _edited(edit) -> dict:
    document = spec_to_dict(build_model("lenet-tiny", 1, 10))
    edit(document)
    return document


SPEC_REFUSALS = {
    "unknown-kind": (lambda d: d["layers"][0].update(type="Conv3d"), "layer 0: type 'Conv3d' is not one of Conv2d"),
    "unknown-field": (lambda d: d["layers"][0].update(dilation=2),
                      "layer 0 (Conv2d 'conv1'): unknown field 'dilation'"),
    "missing-field": (lambda d: d["layers"][0].pop("out_channels"), "layer 0 (Conv2d 'conv1'): "),
    "wrong-type": (lambda d: d["layers"][0].update(stride="2"), "field stride should be an integer, got '2'"),
    "bool-as-int": (lambda d: d["layers"][0].update(padding=True), "field padding should be an integer, got 'True'"),
    "nan": (lambda d: d["layers"][1].update(negative_slope=float("nan")),
            "field negative_slope should be a finite number"),
    "reserved-name": (lambda d: d["layers"][1].update(name="forward"), "the name 'forward' is reserved"),
    "bad-shape": (lambda d: d.update(input_shape=[1, 28]), "input_shape [1, 28] should be [C, H, W]"),
    "wrong-wiring": (lambda d: d["layers"][1].update(inputs=["fc1"]), "act1 reads 'fc1', which is not an earlier"),
    "bad-name": (lambda d: d.update(name="../x"), "name '../x' should be 1-64 letters"),
    "not-a-spec": (lambda d: d.update(format="onnx"), "format 'onnx' version 1, expected 'harness-spec'"),
    "extra-key": (lambda d: d.update(weights=[]), "unknown keys ['weights']"),
    "zero-stride": (lambda d: d["layers"][2].update(stride=0), "layer 2 (Pool 'pool1'): kernel_size 2 and stride 0 "
                                                              "should be >= 1"),
    "huge": (lambda d: (d["layers"][7].update(out_features=2**20), d["layers"][9].update(in_features=2**20)),
             "weight values, more than the 268,435,456 harness trains"),
}


@pytest.mark.parametrize("case", list(SPEC_REFUSALS))
def test_a_bad_spec_file_is_one_line(tmp_path, case):
    edit, expected = SPEC_REFUSALS[case]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_edited(edit)))
    with pytest.raises(HarnessError) as error:
        load_spec(path)
    assert "\n" not in str(error.value) and str(error.value).startswith(f"{path}: ")
    assert expected in str(error.value)


def test_a_spec_file_that_is_not_json_or_too_large(tmp_path, monkeypatch):
    path = tmp_path / "spec.json"
    path.write_text("{'layers': ")
    with pytest.raises(HarnessError, match="is not JSON"):
        load_spec(path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(HarnessError, match="is not JSON"):
        load_spec(path)
    monkeypatch.setattr(specfile, "MAX_SPEC_BYTES", 10)
    with pytest.raises(HarnessError, match="is larger than 10 bytes"):
        load_spec(path)


# -- one place that says what a model setting means ------------------------------------------------------------

def test_model_resolution(imported, tmp_path):
    _, path, spec, weights, _, _ = imported["resnet20"]
    assert model_spec("lenet5", 1, 10) == build_model("lenet5", 1, 10)
    assert model_spec(str(path), 3, 10) == spec and native_shape(str(path)) == (3, 32, 32)
    assert native_shape("vgg11") == (3, 32, 32)
    start = initial_weights(str(path), spec, seed=5)
    assert all(np.array_equal(start[name], weights[name]) for name in weights)  # the file's, not seeded
    nudged = initial_weights(str(path), spec, seed=5, ulps=1)
    assert np.all(nudged["conv1.weight"] == np.nextafter(weights["conv1.weight"], np.float32(np.inf)))
    assert np.array_equal(nudged["bn1.mean"], weights["bn1.mean"])  # statistics are not trained: not nudged
    save_spec(spec, tmp_path / "spec.json")
    assert model_spec(str(tmp_path / "spec.json"), 3, 10) == spec
    seeded = initial_weights(str(tmp_path / "spec.json"), spec, seed=5)
    assert not np.array_equal(seeded["conv1.weight"], weights["conv1.weight"])  # a JSON spec: harness's own
    with pytest.raises(HarnessError, match="ends in 10 classes but the dataset has 100"):
        model_spec(str(path), 3, 100)
    with pytest.raises(HarnessError, match=f"--activation tanh change a registry model; {path} brings its own"):
        model_spec(str(path), activation="tanh")


def test_the_config_hash_covers_the_files_contents(tmp_path):
    path = _write(tmp_path / "g.onnx", _base(), BASE)
    first = build_config({"model": str(path), "epochs": 1})
    assert first.model_sha256 is not None and config_from_json(json.dumps(first.to_dict())) == first
    _write(path, _base(), {**BASE, "fc.bias": np.zeros(5)})
    second = build_config({"model": str(path), "epochs": 1})
    assert second.config_hash != first.config_hash
    # A run folder's config keeps the digest it was made with, and the file is checked against it.
    assert config_from_json(json.dumps(first.to_dict())).config_hash == first.config_hash
    with pytest.raises(HarnessError, match="g.onnx has changed since this run's settings were made"):
        model_spec(str(path), sha256=first.model_sha256)
    registry = build_config({"epochs": 1})
    assert registry.model_sha256 is None and "model_sha256" in registry.to_dict()
    with pytest.raises(HarnessError, match="model file .*missing.onnx does not exist"):
        build_config({"model": str(tmp_path / "missing.onnx")})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_damaged_file_is_refused_in_one_line_or_imported(tmp_path, data):
    """Truncated, flipped or extended bytes of a valid model: a spec or one HarnessError line, never a crash."""
    valid = bytearray(_write(tmp_path / "valid.onnx", _base(), BASE).read_bytes())
    if data.draw(st.booleans()):
        del valid[data.draw(st.integers(0, len(valid) - 1)):]
    for _ in range(data.draw(st.integers(0, 4)) if valid else 0):
        valid[data.draw(st.integers(0, len(valid) - 1))] ^= data.draw(st.integers(1, 255))
    valid += data.draw(st.binary(max_size=16))
    path = tmp_path / "damaged.onnx"
    path.write_bytes(bytes(valid))
    try:
        import_onnx(path)
    except HarnessError as error:
        assert "\n" not in str(error) and "damaged.onnx" in str(error)
