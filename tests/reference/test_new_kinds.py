"""The layer kinds for residual and depthwise networks, one layer at a time against torch float64."""

from __future__ import annotations

import numpy as np
import pytest

from harness.model.spec import Activation
from harness.reference.layers import decides, layer_backward, layer_forward
from tests.support import torch_layer

# Every new activation, the parameterised ones off their defaults too, with the kinks torch's backward decides at.
ACTIVATIONS = {
    "relu6": (Activation("a", "relu6"), (0.0, 6.0)),
    "hardswish": (Activation("a", "hardswish"), (-3.0, 3.0)),
    "leaky_relu": (Activation("a", "leaky_relu"), (0.0,)),
    "leaky_relu-0.3": (Activation("a", "leaky_relu", negative_slope=0.3), (0.0,)),
    "gelu": (Activation("a", "gelu"), ()),
    "gelu-tanh": (Activation("a", "gelu", approximate="tanh"), ()),
    "identity": (Activation("a", "identity"), ()),
}


def _grid() -> np.ndarray:
    """[-8, 8] in float32-representable steps, every kink exactly on it."""
    return np.linspace(-8, 8, 1601).astype(np.float32).astype(np.float64).reshape(1, 1, 1601)


@pytest.mark.parametrize("case", list(ACTIVATIONS))
def test_forward_and_backward_match_torch_even_at_the_kinks(case):
    torch = pytest.importorskip("torch")
    layer, kinks = ACTIVATIONS[case]
    x = _grid()
    assert set(kinks) <= set(x.ravel())  # the ties themselves are on the grid
    grad = np.random.default_rng(0).standard_normal(x.shape)
    out, cache = layer_forward(layer, {}, x)
    dx, params, flipped = layer_backward(layer, cache, grad)
    t = torch.tensor(x, requires_grad=True)
    expected = torch_layer(layer, t, {})
    expected.backward(torch.from_numpy(grad))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-15, atol=1e-15)
    # The slope at each kink is torch's; atol: gelu-tanh's 1 + tanh cancels to ~1e-14 near -8 in either order.
    np.testing.assert_allclose(dx, t.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert params == {} and flipped == 0
    assert decides(layer) == bool(kinks)


@pytest.mark.parametrize("case", [case for case in ACTIVATIONS if ACTIVATIONS[case][1]])
def test_every_kink_is_a_decision(case):
    layer, kinks = ACTIVATIONS[case]
    x = np.array([k + d for k in kinks for d in (-1e-7, 0.0, 1e-7)] + [-20.0, 20.0])
    out, cache = layer_forward(layer, {}, x)
    grad = np.ones_like(x)
    plain, _, none = layer_backward(layer, cache, grad)
    other, _, flipped = layer_backward(layer, cache, grad, width=1e-6)
    assert none == 0 and flipped == 3 * len(kinks)  # each value within the width of a kink, never the far ones
    assert np.array_equal(plain[-2:], other[-2:])
    for index, kink in enumerate(kinks):  # a flip lands on the far side's slope: the value 1e-7 beyond it
        below, at, above = (slice(3 * index + i, 3 * index + i + 1) for i in range(3))
        np.testing.assert_allclose(other[below], plain[above], atol=1e-6)
        np.testing.assert_allclose(other[above], plain[below], atol=1e-6)
        assert plain[at] in (plain[below], plain[above]) or layer.kind == "hardswish"


@pytest.mark.parametrize("case", list(ACTIVATIONS))
def test_float32_stays_float32(case):
    layer, _ = ACTIVATIONS[case]
    x = _grid().astype(np.float32)
    out, cache = layer_forward(layer, {}, x)
    dx, _, _ = layer_backward(layer, cache, np.ones_like(x), width=1e-3)
    assert out.dtype == np.float32 and dx.dtype == np.float32
    exact = layer_forward(layer, {}, x.astype(np.float64))[0]
    assert np.abs(out - exact).max() <= 1e-6 * max(1.0, np.abs(exact).max())


def test_activation_spec_refuses_unknown_kinds_and_keeps_old_specs_equal():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        Activation("a", "swish")
    with pytest.raises(ValueError, match="GELU approximation"):
        Activation("a", "gelu", approximate="erf")
    assert Activation("a", "relu") == Activation("a", "relu", negative_slope=0.01, approximate="none")
