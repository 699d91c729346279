"""Tests of harness.model.weights: determinism, PyTorch's default distributions, BN, normal0.02, files."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.model.spec import Conv2d, Linear
from harness.model.weights import init_weights, load_weights
from harness.model.zoo import build_model
from harness.runs.arrays import save_arrays


@pytest.fixture(scope="module")
def vgg():
    spec = build_model("vgg11", 3)
    return spec, init_weights(spec, seed=0)


def test_deterministic_per_seed_and_different_between_seeds():
    spec = build_model("lenet5")
    first, again, other = init_weights(spec, 3), init_weights(spec, 3), init_weights(spec, 4)
    assert all(first[name].tobytes() == again[name].tobytes() for name in first)
    assert all(not np.array_equal(first[name], other[name]) for name in first)


@pytest.mark.parametrize("name", ["lenet5", "vgg11-bn", "simple-cnn"])
def test_names_shapes_and_dtype_follow_the_spec(name):
    spec = build_model(name, 3)
    weights = init_weights(spec, 0)
    assert list(weights) == list(spec.param_shapes())  # same names, same order
    assert {k: w.shape for k, w in weights.items()} == spec.param_shapes()
    assert all(w.dtype == np.float32 for w in weights.values())


def test_default_bound_is_one_over_sqrt_fan_in(vgg):
    spec, weights = vgg
    for layer in spec.layers:
        if isinstance(layer, (Conv2d, Linear)):
            fan_in = layer.in_channels * layer.kernel_size ** 2 if isinstance(layer, Conv2d) else layer.in_features
            bound = 1 / math.sqrt(fan_in)
            for suffix in ("weight", "bias"):
                values = weights[f"{layer.name}.{suffix}"]
                assert np.abs(values).max() <= np.float32(bound), (layer.name, suffix)
                assert values.min() < 0 < values.max()


def test_big_layer_fills_the_uniform_range(vgg):
    _, weights = vgg
    values = weights["conv8.weight"].astype(np.float64)  # 512*512*9 = 2.4M draws
    bound = 1 / math.sqrt(512 * 9)
    assert np.abs(values).max() == pytest.approx(bound, rel=1e-3)
    assert values.std() == pytest.approx(bound / math.sqrt(3), rel=5e-3)  # std of U(-b, b) is b/sqrt(3)
    assert abs(values.mean()) < 1e-3 * bound


@pytest.mark.parametrize(("layer", "make"), [
    ("conv8.weight", lambda nn: nn.Conv2d(512, 512, 3, padding=1)),
    ("conv3.weight", lambda nn: nn.Conv2d(128, 256, 3, padding=1)),
    ("fc1.weight", lambda nn: nn.Linear(512, 100)),
])
def test_distribution_matches_torch_default_init(vgg, layer, make):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ours = vgg[1][layer].astype(np.float64).ravel()
    theirs = make(torch.nn).weight.detach().numpy().astype(np.float64).ravel()
    assert ours.shape == theirs.shape
    assert ours.std() == pytest.approx(theirs.std(), rel=0.03)
    assert np.abs(ours).max() == pytest.approx(np.abs(theirs).max(), rel=0.03)
    # Same shape of distribution, not only the same spread: quantiles agree to 3% of the range.
    quantiles = [0.05, 0.25, 0.5, 0.75, 0.95]
    bound = np.abs(theirs).max()
    np.testing.assert_allclose(np.quantile(ours, quantiles), np.quantile(theirs, quantiles), atol=0.03 * bound)


def test_torch_bias_has_the_same_bound():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    bias = torch.nn.Linear(784, 784).bias.detach().numpy()
    ours = init_weights(build_model("mlp"), 0)["fc1.bias"]
    bound = 1 / math.sqrt(784)
    for values in (bias, ours):
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.98 * bound


def test_batchnorm_starts_as_identity():
    weights = init_weights(build_model("vgg11-bn", 3), 5)
    for i, channels in enumerate((64, 128, 256, 256, 512, 512, 512, 512), start=1):
        assert np.array_equal(weights[f"bn{i}.gamma"], np.ones(channels, np.float32))
        assert np.array_equal(weights[f"bn{i}.beta"], np.zeros(channels, np.float32))
        assert np.array_equal(weights[f"bn{i}.mean"], np.zeros(channels, np.float32))
        assert np.array_equal(weights[f"bn{i}.var"], np.ones(channels, np.float32))
    # Four arrays, not one shared: a backend writing running stats in place must not touch gamma.
    assert len({id(weights[f"bn1.{s}"]) for s in ("gamma", "beta", "mean", "var")}) == 4


def test_normal002_draws_linear_weights_and_zero_biases_convs_keep_default():
    normal = init_weights(build_model("lenet5", init="normal0.02"), 0)
    default = init_weights(build_model("lenet5"), 0)
    fc1 = normal["fc1.weight"].astype(np.float64)  # 48,000 draws
    assert fc1.std() == pytest.approx(0.02, rel=0.02) and abs(fc1.mean()) < 5e-4
    assert np.abs(fc1).max() > 1 / math.sqrt(400)  # beyond the uniform bound: truly not U(+-1/sqrt(400))
    for name in ("fc1", "fc2", "fc3"):
        assert np.array_equal(normal[f"{name}.bias"], np.zeros_like(default[f"{name}.bias"]))
    for name in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"):
        assert np.array_equal(normal[name], default[name])


def test_save_load_round_trip_is_bit_exact(tmp_path):
    spec = build_model("vgg11-bn", 3)
    weights = init_weights(spec, 9)
    save_arrays(tmp_path / "w.npz", weights)
    loaded = load_weights(spec, tmp_path / "w.npz")
    assert list(loaded) == list(weights)
    assert all(loaded[k].dtype == np.float32 and loaded[k].tobytes() == weights[k].tobytes() for k in weights)


def _expect_one_line_error(spec, path, fragment: str) -> None:
    with pytest.raises(HarnessError) as error:
        load_weights(spec, path)
    message = str(error.value)
    assert fragment in message and "\n" not in message


def test_load_refuses_files_that_are_not_npz(tmp_path):
    spec = build_model("lenet5")
    (tmp_path / "text.npz").write_text("not an archive\n")
    _expect_one_line_error(spec, tmp_path / "text.npz", "expected a .npz written by harness run")
    _expect_one_line_error(spec, tmp_path / "absent.npz", "cannot read weights")


@pytest.mark.parametrize("damage", ["empty", "truncated", "npy"])
def test_load_refuses_damaged_files_with_one_line(tmp_path, damage):
    spec = build_model("lenet5")
    path = tmp_path / "w.npz"
    save_arrays(path, init_weights(spec, 0))
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    else:  # a bare .npy array saved under the .npz name
        with open(path, "wb") as handle:
            np.save(handle, np.zeros(3, np.float32))
    _expect_one_line_error(spec, path, "cannot read weights")


def test_load_refuses_pickled_objects(tmp_path):
    spec = build_model("lenet5")
    weights = dict(init_weights(spec, 0))
    weights["fc3.bias"] = np.array([{"payload": 1}] * 10, dtype=object)
    with open(tmp_path / "w.npz", "wb") as handle:
        np.savez(handle, **weights)
    _expect_one_line_error(spec, tmp_path / "w.npz", "cannot read weights")


def test_load_names_missing_and_extra_tensors(tmp_path):
    spec = build_model("lenet5")
    weights = init_weights(spec, 0)
    del weights["fc3.bias"]
    weights["bogus.weight"] = np.zeros(2, np.float32)
    save_arrays(tmp_path / "w.npz", weights)
    _expect_one_line_error(spec, tmp_path / "w.npz", "missing ['fc3.bias'], unexpected ['bogus.weight']")
    # Weights of another model name the fix.
    save_arrays(tmp_path / "tiny.npz", init_weights(build_model("lenet-tiny"), 0))
    _expect_one_line_error(spec, tmp_path / "tiny.npz", "pass the matching --model")


def test_load_names_a_wrong_shape(tmp_path):
    spec = build_model("lenet5")
    weights = init_weights(spec, 0)
    weights["fc3.weight"] = np.zeros((10, 85), np.float32)
    save_arrays(tmp_path / "w.npz", weights)
    _expect_one_line_error(spec, tmp_path / "w.npz", "fc3.weight has shape (10, 85), expected (10, 84)")


def test_ulps_move_every_trainable_value_by_that_many_float32_steps():
    spec = build_model("vgg11-bn", channels=3)
    plain, nudged = init_weights(spec, 0), init_weights(spec, 0, ulps=2)
    for name, values in plain.items():
        if name in spec.trainable_names():
            step = np.nextafter(np.nextafter(values, np.float32(np.inf)), np.float32(np.inf))
            assert np.array_equal(nudged[name], step) and not np.array_equal(nudged[name], values), name
        else:  # BatchNorm's running statistics are state, not weights
            assert np.array_equal(nudged[name], values), name
