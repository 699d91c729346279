"""The first divergent layer in a graph model: compare's divergence search names the layer and its kind."""

from __future__ import annotations

import numpy as np

from harness.compare.divergence import describe_divergence
from harness.evaluators.float64 import Float64Evaluator
from harness.model.weights import init_weights
from harness.parity.modes import parity_spec
from harness.reference.forward import run_graph
from harness.reference.layers import apply_layer
from tests.support import randomise_batch_norm, residual_depthwise_spec

GRAPH = residual_depthwise_spec(dropout=0.25, channels=1, size=8, classes=10)


def test_divergence_search_names_a_graph_layer_and_its_kind():
    spec = parity_spec(GRAPH)
    weights = randomise_batch_norm(spec, init_weights(spec, seed=0))
    x = np.random.default_rng(0).standard_normal((8, *spec.input_shape)).astype(np.float32)
    referee = Float64Evaluator(spec, weights, "reference:float64", "the harness")
    names = [layer.name for layer in spec.layers]

    class Faulty:  # an evaluator whose layer `at` is off by `error`, carried down every path from it
        name, provenance, exact, has_layers = "fake:native", "a test", False, True

        def __init__(self, at: str, error: float) -> None:
            self.at, self.error = at, error

        def activations(self, xs):
            def apply(layer, inputs):
                return apply_layer(layer, weights, *inputs) + (self.error if layer.name == self.at else 0.0)

            values = run_graph(spec, xs.astype(np.float64), apply, keep=True)
            return {layer.name: value for layer, value in zip(spec.layers, values[1:])}

    for at, kind in (("b2_dw", "depthwise conv"), ("g2", "conv, groups=2")):
        if at == "g2":  # a larger fc, so that g2's error, averaged by the pooling, still crosses at the logits
            weights["fc.weight"] = 8 * weights["fc.weight"]
            referee = Float64Evaluator(spec, weights, "reference:float64", "the harness")
        found = describe_divergence(spec, weights, x, Faulty(at, 9e-5), referee)
        # Under the tolerance where it enters, over it further down (the depthwise conv's: after its BatchNorm).
        assert names.index(found.split(" ")[0]) > names.index(at), found
        assert found.endswith(f"; largest own error: {at} ({kind}) in fake:native, 9.00e-05 from float64 on its "
                              "own input"), found
        assert describe_divergence(spec, weights, x, Faulty(at, 2e-4), referee) == f"{at} (max_abs 2.00e-04)"
