"""Records -> tidy pandas tables -> ``reports/*.csv``, PNG plots and ``summary.md``.

Every table is long/tidy (one row per fact) with a fixed column order and provenance columns, so two
reports diff cleanly and load with one ``pd.read_csv``. Every file is written atomically (temp + rename).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, tolerances
from .runs import atomic_path, write_text

PROVENANCE = ["config_hash", "harness_version", "generated_at"]
COLUMNS: dict[str, list[str]] = {name: columns.split() for name, columns in {
    "runs": "run_id backend device model dataset num_params epochs train_loss test_accuracy onnx_test_accuracy "
            "train_seconds images_per_s infer_native_images_per_s infer_onnx_images_per_s versions status error",
    "agreement": "model dataset kind evaluator_a evaluator_b n max_abs mean_abs p99_abs max_rel cosine top1_agree "
                 "flipped atol rtol accuracy_a accuracy_b accuracy_delta delta_ci_low delta_ci_high mcnemar_b01 "
                 "mcnemar_b10 mcnemar_p control_top1_agree min_top1_agree first_divergent_layer passed status error",
    "curves": "backend run_id kind epoch step loss train_loss test_loss test_accuracy lr",
    "per_class": "backend evaluator class_index class_name n correct accuracy",
    "confusion": "backend evaluator true_class predicted_class count",
    "onnx_graphs": "backend run_id opset ir_version inputs outputs num_nodes producer op_type count",
    "speed": "backend model phase images_per_s ratio_to_pytorch",
}.items()}
_INTEGERS = set("n num_params epochs epoch step flipped mcnemar_b01 mcnemar_b10 class_index correct true_class "
                "predicted_class count opset ir_version num_nodes".split())
_RANK = {"FAIL": 0, "ERROR": 1, "PASS": 2}  # failures first: they are what a reader came for
WIDTH = 100
_ASCII = str.maketrans({"—": "-", "±": "+-", "≥": ">="})  # for the terminal: some consoles lack these glyphs


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


def _blank(value) -> bool:
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
            frame[column] = [value if _blank(v) else v for v in frame[column]]
    if "versions" in frame:
        # versions arrive as a dict from run.json; a CSV cell needs one string
        frame["versions"] = [json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for v in frame["versions"]]
    return frame


def write_reports(report: Report, reports_dir: Path, provenance: dict) -> list[Path]:
    """Write every table as CSV, the plots and ``summary.md`` into ``reports_dir``.

    Args:
        report: what the comparison produced.
        reports_dir: the folder (created if needed).
        provenance: config_hash, harness_version, generated_at; the last two default to
            this harness's version and now (UTC).

    Returns:
        The written files: CSVs, PNGs, then summary.md.
    """
    folder = Path(reports_dir)
    folder.mkdir(parents=True, exist_ok=True)
    prov = {"harness_version": __version__, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **{k: v for k, v in (provenance or {}).items() if v is not None}}
    names = [*COLUMNS, *(n for n in report.tables if n not in COLUMNS)]
    tables = {n: tidy_table(n, report.tables.get(n), prov) for n in names}
    csvs = []
    for name, frame in tables.items():
        with atomic_path(folder / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
        csvs.append(folder / f"{name}.csv")
    pngs = _write_plots(report, tables, folder)
    summary = folder / "summary.md"
    write_text(summary, render_summary(report, tables, pngs, csvs, prov))
    return [*csvs, *pngs, summary]


def _write_plots(report: Report, tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    from . import plots  # lazy: matplotlib costs half a second that only reports need
    per_class = tables["per_class"].dropna(subset=["class_index", "class_name"])
    names = {int(i): str(n) for i, n in zip(per_class["class_index"], per_class["class_name"])}
    same = tables["agreement"][tables["agreement"]["kind"] != "trained"].dropna(subset=["atol"])
    atols = {f"{a} vs {b}": float(t) for a, b, t in zip(same["evaluator_a"], same["evaluator_b"], same["atol"])}
    made = {"curves.png": plots.plot_curves(tables["curves"], folder / "curves.png", report.title),
            "confusion.png": plots.plot_confusions(tables["confusion"], folder / "confusion.png", names),
            "logit_diffs.png": plots.plot_logit_diffs(report.logit_diffs, folder / "logit_diffs.png", atols)}
    for name in [name for name, path in made.items() if path is None]:
        (folder / name).unlink(missing_ok=True)  # a plot left from an earlier report would mislead
    return [path for path in made.values() if path is not None]


def _num(value, missing: str = "—", digits: int = 4) -> str:
    """A number compactly: integers whole, large ones rounded with thousands separators, tiny ones in
    scientific notation."""
    if _blank(value) or not isinstance(value, (int, float, np.number)):
        return missing if _blank(value) else str(value)
    x = float(value)
    if math.isfinite(x) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    if 10 ** digits <= abs(x) < 1e15:
        return f"{x:,.0f}"  # 16,570 images/s, where :g would print 1.657e+04
    return f"{x:.2e}" if x and abs(x) < 1e-3 else f"{x:.{digits}g}"


def _text(value) -> str:
    return "—" if _blank(value) else str(value)  # no float() here: "1e3" stays a name


def _pct(value, signed: bool = False, unit: str = "%") -> str:
    return "—" if _blank(value) else f"{100 * float(value):{'+' if signed else ''}.2f}{unit}"


def outcome(row) -> str:
    """PASS, FAIL or ERROR for one agreement row (a dict or namedtuple-like mapping)."""
    if str(row.get("status", "")).strip().lower() == "error":
        return "ERROR"
    passed = row.get("passed")  # a bool in memory, a string once read back from CSV
    return "PASS" if not _blank(passed) and str(passed).strip().lower() in ("true", "1", "1.0") else "FAIL"


def _ordered(agreement: pd.DataFrame) -> list[dict]:
    return sorted(agreement.to_dict("records"), key=lambda r: _RANK[outcome(r)])  # stable: ties keep order


def _pair(row: dict) -> str:  # a check of one thing (a run that failed) has no evaluator_b
    a, b = _text(row.get("evaluator_a")), row.get("evaluator_b")
    return f"{a} vs {b}" if not _blank(b) else f"{a} ({_text(row.get('kind'))})"


def _tolerance(row: dict) -> str:
    """atol/rtol, or for a trained row (no tensor tolerance) the budget's accuracy band and the top-1 floor
    the row was judged by (the budget's, or lower where the control run showed more float32 noise)."""
    if not (_blank(row.get("atol")) and _blank(row.get("rtol"))):
        return "/".join("—" if _blank(row.get(k)) else f"{float(row[k]):.3g}" for k in ("atol", "rtol"))
    try:
        if row.get("kind") != "trained":
            return "—"
        floor = row.get("min_top1_agree")
        floor = tolerances.value("trained", "min_top1_agree") if _blank(floor) else float(floor)
        return f"±{100 * tolerances.value('trained', 'accuracy_band'):.1f}pp, top1≥{100 * floor:.1f}%"
    except (OSError, KeyError, ValueError):  # no budget file: say nothing rather than guess
        return "—"


def markdown_table(header: list[str], rows: list[list], right: set[int] = frozenset()) -> str | None:
    """A GitHub markdown table, or None without rows; columns indexed in ``right`` align right."""
    if not rows:
        return None  # tabulate is not a dependency, hence this helper

    def cell(value) -> str:
        return " ".join(str(value).split()).replace("|", "\\|")  # one line, pipes escaped
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _result_cell(row: dict) -> str:  # the error message sits beside ERROR: it is the next thing to read
    result, error = outcome(row), row.get("error")
    return f"**{result}**: {str(error)[:200]}" if result == "ERROR" and not _blank(error) else f"**{result}**"


def _same_weights_md(rows: list[dict]) -> str | None:
    rows = [r for r in rows if r.get("kind") != "trained"]
    header = ["pair", "n", "max_abs", "p99_abs", "cosine", "top1_agree", "atol/rtol", "passed"]
    layers = any(not _blank(r.get("first_divergent_layer")) for r in rows)
    body = [[_pair(r), _num(r.get("n")), _num(r.get("max_abs")), _num(r.get("p99_abs")),
             _num(r.get("cosine"), digits=8), _pct(r.get("top1_agree")), _tolerance(r), _result_cell(r)]
            + ([_text(r.get("first_divergent_layer"))] if layers else []) for r in rows]
    return markdown_table(header + (["first divergent layer"] if layers else []), body, set(range(1, 7)))


def _trained_md(rows: list[dict]) -> str | None:
    rows = [r for r in rows if r.get("kind") == "trained"]
    header = ["pair", "n", "accuracy a", "accuracy b", "delta", "95% CI", "McNemar b01/b10",
              "McNemar p", "top1_agree", "control top1_agree", "band", "passed"]
    body = [[_pair(r), _num(r.get("n")), _pct(r.get("accuracy_a")), _pct(r.get("accuracy_b")),
             _pct(r.get("accuracy_delta"), True, "pp"),
             f"[{_pct(r.get('delta_ci_low'), True, '')}, {_pct(r.get('delta_ci_high'), True, '')}]pp",
             f"{_num(r.get('mcnemar_b01'))}/{_num(r.get('mcnemar_b10'))}", _num(r.get("mcnemar_p")),
             _pct(r.get("top1_agree")), _pct(r.get("control_top1_agree")), _tolerance(r), _result_cell(r)]
            for r in rows]
    return markdown_table(header, body, set(range(1, 11)))


def _runs_md(runs: pd.DataFrame) -> str | None:
    body = [[_text(r["backend"]), _text(r["device"]), _text(r["run_id"]), _pct(r["test_accuracy"]),
             _pct(r["onnx_test_accuracy"]), _num(r["train_seconds"]), _num(r["images_per_s"]),
             f"error: {str(r['error'])[:200]}" if not _blank(r["error"]) else _text(r["status"])]
            for r in runs.to_dict("records")]
    header = ["backend", "device", "run", "accuracy", "ONNX accuracy", "train s", "images/s", "status"]
    return markdown_table(header, body, {3, 4, 5, 6})


def _speed_md(speed: pd.DataFrame) -> str | None:
    body = [[_text(r["backend"]), _text(r["model"]), _text(r["phase"]), _num(r["images_per_s"]),
             "—" if _blank(r["ratio_to_pytorch"]) else f"{float(r['ratio_to_pytorch']):.2f}×"]
            for r in speed.to_dict("records")]
    return markdown_table(["backend", "model", "phase", "images/s", "vs PyTorch"], body, {3, 4})


def _run_errors(report: Report) -> tuple[int, int]:
    """(runs that ended in error, all runs)."""
    runs = tidy_table("runs", report.tables.get("runs"), {})
    return int((runs["status"].astype(str).str.lower() == "error").sum()), len(runs)


def render_summary(report: Report, tables: dict[str, pd.DataFrame], pngs: list[Path],
                   csvs: list[Path], provenance: dict) -> str:
    """The markdown summary: verdict, agreement, trained models, runs, speed, links."""
    rows = _ordered(tables["agreement"])
    counts, (run_errors, n_runs) = Counter(map(outcome, rows)), _run_errors(report)
    verdict = f"**{report.verdict.upper()}**: {len(rows)} checks, {counts['PASS']} passed, " \
              f"{counts['FAIL']} failed, {counts['ERROR']} error"
    verdict += f"; {run_errors} of {n_runs} runs ended in error." if run_errors else "."
    prov = " · ".join(f"{k} `{provenance[k]}`" for k in PROVENANCE if not _blank(provenance.get(k)))
    parts = [f"# {report.title or 'Comparison report'}", "", verdict, "", prov]
    sections = [("Agreement with the same weights", _same_weights_md(rows)),
                ("Independently trained models", _trained_md(rows)),
                ("Runs", _runs_md(tables["runs"])), ("Speed", _speed_md(tables["speed"]))]
    for heading, body in sections:
        if body is not None:
            parts += ["", f"## {heading}", "", body]
    links = [f"- [{p.name}]({p.name})" for p in [*pngs, *csvs]]  # relative: the folder can move
    parts += ["", "## Files", "", "Plots and tables (columns explained in README.md):", "", *links]
    return "\n".join(parts) + "\n"


def _fit(text: str, width: int) -> str:  # cut in the middle: both evaluator names stay recognisable
    half = (width - 3) // 2
    return text if len(text) <= width else text[: width - 3 - half] + "..." + text[len(text) - half:]


def _terminal_cells(row: dict) -> tuple[str, str, str, str]:
    """(pair, max_abs or accuracy delta, tolerance, result), terse and ASCII-only for any console."""
    max_abs = "-" if _blank(row.get("max_abs")) else f"{float(row['max_abs']):.2e}"
    trained = row.get("kind") == "trained"
    measure = f"dacc {_pct(row.get('accuracy_delta'), True, 'pp')} top1 {_pct(row.get('top1_agree'))}" \
        if trained else max_abs
    tol = _tolerance(row).replace(", top1", " top1")  # the band, then the top-1 floor
    return _pair(row), measure.translate(_ASCII), tol.translate(_ASCII), outcome(row)


def _final_line(verdict: str, counts: Counter, runs: tuple[int, int]) -> str:
    total = sum(counts.values())
    if verdict == "passed":
        return f"verdict: PASSED ({total} checks)"
    if verdict == "failed":
        return f"verdict: FAILED ({counts['FAIL']} of {total} checks failed)"
    errored = " and ".join([f"{counts['ERROR']} of {total} checks"] * bool(counts["ERROR"])
                           + [f"{runs[0]} of {runs[1]} runs"] * bool(runs[0]))
    failed = f"; {counts['FAIL']} failed" if counts["FAIL"] else ""
    return f"verdict: {verdict.upper()} ({errored + ' errored' if errored else 'see summary.md'}{failed})"


def verdict_table(report: Report) -> str:
    """A fixed-width table (<= 100 columns) for the terminal, one line per check, then the verdict line."""
    rows = _ordered(tidy_table("agreement", report.tables.get("agreement"), {}))
    cells = [_terminal_cells(row) for row in rows]
    header = ("pair", "max_abs", "tolerance", "result")
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header)]
    widths[0] = min(widths[0], WIDTH - sum(widths[1:]) - 3)  # the pair takes what the numbers leave
    line = " ".join(f"{{:<{w}}}" for w in widths)
    lines = [line.format(*header).rstrip()]
    for row, (pair, *rest) in zip(rows, cells):
        lines.append(line.format(_fit(pair, widths[0]), *rest).rstrip())
        if rest[-1] == "ERROR" and not _blank(row.get("error")):
            error = f"    error: {' '.join(str(row['error']).split())}"
            lines.append(error if len(error) <= WIDTH else error[: WIDTH - 3] + "...")
    lines.append(_final_line(report.verdict, Counter(map(outcome, rows)), _run_errors(report)))
    return "\n".join(lines)
