"""The CPU budget: CPUs from affinity and the cgroup quota, less those busy elsewhere now."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from ase_search import runtime
from ase_search.runtime import (
    CpuSample,
    ThreadBudget,
    available_cpus,
    busy_cpus_elsewhere,
    cgroup_cpu_quota,
    cpu_threads,
    measure_busy_cpus,
    read_cpu_sample,
    thread_budget,
)


@pytest.mark.parametrize("text, quota", [
    ("150000 100000\n", 1.5),
    ("200000 100000", 2.0),
    ("max 100000\n", None),  # no quota
    ("garbage", None),
    ("0 100000", None),
])
def test_cgroup_cpu_quota(tmp_path, text, quota):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    assert cgroup_cpu_quota(path) == quota


def test_cgroup_cpu_quota_without_the_file(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "missing") is None


@pytest.mark.parametrize("affinity, cpu_max, expected", [
    ({0, 1, 2, 3}, "max 100000", 4),  # affinity only
    ({0, 1, 2, 3}, "200000 100000", 2),  # the quota is tighter
    ({0, 1, 2, 3}, "150000 100000", 1),  # 1.5 CPUs: a second thread would be throttled
    ({0, 1}, "800000 100000", 2),  # the affinity is tighter
    ({0, 1, 2, 3}, "50000 100000", 1),  # half a CPU is still one thread
])
def test_available_cpus(tmp_path, affinity, cpu_max, expected):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert available_cpus(affinity=affinity, cpu_max=path) == expected


@pytest.mark.parametrize("first, second, busy", [
    # A quiet machine: 0.01 CPU-s of other work over 0.25 s.
    (CpuSample(10.0, 100.0, 2.0), CpuSample(10.25, 100.01, 2.0), 0.04),
    # One CPU-bound neighbour: 0.25 CPU-s over 0.25 s.
    (CpuSample(10.0, 100.0, 2.0), CpuSample(10.25, 100.25, 2.0), 1.0),
    # This process spun one CPU itself (0.25 of the 0.26 CPU-s): it does not count.
    (CpuSample(10.0, 100.0, 2.0), CpuSample(10.25, 100.26, 2.25), 0.04),
    # Its own two threads and one neighbour: 0.75 CPU-s in all, 0.5 of them its own.
    (CpuSample(0.0, 0.0, 0.0), CpuSample(0.25, 0.75, 0.5), 1.0),
    # Two neighbours on a longer window.
    (CpuSample(5.0, 40.0, 1.0), CpuSample(6.0, 42.0, 1.0), 2.0),
    # Its own time a tick ahead of the machine's (different clock resolutions): 0, not < 0.
    (CpuSample(0.0, 0.0, 0.0), CpuSample(0.25, 0.24, 0.25), 0.0),
])
def test_busy_cpus_elsewhere_by_hand(first, second, busy):
    assert busy_cpus_elsewhere(first, second) == pytest.approx(busy)


def test_busy_cpus_elsewhere_needs_a_later_sample():
    with pytest.raises(ValueError, match="later"):
        busy_cpus_elsewhere(CpuSample(1.0, 0.0, 0.0), CpuSample(1.0, 1.0, 0.0))


@pytest.mark.parametrize("cpus, busy, machine, expected", [
    (2, 0.03, 2, 2),  # quiet 2-core machine: both cores
    (2, 1.0, 2, 1),  # beside one CPU-bound process: one thread
    (2, 1.4, 2, 1),  # 0.6 idle rounds to 1, never 0
    (2, 0.4, 2, 2),  # 1.6 idle rounds to 2
    (2, 5.0, 2, 1),  # overloaded: still one thread
    (8, 2.4, 8, 6),  # 5.6 idle CPUs -> 6
    (2, 50.0, 64, 2),  # a busy big host with 14 idle CPUs: the 2 this process may use
])
def test_cpu_threads_by_hand(cpus, busy, machine, expected):
    assert cpu_threads(cpus=cpus, busy=busy, machine_cpus=machine) == expected


def test_read_cpu_sample(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice: busy is all but idle and
    # iowait, and guest time is already inside user.
    stat.write_text("cpu  100 20 30 1000 50 5 5 10 7 0\ncpu0 100 20 30 1000 50 5 5 10 7 0\n")
    before = time.monotonic()
    sample = read_cpu_sample(stat)
    assert sample is not None
    assert sample.busy == pytest.approx(170 / os.sysconf("SC_CLK_TCK"))
    assert before <= sample.wall <= time.monotonic()
    assert sample.own == pytest.approx(time.process_time(), abs=0.05)
    for bad in ("", "intr 1 2 3\n", "cpu  a b c d\n"):
        stat.write_text(bad)
        assert read_cpu_sample(stat) is None
    assert read_cpu_sample(tmp_path / "missing") is None  # macOS
    assert measure_busy_cpus(0.01, proc_stat=tmp_path / "missing") is None


def test_thread_budget_precedence(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(runtime, "_sample_busy", lambda seconds, proc_stat: (1.0, 0.25))
    # The load average must not be read while /proc/stat can be.
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert thread_budget(3, environ={"ASE_SEARCH_THREADS": "1"}) == ThreadBudget(
        3, 2, source="--threads")
    assert thread_budget(environ={"ASE_SEARCH_THREADS": " 4 "}) == ThreadBudget(
        4, 2, source="ASE_SEARCH_THREADS")
    assert thread_budget(environ={}) == ThreadBudget(1, 2, 1.0, 0.25)  # one core is busy
    monkeypatch.setattr(runtime, "_sample_busy", lambda seconds, proc_stat: (0.02, 0.25))
    assert thread_budget(environ={}) == ThreadBudget(2, 2, 0.02, 0.25)
    # An OMP_NUM_THREADS the scheduler set caps the automatic choice.
    assert thread_budget(environ={"OMP_NUM_THREADS": "1"}) == ThreadBudget(
        1, 2, 0.02, 0.25, source="OMP_NUM_THREADS")
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="ASE_SEARCH_THREADS must be a whole number"):
            thread_budget(environ={"ASE_SEARCH_THREADS": bad})
    with pytest.raises(ValueError, match="--threads must be"):
        thread_budget(0)


def test_thread_budget_without_proc_stat_falls_back_to_the_load_average(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(runtime, "read_cpu_sample", lambda proc_stat=None: None)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    assert thread_budget(environ={}) == ThreadBudget(1, 2, 1.0)
    assert thread_budget(environ={}).describe() == \
        "torch threads: 1 (2 CPUs available, 1-min load 1.00)"

    def no_load_average():
        raise OSError("no load average")

    monkeypatch.setattr(runtime.os, "getloadavg", no_load_average)
    assert thread_budget(environ={}) == ThreadBudget(2, 2)  # nothing to go on: all the CPUs


def test_thread_budget_describe():
    assert ThreadBudget(2, 2, 0.034, 0.251).describe() == \
        "torch threads: 2 (2 CPUs available, 0.03 CPUs busy elsewhere over 0.25 s)"
    assert ThreadBudget(1, 2, 1.034).describe() == \
        "torch threads: 1 (2 CPUs available, 1-min load 1.03)"
    assert ThreadBudget(4, 1, source="--threads").describe() == \
        "torch threads: 4 (1 CPU available, set by --threads)"
    with pytest.raises(ValueError, match="threads"):
        ThreadBudget(0, 2)


# The real decision, on this machine's /proc/stat.

needs_proc_stat = pytest.mark.skipif(read_cpu_sample() is None, reason="no /proc/stat")
ON_TWO_CPUS = available_cpus() == 2 and os.cpu_count() == 2


def _quiet_enough() -> float:
    """CPUs busy elsewhere before a test; skip unless most of a CPU is idle for it to fill."""
    busy = measure_busy_cpus()
    assert busy is not None
    if busy > (os.cpu_count() or 1) - 0.75:
        pytest.skip(f"the machine is busy ({busy:.2f} CPUs): a spinning CPU would not show")
    return busy


@needs_proc_stat
def test_a_busy_process_takes_a_thread_and_is_gone_when_it_stops():
    before = _quiet_enough()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        budget = thread_budget(environ={})
    finally:
        spinner.kill()
        spinner.wait()
    assert budget.busy is not None and budget.sampled is not None
    # The spinner holds a whole CPU (or what is left of the machine beside the others).
    assert budget.busy >= min(os.cpu_count() or 1, before + 1) - 0.3, (before, budget.describe())
    if ON_TWO_CPUS:
        assert budget.threads == 1, budget.describe()
    # The spinner is gone (killed and reaped); a few samples, so that the suite's other worker
    # starting work in the same quarter second is not read as the spinner. If the machine stays
    # busy without it, there is nothing to see.
    samples = [measure_busy_cpus() for _ in range(4)]
    after = min(v for v in samples if v is not None)
    if after >= budget.busy - 0.5 and after > (os.cpu_count() or 1) - 0.75:
        pytest.skip(f"the machine became busy ({after:.2f} CPUs) after the spinner stopped")
    assert after is not None and after < budget.busy - 0.5, (after, budget.describe())


@needs_proc_stat
def test_this_process_busy_is_not_counted():
    before = _quiet_enough()
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        first = read_cpu_sample()
        budget = thread_budget(environ={})
        second = read_cpu_sample()
    finally:
        stop.set()
        spinner.join()
    assert first is not None and second is not None and budget.busy is not None
    wall = second.wall - first.wall
    # The spinning thread did hold a CPU, and the machine-wide count saw it ...
    assert (second.own - first.own) / wall >= 0.7
    assert (second.busy - first.busy) / wall >= 0.7
    # ... but it is this process's own, so it is not busy elsewhere.
    assert budget.busy < before + 0.5, budget.describe()
    if ON_TWO_CPUS and before < 0.5:
        assert budget.threads == 2, budget.describe()
