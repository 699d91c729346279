"""The bare PyTorch loop ``harness bench`` measures the harness against (phase ``train-bare``).

What a minimal script writes: the data preloaded as tensors, torch.optim.SGD, F.cross_entropy, and no
harness code in the step. It sees the batches the harness loop sees (the order is handed in).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F


class BareLoop:
    """Trains the backend's module on preloaded data with plain SGD + momentum."""

    def __init__(self, model, x: np.ndarray, y: np.ndarray, learning_rate: float = 0.01,
                 momentum: float = 0.9) -> None:
        """Preload ``x`` and ``y`` on the model's device and make the optimizer.

        Args:
            model: the PyTorch backend's model handle (``.module``, ``.device``).
            x: float32 NCHW images; y: int64 labels.
            learning_rate, momentum: torch.optim.SGD's.
        """
        self.module = model.module
        self.inputs = torch.from_numpy(x).to(model.device)
        self.targets = torch.from_numpy(y).to(model.device)
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=learning_rate, momentum=momentum)

    def run(self, order: np.ndarray, batch_size: int) -> float:
        """Take one step per ``batch_size`` indices of ``order``; returns the seconds they took."""
        index = torch.from_numpy(order).to(self.inputs.device)
        self.module.train()
        started = time.perf_counter()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = index[start:start + batch_size]
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.module(self.inputs[batch]), self.targets[batch])
            loss.backward()
            self.optimizer.step()
            loss.item()  # the harness reads every loss too
        return time.perf_counter() - started


def threads() -> int:
    """Intra-op threads PyTorch computes with."""
    return torch.get_num_threads()


def set_threads(count: int) -> None:
    """Compute with ``count`` intra-op threads from now on (process-wide)."""
    torch.set_num_threads(count)
