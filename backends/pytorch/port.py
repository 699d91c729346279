"""A user's own ``nn.Module`` for ``harness port``: where each module was made, every module call in execution
order with its settings and output, and the Backend protocol run on the user's module.

Nothing here builds layers from a spec: the user's factory builds the model, and ``PortBackend`` moves the
spec's canonical weights in and out of it through the name map the harness worked out (``harness.port``).
Settings are described in one vocabulary shared with ``backends/mindspore/port.py`` (``kind`` plus the
fields that kind compares), with padding resolved against the input each call really had.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from harness.backend import same_padding, user_line
from harness.config import TrainConfig
from harness.errors import HarnessError, one_line
from harness.model.spec import ModelSpec

from . import backend as _backend
from .build import TorchModel, torch_name
from .export import export_onnx
from .forward import predict
from .trainer import TorchTrainer

FRAMEWORK = "torch"
MODEL_CLASS = "torch.nn.Module"
# torch.nn's activation modules -> the spec's activation kinds (others keep their class name, lower case).
_ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU6: "relu6", nn.Hardswish: "hardswish",
                nn.LeakyReLU: "leaky_relu", nn.GELU: "gelu", nn.Identity: "identity", nn.ELU: "elu", nn.SiLU: "silu",
                nn.Softmax: "softmax", nn.Hardsigmoid: "hardsigmoid", nn.Mish: "mish", nn.Softplus: "softplus"}
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def is_model(obj: Any) -> bool:
    """Whether a factory's result is a torch model."""
    return isinstance(obj, nn.Module)


@contextlib.contextmanager
def recording_lines(folder: Path) -> Iterator[dict[int, str]]:
    """While open, every ``nn.Module`` made is noted with the line of the user's file that made it.

    Yields:
        ``id(module) -> "file.py:12"``: the innermost frame in ``folder`` (not a site-packages file) when the
        module's ``__init__`` ran, so ``nn.Conv2d(1, 6, 5)`` inside ``nn.Sequential(...)`` gets its own line.
    """
    lines: dict[int, str] = {}
    original = nn.Module.__init__
    root = str(Path(folder).resolve())

    def noting_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        line = user_line(root)
        if line is not None:
            lines[id(self)] = line

    nn.Module.__init__ = noting_init
    try:
        yield lines
    finally:
        nn.Module.__init__ = original


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(int(v) for v in value)




def _pads(padding, in_shape, kernel, stride, dilation) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) zero padding of a conv or pool given torch's ``padding``."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if in_shape is None:
            return None
        (top, bottom), (left, right) = (same_padding(in_shape[1 + i], kernel[i], stride[i], dilation[i])
                                        for i in range(2))
        return (top, bottom, left, right)
    ph, pw = _pair(padding)
    return (ph, ph, pw, pw)


def settings(module: nn.Module, in_shape: tuple[int, ...] | None) -> dict:
    """What a module computes, in the vocabulary both port modules share: ``kind`` and its fields.

    Args:
        module: the module.
        in_shape: its input's shape without the batch axis, where a call showed it (padding 'same' needs it).
    """
    if isinstance(module, nn.Conv2d):
        kernel, stride, dilation = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
        return {"kind": "conv", "in_channels": module.in_channels, "out_channels": module.out_channels,
                "kernel": kernel, "stride": stride, "dilation": dilation, "groups": module.groups,
                "pads": _pads(module.padding, in_shape, kernel, stride, dilation),
                "padding_mode": module.padding_mode, "bias": module.bias is not None,
                "written": f"padding={module.padding!r}"}
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        dilation = _pair(getattr(module, "dilation", 1))
        found = {"kind": "pool", "mode": "max" if isinstance(module, nn.MaxPool2d) else "avg", "kernel": kernel,
                 "stride": stride, "pads": _pads(module.padding, in_shape, kernel, stride, dilation),
                 "ceil_mode": bool(module.ceil_mode)}
        if isinstance(module, nn.AvgPool2d):
            found["count_include_pad"] = bool(module.count_include_pad)
        return found
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        mode = "avg" if isinstance(module, nn.AdaptiveAvgPool2d) else "max"
        size = _pair(module.output_size) if module.output_size is not None else None
        return {"kind": "global_pool", "mode": mode} if size == (1, 1) else \
            {"kind": "adaptive_pool", "mode": mode, "output_size": size}
    if isinstance(module, nn.BatchNorm2d):
        return {"kind": "batchnorm", "features": module.num_features, "eps": float(module.eps),
                "momentum": None if module.momentum is None else float(module.momentum),
                "affine": bool(module.affine), "running_stats": bool(module.track_running_stats),
                "written": f"momentum={module.momentum}"}
    if isinstance(module, _DROPOUTS):
        return {"kind": "dropout", "p": float(module.p), "variant": type(module).__name__,
                "written": f"p={module.p}"}
    if isinstance(module, nn.Linear):
        return {"kind": "linear", "in_features": module.in_features, "out_features": module.out_features,
                "bias": module.bias is not None}
    if isinstance(module, nn.Flatten):
        return {"kind": "flatten", "start_dim": module.start_dim, "end_dim": module.end_dim}
    if type(module) in _ACTIVATIONS:
        fn = _ACTIVATIONS[type(module)]
        found = {"kind": "activation", "fn": fn}
        if fn == "leaky_relu":
            found["negative_slope"] = float(module.negative_slope)
        if fn == "gelu":
            found["approximate"] = module.approximate
        return found
    return {"kind": "other"}


