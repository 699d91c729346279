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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..backend import Backend, backend_names, get_backend
from ..config import RunConfig
from ..data.fit import Dataset
from ..errors import HarnessError
from ..evaluators.base import Evaluator, Recorded
from ..evaluators.float64 import Float64Evaluator
from ..evaluators.native import NativeEvaluator
from ..evaluators.onnxrt import OnnxEvaluator, graph_summary
from ..model.resolve import initial_weights
from ..model.spec import ModelSpec
from ..model.weights import Weights, load_weights
from ..runs.arrays import READ_ERRORS, read_arrays
from ..runs.folder import read_run_config, read_run_info
from ..tolerances import Tolerance, policies
from .divergence import describe_divergence, worst_images
from .metrics import above_chance_p, confusion_matrix, learned_fraction, pair_metrics, trained_pair

REFERENCE_IMAGES_BIG_MODEL = 512  # float64 numpy VGG11 is slow: a fixed subset suffices as a referee
BIG_MODEL_PARAMS = 1_000_000
PROBE_IMAGES = 64  # random inputs per same-weights pair, on top of the test images
PROBE_SEED = 0x9_20BE
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
    graph: dict  # model.onnx's summary (graph_summary), checked up front for the same reason


def _check_predictions(run_dir: Path, predictions: dict, spec: ModelSpec, dataset: Dataset | None) -> None:
    """Raise HarnessError unless predictions.npz holds integer labels (N,) of the test set and float logits
    (N, classes): a short, string or scalar array would fail deep inside an evaluator pair instead."""
    where, fix = f"{run_dir}/predictions.npz", "re-run with --fresh (or pass folders written by `harness run`)"
    labels = predictions["labels"]
    count = len(dataset.test_y) if dataset is not None else (len(labels) if labels.ndim == 1 else -1)
    if labels.dtype.kind not in "iu" or labels.shape != (count,):
        raise HarnessError(f"{where}: labels should be integers of shape ({count},) (the test set's size), "
                           f"got {labels.dtype} {labels.shape}; {fix}")
    if count and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise HarnessError(f"{where}: labels span {labels.min()}..{labels.max()}, expected "
                           f"0..{spec.num_classes - 1}; {fix}")
    if dataset is not None and not np.array_equal(labels, dataset.test_y):
        raise HarnessError(f"{where}: labels differ from the test set's labels: the run was made on other data "
                           f"(another --data-dir?); {fix}")
    for key in PREDICTION_KEYS[1:]:
        logits = predictions[key]
        if logits.dtype.kind != "f" or logits.shape != (count, spec.num_classes):
            raise HarnessError(f"{where}: {key} should be floats of shape ({count}, {spec.num_classes}) "
                               f"(test images x classes), got {logits.dtype} {logits.shape}; {fix}")


def load_run(run_dir: Path, spec: ModelSpec, dataset: Dataset | None = None) -> LoadedRun:
    """Read a run folder's config, weights, predictions, metrics and ONNX graph, or raise HarnessError naming
    the broken file.

    Args:
        run_dir: the run folder.
        spec: the model the run must hold.
        dataset: the prepared test set the predictions must match (None: only their own consistency is checked).
    """
    config = read_run_config(run_dir)
    weights = load_weights(spec, run_dir / "weights.npz")
    try:
        # Checked against (N,) and (N, classes) before any array is read: a header claiming 2**40 logits or a
        # deflate bomb is refused by its claim, not by running out of memory.
        predictions = read_arrays(run_dir / "predictions.npz", {
            "labels": ((None,), None), **{key: ((None, spec.num_classes), None) for key in PREDICTION_KEYS[1:]}})
    except READ_ERRORS as error:
        raise HarnessError(f"{run_dir}/predictions.npz is unreadable ({error}); re-run with --fresh") from None
    missing = [key for key in PREDICTION_KEYS if key not in predictions]  # read_arrays gives arrays or refuses
    if missing:
        raise HarnessError(f"{run_dir}/predictions.npz lacks the array(s) {', '.join(missing)}; "
                           "re-run with --fresh")
    _check_predictions(run_dir, predictions, spec, dataset)
    try:
        metrics = pd.read_csv(run_dir / "metrics.csv")
    # pandas' ParserError and EmptyDataError, and UnicodeDecodeError for binary bytes, are ValueErrors.
    except (OSError, ValueError) as error:
        message = " ".join(str(error).split())
        raise HarnessError(f"{run_dir}/metrics.csv is unreadable ({message}); re-run with --fresh") from None
    # run.json after the arrays: callers (compare --runs, report) have read it once already, so a broken array
    # is the news here; its fields are checked again before LoadedRun hands them on.
    info = read_run_info(run_dir, backend_names())
    return LoadedRun(run_dir, info, config, weights, predictions, metrics, graph_summary(run_dir / "model.onnx"))


