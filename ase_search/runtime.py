"""The CPU budget of a process: how many threads torch and the BLAS libraries should use.

torch starts one thread per physical core of the *machine*, whatever share of it the process may
use. Beside another CPU-bound process (or under a container's CPU quota) those threads wait on
each other at every parallel region: on a 2-core machine with one busy neighbour a fine-tune ran
7-12x slower with torch's default than with one thread. :func:`cpu_threads` therefore counts the
CPUs the process may run on (its affinity mask, capped by the cgroup v2 quota) and leaves out the
ones other processes keep busy *now*: :func:`measure_busy_cpus` samples the machine's CPU time in
``/proc/stat`` over a quarter of a second, less this process's own. A load average would be the
wrong signal: it decays over a minute, so right after ``pip install`` a quiet machine still looks
busy. Where ``/proc/stat`` cannot be read (macOS) the 1-minute load average stands in.
:func:`thread_budget` adds the user's explicit choice (``--threads``, ``ASE_SEARCH_THREADS``) on
top, and :func:`apply_threads` puts it in force.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "CGROUP_CPU_MAX",
    "PROC_STAT",
    "SAMPLE_SECONDS",
    "THREADS_ENV",
    "CpuSample",
    "ThreadBudget",
    "apply_threads",
    "available_cpus",
    "busy_cpus_elsewhere",
    "cgroup_cpu_quota",
    "cpu_threads",
    "measure_busy_cpus",
    "read_cpu_sample",
    "thread_budget",
]

THREADS_ENV = "ASE_SEARCH_THREADS"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
PROC_STAT = Path("/proc/stat")
# Long enough that a CPU-bound neighbour shows as ~1 CPU (25 clock ticks per CPU at 100 Hz),
# short enough not to be felt at a command's start.
SAMPLE_SECONDS = 0.25


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


class CpuSample(NamedTuple):
    """One reading of the clocks :func:`busy_cpus_elsewhere` compares, all in seconds.

    Attributes:
        wall: a monotonic clock (``time.monotonic()``).
        busy: CPU time the whole machine has spent busy since boot, summed over its CPUs
            (``/proc/stat``'s ``cpu`` line: all of it but idle and iowait).
        own: CPU time this process (all its threads) has used (``time.process_time()``).
    """

    wall: float
    busy: float
    own: float


def busy_cpus_elsewhere(first: CpuSample, second: CpuSample) -> float:
    """CPUs other processes kept busy between two samples: ``(d busy - d own) / d wall``.

    This process's own CPU time is taken out, so its threads never count against it. A result
    below 0 (the two clocks tick at different resolutions) is 0.

    Raises:
        ValueError: ``second`` is not later than ``first``.
    """
    wall = second.wall - first.wall
    if wall <= 0:
        raise ValueError(f"the second sample must be later than the first (wall {wall:g} s)")
    return max(0.0, ((second.busy - first.busy) - (second.own - first.own)) / wall)


def read_cpu_sample(proc_stat: str | Path | None = None) -> CpuSample | None:
    """Read the machine's busy CPU time, this process's own and the clock, ``None`` without one.

    ``None`` where ``proc_stat`` (default ``/proc/stat``) cannot be read or parsed (macOS).
    """
    try:
        with open(PROC_STAT if proc_stat is None else proc_stat) as f:
            wall, own = time.monotonic(), time.process_time()
            line = f.readline()
        ticks = [int(x) for x in line.split()[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    if not line.startswith("cpu ") or len(ticks) < 4 or hz <= 0:
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user and nice).
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return CpuSample(wall, (sum(ticks) - idle) / hz, own)


def _sample_busy(seconds: float, proc_stat: str | Path | None) -> tuple[float, float] | None:
    """CPUs busy elsewhere over a sample of about ``seconds``, and the sample's real length."""
    first = read_cpu_sample(proc_stat)
    if first is None:
        return None
    time.sleep(seconds)
    second = read_cpu_sample(proc_stat)
    if second is None or second.wall <= first.wall:
        return None
    return busy_cpus_elsewhere(first, second), second.wall - first.wall


def measure_busy_cpus(seconds: float = SAMPLE_SECONDS, *,
                      proc_stat: str | Path | None = None) -> float | None:
    """CPUs other processes keep busy now: two :func:`read_cpu_sample` ``seconds`` apart.

    Only what runs during the sample counts: an install that just finished, or the shell that
    started this process, is idle and adds nothing. ``None`` where ``/proc/stat`` cannot be read.
    """
    sample = _sample_busy(seconds, proc_stat)
    return None if sample is None else sample[0]


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this platform
        return None


def cpu_threads(*, cpus: int | None = None, busy: float | None = None,
                machine_cpus: int | None = None) -> int:
    """Threads for one CPU-bound process: the CPUs it may use, less those busy elsewhere.

    The idle CPUs are ``machine_cpus - busy``, rounded to the nearest whole CPU, and the result is
    ``min(cpus, idle)``, at least 1. On a 2-core machine that is 2 threads when quiet and 1 beside
    one other CPU-bound process. ``--threads`` overrides it.

    Args:
        cpus: CPUs the process may use (default :func:`available_cpus`).
        busy: CPUs other processes keep busy (default :func:`measure_busy_cpus`, else the
            1-minute load average, else none).
        machine_cpus: CPUs of the machine ``busy`` is spread over (default ``os.cpu_count()``).
    """
    cpus = available_cpus() if cpus is None else cpus
    if busy is None:
        busy = measure_busy_cpus()
    if busy is None:
        busy = _load_average() or 0.0
    machine = (os.cpu_count() or cpus) if machine_cpus is None else machine_cpus
    idle = math.floor(machine - busy + 0.5)
    return max(1, min(cpus, idle))


@dataclass(frozen=True)
class ThreadBudget:
    """How many threads a command runs with, and why.

    Attributes:
        threads: threads for torch's intra-op pool and the BLAS libraries.
        cpus: CPUs the process may use (:func:`available_cpus`).
        busy: CPUs other processes kept busy when the budget was made (``None`` if not read).
        sampled: seconds of the ``/proc/stat`` sample ``busy`` comes from; ``None`` when ``busy``
            is the 1-minute load average (no ``/proc/stat``).
        source: ``"--threads"``, ``"ASE_SEARCH_THREADS"``, ``"OMP_NUM_THREADS"`` (auto, capped
            by it) or ``"auto"``.
    """

    threads: int
    cpus: int
    busy: float | None = None
    sampled: float | None = None
    source: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) \
                or self.threads < 1:
            raise ValueError(f"threads must be a whole number >= 1, got {self.threads!r}")
        if self.cpus < 1:
            raise ValueError(f"cpus must be >= 1, got {self.cpus}")

    def describe(self) -> str:
        """One line for the user.

        ``torch threads: 2 (2 CPUs available, 0.03 CPUs busy elsewhere over 0.25 s)``, or with
        the load average standing in, ``torch threads: 1 (2 CPUs available, 1-min load 1.03)``.
        """
        why = [f"{self.cpus} CPU{'s' if self.cpus != 1 else ''} available"]
        if self.busy is not None and self.sampled is not None:
            why.append(f"{self.busy:.2f} CPUs busy elsewhere over {self.sampled:.2f} s")
        elif self.busy is not None:
            why.append(f"1-min load {self.busy:.2f}")
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

    Auto is :func:`cpu_threads` on a :func:`measure_busy_cpus` sample (the 1-minute load average
    where ``/proc/stat`` cannot be read), never more than an ``OMP_NUM_THREADS`` set in the
    environment (schedulers such as SLURM, and users, set it to say how many threads a job may
    use). Only auto takes the sample.

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
    sample = _sample_busy(SAMPLE_SECONDS, None)
    busy: float | None
    sampled: float | None
    busy, sampled = sample if sample is not None else (_load_average(), None)
    threads = cpu_threads(cpus=cpus, busy=0.0 if busy is None else busy)
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and 1 <= int(omp) < threads:
        return ThreadBudget(int(omp), cpus, busy, sampled, source="OMP_NUM_THREADS")
    return ThreadBudget(threads, cpus, busy, sampled)


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
