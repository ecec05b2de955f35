"""The CPU budget: CPUs from affinity and the cgroup quota, less those the load shows busy."""

from __future__ import annotations

import pytest

from ase_search import runtime
from ase_search.runtime import (
    ThreadBudget,
    available_cpus,
    cgroup_cpu_quota,
    cpu_threads,
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


@pytest.mark.parametrize("cpus, load, machine, expected", [
    (2, 0.1, 2, 2),  # quiet 2-core machine: both cores
    (2, 1.0, 2, 1),  # beside one CPU-bound process: one thread
    (2, 1.4, 2, 1),  # 0.6 idle rounds to 1, never 0
    (2, 5.0, 2, 1),  # overloaded: still one thread
    (8, 2.4, 8, 6),  # 5.6 idle CPUs -> 6
    (2, 50.0, 64, 2),  # a busy big host with 14 idle CPUs: the 2 this process may use
])
def test_cpu_threads_by_hand(cpus, load, machine, expected):
    assert cpu_threads(cpus=cpus, load=load, machine_cpus=machine) == expected


def test_thread_budget_precedence(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    assert thread_budget(3, environ={"ASE_SEARCH_THREADS": "1"}) == ThreadBudget(
        3, 2, source="--threads")
    assert thread_budget(environ={"ASE_SEARCH_THREADS": " 4 "}) == ThreadBudget(
        4, 2, source="ASE_SEARCH_THREADS")
    assert thread_budget(environ={}) == ThreadBudget(1, 2, 1.0)  # one core is busy
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert thread_budget(environ={}).threads == 2
    # An OMP_NUM_THREADS the scheduler set caps the automatic choice.
    assert thread_budget(environ={"OMP_NUM_THREADS": "1"}) == ThreadBudget(
        1, 2, 0.0, source="OMP_NUM_THREADS")
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="ASE_SEARCH_THREADS must be a whole number"):
            thread_budget(environ={"ASE_SEARCH_THREADS": bad})
    with pytest.raises(ValueError, match="--threads must be"):
        thread_budget(0)


def test_thread_budget_describe():
    assert ThreadBudget(1, 2, 1.034).describe() == \
        "torch threads: 1 (2 CPUs available, 1-min load 1.03)"
    assert ThreadBudget(4, 1, source="--threads").describe() == \
        "torch threads: 4 (1 CPU available, set by --threads)"
    with pytest.raises(ValueError, match="threads"):
        ThreadBudget(0, 2)
