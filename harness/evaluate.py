"""The cross-check matrix: every evaluator of every run, paired, judged, and tabulated.

Evaluators (all on the same prepared test images): ``<backend>:native`` and
``<backend>:onnxruntime`` from the run itself, ``reference:float64[<b> weights]``
(numpy float64 forward of the spec, on a subset for big models), and
``<other>[<b> weights]`` (the other framework running b's trained weights).
Same-weights pairs must agree within a tolerance; two trained runs must agree
in accuracy within a band.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import reference
from .backend import get_backend
from .compare import confusion_matrix, first_divergent_layer, pair_metrics, trained_pair
from .config import RunConfig
from .data import Dataset
from .errors import HarnessError
from .loop import EVAL_BATCH_SIZE
from .onnxcheck import graph_summary
from .runs import read_run_config, read_run_info
from .spec import Activation, ModelSpec, Pool
from .tolerances import Tolerance, tolerance, value
from .weights import load_weights

REFERENCE_IMAGES_BIG_MODEL = 512  # float64 numpy VGG11 is slow: a fixed subset suffices as a referee
BIG_MODEL_PARAMS = 1_000_000
DIVERGENCE_IMAGES = 8
PREDICTION_KEYS = ("labels", "logits_native", "logits_onnx")  # what the runner writes to predictions.npz


@dataclass
class LoadedRun:
    """A completed run folder, read back."""

    run_dir: Path
    info: dict
    config: RunConfig
    weights: dict[str, np.ndarray]
    predictions: dict[str, np.ndarray]
    metrics: pd.DataFrame  # metrics.csv, read up front so a broken file fails before any evaluation


def load_run(run_dir: Path, spec: ModelSpec) -> LoadedRun:
    """Read a run folder's config, weights and predictions, or raise HarnessError naming the broken file."""
    info, config = read_run_info(run_dir), read_run_config(run_dir)
    weights = load_weights(spec, run_dir / "weights.npz")
    try:
        with np.load(run_dir / "predictions.npz", allow_pickle=False) as archive:
            predictions = {k: archive[k] for k in archive.files}
    # As in load_weights: a bare .npy is no context manager (TypeError), a truncated zip a BadZipFile.
    except (OSError, ValueError, EOFError, TypeError, zipfile.BadZipFile) as error:
        raise HarnessError(f"{run_dir}/predictions.npz is unreadable ({error}); re-run with --fresh") from None
    # np.load hands a zip member that is not a .npy (e.g. a torch.save'd data.pkl) back as raw bytes.
    missing = [key for key in PREDICTION_KEYS if not isinstance(predictions.get(key), np.ndarray)]
    if missing:
        raise HarnessError(f"{run_dir}/predictions.npz lacks the array(s) {', '.join(missing)}; "
                           "re-run with --fresh")
    try:
        metrics = pd.read_csv(run_dir / "metrics.csv")
    # pandas' ParserError and EmptyDataError, and UnicodeDecodeError for binary bytes, are ValueErrors.
    except (OSError, ValueError) as error:
        message = " ".join(str(error).split())
        raise HarnessError(f"{run_dir}/metrics.csv is unreadable ({message}); re-run with --fresh") from None
    return LoadedRun(run_dir, info, config, weights, predictions, metrics)


@dataclass
class Matrix:
    """Collected rows and raw differences while evaluating."""

    spec: ModelSpec
    dataset: Dataset
    rows: list[dict] = field(default_factory=list)
    diffs: dict[str, np.ndarray] = field(default_factory=dict)
    class_rows: list[dict] = field(default_factory=list)
    confusion_rows: list[dict] = field(default_factory=list)

    def add_pair(self, name_a: str, a: np.ndarray, name_b: str, b: np.ndarray, kind: str,
                 divergence=None) -> None:
        tol = tolerance(kind)
        row = {"kind": "same-weights", "evaluator_a": name_a, "evaluator_b": name_b,
               **pair_metrics(a, b, tol), "status": "ok"}
        if not row["passed"] and divergence is not None:
            row["first_divergent_layer"] = divergence(_worst_images(a, b, tol))
        self.rows.append(row)
        self.diffs[f"{name_a} vs {name_b}"] = np.abs(a.astype(np.float64) - b).ravel()

    def add_classes(self, backend: str, evaluator: str, logits: np.ndarray) -> None:
        labels, classes = self.dataset.test_y, self.dataset.info.classes
        counts = confusion_matrix(logits, labels, len(classes))
        for i, name in enumerate(classes):
            n = int(counts[i].sum())
            self.class_rows.append({"backend": backend, "evaluator": evaluator, "class_index": i,
                                    "class_name": name, "n": n, "correct": int(counts[i, i]),
                                    "accuracy": counts[i, i] / n if n else float("nan")})
            self.confusion_rows += [{"backend": backend, "evaluator": evaluator, "true_class": i,
                                     "predicted_class": j, "count": int(counts[i, j])} for j in range(len(classes))]


