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

_RANK = {"FAIL": 0, "ERROR": 1, "INCONCLUSIVE": 2, "PASS": 3}  # failures first: they are what a reader came for
WIDTH = 80  # a terminal's default width: the console table must read there without the terminal wrapping it
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
    probe = " (probe inputs)" if row.get("inputs") == "probe" else ""
    return f"{a} vs {b}{probe}" if not is_blank(b) else f"{a} ({_text(row.get('kind'))})"


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


def _load_cell(row: dict) -> str:
    if str(row.get("under_load")).strip().lower() not in ("true", "1", "1.0"):
        return "quiet" if not is_blank(row.get("under_load")) else "—"
    busy, total = _num(row.get("other_cores_busy")), _num(row.get("cores"))
    return f"**under load**: other processes kept {busy} of {total} cores busy"


def _speed_md(speed: pd.DataFrame) -> str | None:
    rows = speed.to_dict("records")
    body = [[_text(r["backend"]), _text(r["model"]), _text(r["phase"]), _num(r["images_per_s"]),
             "—" if is_blank(r["ratio_to_pytorch"]) else f"{float(r['ratio_to_pytorch']):.2f}×", _load_cell(r)]
            for r in rows]
    table = markdown_table(["backend", "model", "phase", "images/s", "vs PyTorch", "machine"], body, {3, 4})
    if table is None:
        return None
    note = ("Measured in passing, one run per backend: `train` is the steady state, `train-first-epoch` includes "
            "graph compilation. `harness bench` is the place for speed (warmed up, repeated, interleaved).")
    if any(_load_cell(r).startswith("**under load") for r in rows):
        note += " Figures taken **under load** (other processes on more than half the cores) are not comparable."
    return table + "\n\n" + note


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
              f"{counts['FAIL']} failed, {counts['INCONCLUSIVE']} inconclusive, {counts['ERROR']} error"
    verdict += f"; {run_errors} of {n_runs} runs ended in error." if run_errors else "."
    prov = " · ".join(f"{k} `{provenance[k]}`" for k in PROVENANCE if not is_blank(provenance.get(k)))
    parts = [f"# {report.title or 'Comparison report'}", "", verdict, "", prov]
    undecided = inconclusive_lines(report)
    if undecided:
        parts += ["", "## Why inconclusive", "", *(f"- {line}" for line in undecided)]
    sections = [("Agreement with the same weights", _same_weights_md(rows)),
                ("Independently trained models", _trained_md(rows)),
                ("Runs", _runs_md(tables["runs"])), ("Speed", _speed_md(tables["speed"]))]
    for heading, body in sections:
        if body is not None:
            parts += ["", f"## {heading}", "", body]
    links = [f"- [{p.name}]({p.name})" for p in [*pngs, *csvs]]  # relative: the folder can move
    parts += ["", "## Files", "", "Plots and tables (columns explained in README.md):", "", *links]
    return "\n".join(parts) + "\n"


def _fit(words: list[str], width: int, indent: str, lead: str = "") -> list[str]:
    """``words`` joined by spaces into lines of at most ``width``, the first starting with ``lead``, the others
    with ``indent``.

    A word is never cut (an evaluator name is one word, spaces and all): one longer than a line gets a line
    of its own, however long.
    """
    lines = [lead + word for word in words[:1]] or [lead]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(indent + word)
    return lines


