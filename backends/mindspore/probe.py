"""Run one compiled op on a MindSpore device target: ``python probe.py GPU 0``; exit 0 if it worked.

A standalone script (devices.py runs it in a fresh interpreter) so that a device
that fails to start cannot leave the caller's process unusable. The op is a
compiled Cell, not a PyNative op: with NumPy 2, this MindSpore's PyNative ops
fail to import numpy's C API, while graph mode works.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import nn  # noqa: E402


class _AddOne(nn.Cell):
    def construct(self, x):
        return x + 1


def main(target: str, index: int) -> None:
    ms.set_device(target, index)
    ms.set_context(mode=ms.GRAPH_MODE)
    value = _AddOne()(ms.Tensor(np.ones(2, np.float32))).asnumpy()
    if not np.array_equal(value, [2.0, 2.0]):
        raise RuntimeError(f"1 + 1 gave {value} on {target}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
