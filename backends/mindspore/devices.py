"""Which MindSpore device targets really work here, and why the others do not.

Names: ``cpu``, ``gpu``, ``ascend`` (MindSpore's targets, lower case), with an
optional ``:<id>``. ``cuda`` is accepted as an alias of ``gpu`` and ``npu`` of
``ascend``, so one ``--device`` flag works for both backends of a comparison.

A target counts as usable only if MindSpore loaded its plugin at import *and*
a tiny op runs on it. The op runs in a subprocess: a failed device start can
leave the process unable to use any device, and MindSpore can pick a target
only once per process. Results are cached for the life of the process.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np

from harness.errors import BackendUnavailable

TARGETS = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend"}
ALIASES = {"cuda": "gpu", "npu": "ascend"}  # torch's names for the same hardware
PREFERENCE = ("ascend", "gpu", "cpu")  # what `auto` picks first
_FIX = {
    "gpu": "install CUDA 11.6 (or 11.1) with cuDNN 8 and put their lib folders on LD_LIBRARY_PATH "
           "(the mindspore wheel's GPU plugin is built for CUDA 11), or use --device cpu",
    "ascend": "install the Ascend CANN toolkit and `source <CANN>/set_env.sh` (libascendcl, libge_runner), "
              "or use --device cpu",
}
_PROBE = Path(__file__).with_name("probe.py")


def parse(device: str) -> tuple[str, int | None]:
    """``'cuda:1'`` -> ``('gpu', 1)``; raises BackendUnavailable for an unknown name."""
    kind, _, index = device.strip().lower().partition(":")
    kind = ALIASES.get(kind, kind)
    if kind not in TARGETS or (index and not index.isdigit()):
        raise BackendUnavailable(f"unknown mindspore device {device!r}; expected cpu, gpu[:N], ascend[:N] "
                                 "(cuda and npu are aliases) or auto")
    return kind, int(index) if index else None


def _plugin_missing_libraries(kind: str) -> tuple[str, list[str]]:
    """MindSpore's plugin file for ``kind`` and the shared libraries it needs that the loader cannot find (ldd)."""
    plugin_dir = Path(ms.__file__).parent / "lib" / "plugin"
    pattern = "libmindspore_gpu.so.*" if kind == "gpu" else "libmindspore_ascend.so*"
    for plugin in sorted(plugin_dir.glob(pattern), reverse=True):  # the newest CUDA plugin first
        try:
            lines = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return plugin.name, []
        return plugin.name, sorted({line.split("=>")[0].strip() for line in lines.splitlines() if "not found" in line})
    return "", []


def _not_loaded_reason(kind: str) -> str:
    """MindSpore's own account of why the plugin for ``kind`` did not load at import."""
    from mindspore._c_expression import MSContext  # pylint: disable=import-outside-toplevel

    errors = [line for line in MSContext.get_instance().load_plugin_error().splitlines()
              if kind in line.lower()]
    if errors:
        return errors[0].strip()
    plugin, missing = _plugin_missing_libraries(kind)
    if missing:
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        return f"{plugin} needs {', '.join(missing[:4])}{more}, which the loader cannot find"
    return f"mindspore {ms.__version__} was not built with the {TARGETS[kind]} plugin"


def _probe(kind: str, index: int) -> str | None:
    """Run one op on the target in a fresh interpreter; None if it worked, else the last error line."""
    env = {**os.environ, "GLOG_v": "3"}
    command = [sys.executable, str(_PROBE), TARGETS[kind], str(index)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired:
        return "a one-op test did not finish in 300 s"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line] or lines or [f"exit code {done.returncode}"]
    return errors[-1]


@functools.cache
def unusable_reason(kind: str, index: int = 0) -> str | None:
    """None if ``kind`` works here, else one line: what MindSpore said."""
    if kind == "cpu":
        return None  # every MindSpore wheel carries the CPU backend
    from mindspore._c_expression import MSContext  # pylint: disable=import-outside-toplevel

    if not MSContext.get_instance().is_pkg_support_device(TARGETS[kind]):
        return f"MindSpore did not load its {TARGETS[kind]} plugin: {_not_loaded_reason(kind)}"
    failure = _probe(kind, index)
    return None if failure is None else f"MindSpore cannot run on {TARGETS[kind]}:{index}: {failure}"


def usable() -> list[str]:
    """The device kinds that work here, in PREFERENCE order reversed (cpu first, as the torch backend)."""
    return [kind for kind in reversed(PREFERENCE) if unusable_reason(kind) is None]


def resolve(device: str) -> str:
    """``auto`` -> the first usable of Ascend, GPU, CPU; otherwise the canonical name, if it works."""
    if device.strip().lower() == "auto":
        return next(kind for kind in PREFERENCE if unusable_reason(kind) is None)
    kind, index = parse(device)
    reason = unusable_reason(kind, index or 0)
    if reason is not None:
        reason = " ".join(reason.split())  # one line, whatever MindSpore's message held
        raise BackendUnavailable(f"device {device!r} is not usable by mindspore here: {reason}; fix: {_FIX[kind]}")
    return kind if index is None else f"{kind}:{index}"


def activate(device: str) -> None:
    """Point MindSpore at ``device``; one target per process, as MindSpore allows."""
    kind, index = parse(device)
    current = ms.get_current_device()
    try:
        ms.set_device(TARGETS[kind], index)
    except RuntimeError as error:
        # ops already ran on the requested device (MindSpore's default, CPU): nothing to change
        if current.device_target != TARGETS[kind] or index not in (None, current.device_id):
            raise BackendUnavailable(
                f"mindspore already runs on {current.device_target}:{current.device_id} in this process and cannot "
                f"switch to {device!r} ({str(error).splitlines()[0]}); run each device in its own process") from None
    if kind == "cpu":
        pin_cpu_isa()


_ISA = "ONEDNN_MAX_CPU_ISA"
_pinned: dict[str, str] = {}  # "note": what MindSpore's oneDNN runs with, once pin_cpu_isa has run


def pin_cpu_isa() -> None:
    """Caps MindSpore's oneDNN at AVX2 (unless ONEDNN_MAX_CPU_ISA is set) before its first CPU kernel.

    On AVX-512 CPUs MindSpore's bundled oneDNN otherwise trains LeNet5 ~16x slower (357 against 5,924
    images/s, benchmarks/README.md). oneDNN reads the variable once, at its first kernel, and PyTorch's own
    oneDNN reads the same variable: it is set around one tiny MindSpore convolution only, so PyTorch
    in the same process keeps its AVX-512 kernels (capped, it ran ~35% slower and rounded differently).
    """
    if _pinned:
        return
    if _ISA in os.environ:
        _pinned["note"] = f"{os.environ[_ISA]} (from the environment)"
        return
    os.environ[_ISA] = "AVX2"
    try:
        ones = ms.Tensor(np.ones((1, 1, 3, 3), np.float32))
        ms.ops.conv2d(ones, ones).asnumpy()  # MindSpore's oneDNN reads the variable here
    finally:
        del os.environ[_ISA]
    _pinned["note"] = "AVX2 (set by the backend around MindSpore's first CPU kernel)"


def isa_note() -> str:
    """What run.json records of MindSpore's oneDNN ISA cap."""
    return _pinned.get("note", f"{os.environ.get(_ISA, 'unset')} (no MindSpore CPU kernel pinned yet)")
