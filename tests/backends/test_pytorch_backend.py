"""PyTorch-only translations: Dropout's noise drawn apart from its layer computes what the layer computes, drawn in
C (``bernoulli.c``) or by torch."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from harness.backends.pytorch import noise  # noqa: E402
from harness.backends.pytorch.noise import dropout_noise  # noqa: E402


def _torch_draw(p, shape):
    return torch.empty(shape).bernoulli_(1 - p).div_(1 - p)  # aten's _dropout_impl on a CPU


@pytest.fixture
def native():
    if noise.bernoulli is None:
        pytest.skip("bernoulli.c is built at install only where a C compiler is found")
    assert noise.native_draw_ready()


@pytest.mark.parametrize("p", [0.2, 0.5, 0.7, 0.123, 0.9999])
@pytest.mark.parametrize("offset", [0, 1, 623, 624, 625])
def test_the_c_draw_gives_torchs_bits_and_leaves_its_generator_where_torch_does(native, p, offset):
    # Sizes across the C loops' edges: one element, a twist (312 elements of two outputs), a chunk (4,096).
    sizes = [(1,), (311,), (313,), (4095,), (4097,), (3, 10, 27, 27), (0,)]
    for seed in (0, 7):
        torch.manual_seed(seed)
        torch.rand(offset)  # float32 draws take one output each: starts at every parity and around a twist
        start = torch.get_rng_state()
        want = [_torch_draw(p, size) for size in sizes] + [torch.rand(5)]
        torch.set_rng_state(start)
        got = [noise.dropout_noise(p, size) for size in sizes] + [torch.rand(5)]
        for size, expected, drawn in zip(sizes + ["next draw"], want, got):
            assert torch.equal(drawn, expected), (seed, size)
    assert 0 < int(got[5].count_nonzero()) < got[5].numel()


def test_runs_record_which_code_drew_the_noise(native, monkeypatch):
    from harness.backend import get_backend
    from harness.backends.pytorch import backend

    assert get_backend("pytorch").versions()["dropout_noise"] == "bernoulli.c"
    monkeypatch.setattr(backend, "native_draw_ready", lambda: False)
    assert get_backend("pytorch").versions()["dropout_noise"] == "torch"


def test_a_torch_that_draws_otherwise_gets_its_own_draw(native, monkeypatch):
    built = noise.bernoulli

    class Shifted:  # a generator whose bits differ from torch's by one word
        @staticmethod
        def draw(words, position, threshold, scale, out):
            return built.draw(words, min(position + 1, 624), threshold, scale, out)

    monkeypatch.setattr(noise, "bernoulli", Shifted)
    noise.native_draw_ready.cache_clear()
    try:
        assert noise.native_draw_ready() is False
        torch.manual_seed(2)
        want = _torch_draw(0.3, (64, 7))
        torch.manual_seed(2)
        assert torch.equal(noise.dropout_noise(0.3, (64, 7)), want)
        monkeypatch.setattr(noise, "bernoulli", None)  # not built
        noise.native_draw_ready.cache_clear()
        assert noise.native_draw_ready() is False
    finally:
        monkeypatch.undo()
        noise.native_draw_ready.cache_clear()


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_noise_drawn_on_another_thread_gives_dropouts_output_gradient_and_generator(p):
    x = torch.randn(16, 10, 27, 27, generator=torch.Generator().manual_seed(0), requires_grad=True)
    torch.manual_seed(3)
    expected = [F.dropout(x, p, training=True) for _ in range(2)]
    after = torch.get_rng_state()
    torch.manual_seed(3)
    drawn = []
    thread = threading.Thread(target=lambda: drawn.extend(dropout_noise(p, tuple(x.shape)) for _ in range(2)))
    thread.start()
    thread.join()
    assert torch.equal(torch.get_rng_state(), after)  # the generator where the layer would have left it
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    for want, noise in zip(expected, drawn):
        got = x * noise
        assert torch.equal(got, want)
        assert torch.equal(*(torch.autograd.grad(out, x, grad)[0] for out in (got, want)))
    assert not torch.equal(drawn[0], drawn[1])


def test_a_users_module_draws_its_own_noise(core_left_free):
    # harness port trains the user's module through a view: its forward is theirs, so no noise is drawn for it
    from harness.backends.pytorch.build import TorchModel, build, torch_name
    from harness.backends.pytorch.port import CanonicalView
    from harness.backends.pytorch.trainer import TorchTrainer
    from harness.config import TrainConfig
    from tests.support import registry_spec

    spec = registry_spec("simple-cnn")  # has a Dropout
    user = build(spec, torch.device("cpu")).module  # stands in for the user's module
    params = {name: dict(user.named_parameters())[torch_name(name)] for name in spec.trainable_names()}
    trainer = TorchTrainer(TorchModel(spec, CanonicalView(user, params), torch.device("cpu")), TrainConfig(), set())
    assert trainer.prepare_ahead() and trainer.prepared_bytes(16) == 0
    x = torch.randn(16, *spec.input_shape, generator=torch.Generator().manual_seed(0)).numpy()
    torch.manual_seed(5)
    loss = trainer.step(x, (torch.arange(16) % 10).numpy(), 0.01)
    assert loss > 0 and not torch.equal(torch.get_rng_state(), torch.manual_seed(5).get_state())  # drawn inside


def test_checking_the_c_draw_leaves_every_generator_as_it_was(native, monkeypatch):
    seeded = []
    monkeypatch.setattr(torch, "manual_seed", lambda seed: seeded.append(seed))  # would reseed CUDA's too
    torch.set_rng_state(torch.Generator().manual_seed(11).get_state())
    torch.rand(3)
    before = torch.get_rng_state()
    noise.native_draw_ready.cache_clear()
    try:
        assert noise.native_draw_ready() is True
    finally:
        noise.native_draw_ready.cache_clear()
    assert seeded == [] and torch.equal(torch.get_rng_state(), before)
