"""What the PNGs show: every figure titled with what it draws and the model and dataset, every line in a legend,
parity's loss gap on its own axes, confusion panels PyTorch first, bench whiskers only where repeats spread.

The figures are inspected before they are written: ``save_figure`` is replaced by a recorder (the plots call it
as a module global, and ``plot_bench`` imports it from the module when it runs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.container import Container
from matplotlib.lines import Line2D

from harness.bench.report import plot_bench
from harness.config import build_config
from harness.report import plots
from harness.report.folder import write_reports
from harness.report.tables import Report

TITLE = "lenet5 on mnist-sample, 3 epochs, config 1a2b3c4d"


@pytest.fixture
def figures(monkeypatch):
    """The figures the plots would save, in order, rendered (a drawing error still fails) but not written."""
    recorded = []

    def record(fig, path):
        fig.canvas.draw()
        recorded.append(fig)
        return Path(path)

    monkeypatch.setattr(plots, "save_figure", record)
    yield recorded
    for fig in recorded:
        plots.plt.close(fig)


def _container_lines(ax) -> set:
    """Line2D artists owned by a container (errorbar caps): part of their bars' entry, not lines of their own."""
    def walk(items):
        for item in items:
            if isinstance(item, Line2D):
                yield item
            elif isinstance(item, (Container, tuple, list)):
                yield from walk(item)
    return set(walk(ax.containers))


def assert_every_line_in_a_legend(fig) -> None:
    """Every visible line has a label, and that label is an entry of its axes' (or the figure's) legend."""
    figure_entries = {text.get_text() for legend in fig.legends for text in legend.get_texts()}
    for ax in fig.axes:
        legend = ax.get_legend()
        entries = figure_entries | ({text.get_text() for text in legend.get_texts()} if legend else set())
        for line in set(ax.get_lines()) - _container_lines(ax):
            if not line.get_visible():
                continue
            label = line.get_label()
            assert not label.startswith("_"), f"a line without a label in {ax.get_title()!r}"
            assert label in entries, f"{label!r} is not in the legend of {ax.get_title()!r}"


def assert_titled(fig, what: str, *names: str) -> None:
    """The figure's title says what is drawn and names each of ``names`` (model, dataset, ...)."""
    title = fig.get_suptitle()
    assert what.lower() in title.lower(), title
    for name in names:
        assert name in title, (name, title)
    colorbars = {image.colorbar.ax for ax in fig.axes for image in ax.images if image.colorbar}
    panels = [ax for ax in fig.axes if ax.axison and ax.has_data() and ax not in colorbars]
    assert all(ax.get_title() or ax.get_title(loc="left") for ax in panels), [ax.get_title() for ax in panels]


def _curves() -> pd.DataFrame:
    rows = []
    for backend in ("pytorch", "mindspore"):
        rows += [{"backend": backend, "run_id": f"run-{backend}", "kind": "step", "step": step,
                  "loss": 2.3 * np.exp(-step / 40) + 0.01 * (step % 3)} for step in range(1, 101)]
        rows += [{"backend": backend, "run_id": f"run-{backend}", "kind": "epoch", "epoch": epoch,
                  "test_accuracy": 0.9 + 0.03 * epoch} for epoch in (1, 2)]
    return pd.DataFrame(rows)


def _confusion(evaluators) -> pd.DataFrame:
    return pd.DataFrame([{"backend": evaluator.split(":")[0], "evaluator": evaluator, "true_class": t,
                          "predicted_class": p, "count": 9 if t == p else 1}
                         for evaluator in evaluators for t in range(3) for p in range(3)])


