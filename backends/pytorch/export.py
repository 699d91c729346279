"""ONNX export with torch.onnx's dynamo exporter: one self-contained file, dynamic batch."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings
from pathlib import Path

import torch

from .build import TorchModel

# torch.export traces through process-wide dynamo state: two exports at once in one process corrupt
# each other's guards, so runs that share a process (threads) take turns here.
_EXPORT_LOCK = threading.Lock()


def export_onnx(model: TorchModel, path: Path, batch_size: int | None = None) -> Path:
    """Write ``path`` with input ``x`` and output ``logits``, eval mode.

    Args:
        model: the model to export.
        path: the .onnx file to write.
        batch_size: a fixed batch size, or None for a dynamic ``batch`` axis.
    """
    module = model.module
    was_training = module.training
    module.eval()
    example = torch.zeros((batch_size or 2, *model.spec.input_shape), device=model.device)
    dynamic = None if batch_size else ({0: torch.export.Dim("batch")},)
    try:
        with _EXPORT_LOCK:
            program = _export(module, example, dynamic)
        program.save(str(path), external_data=False)
    finally:
        module.train(was_training)
    return Path(path)


def _export(module: torch.nn.Module, example: torch.Tensor, dynamic) -> torch.onnx.ONNXProgram:
    # The exporter narrates each phase and warns about absent torchvision ops: keep the CLI to one line.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        return torch.onnx.export(module, (example,), input_names=["x"], output_names=["logits"],
                                 dynamic_shapes=dynamic, dynamo=True, external_data=False, verbose=False)
