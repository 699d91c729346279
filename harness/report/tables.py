"""The report tables' schema: tidy pandas tables, one row per fact, fixed column order, provenance columns.

Every table is long/tidy (one row per fact) with a fixed column order and provenance columns, so two
reports diff cleanly and load with one ``pd.read_csv``; reports/README.md documents every column.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import __version__
from ..config import RunConfig

PROVENANCE = ["config_hash", "harness_version", "generated_at"]
COLUMNS: dict[str, list[str]] = {name: columns.split() for name, columns in {
    "runs": "run_id backend device model dataset num_params epochs train_loss test_accuracy onnx_test_accuracy "
            "train_seconds images_per_s first_epoch_images_per_s infer_native_images_per_s infer_onnx_images_per_s "
            "load_average_start load_average_end other_cores_busy cores under_load versions status error",
    "agreement": "model dataset kind evaluator_a evaluator_b inputs n max_abs mean_abs p99_abs max_rel cosine top1_agree "
                 "flipped atol rtol accuracy_a accuracy_b accuracy_delta delta_ci_low delta_ci_high mcnemar_b01 "
                 "mcnemar_b10 mcnemar_p control_top1_agree min_top1_agree first_divergent_layer passed status reason "
                 "error",
    "curves": "backend run_id kind epoch step loss train_loss test_loss test_accuracy lr",
    "per_class": "backend evaluator class_index class_name n correct accuracy",
    "confusion": "backend evaluator true_class predicted_class count",
    "onnx_graphs": "backend run_id opset ir_version inputs outputs num_nodes producer op_type count",
    "speed": "backend model phase images_per_s ratio_to_pytorch under_load other_cores_busy cores",
}.items()}
_INTEGERS = set("n num_params epochs epoch step flipped mcnemar_b01 mcnemar_b10 class_index correct true_class "
                "predicted_class count opset ir_version num_nodes".split())


@dataclass
class Report:
    """Everything a comparison produced, as the report writer receives it.

    Attributes:
        tables: table name (a key of ``COLUMNS``) -> tidy DataFrame; any may be empty or absent.
        logit_diffs: pair label "A vs B" -> flattened float64 |a - b|, for same-weights pairs.
        verdict: "passed", "failed" or "error".
        title: one line naming model, dataset, epochs and config.
    """

    tables: dict[str, pd.DataFrame]
    logit_diffs: dict[str, np.ndarray]
    verdict: str
    title: str


def is_blank(value) -> bool:
    """True for None, NaN/NA and the empty string: all read back from CSV as an empty cell."""
    return value is None or (isinstance(value, str) and not value.strip()) or (
        np.ndim(value) == 0 and not isinstance(value, dict) and bool(pd.isna(value)))


def tidy_table(name: str, frame: pd.DataFrame | None, provenance: dict) -> pd.DataFrame:
    """``frame`` in schema order (missing columns empty, extra ones kept after) with provenance filled in."""
    frame = pd.DataFrame() if frame is None else frame.reset_index(drop=True)
    schema = COLUMNS.get(name, [])
    extra = [c for c in frame.columns if c not in schema and c not in PROVENANCE]
    frame = frame.reindex(columns=[*schema, *extra, *PROVENANCE])
    for column in _INTEGERS.intersection(frame.columns):
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.count() == frame[column].count() and (values.dropna() % 1 == 0).all():
            frame[column] = values.astype("Int64")  # a count beside empty cells stays "2", not "2.0"
    for column in PROVENANCE:
        value = provenance.get(column)
        if value is not None:
            frame[column] = [value if is_blank(v) else v for v in frame[column]]
    if "versions" in frame:
        # versions arrive as a dict from run.json; a CSV cell needs one string
        frame["versions"] = [json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for v in frame["versions"]]
    return frame


def outcome(row) -> str:
    """PASS, FAIL, INCONCLUSIVE or ERROR for one agreement row (a dict or namedtuple-like mapping).

    Only a row whose ``passed`` is true is a PASS: a blank or unreadable one is a FAIL, never a PASS.
    """
    status = str(row.get("status", "")).strip().lower()
    if status == "error":
        return "ERROR"
    if status == "inconclusive":
        return "INCONCLUSIVE"
    passed = row.get("passed")  # a bool in memory, a string once read back from CSV
    return "PASS" if not is_blank(passed) and str(passed).strip().lower() in ("true", "1", "1.0") else "FAIL"


def overall_verdict(rows: list[dict]) -> str:
    """The verdict of a set of agreement rows: "error" if any errored, else "failed" if any failed, else
    "inconclusive" if any could not decide (or there is no row at all), else "passed"."""
    outcomes = {outcome(row) for row in rows}
    if "ERROR" in outcomes:
        return "error"
    if "FAIL" in outcomes:
        return "failed"
    return "inconclusive" if "INCONCLUSIVE" in outcomes or not rows else "passed"


def provenance(config: RunConfig) -> dict:
    """The columns every report table carries: which config, which harness, when."""
    return {"config_hash": config.config_hash, "harness_version": __version__,
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
