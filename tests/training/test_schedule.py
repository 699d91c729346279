"""Tests of harness.training.schedule against torch's own schedulers, and of the weight-decay scope."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.config import build_config
from harness.model.zoo import build_model
from harness.training.schedule import decayed_names, learning_rates


def torch_rates(make_scheduler, lr: float, total: int) -> np.ndarray:
    """The lr torch's scheduler gives each of ``total`` optimizer steps, stepped once per step."""
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(torch.optim.lr_scheduler, optimizer)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])  # the lr this step would use
        optimizer.step()
        scheduler.step()
    return np.asarray(rates)


def train_config(**settings):
    return build_config(settings).train


@pytest.mark.parametrize(("epochs", "steps", "settings"), [
    (3, 17, {"learning_rate": 0.1, "pct_start": 0.3}),
    (30, 98, {"learning_rate": 0.05, "pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4}),  # VGG recipe
    (2, 10, {"learning_rate": 1.0, "pct_start": 0.5, "div_factor": 10.0, "final_div_factor": 100.0}),
    (1, 7, {"learning_rate": 0.2, "pct_start": 0.9}),
])
def test_onecycle_matches_torch(epochs, steps, settings):
    train = train_config(schedule="onecycle", epochs=epochs, **settings)
    total = epochs * steps
    expected = torch_rates(lambda sched, opt: sched.OneCycleLR(
        opt, train.learning_rate, total_steps=total, pct_start=train.pct_start, div_factor=train.div_factor,
        final_div_factor=train.final_div_factor, anneal_strategy="cos", cycle_momentum=False), 0.0, total)
    rates = learning_rates(train, steps)
    assert rates.shape == (total,) and rates.dtype == np.float64
    np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=0)
    # Independent anchors: starts at max/div, never exceeds max, ends at max/div/final_div.
    assert rates[0] == pytest.approx(train.learning_rate / train.div_factor, rel=1e-12)
    assert rates.max() <= train.learning_rate
    warmup = train.pct_start * total
    if math.isclose(warmup, round(warmup)):  # the warm-up ends on a step: that step is at the peak
        assert rates[round(warmup) - 1] == pytest.approx(train.learning_rate, rel=1e-12)
    assert rates[-1] == pytest.approx(train.learning_rate / train.div_factor / train.final_div_factor, rel=1e-12)


@pytest.mark.parametrize(("epochs", "steps", "min_lr"), [(3, 17, 0.0), (5, 40, 1e-3), (1, 1, 0.0)])
def test_cosine_matches_torch(epochs, steps, min_lr):
    train = train_config(schedule="cosine", epochs=epochs, learning_rate=0.1, min_lr=min_lr)
    total = epochs * steps
    expected = torch_rates(lambda sched, opt: sched.CosineAnnealingLR(opt, T_max=total, eta_min=min_lr), 0.1, total)
    rates = learning_rates(train, steps)
    np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=0)
    halfway = min_lr + (0.1 - min_lr) / 2  # cos(pi/2) = 0
    if total % 2 == 0:
        assert rates[total // 2] == pytest.approx(halfway, rel=1e-12)
    assert rates[0] == 0.1


@pytest.mark.parametrize(("epochs", "steps", "step_size", "gamma"), [(6, 5, 2, 0.1), (4, 3, 1, 0.5), (3, 8, 5, 0.1)])
def test_step_matches_torch(epochs, steps, step_size, gamma):
    train = train_config(schedule="step", epochs=epochs, learning_rate=0.1, step_size=step_size, gamma=gamma)
    expected = torch_rates(lambda sched, opt: sched.StepLR(opt, step_size=step_size * steps, gamma=gamma),
                           0.1, epochs * steps)
    rates = learning_rates(train, steps)
    np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=0)
    epoch_of_step = np.repeat(np.arange(epochs), steps)
    np.testing.assert_allclose(rates, 0.1 * gamma ** (epoch_of_step // step_size), rtol=1e-12)


@pytest.mark.parametrize(("epochs", "steps", "milestones", "gamma"), [(6, 5, (2, 4), 0.1), (164, 3, (82, 123), 0.1),
                                                                      (5, 2, (1,), 0.5), (3, 4, (7,), 0.1)])
def test_multistep_matches_torch(epochs, steps, milestones, gamma):
    train = train_config(schedule="multistep", epochs=epochs, learning_rate=0.1, milestones=list(milestones),
                         gamma=gamma)
    expected = torch_rates(lambda sched, opt: sched.MultiStepLR(opt, [m * steps for m in milestones], gamma=gamma),
                           0.1, epochs * steps)
    rates = learning_rates(train, steps)
    np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=0)
    epoch_of_step = np.repeat(np.arange(epochs), steps)
    drops = sum((epoch_of_step >= m).astype(int) for m in milestones)
    np.testing.assert_allclose(rates, 0.1 * gamma ** drops, rtol=1e-12)


@pytest.mark.parametrize(("settings", "message"), [
    ({"schedule": "multistep"}, r"multistep needs milestones: rising epochs >= 1 \(e.g. 91,136\), got \[\]"),
    ({"schedule": "multistep", "milestones": [4, 2]}, r"got \[4, 2\]"),
    ({"schedule": "multistep", "milestones": [0, 2]}, r"got \[0, 2\]"),
    ({"milestones": [3]}, "milestones \\[3\\] apply only to schedule multistep"),
    ({"schedule": "multistep", "milestones": "a,b"}, "milestones=a,b is not a list of whole numbers"),
    ({"schedule": "multistep", "milestones": [1.5]}, r"milestones=\[1.5\] is not a list of whole numbers"),
])
def test_bad_milestones_are_one_line_errors(settings, message):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match=message):
        build_config(settings)


def test_milestones_keep_other_runs_hashes_and_read_back_from_flags():
    # The field is new: a config without it must hash as before it existed (run folders stay reusable).
    assert build_config({}).config_hash == "9bc84dca21963925"
    flag = build_config({"schedule": "multistep", "milestones": "82,123"})
    assert flag.train.milestones == (82, 123)
    assert flag.config_hash == build_config({"schedule": "multistep", "milestones": [82, 123]}).config_hash
    assert flag.config_hash != build_config({"schedule": "multistep", "milestones": [82, 124]}).config_hash
    assert build_config(flag.flat()).train.milestones == (82, 123)  # as config.json reads back


def test_constant():
    rates = learning_rates(train_config(schedule="constant", epochs=2, learning_rate=0.03), 7)
    assert rates.shape == (14,) and np.all(rates == 0.03)


def test_decay_all_is_every_trainable_tensor():
    spec = build_model("vgg11-bn", 3)
    expected = ({f"conv{i}.{s}" for i in range(1, 9) for s in ("weight", "bias")}
                | {f"bn{i}.{s}" for i in range(1, 9) for s in ("gamma", "beta")} | {"fc1.weight", "fc1.bias"})
    assert decayed_names(spec, "all") == expected == set(spec.trainable_names())
    assert not any(name.endswith((".mean", ".var")) for name in decayed_names(spec, "all"))


@pytest.mark.parametrize(("name", "expected"), [
    ("vgg11-bn", {f"conv{i}.weight" for i in range(1, 9)} | {"fc1.weight"}),
    ("vgg11", {f"conv{i}.weight" for i in range(1, 9)} | {"fc1.weight", "fc2.weight"}),
    ("lenet5", {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"}),
])
def test_decay_weights_is_conv_and_linear_weights_only(name, expected):
    assert decayed_names(build_model(name, 3), "weights") == expected
