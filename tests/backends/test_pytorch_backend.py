"""PyTorch-only translations: Dropout's noise drawn apart from its layer computes what the layer computes."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from harness.backends.pytorch.build import dropout_noise  # noqa: E402


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
