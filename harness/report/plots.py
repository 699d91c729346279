"""The report's PNG plots: training curves, confusion matrices, logit-difference histograms, parity.

Each function takes a tidy table (or dict of arrays) and a path, writes the PNG
atomically and returns the path, or returns None when there is nothing to plot.
Every figure is titled with what it draws and, when the caller says, the model and dataset
(a PNG is often looked at alone, away from the summary that names them).
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


def figure_title(what: str, subject: str | None) -> str:
    """A figure's title: what is drawn, then the subject (model, dataset, ...) when there is one.

    Args:
        what: what the figure draws, e.g. "Training curves".
        subject: e.g. the report's title "lenet5 on mnist-sample, 3 epochs, config 1a2b3c4d", or None.

    Returns:
        One line when short enough to stay readable at the figure's width, else two.
    """
    if not subject:
        return what
    return f"{what}: {subject}" if len(what) + len(subject) <= 90 else f"{what}\n{subject}"


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
        if window > 1:  # with a window of one the mean is the raw loss: one line, one legend entry
            ax.plot(x, y, color=col, alpha=0.25, linewidth=0.8, label=f"{label}, each step")
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
        title: the subject for the figure's title (the report's: model, dataset, epochs, config).

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
    fig.suptitle(figure_title("Training curves", title))
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


def _backend_rank(backend) -> int:
    """PyTorch's panels first, then MindSpore's, then any other backend's: the order of every other table."""
    return {"pytorch": 0, "mindspore": 1}.get(str(backend), 2)


def plot_confusions(confusion: pd.DataFrame, path: Path, class_names: dict | None = None,
                    title: str | None = None) -> Path | None:
    """Confusion matrices side by side, one panel per backend/evaluator, one colour scale.

    Panels run PyTorch's first, then MindSpore's, then any others (each group in name order).

    Args:
        confusion: the tidy ``confusion`` table.
        path: where the PNG goes.
        class_names: optional class index -> name, for the tick labels.
        title: the subject for the figure's title (the report's: model, dataset, epochs, config).

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
    groups = sorted(frame.groupby(["backend", "evaluator"], sort=True, dropna=False),
                    key=lambda group: _backend_rank(group[0][0]))  # stable: name order within a backend
    panels = [(e if str(e).startswith(str(b)) else f"{b} / {e}", _matrix(rows, classes)) for (b, e), rows in groups]
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
    fig.suptitle(figure_title("Confusion matrices", title))
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
                     tolerances: dict[str, float] | None = None, title: str | None = None) -> Path | None:
    """Histogram of |a - b| per same-weights pair on a shared log-x axis, with tolerance lines.

    One panel per pair (overlaid, ten pairs are unreadable). Exact zeros cannot sit on a log
    axis, so they are counted in the legend instead; NaNs likewise.

    Args:
        logit_diffs: pair label ("A vs B") -> flattened |a - b|.
        path: where the PNG goes.
        tolerances: optional pair label -> atol, drawn as a dashed vertical line.
        title: the subject for the figure's title (the report's: model, dataset, epochs, config).

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
    fig.suptitle(figure_title("|logit difference| per same-weights pair (zeros counted in each legend)", title))
    return save_figure(fig, path)


def _distinct(frame: pd.DataFrame, column: str) -> str:
    """The column's distinct values in order of appearance, comma separated ("" when absent)."""
    if column not in frame:
        return ""
    return ", ".join(str(value) for value in dict.fromkeys(frame[column].dropna()))


def _parity_subject(steps: pd.DataFrame, modes: list[str], dataset: str | None) -> str:
    """Which backends, model, dataset, how many steps in which modes, and the config, as parity.png's title."""
    pair = " vs ".join(name for name in (_distinct(steps, "backend_a"), _distinct(steps, "backend_b")) if name)
    subject = " on ".join(name for name in (_distinct(steps, "model"), dataset) if name)
    parts = [part for part in (pair, subject) if part]
    parts.append(f"{int(_numeric(steps, 'step').max())} steps ({', '.join(modes)})")
    config = _distinct(steps, "config_hash")
    if config and "," not in config:
        parts.append(f"config {config[:8]}")
    return ", ".join(parts)


