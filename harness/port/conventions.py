"""The conventions check: settings of corresponding layers that differ in a way the harness knows, each with the
MindSpore line to change and what to write there. It runs on the layers' settings alone, before any check runs.

Both port modules describe a layer in one vocabulary in torch's conventions (``backends/*/port.py: settings``):
a MindSpore BatchNorm's ``momentum`` is given as the weight of the new batch, a Dropout's ``p`` as the drop
probability, padding as the pixels added on each side for the input the layer really had. So a finding is a
difference of numbers; its text says what MindSpore's argument means where the two frameworks differ.
"""

from __future__ import annotations

from dataclasses import dataclass

_MS_ACTIVATIONS = {"relu": "nn.ReLU()", "tanh": "nn.Tanh()", "sigmoid": "nn.Sigmoid()", "relu6": "nn.ReLU6()",
                   "hardswish": "nn.HSwish()", "leaky_relu": "nn.LeakyReLU(alpha=...)", "gelu": "nn.GELU(...)",
                   "identity": "nn.Identity()", "elu": "nn.ELU()", "silu": "nn.SiLU()", "softmax": "nn.Softmax()",
                   "hardsigmoid": "nn.HSigmoid()", "mish": "nn.Mish()"}


@dataclass(frozen=True)
class Finding:
    """One difference between corresponding layers, and the change that removes it.

    Attributes:
        torch_layer, torch_type: the PyTorch module (``features.5``, ``MaxPool2d``); empty where it has none.
        mindspore_layer, mindspore_type: the MindSpore cell.
        setting: what differs (``padding``, ``pooling``, ``momentum``...).
        torch_value, mindspore_value: each side's value, as the user would write it.
        fix: what to write on the MindSpore line.
        line: ``file.py:12`` of the MindSpore cell (of the PyTorch module where the MindSpore side has none).
    """

    torch_layer: str
    torch_type: str
    mindspore_layer: str
    mindspore_type: str
    setting: str
    torch_value: str
    mindspore_value: str
    fix: str
    line: str

    def text(self) -> str:
        """``ms_lenet.py:9: mindspore features.5 (AvgPool2d) pooling avg, torch features.5 (MaxPool2d) max: use
        nn.MaxPool2d(...)``."""
        where = f"{self.line}: " if self.line else ""
        return (f"{where}mindspore {self.mindspore_layer} ({self.mindspore_type}) {self.setting} "
                f"{self.mindspore_value}, torch {self.torch_layer} ({self.torch_type}) {self.torch_value}: {self.fix}")


def _pads_text(pads) -> str:
    if pads is None:
        return "'same' (depends on the input)"
    top, bottom, left, right = pads
    if top == bottom == left == right:
        return str(top)
    return f"(top {top}, bottom {bottom}, left {left}, right {right})"


def _pad_fix(pads) -> str:
    if pads is None:
        return "pad explicitly"
    top, bottom, left, right = pads
    if not any(pads):
        return "pass pad_mode='valid' (MindSpore's Conv2d defaults to pad_mode='same')"
    if top == bottom == left == right:
        return f"pass pad_mode='pad', padding={top}"
    return f"pass pad_mode='pad', padding=({top}, {bottom}, {left}, {right})"


def _conv(t: dict, m: dict) -> list[tuple[str, str, str, str]]:
    found = []
    if t["pads"] != m["pads"] and t["pads"] is not None:
        found.append(("padding", _pads_text(t["pads"]), f"{_pads_text(m['pads'])} ({m.get('written', '')})",
                      _pad_fix(t["pads"])))
    if t["bias"] != m["bias"]:
        found.append(("bias", f"bias={t['bias']}", f"has_bias={m['bias']}",
                      f"pass has_bias={t['bias']} (MindSpore's Conv2d defaults to has_bias=False)"))
    if t["groups"] != m["groups"]:
        found.append(("groups", f"groups={t['groups']}", f"group={m['groups']}", f"pass group={t['groups']}"))
    for key, name in (("stride", "stride"), ("kernel", "kernel_size"), ("dilation", "dilation")):
        if t[key] != m[key]:
            found.append((name, f"{name}={t[key]}", f"{name}={m[key]}", f"pass {name}={t[key]}"))
    if t["padding_mode"] != m["padding_mode"]:
        found.append(("padding mode", t["padding_mode"], m["padding_mode"], "pad with zeros as torch's module does"))
    return found


