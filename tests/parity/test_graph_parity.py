"""Parity and the divergence search on graph specs: Dropout removed with its readers rewired, BatchNorm's
bias noise and float32's decisions found along the wiring, every check of ``harness parity`` on a
residual and depthwise graph, and the layer where a graph's evaluators part."""

from __future__ import annotations

import numpy as np
import pytest

from harness.config import TrainConfig, build_config
from harness.data.fit import prepare
from harness.data.registry import load_raw
from harness.model.spec import (Activation, Add, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool, Linear,
                                ModelSpec, Pool)
from harness.model.weights import init_weights
from harness.model.zoo import build_model
from harness.parity.modes import Side, check, divergence, parity_spec
from harness.parity.spread import LockstepReference, decision_inputs, normalised_biases
from harness.reference.forward import forward
from harness.reference.grad import train_forward
from tests.support import randomise_batch_norm, residual_depthwise_spec

pytestmark = pytest.mark.parity

# Dropout read in every way a graph can read it: by name from an Add, as the layer before by a layer after a
# Dropout that names its own input, in a chain of two, and as the model's logits.
DROPOUTS = {
    "read-by-name": residual_depthwise_spec(dropout=0.25),
    "named-input-read-as-the-layer-before": ModelSpec("implicit", (2, 6, 6), 3, (
        Conv2d("c1", 2, 4, 3, padding=1), Activation("a1", "relu"), Conv2d("c2", 4, 4, 3, padding=1),
        Dropout("d", 0.5, inputs=("a1",)), Conv2d("c3", 4, 4, 1), Add("s", ("c2", "c3")), GlobalAvgPool("gap"),
        Flatten("flat"), Linear("fc", 4, 3))),
    "two-in-a-row-then-first": ModelSpec("double", (1, 4, 4), 2, (
        Dropout("d0", 0.1), Conv2d("c1", 1, 2, 3), Dropout("d1", 0.2), Dropout("d2", 0.3),
        Conv2d("c2", 1, 2, 3, inputs=("d0",)), Add("s", ("d2", "c2")), Flatten("flat"), Linear("fc", 8, 2))),
    "logits": ModelSpec("last", (1, 4, 4), 2, (
        Flatten("flat"), Linear("fc1", 16, 2), Linear("fc2", 16, 2, inputs=("flat",)), Dropout("d", 0.5,
                                                                                               inputs=("fc1",)))),
}


@pytest.mark.parametrize("case", list(DROPOUTS))
def test_parity_spec_removes_dropout_and_rewires_its_readers(case):
    spec = DROPOUTS[case]
    plain = parity_spec(spec)
    assert not any(isinstance(layer, Dropout) for layer in plain.layers)
    assert plain.param_shapes() == spec.param_shapes() and plain.num_params == spec.num_params
    weights = randomise_batch_norm(spec, init_weights(spec, seed=2))
    x = np.random.default_rng(0).standard_normal((3, *spec.input_shape))
    # Eval-mode Dropout is the identity: the same network, value for value, in every layer both have.
    logits, outputs = forward(spec, weights, x, collect=True)
    plain_logits, plain_outputs = forward(plain, weights, x, collect=True)
    np.testing.assert_array_equal(plain_logits, logits)
    for name, value in plain_outputs.items():
        np.testing.assert_array_equal(value, outputs[name], err_msg=name)
    train_forward(plain, weights, x)  # accepted: no Dropout with p > 0 left


def test_parity_spec_names_what_each_reader_reads_now():
    assert parity_spec(DROPOUTS["read-by-name"]) == residual_depthwise_spec()  # b2_add reads b2_short by name
    implicit = parity_spec(DROPOUTS["named-input-read-as-the-layer-before"])
    assert implicit.input_names(3) == ("a1",) and implicit.layers[3].inputs == ("a1",)  # c3: c2 is before it now
    double = parity_spec(DROPOUTS["two-in-a-row-then-first"])
    assert [layer.name for layer in double.layers] == ["c1", "c2", "s", "flat", "fc"]
    assert double.input_names(0) == ("input",) and double.input_names(1) == ("input",)
    assert double.input_names(2) == ("c1", "c2")
    last = parity_spec(DROPOUTS["logits"])  # its input is not the layer before: an identity keeps the logits last
    assert last.layers[-1] == Activation("d", "identity", inputs=("fc1",))
    chain = build_model("simple-cnn")  # a chain stays a chain, nothing named
    assert parity_spec(chain).is_chain and all(layer.inputs == () for layer in parity_spec(chain).layers)
    assert [layer.name for layer in parity_spec(chain).layers] == [
        layer.name for layer in chain.layers if not isinstance(layer, Dropout)]