def _terminal_cells(row: dict) -> tuple[list[str], list[str], str]:
    """(the pair as unbreakable words, the lines to print below it, the result), ASCII-only for any console.

    Below the pair go its own measures, in words: max_abs against atol/rtol and top-1 agreement for the same
    weights; the accuracy delta against the band and top-1 agreement against the floor for independently
    trained models. Then an error's message, or a failed row's first divergent layer.
    """
    result, pair, a, b = outcome(row), _pair(row), _text(row.get("evaluator_a")), row.get("evaluator_b")
    words = [pair]
    if not is_blank(b) and pair.startswith(f"{a} vs {b}"):  # each name one word: a pair wraps before "vs"
        words = [a, f"vs {b}", *filter(None, [pair[len(f"{a} vs {b}"):].strip()])]  # and " (probe inputs)"
    top1 = f"top-1 agreement {_pct(row.get('top1_agree'))}"
    if row.get("kind") == "trained":
        band, _, floor = _tolerance(row).translate(_ASCII).partition(", top1>=")  # "+-0.5pp, top1>=97.0%"
        measures = [f"accuracy delta {_pct(row.get('accuracy_delta'), True, 'pp')} (band {band})",
                    top1 + (f" (floor {floor})" if floor else "")]
        measured = not (is_blank(row.get("accuracy_delta")) and is_blank(row.get("top1_agree")))
    else:
        max_abs = "-" if is_blank(row.get("max_abs")) else f"{float(row['max_abs']):.2e}"
        measures = [f"max_abs {max_abs} (atol/rtol {_tolerance(row)}), {top1}"]
        measured = not is_blank(row.get("max_abs"))
    if result == "ERROR" and not measured:
        measures = []  # an error without numbers shows only its message
    if result == "ERROR" and not is_blank(row.get("error")):
        measures.append(f"error: {row['error']}")
    layer = row.get("first_divergent_layer")
    if result == "FAIL" and row.get("kind") != "trained" and not is_blank(layer):
        measures.append(f"first divergent layer: {layer}")
    below = []
    for text in measures:  # ASCII before fitting: "±" becomes two characters
        lines = _fit(text.translate(_ASCII).split(), WIDTH, "      ", "    ")
        if len(lines) > 4:  # a message of many lines is cut at a word: agreement.csv keeps it whole
            lines = _fit(text.translate(_ASCII).split(), WIDTH - 4, "      ", "    ")[:4]
            lines[-1] += " ..."
        below += lines
    return [word.translate(_ASCII) for word in words], below, result


def inconclusive_lines(report: Report) -> list[str]:
    """One line per check that could not decide: which check, why, and what to do."""
    rows = tidy_table("agreement", report.tables.get("agreement"), {}).to_dict("records")
    return [f"{_pair(row)}: {_text(row.get('reason'))}" for row in rows if outcome(row) == "INCONCLUSIVE"]


def _final_line(verdict: str, counts: Counter, runs: tuple[int, int]) -> str:
    total = sum(counts.values())
    if verdict == "passed":
        return f"verdict: PASSED ({total} checks)"
    if verdict == "failed":
        return f"verdict: FAILED ({counts['FAIL']} of {total} checks failed)"
    if verdict == "inconclusive":
        return (f"verdict: INCONCLUSIVE ({counts['INCONCLUSIVE']} of {total} checks could not decide, "
                f"{counts['PASS']} passed; not a pass: why below)")
    errored = " and ".join([f"{counts['ERROR']} of {total} checks"] * bool(counts["ERROR"])
                           + [f"{runs[0]} of {runs[1]} runs"] * bool(runs[0]))
    failed = f"; {counts['FAIL']} failed" if counts["FAIL"] else ""
    return f"verdict: {verdict.upper()} ({errored + ' errored' if errored else 'see summary.md'}{failed})"


def verdict_table(report: Report) -> str:
    """The console text of ``harness compare``, within WIDTH (80) columns, then the verdict line.

    Per check: the evaluator pair with its result at the right edge, then its measures indented below (and
    an error's message or a failed row's first divergent layer). Names are never cut: a pair too long for
    its line wraps before "vs", and a single name longer than a line keeps a line of its own.
    """
    rows = _ordered(tidy_table("agreement", report.tables.get("agreement"), {}))
    cells = [_terminal_cells(row) for row in rows]
    result_width = max([len("result"), *(len(result) for _, _, result in cells)])
    pair_width = WIDTH - result_width - 2
    lines = [f"{'check':<{pair_width}}  {'result':>{result_width}}"]
    for words, below, result in cells:
        first, *more = _fit(words, pair_width, "  ")
        lines += [f"{first:<{pair_width}}  {result:>{result_width}}", *more, *below]
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
