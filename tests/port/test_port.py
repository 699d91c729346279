"""``harness port`` on pairs written as users write them: a PyTorch model and its hand-written MindSpore port, each a
file with its own class, nn.Sequential / nn.SequentialCell members and attribute names, written into tmp_path.

A correct LeNet-5 and a correct ResNet-20 pass; each fault a porting engineer makes (average pooling for max, a
missing Dense bias, Sigmoid for ReLU, a Conv2d left at pad_mode='same', BatchNorm momentum copied as 0.1, Dropout's
keep probability for its drop probability) fails or is a conventions finding naming the layer by the user's names;
an unpairable head stops with exit 2 and a MAP.toml that, completed, makes the run work."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from harness.cli.main import main
from harness.errors import HarnessError

pytest.importorskip("torch")
pytest.importorskip("mindspore")

TORCH_LENET = '''"""LeNet-5 as its author wrote it."""
from torch import nn


class LeNet5(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def lenet5(num_classes=10):
    return LeNet5(num_classes)
'''

MS_LENET = '''"""The MindSpore port of LeNet-5, by hand."""
from mindspore import nn


class LeNet5(nn.Cell):
    def __init__(self, num_class=10):
        super().__init__()
        self.features = nn.SequentialCell([
            nn.Conv2d(1, 6, 5, pad_mode='valid', has_bias=True),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, 5, pad_mode='valid', has_bias=True),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        ])
        self.flatten = nn.Flatten()
        self.fc1 = nn.Dense(16 * 5 * 5, 120)
        self.fc2 = nn.Dense(120, 84)
        self.fc3 = nn.Dense(84, num_class)
        self.relu = nn.ReLU()

    def construct(self, x):
        x = self.flatten(self.features(x))
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def lenet5(num_class=10):
    return LeNet5(num_class)
'''

# Dropout after the first Linear, on both sides.
TORCH_LENET_DROPOUT = TORCH_LENET.replace("            nn.Linear(120, 84),\n",
                                          "            nn.Dropout(p=0.25),\n            nn.Linear(120, 84),\n")
MS_LENET_DROPOUT = MS_LENET.replace("        self.relu = nn.ReLU()\n",
                                    "        self.relu = nn.ReLU()\n        self.dropout = nn.Dropout(p=0.25)\n")
MS_LENET_DROPOUT = MS_LENET_DROPOUT.replace("        x = self.relu(self.fc1(x))\n",
                                            "        x = self.dropout(self.relu(self.fc1(x)))\n")

# The head kept as raw Parameters, the weight stored (in, out): nothing pairs it with torch's (out, in) Linear.
MS_LENET_RAW_HEAD = MS_LENET.replace("from mindspore import nn\n", "from mindspore import Parameter, Tensor, nn, ops\n"
                                     "import numpy as np\n").replace(
    "        self.fc3 = nn.Dense(84, num_class)\n",
    "        self.w_out = Parameter(Tensor(np.zeros((84, num_class), np.float32)), name='w_out')\n"
    "        self.b_out = Parameter(Tensor(np.zeros((num_class,), np.float32)), name='b_out')\n").replace(
    "        return self.fc3(x)\n", "        return ops.matmul(x, self.w_out) + self.b_out\n")

TORCH_RESNET = '''"""CIFAR ResNet-20 (He et al.), projection shortcuts."""
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.in_planes = 16
        self.layer1, self.layer2, self.layer3 = self._stage(16, 1), self._stage(32, 2), self._stage(64, 2)
        self.linear = nn.Linear(64, num_classes)

    def _stage(self, planes, stride):
        blocks = []
        for s in (stride, 1, 1):
            blocks.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(out.view(out.size(0), -1))


def resnet20(num_classes=10):
    return ResNet20(num_classes)
'''

MS_RESNET = '''"""ResNet-20 in MindSpore, in the model zoo's style."""
from mindspore import nn, ops


