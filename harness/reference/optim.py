"""torch.optim's SGD, Adam and AdamW update rules in numpy, for the float64 reference step.

Both backends implement torch's formulas (MindSpore's are written out in
``backends/mindspore/optim.py``); the harness needs its own copy to take a float64
step from a float64 gradient. Optimizer state uses the canonical names of
``Trainer.state()``: ``<param>.momentum_buffer``, ``<param>.exp_avg``,
``<param>.exp_avg_sq`` and ``step``; a missing slot means "before the first step",
as in torch. Never imports a framework.
"""

from __future__ import annotations

import numpy as np

from ..config import TrainConfig
from ..model.weights import Weights


def _f64(value) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _sgd(train: TrainConfig, lr: float, name: str, param: np.ndarray, grad: np.ndarray, state: dict,
         new_state: dict) -> np.ndarray:
    if train.momentum == 0:
        return param - lr * grad  # torch keeps no buffer without momentum
    key = f"{name}.momentum_buffer"
    # The first step clones the gradient into the buffer; later ones use dampening.
    buf = grad if key not in state else train.momentum * _f64(state[key]) + (1 - train.dampening) * grad
    new_state[key] = buf
    return param - lr * (grad + train.momentum * buf if train.nesterov else buf)


def _adam(train: TrainConfig, lr: float, step: float, name: str, param: np.ndarray, grad: np.ndarray, state: dict,
          new_state: dict) -> np.ndarray:
    zeros = np.zeros_like(param)
    m = train.beta1 * _f64(state.get(f"{name}.exp_avg", zeros)) + (1 - train.beta1) * grad
    v = train.beta2 * _f64(state.get(f"{name}.exp_avg_sq", zeros)) + (1 - train.beta2) * grad * grad
    new_state[f"{name}.exp_avg"], new_state[f"{name}.exp_avg_sq"] = m, v
    bias1, bias2_sqrt = 1 - train.beta1**step, np.sqrt(1 - train.beta2**step)
    return param - lr / bias1 * m / (np.sqrt(v) / bias2_sqrt + train.eps)


def optimizer_step(train: TrainConfig, lr: float, decay: set[str], weights: Weights, state: dict,
                   grads: Weights) -> tuple[Weights, dict]:
    """One torch.optim step in float64.

    Args:
        train: optimizer settings (sgd with momentum/dampening/nesterov, adam, adamw; weight decay).
        lr: this step's learning rate.
        decay: the tensors weight decay applies to (``schedule.decayed_names``).
        weights: the tensors before the step, by canonical name.
        state: optimizer state before the step (empty before the first).
        grads: the gradient of every trainable tensor.

    Returns:
        The updated trainable tensors and the new optimizer state, float64.
    """
    new_weights: Weights = {}
    new_state: dict = {}
    step = float(state.get("step", 0.0)) + 1
    for name, grad in grads.items():
        param, grad = _f64(weights[name]), _f64(grad)
        decayed = name in decay and train.weight_decay != 0
        if train.optimizer == "adamw":
            param = param * (1 - lr * train.weight_decay) if decayed else param  # decoupled decay
        elif decayed:
            grad = grad + train.weight_decay * param  # L2 in the gradient, as torch's SGD and Adam
        if train.optimizer == "sgd":
            new_weights[name] = _sgd(train, lr, name, param, grad, state, new_state)
        else:
            new_weights[name] = _adam(train, lr, step, name, param, grad, state, new_state)
    if train.optimizer != "sgd":
        new_state["step"] = np.asarray(step)
    return new_weights, new_state


def adam_step_bound(train: TrainConfig, step: int) -> float:
    """The largest ``|update| / lr`` Adam can take at ``step`` (1-based) for any gradient sequence.

    By Cauchy-Schwarz, ``|m| <= (1 - beta1) sqrt(sum_k (beta1^2 / beta2)^k) sqrt(v / (1 - beta2))``;
    with torch's bias corrections the first step's bound is exactly 1 (eps only lowers it). A
    gradient that is pure rounding noise therefore moves a weight by up to this times lr, either way.
    """
    ratio = train.beta1**2 / train.beta2
    series = sum(ratio**k for k in range(step))
    corrections = np.sqrt(1 - train.beta2**step) / (1 - train.beta1**step)
    return float((1 - train.beta1) * np.sqrt(series / (1 - train.beta2)) * corrections)


class AdamRange:
    """Adam's moments for every gradient sequence within given intervals, elementwise (interval arithmetic).

    Where float32 cannot pin a gradient down (an element within rounding of zero, or near eps),
    Adam's normalisation turns the rounding into a large update difference; this gives how far
    apart any two updates from such gradients can be.
    """

    def __init__(self) -> None:
        self.m_low = self.m_high = self.v_low = self.v_high = 0.0

    def step(self, train: TrainConfig, step: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Take gradients anywhere in ``[low, high]``; the width of the resulting updates' range, over lr."""
        b1, b2 = train.beta1, train.beta2
        self.m_low, self.m_high = b1 * self.m_low + (1 - b1) * low, b1 * self.m_high + (1 - b1) * high
        square_low = np.where(low * high <= 0, 0.0, np.minimum(low * low, high * high))
        self.v_low = b2 * self.v_low + (1 - b2) * square_low
        self.v_high = b2 * self.v_high + (1 - b2) * np.maximum(low * low, high * high)
        bias1, bias2 = 1 - b1**step, 1 - b2**step
        small, large = (np.sqrt(v / bias2) + train.eps for v in (self.v_low, self.v_high))
        top = np.where(self.m_high >= 0, self.m_high / small, self.m_high / large) / bias1
        bottom = np.where(self.m_low <= 0, self.m_low / small, self.m_low / large) / bias1
        bound = adam_step_bound(train, step)  # the intervals forget that m and v move together: cap them
        return np.minimum(top, bound) - np.maximum(bottom, -bound)
