"""torch.optim's SGD, Adam and AdamW update rules as MindSpore Cells, compiled into the train step.

MindSpore's own optimizers do not reproduce torch.optim: ``nn.Momentum`` ignores
``use_nesterov`` on CPU and has no dampening; ``nn.Adam`` and
``experimental.optim.Adam`` add eps before bias correction. So the update is
written out here, step for step as ``torch/optim/sgd.py`` and ``adam.py``
(single-tensor path) do it; fused MindSpore kernels (ApplyMomentum,
ApplyGradientDescent) are used only where their formula is torch's.

Every value that changes from step to step (the learning rate, Adam's bias
corrections, SGD's first-step flag) arrives in ``hyper``, a float32 Tensor input
of the compiled graph: new values never recompile. The bias corrections are
computed in Python float64, as torch does, not in float32 inside the graph.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from harness.config import TrainConfig

# hyper, float32[3]: sgd [lr, buffer coefficient, unused]; adam/adamw [lr/bias_correction1,
# sqrt(bias_correction2), 1 - lr*weight_decay (adamw) or 1].


def _slots(params: list[ms.Parameter], slot: str) -> ms.ParameterTuple:
    return ms.ParameterTuple(ms.Parameter(ms.Tensor(np.zeros(p.shape, np.float32)), name=f"{slot}.{p.name}",
                                          requires_grad=False) for p in params)


class Sgd(nn.Cell):
    """torch.optim.SGD: weight decay, momentum, dampening, nesterov."""

    def __init__(self, params: list[ms.Parameter], decayed: list[bool], train: TrainConfig) -> None:
        super().__init__()
        self.params = ms.ParameterTuple(params)
        self.decayed = tuple(decayed and train.weight_decay != 0 for decayed in decayed)
        self.weight_decay = train.weight_decay
        self.momentum = train.momentum
        self.nesterov = train.nesterov
        self.dampening = train.dampening
        self.use_buffers = train.momentum != 0  # torch keeps no buffer without momentum
        self.buffers = _slots(params, "momentum_buffer") if self.use_buffers else None
        self.count = len(params)
        # Fused kernels (one launch per tensor instead of ~7) where their math is torch's: ApplyMomentum is
        # accum = accum*momentum + grad; var -= lr*accum. Its use_nesterov is ignored on CPU: nesterov is spelled out.
        self.apply_momentum = ops.ApplyMomentum(use_nesterov=False)
        self.apply_descent = ops.ApplyGradientDescent()  # var -= alpha*delta

    def construct(self, grads, hyper):
        lr, coef = hyper[0], hyper[1]
        done = ()
        for i in range(self.count):  # unrolled at compile time: one chain of ops per parameter
            param, grad = self.params[i], grads[i]
            if self.decayed[i]:
                grad = grad + self.weight_decay * param  # grad.add(param, alpha=weight_decay)
            if not self.use_buffers:
                done = done + (self.apply_descent(param, lr, grad),)  # param.add_(grad, alpha=-lr)
            elif not self.nesterov:
                # coef: 1 on the first step (the zero buffer becomes grad, as torch's clone), then 1 - dampening.
                scaled = grad * coef if self.dampening != 0 else grad
                done = done + (self.apply_momentum(param, self.buffers[i], lr, scaled, self.momentum),)
            else:
                buf = self.buffers[i] * self.momentum + coef * grad  # buf.mul_(momentum).add_(grad, alpha=coef)
                step = grad + self.momentum * buf  # grad.add(buf, alpha=momentum)
                done = done + (ops.assign(self.buffers[i], buf), ops.assign(param, param - lr * step))
        return done


class Adam(nn.Cell):
    """torch.optim.Adam (L2 in the gradient) or AdamW (decoupled decay), amsgrad off."""

    def __init__(self, params: list[ms.Parameter], decayed: list[bool], train: TrainConfig) -> None:
        super().__init__()
        self.params = ms.ParameterTuple(params)
        self.decayed = tuple(decayed and train.weight_decay != 0 for decayed in decayed)
        self.decoupled = train.optimizer == "adamw"
        self.weight_decay = train.weight_decay
        self.lerp_weight = 1.0 - train.beta1  # exp_avg.lerp_(grad, 1 - beta1)
        self.beta2, self.one_minus_beta2 = train.beta2, 1.0 - train.beta2
        self.eps = train.eps
        self.exp_avg = _slots(params, "exp_avg")
        self.exp_avg_sq = _slots(params, "exp_avg_sq")
        self.count = len(params)

    def _lerp(self, start, end):
        # torch's lerp kernel: start + w*(end - start) for |w| < 0.5, else end - (end - start)*(1 - w).
        if self.lerp_weight < 0.5:
            return start + self.lerp_weight * (end - start)
        return end - (end - start) * (1.0 - self.lerp_weight)

    def construct(self, grads, hyper):
        step_size, bc2_sqrt, shrink = hyper[0], hyper[1], hyper[2]
        done = ()
        for i in range(self.count):  # unrolled at compile time
            param, grad = self.params[i], grads[i]
            value = param
            if self.decayed[i]:
                if self.decoupled:
                    value = param * shrink  # param.mul_(1 - lr * weight_decay)
                else:
                    grad = grad + self.weight_decay * param  # grad.add(param, alpha=weight_decay)
            exp_avg = self._lerp(self.exp_avg[i], grad)
            exp_avg_sq = self.exp_avg_sq[i] * self.beta2 + self.one_minus_beta2 * grad * grad
            denom = ops.sqrt(exp_avg_sq) / bc2_sqrt + self.eps
            done = done + (ops.assign(self.exp_avg[i], exp_avg), ops.assign(self.exp_avg_sq[i], exp_avg_sq),
                           ops.assign(param, value - step_size * (exp_avg / denom)))  # addcdiv_(value=-step_size)
        return done


def make_optimizer(params: list[ms.Parameter], decayed: list[bool], train: TrainConfig) -> nn.Cell:
    """The update Cell for ``train.optimizer``."""
    if train.optimizer == "sgd":
        return Sgd(params, decayed, train)
    if train.optimizer in ("adam", "adamw"):
        return Adam(params, decayed, train)
    raise ValueError(f"unknown optimizer {train.optimizer!r}")


def hyper_values(train: TrainConfig, learning_rate: float, steps_done: int) -> np.ndarray:
    """The per-step inputs of the update, computed in float64 as torch does, then float32."""
    if train.optimizer == "sgd":
        coef = 1.0 if steps_done == 0 else 1.0 - train.dampening  # 0 steps done: the buffer starts as grad
        return np.array([learning_rate, coef, 0.0], dtype=np.float32)
    step = steps_done + 1
    bias_correction1 = 1 - train.beta1 ** step
    bias_correction2 = 1 - train.beta2 ** step
    shrink = 1 - learning_rate * train.weight_decay if train.optimizer == "adamw" else 1.0
    return np.array([learning_rate / bias_correction1, bias_correction2 ** 0.5, shrink], dtype=np.float32)


def slot_names(train: TrainConfig) -> tuple[str, ...]:
    """Canonical per-parameter state slots of the optimizer (as torch.optim's state keys)."""
    if train.optimizer == "sgd":
        return ("momentum_buffer",) if train.momentum != 0 else ()
    return ("exp_avg", "exp_avg_sq")


def slot_parameters(optimizer: nn.Cell, slot: str) -> ms.ParameterTuple:
    """The ParameterTuple that holds ``slot`` for every trainable tensor."""
    return getattr(optimizer, {"momentum_buffer": "buffers"}.get(slot, slot))
