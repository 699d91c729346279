"""An independent torch.nn.functional realisation of spec layers, the tests' outside referee."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.spec import Activation, BatchNorm2d, Conv2d, Dropout, Flatten, Pool


def torch_layer(layer, x, p, training=False):
    """One spec layer in torch.nn.functional; ``p`` maps canonical names to tensors (dtype as given)."""
    name = layer.name
    if isinstance(layer, Conv2d):
        return F.conv2d(x, p[f"{name}.weight"], p.get(f"{name}.bias"), layer.stride, layer.padding)
    if isinstance(layer, Pool):
        pool = F.max_pool2d if layer.kind == "max" else F.avg_pool2d
        return pool(x, layer.kernel_size, layer.stride)
    if isinstance(layer, Activation):
        return {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[layer.kind](x)
    if isinstance(layer, Dropout):
        return x  # eval mode; training tests use specs without dropout
    if isinstance(layer, BatchNorm2d):
        return F.batch_norm(x, p[f"{name}.mean"], p[f"{name}.var"], p[f"{name}.gamma"], p[f"{name}.beta"],
                            training=training, momentum=layer.momentum, eps=layer.eps)
    if isinstance(layer, Flatten):
        return x.flatten(1)
    return F.linear(x, p[f"{name}.weight"], p.get(f"{name}.bias"))