def _is_layer(module: nn.Module) -> bool:
    """A module the port compares: one without children (a container's output is its last child's)."""
    return next(module.children(), None) is None


def layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every layer module (no children) by its name in ``named_modules``, in definition order."""
    return [(name, child) for name, child in module.named_modules() if name and _is_layer(child)]


def own_tensors(module: nn.Module, prefix: str) -> dict[str, dict]:
    """A module's own parameters and buffers (not its children's) by local name: ``{"name": its state_dict
    key, "shape"}``; num_batches_tracked left out."""
    found = {local: {"name": f"{prefix}.{local}", "shape": tuple(p.shape)}
             for local, p in module.named_parameters(recurse=False)}
    found.update({local: {"name": f"{prefix}.{local}", "shape": tuple(b.shape)}
                  for local, b in module.named_buffers(recurse=False) if local != "num_batches_tracked"})
    return found


def tensors(module: nn.Module) -> dict[str, np.ndarray]:
    """The state_dict as float32 numpy copies (num_batches_tracked left out: torch's counter, unused with a
    fixed momentum), by the user's names."""
    return {key: value.detach().cpu().numpy().astype(np.float32, copy=True)
            for key, value in module.state_dict().items() if not key.endswith("num_batches_tracked")}


def trainable(module: nn.Module) -> set[str]:
    """The user's names of the tensors an optimizer updates."""
    return {name for name, p in module.named_parameters() if p.requires_grad}


def load_tensors(module: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Copy arrays into the module's tensors of those names (shapes must match)."""
    state = dict(module.state_dict(keep_vars=True))
    with torch.no_grad():
        for key, value in arrays.items():
            target = state[key]
            target.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).reshape(target.shape))


def trace(module: nn.Module, x: np.ndarray, lines: dict[int, str] | None = None, train: bool = False,
          keep_values: bool = True, dropout: bool = True) -> tuple[list[dict], np.ndarray | None, str | None]:
    """Run the module once with a forward hook on every layer module.

    Args:
        module: the user's module.
        x: a float32 NCHW batch.
        lines: ``recording_lines``'s notes, for each call's ``line``.
        train: train mode (BatchNorm on batch statistics; its running statistics put back afterwards).
        keep_values: keep each call's output (else only shapes).
        dropout: whether Dropout modules drop in train mode (parity keeps them off).

    Returns:
        (calls in execution order, the logits or None, the error that stopped the forward or None). A call is
        ``{"name", "type", "line", "settings", "tensors", "in_shape", "shape", "value"}``; shapes without
        the batch axis.
    """
    names = {child: name for name, child in layers(module)}
    calls: list[dict] = []

    def hook(child, args, output):
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        in_shape = tuple(first.shape[1:]) if first is not None else None
        is_tensor = isinstance(output, torch.Tensor)
        calls.append({"name": names[child], "type": type(child).__name__, "line": (lines or {}).get(id(child), ""),
                      "settings": settings(child, in_shape), "tensors": own_tensors(child, names[child]),
                      "in_shape": in_shape,
                      "shape": tuple(output.shape[1:]) if is_tensor else None,
                      # a copy now: an inplace ReLU after this module would overwrite the tensor
                      "value": output.detach().cpu().numpy().astype(np.float32, copy=True)
                      if is_tensor and keep_values else None})

    kept = {k: v.clone() for k, v in module.state_dict().items()} if train else {}
    handles = [child.register_forward_hook(hook) for child in names]
    was_training = module.training
    module.train(train)
    for child in module.modules() if train and not dropout else ():
        if isinstance(child, _DROPOUTS):
            child.eval()
    logits, error = None, None
    try:
        with torch.no_grad():
            device = next(module.parameters(), torch.empty(0)).device  # a model moved to a GPU takes its input there
            out = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device))
        logits = out.detach().cpu().numpy().astype(np.float32, copy=True) if isinstance(out, torch.Tensor) else None
        if logits is None:
            error = f"the forward returned {type(out).__name__}, not a tensor of logits"
    except Exception as failure:  # noqa: BLE001 - the user's forward may raise anything; the port reports it
        error = one_line(failure, 300)
    finally:
        for handle in handles:
            handle.remove()
        if kept:
            module.load_state_dict(kept)
        module.train(was_training)
    return calls, logits, error


