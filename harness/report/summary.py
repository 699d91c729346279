"""What people read: summary.md (verdict, agreement, trained models, runs, speed, links) and the console text
of ``harness compare`` and ``harness parity``."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..tolerances import policies
from .tables import PROVENANCE, Report, is_blank, outcome, tidy_table

_RANK = {"FAIL": 0, "ERROR": 1, "PASS": 2}  # failures first: they are what a reader came for
WIDTH = 100
_ASCII = str.maketrans({"—": "-", "±": "+-", "≥": ">="})  # for the terminal: some consoles lack these glyphs


def _num(value, missing: str = "—", digits: int = 4) -> str:
    """A number compactly: integers whole, large ones rounded with thousands separators, tiny ones in
    scientific notation."""
    if is_blank(value) or not isinstance(value, (int, float, np.number)):
        return missing if is_blank(value) else str(value)
    x = float(value)
    if math.isfinite(x) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    if 10 ** digits <= abs(x) < 1e15:
        return f"{x:,.0f}"  # 16,570 images/s, where :g would print 1.657e+04
    return f"{x:.2e}" if x and abs(x) < 1e-3 else f"{x:.{digits}g}"


def _text(value) -> str:
    return "—" if is_blank(value) else str(value)  # no float() here: "1e3" stays a name


def _pct(value, signed: bool = False, unit: str = "%") -> str:
    return "—" if is_blank(value) else f"{100 * float(value):{'+' if signed else ''}.2f}{unit}"


def _ordered(agreement: pd.DataFrame) -> list[dict]:
    return sorted(agreement.to_dict("records"), key=lambda r: _RANK[outcome(r)])  # stable: ties keep order


def _pair(row: dict) -> str:  # a check of one thing (a run that failed) has no evaluator_b
    a, b = _text(row.get("evaluator_a")), row.get("evaluator_b")
    return f"{a} vs {b}" if not is_blank(b) else f"{a} ({_text(row.get('kind'))})"


def _tolerance(row: dict) -> str:
    """atol/rtol, or for a trained row (no tensor tolerance) the budget's accuracy band and the top-1 floor
    the row was judged by (the budget's, or lower where the control run showed more float32 noise)."""
    if not (is_blank(row.get("atol")) and is_blank(row.get("rtol"))):
        return "/".join("—" if is_blank(row.get(k)) else f"{float(row[k]):.3g}" for k in ("atol", "rtol"))
    try:
        if row.get("kind") != "trained":
            return "—"
        floor = row.get("min_top1_agree")
        floor = policies().trained.min_top1_agree if is_blank(floor) else float(floor)
        return f"±{100 * policies().trained.accuracy_band:.1f}pp, top1≥{100 * floor:.1f}%"
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
    return f"**{result}**: {str(error)[:200]}" if result == "ERROR" and not is_blank(error) else f"**{result}**"


def _same_weights_md(rows: list[dict]) -> str | None:
    rows = [r for r in rows if r.get("kind") != "trained"]
    header = ["pair", "n", "max_abs", "p99_abs", "cosine", "top1_agree", "atol/rtol", "passed"]
    layers = any(not is_blank(r.get("first_divergent_layer")) for r in rows)
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
             f"error: {str(r['error'])[:200]}" if not is_blank(r["error"]) else _text(r["status"])]
            for r in runs.to_dict("records")]
    header = ["backend", "device", "run", "accuracy", "ONNX accuracy", "train s", "images/s", "status"]
    return markdown_table(header, body, {3, 4, 5, 6})


def _speed_md(speed: pd.DataFrame) -> str | None:
    body = [[_text(r["backend"]), _text(r["model"]), _text(r["phase"]), _num(r["images_per_s"]),
             "—" if is_blank(r["ratio_to_pytorch"]) else f"{float(r['ratio_to_pytorch']):.2f}×"]
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
    prov = " · ".join(f"{k} `{provenance[k]}`" for k in PROVENANCE if not is_blank(provenance.get(k)))
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
    max_abs = "-" if is_blank(row.get("max_abs")) else f"{float(row['max_abs']):.2e}"
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
        if rest[-1] == "ERROR" and not is_blank(row.get("error")):
            error = f"    error: {' '.join(str(row['error']).split())}"
            lines.append(error if len(error) <= WIDTH else error[: WIDTH - 3] + "...")
    lines.append(_final_line(report.verdict, Counter(map(outcome, rows)), _run_errors(report)))
    return "\n".join(lines)


def allowance_note(row) -> str:
    """Says so when a row is over its fixed budget and within it only by float32's spread or, in lockstep,
    by Adam's steps along float32 noise."""
    spread, noise = (float(row.get(key, 0.0)) for key in ("spread", "noise"))
    spread, noise = (0.0 if math.isnan(v) else v for v in (spread, noise))  # the column is absent in other modes
    if not row.get("passed", False) or not (spread > 0 or noise > 0):
        return ""
    factor = policies().float32.spread_factor
    budget = float(row["allowed"]) - factor * spread - noise
    if float(row["rel"]) <= budget:
        return ""
    parts = [f"{factor:g} x float32's spread {spread:.1e} from {int(row['undecided'])} ReLU/max-pool decisions "
             "float32 cannot make"] if spread > 0 else []
    if noise > 0:
        parts.append(f"{noise:.1e} for Adam's steps along float32 noise (gradients float32 cannot tell from zero)")
    return f" (over the {budget:.0e} budget, under {float(row['allowed']):.1e} = budget + {' + '.join(parts)})"


def _whose_rounding(row) -> str:
    """Each side's distance from the float64 step with its own decisions, when the row has them."""
    sides = [(row.get(f"backend_{side}"), float(row.get(f"rel64_matched_{side}", math.nan))) for side in "ab"]
    if any(math.isnan(distance) for _, distance in sides):
        return ""
    return "; each side from that float64 step: " + ", ".join(f"{name} {distance:.1e}" for name, distance in sides)


def parity_lines(frame: pd.DataFrame, failure: dict | None) -> list[str]:
    """The console summary of ``harness parity``: per mode its worst row (and decision-matched difference),
    then the verdict naming the first failure."""
    lines = []
    for mode in ("forward", "backward", "lockstep", "synchronised"):
        rows = frame[frame["mode"] == mode]
        if rows.empty:
            continue
        worst = rows.loc[rows["rel"].astype(float).idxmax()]
        where = (f"step {int(worst['step'])}, " if mode in ("lockstep", "synchronised")
                 else f"{worst['pair']}, " if mode == "forward" else "")
        lines.append(f"{mode:13s} worst rel. diff {float(worst['rel']):.2e} ({where}{worst['param']})"
                     f"  {'PASS' if rows['passed'].all() else 'FAIL'}{allowance_note(worst)}")
        if "rel_matched" in rows and rows["rel_matched"].notna().any():
            left = rows.loc[rows["rel_matched"].astype(float).idxmax()]
            lines.append(f"{'':13s} decision-matched {float(left['rel_matched']):.2e} (step {int(left['step'])}, "
                         f"{left['param']}): left once each side is compared with float64 taking its own "
                         f"undecidable decisions{_whose_rounding(left)}")
    if failure:
        pair = f", {failure['pair']}" if failure["mode"] == "forward" else ""
        lines.append(f"verdict: FAILED: first divergence in {failure['mode']} at {failure['param']}{pair}"
                     f" (max_abs {failure['max_abs']:.2e}, rel {failure['rel']:.2e})")
    else:
        lines.append(f"verdict: PASSED ({len(frame)} checks)")
    return lines
