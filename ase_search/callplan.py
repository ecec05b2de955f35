"""The call plan: what the model computes at each of a sampler's calls.

This is the one place a sampler's calls become block counts. A call at timestep ``s`` of a
``T``-step process is at time ``t = s / T`` and runs ``schedule.blocks_at(t)`` exitable blocks, or
all of them when it is a block-reuse refresh (see :mod:`ase_search.schedule`). The samplers (and
through them the native models), the diffusers hooks, the cost model, the FLOP count and the
block counters all read :func:`call_plan`; nothing else decides what a call runs.

A primitive: it imports only the schedule.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple, Protocol, TypeVar, Union

from ase_search.schedule import ExitSchedule, cached_blocks

__all__ = [
    "CallNumbering",
    "Calls",
    "PlannedCall",
    "Sampler",
    "block_acceleration",
    "blocks_per_call",
    "call_plan",
    "call_timesteps",
    "forecast",
]

# A sampler's model calls: the sampler itself (anything with ``model_times(T)``, i.e. a
# SamplerConfig), or the timesteps of its calls listed directly.
class Sampler(Protocol):
    """Anything that says at which timesteps it calls the model (a
    :class:`~ase_search.samplers.SamplerConfig`)."""

    def model_times(self, num_timesteps: int) -> Sequence[float]: ...


Calls = Union[Sampler, Sequence[float]]
_R = TypeVar("_R")


# ###################################################################### block counts
def call_timesteps(sampler: Calls, num_timesteps: int = 1000) -> list[float]:
    """Timesteps in ``[0, T)`` of a sampler's model calls, in calling order.

    Args:
        sampler: a :class:`~ase_search.samplers.SamplerConfig`, or its calls' timesteps.
        num_timesteps: ``T``, the training process's number of timesteps.
    """
    if hasattr(sampler, "model_times"):
        return list(sampler.model_times(num_timesteps))
    if isinstance(sampler, (str, bytes)) or not isinstance(sampler, Sequence):
        raise ValueError(f"sampler must be a SamplerConfig or a list of timesteps, got "
                         f"{type(sampler).__name__}")
    return [float(s) for s in sampler]


class PlannedCall(NamedTuple):
    """One model call of a sampling run.

    Attributes:
        count: the block count of the call's interval.
        reuse: whether the interval keeps the residual of the blocks past ``count`` (a
            ``reuse`` or ``forecast`` one).
        refresh: (``reuse`` only) the call runs all blocks and keeps the residual of the blocks
            past ``count``; the other calls of such an interval run ``count`` blocks and add the
            kept residual (:func:`forecast` of it), those of a ``skip`` interval run ``count``
            blocks.
        order: the forecast order of the added residual (0: the last refresh's as it is).
        enters: the call is the first of a run in its interval: the kept residuals of earlier
            runs are dropped (each run forecasts from its own refreshes).
        block_range: which blocks the interval caches (``reuse``/``forecast`` with per-module
            caching; :func:`~ase_search.schedule.cached_blocks`): ``"rear"`` (past ``count``),
            ``"front"`` or ``"alternate"``.
    """

    count: int
    reuse: bool
    refresh: bool
    order: int = 0
    enters: bool = True
    block_range: str = "rear"

    def cached(self, depth: int) -> tuple[int, ...]:
        """The blocks a cached call does not run (a refresh runs and keeps them)."""
        return cached_blocks(self.block_range, self.count, depth)


class CallNumbering:
    """Numbers a sampling run's calls as they come and says what each computes: the one
    numbering of ``reuse``/``forecast`` intervals, used by :func:`call_plan` (which knows every
    call in advance) and by the diffusers hooks (which see one call at a time).

    Call ``j`` of a run of consecutive calls in one interval (``j = 0`` on entering it) is a
    refresh when ``j < warmup`` or ``(j - warmup) % period == 0``.
    """

    def __init__(self, schedule: ExitSchedule, num_timesteps: int = 1000) -> None:
        self.schedule = schedule
        self.num_timesteps = num_timesteps
        self._interval: int | None = None
        self._j = 0

    def next(self, timestep: float) -> PlannedCall:
        """The call at ``timestep`` (in ``[0, T]``), after the calls numbered so far."""
        s = self.schedule
        k = s.interval_of(timestep / self.num_timesteps)
        self._j = self._j + 1 if k == self._interval else 0
        self._interval = k
        cached = s.modes[k] != "skip"
        j, w = self._j, s.warmup
        return PlannedCall(s.blocks[k], cached,
                           cached and (j < w or (j - w) % s.periods[k] == 0), s.orders[k], j == 0,
                           s.ranges[k])


def call_plan(schedule: ExitSchedule, sampler: Calls,
              num_timesteps: int = 1000) -> list[PlannedCall]:
    """What the model runs at each of a sampler's calls, in calling order.

    A call at timestep ``s`` is in interval ``schedule.interval_of(s / T)`` (the binning of the
    official ASE code) and runs its count. In a ``reuse`` or ``forecast`` interval, the
    consecutive calls in it are numbered ``j = 0, 1, ...`` from the first one and call ``j``
    refreshes when ``j < warmup`` or ``(j - warmup) % period == 0`` (:class:`CallNumbering`), so
    the first call after entering the interval (whose cache is empty) always refreshes.

    Args:
        schedule: the exit schedule.
        sampler: a :class:`~ase_search.samplers.SamplerConfig`, or its calls' timesteps.
        num_timesteps: ``T``, the training process's number of timesteps.

    Raises:
        ValueError: ``schedule`` is not an :class:`ExitSchedule`, or a timestep lies outside
            ``[0, T]``.
    """
    if not isinstance(schedule, ExitSchedule):
        raise ValueError(f"schedule must be an ExitSchedule, got {type(schedule).__name__}")
    return list(_plan(schedule, tuple(call_timesteps(sampler, num_timesteps)), num_timesteps))


@functools.lru_cache(maxsize=512)
def _plan(schedule: ExitSchedule, timesteps: tuple[float, ...],
          num_timesteps: int) -> tuple[PlannedCall, ...]:
    """:func:`call_plan`'s work, once per schedule and calls: a trial asks for its plan from
    the sampler, the block counter, the cost model and the accelerations alike."""
    numbering = CallNumbering(schedule, num_timesteps)
    return tuple(numbering.next(s) for s in timesteps)


def blocks_per_call(schedule: ExitSchedule, sampler: Calls, num_timesteps: int = 1000) -> list[int]:
    """Exitable blocks the model runs at each of a sampler's calls, in calling order.

    A call runs its interval's count, ``schedule.blocks_at(s / T)`` at timestep ``s``, except a
    block-reuse refresh, which runs all ``depth`` blocks. Arguments and errors as
    :func:`call_plan`'s.
    """
    return [schedule.depth if call.refresh else call.count
            for call in call_plan(schedule, sampler, num_timesteps)]


def block_acceleration(schedule: ExitSchedule, sampler: Calls, num_timesteps: int = 1000) -> float:
    """Share of exitable-block evaluations the schedule skips over a sampler's calls:
    ``1 - sum(blocks_per_call) / (depth * calls)``."""
    calls = blocks_per_call(schedule, sampler, num_timesteps)
    if not calls:
        raise ValueError("the sampler makes no model calls")
    return 1.0 - sum(calls) / (schedule.depth * len(calls))


# ###################################################################### forecasting
def forecast(history: Sequence[tuple[float, _R]], t: float, order: int) -> _R:
    """The kept residual extrapolated to time ``t``: Newton's interpolating polynomial through
    the last ``order + 1`` refreshes of ``history`` (as many as it holds), in divided
    differences of the call times (uneven spacings work). Exact when the residual is a
    polynomial of degree ``order`` in ``t``; order 0 is the last refresh's residual as it is.

    The one forecast of ase-search: the native models' block-reuse cache and the diffusers hooks
    both call it. Works on anything with ``+``, ``-`` and scalar ``*`` (tensors, floats).

    Args:
        history: ``(t_i, residual_i)`` of the refreshes, oldest first, distinct times.
        t: the time to forecast at.
        order: the polynomial degree (0, 1 or 2).

    Raises:
        ValueError: an empty history, or two refreshes at one time.
    """
    if not history:
        raise ValueError("a forecast needs a refresh first (the run's first call in a reuse or "
                         "forecast interval refreshes)")
    # newest first: the newest refresh anchors the Newton form (order 1 is then exactly
    # TaylorSeer's f + f' (t - t_n) with a backward difference for f')
    points = list(reversed(history[-(order + 1):])) if order > 0 else [history[-1]]
    times = [float(ti) for ti, _ in points]
    if len(set(times)) != len(times):
        raise ValueError(f"a forecast needs refreshes at distinct times, got {times}")
    # Divided differences, in place: coef[i] = f[t_0, ..., t_i].
    coef = [value for _, value in points]
    for level in range(1, len(points)):
        for i in range(len(points) - 1, level - 1, -1):
            coef[i] = (coef[i] - coef[i - 1]) * (1.0 / (times[i] - times[i - level]))
    # Horner on the Newton form.
    out = coef[-1]
    for i in range(len(points) - 2, -1, -1):
        out = coef[i] + out * (t - times[i])
    return out
