"""The bare PyTorch loop the harness is measured against: preloaded tensors, no harness code in the step."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F


def bare_train(model, x: np.ndarray, y: np.ndarray, batch_size: int, epochs: int,
               learning_rate: float = 0.01, momentum: float = 0.9, seed: int = 0) -> float:
    """Train the backend's module with SGD the way a minimal script would; returns images/s over all epochs."""
    module = model.module
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.SGD(module.parameters(), lr=learning_rate, momentum=momentum)
    generator = torch.Generator().manual_seed(seed)
    module.train()
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for i in range(0, len(inputs), batch_size):
            index = order[i:i + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(module(inputs[index]), targets[index])
            loss.backward()
            optimizer.step()
            loss.item()  # the harness reads every loss too
    return epochs * len(inputs) / (time.perf_counter() - started)