@dataclass(frozen=True)
class Pair:
    """Two evaluators that share weights, the tolerance they are judged by, and the inputs they are judged on."""

    a: Evaluator
    b: Evaluator  # the reference side of the tolerance
    tolerance: Tolerance
    inputs: str  # "test": the prepared test images; "probe": random images matched to them (probe_inputs)
    count: int  # how many of those inputs


def probe_inputs(test_x: np.ndarray, count: int = PROBE_IMAGES) -> np.ndarray:
    """Random images with the test set's per-channel mean and standard deviation, fixed by ``PROBE_SEED``.

    A model that has not learned (or one that maps every test image to nearly the same logits) can make two
    evaluators agree on the test images while a layer is wrong; inputs spread like the data exercise every
    layer whatever the weights learned.
    """
    axes = (0, 2, 3)
    mean, std = test_x.mean(axis=axes, dtype=np.float64), test_x.std(axis=axes, dtype=np.float64)
    noise = np.random.default_rng(PROBE_SEED).standard_normal((count, *test_x.shape[1:]))
    return (noise * std[None, :, None, None] + mean[None, :, None, None]).astype(np.float32)


@dataclass
class Matrix:
    """Collected rows and raw differences while evaluating."""

    spec: ModelSpec
    dataset: Dataset
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # by Pair.inputs: "test", "probe"
    rows: list[dict] = field(default_factory=list)
    diffs: dict[str, np.ndarray] = field(default_factory=dict)
    class_rows: list[dict] = field(default_factory=list)
    confusion_rows: list[dict] = field(default_factory=list)

    def add_pairs(self, pairs: list[Pair], weights: Weights) -> None:
        """Judge every pair on its inputs, each evaluator run once per input set on the most images any pair needs.

        A failed pair of two evaluators that both give activations gets the layer where they part.
        """
        needed: dict[tuple[str, str], int] = {}
        for pair in pairs:
            for side in (pair.a, pair.b):
                key = (side.name, pair.inputs)
                needed[key] = max(needed.get(key, 0), pair.count)
        evaluators = {side.name: side for pair in pairs for side in (pair.a, pair.b)}
        logits = {(name, inputs): evaluators[name].logits(self.inputs[inputs][:count])
                  for (name, inputs), count in needed.items()}
        for pair in pairs:
            a, b = (logits[(side.name, pair.inputs)][:pair.count] for side in (pair.a, pair.b))
            row = {"kind": "same-weights", "evaluator_a": pair.a.name, "evaluator_b": pair.b.name,
                   "inputs": pair.inputs, **pair_metrics(a, b, pair.tolerance), "status": "ok"}
            if not row["passed"] and pair.a.has_layers and pair.b.has_layers:
                images = self.inputs[pair.inputs][worst_images(a, b, pair.tolerance)]
                row["first_divergent_layer"] = describe_divergence(self.spec, weights, images, pair.a, pair.b)
            self.rows.append(row)
            if pair.inputs == "test":  # logit_diffs.png draws the test images' differences
                self.diffs[f"{pair.a.name} vs {pair.b.name}"] = np.abs(a.astype(np.float64) - b).ravel()

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


