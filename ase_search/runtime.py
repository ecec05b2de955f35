"""The CPU budget of a process: how many threads torch and the BLAS libraries should use.

torch starts one thread per physical core of the *machine*, whatever share of it the process may
use. Beside another CPU-bound process (or under a container's CPU quota) those threads wait on
each other at every parallel region: on a 2-core machine with one busy neighbour a fine-tune ran
7-12x slower with torch's default than with one thread. :func:`cpu_threads` therefore counts the
CPUs the process may run on (its affinity mask, capped by the cgroup v2 quota) and leaves out the
ones the 1-minute load average shows busy; :func:`thread_budget` adds the user's explicit choice
(``--threads``, ``ASE_SEARCH_THREADS``) on top, and :func:`apply_threads` puts it in force.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CGROUP_CPU_MAX",
    "THREADS_ENV",
    "ThreadBudget",
    "apply_threads",
    "available_cpus",
    "cgroup_cpu_quota",
    "cpu_threads",
    "thread_budget",
]

THREADS_ENV = "ASE_SEARCH_THREADS"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_quota(path: str | Path = CGROUP_CPU_MAX) -> float | None:
    """CPUs the cgroup v2 quota allows (``quota / period`` of ``cpu.max``), ``None`` if unlimited.

    A missing or unreadable file (cgroup v1, macOS, no container) also means no quota.
    """
    try:
        fields = Path(path).read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = float(fields[0]), float(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus(*, affinity: set[int] | None = None,
                   cpu_max: str | Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup CPU quota.

    A fractional quota is rounded down (1.5 CPUs -> 1): a second thread would be throttled for
    the half CPU it cannot have. At least 1.

    Args:
        affinity: CPU ids the process may run on (default ``os.sched_getaffinity(0)``, or
            ``os.cpu_count()`` CPUs where the platform has no affinity call).
        cpu_max: the cgroup v2 ``cpu.max`` file.
    """
    if affinity is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    else:
        n = len(affinity)
    quota = cgroup_cpu_quota(cpu_max)
    if quota is not None:
        n = min(n or 1, math.floor(quota))
    return max(1, n or 1)


def cpu_threads(*, cpus: int | None = None, load: float | None = None,
                machine_cpus: int | None = None) -> int:
    """Threads for one CPU-bound process: the CPUs it may use, less those busy elsewhere.

    The busy ones are read from the 1-minute load average, which counts the whole machine: the
    idle CPUs are ``machine_cpus - load``, rounded to the nearest whole CPU, and the result is
    ``min(cpus, idle)``, at least 1. On a 2-core machine that is 2 threads when quiet and 1 beside
    one other CPU-bound process. The load average lags (it decays over about a minute) and counts
    every process, so this errs towards fewer threads; ``--threads`` overrides it.

    Args:
        cpus: CPUs the process may use (default :func:`available_cpus`).
        load: the 1-minute load average (default ``os.getloadavg()[0]``).
        machine_cpus: CPUs of the machine the load is spread over (default ``os.cpu_count()``).
    """
    cpus = available_cpus() if cpus is None else cpus
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # no load average on this platform: trust the CPU count
            load = 0.0
    machine = (os.cpu_count() or cpus) if machine_cpus is None else machine_cpus
    idle = math.floor(machine - load + 0.5)
    return max(1, min(cpus, idle))


@dataclass(frozen=True)
class ThreadBudget:
    """How many threads a command runs with, and why.

    Attributes:
        threads: threads for torch's intra-op pool and the BLAS libraries.
        cpus: CPUs the process may use (:func:`available_cpus`).
        load: the 1-minute load average seen when the budget was made (``None`` if not read).
        source: ``"--threads"``, ``"ASE_SEARCH_THREADS"``, ``"OMP_NUM_THREADS"`` (auto, capped
            by it) or ``"auto"``.
    """

    threads: int
    cpus: int
    load: float | None = None
    source: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) \
                or self.threads < 1:
            raise ValueError(f"threads must be a whole number >= 1, got {self.threads!r}")
        if self.cpus < 1:
            raise ValueError(f"cpus must be >= 1, got {self.cpus}")

    def describe(self) -> str:
        """One line for the user: ``torch threads: 1 (2 CPUs available, 1-min load 1.03)``."""
        why = [f"{self.cpus} CPU{'s' if self.cpus != 1 else ''} available"]
        if self.load is not None:
            why.append(f"1-min load {self.load:.2f}")
        if self.source != "auto":
            why.append(f"set by {self.source}")
        return f"torch threads: {self.threads} ({', '.join(why)})"


def _positive_int(value: str, name: str) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{name} must be a whole number of threads >= 1, got {value!r}")
    return n


def thread_budget(requested: int | None = None, *,
                  environ: Mapping[str, str] | None = None) -> ThreadBudget:
    """The thread budget: ``requested`` (``--threads``), else ``ASE_SEARCH_THREADS``, else auto.

    Auto is :func:`cpu_threads`, never more than an ``OMP_NUM_THREADS`` set in the environment
    (schedulers such as SLURM, and users, set it to say how many threads a job may use).

    Raises:
        ValueError: ``requested`` or ``ASE_SEARCH_THREADS`` is not a whole number >= 1.
    """
    environ = os.environ if environ is None else environ
    cpus = available_cpus()
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"--threads must be a whole number of threads >= 1, "
                             f"got {requested!r}")
        return ThreadBudget(requested, cpus, source="--threads")
    if environ.get(THREADS_ENV, "").strip():
        return ThreadBudget(_positive_int(environ[THREADS_ENV], THREADS_ENV), cpus,
                            source=THREADS_ENV)
    try:
        load: float | None = os.getloadavg()[0]
    except OSError:
        load = None
    threads = cpu_threads(cpus=cpus, load=load)
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and 1 <= int(omp) < threads:
        return ThreadBudget(int(omp), cpus, load, source="OMP_NUM_THREADS")
    return ThreadBudget(threads, cpus, load)


def apply_threads(threads: int) -> int:
    """Run torch's intra-op pool and every loaded BLAS/OpenMP library with ``threads`` threads.

    Returns:
        The threads torch now uses (``torch.get_num_threads()``).
    """
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # called, not entered: the limit stays for the process
    return torch.get_num_threads()
