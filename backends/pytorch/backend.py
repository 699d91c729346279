"""The Backend protocol (harness/backend.py) for PyTorch: numpy in, numpy out (cpu, cuda, npu)."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch

from harness.config import TrainConfig
from harness.errors import BackendUnavailable, HarnessError, one_line
from harness.model.spec import ModelSpec

from . import bare as _bare
from . import build as _build
from . import forward as _forward
from .export import export_onnx as _export_onnx
from .noise import native_draw_ready
from .trainer import TorchTrainer

_PREFERENCE = ("npu", "cuda", "cpu")  # what `auto` picks first


def _npu_available() -> bool:
    if importlib.util.find_spec("torch_npu") is None:
        return False
    import torch_npu  # noqa: F401  (registers the npu device with torch)
    return bool(torch.npu.is_available())


def _check_generator_state(state: dict[str, np.ndarray], key: str, size: int | None) -> None:
    """HarnessError unless ``state[key]`` is a 1-D uint8 array (of ``size`` bytes, where given)."""
    value = state.get(key)
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 1 \
            or (size is not None and value.size != size):
        got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else "missing"
        raise HarnessError(f"rng/{key} is {got}, expected {size or 'a 1-D array of'} uint8 bytes: torch's generator "
                           "state as the run saved it")


class PyTorchBackend:
    """The Backend protocol for PyTorch (see harness/backend.py)."""

    name = "pytorch"
    checkpoint_suffix = ".pt"

    def devices(self) -> list[str]:
        found = ["cpu"]
        if torch.cuda.is_available():
            found.append("cuda")
        if _npu_available():
            found.append("npu")
        return found

    def resolve_device(self, device: str) -> str:
        usable = self.devices()
        if device == "auto":
            return next(d for d in _PREFERENCE if d in usable)
        kind = device.split(":")[0]
        if kind not in usable:
            why = {"cuda": "torch.cuda.is_available() is False (CPU-only torch build or no GPU)",
                   "npu": "torch_npu is not installed or sees no Ascend device"}.get(kind, "not a PyTorch device")
            raise BackendUnavailable(
                f"device {device!r} is not usable by pytorch here: {why}; usable devices: {', '.join(usable)}, or auto")
        return device

    def versions(self) -> dict[str, str]:
        # Which code draws Dropout's noise on a CPU: the same bits either way, at another speed (noise.py).
        return {"torch": torch.__version__, "numpy": np.__version__, "torch_threads": str(torch.get_num_threads()),
                "dropout_noise": "bernoulli.c" if native_draw_ready() else "torch"}

    def build(self, spec: ModelSpec, device: str) -> _build.TorchModel:
        return _build.build(spec, torch.device(device))

    def set_weights(self, model, weights) -> None:
        _build.set_weights(model, weights)

    def get_weights(self, model) -> dict[str, np.ndarray]:
        return _build.get_weights(model)

    def make_trainer(self, model, train: TrainConfig, decay_names: set[str]) -> TorchTrainer:
        return TorchTrainer(model, train, decay_names)

    def rng_state(self, model) -> dict[str, np.ndarray]:
        cpu = model.rng_taken if model.rng_taken is not None else torch.get_rng_state()
        state = {"torch_cpu": cpu.numpy().copy()}
        if model.device.type == "cuda":  # dropout on a GPU draws from that device's generator
            state["torch_cuda"] = torch.cuda.get_rng_state(model.device).numpy().copy()
        return state

    def set_rng_state(self, model, state: dict[str, np.ndarray]) -> None:
        """Restore ``rng_state``'s output; HarnessError naming the array unless it is what torch wrote."""
        # A generator state is a fixed number of bytes (5056 for the CPU's Mersenne Twister); anything else was
        # edited, and torch would either refuse it with a long message or, cast from floats, take garbage.
        _check_generator_state(state, "torch_cpu", torch.get_rng_state().numel())
        on_cuda = model.device.type == "cuda"
        if "torch_cuda" in state:  # a run begun on a GPU may resume on the CPU: then the GPU's state is unused
            _check_generator_state(state, "torch_cuda",
                                   torch.cuda.get_rng_state(model.device).numel() if on_cuda else None)
        try:
            torch.set_rng_state(torch.from_numpy(state["torch_cpu"].copy()))
            model.rng_taken = None
            if "torch_cuda" in state and on_cuda:
                torch.cuda.set_rng_state(torch.from_numpy(state["torch_cuda"].copy()), model.device)
        except RuntimeError as error:  # the right size, but a state torch's generator rejects
            raise HarnessError(f"rng state refused by torch ({one_line(error, 200)})") from None

    def predict(self, model, x: np.ndarray, batch_size: int) -> np.ndarray:
        return _forward.predict(model, x, batch_size)

    def activations(self, model, x: np.ndarray, train: bool = False) -> dict[str, np.ndarray]:
        return _forward.activations(model, x, train)

    def save(self, model, path: Path) -> None:
        torch.save(model.module.state_dict(), path)

    def load(self, spec: ModelSpec, path: Path, device: str) -> _build.TorchModel:
        model = self.build(spec, device)
        expected = "expected a model.pt written by harness run"
        try:
            # weights_only: a .pt is a pickle; only tensors and plain containers may come out of it.
            state = torch.load(path, map_location=device, weights_only=True)
        except pickle.UnpicklingError:  # weights_only refused a global: the file would have run code
            raise HarnessError(f"refusing to load {path}: it holds pickled objects other than tensors; "
                               f"{expected}") from None
        except Exception as error:  # noqa: BLE001 - torch.load reports corrupt files as many unrelated types
            raise HarnessError(f"cannot load {path} ({one_line(error, 300)}); {expected}") from None
        try:
            model.module.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError, KeyError, ValueError) as error:  # not this model's state
            raise HarnessError(f"{path} does not hold {spec.name}'s weights ({one_line(error, 300)}); "
                               f"{expected} with the matching --model") from None
        return model

    def export_onnx(self, model, path: Path, batch_size: int | None = None) -> Path:
        return _export_onnx(model, path, batch_size)

    def bare_loop(self, model, x: np.ndarray, y: np.ndarray, learning_rate: float, momentum: float) -> _bare.BareLoop:
        return _bare.BareLoop(model, x, y, learning_rate, momentum)

    def threads(self) -> int:
        return _bare.threads()

    def set_threads(self, count: int) -> None:
        _bare.set_threads(count)


BACKEND = PyTorchBackend()
