"""The graph kinds in the float64 referee against torch float64 autograd: strided, padded and grouped
convolutions, GlobalAvgPool, Add over fan-out, BatchNorm in a residual branch; and float32's decisions
counted through a graph."""

from __future__ import annotations

import numpy as np
import pytest

from harness.model.spec import (Activation, Add, BatchNorm2d, Conv2d, Flatten, GlobalAvgPool, Linear, ModelSpec,
                                Pool)
from harness.model.weights import init_weights
from harness.reference.forward import forward
from harness.reference.grad import backward, loss_and_gradients, rounding_widths, train_forward
from harness.reference.layers import layer_backward, layer_forward
from tests.support import randomise_batch_norm, residual_depthwise_spec, torch_graph

torch = pytest.importorskip("torch")
TOLERANCE = 1e-10  # float64 on both sides: only summation order differs


def _batch(spec: ModelSpec, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *spec.input_shape)), rng.integers(0, spec.num_classes, n)


def _params(spec: ModelSpec, weights: dict) -> dict:
    trainable = set(spec.trainable_names())
    return {name: torch.tensor(np.asarray(v, np.float64), requires_grad=name in trainable)
            for name, v in weights.items()}


def _torch_pass(spec: ModelSpec, weights: dict, x: np.ndarray, y: np.ndarray):
    """torch float64 autograd along the spec's wiring: loss, gradients (a parameter nothing reaches: 0),
    running statistics after the batch."""
    params = _params(spec, weights)
    logits = torch_graph(spec, torch.from_numpy(np.asarray(x, np.float64)), params, training=True)[-1]
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(np.asarray(y, np.int64)))
    loss.backward()
    grads = {name: (params[name].grad.numpy() if params[name].grad is not None else np.zeros(params[name].shape))
             for name in spec.trainable_names()}
    buffers = {name: p.detach().numpy() for name, p in params.items() if not p.requires_grad}
    return loss.item(), grads, buffers


def _assert_matches_torch(spec: ModelSpec, weights: dict, x: np.ndarray, y: np.ndarray) -> None:
    ours = loss_and_gradients(spec, weights, x, y)
    loss, grads, buffers = _torch_pass(spec, weights, x, y)
    assert abs(ours.loss - loss) < TOLERANCE * max(1.0, abs(loss))
    scale = max(float(np.abs(g).max()) for g in grads.values())
    assert list(ours.grads) == spec.trainable_names()
    for name, grad in grads.items():
        assert ours.grads[name].shape == grad.shape, name
        assert np.abs(ours.grads[name] - grad).max() <= TOLERANCE * scale, name
    assert set(ours.buffers) == set(buffers)
    for name, value in buffers.items():
        np.testing.assert_allclose(ours.buffers[name], value, rtol=TOLERANCE, atol=TOLERANCE, err_msg=name)
    # The eval-mode forward, every layer's output (BatchNorm on the running statistics).
    logits, outputs = forward(spec, weights, x, collect=True)
    with torch.no_grad():
        expected = torch_graph(spec, torch.from_numpy(np.asarray(x, np.float64)), _params(spec, weights))
    assert list(outputs) == [layer.name for layer in spec.layers]
    for (name, value), want in zip(outputs.items(), expected):
        np.testing.assert_allclose(value, want.numpy(), rtol=TOLERANCE, atol=TOLERANCE, err_msg=name)
    np.testing.assert_array_equal(logits, outputs[spec.layers[-1].name])


# One conv layer of each new shape, alone: (in, out, kernel, stride, padding, groups, bias), input size.
CONVS = {
    "stride2-pad1": (Conv2d("c", 3, 5, 3, stride=2, padding=1), 9),
    "stride2-pad0-even": (Conv2d("c", 2, 4, 2, stride=2), 8),
    "stride3-pad2": (Conv2d("c", 2, 3, 3, stride=3, padding=2, bias=False), 10),
    "depthwise": (Conv2d("c", 4, 4, 3, padding=1, groups=4), 6),
    "depthwise-stride2-multiplier2": (Conv2d("c", 3, 6, 3, stride=2, padding=1, groups=3, bias=False), 7),
    "groups2": (Conv2d("c", 4, 6, 3, padding=1, groups=2), 5),
    "groups2-stride2-1x1": (Conv2d("c", 6, 4, 1, stride=2, groups=2), 7),
}


@pytest.mark.parametrize("case", list(CONVS))
def test_one_conv_forward_and_backward_match_torch(case):
    layer, size = CONVS[case]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, layer.in_channels, size, size))
    weights = {f"c.{suffix}": rng.standard_normal(shape) for suffix, shape in layer.param_shapes().items()}
    out, cache = layer_forward(layer, weights, x)
    grad = rng.standard_normal(out.shape)
    dx, grads, flipped = layer_backward(layer, cache, grad)
    t = torch.tensor(x, requires_grad=True)
    params = {name: torch.tensor(value, requires_grad=True) for name, value in weights.items()}
    expected = torch.nn.functional.conv2d(t, params["c.weight"], params.get("c.bias"), layer.stride, layer.padding,
                                          1, layer.groups)
    expected.backward(torch.from_numpy(grad))
    assert out.shape == tuple(expected.shape) == (3, *layer.output_shape(x.shape[1:]))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=TOLERANCE, atol=TOLERANCE)
    assert set(grads) == {name.split(".")[1] for name in weights} and flipped == 0
    for suffix, value in grads.items():
        np.testing.assert_allclose(value, params[f"c.{suffix}"].grad.numpy(), rtol=TOLERANCE, atol=TOLERANCE)


