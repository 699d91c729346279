"""Eval-mode forward passes: batched logits, and every layer's output for divergence hunting."""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn

from .build import GraphCell, MsModel, get_weights, set_weights


class _AllOutputs(nn.Cell):
    """Runs the net's layers and returns each one's output (one compiled graph)."""

    def __init__(self, net: GraphCell) -> None:
        super().__init__(auto_prefix=False)  # the wrapped net keeps its parameter names
        self.net = net

    def construct(self, x):
        return self.net.outputs(x)[1:]


def _tensor(x: np.ndarray) -> ms.Tensor:
    return ms.Tensor.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def predict(model: MsModel, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Eval-mode logits (N, classes), float32, computed ``batch_size`` rows at a time."""
    model.net.set_train(False)  # explicit: the trainer leaves the net in train mode
    outputs = []
    for start in range(0, len(x), batch_size):
        inputs = _tensor(x[start:start + batch_size])  # shares memory: keep it referenced until asnumpy()
        outputs.append(np.array(model.net(inputs).asnumpy(), dtype=np.float32, copy=True))  # own the memory
    if not outputs:
        return np.zeros((0, model.spec.num_classes), np.float32)
    return np.concatenate(outputs)


def activations(model: MsModel, x: np.ndarray, train: bool = False) -> dict[str, np.ndarray]:
    """Output of every spec layer, by layer name, in execution order; eval mode unless ``train``,
    which leaves the BatchNorm running statistics as they were."""
    if "all_outputs" not in model.cache:
        model.cache["all_outputs"] = _AllOutputs(model.net)
    cell = model.cache["all_outputs"]
    kept = get_weights(model) if train else None  # train-mode BatchNorm assigns its moving statistics
    cell.set_train(train)  # propagates to the wrapped net: train: BatchNorm on batch statistics
    inputs = _tensor(x)  # shares memory: keep it referenced until every output is copied out
    values = cell(inputs)
    out = {layer.name: np.array(value.asnumpy(), dtype=np.float32, copy=True)
           for layer, value in zip(model.spec.layers, values)}
    if kept is not None:
        set_weights(model, kept)
        cell.set_train(False)
    return out
