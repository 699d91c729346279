"""The report writer: tidy CSVs with fixed columns, valid PNGs, summary.md and the terminal table."""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pytest

from harness import __version__
from harness.report.folder import write_reports
from harness.report.summary import verdict_table
from harness.report.tables import COLUMNS, PROVENANCE, Report
from tests.support import REPO_ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ["curves.png", "confusion.png", "logit_diffs.png"]
LONG_ERROR = "onnxruntime could not load model.onnx: " + "Unsupported op | Foo " * 20
PROV = {"config_hash": "1a2b3c4d5e6f"}


def _agreement() -> pd.DataFrame:
    base = {"model": "lenet5", "dataset": "mnist-sample", "n": 200}
    same = {**base, "kind": "same-weights"}
    return pd.DataFrame([
        {**same, "evaluator_a": "pytorch:native", "evaluator_b": "pytorch:onnxruntime", "max_abs": 2e-6,
         "mean_abs": 3e-7, "p99_abs": 1e-6, "max_rel": 1e-5, "cosine": 1.0, "top1_agree": 1.0, "flipped": 0,
         "atol": 1e-5, "rtol": 1.3e-6, "passed": True, "status": "ok"},
        {**same, "evaluator_a": "mindspore[pytorch weights]", "evaluator_b": "reference:float64[pytorch weights]",
         "max_abs": 3e-3, "mean_abs": 1e-4, "p99_abs": 1e-3, "max_rel": 0.2, "cosine": 0.99999, "top1_agree": 0.995,
         "flipped": 1, "atol": 1e-4, "rtol": 1e-4, "first_divergent_layer": "conv2", "passed": False, "status": "ok"},
        {**same, "evaluator_a": "mindspore:native", "evaluator_b": "mindspore:onnxruntime", "status": "error",
         "error": LONG_ERROR},
        {**base, "kind": "trained", "evaluator_a": "pytorch:native", "evaluator_b": "mindspore:native",
         "top1_agree": 0.985, "flipped": 3, "accuracy_a": 0.975, "accuracy_b": 0.97, "accuracy_delta": 0.005,
         "delta_ci_low": -0.002, "delta_ci_high": 0.012, "mcnemar_b01": 4, "mcnemar_b10": 3, "mcnemar_p": 1.0,
         "passed": True, "status": "ok"},
    ])


def _curves(rng) -> pd.DataFrame:
    rows = []
    for backend in ("pytorch", "mindspore"):
        run_id = f"run-{backend}"
        rows += [{"backend": backend, "run_id": run_id, "kind": "step", "epoch": 1 + step // 50, "step": step,
                  "loss": 2.3 * np.exp(-step / 40) + 0.1 * rng.random(), "lr": 0.01} for step in range(1, 101)]
        rows += [{"backend": backend, "run_id": run_id, "kind": "epoch", "epoch": epoch, "step": 50 * epoch,
                  "train_loss": 0.5 / epoch, "test_loss": 0.4 / epoch, "test_accuracy": 0.9 + 0.03 * epoch,
                  "lr": 0.01} for epoch in (1, 2)]
    return pd.DataFrame(rows)


