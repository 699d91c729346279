"""Tests of harness.reference.forward: the float64 numpy forward pass against torch.nn.functional in float64."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from harness.model.spec import Activation, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, ModelSpec, Pool
from harness.model.weights import init_weights
from harness.model.zoo import MODELS, build_model
from harness.reference.forward import forward, own_errors, predict
from harness.reference.layers import apply_layer
from tests.support import forward_with_error, randomise_batch_norm, registry_spec, torch_graph

# float64 end to end on both sides: only summation order differs, ~1e-15 relative.
TOLERANCE = 1e-10
# VGG11's float64 torch convolutions are slow; a few images test the arithmetic as well as many.
IMAGES = {"vgg11": 3, "vgg11-bn": 3}


def _torch_forward(spec: ModelSpec, weights: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    torch = pytest.importorskip("torch")

    params = {name: torch.from_numpy(np.asarray(value, np.float64)) for name, value in weights.items()}
    with torch.no_grad():
        values = torch_graph(spec, torch.from_numpy(np.asarray(x, np.float64)), params)
    return {layer.name: value.numpy() for layer, value in zip(spec.layers, values)}


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _inputs(spec: ModelSpec, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *spec.input_shape)).astype(np.float32)


def _registry_case(name: str):
    spec = registry_spec(name)
    weights = randomise_batch_norm(spec, init_weights(spec, seed=0))
    return spec, weights, _inputs(spec, IMAGES.get(name, 8))


@pytest.mark.parametrize("name", list(MODELS))
def test_every_layer_matches_torch_float64(name):
    spec, weights, x = _registry_case(name)
    expected = _torch_forward(spec, weights, x)
    logits, outputs = forward(spec, weights, x, collect=True)
    assert list(outputs) == list(expected)
    for layer in spec.layers:
        assert _relative(outputs[layer.name], expected[layer.name]) < TOLERANCE, layer.name
    assert logits.dtype == np.float64


def test_unusual_layers_match_torch():
    # No registry model has a strided conv, overlapping pools, or BN before sigmoid.
    layers = (
        Conv2d("conv1", 2, 5, 3, stride=2, padding=1), BatchNorm2d("bn1", 5, eps=1e-3), Activation("act1", "sigmoid"),
        Pool("pool1", "avg", 3, 2), Conv2d("conv2", 5, 4, 2, bias=False), Activation("act2", "tanh"),
        Pool("pool2", "max", 3, 1), Dropout("drop1", 0.3), Flatten("flatten"), Linear("fc1", 4, 3, bias=False),
    )
    spec = ModelSpec("odd", (2, 19, 19), 3, layers)
    weights = randomise_batch_norm(spec, init_weights(spec, seed=5))
    x = _inputs(spec, 6)
    expected = _torch_forward(spec, weights, x)
    _, outputs = forward(spec, weights, x, collect=True)
    for layer in spec.layers:
        assert outputs[layer.name].shape == expected[layer.name].shape, layer.name
        assert _relative(outputs[layer.name], expected[layer.name]) < TOLERANCE, layer.name


def test_a_perturbed_conv_weight_is_caught():
    # Proves the comparison can fail: a 1e-2 change to one weight is far above the tolerance.
    spec = build_model("lenet5")
    weights, x = init_weights(spec, seed=0), _inputs(spec, 8)
    expected = _torch_forward(spec, weights, x)["fc3"]
    wrong = dict(weights, **{"conv1.weight": weights["conv1.weight"].copy()})
    wrong["conv1.weight"][0, 0, 2, 2] += 1e-2
    assert _relative(forward(spec, wrong, x), expected) > 1e-5
    assert _relative(forward(spec, weights, x), expected) < TOLERANCE


@pytest.mark.parametrize("name", ["lenet5", "vgg11-bn"])
def test_collect_returns_every_layer_with_the_spec_shapes(name):
    spec = build_model(name, MODELS[name].channels)
    weights, x = init_weights(spec, seed=0), _inputs(spec, 2)
    logits, outputs = forward(spec, weights, x, collect=True)
    assert list(outputs) == [layer.name for layer in spec.layers]
    assert [out.shape[1:] for out in outputs.values()] == list(spec.output_shapes)
    assert all(out.dtype == np.float64 and len(out) == 2 for out in outputs.values())
    np.testing.assert_array_equal(outputs[spec.layers[-1].name], logits)
    np.testing.assert_array_equal(forward(spec, weights, x), logits)


@pytest.mark.parametrize("name, batch_size", [("lenet5-lecun", 16), ("simple-cnn", 7), ("mlp", 100)])
def test_chunked_predict_equals_one_forward(name, batch_size):
    spec = build_model(name)
    weights, x = init_weights(spec, seed=2), _inputs(spec, 50)
    logits = predict(spec, weights, x, batch_size=batch_size)
    assert logits.shape == (50, 10) and logits.dtype == np.float64
    np.testing.assert_allclose(logits, forward(spec, weights, x), rtol=1e-13, atol=1e-14)


def test_float32_and_float64_inputs_give_the_same_logits():
    spec = build_model("lenet-tiny")
    weights, x = init_weights(spec, seed=0), _inputs(spec, 4)
    np.testing.assert_array_equal(forward(spec, weights, x), forward(spec, weights, x.astype(np.float64)))


def test_sigmoid_keeps_relative_precision_far_out():
    x = np.array([-800.0, -30.0, 0.0, 30.0])
    y = apply_layer(Activation("act", "sigmoid"), {}, x)
    assert y[0] == 0.0 and y[2] == 0.5
    assert abs(y[1] / (1 / (1 + math.exp(30.0))) - 1) < 1e-14  # ~9.4e-14: tanh form would lose ~4 digits
    assert abs((1 - y[3]) / (1 - 1 / (1 + math.exp(-30.0))) - 1) < 1e-2


def test_own_errors_count_each_layers_own_error_only():
    spec = build_model("lenet5-lecun")
    weights, x = init_weights(spec, seed=0), _inputs(spec, 3)
    outputs = forward_with_error(spec, weights, x, "act2", 3e-5)
    rows = own_errors(spec, weights, x, outputs, atol=1e-4, rtol=1e-4)
    assert [row["layer"] for row in rows] == [layer.name for layer in spec.layers]
    by_layer = {row["layer"]: row for row in rows}
    assert by_layer["act2"]["max_abs"] == pytest.approx(3e-5, rel=1e-9)
    assert 3e-5 / (1e-4 + 1e-4 * 1.0) <= by_layer["act2"]["ratio"] <= 0.3 + 1e-9  # |tanh| <= 1
    # downstream layers get the error in their input, which is theirs: their own error stays at rounding
    assert max(row["max_abs"] for name, row in by_layer.items() if name != "act2") < 1e-12


def test_own_errors_stop_at_a_layer_of_the_wrong_shape():
    spec = build_model("lenet-tiny")
    weights, x = init_weights(spec, seed=0), _inputs(spec, 2)
    outputs = forward(spec, weights, x, collect=True)[1]
    pooled = spec.layers[2].name
    outputs[pooled] = outputs[pooled][:, :, :-1]  # as a pooling stride translated wrongly would give
    rows = own_errors(spec, weights, x, outputs, atol=1e-4, rtol=1e-4)
    assert len(rows) == 3 and rows[-1]["ratio"] == math.inf and rows[0]["max_abs"] == 0.0


def test_bad_input_or_weights_raise():
    spec = build_model("lenet5")
    weights = init_weights(spec, seed=0)
    with pytest.raises(ValueError, match="expects input"):
        forward(spec, weights, np.zeros((2, 1, 28, 28)))
    with pytest.raises(ValueError, match="lack"):
        forward(spec, {k: v for k, v in weights.items() if k != "fc3.bias"}, _inputs(spec, 1))
    with pytest.raises(ValueError, match="batch_size"):
        predict(spec, weights, _inputs(spec, 1), batch_size=0)


def test_imports_no_framework():
    code = ("import sys, harness.reference.forward, harness.reference.grad; "
            "assert not {'torch', 'mindspore'} & set(sys.modules), sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True)
