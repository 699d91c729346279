"""The loop's speed-ups change nothing: batches gathered several at a time and made ahead on a background thread
(PyTorch's Dropout noise with them), torch.optim's foreach update called through its functional form, and
MindSpore's compiled graph run without ``Cell.__call__`` give the same weights, byte for byte, as the loop until
2026-12-05 (each batch gathered on its own on the stepping thread just before its step, Dropout's noise drawn in the
forward, ``optimizer.step()`` with torch's per-tensor update loop, ``Cell.__call__`` every step); the background
thread never outlives its epoch; and the data a run reads is read once for the runs of one process that need it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from harness.backend import get_backend
from harness.config import build_config
from harness.data import batches
from harness.data.batches import steps_per_epoch
from harness.data.locate import LAYOUTS
from harness.machine import cores
from harness.model.resolve import run_initial_weights
from harness.runs.arrays import read_arrays
from harness.training import loop
from harness.training.run import execute, load_data
from harness.training.schedule import decayed_names, learning_rates
from tests.support import registry_spec, write_mnist_folder


def _config(backend: str, model: str, optimizer: dict):
    # 200 images at batch 32: six full batches and a partial one per epoch (two graphs, taken in turn);
    # simple-cnn has a Dropout, and its augmentation draws come from the stream the background thread advances.
    return build_config({"backend": backend, "model": model, "dataset": "synthetic", "limit_train": 200,
                         "limit_test": 40, "epochs": 2, "batch_size": 32, "augment": model == "simple-cnn",
                         **optimizer})


def _as_until_now(trainer) -> None:
    """The trainer's own speed-ups off: ``optimizer.step()`` with torch.optim's per-tensor loop and Dropout's noise
    drawn inside the forward; ``Cell.__call__`` on every MindSpore step."""
    if hasattr(trainer, "run_cell"):
        trainer.run_cell = trainer.cell
    else:
        trainer.direct_update = False
        trainer.noise_ahead = False
        for group in trainer.optimizer.param_groups:
            group["foreach"] = False


def _stepped_by_hand(config) -> dict[str, np.ndarray]:
    """The loop as it was: each host batch gathered on its own just before its step and handed to ``Trainer.step``
    with the schedule's rate, nothing ahead, nothing on another thread, and the trainer's speed-ups off."""
    backend, t = get_backend(config.backend), config.train
    spec, dataset = load_data(config, None)
    model = backend.build(spec, "cpu")
    backend.set_weights(model, run_initial_weights(config, spec))
    trainer = backend.make_trainer(model, t, decayed_names(spec, t.decay_scope))
    _as_until_now(trainer)
    rates = iter(learning_rates(t, steps_per_epoch(len(dataset.train_x), t.batch_size)))
    for epoch in range(t.epochs):
        for xb, yb in dataset.train_batches(t.batch_size, t.seed, epoch, augment=config.data.augment):
            trainer.step(xb, yb, float(next(rates)))
    return backend.get_weights(model)


@pytest.mark.parametrize("model, optimizer", [
    ("lenet5", {"optimizer": "sgd"}), ("simple-cnn", {"optimizer": "sgd"}),
    ("lenet5", {"optimizer": "adamw", "weight_decay": 0.01}),
    ("lenet-tiny", {"optimizer": "adam", "weight_decay": 0.01}),
    ("lenet-tiny", {"optimizer": "sgd", "nesterov": True, "weight_decay": 0.01}),
    ("lenet-tiny", {"optimizer": "sgd", "momentum": 0.0})], ids=str)
def test_the_loop_writes_the_weights_it_wrote_before_its_speed_ups(backend_name, model, optimizer, tmp_path,
                                                                    monkeypatch, core_left_free):
    config = _config(backend_name, model, optimizer)
    # Made ahead whatever this machine's cores and threads would choose (PyTorch on all cores makes them in line).
    monkeypatch.setattr(loop._Loop, "ahead_by", lambda self, batch_size, image_bytes: 1)
    # Blocks of two batches: the run's batches come from three blocks, the last one holding the partial batch.
    monkeypatch.setattr(batches, "GATHER_BYTES", 2 * 32 * 4 * int(np.prod(registry_spec(model).input_shape)))
    written = read_arrays(execute(config, tmp_path, quiet=True).run_dir / "weights.npz")
    monkeypatch.setattr(batches, "GATHER_BYTES", 0)  # one batch a gather, as until 2026-12-05
    by_hand = _stepped_by_hand(config)
    assert set(written) == set(by_hand)
    for name, value in by_hand.items():
        np.testing.assert_array_equal(written[name], value, err_msg=name)


def test_pytorch_on_every_core_writes_the_weights_it_wrote_before_its_speed_ups(tmp_path):
    # Dropout's noise drawn in line, in C where it is built, on PyTorch's default threads (all cores)
    pytest.importorskip("torch")
    config = _config("pytorch", "simple-cnn", {"optimizer": "sgd"})
    written = read_arrays(execute(config, tmp_path, quiet=True).run_dir / "weights.npz")
    by_hand = _stepped_by_hand(config)
    for name, value in by_hand.items():
        np.testing.assert_array_equal(written[name], value, err_msg=name)


class _Trainer:
    def __init__(self, ahead: bool, noise_per_image: int = 0) -> None:
        self.ahead, self.noise_per_image = ahead, noise_per_image

    def preparer(self):
        return lambda x, y: (x, y)

    def step_prepared(self, prepared, learning_rate: float) -> float:
        return 0.0

    def prepare_ahead(self) -> bool:
        return self.ahead

    def prepared_bytes(self, batch_size: int) -> int:
        return batch_size * self.noise_per_image


def test_batches_go_ahead_only_where_the_trainer_gains_and_they_are_big_enough():
    big, small = loop.PREFETCH_MIN_BYTES, loop.PREFETCH_MIN_BYTES - 1
    assert loop._Loop(None, None, _Trainer(True), None).ahead_by(1, big) == loop.PREFETCH_BATCHES >= 1
    assert loop._Loop(None, None, _Trainer(True), None).ahead_by(2, big // 2) == loop.PREFETCH_BATCHES
    assert loop._Loop(None, None, _Trainer(True), None).ahead_by(1, small) == 0
    assert loop._Loop(None, None, _Trainer(False), None).ahead_by(1, big) == 0
    # the noise or masks the trainer draws count with the images
    assert loop._Loop(None, None, _Trainer(True, noise_per_image=small), None).ahead_by(1, 1) == loop.PREFETCH_BATCHES
    assert loop._Loop(None, None, _Trainer(True, noise_per_image=small - 1), None).ahead_by(1, 1) == 0


def test_the_trainers_count_the_dropout_noise_they_draw(backend, core_left_free, monkeypatch):
    if backend.name == "pytorch" and cores() < 2:
        from harness.backends.pytorch.noise import native_draw_ready

        if not native_draw_ready():
            pytest.skip("one core, no bernoulli.c: PyTorch draws Dropout noise with the batch only with a core "
                        "its threads leave free")
    spec = registry_spec("simple-cnn")  # one Dropout on 10 x 27 x 27 float32 values an image
    t = build_config({"model": "simple-cnn"}).train
    trainer = backend.make_trainer(backend.build(spec, "cpu"), t, set())
    assert trainer.prepared_bytes(64) == 64 * 10 * 27 * 27 * 4
    assert backend.make_trainer(backend.build(registry_spec("lenet5"), "cpu"), t, set()).prepared_bytes(64) == 0
    if backend.name == "pytorch":  # on every core: drawn with the batch in C, else by the layer in the forward
        from harness.backends.pytorch import trainer as torch_trainer

        backend.set_threads(cores())
        assert trainer.prepared_bytes(64) == (64 * 10 * 27 * 27 * 4 if torch_trainer.native_draw_ready() else 0)
        monkeypatch.setattr(torch_trainer, "native_draw_ready", lambda: False)
        assert trainer.prepared_bytes(64) == 0


def test_pytorch_on_the_cpu_makes_batches_ahead_only_with_a_core_its_threads_leave_free():
    pytest.importorskip("torch")
    backend = get_backend("pytorch")
    spec = registry_spec("lenet5")
    model = backend.build(spec, "cpu")
    trainer = backend.make_trainer(model, build_config({"model": "lenet5"}).train, set())
    threads = backend.threads()
    try:
        backend.set_threads(cores())  # its OpenMP threads on every core: a thread beside them costs more than it hides
        assert trainer.prepare_ahead() is False
        if cores() > 1:
            backend.set_threads(cores() - 1)
            assert trainer.prepare_ahead() is True
    finally:
        backend.set_threads(threads)


def _items(count: int, fail_at: int | None = None):
    for i in range(count):
        if i == fail_at:
            raise ValueError(f"item {i} could not be made")
        yield i


def test_ahead_yields_every_item_in_order_and_raises_where_the_producer_failed():
    for depth in (0, 1, 3):
        with loop._Ahead(_items(50), depth) as ahead:
            assert list(ahead) == list(range(50))
        seen = []
        with pytest.raises(ValueError, match="item 7 could not be made"):
            with loop._Ahead(_items(50, fail_at=7), depth) as ahead:
                seen.extend(ahead)
        assert seen == list(range(7))


def test_leaving_early_stops_the_background_thread():
    before = {t.ident for t in threading.enumerate()}
    with loop._Ahead(_items(10_000), 1) as ahead:
        for item in ahead:
            if item == 3:
                break
    assert {t.ident for t in threading.enumerate()} <= before


def test_load_data_reads_the_files_once_and_again_when_they_change(tmp_path, monkeypatch):
    # compare trains two backends and a control and then judges them: one read of the data, not four.
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data" / LAYOUTS["mnist"][0]
    write_mnist_folder(folder, train=6)
    settings = {"model": "lenet5", "dataset": "mnist"}
    first = load_data(build_config({**settings, "backend": "pytorch"}), None)
    assert load_data(build_config({**settings, "backend": "mindspore"}), None) is first
    write_mnist_folder(folder, train=8)  # new files: other sizes
    again = load_data(build_config({**settings, "backend": "pytorch"}), None)
    assert again is not first and len(again[1].train_x) == 8
    assert load_data(build_config({**settings, "limit_train": 4}), None)[1].train_x.shape[0] == 4
