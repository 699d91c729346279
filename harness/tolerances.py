"""The tolerance budget, read from ``tolerances.toml`` (one place, a reason for each value)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

BUDGET_FILE = Path(__file__).resolve().parent.parent / "tolerances.toml"


@dataclass(frozen=True)
class Tolerance:
    """``|a - b| <= atol + rtol * |b|`` elementwise."""

    rtol: float
    atol: float
    why: str = ""


@lru_cache(maxsize=1)
def budget() -> dict[str, dict]:
    """The parsed budget file, section by section."""
    with open(BUDGET_FILE, "rb") as handle:
        return tomllib.load(handle)


def tolerance(kind: str) -> Tolerance:
    """The tolerance of a comparison kind: onnx, cross, reference or layer."""
    section = budget()[kind]
    return Tolerance(float(section["rtol"]), float(section["atol"]), section.get("why", ""))


def value(kind: str, key: str) -> float:
    """A single number of the budget, e.g. ``value("trained", "accuracy_band")``."""
    return float(budget()[kind][key])
