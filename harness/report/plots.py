"""The report's PNG plots: training curves, confusion matrices, logit-difference histograms.

Each function takes a tidy table (or dict of arrays) and a path, writes the PNG
atomically and returns the path, or returns None when there is nothing to plot.
No display is ever opened: the Agg backend is selected before pyplot loads.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and SSH sessions have no display

import matplotlib.pyplot as plt  # noqa: E402  (must follow matplotlib.use)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..runs.files import atomic_path  # noqa: E402

DPI = 120
# Fixed colours so a backend looks the same in every plot and every report.
BACKEND_COLOURS = {"pytorch": "tab:orange", "mindspore": "tab:blue", "reference": "tab:green"}
# Series that are not one backend (pairs, unknown backends) avoid the backends' colours.
_SPARE = ["tab:purple", "tab:red", "tab:cyan", "tab:brown", "tab:olive", "tab:pink", "tab:gray"]
DIFF_FLOOR = 1e-12  # smallest |a-b| bin edge; float32 rounding sits far above it


def colour(name: str, index: int = 0) -> str:
    """The colour of a backend (or any series name), stable across plots."""
    return BACKEND_COLOURS.get(str(name).split(":")[0], _SPARE[index % len(_SPARE)])


def save_figure(fig, path: Path) -> Path:
    """Lay out, write atomically, and free the figure (pyplot keeps every open one)."""
    path = Path(path)
    try:
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as floats (NaN where absent or blank), whatever dtype the CSV round trip left."""
    if column not in frame:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce")


def _labels(frame: pd.DataFrame, column: str, default) -> pd.Series:
    """A text column with its blanks set to ``default`` (a column the tidy schema added is all-NaN float)."""
    if column not in frame:
        return pd.Series(default, index=frame.index, dtype=object)
    return frame[column].astype(object).where(frame[column].notna(), default)


def _series_label(backend: str, run_id: str, many_runs: bool) -> str:
    return f"{backend} ({run_id})" if many_runs and run_id else str(backend)


def _groups(frame: pd.DataFrame):
    """(label, colour, line style, rows) per backend/run, in a stable order.

    Styles differ as well as colours: two backends that agree draw the same curve, and the
    second must stay visible on top of the first.
    """
    keys = frame.assign(run_id=_labels(frame, "run_id", ""), backend=_labels(frame, "backend", "?"))
    grouped = list(keys.groupby(["backend", "run_id"], sort=True, dropna=False))
    many = keys.groupby("backend")["run_id"].nunique().max() > 1 if len(keys) else False
    for index, ((backend, run_id), rows) in enumerate(grouped):
        style = {"linestyle": ["-", "--", ":", "-."][index % 4], "marker": "osD^"[index % 4]}
        yield _series_label(backend, run_id, many), colour(backend, index), style, rows


