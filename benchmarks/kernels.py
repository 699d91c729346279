"""The graph kinds' float32 CPU kernels against float64: how exact each framework's forward and backward is.

Each case is one spec layer as the backends build it (``backends/*/build.py``: ``build_layer``), run on
float32 inputs and weights drawn from a seeded generator; the truth is the float64 referee
(``harness.reference.layers``) on the same float32 values. Per output (the layer's output; its input's and
weight's gradients for an upstream gradient drawn the same way) it prints:

- ``max abs``: the largest |float32 - float64|;
- ``rel scale``: that over the largest |float64| of the tensor (the scale the tolerances use, 1e-4);
- ``/ u*terms``: the largest error over u * (the same computation on |inputs| and |weights|), u = 2^-24:
  the error of a sum in units of its inputs' size, about 1 for one correct rounding, up to the number of
  terms for a naive float32 sum (cancellation does not inflate it, as it does relative errors);
- ``ulps``: the largest error in float32 steps of the true value (large where the value itself is near 0);
- ``exact``: the share of elements equal to float32(truth), i.e. correctly rounded.

Usage (from the repository root)::

    .venv/bin/python benchmarks/kernels.py                      # both backends, seed 0
    .venv/bin/python benchmarks/kernels.py --backends mindspore --seed 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from harness.backend import get_backend  # noqa: E402
from harness.model.spec import Add, Conv2d, Flatten, GlobalAvgPool, Linear, ModelSpec  # noqa: E402
from harness.reference.layers import layer_backward, layer_forward  # noqa: E402

U = 2.0 ** -24  # float32's unit roundoff

# name -> (layer, input shape(s) with the batch axis, whether inputs are post-ReLU (>= 0) as a GAP's are)
CASES = {
    "conv 3x3 stride 2 pad 1 (16->32, 32x32)": (Conv2d("k", 16, 32, 3, stride=2, padding=1), [(8, 16, 32, 32)], False),
    "conv 1x1 stride 2 shortcut (16->32, 32x32)": (Conv2d("k", 16, 32, 1, stride=2, bias=False), [(8, 16, 32, 32)],
                                                   False),
    "stem conv 3x3 stride 2 pad 1 (3->16, 32x32)": (Conv2d("k", 3, 16, 3, stride=2, padding=1), [(8, 3, 32, 32)],
                                                    False),
    "depthwise 3x3 pad 1 (32 ch, 32x32)": (Conv2d("k", 32, 32, 3, padding=1, groups=32, bias=False),
                                           [(8, 32, 32, 32)], False),
    "depthwise 3x3 stride 2 pad 1 (32 ch, 32x32)": (Conv2d("k", 32, 32, 3, stride=2, padding=1, groups=32, bias=False),
                                                    [(8, 32, 32, 32)], False),
    "grouped 3x3 groups=2 (32->64, 16x16)": (Conv2d("k", 32, 64, 3, padding=1, groups=2), [(8, 32, 16, 16)], False),
    "grouped 3x3 groups=4 stride 2 (64->64, 16x16)": (Conv2d("k", 64, 64, 3, stride=2, padding=1, groups=4),
                                                      [(8, 64, 16, 16)], False),
    "GlobalAvgPool 8x8 (64 ch)": (GlobalAvgPool("k"), [(8, 64, 8, 8)], True),
    "GlobalAvgPool 32x32 (32 ch)": (GlobalAvgPool("k"), [(8, 32, 32, 32)], True),
    "GlobalAvgPool 112x112 (8 ch)": (GlobalAvgPool("k"), [(2, 8, 112, 112)], True),
    "Add, 2 inputs": (Add("k", ("a", "b")), [(8, 64, 16, 16)] * 2, False),
    "Add, 3 inputs": (Add("k", ("a", "b", "c")), [(8, 64, 16, 16)] * 3, False),
}


def draw(case: str, seed: int) -> tuple[list[np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """Float32 inputs, weights (canonical names ``k.<suffix>``) and upstream gradient of one case."""
    layer, shapes, nonnegative = CASES[case]
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    if nonnegative:
        inputs = [np.maximum(x, 0) for x in inputs]
    fan_in = np.prod(layer.param_shapes().get("weight", (1, 1))[1:])
    weights = {f"k.{suffix}": (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
               for suffix, shape in layer.param_shapes().items()}
    out, _ = layer_forward(layer, weights, *inputs)
    return inputs, weights, rng.standard_normal(out.shape).astype(np.float32)


def exact(layer, inputs: list[np.ndarray], weights: dict, upstream: np.ndarray) -> dict[str, np.ndarray]:
    """The float64 referee's output and gradients (by the names ``measure`` prints)."""
    out, cache = layer_forward(layer, {k: v.astype(np.float64) for k, v in weights.items()},
                               *(x.astype(np.float64) for x in inputs))
    dx, grads, _ = layer_backward(layer, cache, upstream.astype(np.float64))
    dxs = dx if isinstance(dx, tuple) else (dx,)
    return {"out": out, **{f"d_input{i}": d for i, d in enumerate(dxs)}, **{f"d_{k}": v for k, v in grads.items()}}


