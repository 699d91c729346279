"""The machine's load around a timing: load averages, and the cores other processes kept busy."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from harness import machine
from harness.machine import Load, LoadMeter, cores


def test_a_busy_neighbour_is_seen_and_this_process_is_not():
    with LoadMeter() as quiet:
        end = time.perf_counter() + 0.5
        while time.perf_counter() < end:  # this process's own work is not "other"
            pass
    spin = "import time\nend = time.time() + 3\nwhile time.time() < end: pass"
    neighbour = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)  # let it start spinning
        with LoadMeter() as busy:
            time.sleep(1.5)
    finally:
        neighbour.kill()
        neighbour.wait()
    if quiet.load.other_cores > cores() - 1:
        pytest.skip(f"the machine is saturated ({quiet.load.other_cores:.1f} of {cores()} cores busy already)")
    assert busy.load.other_cores is not None and busy.load.other_cores > quiet.load.other_cores + 0.5
    assert busy.load.other_cores >= 0.7  # one spinning process is about one core
    assert busy.load.cores == cores() and busy.load.load_average_start is not None


def test_other_cores_are_the_machines_busy_time_less_this_processs(monkeypatch):
    clock = iter([100.0, 102.0])  # 2 s of wall time
    machine_cpu, own_cpu = iter([50.0, 54.0]), iter([10.0, 11.0])  # the machine used 4 s of CPU, this process 1 s
    monkeypatch.setattr(machine.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(machine, "machine_busy_seconds", lambda: next(machine_cpu))
    monkeypatch.setattr(machine, "own_cpu_seconds", lambda: next(own_cpu))
    monkeypatch.setattr(machine, "cores", lambda: 2)
    load = LoadMeter().start().stop()
    assert load.other_cores == 1.5 and load.under_load  # (4 - 1) / 2 of 2 cores


def test_under_load_means_others_took_more_than_half_the_cores():
    assert Load(0.1, 0.2, 1.2, 2).under_load and not Load(3.0, 3.0, 0.9, 2).under_load
    assert not Load(None, None, None, 2).under_load  # not measurable: not claimed
    assert Load(1.0, 1.5, 1.23456, 2).as_dict() == {"load_average_start": 1.0, "load_average_end": 1.5,
                                                     "other_cores_busy": 1.23, "cores": 2, "under_load": True}


_FAULTS_PER_ROUND = """
import resource, sys
import numpy as np
from harness.machine import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
np.ones(40 << 18, np.float32)  # the first 40 MiB block: faulted in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):  # a step's tensors: made, used, freed
    np.ones(40 << 18, np.float32)
print(kept, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_kept_for_the_next_step_instead_of_faulted_in_again():
    def faults(mode: str, **env: str) -> tuple[str, int]:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
        result = subprocess.run([sys.executable, "-c", _FAULTS_PER_ROUND, mode], capture_output=True, text=True,
                                check=True, env={**environment, **env})
        kept, count = result.stdout.split()
        return kept, int(count)

    # 40 MiB is above malloc's own largest threshold (32 MiB): mapped and unmapped every round, faulted in again
    # (532 faults a round here, numpy asking for huge pages; 10,240 in 4 KiB pages)
    kept, left = faults("leave")
    assert kept == "None" and left >= 20
    kept, count = faults("keep")
    assert kept == "True" and count <= left // 20
    assert faults("keep", MALLOC_ARENA_MAX="2")[0] == "False"  # the user's malloc settings win