def _reference_count(spec: ModelSpec, n: int) -> int:
    return min(n, REFERENCE_IMAGES_BIG_MODEL) if spec.num_params > BIG_MODEL_PARAMS else n


def _worst_images(a: np.ndarray, b: np.ndarray, tol: Tolerance) -> np.ndarray:
    """Indices of the DIVERGENCE_IMAGES images whose logits exceed ``tol`` the most (NaN first)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    excess = np.abs(a64 - b64) - (tol.atol + tol.rtol * np.abs(b64))
    excess[~np.isfinite(excess)] = np.inf
    return np.sort(np.argsort(-excess.max(axis=1), kind="stable")[:DIVERGENCE_IMAGES])


@dataclass(frozen=True)
class _Side:
    """One side of a pair for the layer search: its evaluator name and its per-layer outputs."""

    name: str
    acts: Callable[[np.ndarray], dict[str, np.ndarray]]
    float64: bool = False  # the reference: exact by definition, no own error to look for


def _layer_divergence(spec: ModelSpec, weights: dict, x: np.ndarray, candidate: _Side, referee: _Side):
    """A deferred search (only run for failed pairs) over the images it is given: the first layer
    beyond the layer tolerance and, when that is not where it starts, the layer with the largest
    own error (its float32 output against float64 of its own input)."""
    names, tol = [layer.name for layer in spec.layers], tolerance("layer")
    kinds = {layer.name: layer.kind for layer in spec.layers if isinstance(layer, (Activation, Pool))}

    def search(rows: np.ndarray) -> str:
        xs = x[rows]
        acts = {side.name: side.acts(xs) for side in (candidate, referee)}
        found = first_divergent_layer(names, acts[candidate.name], acts[referee.name], tol)
        if found is None:
            return "none when recomputed from weights.npz: the saved logits do not come from these weights"
        own = max(({**row, "side": side.name} for side in (candidate, referee) if not side.float64
                   for row in reference.own_errors(spec, weights, xs, acts[side.name], tol.atol, tol.rtol)),
                  key=lambda row: row["ratio"])
        text = f"{found['layer']} (max_abs {found['max_abs']:.2e})"
        if own["layer"] == found["layer"]:
            return text
        kind = kinds.get(own["layer"])
        return (f"{text}; largest own error: {own['layer']}{f' ({kind})' if kind else ''} in {own['side']}, "
                f"{own['max_abs']:.2e} from float64 on its own input")
    return search


def _same_weights(m: Matrix, name: str, run: LoadedRun, others: dict) -> None:
    """All pairs that share run ``name``'s trained weights."""
    spec, x = m.spec, m.dataset.test_x
    native, onnx = run.predictions["logits_native"], run.predictions["logits_onnx"]
    count = _reference_count(spec, len(x))
    ref = reference.predict(spec, run.weights, x[:count])
    ref_name = f"reference:float64[{name} weights]"
    referee = _Side(ref_name, lambda xs: reference.forward(spec, run.weights, xs, collect=True)[1], float64=True)
    own_backend = get_backend(name)
    own_model = own_backend.build(spec, "cpu")
    own_backend.set_weights(own_model, run.weights)
    own = _Side(f"{name}:native", lambda xs: own_backend.activations(own_model, xs))
    search = lambda candidate, against: _layer_divergence(spec, run.weights, x, candidate, against)  # noqa: E731
    m.add_pair(f"{name}:onnxruntime", onnx, f"{name}:native", native, "onnx")
    m.add_pair(f"{name}:native", native[:count], ref_name, ref, "reference", search(own, referee))
    m.add_pair(f"{name}:onnxruntime", onnx[:count], ref_name, ref, "reference")
    for other_name, other in others.items():
        model = other.build(spec, "cpu")
        other.set_weights(model, run.weights)
        cross = other.predict(model, x, EVAL_BATCH_SIZE)
        label = f"{other_name}[{name} weights]"
        cross_side = _Side(label, lambda xs, o=other, mo=model: o.activations(mo, xs))
        m.add_pair(label, cross, f"{name}:native", native, "cross", search(cross_side, own))
        m.add_pair(label, cross[:count], ref_name, ref, "reference", search(cross_side, referee))