def _parity() -> pd.DataFrame:
    """Two tensors per step, three steps per mode, a forward row; Adam's noise, a matched row, an explained loss."""
    rows = [{"mode": "forward", "param": "conv1", "rel": 1e-7}]
    for step in (1, 2, 3):
        for param, scale in (("conv1.weight", 1.0), ("fc.bias", 0.5)):
            rows.append({"mode": "lockstep", "step": step, "param": param, "rel": scale * 1e-7 * step,
                         "allowed": 1e-4 + 2 * 1e-5 * (step == 2), "noise": 1e-8 * (step > 1), "loss_diff": 4e-7,
                         "loss_explained": 1e-7 * step})
            over = scale * 2e-4 if step == 3 else 1e-8  # step 3 over the budget, with a matched row
            rows.append({"mode": "synchronised", "step": step, "param": param, "rel": over,
                         "allowed": 1e-4 + 3e-3 * (step == 3), "loss_diff": 2e-7,
                         "rel_matched": 1e-6 if step == 3 else np.nan})
    return pd.DataFrame(rows).assign(model="lenet5", backend_a="pytorch", backend_b="mindspore",
                                     config_hash="9bc84dca0000")


def _bench(repeats: int) -> pd.DataFrame:
    rows = []
    for backend in ("pytorch", "mindspore"):
        for phase in ("train", "train-bare", "infer-native", "infer-onnxruntime"):
            value = 1000.0 if backend == "pytorch" else 800.0
            spread = 0.1 * value if repeats > 1 and phase != "train" else 0.0  # train: repeats that agree exactly
            rows.append({"backend": backend, "device": "cpu", "model": "lenet5", "dataset": "mnist", "phase": phase,
                         "batch_size": 64, "repeats": repeats, "images_per_s": value,
                         "images_per_s_min": value - spread, "images_per_s_max": value + spread})
    return pd.DataFrame(rows)


def _whisker_lengths(ax) -> list[float]:
    return [float(np.hypot(*np.subtract(*segment))) for collection in ax.collections
            if isinstance(collection, LineCollection) for segment in collection.get_segments()]


def test_curves_are_titled_and_every_line_including_each_steps_loss_is_in_the_legend(figures, tmp_path):
    assert plots.plot_curves(_curves(), tmp_path / "curves.png", TITLE) == tmp_path / "curves.png"
    (fig,) = figures
    assert_titled(fig, "training curves", "lenet5", "mnist-sample")
    assert_every_line_in_a_legend(fig)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "pytorch, each step" in labels and "mindspore, each step" in labels


def test_confusion_panels_run_pytorch_first_then_mindspore_then_others(figures, tmp_path):
    evaluators = ["mindspore:native", "mindspore:onnxruntime", "alpha:native", "pytorch:onnxruntime",
                  "pytorch:native"]
    plots.plot_confusions(_confusion(evaluators), tmp_path / "confusion.png", title=TITLE)
    (fig,) = figures
    assert_titled(fig, "confusion", "lenet5", "mnist-sample")
    panels = [ax.get_title().splitlines()[0] for ax in fig.axes if ax.get_title()]
    assert panels == ["pytorch:native", "pytorch:onnxruntime", "mindspore:native", "mindspore:onnxruntime",
                      "alpha:native"]


def test_logit_differences_are_titled_and_every_line_is_in_a_legend(figures, tmp_path):
    diffs = {"pytorch:native vs pytorch:onnxruntime": np.array([0.0, 1e-7, 3e-7]),
             "mindspore:native vs reference:float64": np.array([1e-5, 2e-5])}
    plots.plot_logit_diffs(diffs, tmp_path / "logit_diffs.png", {"mindspore:native vs reference:float64": 1e-4},
                           title=TITLE)
    (fig,) = figures
    assert_titled(fig, "logit difference", "lenet5", "mnist-sample")
    assert_every_line_in_a_legend(fig)


def test_parity_puts_the_loss_gap_on_its_own_axes_and_says_why_the_allowance_jumps(figures, tmp_path):
    plots.plot_parity(_parity(), tmp_path / "parity.png", 1e-4, 1e-4, dataset="mnist",
                      loss_budgets={"lockstep": 1e-4, "synchronised": 1e-5})
    (fig,) = figures
    assert_titled(fig, "parity", "lenet5", "mnist", "pytorch vs mindspore", "3 steps", "lockstep", "synchronised")
    assert_every_line_in_a_legend(fig)
    labels = {ax: [line.get_label() for line in ax.get_lines()] for ax in fig.axes}
    loss_axes = [ax for ax, names in labels.items() if any("loss" in name for name in names)]
    tensor_axes = [ax for ax, names in labels.items() if any("worst tensor" in name for name in names)]
    assert len(loss_axes) == len(tensor_axes) == 2  # one of each per mode
    assert not set(loss_axes) & set(tensor_axes), "an absolute loss gap shares an axis with relative differences"
    assert all("absolute" in ax.get_ylabel() for ax in loss_axes)
    assert all("relative" in ax.get_ylabel() for ax in tensor_axes)
    allowances = [name for names in labels.values() for name in names if name.startswith("its allowance: budget")]
    assert len(allowances) == 2
    assert all("spread of that step" in name and "decisions float32 cannot make" in name for name in allowances)


