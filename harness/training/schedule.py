"""Learning rate of every step, computed once by the harness and handed to each backend.

Neither framework's scheduler is used: MindSpore has no OneCycleLR, and a
schedule computed in one place cannot differ between backends.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import TrainConfig
from ..model.spec import ModelSpec


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _onecycle(train: TrainConfig, total_steps: int) -> np.ndarray:
    # torch.optim.lr_scheduler.OneCycleLR, anneal_strategy='cos', three_phase=False;
    # momentum is not cycled (cycle_momentum=False): the optimizer momentum stays fixed.
    initial = train.learning_rate / train.div_factor
    minimum = initial / train.final_div_factor
    phase1_end = float(train.pct_start * total_steps) - 1
    phase2_end = float(total_steps - 1)
    rates = []
    for step in range(total_steps):
        if step <= phase1_end:
            rates.append(_cos_anneal(initial, train.learning_rate, step / phase1_end if phase1_end else 1.0))
        else:
            span = phase2_end - phase1_end
            rates.append(_cos_anneal(train.learning_rate, minimum, (step - phase1_end) / span))
    return np.asarray(rates)


def learning_rates(train: TrainConfig, steps_per_epoch: int) -> np.ndarray:
    """The learning rate of every optimizer step of the run, float64, length epochs * steps_per_epoch.

    constant: ``learning_rate``; step: times ``gamma`` every ``step_size`` epochs
    (StepLR stepped per epoch); multistep: times ``gamma`` at each epoch of ``milestones``
    (MultiStepLR stepped per epoch); cosine: CosineAnnealingLR over all steps down to
    ``min_lr``; onecycle: OneCycleLR with ``learning_rate`` as max_lr.
    """
    total = train.epochs * steps_per_epoch
    steps = np.arange(total)
    if train.schedule == "constant":
        return np.full(total, train.learning_rate)
    if train.schedule == "step":
        epoch = steps // steps_per_epoch
        return train.learning_rate * train.gamma ** (epoch // train.step_size)
    if train.schedule == "multistep":
        passed = np.searchsorted(np.asarray(train.milestones), steps // steps_per_epoch, side="right")
        return train.learning_rate * train.gamma ** passed
    if train.schedule == "cosine":
        return train.min_lr + (train.learning_rate - train.min_lr) * (1 + np.cos(np.pi * steps / total)) / 2
    return _onecycle(train, total)


def decayed_names(spec: ModelSpec, scope: str) -> set[str]:
    """The trainable tensors weight decay applies to, the same set on every backend.

    ``all`` is torch's default (every parameter); ``weights`` decays conv and
    linear weights only (biases and BatchNorm excluded). MindSpore's own default
    (skip names containing beta/gamma) is neither, so backends never use it.
    """
    if scope == "all":
        return set(spec.trainable_names())
    return {name for name in spec.trainable_names() if name.endswith(".weight")}  # BatchNorm's are gamma/beta