def float64_logits(module: nn.Module, x: np.ndarray) -> np.ndarray:
    """The module run in float64 on a copy (``module.double()``): the referee where its ONNX import fails."""
    twin = copy.deepcopy(module).double().eval()
    with torch.no_grad():
        return twin(torch.from_numpy(np.asarray(x, np.float64))).numpy()


def float64_outputs(module: nn.Module, x: np.ndarray) -> tuple[list[dict], np.ndarray | None, str | None]:
    """``trace`` of a float64 copy: every layer call's output in float64 (the fallback referee's layers)."""
    twin = copy.deepcopy(module).double().eval()
    names = {child: name for name, child in layers(twin)}
    calls: list[dict] = []

    def hook(child, args, output):
        if isinstance(output, torch.Tensor):
            calls.append({"name": names[child], "value": output.detach().numpy().copy()})

    handles = [child.register_forward_hook(hook) for child in names]
    try:
        with torch.no_grad():
            out = twin(torch.from_numpy(np.asarray(x, np.float64)))
        return calls, out.numpy(), None
    except Exception as failure:  # noqa: BLE001 - the user's forward
        return calls, None, one_line(failure, 300)
    finally:
        for handle in handles:
            handle.remove()


def export(module: nn.Module, path: Path, input_shape: tuple[int, ...]) -> Path:
    """The user's module exported as the harness exports (dynamo, dynamic batch, one file), eval mode.

    The exporter is run without its optimizer (``optimize=False`` would keep BatchNorm, which the default folds
    into the convolutions; the spec and its weights must keep the user's BatchNorm tensors).

    Raises:
        HarnessError: the exporter refused the module (one line).
    """
    import warnings, io, logging  # noqa: E401 - only the export needs these

    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
            program = torch.onnx.export(module, (torch.zeros((2, *input_shape)),), input_names=["x"],
                                        output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                        dynamo=True, optimize=False, external_data=False, verbose=False)
        program.save(str(path), external_data=False)
    except Exception as error:  # noqa: BLE001 - torch.export raises many types for code it cannot trace
        raise HarnessError(f"torch.onnx.export refused the model ({one_line(error, 300)})") from None
    finally:
        module.train(was_training)
    return Path(path)


class CanonicalView(nn.Module):
    """The user's module with its trainable tensors named as the spec names them, for ``TorchTrainer``.

    ``named_parameters`` yields ``build.torch_name(canonical)`` for each trainable tensor of the spec, so the
    trainer's optimizer groups, weight decay set and state names are the ones every backend uses; the forward
    is the user's. With ``dropout`` off, the user's Dropout modules stay in eval mode (parity: masks cannot match).
    """

    def __init__(self, user: nn.Module, params: dict[str, nn.Parameter], dropout: bool = True) -> None:
        super().__init__()
        self.user = user
        self.canonical = params  # canonical name -> the user's Parameter; a plain dict: no second registration
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.user(x)

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        for name, param in self.canonical.items():
            yield torch_name(name), param

    def train(self, mode: bool = True) -> "CanonicalView":
        super().train(mode)
        if mode and not self.dropout:
            for child in self.user.modules():
                if isinstance(child, _DROPOUTS):
                    child.eval()
        return self


