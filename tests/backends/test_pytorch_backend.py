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
