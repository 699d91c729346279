"""The MindSpore backend: realises harness ModelSpecs as mindspore.nn Cells (CPU, GPU, Ascend).

Environment set before mindspore is first imported, and only where the user has not set it:
- ONEDNN_MAX_CPU_ISA=AVX2: on AVX-512 CPUs MindSpore's bundled oneDNN otherwise picks a
  convolution about 8x slower (PARITY.md); CPUs without AVX-512 are unaffected.
- GLOG_v=3 (errors only, every submodule): MindSpore logs warnings to stderr by default,
  and the CLI prints one-line results.
"""

from __future__ import annotations

import os

# oneDNN reads its variable when it first runs a kernel and glog when mindspore is imported:
# set here, before `.backend` imports mindspore, both take effect.
_ISA_SET_HERE = "ONEDNN_MAX_CPU_ISA" not in os.environ
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("GLOG_v", "3")

from .backend import MindSporeBackend  # noqa: E402  (after the environment above)

BACKEND = MindSporeBackend(isa_set_by_backend=_ISA_SET_HERE)

__all__ = ["BACKEND", "MindSporeBackend"]