def test_batchnorm_bias_noise_follows_the_wiring():
    """A BatchNorm reading a biased conv that is not the layer before it carries its noise; one placed right
    after a biased conv that it does not read does not."""
    spec = ModelSpec("bn", (2, 6, 6), 3, (
        Conv2d("c1", 2, 4, 3, padding=1), Conv2d("c2", 4, 4, 1, bias=False), BatchNorm2d("bn_a", 4, inputs=("c1",)),
        Conv2d("c3", 4, 4, 1, inputs=("c2",)), BatchNorm2d("bn_b", 4, inputs=("c2",)), Add("s", ("bn_a", "bn_b", "c3")),
        BatchNorm2d("bn_c", 4), GlobalAvgPool("gap"), Flatten("flat"), Linear("fc", 4, 3)))
    pairs = [(bias, norm.name) for bias, norm in normalised_biases(spec)]
    assert pairs == [("c1.bias", "bn_a")]  # bn_b sits after c3 but reads the bias-free c2; bn_c reads an Add
    chain = parity_spec(build_model("vgg11-bn", 1))
    assert [(b, n.name) for b, n in normalised_biases(chain)] == [(f"conv{i}.bias", f"bn{i}") for i in range(1, 9)]
    # Adam's lockstep noise reaches a BatchNorm's running mean through the bias it normalises.
    train = TrainConfig(optimizer="adam", learning_rate=1e-3)
    weights = init_weights(spec, 0)
    reference = LockstepReference(spec, train, set(spec.trainable_names()), weights)
    x = np.random.default_rng(1).standard_normal((4, *spec.input_shape)).astype(np.float32)
    for _ in range(2):
        reference.step(x, np.array([0, 1, 2, 0]), 1e-3)
    assert np.min(reference.noise["bn_a.mean"]) > 0 and "bn_b.mean" not in reference.noise


def test_decision_inputs_are_what_each_deciding_layer_reads():
    spec = ModelSpec("reads", (2, 6, 6), 3, (
        Conv2d("c1", 2, 4, 3, padding=1), Conv2d("c2", 2, 4, 3, padding=1, inputs=("input",)),
        Activation("r1", "relu", inputs=("c1",)), Pool("p", "max", 2, 2, inputs=("c2",)),
        Activation("r0", "relu6", inputs=("input",)), Flatten("flat", inputs=("p",)), Linear("fc", 36, 3)))
    weights = init_weights(spec, 0)
    x = np.random.default_rng(2).standard_normal((2, *spec.input_shape))
    _, outputs = forward(spec, weights, x, collect=True)
    found = decision_inputs(spec, x, outputs)
    expected = train_forward(spec, weights, x).decision_inputs()  # the referee's own: no BatchNorm, same values
    assert list(found) == ["r1", "p", "r0"]
    for name, value in expected.items():
        np.testing.assert_array_equal(found[name], value, err_msg=name)


GRAPH = residual_depthwise_spec(dropout=0.25, channels=1, size=8, classes=10)


def _dataset(spec):
    return prepare(load_raw("synthetic", synthetic_shape=spec.input_shape, seed=0), spec.input_shape, "auto", 64, 16)


def test_forward_and_backward_rows_of_a_graph(both_backends):
    a, b = both_backends
    spec = parity_spec(GRAPH)
    sides = [Side(backend.name, backend, backend.build(spec, "cpu")) for backend in (a, b)]
    weights = randomise_batch_norm(spec, init_weights(spec, 3))
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((16, *spec.input_shape)).astype(np.float32), rng.integers(0, 10, 16)
    rows = divergence(*sides, spec, x, y, weights)
    forward_rows = [row for row in rows if row["mode"] == "forward"]
    assert [row["param"] for row in forward_rows] == [layer.name for layer in spec.layers] * 3
    assert all(row["passed"] for row in forward_rows), [row for row in forward_rows if not row["passed"]][:3]
    backward_rows = [row for row in rows if row["mode"] == "backward"]
    assert [row["param"] for row in backward_rows] == spec.trainable_names()[::-1]
    assert all(row["passed"] for row in backward_rows), [row for row in backward_rows if not row["passed"]][:3]


@pytest.mark.parametrize("optimizer,learning_rate", [("sgd", 0.05), ("adam", 1e-3)])
def test_synchronised_and_lockstep_steps_of_a_graph(both_backends, optimizer, learning_rate):
    config = build_config({"dataset": "synthetic", "model": "lenet5", "batch_size": 16, "optimizer": optimizer,
                           "learning_rate": learning_rate, "weight_decay": 5e-4})
    rows = check(config, GRAPH, _dataset(GRAPH), ["pytorch", "mindspore"], 2, ["synchronised", "lockstep"],
                 search=False)
    failed = [row for row in rows if not row.get("passed", True)]
    assert not failed, failed[:3]
    for mode in ("synchronised", "lockstep"):
        params = {row["param"] for row in rows if row["mode"] == mode}
        assert set(parity_spec(GRAPH).param_shapes()) <= params, mode  # every tensor, running statistics too
    assert all(np.isfinite(row["rel64_a"]) and np.isfinite(row["rel64_b"]) for row in rows if "rel64_a" in row)
