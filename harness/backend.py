"""The backend protocol: only numpy arrays and harness dataclasses cross it.

A backend owns what must differ between frameworks (building layers, a training
step, prediction, checkpoints, ONNX export); the harness owns everything that
must be identical. Backends are imported lazily by name, so a missing framework
is a one-line ``BackendUnavailable``, not an ImportError.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import math
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from .config import TrainConfig
from .errors import BackendUnavailable, HarnessError
from .model.spec import ModelSpec
from .model.weights import Weights

# name -> (module holding BACKEND, the framework package it needs, the extra that installs it). The folders
# backends/<name>/ of the repository install as harness.backends.<name> (pyproject.toml's package-dir).
BACKENDS: dict[str, tuple[str, str, str]] = {
    "pytorch": ("harness.backends.pytorch.backend", "torch", "pip install -c constraints.txt torch==2.13.0"),
    "mindspore": ("harness.backends.mindspore.backend", "mindspore", "pip install -c constraints.txt '.[mindspore]'"),
}


class Trainer(Protocol):
    """Optimizer state lives inside; the harness hands it the batch and the lr of each step."""

    def step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> float:
        """One optimizer step on a batch (train mode); returns the mean cross-entropy loss."""

    def preparer(self) -> Callable[[np.ndarray, np.ndarray], Any]:
        """What turns the host batches of the coming steps, in order, into this trainer's step inputs; it may run
        on another thread while a step runs (the loop makes the next batch there). ``step(x, y, lr)`` is
        ``step_prepared(preparer()(x, y), lr)``."""

    def step_prepared(self, prepared: Any, learning_rate: float) -> float:
        """``step`` on inputs made by ``preparer()``, taken in the order they were made; returns the loss."""

    def prepare_ahead(self) -> bool:
        """Whether making the next batch on another thread, beside this trainer's compute, gains time."""

    def prepared_bytes(self, batch_size: int) -> int:
        """Bytes ``preparer()`` draws for a batch of ``batch_size`` besides the batch itself (Dropout noise or
        masks): with the images, what making a batch ahead would take off the step."""

    def state(self) -> dict[str, np.ndarray]:
        """Optimizer state by canonical names (``<param>.momentum_buffer``, ``.exp_avg``, ``.exp_avg_sq``, ``step``)."""

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what ``state`` returned (possibly from the other backend)."""


class BareLoop(Protocol):
    """The framework's minimal training loop: the stock baseline ``harness bench`` measures the harness against."""

    def run(self, order: np.ndarray, batch_size: int) -> float:
        """One step per ``batch_size`` indices of ``order`` (no partial batch); returns the seconds they took."""