def _plot_loss(ax, steps: pd.DataFrame) -> bool:
    """Raw per-step loss (light) under its rolling mean; False when there is none."""
    drawn = False
    for label, col, style, rows in _groups(steps):
        x, y = _numeric(rows, "step"), _numeric(rows, "loss")
        keep = x.notna() & y.notna()
        if not keep.any():
            continue
        x, y = x[keep].to_numpy(), y[keep].to_numpy()
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        # a twentieth of the run (at most 50 steps) smooths batch noise without hiding the trend
        window = max(1, min(50, len(y) // 20))
        smooth = pd.Series(y).rolling(window, min_periods=1).mean()
        ax.plot(x, y, color=col, alpha=0.25, linewidth=0.8)
        mean = f" (mean of {window} steps)" if window > 1 else ""
        ax.plot(x, smooth, color=col, linewidth=1.8, linestyle=style["linestyle"], label=label + mean)
        drawn = True
    ax.set(title="Training loss per step", xlabel="step", ylabel="cross-entropy loss")
    return drawn


def _plot_accuracy(ax, epochs: pd.DataFrame) -> bool:
    """Per-epoch test accuracy in percent; False when there is none."""
    drawn = False
    for label, col, style, rows in _groups(epochs):
        x, y = _numeric(rows, "epoch"), _numeric(rows, "test_accuracy")
        keep = x.notna() & y.notna()
        if keep.any():
            order = np.argsort(x[keep].to_numpy(), kind="stable")
            ax.plot(x[keep].to_numpy()[order], 100 * y[keep].to_numpy()[order],
                    color=col, linewidth=1.8, markersize=6 - 1.5 * (style["marker"] != "o"), label=label, **style)
            drawn = True
    ax.set(title="Test accuracy per epoch", xlabel="epoch", ylabel="test accuracy (%)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return drawn


def plot_curves(curves: pd.DataFrame, path: Path, title: str | None = None) -> Path | None:
    """Loss per step and test accuracy per epoch, every backend overlaid, two panels.

    Args:
        curves: the tidy ``curves`` table (kind is "step" or "epoch").
        path: where the PNG goes.
        title: an optional figure title (the report's).

    Returns:
        ``path``, or None when the table holds neither a loss nor an accuracy.
    """
    if curves is None or curves.empty or "backend" not in curves:
        return None
    # Rows without a kind are told apart by what they hold: a step has a loss, an epoch an accuracy.
    guess = pd.Series(np.where(_numeric(curves, "loss").notna(), "step", "epoch"), index=curves.index)
    kind = _labels(curves, "kind", guess).astype(str)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    has_loss = _plot_loss(left, curves[kind == "step"])
    has_acc = _plot_accuracy(right, curves[kind == "epoch"])
    if not (has_loss or has_acc):
        plt.close(fig)
        return None
    for ax, drawn in ((left, has_loss), (right, has_acc)):
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _matrix(rows: pd.DataFrame, classes: list[int]) -> np.ndarray:
    """Counts as a true x predicted array over ``classes``."""
    counts = rows.assign(count=_numeric(rows, "count").fillna(0)).pivot_table(
        index="true_class", columns="predicted_class", values="count", aggfunc="sum", fill_value=0)
    return counts.reindex(index=classes, columns=classes, fill_value=0).to_numpy(dtype=float)


def _draw_matrix(ax, matrix: np.ndarray, names: list[str], norm, annotate: bool, title: str):
    image = ax.imshow(matrix, cmap="Blues", norm=norm)
    ticks = np.arange(len(names))
    long_names = len(names) > 10 or max(len(n) for n in names) > 3  # would overlap if horizontal
    ax.set_xticks(ticks, names, rotation=45 if long_names else 0, ha="right" if long_names else "center", fontsize=7)
    ax.set_yticks(ticks, names, fontsize=7)
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    if annotate:
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 * norm.vmax else "black")
    return image


def plot_confusions(confusion: pd.DataFrame, path: Path, class_names: dict | None = None) -> Path | None:
    """Confusion matrices side by side, one panel per backend/evaluator, one colour scale.

    Args:
        confusion: the tidy ``confusion`` table.
        path: where the PNG goes.
        class_names: optional class index -> name, for the tick labels.

    Returns:
        ``path``, or None when the table is empty.
    """
    if confusion is None or confusion.empty:
        return None
    frame = confusion.dropna(subset=["true_class", "predicted_class"]).copy()
    if frame.empty:
        return None
    frame["true_class"] = frame["true_class"].astype(int)
    frame["predicted_class"] = frame["predicted_class"].astype(int)
    classes = sorted(set(frame["true_class"]) | set(frame["predicted_class"]))
    names = [str((class_names or {}).get(c, c)) for c in classes]
    panels = [(e if str(e).startswith(str(b)) else f"{b} / {e}", _matrix(rows, classes)) for (b, e), rows in
              frame.groupby(["backend", "evaluator"], sort=True, dropna=False)]
    # A square-root scale keeps the few off-diagonal mistakes visible next to a bright diagonal.
    norm = PowerNorm(0.5, vmin=0, vmax=max(1.0, max(m.max() for _, m in panels)))
    ncols = min(len(panels), 4)
    nrows = -(-len(panels) // ncols)
    side = 3.2 if len(classes) <= 10 else 4.5
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols + 1, side * nrows + 0.6), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (label, matrix) in zip(axes.flat, panels):
        total = matrix.sum()
        accuracy = f", accuracy {100 * np.trace(matrix) / total:.2f}%" if total else ""
        image = _draw_matrix(ax, matrix, names, norm, len(classes) <= 10, f"{label}\nn={total:.0f}{accuracy}")
    # tight_layout leaves the right strip to one shared colorbar (constrained layout is 2x slower here)
    fig.tight_layout(rect=(0, 0, 1 - 0.9 / fig.get_figwidth(), 1))
    fig.colorbar(image, cax=fig.add_axes((1 - 0.75 / fig.get_figwidth(), 0.15, 0.12 / fig.get_figwidth(), 0.7)),
                 ticks=MaxNLocator(6, integer=True), label="count (square-root scale)")
    return save_figure(fig, path)


def _hist_pair(ax, label: str, values: np.ndarray, bins: np.ndarray, col: str, atol: float | None) -> None:
    """One pair's panel: step histogram, zero/NaN counts and max in the legend, dashed atol line."""
    ok = values[np.isfinite(values)]
    zeros, nans = int((ok == 0).sum()), int(values.size - ok.size)
    positive = np.clip(ok[ok > 0], DIFF_FLOOR, None)  # below the floor: shown in the first bin
    extra = f", zeros={zeros}" + (f", non-finite={nans}" if nans else "")
    top = f"{ok.max():.2e}" if ok.size else "nan"
    ax.hist(positive, bins=bins, histtype="stepfilled", alpha=0.35, edgecolor=col, color=col, linewidth=1.4,
            label=f"n={values.size}{extra}, max={top}")
    if atol is not None and np.isfinite(atol) and atol > 0:
        ax.axvline(atol, linestyle="--", linewidth=1.2, color="black", label=f"atol {atol:.2g}")
    ax.set_title(label, fontsize=9, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def plot_logit_diffs(logit_diffs: dict[str, np.ndarray], path: Path,
                     tolerances: dict[str, float] | None = None) -> Path | None:
    """Histogram of |a - b| per same-weights pair on a shared log-x axis, with tolerance lines.

    One panel per pair (overlaid, ten pairs are unreadable). Exact zeros cannot sit on a log
    axis, so they are counted in the legend instead; NaNs likewise.

    Args:
        logit_diffs: pair label ("A vs B") -> flattened |a - b|.
        path: where the PNG goes.
        tolerances: optional pair label -> atol, drawn as a dashed vertical line.

    Returns:
        ``path``, or None when there are no differences to plot.
    """
    diffs = {k: np.abs(np.asarray(v, dtype=np.float64).ravel()) for k, v in (logit_diffs or {}).items()}
    diffs = {k: v for k, v in diffs.items() if v.size}  # the caller's order groups pairs by run
    if not diffs:
        return None
    finite = np.concatenate([v[np.isfinite(v)] for v in diffs.values()])
    positive = finite[finite > 0]
    top = max(float(finite.max()) if finite.size else 0.0, DIFF_FLOOR * 10)
    bins = np.logspace(np.log10(DIFF_FLOOR), np.log10(top) + 0.01, 60)
    fig, axes = plt.subplots(len(diffs), 1, figsize=(9, max(3.0, 0.9 + 1.3 * len(diffs))), sharex=True,
                             squeeze=False, layout="constrained")
    palette = plt.get_cmap("tab10" if len(diffs) <= 10 else "tab20").colors
    for index, (ax, label) in enumerate(zip(axes[:, 0], diffs)):
        _hist_pair(ax, label, diffs[label], bins, palette[index % len(palette)], (tolerances or {}).get(label))
    atols = [t for t in (tolerances or {}).values() if t and np.isfinite(t)]
    # Start the view a decade below the smallest difference: empty decades down to the floor say nothing.
    left = max(DIFF_FLOOR, 10 ** np.floor(np.log10(positive.min()))) if positive.size else DIFF_FLOOR
    axes[-1, 0].set(xscale="log", xlim=(left, 2 * max([top, *atols])), xlabel="|a - b| (log scale)")
    fig.supylabel("number of logits")
    fig.suptitle("|logit difference| per same-weights pair (zeros counted in each legend)")
    return save_figure(fig, path)


def plot_parity(parity: pd.DataFrame, path: Path, update_rel: float, weight_rel: float) -> Path | None:
    """Lockstep weight drift and synchronised update differences per step, worst tensor per step, log y;
    with the float64 columns, also what that tensor was allowed (the budget plus float32's spread, and in
    lockstep Adam's steps along float32 noise), and in synchronised steps over the budget the difference left
    once decisions are matched."""
    steps = parity[parity["mode"].isin(["lockstep", "synchronised"])] if not parity.empty else parity
    if steps.empty:
        return None
    modes = [m for m in ("lockstep", "synchronised") if (steps["mode"] == m).any()]
    fig, axes = plt.subplots(1, len(modes), figsize=(6.4 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        rows = steps[steps["mode"] == mode]
        worst = rows.groupby("step").agg(rel=("rel", "max"), loss_diff=("loss_diff", "max"))
        floor = 1e-12  # exact agreement would vanish from a log axis
        ax.semilogy(worst.index, worst["rel"].clip(lower=floor), marker=".", color="tab:purple",
                    label="worst tensor: max|diff| / max|value|" if mode == "lockstep" else "worst tensor: update rel. diff")
        ax.semilogy(worst.index, worst["loss_diff"].clip(lower=floor), marker=".", color="tab:gray", label="|loss diff|")
        if "allowed" in rows:
            worst_rows = rows.loc[rows.groupby("step")["rel"].idxmax()]
            noise = "noise" in rows and bool((rows["noise"] > 0).any())
            ax.semilogy(worst_rows["step"], worst_rows["allowed"], ls=":", color="tab:purple",
                        label="its allowance: budget + float32 spread" + (" + Adam's noise steps" if noise else ""))
            if noise:  # the allowance then tracks the worst row: show what is left once it is taken off
                left = (rows["rel"] - rows["noise"]).groupby(rows["step"]).max()
                ax.semilogy(left.index, left.clip(lower=floor), marker=".", color="tab:green",
                            label="worst tensor less Adam's noise steps")
        if "rel_matched" in rows and rows["rel_matched"].notna().any():  # steps over the budget only
            matched = rows["rel_matched"].groupby(rows["step"]).max().dropna()
            ax.semilogy(matched.index, matched.clip(lower=floor), marker="x", ls="", color="tab:green",
                        label="worst tensor, each side's undecidable decisions matched")
        ax.axhline(weight_rel if mode == "lockstep" else update_rel, ls="--", color="tab:red", label="budget")
        ax.set(title=f"{mode}", xlabel="step", ylabel="difference (log)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    return save_figure(fig, path)