def test_global_avg_pool_and_add_alone():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 7))
    out, cache = layer_forward(GlobalAvgPool("g"), {}, x)
    grad = rng.standard_normal(out.shape)
    dx, grads, _ = layer_backward(GlobalAvgPool("g"), cache, grad)
    t = torch.tensor(x, requires_grad=True)
    expected = torch.nn.functional.adaptive_avg_pool2d(t, 1)
    expected.backward(torch.from_numpy(grad))
    assert out.shape == (2, 3, 1, 1) and grads == {}
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=TOLERANCE, atol=1e-15)
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=TOLERANCE, atol=1e-15)
    parts = [rng.standard_normal((2, 3)) for _ in range(3)]
    summed, cache = layer_forward(Add("a", ("p", "q", "r")), {}, *parts)
    np.testing.assert_array_equal(summed, parts[0] + parts[1] + parts[2])  # torch's order: ((p + q) + r)
    dxs, _, _ = layer_backward(Add("a", ("p", "q", "r")), cache, grad[:, :, 0, 0])
    assert len(dxs) == 3 and all(np.array_equal(d, grad[:, :, 0, 0]) for d in dxs)


def test_residual_depthwise_graph_matches_torch_autograd():
    spec = residual_depthwise_spec()
    weights = randomise_batch_norm(spec, init_weights(spec, seed=3))
    _assert_matches_torch(spec, weights, *_batch(spec, 6))


# Small graphs, each one thing a chain cannot be.
GRAPHS = {
    # One conv read by three later layers (two Adds and a conv): its gradient is the sum over all readers.
    "fan-out-three-readers": ModelSpec("fan", (2, 6, 6), 3, (
        Conv2d("c1", 2, 4, 3, padding=1), Activation("a1", "tanh"),
        Conv2d("c2", 4, 4, 3, padding=1), Add("s1", ("c2", "a1")),
        Conv2d("c3", 4, 4, 1, inputs=("a1",)), Add("s2", ("s1", "c3", "a1")),
        GlobalAvgPool("gap"), Flatten("flat"), Linear("fc", 4, 3))),
    # BatchNorm on both paths of a block and after the sum, one statistic per path; no-bias convs as ResNets.
    "batchnorm-in-both-branches": ModelSpec("bn", (3, 6, 6), 4, (
        Conv2d("stem", 3, 4, 3, padding=1, bias=False), BatchNorm2d("bn0", 4, momentum=0.3),
        Activation("r0", "relu"), Conv2d("c1", 4, 4, 3, stride=2, padding=1, bias=False),
        BatchNorm2d("bn1", 4, eps=1e-3), Conv2d("sc", 4, 4, 1, stride=2, bias=False, inputs=("r0",)),
        BatchNorm2d("bn_sc", 4), Add("add", ("bn1", "bn_sc")), BatchNorm2d("bn2", 4),
        Activation("r1", "leaky_relu", negative_slope=0.1), GlobalAvgPool("gap"), Flatten("flat"),
        Linear("fc", 4, 4))),
    # A branch nothing reads: its parameters get zero gradients, as torch leaves them untouched.
    "dead-branch": ModelSpec("dead", (1, 5, 5), 2, (
        Conv2d("c1", 1, 3, 3), Activation("a1", "sigmoid"), Conv2d("unused", 3, 2, 1),
        Flatten("flat", inputs=("a1",)), Linear("fc", 27, 2))),
    # A max pool and a GELU on a branch, the model input read by two layers.
    "input-read-twice": ModelSpec("twice", (2, 6, 6), 3, (
        Conv2d("c1", 2, 4, 3, padding=1), Conv2d("c2", 2, 4, 1, inputs=("input",)), Add("s", ("c1", "c2")),
        Activation("g", "gelu"), Pool("p", "max", 2, 2), Conv2d("dw", 4, 4, 3, groups=4, padding=1),
        GlobalAvgPool("gap"), Flatten("flat"), Linear("fc", 4, 3))),
}


@pytest.mark.parametrize("case", list(GRAPHS))
def test_graphs_match_torch_autograd(case):
    spec = GRAPHS[case]
    assert not spec.is_chain
    weights = randomise_batch_norm(spec, init_weights(spec, seed=4))
    x, y = _batch(spec, 5)
    _assert_matches_torch(spec, weights, x, y)
    if case == "dead-branch":
        grads = loss_and_gradients(spec, weights, x, y).grads
        assert not grads["unused.weight"].any() and not grads["unused.bias"].any()


