"""`harness import` and `--model PATH.onnx` / `--model SPEC.json` end to end: the printed spec, the JSON round
trip, one-line refusals, and the acceptance run: a user's residual net exported by torch.onnx with its
BatchNormalization nodes kept, compared across both backends with every same-weights check passing."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import pandas as pd
import pytest

from harness.cli.main import main
from harness.model.onnx_import import import_onnx
from harness.model.resolve import model_spec
from harness.model.specfile import load_spec

torch = pytest.importorskip("torch")
nn = torch.nn


class SmallResNet(nn.Module):
    """A user's residual net: a stride-2 conv, a depthwise conv, BatchNorm, a residual Add, global average pooling."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16),
                                   nn.ReLU(), nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    """SmallResNet exported as the README says: the dynamo exporter with ``optimize=False``, which keeps the
    BatchNormalization nodes (its optimizer folds them into the convolutions), in one file."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("user") / "small.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(SmallResNet().eval(), (torch.zeros(2, 3, 8, 8),), str(path), dynamo=True, optimize=False,
                          external_data=False, dynamic_shapes=({0: torch.export.Dim("batch")},))
    return path


def test_import_prints_the_spec(small_onnx, capsys):
    assert main(["import", str(small_onnx)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{small_onnx}: 13 layers, input 3x8x8, 10 classes"
    assert lines[1].split() == ["layer", "kind", "inputs", "output", "params", "ONNX", "names"]
    rows = {line.split()[0]: line.split() for line in lines[2:15]}
    assert rows["stem_0"] == ["stem_0", "Conv2d", "3x3", "s2", "p1", "-", "16x4x4", "432", "stem.0.weight"]
    assert rows["block_0"] == ["block_0", "Conv2d", "3x3", "p1", "g16", "-", "16x4x4", "144", "block.0.weight"]
    assert rows["block_1"] == ["block_1", "BatchNorm2d", "-", "16x4x4", "32", "block.1.*"]
    add = next(row for row in rows.values() if row[1] == "Add")
    assert add[2:5] == ["relu,", "block_4", "16x4x4"]
    assert rows["head"] == ["head", "Linear", "-", "10", "170", "head.*"]
    assert "total: 1,098 trainable parameters (+ 96 BatchNorm running statistics)" in lines
    assert lines[-1] == f"next: harness compare --model {small_onnx} (the file's weights), or --save SPEC.json " \
                        "to keep the spec"


def test_save_then_model_json_round_trips(small_onnx, tmp_path, capsys):
    saved = tmp_path / "small.json"
    assert main(["import", str(small_onnx), "--save", str(saved)]) == 0
    assert f"saved: {saved}" in capsys.readouterr().out
    spec, _ = import_onnx(small_onnx)
    assert load_spec(saved) == spec and model_spec(str(saved), 3, 10) == spec
    assert json.loads(saved.read_text())["source_names"]["stem_1.var"] == "stem.1.running_var"
    # --model SPEC.json trains that spec (from harness's own initial weights) at its own input shape.
    code = main(["run", "--model", str(saved), "--backend", "pytorch", "--dataset", "synthetic", "--epochs", "1",
                 "--limit-train", "32", "--limit-test", "16", "--batch-size", "16", "--quiet", "--out",
                 str(tmp_path / "runs")])
    assert code == 0
    (run,) = (tmp_path / "runs").iterdir()
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["model"]["model"] == str(saved) and len(config["model_sha256"]) == 64


@pytest.mark.parametrize("argv, message", [
    (["import", "missing.onnx"], "ONNX model missing.onnx does not exist"),
    (["import", "spec.json"], "harness import reads an ONNX file (PATH.onnx), got spec.json"),
    (["import", "{onnx}", "--save", "spec.txt"], "--save spec.txt: the spec file must end in .json"),
    (["run", "--model", "{onnx}", "--activation", "tanh"], "--activation tanh change a registry model; "),
    (["run", "--model", "{onnx}", "--dataset", "mnist-sample"], "channel counts differ"),
    (["run", "--model", "missing.json"], "model file missing.json does not exist"),
])
def test_refusals_are_one_line(small_onnx, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main([arg.replace("{onnx}", str(small_onnx)) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_model_help_names_the_files(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "or a file: PATH.onnx (your own network exported with torch.onnx.export" in text
    assert "SPEC.json (written by harness import --save" in text


@pytest.mark.parity
def test_a_users_residual_net_passes_compare(both_backends, small_onnx, tmp_path, capsys):
    """The issue's acceptance run: every same-weights check passes, the float64 ones included."""
    code = main(["compare", "--model", str(small_onnx), "--dataset", "synthetic", "--epochs", "1", "--no-control",
                 "--limit-test", "128", "--batch-size", "16", "--learning-rate", "0.05", "--quiet",
                 "--out", str(tmp_path / "runs"), "--reports", str(tmp_path / "rep")])
    assert code == 0, capsys.readouterr().out[-2000:]
    agreement = pd.read_csv(tmp_path / "rep" / "agreement.csv")
    same = agreement[agreement.kind == "same-weights"]
    assert len(same) == 30 and same.passed.all()
    assert same.evaluator_b.str.startswith("reference:float64").sum() == 18
    # The user's own file in ONNX Runtime, from its own weights: against float64 and both backends.
    users = f"{small_onnx.name}:onnxruntime"
    own = same[(same.evaluator_a == users) | (same.evaluator_b == users)]
    assert set(zip(own.evaluator_a, own.evaluator_b)) == {
        (f"{small_onnx.name}:onnxruntime", "reference:float64[file weights]"),
        ("pytorch[file weights]", f"{small_onnx.name}:onnxruntime"),
        ("mindspore[file weights]", f"{small_onnx.name}:onnxruntime")}
    assert len(own) == 6 and (own.max_abs < 1e-5).all()
    assert (agreement.kind == "trained").sum() == 1 and agreement.passed.all()