def _pool(t: dict, m: dict) -> list[tuple[str, str, str, str]]:
    found = []
    if t["mode"] != m["mode"]:
        cls = "nn.MaxPool2d" if t["mode"] == "max" else "nn.AvgPool2d"
        found.append(("pooling", t["mode"], m["mode"], f"use {cls}(kernel_size={t['kernel'][0]}, "
                                                       f"stride={t['stride'][0]})"))
    if t["kernel"] != m["kernel"]:
        found.append(("kernel_size", str(t["kernel"]), str(m["kernel"]), f"pass kernel_size={t['kernel'][0]}"))
    if t["stride"] != m["stride"]:
        found.append(("stride", str(t["stride"]), str(m["stride"]),
                      f"pass stride={t['stride'][0]} (MindSpore's pooling stride defaults to 1, torch's to the "
                      "kernel size)"))
    if t["pads"] != m["pads"] and t["pads"] is not None:
        fix = "pass pad_mode='valid'" if not any(t["pads"]) else f"pass pad_mode='pad', padding={t['pads'][0]}"
        found.append(("padding", _pads_text(t["pads"]), _pads_text(m["pads"]), fix))
    if t["ceil_mode"] != m["ceil_mode"]:
        found.append(("ceil_mode", str(t["ceil_mode"]), str(m["ceil_mode"]), f"pass ceil_mode={t['ceil_mode']}"))
    if t.get("count_include_pad", True) != m.get("count_include_pad", True) and any(t["pads"] or ()):
        found.append(("count_include_pad", str(t["count_include_pad"]), str(m["count_include_pad"]),
                      f"pass count_include_pad={t['count_include_pad']}"))
    return found


def _batchnorm(t: dict, m: dict) -> list[tuple[str, str, str, str]]:
    found = []
    if t["momentum"] is None:
        found.append(("momentum", "momentum=None (a cumulative average)", m["written"],
                      "MindSpore has no cumulative average; the running statistics will differ"))
    elif abs(t["momentum"] - m["momentum"]) > 1e-6:
        found.append(("momentum", f"momentum={t['momentum']:g}", m["written"],
                      f"pass momentum={1.0 - t['momentum']:g} (MindSpore's momentum weighs the running value, "
                      f"torch's the new batch: torch's {t['momentum']:g} is MindSpore's {1.0 - t['momentum']:g})"))
    if abs(t["eps"] - m["eps"]) > 1e-12:
        found.append(("eps", f"eps={t['eps']:g}", f"eps={m['eps']:g}", f"pass eps={t['eps']:g}"))
    if t["running_stats"] != m["running_stats"]:
        found.append(("running statistics", f"track_running_stats={t['running_stats']}",
                      "use_batch_statistics set", "leave use_batch_statistics=None (batch statistics in training, "
                                                   "running ones in eval, as torch)"))
    if t["affine"] != m["affine"]:
        found.append(("affine", f"affine={t['affine']}", f"affine={m['affine']}", f"pass affine={t['affine']}"))
    return found


def _dropout(t: dict, m: dict) -> list[tuple[str, str, str, str]]:
    if abs(t["p"] - m["p"]) <= 1e-9:
        return []
    note = " (keep_prob is the probability to keep: MindSpore 2.x's nn.Dropout(0.2) keeps 20%)" \
        if m["written"].startswith("keep_prob") else ""
    return [("drop probability", f"p={t['p']:g}", f"{m['written']} (drops {m['p']:g})",
             f"pass p={t['p']:g}{note}")]


def _linear(t: dict, m: dict) -> list[tuple[str, str, str, str]]:
    found = []
    if t["bias"] != m["bias"]:
        found.append(("bias", f"bias={t['bias']}", f"has_bias={m['bias']}", f"pass has_bias={t['bias']}"))
    if m.get("activation"):
        found.append(("activation", "none", f"activation={m['activation']}",
                      "drop Dense's activation: torch's Linear has none (put the activation after it, as torch does)"))
    return found


