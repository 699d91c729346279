"""Native checkpoints (.ckpt) and ONNX export for the MindSpore backend."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import mindspore as ms
import numpy as np

from harness.errors import HarnessError, one_line

from .build import MsModel, build, get_weights, set_weights

# The mode of a plain new file (0o666 & ~umask), as harness.runs.files gives every other file of a run folder.
# os.umask can only be read by setting it: restored at once, at import, like harness.runs.files does.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


def _write_exact(path: Path, suffix: str, writer: Callable[[str], None]) -> Path:
    """Run ``writer`` on a name ending in ``suffix`` and move the file to ``path``.

    MindSpore's writers append their suffix to a name that lacks it; the harness
    may ask for any name (e.g. a temporary file), so write beside it and rename.
    """
    path = Path(path)
    if path.suffix == suffix:
        writer(str(path))
        return path
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_checkpoint(model: MsModel, path: Path) -> None:
    """MindSpore's own checkpoint of every Parameter of the net, BatchNorm statistics included."""
    _write_exact(path, ".ckpt", lambda name: ms.save_checkpoint(model.net, name))
    # ms.save_checkpoint chmods its file 0400 (mindspore/train/serialization.py:473, _exec_save): give the usual mode.
    os.chmod(path, _FILE_MODE)


def _parse_checkpoint(file: Path, shown: Path) -> dict:
    """ms.load_checkpoint of ``file``, a HarnessError naming ``shown`` (the user's file) if it fails."""
    try:
        return ms.load_checkpoint(str(file), format="ckpt")
    # MindSpore raises ValueError for an unparsable or empty file, naming the (maybe temporary) file it read.
    except (OSError, ValueError, RuntimeError, TypeError) as error:
        reason = " ".join(str(error).replace(str(file), str(shown)).split()) or "no reason given"
        raise HarnessError(f"cannot load {shown} as a MindSpore checkpoint ({type(error).__name__}: {reason}); "
                           "expected a model.ckpt written by harness run") from None


def _read_checkpoint(path: Path) -> dict:
    """ms.load_checkpoint of any file name (it insists on a name ending in .ckpt).

    Raises:
        HarnessError: the file is missing or not a MindSpore checkpoint.
    """
    if path.suffix == ".ckpt":
        return _parse_checkpoint(path, path)
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "model.ckpt"
        try:
            shutil.copyfile(path, copy)
        except OSError as error:
            raise HarnessError(f"cannot read {path} ({error.strerror or error}); "
                               "expected a model.ckpt written by harness run") from None
        return _parse_checkpoint(copy, path)


def load_checkpoint(model: MsModel, path: Path) -> None:
    """Fill ``model`` from ``save_checkpoint``'s file; every parameter must be present.

    A .ckpt is a protobuf of named tensors (``format='ckpt'``), parsed, never
    unpickled: loading it cannot run code. ``choice_func`` is left unset and no
    decryption is asked for.
    """
    params = _read_checkpoint(Path(path))
    expected = {param.name for param in model.net.get_parameters()}
    missing, unexpected = sorted(expected - set(params)), sorted(set(params) - expected)
    if missing or unexpected:
        raise HarnessError(f"{path} does not hold {model.spec.name}'s weights: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}; it was written for another model: pass the matching --model")
    try:
        not_loaded, _ = ms.load_param_into_net(model.net, params, strict_load=True)
    except (RuntimeError, ValueError, TypeError) as error:  # e.g. same names, other shapes (another --model)
        raise HarnessError(f"{path} does not hold {model.spec.name}'s weights ({one_line(error, 300)}); "
                           "pass the matching --model") from None
    if not_loaded:
        raise HarnessError(f"{path}: could not load {not_loaded[:5]} into {model.spec.name}")


def export_onnx(model: MsModel, path: Path, batch_size: int | None = None) -> Path:
    """Write ``path`` with input ``x`` and output ``logits`` in eval mode.

    Args:
        model: the model to export.
        path: the .onnx file to write.
        batch_size: a fixed batch size, or None for a dynamic ``batch`` axis on ``x``.
    """
    # A fresh copy of the net: the ONNX converter alters the graph it compiles, and a second export of the
    # same Cell with the same input shape reuses that graph and fails; the trained net stays untouched.
    clone = build(model.spec, model.device)
    set_weights(clone, get_weights(model))
    clone.net.set_train(False)  # mindspore.onnx.export does it too; explicit: the eval graph is exported
    example = ms.Tensor(np.zeros((batch_size or 1, *model.spec.input_shape), np.float32))
    dynamic = {"x": {0: "batch"}} if batch_size is None else None
    # mindspore.onnx.export, not the deprecated ms.export (opset 11, static batch only).
    _write_exact(path, ".onnx", lambda name: ms.onnx.export(
        clone.net, example, file_name=name, input_names=["x"], output_names=["logits"],
        export_params=True, keep_initializers_as_inputs=False, dynamic_axes=dynamic))
    _fix_onnx_metadata(Path(path), dynamic_batch=batch_size is None)
    return Path(path)


def _fix_onnx_metadata(path: Path, dynamic_batch: bool) -> None:
    """Name the real MindSpore version as the producer and, for a dynamic batch, declare it on ``logits`` too.

    MindSpore's C++ exporter writes producer "MindSpore" "1.0" whatever its version
    (``OnnxExporter::InitModelInfo`` in mindspore/ccsrc/transform/express_ir/onnx_exporter.cc).
    mindspore.onnx.export applies dynamic_axes to inputs only and declares the output with the
    example's batch (1); ONNX Runtime then warns on every other batch size.

    Args:
        path: the .onnx file mindspore.onnx.export wrote; rewritten in place.
        dynamic_batch: whether ``x`` has a dynamic ``batch`` axis that ``logits`` should share.
    """
    import onnx  # pylint: disable=import-outside-toplevel  (a harness dependency; only needed here)

    proto = onnx.load(str(path))
    proto.producer_name, proto.producer_version = "MindSpore", ms.__version__
    if dynamic_batch:
        for output in proto.graph.output:
            first = output.type.tensor_type.shape.dim[0]
            first.Clear()
            first.dim_param = "batch"
    onnx.save(proto, str(path))
