"""Dropout's noise drawn apart from its layer: what F.dropout multiplies a CPU tensor by, from torch's generator.

torch draws that noise on one thread, element by element (3.4 ms for simple-cnn at batch 64, over a quarter of its
step on both cores). ``bernoulli.c`` makes the same bits from the same generator state about ten times faster.
Before its first use in a process it is checked against torch's own draw, and torch's draw is used instead where
the extension was not built (no C compiler at install) or the check fails (a torch that draws another way).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

try:
    from . import bernoulli
except ImportError:  # built at install where a C compiler is found (pyproject.toml, optional)
    bernoulli = None

# torch.get_rng_state() of the CPU generator: CPUGeneratorImplState (aten/src/ATen/CPUGeneratorImpl.cpp), whose
# legacy part holds the MT19937 engine: int32 `left` at byte 8, uint64 `next` at 16, 624 words as uint64 from 24.
STATE_BYTES = 5056
_LEFT, _NEXT, _WORDS = slice(8, 12), slice(16, 24), slice(24, 24 + 624 * 8)


def dropout_noise(p: float, shape: tuple[int, ...]) -> torch.Tensor:
    """What F.dropout(x, p, training=True) multiplies a CPU tensor ``x`` of ``shape`` by, drawn from torch's CPU
    generator as aten's _dropout_impl draws it (an empty tensor, ``bernoulli_(1 - p)``, ``div_(1 - p)``), so
    ``x * dropout_noise(p, x.shape)`` is F.dropout's output, bit for bit, and leaves the generator where it would.
    """
    keep = 1 - p
    if 0 < p < 1 and native_draw_ready():  # p 0 and 1: aten's _dropout_impl draws nothing
        return _native_noise(keep, shape)
    return torch.empty(shape).bernoulli_(keep).div_(keep)


@functools.cache
def native_draw_ready() -> bool:
    """Whether ``bernoulli.c`` is built and draws what torch draws (checked once a process, from starts at an
    even and an odd output, across several of the generator's twists)."""
    if bernoulli is None or torch.get_rng_state().numel() != STATE_BYTES:
        return False
    saved = torch.get_rng_state()
    try:
        for seed, keep, offset in ((0, 0.8, 0), (1, 0.3, 1)):
            # Only the CPU generator: torch.manual_seed would reseed the accelerators' generators too.
            torch.set_rng_state(torch.Generator().manual_seed(seed).get_state())
            torch.rand(offset)  # a float32 draw takes one output: the noise then starts at an odd one
            start = torch.get_rng_state()
            want = torch.empty(1501).bernoulli_(keep).div_(keep)
            want_state = torch.get_rng_state()
            torch.set_rng_state(start)
            got = _native_noise(keep, (1501,))
            if not (torch.equal(got, want) and torch.equal(torch.get_rng_state(), want_state)):
                return False
        return True
    finally:
        torch.set_rng_state(saved)


def _native_noise(keep: float, shape: tuple[int, ...]) -> torch.Tensor:
    noise = np.empty(math.prod(shape), np.float32)
    if noise.size:  # torch draws nothing for an empty tensor
        state = torch.get_rng_state().numpy()
        words = state[_WORDS].view(np.uint64).astype(np.uint32)
        left, following = int(state[_LEFT].view(np.int32)[0]), int(state[_NEXT].view(np.uint64)[0])
        # at::mt19937 twists when `left` counts down to 0, so at left == 1 its next word comes after a twist
        position = bernoulli.draw(words, 624 if left == 1 else following,
                                  math.ceil(keep * 2.0 ** 53),  # value / 2^53 < keep, on integers
                                  np.float32(1) / np.float32(keep),  # div_(keep) of 1.0 in float32
                                  noise)
        state[_WORDS].view(np.uint64)[:] = words
        state[_LEFT].view(np.int32)[0] = 625 - position
        state[_NEXT].view(np.uint64)[0] = position
        torch.set_rng_state(torch.from_numpy(state))
    return torch.from_numpy(noise).reshape(shape)
