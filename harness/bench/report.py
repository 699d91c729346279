"""``harness bench``'s output: ``bench.csv``, ``bench.png`` and the lines printed while it runs."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .. import __version__
from ..runs.files import atomic_path, ensure_writable_dir, locked_folder
from .measure import PHASES

COLUMNS = ("backend device model dataset data_source phase batch_size steps repeats images_per_s images_per_s_min "
           "images_per_s_max ms_per_step harness_to_bare harness_to_bare_min harness_to_bare_max ratio_to_pytorch "
           "peak_rss_mib peak_rss_scope threads load_average_start load_average_end other_cores_busy cores under_load "
           "versions harness_version generated_at").split()


def add_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """``ratio_to_pytorch`` on every row: images/s over PyTorch's in the same model, phase and batch size."""
    torch_rows = frame[frame.backend == "pytorch"].set_index(["model", "phase", "batch_size"])["images_per_s"]
    return frame.assign(ratio_to_pytorch=[
        row.images_per_s / torch_rows.get((row.model, row.phase, row.batch_size), float("nan"))
        for row in frame.itertuples()])


def bench_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as bench.csv's table: ratios added, provenance filled in, fixed column order."""
    frame = add_ratios(pd.DataFrame(rows))
    frame = frame.assign(harness_version=__version__, generated_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return frame.reindex(columns=COLUMNS)


def progress_line(rows: list[dict]) -> str:
    """One batch size of one backend as it finishes, the harness/bare ratio included."""
    by_phase = {row["phase"]: row for row in rows}
    first = rows[0]
    parts = [f"{phase} {row['images_per_s']:,.0f}" for phase, row in by_phase.items()]
    train = by_phase["train"]
    ratio = (f"{train['harness_to_bare']:.3f} (repeats {train['harness_to_bare_min']:.3f}-"
             f"{train['harness_to_bare_max']:.3f})")
    load = (f" | UNDER LOAD: other processes kept {first['other_cores_busy']:.1f} of {first['cores']} cores busy"
            if first.get("under_load") else "")
    return (f"{first['backend']:9s} {first['model']} batch {first['batch_size']:<4d} images/s: "
            f"{' | '.join(parts)} | harness/bare {ratio}{load}")


def ratio_lines(frame: pd.DataFrame) -> list[str]:
    """MindSpore (every non-PyTorch backend) over PyTorch, per model, phase and batch size."""
    lines = []
    for row in frame[frame.backend != "pytorch"].dropna(subset=["ratio_to_pytorch"]).itertuples():
        lines.append(f"{row.backend}/pytorch {row.model:8s} {row.phase:18s} batch {row.batch_size:<4d} "
                     f"{row.ratio_to_pytorch:.2f}x")
    if "under_load" in frame and frame["under_load"].fillna(False).astype(bool).any():
        lines.append("note: some measurements ran while other processes kept more than half the cores busy "
                     "(under_load in bench.csv): rerun them on a quiet machine before comparing")
    return lines


def plot_bench(frame: pd.DataFrame, path: Path) -> Path | None:
    """Grouped bars of images/s (median) per phase, one panel per model, log y.

    Whiskers (min-max over the repeats) are drawn only where max > min: with one repeat there is no
    spread, and a zero-length whisker's caps would read as a measured one.

    Args:
        frame: bench.csv's table.
        path: where the PNG goes.

    Returns:
        ``path``, or None when the table has no rows.
    """
    from ..report.plots import colour, figure_title, plt, save_figure  # the Agg backend is selected there

    models = list(dict.fromkeys(frame.model))
    if not models:
        return None
    series = list(dict.fromkeys(zip(frame.backend, frame.batch_size)))
    batches = sorted({b for _, b in series})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.8), squeeze=False)
    width = 0.8 / len(series)
    for ax, model in zip(axes[0], models):
        rows = frame[frame.model == model]
        whiskers = False
        for index, (backend, batch) in enumerate(series):
            part = rows[(rows.backend == backend) & (rows.batch_size == batch)].set_index("phase")
            xs = [i + (index - (len(series) - 1) / 2) * width for i, phase in enumerate(PHASES)]
            values = [part["images_per_s"].get(phase, float("nan")) for phase in PHASES]
            lows = [part["images_per_s_min"].get(p, v) for p, v in zip(PHASES, values)]
            highs = [part["images_per_s_max"].get(p, v) for p, v in zip(PHASES, values)]
            shade = 0.35 + 0.65 * (batches.index(batch) + 1) / len(batches)
            ax.bar(xs, values, width, color=colour(backend), alpha=shade, label=f"{backend}, batch {batch}",
                   edgecolor="black", linewidth=0.4)
            spread = [i for i, (low, high) in enumerate(zip(lows, highs)) if high > low]  # False for NaN too
            if spread:
                whiskers = True
                ax.errorbar([xs[i] for i in spread], [values[i] for i in spread], fmt="none", ecolor="black",
                            elinewidth=0.8, capsize=2, yerr=[[values[i] - lows[i] for i in spread],
                                                             [highs[i] - values[i] for i in spread]])
        ax.set_yscale("log")
        ax.set_xticks(range(len(PHASES)), PHASES, fontsize=8)
        ax.set_title(f"{model} on {rows['dataset'].iloc[0]} ({rows['device'].iloc[0]})")
        ax.set_ylabel("images/s, median of repeats" + ("\n(whiskers: min-max over repeats)" if whiskers else ""))
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    subject = ", ".join(dict.fromkeys(f"{m} on {d}" for m, d in zip(frame.model, frame.dataset)))
    fig.suptitle(figure_title("harness bench: images/s per phase, backend and batch size", subject))
    return save_figure(fig, path)



def write_bench(rows: list[dict], reports_dir: Path) -> tuple[pd.DataFrame, Path, Path | None]:
    """Write ``bench.csv`` (atomically) and ``bench.png`` into ``reports_dir``; returns the table and both paths."""
    ensure_writable_dir(reports_dir, "reports folder")
    frame = bench_frame(rows)
    csv = Path(reports_dir) / "bench.csv"
    # Locked: a report set swapped into the same folder at this moment would otherwise drop these files.
    with locked_folder(reports_dir), atomic_path(csv) as tmp:
        frame.to_csv(tmp, index=False)
    with locked_folder(reports_dir):
        return frame, csv, plot_bench(frame, Path(reports_dir) / "bench.png")