def synthetic_report(verdict: str = "failed") -> Report:
    """Two backends, a passed, a failed and an error row, curves, 10-class confusion, logit diffs."""
    rng = np.random.default_rng(0)
    runs = pd.DataFrame([
        {"run_id": f"run-{b}", "backend": b, "device": "cpu", "model": "lenet5", "dataset": "mnist-sample",
         "num_params": 61706, "epochs": 2, "train_loss": 0.2, "test_accuracy": acc, "onnx_test_accuracy": acc,
         "train_seconds": 3.5, "images_per_s": 900.0, "versions": {b: "1.0"}, "status": "completed"}
        for b, acc in (("pytorch", 0.975), ("mindspore", 0.97))])
    evaluators = [("pytorch", "pytorch:native"), ("mindspore", "mindspore:native")]
    confusion = pd.DataFrame([{"backend": b, "evaluator": e, "true_class": t, "predicted_class": p,
                               "count": 18 if t == p else int(rng.integers(0, 2))}
                              for b, e in evaluators for t in range(10) for p in range(10)])
    per_class = pd.DataFrame([{"backend": b, "evaluator": e, "class_index": c, "class_name": str(c), "n": 20,
                               "correct": 18, "accuracy": 0.9} for b, e in evaluators for c in range(10)])
    speed = pd.DataFrame([{"backend": "pytorch", "model": "lenet5", "phase": "train", "images_per_s": 16570.3,
                           "ratio_to_pytorch": 1.0}])
    diffs = {"pytorch:native vs pytorch:onnxruntime": np.concatenate([np.zeros(50), rng.exponential(3e-7, 1950)]),
             "mindspore[pytorch weights] vs reference:float64[pytorch weights]": rng.exponential(1e-4, 2000)}
    tables = {"runs": runs, "agreement": _agreement(), "curves": _curves(rng), "confusion": confusion,
              "per_class": per_class, "onnx_graphs": pd.DataFrame(), "speed": speed}
    return Report(tables=tables, logit_diffs=diffs, verdict=verdict, title="lenet5 on mnist-sample, 2 epochs")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The synthetic report written over an earlier, smaller one (every CSV and one PNG replaced)."""
    folder = tmp_path_factory.mktemp("reports")
    report = synthetic_report()
    write_reports(Report({"runs": report.tables["runs"]}, report.logit_diffs, "passed", "earlier"), folder, PROV)
    paths = write_reports(report, folder, PROV)
    return report, folder, paths


def test_csvs_have_exact_columns_rows_and_provenance(written):
    report, folder, paths = written
    for name, columns in COLUMNS.items():
        frame = pd.read_csv(folder / f"{name}.csv")
        assert list(frame.columns) == columns + PROVENANCE, name
        assert len(frame) == len(report.tables[name]), name
        if len(frame):
            assert (frame["config_hash"] == PROV["config_hash"]).all()
            assert (frame["harness_version"].astype(str) == __version__).all()
            assert frame["generated_at"].notna().all()
    runs = pd.read_csv(folder / "runs.csv")
    assert runs.loc[0, "versions"] == '{"pytorch": "1.0"}'  # a dict becomes one JSON cell
    flipped = pd.read_csv(folder / "agreement.csv", dtype=str)["flipped"].fillna("").tolist()
    assert flipped == ["0", "1", "", "3"]  # counts stay integers beside an empty cell, not "1.0"
    assert {p.name for p in paths} >= {f"{n}.csv" for n in COLUMNS} | set(PLOTS) | {"summary.md"}


def test_pngs_are_valid_and_not_trivial(written):
    _, folder, _ = written
    for name in PLOTS:
        data = (folder / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 10_000, name


def test_summary_lists_failures_first_with_layer_and_relative_links(written):
    _, folder, _ = written
    text = (folder / "summary.md").read_text()
    assert text.startswith("# lenet5 on mnist-sample, 2 epochs")
    assert "**FAILED**: 4 checks, 2 passed, 1 failed, 0 inconclusive, 1 error" in text
    same = text.split("## Agreement with the same weights")[1].split("##")[0]
    rows = [line for line in same.splitlines() if line.startswith("| ") and "vs" in line]
    assert "**FAIL**" in rows[0] and "conv2" in rows[0]
    assert "**ERROR**" in rows[1] and "Unsupported op \\| Foo" in rows[1]  # pipes escaped
    assert "**PASS**" in rows[2]
    assert "| 97.50% | 97.00% | +0.50pp | [-0.20, +1.20]pp | 4/3 |" in text
    assert "| pytorch | lenet5 | train | 16,570 | 1.00× |" in text  # a rate, not 1.657e+04
    for name in PLOTS + ["agreement.csv", "runs.csv"]:
        assert f"]({name})" in text
    assert str(folder) not in text


def test_verdict_table_is_narrow_and_ends_with_the_verdict(written):
    report, _, _ = written
    lines = verdict_table(report).splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert lines[0].startswith("check") and lines[0].endswith("result")
    assert lines[1].startswith("mindspore[pytorch weights] vs reference:float64[pytorch weights]")
    assert lines[1].endswith("FAIL") and lines[2].startswith("    max_abs 3.00e-03")
    assert lines[3] == "    first divergent layer: conv2"
    assert lines[4].endswith("ERROR") and lines[5].startswith("    error: onnxruntime")
    assert lines[-1] == "verdict: FAILED (1 of 4 checks failed)"
    passing = Report({"agreement": _agreement().iloc[[0, 3]]}, {}, "passed", "t")
    assert verdict_table(passing).splitlines()[-1] == "verdict: PASSED (2 checks)"
    broken = Report({"agreement": _agreement()}, {}, "error", "t")
    assert verdict_table(broken).splitlines()[-1] == "verdict: ERROR (1 of 4 checks errored; 1 failed)"


def test_empty_report_writes_headers_only_and_removes_stale_plots(tmp_path):
    write_reports(Report({}, {"a vs b": np.array([0.0, 1e-6])}, "passed", "first"), tmp_path, PROV)
    assert (tmp_path / "logit_diffs.png").exists()
    empty = Report({name: pd.DataFrame() for name in COLUMNS}, {}, "error", "")
    paths = write_reports(empty, tmp_path, {})
    for name, columns in COLUMNS.items():
        frame = pd.read_csv(tmp_path / f"{name}.csv")
        assert list(frame.columns) == columns + PROVENANCE and frame.empty
    assert not any((tmp_path / name).exists() for name in PLOTS)  # an old plot would describe another report
    assert all(path.exists() for path in paths)
    assert "**ERROR**: 0 checks" in (tmp_path / "summary.md").read_text()
    assert verdict_table(empty).splitlines()[-1] == "verdict: ERROR (see summary.md)"


def test_writing_twice_leaves_no_temporary_files(written):
    _, folder, _ = written
    assert [p.name for p in folder.iterdir() if p.name.startswith(".") or ".tmp" in p.name] == []


def test_report_modules_import_no_framework():
    # Static, so it holds even when another test has already imported torch into this process.
    allowed = {"__future__", "collections", "dataclasses", "datetime", "json", "math", "pathlib", "time", "numpy",
               "pandas", "matplotlib", ""}
    for module in sorted((REPO_ROOT / "harness" / "report").glob("*.py")):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert {n.split(".")[0] for n in names} <= allowed, (module, names)
