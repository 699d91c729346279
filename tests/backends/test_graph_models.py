"""Both backends realise a graph spec: a residual block, a stride-2 depthwise conv with a strided shortcut,
a grouped conv and global average pooling, against float64 and their own ONNX exports; one train step
against the float64 step; Dropout read by name inside the graph; a resumed run equal to a straight one."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import numpy as np
import onnx
import pytest

from harness.compare.metrics import within
from harness.config import TrainConfig, build_config
from harness.data.fit import prepare
from harness.data.registry import load_raw
from harness.evaluators.onnxrt import run_onnx
from harness.model.spec import Dropout
from harness.model.weights import init_weights
from harness.parity import spread
from harness.parity.rows import adam_rows, moment_scales, weight_rows
from harness.reference.forward import forward
from harness.reference.grad import train_forward
from harness.tolerances import policies
from harness.training.checkpoint import read_checkpoint, write_checkpoint
from harness.training.loop import Checkpointing, train
from harness.training.schedule import decayed_names
from tests.support import randomise_batch_norm, residual_depthwise_spec, torch_graph

GRAPH = residual_depthwise_spec(dropout=0.25)  # eval mode: the Dropout is the identity
PLAIN = residual_depthwise_spec()  # the train-mode float64 reference has no Dropout masks


def _built(backend, spec, seed: int = 0):
    weights = randomise_batch_norm(spec, init_weights(spec, seed))
    model = backend.build(spec, "cpu")
    backend.set_weights(model, weights)
    return model, weights


def _batch(spec, n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *spec.input_shape)).astype(np.float32)
    return x, rng.integers(0, spec.num_classes, n).astype(np.int64)


@pytest.mark.parametrize("size", [8, 7])
def test_logits_and_every_layers_output_match_float64(backend, size):
    # 7: odd planes, where a stride-2 conv's floor (padded 3x3 and unpadded 1x1 alike) must be torch's.
    spec = residual_depthwise_spec(dropout=0.25, size=size)
    model, weights = _built(backend, spec)
    x, _ = _batch(spec, 5)
    exact, outputs = forward(spec, weights, x, collect=True)
    assert within(backend.predict(model, x, batch_size=5), exact, policies().reference)
    assert within(backend.predict(model, x, batch_size=2), exact, policies().reference)  # a last partial batch
    acts = backend.activations(model, x)
    assert list(acts) == [layer.name for layer in spec.layers]
    for (name, value), shape in zip(acts.items(), spec.output_shapes):
        assert value.shape == (5, *shape), name
        assert within(value, outputs[name], policies().layer), name


def test_train_mode_activations_give_each_decisions_input(backend):
    """What parity decides by: each ReLU, ReLU6, Hardswish and max pool's input is the output of the layer its
    wiring names, in train mode (BatchNorm on batch statistics); the running statistics stay."""
    model, weights = _built(backend, PLAIN)
    x, _ = _batch(PLAIN, 8)
    tape = train_forward(PLAIN, weights, x)
    acts = backend.activations(model, x, train=True)
    names = [layer.name for layer in PLAIN.layers]
    for name, exact in tape.decision_inputs().items():
        (source,) = PLAIN.input_names(names.index(name))
        assert np.abs(acts[source] - exact).max() <= 1e-4 * np.abs(exact).max(), name
    after = backend.get_weights(model)
    assert all(np.array_equal(after[k], v) for k, v in weights.items())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_train_step_matches_the_float64_step(backend, optimizer):
    """Each updated tensor and running statistic within the step budget of float64's (plus float32's spread,
    as parity allows); for Adam the moments, and the weights against Adam's formula on the backend's own
    moments, as parity judges Adam (``harness.parity.rows.adam_rows`` says why)."""
    train = (TrainConfig(optimizer="sgd", momentum=0.9, weight_decay=5e-4) if optimizer == "sgd"
             else TrainConfig(optimizer="adam", weight_decay=5e-4))
    lr = 0.05 if optimizer == "sgd" else 1e-3
    decay = decayed_names(PLAIN, "all")
    model, weights = _built(backend, PLAIN, seed=2)
    x, y = _batch(PLAIN, 8, seed=3)
    trainer = backend.make_trainer(model, train, decay)
    loss = trainer.step(x, y, lr)
    exact, flipped, grads = spread.synchronised_step(PLAIN, train, decay, weights, {}, x, y, lr)
    assert abs(loss - grads.loss) <= policies().step.loss_abs
    after = backend.get_weights(model)
    before = {name: value.astype(np.float64) for name, value in weights.items()}
    if optimizer == "sgd":
        rows = weight_rows("synchronised", 1, before, after, after, PLAIN, exact.weights, flipped.weights)
        judged = {row["param"]: (row["rel64_a"], row["spread"]) for row in rows}
    else:
        state = trainer.state()
        scale = moment_scales(state, PLAIN, train, grads)
        rows = adam_rows(1, before, after, after, state, state, train, lr, decay, PLAIN, (exact, flipped), scale)
        trainable = set(PLAIN.trainable_names())
        judged = {row["param"]: (row["rel"], 0.0) if row["param"] in trainable else (row["rel64_a"], row["spread"])
                  for row in rows}
        assert len(scale) == 2 * len(trainable)
    assert set(PLAIN.param_shapes()) <= set(judged)
    budget, factor = policies().step.update_rel, policies().float32.spread_factor
    far = {name: value for name, value in judged.items() if value[0] > budget + factor * value[1]}
    assert not far, far


def test_onnx_export_runs_in_onnxruntime_as_native(backend, tmp_path):
    model, _ = _built(backend, GRAPH)
    path = backend.export_onnx(model, tmp_path / "graph.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = [node.op_type for node in proto.graph.node]
    groups = sorted(next((a.i for a in node.attribute if a.name == "group"), 1) for node in proto.graph.node
                    if node.op_type == "Conv")
    assert groups[-2:] == [2, 8], groups  # the groups=2 conv and the depthwise conv, as grouped Convs
    assert ops.count("Add") >= 2 and {"ReduceMean", "GlobalAveragePool"} & set(ops), ops
    for n in (1, 5):  # a dynamic batch axis: one export serves both sizes
        x, _ = _batch(GRAPH, n, seed=n)
        assert within(run_onnx(path, x), backend.predict(model, x, batch_size=n), policies().onnx)


def test_mindspore_dropout_masks_land_on_the_named_layer():
    """The host-drawn mask multiplies the Dropout's own input (the shortcut conv, which is not the layer before
    the Dropout's reader): two SGD steps equal torch float64 with the same masks."""
    pytest.importorskip("mindspore")
    torch = pytest.importorskip("torch")
    from harness.backend import get_backend
    from harness.backends.mindspore.trainer import mask_arrays

    backend = get_backend("mindspore")
    model, weights = _built(backend, GRAPH, seed=4)
    train = TrainConfig(optimizer="sgd", momentum=0.0, seed=7)
    trainer = backend.make_trainer(model, train, set())
    trainable = set(GRAPH.trainable_names())
    params = {name: torch.tensor(value.astype(np.float64), requires_grad=name in trainable)
              for name, value in weights.items()}
    drop = next(index for index, layer in enumerate(GRAPH.layers) if isinstance(layer, Dropout))
    for step, lr in enumerate((0.1, 0.05)):
        x, y = _batch(GRAPH, 4, seed=10 + step)
        masks = mask_arrays(GRAPH, train.seed, step, len(x))
        assert [m.shape for m in masks] == [(4, *GRAPH.output_shapes[drop])]
        assert 0.15 < (masks[0] == 0).mean() < 0.35 and set(np.unique(masks[0])) == {0, np.float32(1 / 0.75)}
        logits = torch_graph(GRAPH, torch.from_numpy(x.astype(np.float64)), params, training=True, masks=masks)[-1]
        expected = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
        expected.backward()
        with torch.no_grad():
            for name in trainable:
                params[name] -= lr * params[name].grad
                params[name].grad = None
        assert trainer.step(x, y, lr) == pytest.approx(expected.item(), rel=1e-5)
    got = backend.get_weights(model)
    for name, value in params.items():
        value = value.detach().numpy()
        assert np.linalg.norm(got[name] - value) <= 1e-5 * np.linalg.norm(value), name
    # Without the masks (eval) the Dropout is the identity: the graph's logits are float64's.
    x, _ = _batch(GRAPH, 3)
    assert within(backend.predict(model, x, 3), forward(GRAPH, got, x), policies().reference)


