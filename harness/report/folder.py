"""Writing a report set into a folder: every table as CSV, the plots and summary.md, swapped in as one unit.

The set is written whole into a staging folder and then replaces the previous set in one step
(``harness.runs.files.replaced_set``): a reader, and a second ``harness compare`` writing into the same
folder, see the old set or the new one, never CSVs of one and summary.md of the other. Files of other
commands in the folder (parity.csv/png, bench.csv/png, the README) are kept.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .. import __version__
from ..runs.files import replaced_set
from . import plots
from .summary import render_summary
from .tables import COLUMNS, Report, tidy_table

PLOT_NAMES = ("curves.png", "confusion.png", "logit_diffs.png")
# The files of a report set: replaced together; a plot the new set lacks is dropped, never left from the old one.
SET_FILES = frozenset([*(f"{name}.csv" for name in COLUMNS), *PLOT_NAMES, "summary.md"])


def write_reports(report: Report, reports_dir: Path, provenance: dict) -> list[Path]:
    """Write every table as CSV, the plots and ``summary.md`` into ``reports_dir``.

    Args:
        report: what the comparison produced.
        reports_dir: the folder (created if needed).
        provenance: config_hash, harness_version, generated_at; the last two default to
            this harness's version and now (UTC).

    Returns:
        The written files: CSVs, PNGs, then summary.md.

    Raises:
        WriteFailed: the disk refused a file (full, read-only, ...); ``reports_dir`` keeps its previous set.
    """
    folder = Path(reports_dir)
    prov = {"harness_version": __version__, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **{k: v for k, v in (provenance or {}).items() if v is not None}}
    names = [*COLUMNS, *(n for n in report.tables if n not in COLUMNS)]
    tables = {n: tidy_table(n, report.tables.get(n), prov) for n in names}
    written = {f"{name}.csv" for name in tables}
    with replaced_set(folder, lambda name: name in SET_FILES or name in written, "report") as staging:
        for name, frame in tables.items():
            frame.to_csv(staging / f"{name}.csv", index=False)  # staging is private: no temporary names needed
        pngs = [folder / path.name for path in _write_plots(report, tables, staging)]
        csvs = [folder / f"{name}.csv" for name in tables]
        (staging / "summary.md").write_text(render_summary(report, tables, pngs, csvs, prov))
    return [*csvs, *pngs, folder / "summary.md"]


def _write_plots(report: Report, tables: dict[str, pd.DataFrame], folder: Path) -> list[Path]:
    per_class = tables["per_class"].dropna(subset=["class_index", "class_name"])
    names = {int(i): str(n) for i, n in zip(per_class["class_index"], per_class["class_name"])}
    same = tables["agreement"][tables["agreement"]["kind"] != "trained"].dropna(subset=["atol"])
    atols = {f"{a} vs {b}": float(t) for a, b, t in zip(same["evaluator_a"], same["evaluator_b"], same["atol"])}
    # Every PNG names its model and dataset: the report's title, else what the runs table says.
    runs = tables["runs"].dropna(subset=["model", "dataset"])
    title = report.title or ", ".join(dict.fromkeys(f"{m} on {d}" for m, d in zip(runs["model"], runs["dataset"])))
    made = {"curves.png": plots.plot_curves(tables["curves"], folder / "curves.png", title),
            "confusion.png": plots.plot_confusions(tables["confusion"], folder / "confusion.png", names, title=title),
            "logit_diffs.png": plots.plot_logit_diffs(report.logit_diffs, folder / "logit_diffs.png", atols,
                                                      title=title)}
    return [path for path in made.values() if path is not None]