class Backend(Protocol):
    """What every framework backend implements (backends/<name>/backend.py; docs/architecture.md)."""

    name: str
    checkpoint_suffix: str  # the native checkpoint's file suffix

    def devices(self) -> list[str]:
        """Devices usable on this machine, e.g. ``["cpu", "cuda"]``."""

    def resolve_device(self, device: str) -> str:
        """Map a requested device (or ``auto``) to a usable one, or raise BackendUnavailable with the reason."""

    def versions(self) -> dict[str, str]:
        """Framework and library versions, for provenance."""

    def build(self, spec: ModelSpec, device: str) -> Any:
        """A model for ``spec`` on ``device`` (an opaque handle)."""

    def set_weights(self, model: Any, weights: Weights) -> None:
        """Load canonical weights (names and layouts of ``spec.param_shapes()``)."""

    def get_weights(self, model: Any) -> Weights:
        """Canonical float32 weights, BatchNorm running statistics included."""

    def make_trainer(self, model: Any, train: TrainConfig, decay_names: set[str]) -> Trainer:
        """A trainer for ``train``'s optimizer; weight decay only on ``decay_names``."""

    def rng_state(self, model: Any) -> dict[str, np.ndarray]:
        """The framework's random state that training draws from (dropout masks), for checkpoints."""

    def set_rng_state(self, model: Any, state: dict[str, np.ndarray]) -> None:
        """Restore what ``rng_state`` returned."""

    def predict(self, model: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
        """Eval-mode logits (N, classes) as float32."""

    def activations(self, model: Any, x: np.ndarray, train: bool = False) -> dict[str, np.ndarray]:
        """Output of every layer, by layer name, in execution order: eval mode, or with ``train`` the
        train-mode pass (BatchNorm on batch statistics) with the running statistics left as they were."""

    def save(self, model: Any, path: Path) -> None:
        """The framework's own checkpoint."""

    def load(self, spec: ModelSpec, path: Path, device: str) -> Any:
        """A model from ``save``'s file, without executing code from it."""

    def export_onnx(self, model: Any, path: Path, batch_size: int | None = None) -> Path:
        """ONNX file with input ``x`` and output ``logits``; ``None`` = dynamic batch axis."""

    def bare_loop(self, model: Any, x: np.ndarray, y: np.ndarray, learning_rate: float, momentum: float) -> BareLoop:
        """A minimal stock loop (the framework's own SGD with momentum and loss) over preloaded ``x``, ``y``."""

    def threads(self) -> int:
        """CPU threads the framework computes with."""

    def set_threads(self, count: int) -> None:
        """Compute with ``count`` CPU threads from now on (process-wide; before the first kernel)."""


class PortSupport(Protocol):
    """What ``harness port`` needs of a framework beyond the Backend protocol: a user's own model, read and run
    (``backends/<name>/port.py``; module-level functions, and ``PortBackend``: the Backend protocol on the
    user's model, which stands in for the registered backend while a port runs, see ``standing_in``)."""

    FRAMEWORK: str  # what the console calls the framework: "torch", "mindspore"
    MODEL_CLASS: str  # what a factory must return, for error messages

    def is_model(self, obj: Any) -> bool:
        """Whether ``obj`` is a model of this framework."""

    def recording_lines(self, folder: Path) -> contextlib.AbstractContextManager[dict[int, str]]:
        """While open, note the line of a file in ``folder`` that made each layer: ``id(layer) -> "file.py:12"``."""

    def trace(self, model: Any, x: np.ndarray, lines: dict[int, str] | None = None, train: bool = False,
              keep_values: bool = True, dropout: bool = True) -> tuple[list[dict], np.ndarray | None, str | None]:
        """Every layer call in execution order (name, type, line, settings, tensors, shapes, output), the logits,
        and the error that stopped the forward (None when it ran)."""

    def tensors(self, model: Any) -> dict[str, np.ndarray]:
        """Every tensor of the model (running statistics included) as float32 numpy, by the user's names."""

    def trainable(self, model: Any) -> set[str]:
        """The user's names of the tensors an optimizer updates."""

    def load_tensors(self, model: Any, arrays: dict[str, np.ndarray]) -> None:
        """Copy arrays into the model's tensors of those names."""

    def export(self, model: Any, path: Path, input_shape: tuple[int, ...]) -> Path:
        """The model as ONNX (input ``x``, output ``logits``, dynamic batch), or HarnessError."""


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """'same' padding of one axis as both frameworks compute it: (before, after), the odd pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def user_line(root: str) -> str | None:
    """``"file.py:12"`` of the innermost caller in folder ``root`` (not a site-packages file): which line of
    a user's file made the layer whose ``__init__`` is running (``PortSupport.recording_lines``)."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            filename = frame.f_code.co_filename
            if filename.startswith(root) and "site-packages" not in filename:
                return f"{Path(filename).name}:{frame.f_lineno}"
            frame = frame.f_back
        return None
    finally:
        del frame  # a frame holds its locals: break the cycle now


# name -> the module that reads and runs a user's own model of that framework (``harness port``).
PORTS: dict[str, str] = {"pytorch": "harness.backends.pytorch.port", "mindspore": "harness.backends.mindspore.port"}
# Backend objects that stand in for registered ones (``standing_in``): get_backend gives these first.
_STAND_INS: dict[str, Backend] = {}


@contextlib.contextmanager
def standing_in(backends: dict[str, Backend]) -> Iterator[None]:
    """Within the block, ``get_backend(name)`` gives the object given for each name instead of the registered
    backend: ``harness port`` runs the harness's own training, checks and parity on a user's models through
    them, under the registered names. The previous stand-ins come back afterwards (blocks nest)."""
    previous = dict(_STAND_INS)
    _STAND_INS.update(backends)
    try:
        yield
    finally:
        _STAND_INS.clear()
        _STAND_INS.update(previous)


def get_port(name: str) -> PortSupport | ModuleType:
    """The port support of backend ``name`` (``PortSupport``), imported lazily.

    Raises:
        HarnessError: no backend of that name.
        BackendUnavailable: its framework is not installed.
    """
    get_backend(name)  # the same one-line errors for an unknown name or a missing framework
    return importlib.import_module(PORTS[name])


def backend_names() -> list[str]:
    """Every known backend, installed or not."""
    return list(BACKENDS)


def is_installed(name: str) -> bool:
    """Whether the backend's framework package can be imported (without importing it)."""
    return importlib.util.find_spec(BACKENDS[name][1]) is not None


def get_backend(name: str) -> Backend:
    """Import and return a backend by name.

    Raises:
        HarnessError: the name is unknown (listing the known ones).
        BackendUnavailable: its framework is not installed (saying how to install it).
    """
    if name in _STAND_INS:
        return _STAND_INS[name]
    if name not in BACKENDS:
        raise HarnessError(f"unknown backend {name!r}; expected one of: {', '.join(BACKENDS)}")
    module_name, package, install = BACKENDS[name]
    if not is_installed(name):
        raise BackendUnavailable(f"backend {name!r} needs {package}, which is not installed: {install}")
    return importlib.import_module(module_name).BACKEND