def _trained_rows(m: Matrix, runs: dict[str, LoadedRun], controls: dict[str, LoadedRun]) -> None:
    """Accuracy band and prediction agreement of every pair of trained runs. Where run a has a control
    (a's config from initial weights one float32 step away), the agreement floor follows how much that
    alone changes a's predictions."""
    names = list(runs)
    band, min_agree = value("trained", "accuracy_band"), value("trained", "min_top1_agree")
    factor = value("trained", "control_factor")
    labels = m.dataset.test_y
    for i, a in enumerate(names):
        control = trained_pair(runs[a].predictions["logits_native"], controls[a].predictions["logits_native"],
                               labels)["top1_agree"] if a in controls else float("nan")
        floor = min_agree if np.isnan(control) else min(min_agree, 1 - factor * (1 - control))
        for b in names[i + 1:]:
            stats = trained_pair(runs[a].predictions["logits_native"], runs[b].predictions["logits_native"], labels)
            passed = abs(stats["accuracy_delta"]) <= band and stats["top1_agree"] >= floor
            m.rows.append({"kind": "trained", "evaluator_a": f"{a}:native", "evaluator_b": f"{b}:native",
                           **stats, "control_top1_agree": control, "min_top1_agree": floor, "passed": passed,
                           "status": "ok"})


def _run_row(name: str, run: LoadedRun | str) -> dict:
    if isinstance(run, str):
        return {"backend": name, "status": "error", "error": run}
    keys = ("run_id", "backend", "device", "model", "dataset", "num_params", "epochs", "train_loss",
            "test_accuracy", "onnx_test_accuracy", "train_seconds", "images_per_s", "infer_native_images_per_s",
            "infer_onnx_images_per_s", "status")
    return {**{k: run.info.get(k) for k in keys}, "versions": json.dumps(run.info.get("versions", {}))}


def _graph_rows(name: str, run: LoadedRun) -> list[dict]:
    summary = graph_summary(run.run_dir / "model.onnx")
    ops = summary.pop("ops")
    return [{"backend": name, "run_id": run.info["run_id"], **summary, "op_type": op, "count": n}
            for op, n in ops.items()]


def _curve_rows(name: str, run: LoadedRun) -> pd.DataFrame:
    return run.metrics.assign(backend=name, run_id=run.info["run_id"])


def evaluate(spec: ModelSpec, dataset: Dataset, runs: dict[str, LoadedRun | str],
             controls: dict[str, LoadedRun] | None = None) -> tuple[dict, dict]:
    """The whole matrix for runs of one config.

    Args:
        spec: the model all runs share.
        dataset: the prepared test data all runs were evaluated on.
        runs: backend name -> its loaded run, or the error message of a backend that failed.
        controls: backend name -> its control run (``init_ulps`` one higher), where one was trained.

    Returns:
        (tables by report name, |difference| arrays by pair label).
    """
    ok = {name: run for name, run in runs.items() if not isinstance(run, str)}
    m = Matrix(spec, dataset)
    for name, run in ok.items():
        others = {o: get_backend(o) for o in ok if o != name}
        _same_weights(m, name, run, others)
        m.add_classes(name, f"{name}:native", run.predictions["logits_native"])
    _trained_rows(m, ok, controls or {})
    for name, run in runs.items():
        if isinstance(run, str):
            m.rows.append({"kind": "run", "evaluator_a": f"{name}:native", "status": "error", "error": run,
                           "passed": False})
    tables = {
        "runs": pd.DataFrame([_run_row(n, r) for n, r in runs.items()]),
        "agreement": pd.DataFrame(m.rows).assign(model=spec.name, dataset=dataset.info.name),
        "curves": pd.concat([_curve_rows(n, r) for n, r in ok.items()], ignore_index=True) if ok else pd.DataFrame(),
        "per_class": pd.DataFrame(m.class_rows),
        "confusion": pd.DataFrame(m.confusion_rows),
        "onnx_graphs": pd.DataFrame([row for n, r in ok.items() for row in _graph_rows(n, r)]),
    }
    return tables, m.diffs
