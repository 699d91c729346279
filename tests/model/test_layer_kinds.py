"""One table per layer kind: every kind of the spec is registered in every table that must know it."""

from __future__ import annotations

import typing

import pytest

from harness.model.spec import LAYER_KINDS, Layer
from harness.model.weights import INITIALISERS
from harness.reference.layers import RULES

KINDS = set(LAYER_KINDS)


def test_layer_kinds_are_the_spec_union():
    assert KINDS == set(typing.get_args(Layer)) and len(LAYER_KINDS) == len(KINDS)


@pytest.mark.parametrize("table, where", [(INITIALISERS, "harness.model.weights.INITIALISERS"),
                                          (RULES, "harness.reference.layers.RULES")])
def test_core_tables_hold_every_kind(table, where):
    assert set(table) == KINDS, f"{where} lacks {sorted(k.__name__ for k in KINDS - set(table))}"


@pytest.mark.parametrize("backend", ["pytorch", "mindspore"])
def test_each_backend_builds_every_kind(backend):
    pytest.importorskip("torch" if backend == "pytorch" else "mindspore")
    import importlib

    builders = importlib.import_module(f"harness.backends.{backend}.build").BUILDERS
    lacking = sorted(k.__name__ for k in KINDS - set(builders))
    assert set(builders) == KINDS, f"backends/{backend}/build.py lacks {lacking}"
