"""A user's own MindSpore ``nn.Cell`` for ``harness port``: where each cell was made, every cell call in execution
order with its settings and output (PyNative hooks), and the Backend protocol run on the user's cell.

The settings vocabulary is ``backends/pytorch/port.py``'s: ``kind`` and the fields that kind compares, in
torch's conventions (a BatchNorm ``momentum`` weighs the new batch; a Dropout's ``p`` is the drop probability),
so the harness compares numbers, and ``written`` keeps what the user's line says. Training and prediction run
compiled (GRAPH_MODE, as the MindSpore backend runs); only ``trace`` switches to PyNative, where Cell hooks run,
and switches back.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import mindspore as ms
import numpy as np
from mindspore import nn

from harness.backend import same_padding, user_line
from harness.config import TrainConfig
from harness.errors import HarnessError, one_line
from harness.model.spec import ModelSpec

from . import backend as _backend
from . import devices as _devices
from .build import MsModel
from .forward import predict
from .trainer import MsTrainer

FRAMEWORK = "mindspore"
MODEL_CLASS = "mindspore.nn.Cell"
_ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU6: "relu6", nn.HSwish: "hardswish",
                nn.LeakyReLU: "leaky_relu", nn.GELU: "gelu", nn.Identity: "identity", nn.ELU: "elu", nn.SiLU: "silu",
                nn.Softmax: "softmax", nn.HSigmoid: "hardsigmoid", nn.Mish: "mish"}


def is_model(obj: Any) -> bool:
    """Whether a factory's result is a MindSpore model."""
    return isinstance(obj, nn.Cell)


@contextlib.contextmanager
def recording_lines(folder: Path) -> Iterator[dict[int, str]]:
    """While open, every ``nn.Cell`` made is noted with the line of the user's file that made it.

    Yields:
        ``id(cell) -> "file.py:12"``: the innermost frame in ``folder`` (not a site-packages file).
    """
    # Before any MindSpore kernel (a factory may run one): its oneDNN reads the ISA cap once, at the first kernel,
    # and without it trains ~16x slower on AVX-512 CPUs (devices.pin_cpu_isa).
    _devices.pin_cpu_isa()
    lines: dict[int, str] = {}
    original = nn.Cell.__init__
    root = str(Path(folder).resolve())

    def noting_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        line = user_line(root)
        if line is not None:
            lines[id(self)] = line

    nn.Cell.__init__ = noting_init
    try:
        yield lines
    finally:
        nn.Cell.__init__ = original


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    return value[-2:] if len(value) > 2 else (value * 2 if len(value) == 1 else value)




