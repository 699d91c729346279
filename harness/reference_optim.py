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

from .config import TrainConfig

Weights = dict[str, np.ndarray]


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
