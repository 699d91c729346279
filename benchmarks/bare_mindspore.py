"""The bare MindSpore loop the harness is measured against: GRAPH mode + nn.TrainOneStepCell, as a minimal
script would write it (PARITY.md: the fastest stock path measured on this CPU)."""

from __future__ import annotations

import time

import mindspore as ms
import numpy as np
from mindspore import nn


def bare_train(model, x: np.ndarray, y: np.ndarray, batch_size: int, epochs: int,
               learning_rate: float = 0.01, momentum: float = 0.9, seed: int = 0) -> float:
    """Train the backend's cell with nn.Momentum; returns images/s over all epochs."""
    ms.set_context(mode=ms.GRAPH_MODE)
    net = model.net
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()),
                               nn.Momentum(net.trainable_params(), learning_rate, momentum))
    step.set_train(True)
    labels = y.astype(np.int32)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch_size):
            index = order[i:i + batch_size]
            loss = step(ms.Tensor.from_numpy(x[index]), ms.Tensor.from_numpy(labels[index]))
            loss.asnumpy()  # the harness reads every loss too
    return epochs * len(x) / (time.perf_counter() - started)
