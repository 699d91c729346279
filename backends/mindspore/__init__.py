"""The MindSpore backend: realises harness ModelSpecs as mindspore.nn Cells (CPU, GPU, Ascend).

GLOG_v=3 (errors only, every submodule) is set before mindspore is first imported, unless the
user set it: MindSpore logs warnings to stderr by default, and the CLI prints one-line results.
The oneDNN ISA cap for AVX-512 CPUs is set in ``devices.pin_cpu_isa``, around MindSpore's first
CPU kernel only.
"""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_v", "3")  # glog reads it when mindspore is imported: before any submodule here