def test_parity_without_the_new_arguments_still_draws(figures, tmp_path):
    assert plots.plot_parity(_parity(), tmp_path / "parity.png", 1e-4, 1e-4) == tmp_path / "parity.png"
    (fig,) = figures
    assert_titled(fig, "parity", "lenet5", "3 steps")
    assert plots.plot_parity(_parity()[lambda f: f["mode"] == "forward"], tmp_path / "none.png", 1e-4, 1e-4) is None


def test_parity_session_names_the_configured_dataset(figures, tmp_path, monkeypatch):
    import harness.parity.session as session

    rows = _parity().drop(columns=["model", "backend_a", "backend_b", "config_hash"]).to_dict("records")
    monkeypatch.setattr(session, "load_data", lambda config, data_dir: (None, None))
    monkeypatch.setattr(session, "check", lambda *args, **kwargs: rows)  # no framework: the rows check would give
    config = build_config({"model": "lenet5", "dataset": "fashion-mnist"})
    session.run_parity(config, ["pytorch", "mindspore"], 3, ["lockstep", "synchronised"], None, tmp_path)
    (fig,) = figures
    assert_titled(fig, "parity", "lenet5 on fashion-mnist", "pytorch vs mindspore", config.config_hash[:8])
    loss_axes = [ax for ax in fig.axes if any(line.get_label() == "loss budget" for line in ax.get_lines())]
    assert len(loss_axes) == 2


def test_bench_with_one_repeat_draws_no_whiskers(figures, tmp_path):
    plot_bench(_bench(repeats=1), tmp_path / "bench.png")
    (fig,) = figures
    assert_titled(fig, "bench", "lenet5", "mnist")
    (ax,) = fig.axes
    assert "lenet5" in ax.get_title() and "mnist" in ax.get_title()
    assert _whisker_lengths(ax) == [] and not _container_lines(ax)
    assert "whiskers" not in ax.get_ylabel()


def test_bench_whiskers_only_where_repeats_spread_and_the_label_says_what_they_are(figures, tmp_path):
    plot_bench(_bench(repeats=3), tmp_path / "bench.png")
    (ax,) = figures[0].axes
    lengths = _whisker_lengths(ax)
    assert len(lengths) == 2 * 3 and min(lengths) > 0  # two backends, three phases with spread; train has none
    assert "whiskers: min-max over repeats" in ax.get_ylabel()


def _report(title: str) -> Report:
    runs = pd.DataFrame([{"run_id": f"run-{b}", "backend": b, "model": "lenet5", "dataset": "mnist-sample",
                          "status": "completed"} for b in ("pytorch", "mindspore")])
    agreement = pd.DataFrame([{"kind": "same-weights", "evaluator_a": "pytorch:native",
                               "evaluator_b": "pytorch:onnxruntime", "atol": 1e-5, "passed": True, "status": "ok"}])
    tables = {"runs": runs, "agreement": agreement, "curves": _curves(),
              "confusion": _confusion(["mindspore:native", "pytorch:native"])}
    return Report(tables, {"pytorch:native vs pytorch:onnxruntime": np.array([0.0, 1e-7])}, "passed", title)


@pytest.mark.parametrize("title", [TITLE, ""], ids=["report title", "runs table"])
def test_every_report_plot_names_the_model_and_dataset(figures, tmp_path, title):
    write_reports(_report(title), tmp_path, {"config_hash": "1a2b3c4d5e6f"})
    assert len(figures) == 3
    for fig, what in zip(figures, ["training curves", "confusion", "logit difference"]):
        assert_titled(fig, what, "lenet5 on mnist-sample")
