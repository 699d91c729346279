"""What a run's ``model`` setting means, in one place: a registry name, ``PATH.onnx`` or ``SPEC.json``.

``model_spec`` gives the spec, ``native_shape`` the images it was made for (synthetic data is drawn at that
shape), ``initial_weights`` the weights a run starts from: an imported model's own initializers, else the
harness's seeded ones. A file is read again at each use and checked against the digest its run recorded
(``RunConfig.model_sha256``), so a run never silently trains a file that changed under it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import RunConfig, is_model_file, model_file_digest, printable
from ..errors import HarnessError
from .spec import ModelSpec, Shape
from .specfile import load_spec
from .weights import Weights, init_weights
from .zoo import MODELS, build_model

# The last file imported, by path and digest: a run asks for the spec and then the weights of one file.
_IMPORTED: dict[tuple[str, str], tuple[ModelSpec, Weights]] = {}


def model_spec(model: str, channels: int | None = None, num_classes: int | None = None, activation: str | None = None,
               pool: str | None = None, init: str = "default", sha256: str | None = None) -> ModelSpec:
    """The spec of the ``model`` setting.

    Args:
        model: a registry name, a ``.onnx`` file or a ``.json`` spec file.
        channels: the data's channels (None: the registry model's own); a file fixes its own.
        num_classes: the data's classes (None: 10 for a registry model); a file's must equal it.
        activation: override a registry model's nonlinearity; refused for a file.
        pool: override a registry model's pooling; refused for a file.
        init: a registry model's initialisation; a file brings its own.
        sha256: the digest the run recorded for the file (None: whatever it holds now).

    Raises:
        HarnessError: an unknown model or option, a file that cannot be read or has changed, or classes
            that differ from the file's.
    """
    if not is_model_file(model):
        entry = MODELS.get(model)
        return build_model(model, channels if channels is not None else (entry.channels if entry else 1),
                           num_classes if num_classes is not None else 10, activation, pool, init)
    given = [f"--{key} {value}" for key, value in (("activation", activation), ("pool", pool)) if value is not None]
    given += [f"--init {init}"] if init != "default" else []
    if given:
        raise HarnessError(f"{' and '.join(given)} change a registry model; {printable(model)} brings its own layers"
                           f"{' and weights' if model.lower().endswith('.onnx') else ''}: leave them out")
    spec = _file_spec(model, sha256)
    if num_classes is not None and num_classes != spec.num_classes:
        raise HarnessError(f"{printable(model)} ends in {spec.num_classes} classes but the dataset has {num_classes}; "
                           f"pick a dataset with {spec.num_classes} classes")
    return spec


def native_shape(model: str, sha256: str | None = None) -> Shape:
    """(C, H, W) the model was made for: a registry entry's, or the file's input shape."""
    if is_model_file(model):
        return _file_spec(model, sha256).input_shape
    entry = MODELS.get(model)
    return (entry.channels, entry.size, entry.size) if entry else (1, 28, 28)


def initial_weights(model: str, spec: ModelSpec, seed: int, ulps: int = 0, sha256: str | None = None) -> Weights:
    """The weights a run of ``spec`` starts from.

    Args:
        model: the ``model`` setting ``spec`` came from.
        spec: the spec (parity's, without Dropout, too: a Dropout has no tensors).
        seed: the run seed (unused by an imported model, whose weights are its file's).
        ulps: move every trainable value this many float32 steps up (compare's control run), as
            ``init_weights`` does for the harness's own weights.
        sha256: the digest the run recorded for the file.

    Returns:
        float32 arrays by canonical name, in ``spec.param_shapes()`` order.
    """
    if not model.lower().endswith(".onnx"):
        return init_weights(spec, seed, ulps)
    _, imported = _import(model, sha256)
    weights = {name: imported[name].copy() for name in spec.param_shapes()}
    for name in spec.trainable_names() if ulps else ():
        for _ in range(ulps):
            weights[name] = np.nextafter(weights[name], np.float32(np.inf))
    return weights


def run_initial_weights(config: RunConfig, spec: ModelSpec) -> Weights:
    """``initial_weights`` for a run's settings: its model, seed, control step and recorded file digest."""
    return initial_weights(config.model.model, spec, config.train.seed, config.model.init_ulps, config.model_sha256)


def _file_spec(model: str, sha256: str | None) -> ModelSpec:
    if model.lower().endswith(".onnx"):
        return _import(model, sha256)[0]
    _check_digest(model, sha256)
    return load_spec(Path(model))


def _check_digest(model: str, sha256: str | None) -> str:
    digest = model_file_digest(model)
    if sha256 is not None and digest != sha256:
        raise HarnessError(f"{printable(model)} has changed since this run's settings were made (sha256 {sha256[:12]}... "
                           f"then, {digest[:12]}... now); restore the file, or start a new run from it")
    return digest


def _import(model: str, sha256: str | None) -> tuple[ModelSpec, Weights]:
    from .onnx_import import import_onnx  # onnx's parser only where a model file is imported

    key = (str(Path(model).resolve()), _check_digest(model, sha256))
    if key not in _IMPORTED:
        _IMPORTED.clear()  # one file at a time: a large model's weights are not kept twice
        _IMPORTED[key] = import_onnx(model)
    return _IMPORTED[key]