def _activation(t: dict, m: dict) -> list[tuple[str, str, str, str]]:
    if t["fn"] != m["fn"]:
        return [("function", t["fn"], m["fn"], f"use {_MS_ACTIVATIONS.get(t['fn'], t['fn'])}")]
    found = []
    if t["fn"] == "leaky_relu" and abs(t["negative_slope"] - m["negative_slope"]) > 1e-9:
        found.append(("negative slope", f"negative_slope={t['negative_slope']:g}", f"alpha={m['negative_slope']:g}",
                      f"pass alpha={t['negative_slope']:g} (MindSpore's LeakyReLU defaults to alpha=0.2, torch to "
                      "0.01)"))
    if t["fn"] == "gelu" and t["approximate"] != m["approximate"]:
        found.append(("approximation", f"approximate={t['approximate']!r}",
                      f"approximate={m['approximate'] == 'tanh'}",
                      f"pass approximate={t['approximate'] == 'tanh'} (MindSpore's GELU defaults to approximate=True, "
                      "the tanh formula; torch's to the exact erf)"))
    return found


def _flatten(t: dict, m: dict) -> list[tuple[str, str, str, str]]:
    if (t["start_dim"], t["end_dim"]) == (m["start_dim"], m["end_dim"]):
        return []
    return [("flatten dims", f"start_dim={t['start_dim']}, end_dim={t['end_dim']}",
             f"start_dim={m['start_dim']}, end_dim={m['end_dim']}",
             f"pass start_dim={t['start_dim']}, end_dim={t['end_dim']}")]


def _global(t: dict, m: dict) -> list[tuple[str, str, str, str]]:
    if t["mode"] == m["mode"]:
        return []
    return [("pooling", t["mode"], m["mode"], f"take the {'mean' if t['mode'] == 'avg' else 'max'} over H and W")]


_RULES = {"conv": _conv, "pool": _pool, "batchnorm": _batchnorm, "dropout": _dropout, "linear": _linear,
          "activation": _activation, "flatten": _flatten, "global_pool": _global}


def check(torch_calls: list[dict], ms_calls: list[dict], pairs: list[tuple[int | None, int | None]],
          not_trained: list[tuple[str, str, str]] | None = None) -> list[Finding]:
    """Every known difference between paired layers, once per pair of modules, in execution order.

    Args:
        torch_calls, ms_calls: each side's layer calls.
        pairs: their alignment (``mapping.align``).
        not_trained: (torch name, MindSpore name, line) of tensors torch trains and MindSpore does not.
    """
    findings, seen = [], set()
    for i, j in pairs:
        if i is None or j is None:
            continue
        t, m = torch_calls[i], ms_calls[j]
        if (t["name"], m["name"]) in seen:
            continue
        seen.add((t["name"], m["name"]))
        ts, ms = t["settings"], m["settings"]
        if ts["kind"] != ms["kind"]:
            if "other" not in (ts["kind"], ms["kind"]):
                findings.append(_finding(t, m, ("layer", ts["kind"], ms["kind"],
                                                f"use the MindSpore counterpart of torch's {t['type']}")))
            continue
        rule = _RULES.get(ts["kind"])
        differences = rule(ts, ms) if rule else []
        for difference in differences:
            findings.append(_finding(t, m, difference))
        if not differences and t["shape"] and m["shape"] and t["shape"] != m["shape"] and ts["kind"] != "other":
            findings.append(_finding(t, m, ("output shape", str(t["shape"]), str(m["shape"]),
                                            "make the layer's settings give torch's shape")))
    for torch_name, ms_name, line in not_trained or []:
        findings.append(Finding(torch_name, "tensor", ms_name, "Parameter", "training", "trained",
                                "requires_grad=False", "leave requires_grad=True: torch trains it", line))
    return findings


def _finding(t: dict, m: dict, difference: tuple[str, str, str, str]) -> Finding:
    setting, torch_value, ms_value, fix = difference
    return Finding(t["name"], t["type"], m["name"], m["type"], setting, torch_value, ms_value, fix,
                   m["line"] or t["line"])
