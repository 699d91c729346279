"""The tolerance budget: ``tolerances.toml`` read once into typed, frozen policies, one per comparison kind.

Code asks a policy for its numbers (``policies().trained.accuracy_band``), never a string key; each
policy carries the one-line reason the file gives for it. The file ships inside the package.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class Tolerance:
    """Elementwise agreement of two outputs: ``|a - b| <= atol + rtol * |b|`` (b the reference side)."""

    rtol: float
    atol: float
    why: str


@dataclass(frozen=True)
class TrainedPolicy:
    """Two independently trained runs: accuracies within a band, predictions mostly shared."""

    accuracy_band: float
    min_top1_agree: float
    control_factor: float
    chance_alpha: float  # a model has learned only if a binomial test puts it above chance at this level
    min_learned: float  # ... and it closed this fraction of the gap from chance to perfect accuracy
    why: str


@dataclass(frozen=True)
class StepPolicy:
    """Synchronised single steps (and the backward check): updates relative to the tensor's scale."""

    update_rel: float
    loss_abs: float
    why: str


@dataclass(frozen=True)
class LockstepPolicy:
    """K steps side by side from the same weights on the same batches."""

    weight_rel: float
    loss_abs: float
    why: str


@dataclass(frozen=True)
class Float32Policy:
    """What float32 itself cannot decide: the width of undecidable decisions and the spread's multiple."""

    width_factor: float
    spread_factor: float
    why: str


@dataclass(frozen=True)
class Policies:
    """Every policy of the budget file."""

    onnx: Tolerance  # a framework vs ONNX Runtime running its own export
    cross: Tolerance  # PyTorch vs MindSpore with the same weights and input
    reference: Tolerance  # any float32 evaluator vs the float64 reference
    layer: Tolerance  # per-layer outputs when locating the first divergent layer
    trained: TrainedPolicy
    step: StepPolicy
    lockstep: LockstepPolicy
    float32: Float32Policy


def _policy(cls, section: str, values: dict):
    names = [f.name for f in fields(cls)]
    missing = [name for name in names if name not in values]
    unknown = sorted(set(values) - set(names))
    if missing or unknown:  # the file ships with the package: a mismatch is a harness bug, so no HarnessError
        raise ValueError(f"tolerances.toml [{section}]: missing {missing}, unknown {unknown}; expected {names}")
    return cls(**{name: values[name] if name == "why" else float(values[name]) for name in names})


@lru_cache(maxsize=1)
def policies() -> Policies:
    """The budget file, parsed and checked once per process."""
    text = resources.files("harness").joinpath("tolerances.toml").read_text(encoding="utf-8")
    sections = tomllib.loads(text)
    kinds = {f.name: f.type for f in fields(Policies)}
    classes = {"Tolerance": Tolerance, "TrainedPolicy": TrainedPolicy, "StepPolicy": StepPolicy,
               "LockstepPolicy": LockstepPolicy, "Float32Policy": Float32Policy}
    return Policies(**{name: _policy(classes[kind], name, sections.get(name, {})) for name, kind in kinds.items()})