def same_weights_pairs(spec: ModelSpec, dataset: Dataset, label: str, run: LoadedRun,
                       others: dict[str, Backend]) -> list[Pair]:
    """Every pair that shares run ``label``'s trained weights: its ONNX export against its native logits,
    both against float64, and each other backend running those weights against both; on the test images,
    then again on the probe inputs (``probe_inputs``).

    Args:
        others: label -> backend of every other run, to run this run's weights on.
    """
    x, n = dataset.test_x, len(dataset.test_x)
    count = _reference_count(spec, n)
    policy = policies()
    where = f"{run.run_dir}/predictions.npz"
    trained = f"{label}'s trained weights ({run.run_dir}/weights.npz)"
    native = Recorded(NativeEvaluator.build(get_backend(run.info["backend"]), spec, run.weights, f"{label}:native",
                                            trained), x, run.predictions["logits_native"], where)
    onnx = Recorded(OnnxEvaluator(run.run_dir / "model.onnx", f"{label}:onnxruntime"),
                    x, run.predictions["logits_onnx"], where)
    ref = Float64Evaluator(spec, run.weights, f"reference:float64[{label} weights]",
                           f"harness float64 numpy forward with {trained}")
    judged = [(onnx, native, policy.onnx, n), (native, ref, policy.reference, count),
              (onnx, ref, policy.reference, count)]
    for other_label, other in others.items():
        cross = NativeEvaluator.build(other, spec, run.weights, f"{other_label}[{label} weights]", trained)
        judged += [(cross, native, policy.cross, n), (cross, ref, policy.reference, count)]
    return ([Pair(a, b, tol, "test", size) for a, b, tol, size in judged]
            + [Pair(a, b, tol, "probe", PROBE_IMAGES) for a, b, tol, _ in judged])


def user_file_pairs(spec: ModelSpec, dataset: Dataset, config: RunConfig,
                    backends: dict[str, Backend]) -> tuple[list[Pair], Weights]:
    """For a model imported from the user's .onnx file: the file itself in ONNX Runtime against float64 and
    against every backend, all running the file's own weights (the runs' initial weights), on the test images
    and the probe inputs.

    The runs' own exports are the harness's graphs; this pair checks the translation against the graph the
    user exported, which is what a port must reproduce.

    Returns:
        The pairs (empty for a registry or JSON model) and the file's weights they share.
    """
    model = config.model.model
    if not model.lower().endswith(".onnx"):
        return [], {}
    weights = initial_weights(model, spec, config.train.seed, 0, config.model_sha256)
    source = f"the weights of {model}"
    n, count, policy = len(dataset.test_x), _reference_count(spec, len(dataset.test_x)), policies()
    user = OnnxEvaluator(Path(model), f"{Path(model).name}:onnxruntime")
    ref = Float64Evaluator(spec, weights, "reference:float64[file weights]",
                           f"harness float64 numpy forward with {source}")
    judged = [(user, ref, policy.reference, count)]
    for label, backend in backends.items():
        native = NativeEvaluator.build(backend, spec, weights, f"{label}[file weights]", source)
        judged += [(native, user, policy.cross, n), (native, ref, policy.reference, count)]
    return ([Pair(a, b, tol, "test", size) for a, b, tol, size in judged]
            + [Pair(a, b, tol, "probe", PROBE_IMAGES) for a, b, tol, _ in judged]), weights


def trained_rows(m: Matrix, runs: dict[str, LoadedRun], controls: dict[str, LoadedRun]) -> None:
    """Accuracy band and prediction agreement of every pair of trained runs. Where run a has a control
    (a's config from initial weights one float32 step away), the agreement floor follows how much that
    alone changes a's predictions."""
    names = list(runs)
    policy = policies().trained
    labels, classes = m.dataset.test_y, len(m.dataset.info.classes)
    for i, a in enumerate(names):
        control = trained_pair(runs[a].predictions["logits_native"], controls[a].predictions["logits_native"],
                               labels)["top1_agree"] if a in controls else float("nan")
        floor = policy.min_top1_agree if np.isnan(control) else \
            min(policy.min_top1_agree, 1 - policy.control_factor * (1 - control))
        for b in names[i + 1:]:
            stats = trained_pair(runs[a].predictions["logits_native"], runs[b].predictions["logits_native"], labels)
            passed = abs(stats["accuracy_delta"]) <= policy.accuracy_band and stats["top1_agree"] >= floor
            row = {"kind": "trained", "evaluator_a": f"{a}:native", "evaluator_b": f"{b}:native", "inputs": "test",
                   **stats, "control_top1_agree": control, "min_top1_agree": floor, "passed": passed, "status": "ok"}
            unlearned = [why for name, accuracy in ((a, stats["accuracy_a"]), (b, stats["accuracy_b"]))
                         if (why := not_learned(name, accuracy, stats["n"], classes))]
            if unlearned:
                row.update(passed=None, status="inconclusive",
                           reason="; ".join(unlearned) + ": agreement of models that have not learned says little "
                                  "about the port; train longer (--epochs) or on real data")
            m.rows.append(row)


