"""The bare MindSpore loop ``harness bench`` measures the harness against (phase ``train-bare``).

What a minimal script writes: GRAPH mode, ``nn.TrainOneStepCell`` + ``nn.Momentum`` + ``nn.CrossEntropyLoss``
(the fastest stock path measured on this CPU, PARITY.md), numpy batches. It sees the batches the harness
loop sees (the order is handed in).
"""

from __future__ import annotations

import time

import mindspore as ms
import numpy as np
from mindspore import nn

from harness.errors import HarnessError


class BareLoop:
    """Trains the backend's cell with the stock train-one-step cell."""

    def __init__(self, model, x: np.ndarray, y: np.ndarray, learning_rate: float = 0.01,
                 momentum: float = 0.9) -> None:
        """Wrap the model's cell in a loss and a TrainOneStepCell.

        Args:
            model: the MindSpore backend's model handle (``.net``).
            x: float32 NCHW images; y: integer labels (int32 is what the CPU kernel takes).
            learning_rate, momentum: nn.Momentum's.
        """
        ms.set_context(mode=ms.GRAPH_MODE)
        net = model.net
        self.step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()),
                                        nn.Momentum(net.trainable_params(), learning_rate, momentum))
        self.step.set_train(True)
        self.x, self.y = x, y.astype(np.int32)

    def run(self, order: np.ndarray, batch_size: int) -> float:
        """Take one step per ``batch_size`` indices of ``order``; returns the seconds they took."""
        self.step.set_train(True)
        started = time.perf_counter()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            loss = self.step(ms.Tensor.from_numpy(self.x[index]), ms.Tensor.from_numpy(self.y[index]))
            loss.asnumpy()  # the harness reads every loss too
        return time.perf_counter() - started


_THREADS: list[int] = []  # what set_threads configured: MindSpore has no getter for it


def threads() -> int:
    """Threads of MindSpore's CPU kernels: as set by ``set_threads``, else the runtime's thread count."""
    return _THREADS[0] if _THREADS else int(ms.get_context("runtime_num_threads"))


def set_threads(count: int) -> None:
    """Run CPU kernels on ``count`` threads; MindSpore accepts this once per process, before its first kernel."""
    from mindspore.device_context.cpu import op_tuning

    if _THREADS and _THREADS[0] != count:
        raise HarnessError(f"MindSpore's CPU threads are already {_THREADS[0]} in this process; it cannot change "
                           f"them to {count}: run one thread count per process")
    if not _THREADS:
        try:
            op_tuning.threads_num(count)
        except RuntimeError as error:  # set before, outside this module
            raise HarnessError(f"MindSpore refused {count} CPU threads: {error}") from None
        _THREADS.append(count)
