"""Training step with torch.optim; the harness supplies the learning rate of every step."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import TrainConfig

from .build import TorchModel, torch_name

# Canonical optimizer-state names -> torch's per-parameter state keys.
_STATE_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq")


def _optimizer(model: TorchModel, train: TrainConfig, decay_names: set[str]) -> torch.optim.Optimizer:
    named = dict(model.module.named_parameters())
    canonical = {torch_name(n): n for n in model.spec.trainable_names()}
    decayed = [p for key, p in named.items() if canonical[key] in decay_names]
    plain = [p for key, p in named.items() if canonical[key] not in decay_names]
    # Explicit groups: weight decay on exactly the tensors the harness chose, as on every backend.
    groups = [{"params": decayed, "weight_decay": train.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.learning_rate, momentum=train.momentum,
                               dampening=train.dampening, nesterov=train.nesterov)
    cls = torch.optim.Adam if train.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=train.learning_rate, betas=(train.beta1, train.beta2), eps=train.eps)


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
        module, device = self.model.module, self.model.device
        if not module.training:  # predict() and export leave the whole module in eval mode; train() walks every
            module.train()       # submodule (~45 us for LeNet5), so only when needed
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        inputs = torch.from_numpy(x).to(device, non_blocking=True)
        targets = torch.from_numpy(y).to(device, non_blocking=True)
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
