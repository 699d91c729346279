"""``harness port`` end to end: a user's PyTorch model and their MindSpore port, checked as ``harness compare``
and ``harness parity`` check the harness's own models.

1. Both files are imported and their factories called (``load``); both models run once on a probe batch with
   hooks on every layer (``PortSupport.trace``).
2. Layers are paired by execution order and tensors mapped (``mapping``); the conventions check lists every
   known setting that differs (``conventions``). Unpaired tensors stop here: a MAP.toml to complete (exit 2).
3. The referee: the PyTorch model exported to ONNX and imported as a spec (``harness.model.onnx_import``); where
   that fails, the PyTorch model in float64, labelled so (then training and parity, which need a spec, are not
   run and the verdict says why).
4. The user's models stand in for the registered backends (``harness.backend.standing_in``), so the harness's own
   code runs on them: the same-weights checks on the initial weights, every layer in the user's names, the
   forward/backward search and synchronised/lockstep steps (``harness.parity``), and training side by side with
   compare's trained-pair verdicts (``harness.compare``).
5. One report set as compare's, with mapping.csv, conventions.csv, layers.csv and port_parity.csv beside it.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..backend import get_backend, get_port, standing_in
from ..compare.matrix import Matrix, Pair, probe_inputs
from ..compare.metrics import pair_metrics
from ..compare.session import build_report, exit_code, obtain_control, obtain_runs
from ..config import build_config
from ..data.registry import DATASETS
from ..errors import HarnessError
from ..evaluators.float64 import Float64Evaluator
from ..evaluators.native import NativeEvaluator
from ..evaluators.onnxrt import OnnxEvaluator, run_onnx
from ..model.onnx_import import import_onnx
from ..model.resolve import run_initial_weights
from ..model.spec import ModelSpec
from ..parity.modes import check as parity_check
from ..parity.modes import COLUMNS as PARITY_COLUMNS
from ..parity.modes import first_failure
from ..progress import Progress
from ..reference.forward import forward
from ..report.folder import write_reports
from ..report.plots import plot_parity
from ..report.summary import inconclusive_lines, markdown_table, parity_lines, verdict_table
from ..report.tables import Report, outcome, overall_verdict, provenance
from ..runs.files import atomic_path, ensure_writable_dir
from ..tolerances import policies
from ..training.run import load_data
from . import conventions, hooks, mapping
from .load import UserModel, check_args_used, infer_input_shape, load_user_model, parse_target, probe_batch, \
    source_digest

SIDES = ("pytorch", "mindspore")
LAYER_IMAGES = 8  # test images (and as many probe inputs) the per-layer comparison runs on
REFERENCE_IMAGES = 512  # the float64 referee's images for a model over a million parameters (as compare)


@dataclass
class PortRequest:
    """What ``harness port`` was asked (cli/port.py fills it from the flags)."""

    torch: str
    mindspore: str
    factory_args: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    map_file: Path | None = None
    weights_from: str = "pytorch"
    settings: dict = field(default_factory=dict)
    data_dir: Path | None = None
    out: Path = Path("runs/port")
    reports: Path = Path("reports")
    fresh: bool = False
    control: bool = True
    train: bool = True
    steps: int = 5
    modes: tuple[str, ...] = ("lockstep", "synchronised")
    quiet: bool = False


@dataclass
class Sides:
    """Both user models, their layer calls on the probe batch, and how they pair."""

    torch: UserModel
    mindspore: UserModel
    input_shape: tuple[int, ...]
    torch_calls: list[dict]
    ms_calls: list[dict]
    pairs: list[tuple[int | None, int | None]]
    mapping: mapping.Mapping
    findings: list[conventions.Finding]
    ms_problem: str | None  # why the MindSpore model cannot run the checks (None: it can)


def _dataset_size(settings: dict) -> tuple[int, int] | None:
    """The dataset's own image size, where it has one (synthetic data is drawn at the model's)."""
    name = settings.get("dataset", "mnist-sample")
    info = DATASETS.get(name)
    return None if info is None or name == "synthetic" else tuple(info.image_shape[1:])


def read_sides(request: PortRequest) -> Sides:
    """Load both models, trace them, pair their layers and tensors, and check their conventions."""
    torch_folder = parse_target(request.torch, "--torch")[0].resolve().parent
    ms_folder = parse_target(request.mindspore, "--mindspore")[0].resolve().parent
    torch_user = load_user_model(request.torch, "--torch", "pytorch", get_port("pytorch"), request.factory_args,
                                 forget_after=torch_folder != ms_folder)
    ms_user = load_user_model(request.mindspore, "--mindspore", "mindspore", get_port("mindspore"),
                              request.factory_args, forget_after=False)
    check_args_used(request.factory_args, [torch_user, ms_user])
    shape = infer_input_shape(torch_user, request.input_shape, _dataset_size(request.settings))
    x = probe_batch(shape)
    torch_calls, torch_logits, torch_error = torch_user.support.trace(torch_user.model, x, torch_user.lines)
    if torch_error is not None:
        raise HarnessError(f"the PyTorch model does not run on {shape} ({torch_error}); pass the --input-shape "
                           "it takes")
    classes = torch_logits.shape[1] if torch_logits.ndim == 2 else None
    if classes is None or (request.num_classes is not None and classes != request.num_classes):
        raise HarnessError(f"the PyTorch model gives logits of shape {tuple(torch_logits.shape[1:])} per image, "
                           f"expected ({request.num_classes or 'classes'},); the model must end in the logits")
    ms_calls, ms_logits, ms_error = ms_user.support.trace(ms_user.model, x, ms_user.lines)
    ms_problem = None
    if ms_error is not None:
        ms_problem = f"the MindSpore model does not run on {shape}: {ms_error}"
    elif ms_logits.shape != torch_logits.shape:
        ms_problem = (f"the MindSpore model gives logits of shape {tuple(ms_logits.shape[1:])}, the PyTorch model "
                      f"{tuple(torch_logits.shape[1:])}")
    pairs = mapping.align(mapping.call_keys(torch_calls), mapping.call_keys(ms_calls))
    torch_tensors = {name: value.shape for name, value in torch_user.support.tensors(torch_user.model).items()}
    ms_tensors = {name: value.shape for name, value in ms_user.support.tensors(ms_user.model).items()}
    given = mapping.read_map(request.map_file) if request.map_file else None
    found = mapping.map_tensors(torch_calls, ms_calls, pairs, torch_tensors, ms_tensors, given)
    trains_t, trains_m = torch_user.support.trainable(torch_user.model), ms_user.support.trainable(ms_user.model)
    lines = {entry["name"]: call["line"] for call in ms_calls for entry in call["tensors"].values()}
    not_trained = [(p.torch, p.mindspore, lines.get(p.mindspore, "")) for p in found.pairs
                   if p.torch in trains_t and p.mindspore not in trains_m]
    findings = conventions.check(torch_calls, ms_calls, pairs, not_trained)
    return Sides(torch_user, ms_user, shape, torch_calls, ms_calls, pairs, found, findings, ms_problem)


# -- the referee ----------------------------------------------------------------------------------------------------

@dataclass
class Referee:
    """The PyTorch model as a spec (``spec`` None where the import failed: ``problem`` says why)."""

    onnx_path: Path
    spec: ModelSpec | None
    problem: str | None
    torch_names: dict[str, str] = field(default_factory=dict)  # canonical -> torch name
    weights: dict = field(default_factory=dict)  # the spec's (the PyTorch model's initial) weights


def make_referee(sides: Sides, work: Path) -> Referee:
    """Export the PyTorch model (holding the run's initial weights) and import it as a spec."""
    path = work / f"{sides.torch.path.stem}.onnx"  # its stem names the spec, and so the run folders and reports
    try:
        with atomic_path(path) as tmp:
            sides.torch.support.export(sides.torch.model, tmp, sides.input_shape)
        spec, weights = import_onnx(path)
    except HarnessError as error:
        return Referee(path, None, str(error))
    names = dict(spec.source_names)
    torch_names = set(sides.torch.support.tensors(sides.torch.model))
    strays = [canonical for canonical in spec.param_shapes() if names.get(canonical) not in torch_names]
    if strays:
        return Referee(path, None, f"the ONNX import's tensor {strays[0]} is not one of the model's own "
                                   f"({names.get(strays[0], 'no name')})")
    if tuple(spec.input_shape) != tuple(sides.input_shape):
        return Referee(path, None, f"the ONNX import takes {spec.input_shape}, not {sides.input_shape}")
    return Referee(path, spec, None, {canonical: names[canonical] for canonical in spec.param_shapes()}, weights)


def _start_weights(sides: Sides, weights_from: str) -> None:
    """With ``--weights-from mindspore``, the MindSpore model's initial tensors copied into the PyTorch model, so
    its export (the run's initial weights) carries them."""
    if weights_from != "mindspore":
        return
    ms_arrays = sides.mindspore.support.tensors(sides.mindspore.model)
    sides.torch.support.load_tensors(sides.torch.model, {
        pair.torch: (ms_arrays[pair.mindspore].T if pair.transposed else ms_arrays[pair.mindspore])
        for pair in sides.mapping.pairs})


# -- rows in the user's names ---------------------------------------------------------------------------------------

def convention_rows(findings: list[conventions.Finding]) -> list[dict]:
    """One failed agreement row per finding."""
    return [{"kind": "convention", "evaluator_a": f"pytorch {f.torch_layer} ({f.torch_type})",
             "evaluator_b": f"mindspore {f.mindspore_layer} ({f.mindspore_type})", "inputs": f.setting,
             "passed": False, "status": "ok", "reason": f.text(), "first_divergent_layer": f.text()}
            for f in findings]


class Names:
    """The spec's layer and tensor names in the user's: ``torch features.5 (MaxPool2d) <-> mindspore ...``."""

    def __init__(self, layers: dict[str, str], tensors: dict[str, str]) -> None:
        self.layers, self.tensors = layers, tensors

    def __call__(self, name: str) -> str:
        found = self.layers.get(name) or self.tensors.get(name)
        if found is None:  # an optimizer slot (``<tensor>.exp_avg_sq``) keeps its slot after the user's names
            tensor, _, slot = name.rpartition(".")
            found = f"{self.tensors[tensor]} ({slot})" if tensor in self.tensors else name
        return found

    def divergence(self, text) -> Any:
        """compare's first_divergent_layer text with its layer names made the user's."""
        if not isinstance(text, str):
            return text
        text = re.sub(r"^(\S+) \(max_abs", lambda m: f"{self(m.group(1))} (max_abs", text)
        return re.sub(r"largest own error: (\S+)", lambda m: f"largest own error: {self(m.group(1))}", text)


def _names(referee: Referee, sides: Sides, torch_of: dict[str, int], ms_of: dict[str, int]) -> Names:
    spec = referee.spec
    layers = hooks.user_layer_names(spec, sides.torch_calls, sides.ms_calls, torch_of, ms_of)
    pairs = sides.mapping.torch_to_mindspore()
    tensors = {canonical: f"torch {torch} <-> mindspore {pairs[torch].mindspore if torch in pairs else '?'}"
               for canonical, torch in referee.torch_names.items()}
    return Names(layers, tensors)


# -- the checks -----------------------------------------------------------------------------------------------------

def initial_pairs(spec: ModelSpec, weights: dict, work: Path, source: str, counts: tuple[int, int, int],
                  torch_onnx: Path) -> tuple[list[Pair], list[dict]]:
    """The same-weights pairs on the run's initial weights: each model native and in ONNX Runtime, the other
    model with ``source``'s weights, and the float64 referee; on the test images and on the probe inputs. An
    export that fails is an error row of its own (the other pairs still run).

    Args:
        counts: (test images, of them for the float64 referee, probe inputs).
        torch_onnx: the PyTorch model's export holding these weights (the referee's file: not exported twice).

    Returns:
        (the pairs, error rows of refused exports).
    """
    other = "mindspore" if source == "pytorch" else "pytorch"
    policy = policies()
    what = f"{source}'s initial weights"
    native = {source: NativeEvaluator.build(get_backend(source), spec, weights, f"{source}:native[initial]", what),
              other: NativeEvaluator.build(get_backend(other), spec, weights, f"{other}[{source} initial weights]",
                                           what)}
    ref = Float64Evaluator(spec, weights, "reference:float64[initial]", f"harness float64 numpy forward with {what}")
    n, referee_count, probes = counts
    judged = [(native[other], native[source], policy.cross, n), (native["pytorch"], ref, policy.reference,
                                                                 referee_count),
              (native["mindspore"], ref, policy.reference, referee_count)]
    refused, exports = [], {"pytorch": torch_onnx}
    try:
        with atomic_path(work / "initial_mindspore.onnx") as tmp:
            get_backend("mindspore").export_onnx(native["mindspore"].model, tmp)
        exports["mindspore"] = work / "initial_mindspore.onnx"
    except HarnessError as error:  # e.g. an op MindSpore's ONNX converter lacks: that check errs, not all of them
        refused.append({"kind": "same-weights", "evaluator_a": "mindspore:onnxruntime[initial]",
                        "evaluator_b": native["mindspore"].name, "status": "error", "passed": False,
                        "error": str(error)})
    for side, path in exports.items():
        onnx = OnnxEvaluator(path, f"{side}:onnxruntime[initial]")
        judged += [(onnx, native[side], policy.onnx, n), (onnx, ref, policy.reference, referee_count)]
    return ([Pair(a, b, tol, "test", count) for a, b, tol, count in judged]
            + [Pair(a, b, tol, "probe", probes) for a, b, tol, _ in judged]), refused


def same_weight_rows(spec: ModelSpec, dataset, weights: dict, work: Path, source: str, names: Names,
                     torch_onnx: Path) -> tuple[list[dict], dict]:
    """The initial same-weights rows (compare's Matrix judges them), their first divergent layers in the user's
    names; and the logit differences for logit_diffs.png."""
    n = len(dataset.test_x)
    probe = probe_inputs(dataset.test_x)
    count = min(n, REFERENCE_IMAGES) if spec.num_params > 1_000_000 else n
    matrix = Matrix(spec, dataset, {"test": dataset.test_x, "probe": probe})
    pairs, refused = initial_pairs(spec, weights, work, source, (n, count, len(probe)), torch_onnx)
    matrix.add_pairs(pairs, weights)
    for row in matrix.rows:
        row["first_divergent_layer"] = names.divergence(row.get("first_divergent_layer"))
    return matrix.rows + refused, {f"{label} (initial)": diff for label, diff in matrix.diffs.items()}


def layer_table(sides: Sides, spec: ModelSpec | None, weights: dict, x: np.ndarray, torch_of: dict[str, int]) -> \
        list[dict]:
    """Every layer of both models with the same weights, in the user's names, against the float64 referee."""
    t_backend, m_backend = get_backend("pytorch"), get_backend("mindspore")
    t_model, m_model = t_backend.build(spec, "cpu"), m_backend.build(spec, "cpu")
    t_backend.set_weights(t_model, weights)
    m_backend.set_weights(m_model, weights)
    torch_calls, _, _ = sides.torch.support.trace(t_model.module.user, x)
    ms_calls, _, _ = sides.mindspore.support.trace(m_model.net.user, x)
    referee = {}
    outputs = forward(spec, weights, x.astype(np.float64), collect=True)[1]
    for layer, index in torch_of.items():
        referee[index] = outputs[layer]
    for call, earlier in ((torch_calls, sides.torch_calls), (ms_calls, sides.ms_calls)):
        for now, before in zip(call, earlier):  # the probe trace's lines; this trace's values
            now["line"] = before["line"]
    pairs = mapping.align(mapping.call_keys(torch_calls), mapping.call_keys(ms_calls))
    return hooks.layer_rows(torch_calls, ms_calls, pairs, referee)


def parity_rows(config, spec: ModelSpec, dataset, request: PortRequest, names: Names) -> tuple[list[dict], list[dict]]:
    """``harness parity``'s forward/backward search and step modes on the user's models (Dropout off, as parity
    removes it), each row's layer or tensor named the user's way; and one agreement row per mode."""
    backends = [get_backend(side) for side in SIDES]
    for backend in backends:
        backend.dropout = False
    try:
        rows = parity_check(config, spec, dataset, list(SIDES), request.steps, list(request.modes),
                            quiet=request.quiet)
    finally:
        for backend in backends:
            backend.dropout = True
    for row in rows:  # as harness parity's rows, the user's names in ``param`` and the spec's in ``spec_name``
        row.update(spec_name=row["param"], param=names(row["param"]), model=spec.name, backend_a=SIDES[0],
                   backend_b=SIDES[1])
    summary = []
    for mode in ("forward", "backward", *request.modes):
        chosen = [row for row in rows if row["mode"] == mode]
        if not chosen:
            continue
        failure = first_failure(chosen)
        worst = max(chosen, key=lambda row: row["rel"] if not math.isnan(row["rel"]) else math.inf)
        where = None
        if failure is not None:
            step = f" at step {int(failure['step'])}" if not pd.isna(failure.get("step", float("nan"))) else ""
            allowed = failure.get("allowed", math.nan)
            limit = f", allowed {allowed:.2e}" if isinstance(allowed, float) and not math.isnan(allowed) else ""
            pair = f"{failure['pair']}: " if mode == "forward" else ""
            over = not limit or failure["rel"] > allowed  # else the step failed on its loss, not on this tensor
            loss = "" if over else f"; the losses differ by {failure.get('loss_diff', math.nan):.2e}"
            where = f"{pair}{failure['param']}{step} (rel {failure['rel']:.2e}{limit}{loss})"
        summary.append({"kind": "parity", "evaluator_a": f"pytorch:{mode}", "evaluator_b": f"mindspore:{mode}",
                        "inputs": "train" if mode in request.modes else "probe", "n": len(chosen),
                        "max_abs": float(worst["max_abs"]), "max_rel": float(worst["rel"]),
                        "passed": failure is None, "status": "ok",
                        "first_divergent_layer": where})
    return rows, summary


def trained_tables(config, request: PortRequest, work: Path, names: Names) -> Report:
    """Both user models trained by the harness loop (compare's runs, under ``work/runs``) and compare's report."""
    out = work / "runs"
    runs = obtain_runs(config, list(SIDES), out, request.fresh, request.data_dir, request.quiet)
    trained = [side for side in SIDES if isinstance(runs[side], Path)]
    controls = {}
    if request.control and len(trained) == 2:
        control = obtain_control(config, "pytorch", out, request.fresh, request.data_dir, request.quiet)
        if isinstance(control, Path):
            controls["pytorch"] = control
    report = build_report(config, runs, request.data_dir, controls)
    agreement = report.tables["agreement"]
    if "first_divergent_layer" in agreement:
        agreement["first_divergent_layer"] = [names.divergence(text) for text in agreement["first_divergent_layer"]]
    return report


# -- the whole command ----------------------------------------------------------------------------------------------

@dataclass
class PortResult:
    """What ``run_port`` produced: the report written, the exit code, and where it went."""

    report: Report
    code: int
    files: list[Path]


def _tables(sides: Sides, layers: list[dict], parity: list[dict]) -> dict[str, pd.DataFrame]:
    mapped = [{"torch": p.torch, "mindspore": p.mindspore, "shape": str(tuple(p.shape)), "rule": p.rule,
               "transposed": p.transposed} for p in sides.mapping.pairs]
    mapped += [{"torch": n, "mindspore": "", "shape": str(tuple(s)), "rule": "not paired"}
               for n, s in sides.mapping.unmatched_torch.items()]
    mapped += [{"torch": "", "mindspore": n, "shape": str(tuple(s)), "rule": "not paired"}
               for n, s in sides.mapping.unmatched_mindspore.items()]
    found = [{"mindspore_line": f.line, "torch_layer": f.torch_layer, "torch_type": f.torch_type,
              "mindspore_layer": f.mindspore_layer, "mindspore_type": f.mindspore_type, "setting": f.setting,
              "torch_value": f.torch_value, "mindspore_value": f.mindspore_value, "fix": f.fix}
             for f in sides.findings]
    parity_frame = pd.DataFrame(parity)
    extra = [column for column in parity_frame if column not in PARITY_COLUMNS]
    parity_frame = parity_frame.reindex(columns=[*PARITY_COLUMNS, *extra])
    return {"mapping": pd.DataFrame(mapped), "conventions": pd.DataFrame(found), "layers": pd.DataFrame(layers),
            "port_parity": parity_frame if parity else pd.DataFrame()}


def _empty_compare_tables() -> dict[str, pd.DataFrame]:
    return {name: pd.DataFrame() for name in ("runs", "curves", "per_class", "confusion", "onnx_graphs", "speed")}


def run_port(request: PortRequest, say: Callable[[str], None] = print) -> PortResult:
    """``harness port`` end to end; prints as it goes (``say``) and writes the report set.

    Raises:
        HarnessError: bad input (files, factories, shapes), or tensors that cannot be paired without findings
            that explain it (a MAP.toml is written first).
    """
    progress = Progress("port", quiet=request.quiet)
    sides = read_sides(request)
    say(f"harness port: {sides.torch.target} vs {sides.mindspore.target}, input {sides.input_shape}")
    say(f"weights: {len(sides.mapping.pairs)} tensors paired by execution order, shape and name")
    say("\n".join(_shown_table(mapping.table_lines(sides.mapping))))
    say(f"conventions: {len(sides.findings)} finding{'s' * (len(sides.findings) != 1)}"
        + "".join(f"\n  {finding.text()}" for finding in sides.findings))
    problems = [sides.ms_problem] if sides.ms_problem else []
    if sides.mapping.complete and sides.mapping.unmatched_mindspore:
        say(f"note: {len(sides.mapping.unmatched_mindspore)} MindSpore Parameter(s) hold no PyTorch tensor and keep "
            f"the port's own values ({', '.join(list(sides.mapping.unmatched_mindspore)[:3])})")
    if not sides.mapping.complete:
        written = mapping.write_map(sides.mindspore.path.resolve().parent, sides.mapping, request.map_file)
        left_t, left_m = sides.mapping.unmatched_torch, sides.mapping.unmatched_mindspore
        candidates = f" (MindSpore Parameters left: {', '.join(list(left_m)[:3])})" if left_m else ""
        problem = (f"{len(left_t)} PyTorch tensor(s) ({', '.join(list(left_t)[:3])}) could not be paired by "
                   f"execution order, shape or name{candidates}; complete {written} and run again with --map "
                   f"{written}")
        if not sides.findings:
            raise HarnessError(problem)
        problems.append(problem)
    agreement = convention_rows(sides.findings)
    if problems:  # nothing can run on this pair; the findings (if any) are the verdict
        agreement += [{"kind": "port", "evaluator_a": "mindspore", "status": "error" if not sides.findings else
                       "inconclusive", "passed": None, "error": problem, "reason": problem} for problem in problems]
        report = Report({**_empty_compare_tables(), "agreement": pd.DataFrame(agreement),
                         **_tables(sides, [], [])}, {}, overall_verdict(agreement), _title(request, sides))
        return _finish(report, request, sides, None, [], say)
    digest = source_digest([sides.torch, sides.mindspore], json.dumps(
        [request.factory_args, sides.input_shape, request.weights_from,
         Path(request.map_file).read_text() if request.map_file else ""], sort_keys=True, default=str))
    work = ensure_writable_dir(Path(request.out) / digest, "port work folder")
    _start_weights(sides, request.weights_from)
    referee = make_referee(sides, work)
    if referee.spec is None:
        return _fallback(request, sides, referee, agreement, say)
    spec = referee.spec
    progress.line(f"referee: the PyTorch model as a spec of {len(spec.layers)} layers ({referee.onnx_path.name})")
    x = probe_batch(sides.input_shape)
    now, _, _ = sides.torch.support.trace(sides.torch.model, x)  # with the weights the spec holds
    torch_of = hooks.confirmed(spec, referee.weights, x, now, mapping.layer_calls(spec, sides.torch_calls))
    ms_of = mapping.layer_calls(spec, sides.ms_calls)
    names = _names(referee, sides, torch_of, ms_of)
    pairs = sides.mapping.torch_to_mindspore()
    torch_support, ms_support = sides.torch.support, sides.mindspore.support
    stand_ins = {
        "pytorch": torch_support.PortBackend(sides.torch.make, torch_support.PortNames(referee.torch_names),
                                             torch_of, hooks.complete),
        "mindspore": ms_support.PortBackend(
            sides.mindspore.make, {c: pairs[t].mindspore for c, t in referee.torch_names.items()},
            {c for c, t in referee.torch_names.items() if pairs[t].transposed}, ms_of, hooks.complete)}
    config = build_config({**request.settings, "model": str(referee.onnx_path)})
    with standing_in(stand_ins):
        spec, dataset = load_data(config, request.data_dir)
        weights = run_initial_weights(config, spec)
        rows, diffs = same_weight_rows(spec, dataset, weights, work, request.weights_from, names, referee.onnx_path)
        agreement += rows
        images = np.concatenate([dataset.test_x[:LAYER_IMAGES], probe_inputs(dataset.test_x, LAYER_IMAGES)])
        layers = layer_table(sides, spec, weights, images, torch_of)
        say(hooks.divergence_line(hooks.first_divergence(layers)))
        parity, summary = parity_rows(config, spec, dataset, request, names)
        agreement += summary
        say("\n".join(parity_lines(pd.DataFrame(parity), first_failure(parity))[:-1]))
        report = trained_tables(config, request, work, names) if request.train else \
            Report({**_empty_compare_tables(), "agreement": pd.DataFrame()}, {}, "inconclusive", "")
    tables = {**report.tables, **_tables(sides, layers, parity)}
    tables["agreement"] = pd.concat([pd.DataFrame(agreement), report.tables["agreement"]], ignore_index=True)
    rows = tables["agreement"].to_dict("records")
    full = Report(tables, {**diffs, **report.logit_diffs}, overall_verdict(rows), _title(request, sides, config))
    return _finish(full, request, sides, config, parity, say)


CONSOLE_PAIRS = 30  # tensor pairs the console shows (mapping.csv and summary.md have every one)


def _shown_table(lines: list[str]) -> list[str]:
    """The mapping table for the console: the header, the first pairs, and every tensor not paired."""
    pairs = [line for line in lines[1:] if not line.endswith("NOT PAIRED")]
    if len(pairs) <= CONSOLE_PAIRS:
        return lines
    left = [line for line in lines[1:] if line.endswith("NOT PAIRED")]
    return [lines[0], *pairs[:CONSOLE_PAIRS], f"  ... {len(pairs) - CONSOLE_PAIRS} more pairs (mapping.csv)", *left]


def _fallback(request: PortRequest, sides: Sides, referee: Referee, agreement: list[dict],
              say: Callable[[str], None]) -> PortResult:
    """No spec: the same weights in both models against the PyTorch model in float64, layer by layer; training
    and parity are not run, and an inconclusive row says why."""
    say(f"referee: the ONNX import failed ({referee.problem}); using torch in float64 (module.double())")
    torch_support, ms_support = sides.torch.support, sides.mindspore.support
    x = probe_batch(sides.input_shape, 16)
    t_model, m_model = sides.torch.make(), sides.mindspore.make()
    arrays = torch_support.tensors(sides.torch.model)
    torch_support.load_tensors(t_model, arrays)
    ms_support.load_tensors(m_model, {p.mindspore: (arrays[p.torch].T if p.transposed else arrays[p.torch])
                                      for p in sides.mapping.pairs})
    torch_calls, t_logits, _ = torch_support.trace(t_model, x)
    ms_calls, m_logits, _ = ms_support.trace(m_model, x)
    exact_calls, exact, _ = torch_support.float64_outputs(t_model, x)
    referee_values = {index: call["value"] for index, call in enumerate(exact_calls)}
    pairs = mapping.align(mapping.call_keys(torch_calls), mapping.call_keys(ms_calls))
    for calls, earlier in ((torch_calls, sides.torch_calls), (ms_calls, sides.ms_calls)):
        for now, before in zip(calls, earlier):
            now["line"] = before["line"]
    layers = hooks.layer_rows(torch_calls, ms_calls, pairs, referee_values)
    say(hooks.divergence_line(hooks.first_divergence(layers)))
    policy = policies()
    for a, b, label_a, label_b, tol in ((m_logits, t_logits, "mindspore[pytorch initial weights]",
                                         "pytorch:native[initial]", policy.cross),
                                        (t_logits, exact, "pytorch:native[initial]", "torch:float64[initial]",
                                         policy.reference),
                                        (m_logits, exact, "mindspore[pytorch initial weights]",
                                         "torch:float64[initial]", policy.reference)):
        agreement.append({"kind": "same-weights", "evaluator_a": label_a, "evaluator_b": label_b, "inputs": "probe",
                          **pair_metrics(a, b, tol), "status": "ok"})
    exports = []
    if referee.onnx_path.exists():  # the export worked; the import refused it
        exports.append((run_onnx(referee.onnx_path, x), t_logits, "pytorch:onnxruntime[initial]",
                        "pytorch:native[initial]"))
    try:
        path = referee.onnx_path.with_name("initial_mindspore.onnx")  # beside the PyTorch export
        with atomic_path(path) as tmp:
            ms_support.export(m_model, tmp, sides.input_shape)
        exports.append((run_onnx(path, x), m_logits, "mindspore:onnxruntime[initial]",
                        "mindspore[pytorch initial weights]"))
    except HarnessError as error:
        agreement.append({"kind": "same-weights", "evaluator_a": "mindspore:onnxruntime[initial]",
                          "evaluator_b": "mindspore[pytorch initial weights]", "status": "error", "passed": False,
                          "error": str(error)})
    for a, b, label_a, label_b in exports:
        agreement.append({"kind": "same-weights", "evaluator_a": label_a, "evaluator_b": label_b, "inputs": "probe",
                          **pair_metrics(a, b, policy.onnx), "status": "ok"})
    reason = (f"the PyTorch model could not be imported as a spec ({referee.problem}): the float64 referee is torch "
              "in float64, and training side by side and parity, which need a spec, did not run")
    agreement.append({"kind": "port", "evaluator_a": "pytorch:training+parity",
                      "evaluator_b": "mindspore:training+parity", "status": "inconclusive", "passed": None,
                      "reason": reason})
    report = Report({**_empty_compare_tables(), "agreement": pd.DataFrame(agreement), **_tables(sides, layers, [])},
                    {}, overall_verdict(agreement), _title(request, sides))
    return _finish(report, request, sides, None, [], say)


def _title(request: PortRequest, sides: Sides, config=None) -> str:
    data = f" on {config.data.dataset}, {config.train.epochs} epochs" if config is not None and request.train else ""
    return f"port: {sides.torch.target} vs {sides.mindspore.target}{data}"


def _finish(report: Report, request: PortRequest, sides: Sides, config, parity: list[dict],
            say: Callable[[str], None]) -> PortResult:
    """Write the report set (compare's, and the port's sections in summary.md), print the checks and verdict."""
    prov = provenance(config) if config is not None else {"config_hash": None}
    ensure_writable_dir(request.reports, "reports folder")
    files = write_reports(report, request.reports, prov)
    summary = request.reports / "summary.md"
    text = summary.read_text()
    # The port's own sections first (the map, the findings, the layers): the checks' tables follow them.
    marker = next((m for m in ("\n## Agreement with the same weights", "\n## Independently trained models",
                               "\n## Files") if m in text), "")
    head, sep, tail = text.partition(marker) if marker else (text, "", "")
    with atomic_path(summary) as tmp:
        tmp.write_text(head.rstrip("\n") + "\n\n" + port_markdown(report, sides) + sep + tail)
    if parity:
        frame = pd.DataFrame(parity)
        plot_parity(frame, request.reports / "parity.png", policies().step.update_rel, policies().lockstep.weight_rel,
                    dataset=config.data.dataset if config is not None else None,
                    loss_budgets={"lockstep": policies().lockstep.loss_abs, "synchronised": policies().step.loss_abs})
        files.append(request.reports / "parity.png")
    agreement = report.tables["agreement"]
    records = agreement.to_dict("records")
    # The console shows what did not pass (findings were listed above); agreement.csv and summary.md have every check.
    shown = [index for index, row in enumerate(records) if outcome(row) != "PASS" and row.get("kind") != "convention"]
    if shown:
        table = verdict_table(replace(report, tables={**report.tables, "agreement": agreement.iloc[shown]}))
        say(table.rsplit("\n", 1)[0])
    for line in inconclusive_lines(report):
        say(f"inconclusive: {line}")
    counts = Counter(outcome(row) for row in records)
    say(f"verdict: {report.verdict.upper()} ({len(agreement)} checks: {counts['PASS']} passed, {counts['FAIL']} "
        f"failed, {counts['INCONCLUSIVE']} inconclusive, {counts['ERROR']} error)")
    say(f"reports: {request.reports}/ (summary.md, agreement.csv, mapping.csv, conventions.csv, layers.csv, ...)")
    return PortResult(report, exit_code(report), files)


def port_markdown(report: Report, sides: Sides) -> str:
    """summary.md's port sections: the weight map, the conventions findings, the layers in the user's names."""
    mapped = markdown_table(["torch", "mindspore", "shape", "rule"],
                            [[p.torch, p.mindspore, str(tuple(p.shape)), p.rule] for p in sides.mapping.pairs]
                            + [[n, "—", str(tuple(s)), "**not paired**"]
                               for n, s in sides.mapping.unmatched_torch.items()]
                            + [["—", n, str(tuple(s)), "**not paired**"]
                               for n, s in sides.mapping.unmatched_mindspore.items()]) or "(no tensors)"
    findings = "\n".join(f"- `{f.line}`: mindspore `{f.mindspore_layer}` ({f.mindspore_type}) {f.setting} "
                         f"{f.mindspore_value}, torch `{f.torch_layer}` ({f.torch_type}) {f.torch_value}: "
                         f"**{f.fix}**" for f in sides.findings) or "None: every paired layer's settings agree."
    parts = ["## Port: weights", "", mapped, "", "## Port: conventions", "", findings]
    layers = report.tables.get("layers")
    if layers is not None and len(layers):
        rows = layers.to_dict("records")
        line = hooks.divergence_line(hooks.first_divergence(rows))

        def cell(value) -> str:
            return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else \
                (f"{value:.2e}" if isinstance(value, float) else str(value))
        body = [[f"{r['torch_layer']} ({r['torch_type']})" if r["torch_layer"] else "—",
                 f"{r['mindspore_layer']} ({r['mindspore_type']})" if r["mindspore_layer"] else "—",
                 cell(r["max_abs"]), cell(r["torch_vs_float64"]), cell(r["mindspore_vs_float64"]),
                 {True: "ok", False: "**differs**"}.get(r["passed"], "—")] for r in rows]
        parts += ["", "## Port: layers with the same weights", "", line, "",
                  markdown_table(["torch", "mindspore", "max_abs", "torch vs float64", "mindspore vs float64",
                                  "layer"], body, {2, 3, 4})]
    return "\n".join(parts) + "\n"
