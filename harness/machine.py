"""How busy the machine was while something was timed, so a speed figure taken under load says so; and how
this process takes memory from it.

The load average counts every runnable process, this one included, and lags by a minute; what
distorts a timing is CPU taken by *other* processes during it. ``LoadMeter`` measures exactly
that on Linux: the whole machine's busy CPU time (``/proc/stat``) less this process's own
(``os.times``), over the wall time. Both are recorded; ``under_load`` judges by the second.
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass
from pathlib import Path

# Other processes using more than this share of the cores make a timing "under load".
LOAD_SHARE = 0.5
# glibc malloc's tunables (malloc.h) and the values ``keep_freed_memory`` sets: blocks up to the first come from the
# heap, and up to the second of free memory at its top stays there.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES = 256 << 20, 512 << 20


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep the memory a training step frees for the next step, instead of handing it back
    to the kernel and faulting it in again, zeroed, page by page.

    Left to itself, malloc maps every block above a threshold it moves with the sizes freed (128 KiB to 32 MiB)
    and trims the heap's free top above twice that; a step's tensors and batches then fault memory in anew:
    the harness's PyTorch LeNet5 loop at batch 256 took 150-1,400 page faults a step (13.0-13.6 ms), and none
    with these settings (12.6-12.7 ms).
    Memory stays bounded by the largest step's, which is then held until the process ends. Process-wide (both
    frameworks, the bare loops too); the CLI and each sweep worker set it before training.

    Returns:
        True where set; False where the C library is not glibc, or where the user chose malloc settings
        (``MALLOC_*`` variables, ``GLIBC_TUNABLES``), which are left as they are.
    """
    if any(key.startswith("MALLOC_") for key in os.environ) or "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no such call: macOS, Windows (musl's does nothing: 0)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                               TRIM_THRESHOLD_BYTES))


def load_average() -> float | None:
    """The 1-minute load average, or None where the system does not report one."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_busy_seconds() -> float | None:
    """Seconds of CPU time every process on the machine has used since boot (``/proc/stat``), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 8:
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy.
    values = [int(v) for v in fields[1:]]
    busy = sum(values[:3]) + sum(values[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """Seconds of CPU time this process (every thread) has used."""
    times = os.times()
    return times.user + times.system  # every thread of this process


@dataclass
class Load:
    """The machine's load around one timing."""

    load_average_start: float | None
    load_average_end: float | None
    other_cores: float | None  # cores other processes kept busy on average during it (None: not measurable)
    cores: int

    @property
    def under_load(self) -> bool:
        """Whether other processes took more than ``LOAD_SHARE`` of the cores while it ran."""
        return self.other_cores is not None and self.other_cores > LOAD_SHARE * self.cores

    def as_dict(self) -> dict:
        """Flat fields for run.json and bench.csv."""
        return {"load_average_start": self.load_average_start, "load_average_end": self.load_average_end,
                "other_cores_busy": None if self.other_cores is None else round(self.other_cores, 2),
                "cores": self.cores, "under_load": self.under_load}


class LoadMeter:
    """Measures ``Load`` between ``start()`` and ``stop()`` (or around a ``with`` block)."""

    def start(self) -> LoadMeter:
        """Record the state at the start."""
        self._average = load_average()
        self._wall, self._busy, self._own = time.perf_counter(), machine_busy_seconds(), own_cpu_seconds()
        return self

    def stop(self) -> Load:
        """The load since ``start()``."""
        wall = time.perf_counter() - self._wall
        busy = machine_busy_seconds()
        other = None
        if busy is not None and self._busy is not None and wall > 0:
            other = max(0.0, ((busy - self._busy) - (own_cpu_seconds() - self._own)) / wall)
        return Load(self._average, load_average(), other, cores())

    def __enter__(self) -> LoadMeter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.load = self.stop()