def not_learned(name: str, accuracy: float, n: int, classes: int) -> str | None:
    """Why a trained model has not learned enough for a trained-pair verdict, or None when it has: it must beat
    chance (a one-sided binomial test at ``chance_alpha``) and close ``min_learned`` of the gap to 100%."""
    policy = policies().trained
    p_value = above_chance_p(round(accuracy * n), n, classes)
    if p_value >= policy.chance_alpha:
        return (f"{name}:native {accuracy:.2%} is not clearly above chance ({1 / classes:.2%}; binomial "
                f"p = {p_value:.2g} >= {policy.chance_alpha:g} over {n} test images)")
    floor = 1 / classes + policy.min_learned * (1 - 1 / classes)
    if learned_fraction(accuracy, classes) < policy.min_learned:
        return (f"{name}:native {accuracy:.2%} is under {floor:.2%} ({policy.min_learned:.0%} of the way from "
                f"chance to 100%)")
    return None


def _run_row(name: str, run: LoadedRun | str) -> dict:
    if isinstance(run, str):
        return {"backend": name, "status": "error", "error": run}
    keys = ("run_id", "backend", "device", "model", "dataset", "num_params", "epochs", "train_loss",
            "test_accuracy", "onnx_test_accuracy", "train_seconds", "images_per_s", "first_epoch_images_per_s",
            "infer_native_images_per_s", "infer_onnx_images_per_s", "load_average_start", "load_average_end",
            "other_cores_busy", "cores", "under_load", "status")
    return {**{k: run.info.get(k) for k in keys}, "versions": json.dumps(run.info.get("versions", {}))}


def _graph_rows(name: str, run: LoadedRun) -> list[dict]:
    summary = dict(run.graph)
    ops = summary.pop("ops")
    return [{"backend": name, "run_id": run.info["run_id"], **summary, "op_type": op, "count": n}
            for op, n in ops.items()]


def _curve_rows(name: str, run: LoadedRun) -> pd.DataFrame:
    return run.metrics.assign(backend=name, run_id=run.info["run_id"])


def cross_check(spec: ModelSpec, dataset: Dataset, runs: dict[str, LoadedRun | str],
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
    m = Matrix(spec, dataset, {"test": dataset.test_x, "probe": probe_inputs(dataset.test_x)})
    for name, run in ok.items():
        others = {o: get_backend(other.info["backend"]) for o, other in ok.items() if o != name}
        m.add_pairs(same_weights_pairs(spec, dataset, name, run, others), run.weights)
        m.add_classes(name, f"{name}:native", run.predictions["logits_native"])
    if ok:
        first = next(iter(ok.values()))
        pairs, weights = user_file_pairs(spec, dataset, first.config,
                                         {name: get_backend(run.info["backend"]) for name, run in ok.items()})
        m.add_pairs(pairs, weights)
    trained_rows(m, ok, controls or {})
    if len(ok) == 1 and len(runs) == 1:  # nothing to compare across frameworks: the port is not judged
        name = next(iter(ok))
        m.rows.append({"kind": "run", "evaluator_a": f"{name}:native", "status": "inconclusive", "passed": None,
                       "reason": f"only {name} ran: its export and float64 checks say nothing about a port; compare "
                                 "two backends (--backends pytorch,mindspore)"})
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