def magnitudes(layer, inputs, weights, upstream) -> dict[str, np.ndarray]:
    """``exact`` of the absolute values: per element, the sum of |terms| each result adds up."""
    return exact(layer, [np.abs(x) for x in inputs], {k: np.abs(v) for k, v in weights.items()}, np.abs(upstream))


def torch_kernels(layer, inputs, weights, upstream) -> dict[str, np.ndarray]:
    """The PyTorch backend's module of ``layer``: output, and autograd's gradients for ``upstream``."""
    import torch

    from harness.backends.pytorch.build import build_layer

    module = build_layer(layer)
    for suffix, param in module.named_parameters():
        param.data.copy_(torch.from_numpy(weights[f"k.{suffix}"]))
    xs = [torch.tensor(x, requires_grad=True) for x in inputs]
    out = module(*xs)
    out.backward(torch.from_numpy(upstream))
    return {"out": out.detach().numpy(), **{f"d_input{i}": x.grad.numpy() for i, x in enumerate(xs)},
            **{f"d_{suffix}": p.grad.numpy() for suffix, p in module.named_parameters()}}


def mindspore_kernels(layer, inputs, weights, upstream) -> dict[str, np.ndarray]:
    """The MindSpore backend's cell of ``layer`` in GRAPH_MODE: output, and GradOperation's gradients."""
    import mindspore as ms
    from mindspore import nn, ops

    from harness.backends.mindspore.build import build_layer

    # The backend's own set-up (device, GRAPH_MODE, the oneDNN ISA cap) through a one-layer model.
    backend = get_backend("mindspore")
    backend.build(ModelSpec("setup", (1, 1, 1), 1, (Flatten("f"), Linear("l", 1, 1))), "cpu")
    cell = build_layer(layer, "cpu")
    params = cell.trainable_params()
    for param in params:
        param.set_data(ms.Tensor(weights[f"k.{param.name.rsplit('.', 1)[-1]}"]))

    class Vjp(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.cell = cell
            self.weights = ms.ParameterTuple(params)
            self.grad = ops.GradOperation(get_all=True, get_by_list=True, sens_param=True)

        def construct(self, *args):
            return self.cell(*args[:-1]), self.grad(self.cell, self.weights)(*args)

    out, (dxs, dws) = Vjp()(*(ms.Tensor(x) for x in inputs), ms.Tensor(upstream))
    names = [param.name.rsplit(".", 1)[-1] for param in params]
    return {"out": out.asnumpy(), **{f"d_input{i}": d.asnumpy() for i, d in enumerate(dxs)},
            **{f"d_{name}": d.asnumpy() for name, d in zip(names, dws)}}


KERNELS = {"pytorch": torch_kernels, "mindspore": mindspore_kernels}


def measure(got: np.ndarray, truth: np.ndarray, terms: np.ndarray) -> dict[str, float]:
    """The columns the module docstring describes, for one tensor."""
    got = got.astype(np.float64)
    error = np.abs(got - truth)
    step = np.spacing(np.abs(truth).astype(np.float32)).astype(np.float64)
    return {"max_abs": float(error.max()), "rel_scale": float(error.max() / np.abs(truth).max()),
            "bound_units": float((error / np.maximum(U * terms, np.finfo(float).tiny)).max()),
            "ulps": float((error / step).max()), "exact": float(np.mean(got == truth.astype(np.float32)))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="pytorch,mindspore")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("| backend | kernel | output | max abs | rel scale | / u*terms | ulps | exact |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for backend in args.backends.split(","):
        for case, (layer, _, _) in CASES.items():
            inputs, weights, upstream = draw(case, args.seed)
            truth, terms = exact(layer, inputs, weights, upstream), magnitudes(layer, inputs, weights, upstream)
            got = KERNELS[backend](layer, inputs, weights, upstream)
            for name in truth:
                if name.startswith("d_input") and name != "d_input0" and isinstance(layer, Add):
                    continue  # every summand's gradient is the same tensor
                row = measure(got[name], truth[name], terms[name])
                print(f"| {backend} | {case} | {name} | {row['max_abs']:.2e} | {row['rel_scale']:.2e} | "
                      f"{row['bound_units']:.2f} | {row['ulps']:.3g} | {100 * row['exact']:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
