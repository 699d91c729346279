"""Training step with torch.optim; the harness supplies the learning rate of every step."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import TrainConfig
from harness.machine import cores

from .build import TorchModel, torch_name

# Canonical optimizer-state names -> torch's per-parameter state keys.
_STATE_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq")


def _optimizer(model: TorchModel, train: TrainConfig, decay_names: set[str]) -> torch.optim.Optimizer:
    named = dict(model.module.named_parameters())
    canonical = {torch_name(n): n for n in model.spec.trainable_names()}
    decayed = [p for key, p in named.items() if canonical[key] in decay_names]
    plain = [p for key, p in named.items() if canonical[key] not in decay_names]
    # Explicit groups: weight decay on exactly the tensors the harness chose, as on every backend. An empty group
    # is left out: torch.optim would walk it on every step all the same.
    groups = [group for group in ({"params": decayed, "weight_decay": train.weight_decay},
                                  {"params": plain, "weight_decay": 0.0}) if group["params"]]
    # foreach: each update op once over all tensors, not a Python loop of ops per tensor (torch's default only on
    # accelerators). The same kernels per tensor, so the same bits (tests/training/test_loop_speedups.py); the
    # update of LeNet5's ten tensors takes 68 us instead of 81 on this CPU.
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.learning_rate, momentum=train.momentum,
                               dampening=train.dampening, nesterov=train.nesterov, foreach=True)
    cls = torch.optim.Adam if train.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=train.learning_rate, betas=(train.beta1, train.beta2), eps=train.eps, foreach=True)


def _as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(x), torch.from_numpy(y)


class TorchTrainer:
    """Holds the optimizer; ``step`` runs one batch in train mode."""

    def __init__(self, model: TorchModel, train: TrainConfig, decay_names: set[str]) -> None:
        self.model = model
        self.optimizer = _optimizer(model, train, decay_names)
        torch.manual_seed(train.seed)  # dropout masks come from torch's global generator: make them repeatable
        self._names = {p: name for name in model.spec.trainable_names()
                       for key, p in model.module.named_parameters() if key == torch_name(name)}

    def step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> float:
        """One optimizer step; returns the batch's mean cross-entropy."""
        return self.step_prepared(_as_tensors(x, y), learning_rate)

    def prepare_ahead(self) -> bool:
        """Whether making the next batch on another thread gains: only where PyTorch's own threads leave a core
        free (or compute elsewhere). Its OpenMP threads wait at every parallel region for the slowest, so a
        thread beside them on their cores costs more than it hides: LeNet5 at batch 64, two threads on two cores,
        3.89 ms a step made ahead against 3.75 made in line (bare loop 3.75)."""
        # ``.type``: a torch.device never equals the string "cpu", so comparing the device itself said "elsewhere"
        # for every CPU model.
        return self.model.device.type != "cpu" or torch.get_num_threads() < cores()

    def preparer(self) -> Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]:
        """What turns a host batch into this trainer's inputs, safe to call on another thread while a step runs
        (the loop prepares the next batch there): CPU tensors sharing the arrays' memory."""
        return _as_tensors

    def step_prepared(self, prepared: tuple[torch.Tensor, torch.Tensor], learning_rate: float) -> float:
        """``step`` on a batch made by ``preparer()``; returns the batch's mean cross-entropy."""
        module, device = self.model.module, self.model.device
        if not module.training:  # predict() and export leave the whole module in eval mode; train() walks every
            module.train()       # submodule (~45 us for LeNet5), so only when needed
        for group in self.optimizer.param_groups:
            # A float, as torch.optim's schedulers set it (~1 us a step): a tensor lr would take other update
            # kernels, so other rounding than the runs made so far and the float64 referee's.
            group["lr"] = learning_rate
        # The copy to an accelerator stays on this thread, in the step's stream order; on the CPU it is a no-op.
        images, labels = prepared
        inputs, targets = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(module(inputs), targets)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def state(self) -> dict[str, np.ndarray]:
        """Optimizer state by canonical names; empty before the first step."""
        out: dict[str, np.ndarray] = {}
        for param, slots in self.optimizer.state.items():
            name = self._names[param]
            for key in _STATE_KEYS:
                if slots.get(key) is not None:
                    out[f"{name}.{key}"] = slots[key].detach().cpu().numpy().copy()
            if "step" in slots:
                out["step"] = np.asarray(float(slots["step"]), dtype=np.float32)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore ``state()``'s output (from either backend)."""
        self.optimizer.state.clear()
        for param, name in self._names.items():
            slots = {key: torch.from_numpy(np.array(state[f"{name}.{key}"], dtype=np.float32)).to(param.device)
                     for key in _STATE_KEYS if f"{name}.{key}" in state}
            if "step" in state and slots:
                slots["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)
            if slots:
                self.optimizer.state[param] = slots
