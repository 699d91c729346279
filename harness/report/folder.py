"""Writing a report set into a folder: every table as CSV, the plots and summary.md, each file atomically."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from .. import __version__
from ..runs.files import atomic_path, write_text
from . import plots
from .summary import render_summary
from .tables import COLUMNS, Report, tidy_table


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
    for name in [name for name, path in made.items() if path is None]:
        (folder / name).unlink(missing_ok=True)  # a plot left from an earlier report would mislead
    return [path for path in made.values() if path is not None]


