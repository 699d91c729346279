"""Eval-mode forward passes: batched logits, and every layer's output for divergence hunting."""

from __future__ import annotations

import numpy as np
import torch

from .build import TorchModel


@torch.inference_mode()
def predict(model: TorchModel, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Eval-mode logits (N, classes), float32, computed ``batch_size`` rows at a time."""
    model.module.eval()
    outputs = [model.module(torch.from_numpy(x[i:i + batch_size]).to(model.device)).cpu()
               for i in range(0, len(x), batch_size)]
    return torch.cat(outputs).numpy()


@torch.inference_mode()
def activations(model: TorchModel, x: np.ndarray, train: bool = False) -> dict[str, np.ndarray]:
    """Output of every spec layer, by layer name, in execution order; eval mode unless ``train``,
    which leaves the BatchNorm running statistics as they were."""
    # A train-mode pass moves BatchNorm's running statistics: keep them to put back.
    kept = {k: v.clone() for k, v in model.module.named_buffers()} if train else {}
    model.module.train(train)
    values = model.module.outputs(torch.from_numpy(x).to(model.device), keep=True)
    out = {layer.name: value.cpu().numpy().copy() for layer, value in zip(model.spec.layers, values[1:])}
    for key, buffer in model.module.named_buffers():
        if key in kept:
            buffer.copy_(kept[key])
    model.module.eval()
    return out