def _parity_tensors(ax, rows: pd.DataFrame, mode: str, budget: float) -> None:
    """One mode's worst tensor per step (relative), its allowance, the budget, and what is left explained."""
    floor = 1e-12  # exact agreement would vanish from a log axis
    ranked = rows.dropna(subset=["rel"])
    worst = ranked.groupby("step")["rel"].max()
    ax.semilogy(worst.index, worst.clip(lower=floor), marker=".", color="tab:purple", label="worst tensor: " + (
        "max|diff| / max|value|" if mode == "lockstep" else "update rel. diff"))
    if "allowed" in ranked and ranked["allowed"].notna().any():
        worst_rows = ranked.loc[ranked.groupby("step")["rel"].idxmax()]
        noise = "noise" in ranked and bool((ranked["noise"] > 0).any())
        # The spread is that step's own: it grows with the ReLU/max-pool decisions float32 cannot make there,
        # so the allowance jumps at those steps; the label says so, or a jump looks like a bug.
        adam = " + Adam's noise steps" if noise else ""
        ax.semilogy(worst_rows["step"], worst_rows["allowed"], ls=":", color="tab:purple",
                    label=f"its allowance: budget + float32 spread of that step{adam}\n"
                          "(jumps where decisions float32 cannot make appear)")
        if noise:  # the allowance then tracks the worst row: show what is left once it is taken off
            left = (ranked["rel"] - ranked["noise"]).groupby(ranked["step"]).max()
            ax.semilogy(left.index, left.clip(lower=floor), marker=".", color="tab:green",
                        label="worst tensor less Adam's noise steps")
    if "rel_matched" in rows and rows["rel_matched"].notna().any():  # steps over the budget only
        matched = rows["rel_matched"].groupby(rows["step"]).max().dropna()
        ax.semilogy(matched.index, matched.clip(lower=floor), marker="x", ls="", color="tab:green",
                    label="worst tensor, each side's undecidable decisions matched")
    ax.axhline(budget, ls="--", color="tab:red", label="budget")
    what = "weights after each step (drift)" if mode == "lockstep" else "each step's update from equal weights"
    ax.set(title=f"{mode}: {what}", ylabel="relative difference (log)")


def _parity_loss(ax, rows: pd.DataFrame, mode: str, budget: float | None) -> None:
    """One mode's absolute loss gap per step on its own axis (a loss is not a relative difference), its budget."""
    floor = 1e-12  # equal losses would vanish from a log axis
    gap = _numeric(rows, "loss_diff").groupby(rows["step"]).max()
    ax.semilogy(gap.index, gap.clip(lower=floor), marker=".", color="tab:gray", label="|loss a - loss b|")
    if budget is not None:
        ax.axhline(budget, ls="--", color="tab:red", label="loss budget")
        explained = _numeric(rows, "loss_explained").groupby(rows["step"]).max()
        if (explained > 0).any():  # lockstep: the gap the two sides' own weights explain is allowed on top
            ax.semilogy(explained.index, budget + explained.fillna(0), ls=":", color="tab:gray",
                        label="its allowance: loss budget + the gap the two sides' weights explain")
    ax.set(title=f"{mode}: loss gap", xlabel="step", ylabel="|loss difference| (absolute, log)")


def plot_parity(parity: pd.DataFrame, path: Path, update_rel: float, weight_rel: float, dataset: str | None = None,
                loss_budgets: dict[str, float] | None = None) -> Path | None:
    """Lockstep weight drift and synchronised update differences per step, worst tensor per step, log y.

    Top row, one panel per mode: the worst tensor's relative difference; with the float64 columns, also
    what that tensor was allowed (the budget plus float32's spread of that step, and in lockstep Adam's
    steps along float32 noise), and in synchronised steps over the budget the difference left once
    decisions are matched. Bottom row: the absolute loss gap per step, on its own axis.

    Args:
        parity: parity.csv's table; its lockstep and synchronised rows are drawn (``model``, ``backend_a``,
            ``backend_b`` and ``config_hash`` name the title when present).
        path: where the PNG goes.
        update_rel: the synchronised budget of a tensor's relative update difference.
        weight_rel: the lockstep budget of a tensor's relative weight difference.
        dataset: the dataset's name for the title (parity.csv has no dataset column).
        loss_budgets: optional mode -> absolute loss budget, drawn on the loss axes.

    Returns:
        ``path``, or None when there are no lockstep or synchronised rows.
    """
    steps = parity[parity["mode"].isin(["lockstep", "synchronised"])] if not parity.empty else parity
    if steps.empty:
        return None
    modes = [m for m in ("lockstep", "synchronised") if (steps["mode"] == m).any()]
    fig, axes = plt.subplots(2, len(modes), figsize=(6.8 * len(modes), 7.8), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [3, 2]})
    for column, mode in enumerate(modes):
        rows = steps[steps["mode"] == mode]
        _parity_tensors(axes[0, column], rows, mode, weight_rel if mode == "lockstep" else update_rel)
        _parity_loss(axes[1, column], rows, mode, (loss_budgets or {}).get(mode))
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5)
    fig.suptitle(figure_title("Training parity per step", _parity_subject(steps, modes, dataset)))
    return save_figure(fig, path)
