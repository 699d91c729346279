"""The machine's load around a timing: load averages, and the cores other processes kept busy."""

from __future__ import annotations

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
