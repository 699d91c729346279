"""A sweep's report set: sweep_runs.csv, sweep_seeds.csv, sweep.csv, sweep_pairs.csv, sweep.png and summary.md.

Tables are tidy (one row per fact, fixed column order, provenance columns): sweep_runs.csv one row per run,
sweep_seeds.csv one row per config, seed and pair of backends (what that seed's ``harness compare`` found),
sweep.csv one row per config and backend across seeds, sweep_pairs.csv one row per config and pair with the
verdict. The set replaces the previous one in ``--reports`` whole (``runs.files.replaced_set``); each seed's own
compare report lives in ``<reports>/sweep/<config>-seed<N>/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..progress import format_seconds
from ..report import plots
from ..report.summary import markdown_table
from ..report.tables import tidy_table
from ..runs.files import replaced_set
from .stats import CONFIDENCE, ERROR, FAIL, INCONCLUSIVE, PASS

SEED_REPORTS = "sweep"  # sub-folder of --reports holding each seed's compare report
COLUMNS: dict[str, list[str]] = {name: columns.split() for name, columns in {
    "sweep_runs": "variant config model dataset seed backend device role status how test_accuracy train_seconds "
                  "images_per_s seconds wall_seconds attempts bytes_shipped host run_dir error",
    "sweep_seeds": "variant config model dataset seed backend_a backend_b status accuracy_a accuracy_b accuracy_delta "
                   "top1_agree control_top1_agree min_top1_agree checks checks_failed failed_checks compare_verdict "
                   "reason error report",
    "sweep": "variant config model dataset backend device role seeds seed_list failed accuracy_mean accuracy_std "
             "accuracy_min accuracy_max accuracy_ci_low accuracy_ci_high train_seconds_mean images_per_s_mean",
    "sweep_pairs": "variant config model dataset backend_a backend_b seeds accuracy_a_mean accuracy_b_mean "
                   "accuracy_delta_mean accuracy_delta_std delta_ci_low delta_ci_high confidence accuracy_band "
                   "top1_agree_mean top1_agree_min control_top1_agree_mean min_top1_agree_mean seeds_below_floor "
                   "checks_failed verdict status passed reason",
}.items()}
_INTEGERS = {"seed", "attempts", "bytes_shipped", "seeds", "failed", "checks", "checks_failed", "seeds_below_floor"}
SET_FILES = frozenset([*(f"{name}.csv" for name in COLUMNS), "sweep.png", "summary.md"])


@dataclass
class SweepReport:
    """What a sweep found, as the writer receives it.

    Attributes:
        title: the sweep file and what it spans.
        tables: a DataFrame per key of ``COLUMNS``.
        verdict: PASS, FAIL, INCONCLUSIVE or ERROR (``stats.overall``).
        axis_names: the variant axes (extra columns after ``dataset``).
        timing: wall_seconds (the sweep), run_seconds (the sum of its runs' worker time), executor, workers.
    """

    title: str
    tables: dict[str, pd.DataFrame]
    verdict: str
    axis_names: tuple[str, ...]
    timing: dict


def _ordered(name: str, frame: pd.DataFrame, axis_names: tuple[str, ...]) -> pd.DataFrame:
    schema = COLUMNS[name]
    at = schema.index("dataset") + 1 if "dataset" in schema else len(schema)
    columns = [*schema[:at], *(a for a in axis_names if a not in schema), *schema[at:]]
    frame = (frame if frame is not None else pd.DataFrame()).reindex(columns=columns)
    for column in _INTEGERS.intersection(frame.columns):
        values = pd.to_numeric(frame[column], errors="coerce")
        if (values.dropna() % 1 == 0).all():
            frame[column] = values.astype("Int64")  # "2", not "2.0", beside empty cells
    return frame


def write_sweep_reports(report: SweepReport, folder: Path, provenance: dict | None = None) -> list[Path]:
    """Write the sweep's tables, sweep.png and summary.md into ``folder`` as one set.

    Returns:
        The written files.

    Raises:
        WriteFailed: the disk refused a file; ``folder`` keeps its previous set.
    """
    folder = Path(folder)
    prov = {"harness_version": __version__, "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(provenance or {})}
    tables = {name: tidy_table(name, _ordered(name, report.tables.get(name), report.axis_names), prov)
              for name in COLUMNS}
    with replaced_set(folder, lambda name: name in SET_FILES, "sweep report") as staging:
        for name, frame in tables.items():
            frame.to_csv(staging / f"{name}.csv", index=False)
        png = plot_sweep(tables, staging / "sweep.png", report.title)
        (staging / "summary.md").write_text(render_summary(report, tables, png is not None))
    return [*(folder / f"{name}.csv" for name in tables), *([folder / "sweep.png"] if png else []),
            folder / "summary.md"]


def _pct(value, digits: int = 2) -> str:
    return "—" if value is None or pd.isna(value) else f"{100 * float(value):.{digits}f}%"


def _points(value) -> str:
    return "—" if value is None or pd.isna(value) else f"{100 * float(value):+.2f}"


def _interval(low, high, signed: bool = True) -> str:
    """``[-0.21, +0.45]`` points (a difference), or ``[86.92%, 91.00%]`` (an accuracy: ``signed`` false)."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return "—"
    if not signed:
        return f"[{100 * float(low):.2f}%, {100 * float(high):.2f}%]"
    return f"[{100 * float(low):+.2f}, {100 * float(high):+.2f}]"


def _count(verdicts) -> str:
    counts = {v: list(verdicts).count(v) for v in (PASS, FAIL, INCONCLUSIVE, ERROR)}
    return ", ".join(f"{n} {v.lower()}" for v, n in counts.items() if n) or "no pair"


def render_summary(report: SweepReport, tables: dict[str, pd.DataFrame], with_png: bool) -> str:
    """summary.md: the verdict, accuracy across seeds, the pairs' verdicts, the runs, and how it is decided."""
    pairs, per_backend, runs = tables["sweep_pairs"], tables["sweep"], tables["sweep_runs"]
    lines = [f"# Sweep: {report.title}", "",
             f"**{report.verdict}**: {len(pairs)} config pair(s) judged across seeds ({_count(pairs['verdict'])}).", ""]
    lines += ["## Accuracy across seeds", ""]
    table = markdown_table(["config", "backend", "role", "seeds", "mean", "std", "min", "max",
                            f"{CONFIDENCE:.0%} CI of the mean"],
                           [[r.config, r.backend, r.role, r.seeds, _pct(r.accuracy_mean),
                             "—" if pd.isna(r.accuracy_std) else f"{100 * r.accuracy_std:.2f} pt",
                             _pct(r.accuracy_min), _pct(r.accuracy_max),
                             _interval(r.accuracy_ci_low, r.accuracy_ci_high, signed=False)]
                            for r in per_backend.itertuples()], right={3, 4, 5, 6, 7})
    lines += [table or "No run completed.", ""]
    lines += ["## Pairs of backends, judged across seeds", ""]
    table = markdown_table(["config", "pair", "seeds", "Δ accuracy (points)", f"{CONFIDENCE:.0%} CI",
                            "top-1 agree (min)", "control", "verdict", "why"],
                           [[r.config, f"{r.backend_a} vs {r.backend_b}", r.seeds, _points(r.accuracy_delta_mean),
                             _interval(r.delta_ci_low, r.delta_ci_high),
                             f"{_pct(r.top1_agree_mean)} ({_pct(r.top1_agree_min)})",
                             _pct(r.control_top1_agree_mean), f"**{r.verdict}**", r.reason]
                            for r in pairs.itertuples()], right={2, 3})
    lines += [table or "No pair: the sweep has one backend, so nothing was compared across frameworks.", ""]
    lines += ["## Runs", "", _runs_line(runs, report.timing), ""]
    failed = runs[runs["status"] != "completed"]
    if len(failed):
        lines += [markdown_table(["run", "status", "error"],
                                 [[f"{r.config} seed {r.seed} {r.backend} {r.role}", r.status, r.error]
                                  for r in failed.itertuples()]), ""]
    seeds = tables["sweep_seeds"].dropna(subset=["report"]).drop_duplicates("report")
    if len(seeds):
        lines += ["Each seed's comparison, as `harness compare` reports it:", ""]
        lines += [f"- {r.config} seed {r.seed}: {r.compare_verdict} — [{r.report}]({r.report})"
                  for r in seeds.itertuples()]
        lines += [""]
    lines += ["## How the verdict is reached", "", _method(pairs), ""]
    files = [f"- [{name}.csv]({name}.csv)" for name in COLUMNS] + (["- [sweep.png](sweep.png)"] if with_png else [])
    lines += ["## Files", "", *files]
    return "\n".join(lines) + "\n"


def _runs_line(runs: pd.DataFrame, timing: dict) -> str:
    how = runs["how"].fillna("").value_counts()
    counted = ", ".join(f"{int(how[k])} {k}" for k in ("trained", "resumed", "reused") if how.get(k))
    errors = int((runs["status"] != "completed").sum())
    wall, total = timing.get("wall_seconds"), timing.get("run_seconds")
    line = f"{len(runs)} runs ({counted or 'none finished'}{f', {errors} not completed' if errors else ''})"
    if wall is not None:
        line += f" in {format_seconds(wall)} on {timing.get('executor', '?')}"
    if total:
        line += f"; the runs' own time adds up to {format_seconds(total)}"
        line += f" ({total / wall:.1f}x the wall time)" if wall else ""
    return line + "."


def _method(pairs: pd.DataFrame) -> str:
    band = pairs["accuracy_band"].dropna()
    band_text = f"±{100 * float(band.iloc[0]):.1f} points" if len(band) else "the trained accuracy band"
    return (f"Seed s gives both backends the same initial weights and data order, so accuracies are paired: a pair "
            f"PASSES when the {CONFIDENCE:.0%} Student t interval of the per-seed accuracy difference lies within "
            f"{band_text}, top-1 agreement reached the control run's floor in every seed, and every same-weights "
            "check of every seed passed. It FAILS when a same-weights check failed, the interval lies wholly outside "
            "the band, or agreement stays below the floor throughout; otherwise it is INCONCLUSIVE (more seeds "
            "decide). MLPerf's reference convergence check is the anchor: it too judges against a distribution over "
            "seeds, never one run, but it compares epochs to a quality target, one-sided and unpaired, against "
            "reference runs; this compares final accuracy after a fixed budget, two-sided and paired by seed, "
            "with a control run MLPerf has no counterpart of (harness/sweep/stats.py says more).")


def plot_sweep(tables: dict[str, pd.DataFrame], path: Path, title: str | None = None) -> Path | None:
    """Left: each config and backend's test accuracy per seed, with mean ± std. Right: each pair's accuracy
    difference per seed with its t interval, and the band that counts as equal.

    Returns:
        ``path``, or None when no run completed.
    """
    runs, pairs, seeds = tables["sweep_runs"], tables["sweep_pairs"], tables["sweep_seeds"]
    done = runs[(runs["status"] == "completed") & (runs["role"] == "run")]
    if done.empty:
        return None
    fig, (left, right) = plots.plt.subplots(1, 2, figsize=(12, 4.8))
    _plot_accuracies(left, done)
    _plot_pairs(right, pairs, seeds)
    fig.suptitle(plots.figure_title("Sweep across seeds", title))
    return plots.save_figure(fig, path)


def _plot_accuracies(ax, done: pd.DataFrame) -> None:
    configs = list(dict.fromkeys(done["config"]))
    backends = list(dict.fromkeys(done["backend"]))
    width = 0.8 / max(len(backends), 1)
    for j, backend in enumerate(backends):
        for i, config in enumerate(configs):
            values = pd.to_numeric(done[(done["config"] == config) & (done["backend"] == backend)]["test_accuracy"],
                                   errors="coerce").dropna() * 100
            if values.empty:
                continue
            x = i + (j - (len(backends) - 1) / 2) * width
            ax.scatter(np.full(len(values), x), values, s=14, alpha=0.6, color=plots.colour(backend, j),
                       label=backend if i == 0 else None)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            ax.errorbar([x], [values.mean()], yerr=[std], fmt="_", markersize=14, capsize=4, color="black")
    ax.set_xticks(range(len(configs)), [_short(c) for c in configs], rotation=15, fontsize=8)
    ax.set_xlim(-0.6, len(configs) - 0.4)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy per seed (bar: mean ± std)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot_pairs(ax, pairs: pd.DataFrame, seeds: pd.DataFrame) -> None:
    if pairs.empty:
        ax.text(0.5, 0.5, "one backend: no pair", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_axis_off()
        return
    labels = []
    for i, row in enumerate(pairs.itertuples()):
        mine = seeds[(seeds["variant"] == row.variant) & (seeds["backend_a"] == row.backend_a)
                     & (seeds["backend_b"] == row.backend_b)]
        deltas = pd.to_numeric(mine["accuracy_delta"], errors="coerce").dropna() * 100
        ax.scatter(deltas, np.full(len(deltas), i), s=14, alpha=0.6, color="tab:gray")
        if not (pd.isna(row.delta_ci_low) or pd.isna(row.delta_ci_high)):
            colour = {PASS: "tab:green", FAIL: "tab:red"}.get(row.verdict, "tab:orange")
            ax.plot([100 * row.delta_ci_low, 100 * row.delta_ci_high], [i, i], color=colour, linewidth=3)
        labels.append(f"{_short(row.config)}\n{row.backend_a} - {row.backend_b}: {row.verdict}")
    band = pairs["accuracy_band"].dropna()
    if len(band):
        ax.axvspan(-100 * float(band.iloc[0]), 100 * float(band.iloc[0]), color="tab:green", alpha=0.1,
                   label="counts as equal")
        ax.legend(fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("accuracy difference (points); line: its 95% t interval over seeds")
    ax.set_title("Paired difference per seed", fontsize=10)
    ax.grid(alpha=0.3)


def _short(text: str, width: int = 40) -> str:
    text = str(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def console_lines(report: SweepReport) -> list[str]:
    """What ``harness sweep`` prints at the end: accuracy per config and backend, each pair's verdict, the verdict."""
    per_backend, pairs = report.tables["sweep"], report.tables["sweep_pairs"]
    lines = []
    if not per_backend.empty:
        width = max(len("config"), *(len(str(c)) for c in per_backend["config"])) + 2
        lines.append(f"{'config':<{width}}{'backend':<12}{'role':<9}{'seeds':>5}  accuracy (mean ± std)")
        for r in per_backend.itertuples():
            std = "" if pd.isna(r.accuracy_std) else f" ± {100 * r.accuracy_std:.2f}"
            lines.append(f"{str(r.config):<{width}}{r.backend:<12}{r.role:<9}{int(r.seeds):>5}  "
                         f"{_pct(r.accuracy_mean)}{std}" + (f"  ({int(r.failed)} failed)" if r.failed else ""))
    for r in pairs.itertuples():
        agree = "" if pd.isna(r.top1_agree_mean) else f", top-1 agree {_pct(r.top1_agree_mean)}"
        control = "" if pd.isna(r.control_top1_agree_mean) else f" (control {_pct(r.control_top1_agree_mean)})"
        lines.append(f"{r.config}: {r.backend_a} vs {r.backend_b} over {int(r.seeds)} seeds: Δ accuracy "
                     f"{_points(r.accuracy_delta_mean)} points {_interval(r.delta_ci_low, r.delta_ci_high)}"
                     f"{agree}{control}: {r.verdict}")
        if r.verdict != PASS:
            lines.append(f"  why: {r.reason}")
    wall, total = report.timing.get("wall_seconds"), report.timing.get("run_seconds")
    timing = f" in {format_seconds(wall)}" if wall is not None and not math.isnan(wall) else ""
    timing += f" (runs' own time {format_seconds(total)})" if total else ""
    lines.append(f"verdict: {report.verdict} ({_count(pairs['verdict'] if not pairs.empty else [])}){timing}")
    return lines