def _dataset(spec):
    raw = load_raw("synthetic", synthetic_shape=spec.input_shape, seed=0)
    return prepare(raw, spec.input_shape, "auto", 96, 16)


def test_resume_from_a_checkpoint_file_gives_byte_identical_weights(backend, tmp_path):
    """A graph with Dropout and Adam: the checkpoint written mid-epoch, read back against the spec, and the
    run continued from it ends with the straight run's weights, byte for byte."""
    spec = residual_depthwise_spec(dropout=0.25, channels=1, size=8, classes=10)
    config = build_config({"backend": backend.name, "model": "lenet5", "dataset": "synthetic", "epochs": 2,
                           "batch_size": 32, "optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 1e-4})
    dataset = _dataset(spec)
    weights = init_weights(spec, config.train.seed)

    def run(resume=None):
        model = backend.build(spec, "cpu")
        backend.set_weights(model, weights)
        saved = []
        saving = Checkpointing(lambda state: saved.append(deepcopy(state)) or Path("memory"), config.config_hash, 2)
        train(backend, model, spec, dataset, config, quiet=True, saving=saving, resume=resume)
        return backend.get_weights(model), saved

    straight, saved = run()
    mid_epoch = next(c for c in saved if c.position.batch and c.position.epoch == 1)
    path = write_checkpoint(tmp_path, mid_epoch)
    checkpoint = read_checkpoint(path, spec, config.config_hash, config.train)
    assert checkpoint.position.step == mid_epoch.position.step and set(checkpoint.weights) == set(spec.param_shapes())
    resumed, _ = run(resume=checkpoint)
    assert list(resumed) == list(straight)
    for name, value in straight.items():
        assert resumed[name].tobytes() == value.tobytes(), name
    assert not np.array_equal(straight["b2_dw.weight"], weights["b2_dw.weight"])  # it trained


def test_mindspore_compiles_more_layers_than_its_default_call_depth_allows():
    """MobileNetV2's 153 layers exceeded MindSpore's default compile call depth (1000) in predict and in the
    train step; 170 identities exceed it as well, and compile quickest (build.py: _allow_call_depth)."""
    pytest.importorskip("mindspore")
    from harness.backend import get_backend
    from harness.model.spec import Activation, Flatten, Linear, ModelSpec

    spec = ModelSpec("deep", (1, 2, 2), 2, (Flatten("flat"), *(Activation(f"a{i}", "identity") for i in range(170)),
                                            Linear("fc", 4, 2)))
    backend = get_backend("mindspore")
    model, weights = _built(backend, spec)
    x, _ = _batch(spec, 3)
    assert within(backend.predict(model, x, 3), forward(spec, weights, x), policies().reference)
