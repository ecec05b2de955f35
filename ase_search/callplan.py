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
from typing import NamedTuple, Protocol, Union

from ase_search.schedule import ExitSchedule

__all__ = [
    "Calls",
    "PlannedCall",
    "Sampler",
    "block_acceleration",
    "blocks_per_call",
    "call_plan",
    "call_timesteps",
]

# A sampler's model calls: the sampler itself (anything with ``model_times(T)``, i.e. a
# SamplerConfig), or the timesteps of its calls listed directly.
class Sampler(Protocol):
    """Anything that says at which timesteps it calls the model (a
    :class:`~ase_search.samplers.SamplerConfig`)."""

    def model_times(self, num_timesteps: int) -> Sequence[float]: ...


Calls = Union[Sampler, Sequence[float]]


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
        reuse: whether the interval is a ``reuse`` one.
        refresh: (``reuse`` only) the call runs all blocks and stores the residual of the blocks
            past ``count``; the other calls of a ``reuse`` interval run ``count`` blocks and add
            it, those of a ``skip`` interval run ``count`` blocks.
    """

    count: int
    reuse: bool
    refresh: bool


def call_plan(schedule: ExitSchedule, sampler: Calls,
              num_timesteps: int = 1000) -> list[PlannedCall]:
    """What the model runs at each of a sampler's calls, in calling order.

    A call at timestep ``s`` is in interval ``schedule.interval_of(s / T)`` (the binning of the
    official ASE code) and runs its count. In a ``reuse`` interval, the consecutive calls in it are
    numbered ``j = 0, 1, ...`` from the first one and call ``j`` refreshes when ``j % period == 0``,
    so the first call after entering the interval (whose cache is empty) always refreshes.

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
    plan, previous, j = [], None, 0
    for s in timesteps:
        k = schedule.interval_of(s / num_timesteps)
        j = j + 1 if k == previous else 0
        previous = k
        reuse = schedule.modes[k] == "reuse"
        plan.append(PlannedCall(schedule.blocks[k], reuse, reuse and j % schedule.periods[k] == 0))
    return tuple(plan)


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
