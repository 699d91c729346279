"""ONNX Runtime: run any exported .onnx (also as an evaluator) and summarise its graph, whatever the exporter."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import HarnessError


def session(path: Path, threads: int | None = None):
    """An ONNX Runtime CPU session for the model in ``path``.

    Args:
        path: the .onnx file.
        threads: intra-op threads; None leaves ONNX Runtime's default (one per physical core).

    Raises:
        HarnessError: ONNX Runtime cannot load the file.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's business
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # the default, said explicitly
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors for corrupt files
        raise HarnessError(f"ONNX Runtime cannot load {path}: {str(error).splitlines()[0]}; re-export the model") from None


def run_session(sess, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of ``x`` from an open session, batch by batch (float32); a fixed batch axis wins over ``batch_size``."""
    name = sess.get_inputs()[0].name
    fixed = sess.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) else batch_size
    outputs = []
    for start in range(0, len(x), step):
        chunk = np.ascontiguousarray(x[start:start + step], dtype=np.float32)
        if isinstance(fixed, int) and len(chunk) < fixed:  # a user's export with a fixed batch: pad the last one
            chunk = np.concatenate([chunk, np.zeros((fixed - len(chunk), *chunk.shape[1:]), np.float32)])
        outputs.append(sess.run(None, {name: chunk})[0][:len(x) - start])
    return np.concatenate(outputs).astype(np.float32, copy=False)


def run_onnx(path: Path, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of ``x`` from the model in ``path``, batch by batch (float32)."""
    return run_session(session(path), x, batch_size)


def graph_summary(path: Path) -> dict:
    """Opset, IR version, inputs/outputs with shapes, node count and op histogram."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as error:  # onnx raises several unrelated types for corrupt files
        raise HarnessError(f"{path} is not a valid ONNX model: {str(error).splitlines()[0]}; re-export it") from None

    def shape(value) -> str:
        dims = value.type.tensor_type.shape.dim
        return "x".join(d.dim_param or str(d.dim_value) for d in dims)

    ops = Counter(node.op_type for node in model.graph.node)
    return {
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0),
        "ir_version": model.ir_version,
        "inputs": ";".join(f"{v.name}[{shape(v)}]" for v in model.graph.input),
        "outputs": ";".join(f"{v.name}[{shape(v)}]" for v in model.graph.output),
        "num_nodes": len(model.graph.node),
        "ops": dict(sorted(ops.items())),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }


class OnnxEvaluator:
    """An .onnx file in ONNX Runtime (CPU): logits only, the graph's inner outputs are not exposed."""

    exact = False
    has_layers = False

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = Path(path), name
        self.provenance = f"onnxruntime on {self.path}"
        self._session = None

    def logits(self, x: np.ndarray) -> np.ndarray:
        if self._session is None:  # opened on first use: a recorded run may never need it
            self._session = session(self.path)
        return run_session(self._session, x)

    def activations(self, x: np.ndarray) -> None:
        return None