@dataclass
class PortNames:
    """Where each canonical tensor lives in the user's module: its state_dict name, and whether it is stored
    transposed relative to the spec's layout (a 2-D weight)."""

    names: dict[str, str]  # canonical -> the user's name
    transposed: set[str] = field(default_factory=set)


class PortBackend:
    """The Backend protocol (harness/backend.py) run on the user's own module; stands in for ``pytorch``.

    ``build`` calls the user's factory again (a fresh module, as the backend builds a fresh net), ``activations``
    are the layer modules' outputs placed on the spec's layers by ``layer_calls`` and completed by ``complete``
    (the harness's float32 of each layer the module runs without a module of its own, e.g. ``F.relu``).
    """

    name = "pytorch"
    checkpoint_suffix = ".pt"

    def __init__(self, factory: Callable[[], nn.Module], names: PortNames, layer_calls: dict[str, int],
                 complete: Callable[[ModelSpec, dict, np.ndarray, dict], dict]) -> None:
        self.factory, self.port_names, self.layer_calls, self.complete = factory, names, layer_calls, complete
        self.dropout = True  # parity turns the user's Dropout off (its masks cannot match across frameworks)

    def devices(self) -> list[str]:
        return _backend.BACKEND.devices()

    def resolve_device(self, device: str) -> str:
        return _backend.BACKEND.resolve_device(device)

    def versions(self) -> dict[str, str]:
        return _backend.BACKEND.versions()

    def build(self, spec: ModelSpec, device: str) -> TorchModel:
        user = self.factory()
        state = dict(user.named_parameters())
        params = {name: state[self.port_names.names[name]] for name in spec.trainable_names()}
        view = CanonicalView(user, params, self.dropout).to(torch.device(device))
        view.eval()
        return TorchModel(spec, view, torch.device(device))

    def set_weights(self, model: TorchModel, weights: dict[str, np.ndarray]) -> None:
        names, flip = self.port_names.names, self.port_names.transposed
        load_tensors(model.module.user, {names[name]: (weights[name].T if name in flip else weights[name])
                                         for name in model.spec.param_shapes()})

    def get_weights(self, model: TorchModel) -> dict[str, np.ndarray]:
        state = tensors(model.module.user)
        names, flip = self.port_names.names, self.port_names.transposed
        return {name: np.ascontiguousarray(state[names[name]].T if name in flip else state[names[name]])
                for name in model.spec.param_shapes()}

    def make_trainer(self, model: TorchModel, train: TrainConfig, decay_names: set[str]) -> TorchTrainer:
        return TorchTrainer(model, train, decay_names)

    def rng_state(self, model: TorchModel) -> dict[str, np.ndarray]:
        return _backend.BACKEND.rng_state(model)

    def set_rng_state(self, model: TorchModel, state: dict[str, np.ndarray]) -> None:
        _backend.BACKEND.set_rng_state(model, state)

    def predict(self, model: TorchModel, x: np.ndarray, batch_size: int) -> np.ndarray:
        return predict(model, x, batch_size)

    def activations(self, model: TorchModel, x: np.ndarray, train: bool = False) -> dict[str, np.ndarray]:
        calls, logits, error = trace(model.module.user, x, train=train, dropout=self.dropout)
        if logits is None:
            raise HarnessError(f"the PyTorch model's forward failed: {error}")
        found = {layer: calls[index]["value"] for layer, index in self.layer_calls.items() if index < len(calls)}
        found[model.spec.layers[-1].name] = logits
        return self.complete(model.spec, self.get_weights(model), x, found)

    def save(self, model: TorchModel, path: Path) -> None:
        torch.save(model.module.user.state_dict(), path)

    def load(self, spec: ModelSpec, path: Path, device: str) -> TorchModel:
        raise HarnessError("a port run is not resumed: run harness port again")

    def export_onnx(self, model: TorchModel, path: Path, batch_size: int | None = None) -> Path:
        return export_onnx(model, path, batch_size)

    def bare_loop(self, model, x, y, learning_rate, momentum):
        raise HarnessError("harness bench does not time a port")

    def threads(self) -> int:
        return _backend.BACKEND.threads()

    def set_threads(self, count: int) -> None:
        _backend.BACKEND.set_threads(count)