def _gate_graph(z: float) -> tuple[ModelSpec, dict, np.ndarray, np.ndarray]:
    """A graph whose ReLU reads an Add of a layer with fan-out; its first input (image 0, unit 0) is ``z``.

    ``h`` feeds both the ReLU's Add and the logits' Add, so a gate decision moves only one of its readers.
    """
    spec = ModelSpec("gate-graph", (1, 2, 2), 3, (
        Flatten("flat"), Linear("h", 4, 5), Linear("k", 5, 5), Add("s", ("h", "k")), Activation("r", "relu"),
        Linear("o1", 5, 3), Linear("o2", 5, 3, inputs=("h",)), Add("logits", ("o1", "o2"))))
    weights = {name: value.astype(np.float64) for name, value in init_weights(spec, seed=1).items()}
    x, y = _batch(spec, 4)
    h = x[0].reshape(-1) @ weights["h.weight"].T + weights["h.bias"]
    k = h @ weights["k.weight"].T + weights["k.bias"]
    weights["k.bias"][0] += z - (h[0] + k[0])  # s[0, 0] = h + k lands on z (to float64 rounding of z)
    return spec, weights, x, y


@pytest.mark.parametrize("offset", [1e-12, -1e-12])
def test_flipping_a_gate_inside_a_graph_gives_the_other_sides_gradient(offset):
    spec, weights, x, y = _gate_graph(offset)
    tape = train_forward(spec, weights, x)
    assert abs(tape.decision_inputs()["r"][0, 0] - offset) < 1e-14
    plain, flipped = backward(tape, y), backward(tape, y, {"r": 1e-9})
    assert (plain.flipped, flipped.flipped) == (0, 1)
    _, same_side, _ = _torch_pass(spec, weights, x, y)
    _, other_side, _ = _torch_pass(spec, _gate_graph(-offset)[1], x, y)
    for name in spec.trainable_names():
        np.testing.assert_allclose(plain.grads[name], same_side[name], rtol=0, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(flipped.grads[name], other_side[name], rtol=0, atol=1e-9, err_msg=name)
    assert np.abs(flipped.grads["h.weight"] - plain.grads["h.weight"]).max() > 1e-4
    # o2 reads h, not the gate: its gradient does not depend on the decision.
    np.testing.assert_array_equal(flipped.grads["o2.weight"], plain.grads["o2.weight"])
    assert backward(tape, y, {"r": 1e-9}, decide=tape.decision_inputs()).flipped == 1


def test_float32_decisions_count_through_a_graph():
    spec = residual_depthwise_spec()
    weights = randomise_batch_norm(spec, init_weights(spec, seed=0))
    x, y = _batch(spec, 8)
    exact, rounded = train_forward(spec, weights, x), train_forward(spec, weights, x, np.float32)
    assert rounded.logits.dtype == np.float32
    widths = rounding_widths(exact, rounded, 2.0)
    # Every ReLU, ReLU6, Hardswish and max pool, and no other layer; each reads the layer its wiring names.
    assert set(widths) == {"stem_act", "b1_act1", "b1_act2", "b2_act1", "b2_act2", "g2_act", "pool"}
    assert all(0 < w < 1e-4 for w in widths.values())
    names = [layer.name for layer in spec.layers]
    _, outputs = forward(spec, weights, x, collect=True)
    for name, value in exact.decision_inputs().items():
        (source,) = spec.input_names(names.index(name))
        assert value.shape == (len(x), *spec.output_shapes[names.index(source)]), name
    np.testing.assert_array_equal(exact.decision_inputs()["b1_act2"], exact.caches[names.index("b1_act2")][0])
    grads32 = backward(rounded, y).grads
    for name, grad in backward(exact, y).grads.items():
        assert grads32[name].dtype == np.float32
        assert np.abs(grads32[name] - grad).max() < 1e-4 * np.abs(grad).max(), name
    wide = {name: 0.05 for name in widths}  # wide enough to flip decisions in every deciding layer
    by_float64 = backward(rounded, y, wide, decide=exact.decision_inputs())
    flipped64 = backward(exact, y, wide)
    assert by_float64.flipped == flipped64.flipped > 0
    # The count is the sum over the deciding layers of inputs within the width of a kink (relu6 and hardswish:
    # two kinks each) or a max pool's runner-up: counted here layer by layer.
    expected = 0
    for name, value in exact.decision_inputs().items():
        layer = spec.layers[names.index(name)]
        if isinstance(layer, Pool):
            out, cache = layer_forward(layer, {}, value)
            expected += layer_backward(layer, cache, np.ones_like(out), width=0.05)[2]
        else:
            kinks = {"relu": (0.0,), "relu6": (0.0, 6.0), "hardswish": (-3.0, 3.0)}[layer.kind]
            expected += sum(int((np.abs(value - kink) <= 0.05).sum()) for kink in kinks)
    assert flipped64.flipped == expected
