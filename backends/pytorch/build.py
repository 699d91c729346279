"""Build a torch.nn.Module from a ModelSpec and move canonical weights in and out."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from harness.model.spec import (Activation, Add, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool, Linear,
                                ModelSpec, Pool)

# Activation kind -> its module; the parameterised kinds take their field, the others nothing.
_ACTIVATIONS: dict[str, Callable[[Activation], nn.Module]] = {
    "relu": lambda layer: nn.ReLU(),
    "tanh": lambda layer: nn.Tanh(),
    "sigmoid": lambda layer: nn.Sigmoid(),
    "relu6": lambda layer: nn.ReLU6(),
    "hardswish": lambda layer: nn.Hardswish(),
    "leaky_relu": lambda layer: nn.LeakyReLU(negative_slope=layer.negative_slope),
    "gelu": lambda layer: nn.GELU(approximate=layer.approximate),
    "identity": lambda layer: nn.Identity(),
}
# BatchNorm's canonical suffixes -> torch's state_dict names.
_BN_NAMES = {"gamma": "weight", "beta": "bias", "mean": "running_mean", "var": "running_var"}


class Sum(nn.Module):
    """An ``Add`` layer: the element-wise sum of its inputs, as a residual block's ``out + identity``."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = inputs[0] + inputs[1]
        for value in inputs[2:]:
            out = out + value
        return out


class GraphNet(nn.Sequential):
    """The spec's layers as children named by layer name (so state_dict keys are canonical), run along
    the spec's wiring; a chain runs as nn.Sequential does."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(OrderedDict((layer.name, build_layer(layer)) for layer in spec.layers))
        self.wiring = spec.wiring
        self.chain = spec.is_chain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.chain:
            return super().forward(x)
        return self.outputs(x)[-1]

    def outputs(self, x: torch.Tensor, keep: bool = False, noise: dict[int, torch.Tensor] | None = None) -> list:
        """``[x, each layer's output...]``; without ``keep`` each value is dropped after its last reader.

        Args:
            noise: by layer index, a Dropout's noise drawn beforehand (``noise.dropout_noise``), used instead of
                drawing it inside the layer (training mode on a CPU only: that is the computation it replaces).
        """
        last_read = {source: index for index, sources in enumerate(self.wiring) for source in sources}
        values = [x]
        for index, (module, sources) in enumerate(zip(self.children(), self.wiring)):
            if noise is not None and index in noise:
                # F.dropout's training output on a CPU is input * noise, the noise drawn as in noise.dropout_noise
                # (aten/src/ATen/native/Dropout.cpp, _dropout_impl); its gradient is grad * noise either way.
                values.append(values[sources[0]] * noise[index])
            else:
                values.append(module(*[values[source] for source in sources]))
            for source in sources if not keep else ():
                if last_read[source] == index:
                    values[source] = None
        return values


@dataclass
class TorchModel:
    """The opaque model handle: the module, its spec and its device."""

    spec: ModelSpec
    module: GraphNet
    device: torch.device
    # torch's CPU generator as of the last step taken, where the trainer draws Dropout noise ahead of its steps
    # (the generator itself may be a batch or two further on); None: the generator itself is.
    rng_taken: torch.Tensor | None = None


# One entry per layer kind of the spec (harness.model.spec.LAYER_KINDS): the torch module that realises it.
BUILDERS: dict[type, Callable[[Any], nn.Module]] = {
    Conv2d: lambda layer: nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                    stride=layer.stride, padding=layer.padding, bias=layer.bias,
                                    groups=layer.groups),
    Pool: lambda layer: (nn.MaxPool2d if layer.kind == "max" else nn.AvgPool2d)(layer.kernel_size,
                                                                               stride=layer.stride),
    Activation: lambda layer: _ACTIVATIONS[layer.kind](layer),
    Dropout: lambda layer: nn.Dropout(layer.p),
    BatchNorm2d: lambda layer: nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum),
    Flatten: lambda layer: nn.Flatten(),
    Linear: lambda layer: nn.Linear(layer.in_features, layer.out_features, bias=layer.bias),
    GlobalAvgPool: lambda layer: nn.AdaptiveAvgPool2d(1),
    Add: lambda layer: Sum(),
}


def build_layer(layer) -> nn.Module:
    """The torch module of one spec layer, through ``BUILDERS``."""
    if type(layer) not in BUILDERS:
        raise TypeError(f"no PyTorch translation for {type(layer).__name__}")
    return BUILDERS[type(layer)](layer)


def build(spec: ModelSpec, device: torch.device) -> TorchModel:
    """A GraphNet whose child names are the spec's layer names."""
    return TorchModel(spec, GraphNet(spec).to(device), device)


def torch_name(canonical: str) -> str:
    """state_dict key of a canonical tensor name."""
    layer, suffix = canonical.rsplit(".", 1)
    return f"{layer}.{_BN_NAMES.get(suffix, suffix)}"


def set_weights(model: TorchModel, weights: dict[str, np.ndarray]) -> None:
    """Copy canonical weights into the module (strict: every tensor must be given)."""
    state = {torch_name(name): torch.from_numpy(np.ascontiguousarray(weights[name], dtype=np.float32))
             for name in model.spec.param_shapes()}
    for key, value in model.module.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value  # torch-only counter; unused with a fixed momentum
    model.module.load_state_dict(state, strict=True)


def get_weights(model: TorchModel) -> dict[str, np.ndarray]:
    """Canonical float32 copies of every tensor, BatchNorm running statistics included."""
    state = model.module.state_dict()
    return {name: state[torch_name(name)].detach().cpu().numpy().copy() for name in model.spec.param_shapes()}