class ResidualBlock(nn.Cell):
    def __init__(self, in_channel, out_channel, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channel, out_channel, 3, stride, pad_mode='pad', padding=1)
        self.bn1 = nn.BatchNorm2d(out_channel, momentum=0.9)
        self.conv2 = nn.Conv2d(out_channel, out_channel, 3, 1, pad_mode='pad', padding=1)
        self.bn2 = nn.BatchNorm2d(out_channel, momentum=0.9)
        self.relu = nn.ReLU()
        self.down_sample = stride != 1 or in_channel != out_channel
        if self.down_sample:
            self.down_sample_layer = nn.SequentialCell([
                nn.Conv2d(in_channel, out_channel, 1, stride, pad_mode='valid'),
                nn.BatchNorm2d(out_channel, momentum=0.9)])

    def construct(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.down_sample:
            identity = self.down_sample_layer(x)
        return self.relu(out + identity)


class ResNet(nn.Cell):
    def __init__(self, class_num=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, pad_mode='pad', padding=1)
        self.bn1 = nn.BatchNorm2d(16, momentum=0.9)
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(16, 16, 1)
        self.layer2 = self._make_layer(16, 32, 2)
        self.layer3 = self._make_layer(32, 64, 2)
        self.mean = ops.ReduceMean(keep_dims=True)
        self.flatten = nn.Flatten()
        self.end_point = nn.Dense(64, class_num)

    def _make_layer(self, in_channel, out_channel, stride):
        layers = [ResidualBlock(in_channel, out_channel, stride)]
        for _ in range(2):
            layers.append(ResidualBlock(out_channel, out_channel, 1))
        return nn.SequentialCell(layers)

    def construct(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.mean(x, (2, 3))
        return self.end_point(self.flatten(x))


def resnet20(class_num=10):
    return ResNet(class_num)
'''

# Two branches concatenated: torch.cat is no layer kind of the spec, so the ONNX import refuses it.
TORCH_TWIN = '''import torch
from torch import nn


class Twin(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = self.relu(torch.cat([self.a(x), self.b(x)], dim=1))
        return self.head(x.flatten(1))
'''

MS_TWIN = '''from mindspore import nn, ops


class Twin(nn.Cell):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, pad_mode='pad', padding=1, has_bias=True)
        self.b = nn.Conv2d(1, 4, 3, pad_mode='pad', padding=1, has_bias=True)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.head = nn.Dense(8 * 8 * 8, 10)

    def construct(self, x):
        x = self.relu(ops.concat((self.a(x), self.b(x)), 1))
        return self.head(self.flatten(x))
'''

LENET = ("--input-shape", "1,32,32")
QUICK = ("--dataset", "synthetic", "--limit-train", "64", "--limit-test", "32", "--batch-size", "16", "--no-train",
         "--mode", "none", "--quiet")


def _second(text: str, old: str, new: str) -> str:
    """``text`` with the second occurrence of ``old`` replaced."""
    first = text.index(old)
    second = text.index(old, first + len(old))
    return text[:second] + new + text[second + len(old):]


def _changed(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def _pair(tmp_path, torch_source: str, ms_source: str, torch_file: str = "lenet_torch.py",
          ms_file: str = "lenet_ms.py") -> tuple[str, str]:
    """Write the two files (each in its own folder, as two people keep them) and return the targets."""
    for folder, name, source in (("torch_side", torch_file, torch_source), ("ms_side", ms_file, ms_source)):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / name).write_text(source)
    factory = "resnet20" if "resnet" in torch_file else "lenet5"
    return f"{tmp_path / 'torch_side' / torch_file}:{factory}", f"{tmp_path / 'ms_side' / ms_file}:{factory}"


def _port(tmp_path, torch_target: str, ms_target: str, *flags: str) -> int:
    return main(["port", "--torch", torch_target, "--mindspore", ms_target, *flags,
                 "--out", str(tmp_path / "runs"), "--reports", str(tmp_path / "reports")])


def test_a_correct_lenet5_pair_trained_side_by_side_passes(tmp_path, capsys):
    torch_target, ms_target = _pair(tmp_path, TORCH_LENET, MS_LENET)
    code = _port(tmp_path, torch_target, ms_target, *LENET, "--dataset", "synthetic", "--epochs", "2",
                 "--optimizer", "adam", "--learning-rate", "0.003", "--batch-size", "32", "--steps", "1",
                 "--no-control", "--quiet")
    out = capsys.readouterr().out
    assert code == 0 and "verdict: PASSED" in out, out[-3000:]
    assert "classifier.1.weight  fc1.weight" in out  # the table pairs the user's own names
    assert "conventions: 0 findings" in out and "first divergence: none" in out
    reports = tmp_path / "reports"
    mapped = pd.read_csv(reports / "mapping.csv")
    assert len(mapped) == 10 and set(mapped.rule) == {"execution order"}
    agreement = pd.read_csv(reports / "agreement.csv")
    assert {"same-weights", "parity", "trained"} <= set(agreement.kind)
    assert (agreement.kind == "trained").sum() == 1
    layers = pd.read_csv(reports / "layers.csv")
    assert list(layers.mindspore_layer[:8]) == ["features.0", "features.1", "features.2", "features.3", "features.4",
                                                "features.5", "flatten", "fc1"]
    assert layers.passed.all() and layers.mindspore_line.str.startswith("lenet_ms.py:").all()
    summary = (reports / "summary.md").read_text()
    assert "## Port: weights" in summary and "## Port: layers with the same weights" in summary


def test_a_correct_resnet20_pair_passes(tmp_path, capsys):
    torch_target, ms_target = _pair(tmp_path, TORCH_RESNET, MS_RESNET, "resnet_torch.py", "resnet_ms.py")
    code = _port(tmp_path, torch_target, ms_target, "--input-shape", "3,8,8", *QUICK)
    out = capsys.readouterr().out
    assert code == 0 and "verdict: PASSED" in out, out[-3000:]
    mapped = pd.read_csv(tmp_path / "reports" / "mapping.csv")
    assert len(mapped) == 21 + 21 * 4 + 2  # 21 convs, 21 BatchNorms of 4 tensors each, the head
    row = mapped[mapped.torch == "layer2.0.shortcut.1.running_var"].iloc[0]
    assert row.mindspore == "layer2.0.down_sample_layer.1.moving_variance" and row.rule == "execution order"


def test_average_pooling_for_max_fails_at_that_layer_in_the_users_names(tmp_path, capsys):
    ms = _second(MS_LENET, "nn.MaxPool2d(kernel_size=2, stride=2)", "nn.AvgPool2d(kernel_size=2, stride=2)")
    code = _port(tmp_path, *_pair(tmp_path, TORCH_LENET, ms), *LENET, *QUICK)
    out = capsys.readouterr().out
    assert code == 1 and "verdict: FAILED" in out
    assert "first divergence: torch features.5 (MaxPool2d) <-> mindspore features.5 (AvgPool2d): max_abs" in out
    assert "lenet_ms.py:14: mindspore features.5 (AvgPool2d) pooling avg, torch features.5 (MaxPool2d) max: use " \
           "nn.MaxPool2d(kernel_size=2, stride=2)" in out
    agreement = pd.read_csv(tmp_path / "reports" / "agreement.csv")
    cross = agreement[agreement.evaluator_a == "mindspore[pytorch initial weights]"]
    assert not cross.passed.any()
    assert cross.first_divergent_layer.str.contains("mindspore features.5 (AvgPool2d)", regex=False).any()


def test_a_missing_dense_bias_is_a_finding_and_a_failure(tmp_path, capsys):
    ms = _changed(MS_LENET, "nn.Dense(84, num_class)", "nn.Dense(84, num_class, has_bias=False)")
    code = _port(tmp_path, *_pair(tmp_path, TORCH_LENET, ms), *LENET, *QUICK)
    out = capsys.readouterr().out
    assert code == 1 and "verdict: FAILED" in out
    assert "mindspore fc3 (Dense) bias has_bias=False, torch classifier.5 (Linear) bias=True: pass has_bias=True" in out
    assert re.search(r"classifier\.5\.bias +- +\(10,\) +NOT PAIRED", out)  # the table shows what nothing holds


def test_sigmoid_for_relu_after_the_second_conv_is_named(tmp_path):
    from harness.port.session import PortRequest, read_sides

    ms = _second(MS_LENET, "            nn.ReLU(),\n", "            nn.Sigmoid(),\n")
    sides = read_sides(PortRequest(*_pair(tmp_path, TORCH_LENET, ms), input_shape=(1, 32, 32)))
    assert [f.text() for f in sides.findings] == [
        "lenet_ms.py:13: mindspore features.4 (Sigmoid) function sigmoid, torch features.4 (ReLU) relu: use nn.ReLU()"]


def test_a_conv_left_at_pad_mode_same_is_named_with_its_line(tmp_path, capsys):
    ms = _changed(MS_LENET, "nn.Conv2d(6, 16, 5, pad_mode='valid', has_bias=True)",
                  "nn.Conv2d(6, 16, 5, has_bias=True)")
    code = _port(tmp_path, *_pair(tmp_path, TORCH_LENET, ms), *LENET, *QUICK)
    out = capsys.readouterr().out
    assert code == 1 and "verdict: FAILED" in out
    assert ("lenet_ms.py:12: mindspore features.3 (Conv2d) padding 2 (pad_mode='same', padding=0), torch features.3 "
            "(Conv2d) 0: pass pad_mode='valid'") in out
    assert "the MindSpore model does not run on (1, 32, 32)" in (tmp_path / "reports" / "summary.md").read_text() or \
        "does not run" in pd.read_csv(tmp_path / "reports" / "agreement.csv").to_string()


def test_batchnorm_momentum_copied_from_torch_is_a_finding(tmp_path, capsys):
    from harness.port.session import PortRequest, read_sides

    torch_target, ms_target = _pair(tmp_path, TORCH_RESNET, MS_RESNET.replace("momentum=0.9", "momentum=0.1"),
                                    "resnet_torch.py", "resnet_ms.py")
    sides = read_sides(PortRequest(torch_target, ms_target, input_shape=(3, 8, 8)))
    momentum = [f for f in sides.findings if f.setting == "momentum"]
    assert len(momentum) == 21  # every BatchNorm of the port
    first = momentum[0].text()
    assert first.startswith("resnet_ms.py:32: mindspore bn1 (BatchNorm2d) momentum momentum=0.1, torch bn1 "
                            "(BatchNorm2d) momentum=0.1: pass momentum=0.9"), first
    assert {f.mindspore_layer for f in momentum} >= {"layer1.0.bn1", "layer3.0.down_sample_layer.1"}


def test_dropout_keep_probability_for_drop_probability_is_a_finding(tmp_path):
    from harness.port.session import PortRequest, read_sides

    ms = _changed(MS_LENET_DROPOUT, "nn.Dropout(p=0.25)", "nn.Dropout(0.25)")
    sides = read_sides(PortRequest(*_pair(tmp_path, TORCH_LENET_DROPOUT, ms), input_shape=(1, 32, 32)))
    assert [f.text() for f in sides.findings] == [
        "lenet_ms.py:21: mindspore dropout (Dropout) drop probability keep_prob=0.25 (drops 0.75), torch classifier.3 "
        "(Dropout) p=0.25: pass p=0.25 (keep_prob is the probability to keep: MindSpore 2.x's nn.Dropout(0.2) keeps "
        "20%)"]


def test_an_unpairable_head_exits_2_with_a_map_that_completed_makes_the_run_work(tmp_path, capsys):
    torch_target, ms_target = _pair(tmp_path, TORCH_LENET, MS_LENET_RAW_HEAD)
    assert _port(tmp_path, torch_target, ms_target, *LENET, *QUICK) == 2
    err = capsys.readouterr().err.strip()
    written = tmp_path / "ms_side" / "MAP.toml"
    assert err.count("\n") == 0 and "classifier.5.weight" in err and "w_out" in err and f"--map {written}" in err
    text = written.read_text()
    assert '"classifier.5.bias" = "b_out"  # (10,), the only one of its shape left' in text
    assert '"classifier.5.weight" = ""  # (10, 84): not paired' in text and "#   w_out (84, 10)" in text
    written.write_text(text.replace('"classifier.5.weight" = ""',
                                    '"classifier.5.weight" = { mindspore = "w_out", transposed = true }'))
    code = _port(tmp_path, torch_target, ms_target, *LENET, *QUICK, "--map", str(written))
    out = capsys.readouterr().out
    assert code == 0 and "verdict: PASSED" in out, out[-3000:]
    assert "classifier.5.weight  w_out" in out and "--map" in out


def test_bad_inputs_are_one_line_errors_exit_2(tmp_path, capsys):
    """The rows of docs/bad-inputs.md's Port table that need the two files (the MAP.toml rows: test_mapping.py)."""
    torch_target, ms_target = _pair(tmp_path, TORCH_LENET, MS_LENET)
    folder = tmp_path / "ms_side"
    (folder / "broken.py").write_text("def make():\n    raise ValueError('no such width')\n")
    (folder / "broken_import.py").write_text("import not_a_module_here\n")
    cases = [
        (torch_target, str(folder / "lenet_ms.py"), LENET, "is not FILE.py:FACTORY"),
        (torch_target, f"{folder / 'missing.py'}:lenet5", LENET, "is not a file"),
        (torch_target, f"{folder / 'lenet_ms.py'}:resnet", LENET,
         "has no callable 'resnet'; its own callables: LeNet5, lenet5"),
        (torch_target, f"{folder / 'broken_import.py'}:make", LENET,
         "importing broken_import.py failed (ModuleNotFoundError: "),
        (torch_target, f"{folder / 'broken.py'}:make", LENET, "make() raised ValueError: no such width"),
        (torch_target, torch_target, LENET, "not a mindspore.nn.Cell; the factory must return the model"),
        (torch_target, ms_target, (*LENET, "--factory-args", "widht=2"), "--factory-args widht: neither factory "
                                                                         "takes it"),
        (torch_target, ms_target, (*LENET, "--factory-args", "2"), "is not KEY=VALUE with KEY an identifier"),
        (torch_target, ms_target, ("--input-shape", "32,32"), "is not C,H,W of three positive integers"),
        (torch_target, ms_target, (), "it runs on 32x32, 33x33, 34x34, 35x35; pass --input-shape 1,H,W"),
        (torch_target, ms_target, ("--input-shape", "1,28,28"), "the PyTorch model does not run on (1, 28, 28)"),
        (torch_target, ms_target, (*LENET, "--model", "lenet5"),
         "harness port takes its models from --torch and --mindspore; leave out --model")]
    for torch_side, ms_side, flags, expected in cases:
        assert _port(tmp_path, torch_side, ms_side, *flags, *QUICK) == 2, expected
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and expected in err, err
    assert not (tmp_path / "reports").exists() and not (tmp_path / "runs").exists()  # nothing half-written


def test_the_input_shape_is_required_only_where_the_model_leaves_it_open(tmp_path, capsys):
    from harness.port.load import infer_input_shape, load_user_model
    from harness.backend import get_port

    torch_target, _ = _pair(tmp_path, TORCH_LENET, MS_LENET)
    user = load_user_model(torch_target, "--torch", "pytorch", get_port("pytorch"), {}, forget_after=False)
    with pytest.raises(HarnessError, match=r"it runs on 32x32, 33x33, 34x34, 35x35; pass --input-shape 1,H,W"):
        infer_input_shape(user, None, (28, 28))
    assert infer_input_shape(user, None, (32, 32)) == (1, 32, 32)  # the dataset's own size settles it


def test_a_model_the_spec_cannot_express_is_refereed_by_torch_in_float64(tmp_path, capsys):
    for folder, name, source in (("torch_side", "twin_torch.py", TORCH_TWIN), ("ms_side", "twin_ms.py", MS_TWIN)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text(source)
    code = _port(tmp_path, f"{tmp_path / 'torch_side' / 'twin_torch.py'}:Twin",
                 f"{tmp_path / 'ms_side' / 'twin_ms.py'}:Twin", "--input-shape", "1,8,8", *QUICK)
    out = capsys.readouterr().out
    assert code == 3 and "op Concat is not supported" in out and "using torch in float64 (module.double())" in out
    assert "inconclusive: pytorch:training+parity vs mindspore:training+parity" in out
    agreement = pd.read_csv(tmp_path / "reports" / "agreement.csv")
    same = agreement[agreement.kind == "same-weights"]
    assert len(same) == 5 and same.passed.all() and "torch:float64[initial]" in set(same.evaluator_b)
    layers = pd.read_csv(tmp_path / "reports" / "layers.csv")
    torch_layers = layers.dropna(subset=["torch_layer"])  # MindSpore's Flatten is torch's x.flatten(1): no module
    assert list(torch_layers.torch_layer) == ["a", "b", "relu", "head"]
    assert torch_layers.torch_float64_passed.astype(bool).all() and layers.mindspore_layer.iloc[3] == "flatten"