def _pads(pad_mode: str, padding, in_shape, kernel, stride, dilation) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of MindSpore's ``pad_mode`` and ``padding``; 'same' needs the input's size."""
    mode = pad_mode.lower()
    if mode == "valid":
        return (0, 0, 0, 0)
    if mode == "same":
        if in_shape is None:
            return None
        (top, bottom), (left, right) = (same_padding(in_shape[1 + i], kernel[i], stride[i], dilation[i])
                                        for i in range(2))
        return (top, bottom, left, right)
    if isinstance(padding, int):
        return (padding,) * 4
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:  # pooling: (up-down, left-right)
        return (padding[0], padding[0], padding[1], padding[1])
    return padding if len(padding) == 4 else (padding[0],) * 4


def settings(cell: nn.Cell, in_shape: tuple[int, ...] | None) -> dict:
    """What a cell computes, in the vocabulary both port modules share (torch's conventions)."""
    if isinstance(cell, nn.Conv2d):
        kernel, stride, dilation = _pair(cell.kernel_size), _pair(cell.stride), _pair(cell.dilation)
        return {"kind": "conv", "in_channels": cell.in_channels, "out_channels": cell.out_channels,
                "kernel": kernel, "stride": stride, "dilation": dilation, "groups": cell.group,
                "pads": _pads(cell.pad_mode, cell.padding, in_shape, kernel, stride, dilation),
                "padding_mode": "zeros", "bias": bool(cell.has_bias),
                "written": f"pad_mode={cell.pad_mode!r}, padding={cell.padding!r}"}
    if isinstance(cell, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel, stride = _pair(cell.kernel_size), _pair(cell.stride)
        mode = "max" if isinstance(cell, nn.MaxPool2d) else "avg"
        pad_mode = str(getattr(cell, "pad_mode", "VALID"))
        padding = getattr(cell, "padding", 0)
        found = {"kind": "pool", "mode": mode, "kernel": kernel, "stride": stride,
                 "pads": _pads(pad_mode, padding, in_shape, kernel, stride, (1, 1)),
                 "ceil_mode": bool(getattr(cell, "ceil_mode", False) or False),
                 "written": f"stride={cell.stride!r}, pad_mode={pad_mode.lower()!r}"}
        if mode == "avg":
            found["count_include_pad"] = bool(getattr(cell, "count_include_pad", True))
        return found
    if isinstance(cell, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        mode = "avg" if isinstance(cell, nn.AdaptiveAvgPool2d) else "max"
        size = getattr(cell, "output_size", None)
        if size is None:
            primitive = getattr(cell, "adaptive_avgpool2d", None) or getattr(cell, "adaptive_maxpool2d", None)
            size = getattr(primitive, "output_size", None)
        size = _pair(size) if size is not None else None
        return {"kind": "global_pool", "mode": mode} if size == (1, 1) else \
            {"kind": "adaptive_pool", "mode": mode, "output_size": size}
    if isinstance(cell, nn.BatchNorm2d):
        # MindSpore keeps 1 - momentum (its argument weighs the old running value; the attribute, torch's, the new).
        return {"kind": "batchnorm", "features": cell.num_features, "eps": float(cell.eps),
                "momentum": float(cell.momentum), "affine": True,
                "running_stats": cell.use_batch_statistics is None,
                "written": f"momentum={round(1.0 - float(cell.momentum), 10):g}"}
    if isinstance(cell, nn.Dropout):
        written = f"p={cell.p}" if cell.p is not None else f"keep_prob={cell.keep_prob}"
        p = float(cell.p) if cell.p is not None else 1.0 - float(cell.keep_prob)
        return {"kind": "dropout", "p": p, "variant": "Dropout", "written": written}
    if isinstance(cell, nn.Dense):
        return {"kind": "linear", "in_features": cell.in_channels, "out_features": cell.out_channels,
                "bias": bool(cell.has_bias), "activation": type(cell.activation).__name__ if cell.activation_flag
                else None}
    if isinstance(cell, nn.Flatten):
        return {"kind": "flatten", "start_dim": cell.start_dim, "end_dim": cell.end_dim}
    if type(cell) in _ACTIVATIONS:
        fn = _ACTIVATIONS[type(cell)]
        found = {"kind": "activation", "fn": fn}
        if fn == "leaky_relu":
            found["negative_slope"] = float(cell.alpha)
        if fn == "gelu":
            found["approximate"] = cell.approximate  # 'tanh' (MindSpore's default, approximate=True) or 'none'
        return found
    return {"kind": "other"}


def _is_layer(cell: nn.Cell) -> bool:
    return next(iter(cell.cells()), None) is None


def layers(cell: nn.Cell) -> list[tuple[str, nn.Cell]]:
    """Every layer cell (no child cells) by its name in ``cells_and_names``, in definition order."""
    return [(name, child) for name, child in cell.cells_and_names() if name and _is_layer(child)]


def own_tensors(cell: nn.Cell) -> dict[str, dict]:
    """A cell's own Parameters (not its children's) by local name: ``{"name": Parameter.name, "shape"}``."""
    return {local: {"name": param.name, "shape": tuple(param.shape)}
            for local, param in cell.parameters_and_names(expand=False)}


def tensors(cell: nn.Cell) -> dict[str, np.ndarray]:
    """Every Parameter (BatchNorm's moving statistics included) as float32 numpy copies, by Parameter.name."""
    return {param.name: np.array(param.asnumpy(), dtype=np.float32, copy=True) for param in cell.get_parameters()}


def trainable(cell: nn.Cell) -> set[str]:
    """Names of the Parameters an optimizer updates."""
    return {param.name for param in cell.trainable_params()}


def load_tensors(cell: nn.Cell, arrays: dict[str, np.ndarray]) -> None:
    """Copy arrays into the Parameters of those names (shapes must match)."""
    params = {param.name: param for param in cell.get_parameters()}
    for name, value in arrays.items():
        param = params[name]
        param.set_data(ms.Tensor(np.array(value, dtype=np.float32, copy=True).reshape(param.shape)))


@contextlib.contextmanager
def _pynative() -> Iterator[None]:
    """PyNative mode for the block (Cell hooks run only there), the previous mode afterwards."""
    previous = ms.get_context("mode")
    if previous != ms.PYNATIVE_MODE:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        yield
    finally:
        if previous != ms.PYNATIVE_MODE:
            ms.set_context(mode=previous)


def trace(cell: nn.Cell, x: np.ndarray, lines: dict[int, str] | None = None, train: bool = False,
          keep_values: bool = True, dropout: bool = True) -> tuple[list[dict], np.ndarray | None, str | None]:
    """Run the cell once in PyNative mode with a forward hook on every layer cell.

    Args:
        cell: the user's cell.
        x: a float32 NCHW batch.
        lines: ``recording_lines``'s notes.
        train: train mode (BatchNorm on batch statistics; its moving statistics put back afterwards).
        keep_values: keep each call's output (else only shapes).
        dropout: whether Dropout cells drop in train mode.

    Returns:
        (calls in execution order, the logits or None, the error that stopped the forward or None), as
        ``backends/pytorch/port.trace``.
    """
    _devices.pin_cpu_isa()  # before the first kernel, as recording_lines (PyNative runs kernels at once)
    names = {id(child): name for name, child in layers(cell)}
    cells = {id(child): child for _, child in layers(cell)}
    calls: list[dict] = []

    def hook(child, args, output):
        first = args[0] if args and isinstance(args[0], ms.Tensor) else None
        in_shape = tuple(first.shape[1:]) if first is not None else None
        is_tensor = isinstance(output, ms.Tensor)
        calls.append({"name": names[id(child)], "type": type(child).__name__,
                      "line": (lines or {}).get(id(child), ""), "settings": settings(child, in_shape),
                      "tensors": own_tensors(child), "in_shape": in_shape,
                      "shape": tuple(output.shape[1:]) if is_tensor else None,
                      "value": np.array(output.asnumpy(), dtype=np.float32, copy=True)
                      if is_tensor and keep_values else None})

    kept = tensors(cell) if train else {}
    was_training = cell.training
    logits, error = None, None
    with _pynative():
        handles = [child.register_forward_hook(hook) for child in cells.values()]
        cell.set_train(train)
        for child in cells.values() if train and not dropout else ():
            if isinstance(child, nn.Dropout):
                child.set_train(False)
        try:
            # PyNative's first Python operator on Tensors (``x + y`` in a construct) has MindSpore 2.10 initialise its
            # NumPy 1.x C API: under NumPy 2 that prints a page of ImportError to sys.stderr, and runs on. Kept off
            # the console, where a refusal is one line.
            with contextlib.redirect_stderr(io.StringIO()):
                out = cell(ms.Tensor(np.ascontiguousarray(x, dtype=np.float32)))
            if isinstance(out, ms.Tensor):
                logits = np.array(out.asnumpy(), dtype=np.float32, copy=True)
            else:
                error = f"the construct returned {type(out).__name__}, not a Tensor of logits"
        except Exception as failure:  # noqa: BLE001 - the user's construct may raise anything; the port reports it
            error = one_line(failure, 300)
        finally:
            for handle in handles:
                handle.remove()
            if kept:
                load_tensors(cell, kept)
            cell.set_train(was_training)
    return calls, logits, error


def export(cell: nn.Cell, path: Path, input_shape: tuple[int, ...]) -> Path:
    """The user's cell as ONNX (mindspore.onnx.export, input ``x``, output ``logits``, dynamic batch), eval mode.

    Raises:
        HarnessError: MindSpore's exporter refused the cell (one line; e.g. an op its converter lacks).
    """
    import onnx  # a harness dependency; only needed here

    path = Path(path)
    cell.set_train(False)
    example = ms.Tensor(np.zeros((1, *input_shape), np.float32))
    # mindspore.onnx.export appends .onnx to a name without it: write beside the target and rename.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        ms.onnx.export(cell, example, file_name=tmp, input_names=["x"], output_names=["logits"],
                       export_params=True, keep_initializers_as_inputs=False, dynamic_axes={"x": {0: "batch"}})
        proto = onnx.load(tmp)
        proto.producer_name, proto.producer_version = "MindSpore", ms.__version__
        for output in proto.graph.output:  # the exporter declares the output's batch as the example's (1)
            first = output.type.tensor_type.shape.dim[0]
            first.Clear()
            first.dim_param = "batch"
        onnx.save(proto, str(path))
    except Exception as error:  # noqa: BLE001 - MindSpore's converter raises RuntimeError/TypeError/ValueError
        raise HarnessError(f"mindspore.onnx.export refused the cell ({one_line(error, 300)})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class PortCell(nn.Cell):
    """The user's cell where the trainer and ``predict`` expect the backend's net: ``outputs`` gives
    ``(x, logits)``, so the compiled train step takes its last value; the user's own Dropout draws its masks."""

    def __init__(self, user: nn.Cell) -> None:
        super().__init__(auto_prefix=False)  # the user's Parameter names stay as they are
        self.user = user

    def construct(self, x):
        return self.user(x)

    def outputs(self, x, masks=None):
        """``(x, logits)``: the train step reads the last (``masks`` is the backend's, for the spec's Dropout)."""
        return x, self.user(x)


class PortBackend:
    """The Backend protocol (harness/backend.py) run on the user's own cell; stands in for ``mindspore``.

    ``build`` calls the user's factory again; training is ``MsTrainer`` (the compiled step with the harness's
    torch-exact optimizers) over the Parameters the name map names; ``activations`` come from PyNative hooks
    placed on the spec's layers by ``layer_calls`` and completed by ``complete``.
    """

    name = "mindspore"
    checkpoint_suffix = ".ckpt"

    def __init__(self, factory: Callable[[], nn.Cell], names: dict[str, str], transposed: set[str],
                 layer_calls: dict[str, int], complete: Callable[[ModelSpec, dict, np.ndarray, dict], dict]) -> None:
        self.factory, self.names, self.transposed = factory, names, transposed
        self.layer_calls, self.complete = layer_calls, complete
        self.dropout = True

    def devices(self) -> list[str]:
        return _backend.BACKEND.devices()

    def resolve_device(self, device: str) -> str:
        return _backend.BACKEND.resolve_device(device)

    def versions(self) -> dict[str, str]:
        return _backend.BACKEND.versions()

    def _user(self) -> nn.Cell:
        user = self.factory()
        if not self.dropout:  # parity: the masks of two frameworks cannot match; Dropout becomes the identity
            for _, child in user.cells_and_names():
                if isinstance(child, nn.Dropout):
                    child.p, child.keep_prob = 0.0, 1.0
        return user

    def build(self, spec: ModelSpec, device: str) -> MsModel:
        device = _backend.BACKEND.resolve_device(device)
        _devices.activate(device)
        if ms.get_context("mode") != ms.GRAPH_MODE:
            ms.set_context(mode=ms.GRAPH_MODE)  # compiled, as the MindSpore backend trains and predicts
        net = PortCell(self._user())
        net.set_train(False)
        by_name = {param.name: param for param in net.get_parameters()}
        params = {canonical: by_name[self.names[canonical]] for canonical in spec.param_shapes()}
        return MsModel(spec, net, device, params)

    def set_weights(self, model: MsModel, weights: dict[str, np.ndarray]) -> None:
        for name, param in model.params.items():
            value = weights[name].T if name in self.transposed else weights[name]
            param.set_data(ms.Tensor(np.array(value, dtype=np.float32, copy=True).reshape(param.shape)))

    def get_weights(self, model: MsModel) -> dict[str, np.ndarray]:
        out = {}
        for name, param in model.params.items():
            value = np.array(param.asnumpy(), dtype=np.float32, copy=True)
            out[name] = np.ascontiguousarray(value.T) if name in self.transposed else value
        return out

    def make_trainer(self, model: MsModel, train: TrainConfig, decay_names: set[str]) -> MsTrainer:
        return MsTrainer(model, train, decay_names)

    def rng_state(self, model: MsModel) -> dict[str, np.ndarray]:
        return _backend.BACKEND.rng_state(model)

    def set_rng_state(self, model: MsModel, state: dict[str, np.ndarray]) -> None:
        _backend.BACKEND.set_rng_state(model, state)

    def predict(self, model: MsModel, x: np.ndarray, batch_size: int) -> np.ndarray:
        return predict(model, x, batch_size)

    def activations(self, model: MsModel, x: np.ndarray, train: bool = False) -> dict[str, np.ndarray]:
        calls, logits, error = trace(model.net.user, x, train=train, dropout=self.dropout)
        if logits is None:
            raise HarnessError(f"the MindSpore model's construct failed: {error}")
        found = {layer: calls[index]["value"] for layer, index in self.layer_calls.items() if index < len(calls)}
        found[model.spec.layers[-1].name] = logits
        return self.complete(model.spec, self.get_weights(model), x, found)

    def save(self, model: MsModel, path: Path) -> None:
        ms.save_checkpoint(model.net.user, str(path))
        os.chmod(path, 0o644)  # ms.save_checkpoint leaves 0400

    def load(self, spec: ModelSpec, path: Path, device: str) -> MsModel:
        raise HarnessError("a port run is not resumed: run harness port again")

    def export_onnx(self, model: MsModel, path: Path, batch_size: int | None = None) -> Path:
        clone = self._user()  # the converter alters the graph it compiles: never the trained cell itself
        load_tensors(clone, tensors(model.net.user))
        return export(clone, path, model.spec.input_shape)

    def bare_loop(self, model, x, y, learning_rate, momentum):
        raise HarnessError("harness bench does not time a port")

    def threads(self) -> int:
        return _backend.BACKEND.threads()

    def set_threads(self, count: int) -> None:
        _backend.BACKEND.set_threads(count)
