"""The port's pairing and conventions rules on layer calls written out by hand (no framework runs here): the
alignment by execution order, the tensor rules and MAP.toml, each known convention difference, and the layer
outputs a model computes without a module of its own."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.model.spec import Activation, Conv2d, Flatten, Linear, ModelSpec
from harness.port import conventions, hooks
from harness.port.mapping import align, call_keys, layer_calls, map_tensors, read_map, table_lines, write_map

CONV = {"kind": "conv", "in_channels": 1, "out_channels": 2, "kernel": (3, 3), "stride": (1, 1), "dilation": (1, 1),
        "groups": 1, "pads": (0, 0, 0, 0), "padding_mode": "zeros", "bias": True, "written": "padding=0"}


def _call(name: str, settings: dict, shape, tensors: dict | None = None, kind_type: str = "", line: str = "") -> dict:
    return {"name": name, "type": kind_type or settings["kind"], "line": line, "settings": settings,
            "tensors": {local: {"name": f"{name}.{local}", "shape": s} for local, s in (tensors or {}).items()},
            "in_shape": None, "shape": shape, "value": None}


def test_align_pairs_by_kind_and_shape_in_order_and_leaves_gaps():
    torch = [("conv", (2, 4, 4)), ("pool", (2, 2, 2)), ("flatten", (8,)), ("linear", (3,))]
    mindspore = [("conv", (2, 4, 4)), ("activation", (2, 4, 4)), ("pool", (2, 2, 2)), ("flatten", (8,)),
                 ("linear", (3,))]
    assert align(torch, mindspore) == [(0, 0), (None, 1), (1, 2), (2, 3), (3, 4)]  # a functional F.relu in torch
    # A wrong padding changes every later shape: the kinds still pair.
    assert align([("conv", (2, 4, 4)), ("linear", (3,))], [("conv", (2, 6, 6)), ("linear", (3,))]) == [(0, 0), (1, 1)]
    # ReLU where Sigmoid was pairs (one kind); an empty Sequential shortcut never stands for a ReLU.
    assert align([("activation", (4,))], [("activation", (4,))]) == [(0, 0)]
    assert set(align([("other", (4,))], [("activation", (4,))])) == {(0, None), (None, 0)}


def test_tensors_pair_by_role_then_name_then_shape_and_what_is_left_is_shown():
    bn = {"kind": "batchnorm"}
    torch = [_call("features.0", CONV, (2, 4, 4), {"weight": (2, 1, 3, 3), "bias": (2,)}),
             _call("bn", bn, (2, 4, 4), {"weight": (2,), "bias": (2,), "running_mean": (2,), "running_var": (2,)}),
             _call("fc", {"kind": "linear"}, (3,), {"weight": (3, 32), "bias": (3,)})]
    ms = [_call("conv1", CONV, (2, 4, 4), {"weight": (2, 1, 3, 3), "bias": (2,)}),
          _call("norm", bn, (2, 4, 4), {"gamma": (2,), "beta": (2,), "moving_mean": (2,), "moving_variance": (2,)}),
          _call("dense", {"kind": "linear"}, (3,), {"weight": (32, 3), "bias": (3,)})]
    t_tensors = {e["name"]: e["shape"] for c in torch for e in c["tensors"].values()}
    t_tensors.update({"extra.scale": (5,), "head.running_mean": (7,)})
    m_tensors = {e["name"]: e["shape"] for c in ms for e in c["tensors"].values()}
    m_tensors.update({"gain": (5,), "head.moving_mean": (7,), "left.a": (6,), "left.b": (6,)})
    found = map_tensors(torch, ms, align(call_keys(torch), call_keys(ms)), t_tensors, m_tensors)
    rules = {pair.torch: (pair.mindspore, pair.rule) for pair in found.pairs}
    assert rules["bn.weight"] == ("norm.gamma", "execution order")
    assert rules["bn.running_var"] == ("norm.moving_variance", "execution order")
    assert rules["fc.weight"] == ("dense.weight", "execution order, transposed")
    assert rules["head.running_mean"] == ("head.moving_mean", "name")
    assert rules["extra.scale"] == ("gain", "the only one of its shape left")
    assert not found.unmatched_torch and found.unmatched_mindspore == {"left.a": (6,), "left.b": (6,)}
    assert found.complete  # every torch tensor is held; the MindSpore leftovers keep their own values
    lines = table_lines(found)
    assert lines[0].split() == ["torch", "mindspore", "shape", "rule"] and "NOT PAIRED" in lines[-1]


def test_a_map_file_is_written_read_back_and_checked(tmp_path):
    torch = [_call("fc", {"kind": "linear"}, (3,), {"weight": (3, 4), "bias": (3,)})]
    t_tensors = {"fc.weight": (3, 4), "fc.bias": (3,), "a.w": (2, 2), "b.w": (2, 2)}
    m_tensors = {"fc.weight": (3, 4), "fc.bias": (3,), "x": (2, 2), "y": (2, 2)}
    found = map_tensors(torch, torch, [(0, 0)], t_tensors, m_tensors)
    assert set(found.unmatched_torch) == {"a.w", "b.w"}  # two of one shape: ambiguous, never guessed
    path = write_map(tmp_path, found)
    assert path.name == "MAP.toml" and write_map(tmp_path, found).name == "MAP.new.toml"  # never overwrites
    with pytest.raises(HarnessError, match="'a.w' is still empty"):
        read_map(path)
    path.write_text(path.read_text().replace('"a.w" = ""', '"a.w" = "y"').replace(
        '"b.w" = ""', '"b.w" = { mindspore = "x", transposed = true }'))
    given = read_map(path)
    assert given["a.w"] == ("y", False) and given["b.w"] == ("x", True)
    done = map_tensors(torch, torch, [(0, 0)], t_tensors, m_tensors, given)
    assert done.complete and {p.torch: p.rule for p in done.pairs}["b.w"] == "--map"
    with pytest.raises(HarnessError, match="no MindSpore Parameter 'zz'"):
        map_tensors(torch, torch, [], t_tensors, m_tensors, {"a.w": ("zz", False)})
    with pytest.raises(HarnessError, match="the shapes do not fit"):
        map_tensors(torch, torch, [], t_tensors, m_tensors, {"fc.bias": ("fc.weight", False)})
    (tmp_path / "bad.toml").write_text("[tensors\n")
    with pytest.raises(HarnessError, match="cannot read it as TOML"):
        read_map(tmp_path / "bad.toml")


def _finding(torch_settings: dict, ms_settings: dict, shape=(2, 4, 4)) -> list[str]:
    t = _call("t", torch_settings, shape, kind_type="T")
    m = _call("m", ms_settings, shape, kind_type="M", line="f.py:3")
    return [f.fix for f in conventions.check([t], [m], [(0, 0)])]


@pytest.mark.parametrize("torch_settings, ms_settings, fix", [
    (CONV, {**CONV, "pads": (1, 1, 1, 1)}, "pass pad_mode='valid' (MindSpore's Conv2d defaults to pad_mode='same')"),
    ({**CONV, "pads": (1, 1, 1, 1)}, CONV, "pass pad_mode='pad', padding=1"),
    (CONV, {**CONV, "bias": False}, "pass has_bias=True (MindSpore's Conv2d defaults to has_bias=False)"),
    (CONV, {**CONV, "groups": 2}, "pass group=1"),
    ({"kind": "pool", "mode": "max", "kernel": (2, 2), "stride": (2, 2), "pads": (0, 0, 0, 0), "ceil_mode": False},
     {"kind": "pool", "mode": "max", "kernel": (2, 2), "stride": (1, 1), "pads": (0, 0, 0, 0), "ceil_mode": False},
     "pass stride=2 (MindSpore's pooling stride defaults to 1, torch's to the kernel size)"),
    ({"kind": "batchnorm", "momentum": 0.1, "eps": 1e-5, "running_stats": True, "affine": True},
     {"kind": "batchnorm", "momentum": 0.9, "eps": 1e-5, "running_stats": True, "affine": True, "written": "m"},
     "pass momentum=0.9 (MindSpore's momentum weighs the running value, torch's the new batch: torch's 0.1 is "
     "MindSpore's 0.9)"),
    ({"kind": "batchnorm", "momentum": 0.1, "eps": 1e-5, "running_stats": True, "affine": True},
     {"kind": "batchnorm", "momentum": 0.1, "eps": 1e-3, "running_stats": True, "affine": True, "written": "m"},
     "pass eps=1e-05"),
    ({"kind": "linear", "bias": True}, {"kind": "linear", "bias": True, "activation": "ReLU"},
     "drop Dense's activation: torch's Linear has none (put the activation after it, as torch does)"),
    ({"kind": "activation", "fn": "leaky_relu", "negative_slope": 0.01},
     {"kind": "activation", "fn": "leaky_relu", "negative_slope": 0.2},
     "pass alpha=0.01 (MindSpore's LeakyReLU defaults to alpha=0.2, torch to 0.01)"),
    ({"kind": "activation", "fn": "gelu", "approximate": "none"}, {"kind": "activation", "fn": "gelu",
                                                                    "approximate": "tanh"},
     "pass approximate=False (MindSpore's GELU defaults to approximate=True, the tanh formula; torch's to the "
     "exact erf)"),
    ({"kind": "flatten", "start_dim": 1, "end_dim": -1}, {"kind": "flatten", "start_dim": 0, "end_dim": -1},
     "pass start_dim=1, end_dim=-1"),
    ({"kind": "activation", "fn": "relu"}, {"kind": "dropout", "p": 0.5, "written": "p=0.5"},
     "use the MindSpore counterpart of torch's T"),
])
def test_each_known_difference_is_a_finding_with_its_fix(torch_settings, ms_settings, fix):
    assert _finding(torch_settings, ms_settings) == [fix]


def test_equal_settings_are_no_finding_and_a_finding_reads_as_one_line():
    assert _finding(CONV, dict(CONV)) == []
    t = _call("features.0", CONV, (2, 4, 4), kind_type="Conv2d")
    m = _call("conv1", {**CONV, "bias": False}, (2, 4, 4), kind_type="Conv2d", line="port.py:7")
    assert conventions.check([t], [m], [(0, 0), (0, 0)])[0].text() == (
        "port.py:7: mindspore conv1 (Conv2d) bias has_bias=False, torch features.0 (Conv2d) bias=True: pass "
        "has_bias=True (MindSpore's Conv2d defaults to has_bias=False)")


def test_a_layer_without_a_module_is_completed_from_the_values_before_it():
    spec = ModelSpec("m", (1, 3, 3), 2, (Conv2d("c", 1, 1, 3), Activation("r", "relu"), Flatten("f"),
                                         Linear("l", 1, 2)))
    weights = {"c.weight": np.ones((1, 1, 3, 3), np.float32), "c.bias": np.array([-5.0], np.float32),
               "l.weight": np.ones((2, 1), np.float32), "l.bias": np.zeros(2, np.float32)}
    x = np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3) / 10
    conv = np.array([[[[-1.4]]], [[[6.7]]]], np.float32)
    logits = np.array([[9.0, 9.0], [9.0, 9.0]], np.float32)
    out = hooks.complete(spec, weights, x, {"c": conv, "l": logits})  # F.relu and .view have no module
    assert out["r"].ravel().tolist() == pytest.approx([0.0, 6.7]) and out["f"].shape == (2, 1)
    assert out["c"] is conv and out["l"] is logits  # what a hook gave is kept as it is
    calls = [_call("conv", CONV, (1, 1, 1)), _call("fc", {"kind": "linear"}, (2,))]
    assert layer_calls(spec, calls) == {"c": 0, "l": 1}


def test_the_first_divergence_names_both_layers():
    rows = [{"torch_layer": "a", "torch_type": "Conv2d", "mindspore_layer": "b", "mindspore_type": "Conv2d",
             "passed": True, "max_abs": 1e-7},
            {"torch_layer": "features.5", "torch_type": "MaxPool2d", "mindspore_layer": "features.5",
             "mindspore_type": "AvgPool2d", "passed": False, "max_abs": 0.31}]
    assert hooks.divergence_line(hooks.first_divergence(rows)) == (
        "first divergence: torch features.5 (MaxPool2d) <-> mindspore features.5 (AvgPool2d): max_abs 3.10e-01")
