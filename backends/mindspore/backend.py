"""The Backend protocol (harness/backend.py) for MindSpore: numpy in, numpy out."""

from __future__ import annotations

from pathlib import Path

import mindspore as ms
import numpy as np

from harness.config import TrainConfig
from harness.errors import HarnessError
from harness.model.spec import ModelSpec

from . import bare as _bare
from . import build as _build
from . import devices as _devices
from . import export as _export
from . import forward as _forward
from .trainer import MsTrainer


def _graph_mode() -> None:
    # GRAPH mode: each Cell call runs a compiled graph (measured fastest on CPU: PARITY.md);
    # MindSpore's default is PyNative (op by op).
    if ms.get_context("mode") != ms.GRAPH_MODE:
        ms.set_context(mode=ms.GRAPH_MODE)


class MindSporeBackend:
    """The Backend protocol for MindSpore (see harness/backend.py)."""

    name = "mindspore"
    checkpoint_suffix = ".ckpt"

    def devices(self) -> list[str]:
        return _devices.usable()

    def resolve_device(self, device: str) -> str:
        return _devices.resolve(device)

    def versions(self) -> dict[str, str]:
        return {"mindspore": ms.__version__, "numpy": np.__version__, "ONEDNN_MAX_CPU_ISA": _devices.isa_note()}

    def build(self, spec: ModelSpec, device: str) -> _build.MsModel:
        device = _devices.resolve(device)  # cached: a device that cannot run fails here with its reason
        _devices.activate(device)
        _graph_mode()
        return _build.build(spec, device)

    def set_weights(self, model: _build.MsModel, weights: dict[str, np.ndarray]) -> None:
        _build.set_weights(model, weights)

    def get_weights(self, model: _build.MsModel) -> dict[str, np.ndarray]:
        return _build.get_weights(model)

    def make_trainer(self, model: _build.MsModel, train: TrainConfig, decay_names: set[str]) -> MsTrainer:
        return MsTrainer(model, train, decay_names)

    def rng_state(self, model: _build.MsModel) -> dict[str, np.ndarray]:
        # Dropout masks are drawn on the host keyed by (seed, layer, step): the step is all there is to keep.
        return {"dropout_steps": np.asarray(model.dropout_steps, dtype=np.int64)}

    def set_rng_state(self, model: _build.MsModel, state: dict[str, np.ndarray]) -> None:
        """Restore ``rng_state``'s output; HarnessError unless ``dropout_steps`` is an integer scalar >= 0."""
        value = state.get("dropout_steps")
        # int() of a float or of a one-element array would pass silently: the masks would restart elsewhere.
        if not isinstance(value, np.ndarray) or value.shape != () or value.dtype.kind not in "iu" or value < 0:
            got = f"{value.dtype} {value.shape} {str(value)[:20]}" if isinstance(value, np.ndarray) else "missing"
            raise HarnessError(f"rng/dropout_steps is {got}, expected an int64 scalar >= 0: how many train steps "
                               "drew Dropout masks")
        model.dropout_steps = int(value)

    def predict(self, model: _build.MsModel, x: np.ndarray, batch_size: int) -> np.ndarray:
        return _forward.predict(model, x, batch_size)

    def activations(self, model: _build.MsModel, x: np.ndarray, train: bool = False) -> dict[str, np.ndarray]:
        return _forward.activations(model, x, train)

    def save(self, model: _build.MsModel, path: Path) -> None:
        _export.save_checkpoint(model, path)

    def load(self, spec: ModelSpec, path: Path, device: str) -> _build.MsModel:
        model = self.build(spec, device)
        _export.load_checkpoint(model, path)
        return model

    def export_onnx(self, model: _build.MsModel, path: Path, batch_size: int | None = None) -> Path:
        return _export.export_onnx(model, path, batch_size)

    def bare_loop(self, model: _build.MsModel, x: np.ndarray, y: np.ndarray, learning_rate: float,
                  momentum: float) -> _bare.BareLoop:
        return _bare.BareLoop(model, x, y, learning_rate, momentum)

    def threads(self) -> int:
        return _bare.threads()

    def set_threads(self, count: int) -> None:
        _bare.set_threads(count)


BACKEND = MindSporeBackend()
