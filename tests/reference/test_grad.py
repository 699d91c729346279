"""Tests of the numpy train-mode backward and optimizer against torch float64 autograd and torch.optim."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from harness.config import TrainConfig
from harness.model.spec import Activation, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, ModelSpec, Pool
from harness.model.weights import init_weights
from harness.model.zoo import MODELS, build_model
from harness.parity.modes import parity_spec
from harness.reference.grad import backward, loss_and_gradients, rounding_widths, train_forward
from harness.reference.optim import AdamRange, adam_step_bound, optimizer_step
from tests.support import randomise_batch_norm, registry_spec

TOLERANCE = 1e-10  # float64 on both sides: only summation order differs
# torch's float64 convolutions are slow: VGG11-BN with 2 images (BatchNorm at 1x1 needs N > 1) covers
# every layer kind of VGG11 too, which is left out to keep the suite fast.
IMAGES = {"vgg11-bn": 2}


def _torch_pass(spec: ModelSpec, weights: dict, x: np.ndarray, y: np.ndarray):
    """torch float64 autograd of the same spec: loss, gradients, running statistics after the batch."""
    torch = pytest.importorskip("torch")
    from tests.support import torch_graph

    trainable = set(spec.trainable_names())
    params = {name: torch.tensor(np.asarray(v, np.float64), requires_grad=name in trainable)
              for name, v in weights.items()}
    # BatchNorm updates mean/var in place
    out = torch_graph(spec, torch.from_numpy(np.asarray(x, np.float64)), params, training=True)[-1]
    loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(np.asarray(y, np.int64)))
    loss.backward()
    grads = {name: params[name].grad.numpy() for name in spec.trainable_names()}
    buffers = {name: p.detach().numpy() for name, p in params.items() if name not in trainable}
    return loss.item(), grads, buffers


def _batch(spec: ModelSpec, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *spec.input_shape)).astype(np.float32), rng.integers(0, spec.num_classes, n)


def _assert_matches_torch(spec: ModelSpec, weights: dict, x: np.ndarray, y: np.ndarray) -> None:
    ours = loss_and_gradients(spec, weights, x, y)
    loss, grads, buffers = _torch_pass(spec, weights, x, y)
    assert abs(ours.loss - loss) < TOLERANCE * max(1.0, abs(loss))
    scale = max(float(np.abs(g).max()) for g in grads.values())  # a conv bias under BatchNorm is exactly 0
    for name, grad in grads.items():
        assert ours.grads[name].shape == grad.shape, name
        assert np.abs(ours.grads[name] - grad).max() < TOLERANCE * scale, name
    assert set(ours.buffers) == set(buffers)
    for name, value in buffers.items():
        np.testing.assert_allclose(ours.buffers[name], value, rtol=TOLERANCE, atol=TOLERANCE, err_msg=name)


@pytest.mark.parametrize("name", [name for name in MODELS if name != "vgg11"])
def test_every_registry_model_matches_torch_autograd(name):
    spec = parity_spec(registry_spec(name))
    weights = randomise_batch_norm(spec, init_weights(spec, seed=3))
    _assert_matches_torch(spec, weights, *_batch(spec, IMAGES.get(name, 6)))


def test_unusual_layers_match_torch_autograd():
    # Strided padded conv, overlapping avg and max pools, no-bias conv and linear, BN eps, sigmoid, tanh.
    layers = (
        Conv2d("conv1", 2, 5, 3, stride=2, padding=1), BatchNorm2d("bn1", 5, eps=1e-3, momentum=0.3),
        Activation("act1", "sigmoid"), Pool("pool1", "avg", 3, 2), Conv2d("conv2", 5, 4, 2, bias=False),
        Activation("act2", "tanh"), Pool("pool2", "max", 3, 1), Dropout("drop", 0.0), Conv2d("conv3", 4, 3, 1),
        Activation("act3", "relu"), Flatten("flatten"), Linear("fc1", 3, 3, bias=False),
    )
    spec = ModelSpec("odd", (2, 19, 19), 3, layers)
    _assert_matches_torch(spec, randomise_batch_norm(spec, init_weights(spec, seed=5)), *_batch(spec, 5))


# Every new activation, and the parameterised ones off their defaults.
NEW_ACTIVATIONS = {"relu6": Activation("act", "relu6"), "hardswish": Activation("act", "hardswish"),
                   "leaky_relu": Activation("act", "leaky_relu"),
                   "leaky_relu-0.3": Activation("act", "leaky_relu", negative_slope=0.3),
                   "gelu": Activation("act", "gelu"), "gelu-tanh": Activation("act", "gelu", approximate="tanh"),
                   "identity": Activation("act", "identity")}


@pytest.mark.parametrize("case", list(NEW_ACTIVATIONS))
def test_new_activations_match_torch_autograd(case):
    # Inputs scaled so the pre-activations spread over about [-8, 8]: every kink (0, 6, -3, 3) is crossed.
    act = NEW_ACTIVATIONS[case]
    layers = (Conv2d("conv1", 2, 4, 3, padding=1), replace(act, name="act1"), Pool("pool1", "max", 2, 2),
              Flatten("flatten"), Linear("fc1", 36, 8), replace(act, name="act2"), Linear("fc2", 8, 3))
    spec = ModelSpec("acts", (2, 6, 6), 3, layers)
    x, y = _batch(spec, 6)
    tape = train_forward(spec, init_weights(spec, seed=4), 8 * x)
    first = tape.caches[1][0]  # act1's input
    assert first.min() < -3 and first.max() > 6, "the inputs must cross every kink"
    _assert_matches_torch(spec, init_weights(spec, seed=4), 8 * x, y)


def _gate_net(z: float, act: Activation | None = None) -> tuple[ModelSpec, dict, np.ndarray, np.ndarray]:
    """A net whose first activation input (image 0, unit 0) is exactly ``z``; ReLU unless ``act`` is given."""
    act = act or Activation("act", "relu")
    spec = ModelSpec("gate", (1, 2, 2), 3, (Flatten("flat"), Linear("fc1", 4, 5), act, Linear("fc2", 5, 3)))
    weights = init_weights(spec, seed=1)
    x, y = _batch(spec, 4)
    first = float(x[0].reshape(-1).astype(np.float64) @ weights["fc1.weight"][0].astype(np.float64))
    weights["fc1.bias"] = weights["fc1.bias"].astype(np.float64)
    weights["fc1.bias"][0] = z - first
    return spec, weights, x, y


def test_flipping_a_gate_gives_the_gradient_of_the_other_side():
    spec, weights, x, y = _gate_net(1e-12)
    tape = train_forward(spec, weights, x)
    plain, untouched = backward(tape, y), backward(tape, y, {"act": 0.0})
    flipped = backward(tape, y, {"act": 1e-9})
    assert (plain.flipped, untouched.flipped, flipped.flipped) == (0, 0, 1)
    _, other_side, _ = _torch_pass(spec, _gate_net(-1e-12)[1], x, y)  # the same net, gate closed
    for name in spec.trainable_names():
        np.testing.assert_array_equal(untouched.grads[name], plain.grads[name])
        np.testing.assert_allclose(flipped.grads[name], other_side[name], rtol=0, atol=1e-9)
    assert np.abs(flipped.grads["fc1.weight"] - plain.grads["fc1.weight"]).max() > 1e-3


# Every kink of every piecewise activation: (layer, threshold).
KINKS = {"relu6@0": (Activation("act", "relu6"), 0.0), "relu6@6": (Activation("act", "relu6"), 6.0),
         "hardswish@-3": (Activation("act", "hardswish"), -3.0), "hardswish@3": (Activation("act", "hardswish"), 3.0),
         "leaky_relu@0": (Activation("act", "leaky_relu", negative_slope=0.2), 0.0)}


@pytest.mark.parametrize("case", list(KINKS))
@pytest.mark.parametrize("offset", [1e-12, -1e-12])
def test_flipping_at_every_kink_gives_the_gradient_of_the_other_side(case, offset):
    act, threshold = KINKS[case]
    spec, weights, x, y = _gate_net(threshold + offset, act)
    tape = train_forward(spec, weights, x)
    plain, flipped = backward(tape, y), backward(tape, y, {"act": 1e-9})
    assert (plain.flipped, flipped.flipped) == (0, 1)
    _, same_side, _ = _torch_pass(spec, weights, x, y)
    _, other_side, _ = _torch_pass(spec, _gate_net(threshold - offset, act)[1], x, y)
    for name in spec.trainable_names():
        np.testing.assert_allclose(plain.grads[name], same_side[name], rtol=0, atol=1e-9)
        np.testing.assert_allclose(flipped.grads[name], other_side[name], rtol=0, atol=1e-9)
    assert np.abs(flipped.grads["fc1.weight"] - plain.grads["fc1.weight"]).max() > 1e-4
    # Decided by another pass's input: the same flip, from the float64 values given as ``decide``.
    by_other = backward(tape, y, {"act": 1e-9}, decide=tape.decision_inputs())
    assert by_other.flipped == 1


def _pool_net(second: tuple[float, float]) -> tuple[ModelSpec, dict, np.ndarray, np.ndarray]:
    """conv 1x1 (weights 1, 0.5) then a 2x2 max pool: the first pixel gives 0.5, the second ``second``."""
    spec = ModelSpec("pool", (2, 2, 2), 2, (Conv2d("conv", 2, 1, 1), Pool("pool", "max", 2, 2), Flatten("flat"),
                                            Linear("fc", 1, 2)))
    weights = {**init_weights(spec, seed=0), "conv.weight": np.array([[[[1.0]], [[0.5]]]]), "conv.bias": np.zeros(1)}
    x = np.zeros((1, 2, 2, 2))
    x[0, :, 0, 0], x[0, :, 0, 1], x[0, :, 1, 0] = (0.5, 0.0), second, (0.1, 0.1)
    return spec, weights, x, np.array([1])


def test_flipping_a_max_pool_routes_to_the_runner_up():
    spec, weights, x, y = _pool_net((0.0, 1.0 - 2e-12))  # the runner-up is 1e-12 below, from other inputs
    plain = backward(train_forward(spec, weights, x), y)
    flipped = backward(train_forward(spec, weights, x), y, {"pool": 1e-9})
    assert flipped.flipped == 1
    _, other_side, _ = _torch_pass(*_pool_net((0.0, 1.0 + 2e-12)))  # torch, the second pixel 1e-12 above
    np.testing.assert_allclose(flipped.grads["conv.weight"], other_side["conv.weight"], atol=1e-9)
    assert np.abs(flipped.grads["conv.weight"] - plain.grads["conv.weight"]).max() > 1e-2
    tie = backward(train_forward(*_pool_net((0.5, 0.0))[:3]), y, {"pool": 1e-9})
    assert tie.flipped == 0  # equal values from equal inputs: either choice gives the same gradient


def test_float32_run_and_rounding_widths():
    spec = parity_spec(build_model("lenet5"))
    weights, (x, y) = init_weights(spec, seed=0), _batch(spec, 8)
    exact, rounded = train_forward(spec, weights, x), train_forward(spec, weights, x, np.float32)
    assert rounded.logits.dtype == np.float32 and exact.logits.dtype == np.float64
    widths = rounding_widths(exact, rounded, 2.0)
    assert set(widths) == {"act1", "pool1", "act2", "pool2", "act3", "act4"}
    assert all(0 < w < 1e-5 for w in widths.values())
    assert rounding_widths(exact, rounded, 4.0)["act2"] == 2 * widths["act2"]
    grads32 = backward(rounded, y).grads
    for name, grad in backward(exact, y).grads.items():
        assert grads32[name].dtype == np.float32
        assert np.abs(grads32[name] - grad).max() < 1e-5 * np.abs(grad).max(), name
    wide = {name: 1e-2 for name in widths}  # wide enough to flip some decisions
    by_float64 = backward(rounded, y, wide, decide=exact.decision_inputs())  # float32 arithmetic, float64's decisions
    assert by_float64.flipped == backward(exact, y, wide).flipped > 0


def test_dropout_and_bad_input_are_refused():
    spec = build_model("simple-cnn")  # has Dropout(0.2): its masks cannot be reproduced
    with pytest.raises(ValueError, match="dropout"):
        train_forward(spec, init_weights(spec, seed=0), _batch(spec, 2)[0])
    with pytest.raises(ValueError, match="expects input"):
        train_forward(parity_spec(spec), init_weights(spec, seed=0), np.zeros((2, 3, 28, 28)))


OPTIMIZERS = {
    "sgd-momentum-nesterov-wd": TrainConfig(momentum=0.9, nesterov=True, weight_decay=0.05),
    "sgd-dampening": TrainConfig(momentum=0.8, dampening=0.3, weight_decay=0.01),
    "sgd-plain": TrainConfig(momentum=0.0),
    "adam-wd": TrainConfig(optimizer="adam", weight_decay=0.05, eps=1e-3),
    "adamw": TrainConfig(optimizer="adamw", weight_decay=0.1, beta1=0.8, beta2=0.95),
}


@pytest.mark.parametrize("case", list(OPTIMIZERS))
def test_optimizer_step_matches_torch_optim(case):
    torch = pytest.importorskip("torch")
    train, rng = OPTIMIZERS[case], np.random.default_rng(0)
    weights = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    decay = {"a"}  # weight decay on one tensor only, as decay_scope=weights does
    params = {n: torch.tensor(v, requires_grad=True) for n, v in weights.items()}
    groups = [{"params": [params["a"]], "weight_decay": train.weight_decay},
              {"params": [params["b"]], "weight_decay": 0.0}]
    if train.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=0.1, momentum=train.momentum, dampening=train.dampening,
                                    nesterov=train.nesterov)
    else:
        cls = torch.optim.Adam if train.optimizer == "adam" else torch.optim.AdamW
        optimizer = cls(groups, lr=0.1, betas=(train.beta1, train.beta2), eps=train.eps)
    state: dict = {}
    for lr in (0.1, 0.05, 0.02):
        grads = {n: rng.standard_normal(v.shape) for n, v in weights.items()}
        for group in optimizer.param_groups:
            group["lr"] = lr
        for name, param in params.items():
            param.grad = torch.from_numpy(grads[name])
        optimizer.step()
        weights, state = optimizer_step(train, lr, decay, weights, state, grads)
        for name, param in params.items():
            np.testing.assert_allclose(weights[name], param.detach().numpy(), rtol=1e-13, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.8, 0.95)])
def test_adam_step_bound_is_reached_and_never_exceeded(betas):
    """The bound lockstep allows a noise-directed Adam step: the worst gradient sequence reaches it exactly,
    random ones (any signs and sizes) stay under it."""
    train, rng = TrainConfig(optimizer="adam", beta1=betas[0], beta2=betas[1], eps=0.0), np.random.default_rng(1)

    def last_step(grads: list[float]) -> float:
        weights, state = {"w": np.zeros(1)}, {}
        for grad in grads:
            before = weights["w"]
            weights, state = optimizer_step(train, 1.0, set(), weights, state, {"w": np.array([grad])})
        return float(abs(weights["w"] - before)[0])

    assert adam_step_bound(train, 1) == pytest.approx(1.0, rel=1e-12)
    for step in range(1, 8):
        worst = [(betas[0] / betas[1]) ** (step - i) for i in range(1, step + 1)]  # equality in Cauchy-Schwarz
        assert last_step(worst) == pytest.approx(adam_step_bound(train, step), rel=1e-12)
        for _ in range(200):
            noise = rng.standard_normal(step) * 10.0 ** rng.uniform(-9, 0, step)
            assert last_step(list(noise)) <= adam_step_bound(train, step) * (1 + 1e-12)
    assert adam_step_bound(train, 7) > 1.0  # past the first step a sequence can push Adam over lr


def test_adam_range_holds_every_update_from_gradients_in_the_intervals():
    train, rng = TrainConfig(optimizer="adam"), np.random.default_rng(2)
    centres = np.array([0.0, 2e-9, -3e-8, 1e-7, 5e-3])  # pure noise, near eps, decided
    error = 2e-8
    ranges, widths = AdamRange(), []
    trials = [{"w": np.zeros(5)} for _ in range(300)]
    states: list[dict] = [{} for _ in trials]
    for step in range(1, 4):
        widths.append(ranges.step(train, step, centres - error, centres + error))
        updates = []
        for k, weights in enumerate(trials):
            ends = k % 3 == 0  # a third of the trials take the interval's ends only
            grad = centres + np.where(ends, error * np.sign(rng.uniform(-1, 1, 5)), rng.uniform(-error, error, 5))
            trials[k], states[k] = optimizer_step(train, 1.0, set(), weights, states[k], {"w": grad})
            updates.append(trials[k]["w"] - weights["w"])
        spread = np.ptp(np.array(updates), axis=0)
        assert np.all(spread <= widths[-1] + 1e-12), (step, spread, widths[-1])
    # Pure noise moves either way by up to lr (the intervals forget that m and v move together: the bound caps
    # them); a decided gradient's update barely moves.
    assert widths[0][0] == pytest.approx(2 * adam_step_bound(train, 1)) and widths[0][-1] < 1e-5


def test_imports_no_framework():
    modules = "harness.reference.grad, harness.reference.layers, harness.reference.optim, harness.parity.spread"
    code = f"import sys, {modules}; assert not {{'torch', 'mindspore'}} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
