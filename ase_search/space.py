"""Parameterised spaces of exit schedules, the link between :mod:`ase_search.schedule` and Optuna.

A :class:`ScheduleSpace` fixes the number of intervals ``K`` and either fixes their edges
(``uniform`` or an explicit list) or searches them on a grid; each interval has an allowed block
range; an optional monotone constraint forbids more blocks at larger t (noise is easy, Section 2.1).

Optuna parameters (all integers, so every sampler handles them and trials are exactly
reproducible):

* ``cut_1 .. cut_{K-1}`` (searched edges only): interval edges in grid units, sorted on decode;
* monotone spaces: ``blocks_0`` (blocks in the interval at t = 0) and ``drop_1 .. drop_{K-1}``,
  the blocks removed when moving one interval toward noise; counts are clipped into the allowed
  range, so every parameter vector decodes to a valid schedule;
* otherwise: ``blocks_0 .. blocks_{K-1}``.

``space.to_params(schedule)`` inverts the decoding for any schedule inside the space, so the
paper's presets can be enqueued as seed trials.

A ``levers:`` section (:class:`LeverSpace`) lets a space's schedules reuse blocks instead of
skipping them (``modes: [skip, reuse]`` and a refresh-period range; Optuna parameters ``mode``
and ``period``, or ``mode_k``/``period_k`` per interval) and asks for exit heads (a model option
the one-shot fine-tune trains). A reuse-only space needs no fine-tune: run it with
``--finetune none``.

A joint space (a ``sampling:`` section, :class:`SamplingSpace`) searches the sampler and its step
count with the schedule: ``sampler`` (categorical), ``steps`` (integer, log-uniform) and, when the
section lists several, ``timestep_spacing`` (categorical). Without the section the study's one
sampler and step count apply to every trial, as before. The section also fixes the study's
steps-only baseline (the full model at each sampler and every ``steps_only`` step count) and the
reference configuration speedups are measured against.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ase_search.schedule import (
    ARCHS,
    FORECAST_ORDERS,
    GRANULARITIES,
    RANGES,
    MODES,
    ExitSchedule,
    preset,
    preset_names,
)

__all__ = ["SEARCHED_SPACING", "LeverSpace", "SamplingSpace", "ScheduleSpace", "SpaceError",
           "load_space"]

SPACE_VERSION = 1
_KEYS = {"version", "arch", "depth", "intervals", "edges", "edge_grid", "blocks", "monotone",
         "seeds", "description", "sampling", "levers"}
_LEVER_KEYS = {"modes", "period", "order", "warmup", "granularity", "ranges", "per_interval",
               "exit_heads"}
_SAMPLING_KEYS = {"samplers", "steps", "timestep_spacing", "steps_only", "reference"}
# The steps-only ladder when a space does not give one (clipped to its step range).
STEPS_LADDER = (4, 5, 6, 8, 10, 14, 20, 30, 50)
SAMPLING_PARAMS = ("sampler", "steps", "timestep_spacing")  # Optuna names of a joint space
# A joint space's spacing choice beside the uniform ones: the timesteps the study searched for the
# trial's sampler and step count (``ase_search.timesteps``; solvers it does not search run their
# default spacing).
SEARCHED_SPACING = "searched"
# A T = 1000-step process has 1000 timesteps, so more intervals (or edge-grid cells) than that are
# empty; the cap also keeps a typo like `intervals: 1000000000` from building huge tuples.
MAX_INTERVALS = 1000


class SpaceError(ValueError):
    """A search-space file is malformed; the message names the field."""



def _check_section(data: Any, name: str, keys: set[str], not_mapping: str) -> None:
    """Refuse a space section that is not a mapping, or names a field it does not have."""
    if not isinstance(data, dict):
        raise SpaceError(not_mapping)
    unknown = set(data) - keys
    if unknown:
        raise SpaceError(f"{name}: unknown field(s) {', '.join(sorted(unknown))}; allowed: "
                         f"{', '.join(sorted(keys))}")

@dataclass(frozen=True)
class LeverSpace:
    """The ``levers:`` section: how skipped blocks may be made cheaper in quality.

    Args:
        modes: the modes an exiting interval may take, ``skip`` (the paper's), ``reuse`` (add
            the residual the skipped blocks added at the interval's last refresh call) and/or
            ``forecast`` (add it extrapolated to the call's time).
        min_period: the smallest refresh period ``r`` of a reuse or forecast interval (>= 2:
            ``r = 1`` refreshes every call, i.e. runs the full model).
        max_period: the largest.
        min_order, max_order: the forecast orders searched (1 and/or 2).
        min_warmup, max_warmup: the warm-up refreshes searched (the schedule's ``warmup``).
        granularity: what a reuse/forecast interval keeps, searched among these (``blocks``,
            ``modules``; see :mod:`ase_search.schedule`).
        ranges: which blocks a per-module reuse/forecast interval caches (``rear``, ``front``,
            ``alternate``), searched per interval (``range_k``) when several are listed.
        per_interval: one ``mode_k``/``period_k`` per interval (fixed edges only); else one
            ``mode``/``period`` for every exiting interval.
        exit_heads: the model gets one output head per exit depth, trained by the one-shot
            fine-tune.
    """

    modes: tuple[str, ...] = ("skip",)
    min_period: int = 2
    max_period: int = 2
    min_order: int = 1
    max_order: int = 1
    min_warmup: int = 0
    max_warmup: int = 0
    granularity: tuple[str, ...] = ("blocks",)
    ranges: tuple[str, ...] = ("rear",)
    per_interval: bool = False
    exit_heads: bool = False

    def __post_init__(self) -> None:
        if not self.modes or len(set(self.modes)) != len(self.modes):
            raise SpaceError(f"levers.modes must list skip, reuse and/or forecast once each, "
                             f"got {list(self.modes)}")
        for mode in self.modes:
            if mode not in MODES:
                raise SpaceError(f"levers.modes: unknown mode {mode!r}; choose from {list(MODES)}")
        _check_range("levers.period", self.min_period, self.max_period, 2,
                     " (period 1 refreshes every call: the full model)")
        _check_range("levers.order", self.min_order, self.max_order, 1, "")
        if self.max_order > max(FORECAST_ORDERS):
            raise SpaceError(f"levers.order: at most {max(FORECAST_ORDERS)}, got "
                             f"{self.max_order}")
        _check_range("levers.warmup", self.min_warmup, self.max_warmup, 0, "")
        if (not self.granularity or len(set(self.granularity)) != len(self.granularity)
                or not set(self.granularity) <= set(GRANULARITIES)):
            raise SpaceError(f"levers.granularity must list {' and/or '.join(GRANULARITIES)} "
                             f"once each, got {list(self.granularity)}")
        if (not self.ranges or len(set(self.ranges)) != len(self.ranges)
                or not set(self.ranges) <= set(RANGES)):
            raise SpaceError(f"levers.ranges must list {', '.join(RANGES)} (any of them) once "
                             f"each, got {list(self.ranges)}")
        if self.ranges != ("rear",) and "modules" not in self.granularity:
            raise SpaceError("levers.ranges other than rear cache blocks per module: add modules "
                             "to levers.granularity")
        for key in ("per_interval", "exit_heads"):
            if not isinstance(getattr(self, key), bool):
                raise SpaceError(f"levers.{key} must be true or false")

    @property
    def reuses(self) -> bool:
        """Whether exiting intervals may keep the skipped blocks' residual (reuse or forecast)."""
        return "reuse" in self.modes or "forecast" in self.modes

    @property
    def forecasts(self) -> bool:
        return "forecast" in self.modes

    def to_dict(self) -> dict[str, Any]:
        out = {"modes": list(self.modes),
               "period": {"min": self.min_period, "max": self.max_period}}
        if self.forecasts or self.max_warmup:  # older studies' spaces stay as they were stored
            out |= {"order": {"min": self.min_order, "max": self.max_order},
                    "warmup": {"min": self.min_warmup, "max": self.max_warmup}}
        if self.granularity != ("blocks",):
            out["granularity"] = list(self.granularity)
        if self.ranges != ("rear",):
            out["ranges"] = list(self.ranges)
        return out | {"per_interval": self.per_interval, "exit_heads": self.exit_heads}

    @classmethod
    def from_dict(cls, data: Any) -> LeverSpace:
        _check_section(data, "levers", _LEVER_KEYS,
                       "levers must be a mapping (modes, period, per_interval, exit_heads)")
        modes = data.get("modes", ["skip"])
        if isinstance(modes, str):
            modes = [modes]
        if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
            raise SpaceError("levers.modes must be a list of modes, e.g. [skip, reuse]")
        ranges = {}
        for key, default in (("period", 2), ("order", 1), ("warmup", 0)):
            value = data.get(key, default)
            if isinstance(value, int) and not isinstance(value, bool):
                value = {"min": value, "max": value}
            if not isinstance(value, dict) or set(value) - {"min", "max"}:
                raise SpaceError(f"levers.{key} must be a mapping {{min: N, max: N}} (or one "
                                 f"number)")
            lo = value.get("min", default)
            ranges |= {f"min_{key}": lo, f"max_{key}": value.get("max", lo)}
        granularity = data.get("granularity", ["blocks"])
        if isinstance(granularity, str):
            granularity = [granularity]
        if not isinstance(granularity, list):
            raise SpaceError("levers.granularity must be a list, e.g. [blocks, modules]")
        blocks_ranges = data.get("ranges", ["rear"])
        if isinstance(blocks_ranges, str):
            blocks_ranges = [blocks_ranges]
        if not isinstance(blocks_ranges, list):
            raise SpaceError("levers.ranges must be a list, e.g. [rear, front, alternate]")
        return cls(modes=tuple(modes), **ranges, granularity=tuple(granularity),
                   ranges=tuple(blocks_ranges),
                   per_interval=data.get("per_interval", False),
                   exit_heads=data.get("exit_heads", False))


@dataclass(frozen=True)
class SamplingSpace:
    """The ``sampling:`` section of a joint space: which samplers and step counts to search.

    Args:
        samplers: sampler names (:data:`~ase_search.samplers.SAMPLER_NAMES`), searched as a
            categorical parameter.
        min_steps: fewest steps a trial may take.
        max_steps: most steps a trial may take (searched log-uniformly in between).
        timestep_spacings: the timestep spacings to search (``None``: each sampler's default);
            a spacing applies to the samplers that offer it, the others take their default.
            :data:`SEARCHED_SPACING` is the study's searched timesteps at the trial's step count
            (uniform or searched is then a choice of the search).
        steps_only: the step counts of the steps-only baseline (the full model at each sampler).
        reference: ``(sampler, steps)`` of the reference configuration (the full model), which
            tables measure speedups against and the paper's presets are seeded at.
    """

    samplers: tuple[str, ...]
    min_steps: int
    max_steps: int
    timestep_spacings: tuple[str | None, ...] = (None,)
    steps_only: tuple[int, ...] = ()
    reference: tuple[str, int] = ("ddim", 20)

    def __post_init__(self) -> None:
        from ase_search.samplers import SAMPLER_NAMES, TIMESTEP_SPACINGS

        if not self.samplers:
            raise SpaceError("sampling.samplers must list at least one sampler, e.g. [ddim]")
        for name in self.samplers:
            if name not in SAMPLER_NAMES:
                raise SpaceError(f"sampling.samplers: unknown sampler {name!r}; choose from "
                                 f"{list(SAMPLER_NAMES)}")
        if len(set(self.samplers)) != len(self.samplers):
            raise SpaceError(f"sampling.samplers lists a sampler twice: {list(self.samplers)}")
        _check_range("sampling.steps", self.min_steps, self.max_steps, 1)
        if not self.timestep_spacings:
            raise SpaceError("sampling.timestep_spacing must not be an empty list")
        for spacing in self.timestep_spacings:
            if spacing is not None and spacing not in (*TIMESTEP_SPACINGS, SEARCHED_SPACING):
                raise SpaceError(f"sampling.timestep_spacing: unknown spacing {spacing!r}; "
                                 f"choose from {[*TIMESTEP_SPACINGS, SEARCHED_SPACING]}")
        if self.timestep_spacings[0] == SEARCHED_SPACING:
            raise SpaceError(f"sampling.timestep_spacing: list a uniform spacing first (the "
                             f"reference configuration's and the presets'), e.g. [leading, "
                             f"{SEARCHED_SPACING}]")
        if len(set(self.timestep_spacings)) != len(self.timestep_spacings):
            raise SpaceError(f"sampling.timestep_spacing lists a spacing twice: "
                             f"{list(self.timestep_spacings)}")
        if not self.steps_only:
            raise SpaceError("sampling.steps_only must list at least one step count")
        for n in self.steps_only:
            if isinstance(n, bool) or not isinstance(n, int) or not (
                    self.min_steps <= n <= self.max_steps):
                raise SpaceError(f"sampling.steps_only: {n!r} is not an integer in the step "
                                 f"range [{self.min_steps}, {self.max_steps}]")
        name, steps = self.reference
        if name not in self.samplers:
            raise SpaceError(f"sampling.reference.sampler {name!r} is not one of the space's "
                             f"samplers {list(self.samplers)}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not (
                self.min_steps <= steps <= self.max_steps):
            raise SpaceError(f"sampling.reference.steps must be an integer in the step range "
                             f"[{self.min_steps}, {self.max_steps}], got {steps!r}")
        for sampler in self.samplers:  # every sampler must take the most steps asked of it
            self.sampler_config(sampler, self.max_steps).model_times()

    def sampler_config(self, name: str, steps: int, spacing: str | None = None,
                       searched: Mapping[str, Mapping[int, Sequence[int]]] | None = None) -> Any:
        """The :class:`~ase_search.samplers.SamplerConfig` of one point of the space; ``spacing``
        applies when the sampler offers it (else the sampler's default). At
        :data:`SEARCHED_SPACING`, ``searched`` (``{sampler: {steps: timesteps}}``, the study's
        :func:`~ase_search.record.searched_table`) gives the timesteps of a sampler it holds.

        Raises:
            SpaceError: ``searched`` holds the sampler but not at ``steps``.
        """
        from ase_search.samplers import SAMPLERS, SamplerConfig

        held = (searched or {}).get(name) if spacing == SEARCHED_SPACING else None
        if held is not None:
            if int(steps) not in held:
                raise SpaceError(f"sampling: no searched {name} timesteps at {steps} steps "
                                 f"(the study holds {sorted(held)})")
            return SamplerConfig(name=name, steps=int(steps),
                                 timesteps=tuple(int(t) for t in held[int(steps)]))
        if spacing not in SAMPLERS[name].spacings:
            spacing = None
        try:
            return SamplerConfig(name=name, steps=int(steps), timestep_spacing=spacing)
        except ValueError as err:
            raise SpaceError(f"sampling: {err}") from None

    @property
    def reference_config(self) -> Any:
        """The reference configuration's sampler (at the first spacing, a uniform one)."""
        return self.sampler_config(*self.reference, self.timestep_spacings[0])

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions of ``sampler``, ``steps`` and (several spacings) the spacing."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        out: dict[str, Any] = {
            "sampler": CategoricalDistribution(self.samplers),
            "steps": IntDistribution(self.min_steps, self.max_steps, log=True),
        }
        if len(self.timestep_spacings) > 1:
            out["timestep_spacing"] = CategoricalDistribution(self.timestep_spacings)
        return out

    def from_params(self, params: Mapping[str, Any],
                    searched: Mapping[str, Mapping[int, Sequence[int]]] | None = None) -> Any:
        """The sampler config that Optuna parameters ``sampler``/``steps``/... decode to
        (``searched``: as :meth:`sampler_config` takes it)."""
        missing = [n for n in self.distributions() if n not in params]
        if missing:
            raise SpaceError(f"missing parameter(s) {missing}")
        return self.sampler_config(params["sampler"], params["steps"],
                                   params.get("timestep_spacing", self.timestep_spacings[0]),
                                   searched)

    def to_params(self, name: str, steps: int, spacing: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"sampler": name, "steps": int(steps)}
        if len(self.timestep_spacings) > 1:
            params["timestep_spacing"] = spacing if spacing in self.timestep_spacings else \
                self.timestep_spacings[0]
        return params

    def steps_only_configs(self) -> list[Any]:
        """The steps-only baseline's sampler configs: every sampler x uniform spacing x ladder
        count (the searched timesteps join the ladder from the study's record)."""
        return [self.sampler_config(name, n, spacing)
                for name in self.samplers for spacing in self.timestep_spacings
                if spacing != SEARCHED_SPACING for n in self.steps_only]

    def to_dict(self) -> dict[str, Any]:
        spacings = list(self.timestep_spacings)
        return {"samplers": list(self.samplers),
                "steps": {"min": self.min_steps, "max": self.max_steps},
                "timestep_spacing": spacings[0] if len(spacings) == 1 else spacings,
                "steps_only": list(self.steps_only),
                "reference": {"sampler": self.reference[0], "steps": self.reference[1]}}

    @classmethod
    def from_dict(cls, data: Any) -> SamplingSpace:
        """Build from the parsed ``sampling:`` mapping (messages name the field)."""
        _check_section(data, "sampling", _SAMPLING_KEYS,
                       "sampling must be a mapping with samplers and steps")
        samplers = data.get("samplers")
        if isinstance(samplers, str):
            samplers = [samplers]
        if not isinstance(samplers, list) or not all(isinstance(s, str) for s in samplers):
            raise SpaceError("sampling.samplers must be a list of sampler names, e.g. "
                             "[ddim, dpm-solver]")
        steps = data.get("steps")
        if isinstance(steps, int) and not isinstance(steps, bool):
            steps = {"min": steps, "max": steps}
        if not isinstance(steps, dict) or set(steps) - {"min", "max"} or len(steps) != 2:
            raise SpaceError("sampling.steps must be a mapping {min: N, max: M} (or one number)")
        lo, hi = steps["min"], steps["max"]
        spacing = data.get("timestep_spacing")
        spacings = tuple(spacing) if isinstance(spacing, list) else (spacing,)
        if not all(s is None or isinstance(s, str) for s in spacings):
            raise SpaceError("sampling.timestep_spacing must be leading, linspace or a list")
        ladder = data.get("steps_only")
        if ladder is None and all(isinstance(v, int) and not isinstance(v, bool)
                                  for v in (lo, hi)):
            ladder = [n for n in STEPS_LADDER if lo <= n <= hi] or [lo]
        if not isinstance(ladder, list):
            raise SpaceError("sampling.steps_only must be a list of step counts")
        reference = data.get("reference", {})
        if not isinstance(reference, dict) or set(reference) - {"sampler", "steps"}:
            raise SpaceError("sampling.reference must be a mapping {sampler: NAME, steps: N}")
        first = samplers[0] if samplers else "ddim"
        ref_sampler = reference.get("sampler", "ddim" if "ddim" in samplers else first)
        ref_steps = reference.get("steps", 20)
        if ("steps" not in reference and isinstance(lo, int) and isinstance(hi, int)
                and not isinstance(lo, bool) and not isinstance(hi, bool)):
            ref_steps = min(max(20, lo), hi)
        return cls(samplers=tuple(samplers), min_steps=lo, max_steps=hi,
                   timestep_spacings=spacings, steps_only=tuple(sorted(set(ladder), key=int)
                                                                if all(isinstance(n, int)
                                                                       for n in ladder)
                                                                else ladder),
                   reference=(ref_sampler, ref_steps))


@dataclass(frozen=True)
class ScheduleSpace:
    """A space of exit schedules.

    Args:
        arch: ``"dit"`` or ``"uvit"``.
        depth: exitable depth of the model the space is for.
        intervals: number of intervals ``K``.
        edges: ``K + 1`` fixed edges, or ``None`` to search them on ``edge_grid``.
        edge_grid: resolution of searched edges (``1 / edge_grid`` grid cells).
        min_blocks: per-interval lower bounds (length ``K``).
        max_blocks: per-interval upper bounds (length ``K``).
        monotone: never more blocks at larger t.
        seeds: preset names enqueued as the first trials of a study (at the reference
            configuration's sampler in a joint space).
        sampling: the ``sampling:`` section of a joint space; ``None``: the study's one sampler.
        levers: the ``levers:`` section (block reuse, exit heads); ``None``: skip only.
    """

    arch: str
    depth: int
    intervals: int
    edges: tuple[float, ...] | None
    edge_grid: float = 0.05
    min_blocks: tuple[int, ...] = ()
    max_blocks: tuple[int, ...] = ()
    monotone: bool = True
    seeds: tuple[str, ...] = ()
    description: str = field(default="", compare=False)
    sampling: SamplingSpace | None = None
    levers: LeverSpace | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise SpaceError(f"arch must be one of {list(ARCHS)}, got {self.arch!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise SpaceError(f"depth must be a positive integer, got {self.depth!r}")
        _check_intervals(self.intervals)
        K = self.intervals
        if self.edges is not None:
            try:
                ExitSchedule(self.arch, self.depth, self.edges, (self.depth,) * K)
            except ValueError as err:
                raise SpaceError(f"edges: {err}") from None
        else:
            # Range first: 1 / edge_grid overflows for tiny values and is undefined for 0 or NaN.
            grid = self.edge_grid
            if (isinstance(grid, bool) or not isinstance(grid, (int, float))
                    or not 1 / MAX_INTERVALS <= grid < 1):
                raise SpaceError(f"edge_grid must be a number in [{1 / MAX_INTERVALS:g}, 1) that "
                                 f"divides 1 evenly (e.g. 0.05 = 20 cells), got {grid!r}")
            cells = round(1 / grid)
            if abs(cells * grid - 1) > 1e-9:
                raise SpaceError(f"edge_grid must divide 1 evenly (e.g. 0.05 = 20 cells), got "
                                 f"{grid}")
            if cells < K:
                raise SpaceError(f"edge_grid {self.edge_grid} is too coarse for {K} intervals")
        for name, bound in (("min", self.min_blocks), ("max", self.max_blocks)):
            if len(bound) != K:
                raise SpaceError(f"blocks.{name} needs {K} values (one per interval), got "
                                 f"{len(bound)}")
        for k, (lo, hi) in enumerate(zip(self.min_blocks, self.max_blocks)):
            if not 1 <= lo <= hi <= self.depth:
                raise SpaceError(f"blocks range of interval {k} is [{lo}, {hi}]; it must satisfy "
                                 f"1 <= min <= max <= depth={self.depth}")
        if self.edges is None and (len(set(self.min_blocks)) > 1 or len(set(self.max_blocks)) > 1):
            raise SpaceError("with searched edges the block range must be the same in every "
                             "interval (give blocks.min / blocks.max as single numbers)")
        if self.levers is not None and self.levers.per_interval and self.edges is None:
            raise SpaceError("levers.per_interval needs fixed edges (edges: uniform or a list); "
                             "with searched edges use one mode and period for every interval")
        for name in self.seeds:
            if name not in preset_names(self.arch, peers=True):
                raise SpaceError(f"seeds: unknown preset {name!r}; choose from "
                                 f"{preset_names(self.arch, peers=True)}")
        for seed in self.seed_schedules():
            name = seed.name
            if not self.contains(seed):
                raise SpaceError(f"seeds: preset {name} ({seed.describe()}) is outside the space; "
                                 f"widen the block ranges or edges, or drop it from seeds")

    # ---------------------------------------------------------------- building
    @property
    def cells(self) -> int:
        return round(1 / self.edge_grid)

    def param_names(self) -> list[str]:
        """The schedule's Optuna parameters (with the levers'; a joint space's sampling
        parameters are :class:`SamplingSpace`'s)."""
        K = self.intervals
        cuts = [] if self.edges is not None else [f"cut_{k}" for k in range(1, K)]
        if self.monotone:
            names = cuts + ["blocks_0"] + [f"drop_{k}" for k in range(1, K)]
        else:
            names = cuts + [f"blocks_{k}" for k in range(K)]
        return names + list(self.lever_choices())

    def param_ranges(self) -> dict[str, tuple[int, int]]:
        """Inclusive integer range of every Optuna parameter."""
        K, ranges = self.intervals, {}
        if self.edges is None:
            for k in range(1, K):
                ranges[f"cut_{k}"] = (1, self.cells - 1)
        if self.monotone:
            ranges["blocks_0"] = (self.min_blocks[0], self.max_blocks[0])
            for k in range(1, K):
                ranges[f"drop_{k}"] = (0, self.max_blocks[k - 1] - self.min_blocks[k])
        else:
            for k in range(K):
                ranges[f"blocks_{k}"] = (self.min_blocks[k], self.max_blocks[k])
        return ranges

    def lever_choices(self) -> dict[str, tuple[Any, ...]]:
        """The lever parameters and their values: ``mode``/``period`` (or ``mode_k``/``period_k``
        per interval); a parameter with one possible value is left out."""
        lv = self.levers
        if lv is None or not lv.reuses:
            return {}
        suffixes = [f"_{k}" for k in range(self.intervals)] if lv.per_interval else [""]
        out: dict[str, tuple[Any, ...]] = {}
        for suffix in suffixes:
            if len(lv.modes) > 1:
                out["mode" + suffix] = lv.modes
            if lv.max_period > lv.min_period:
                out["period" + suffix] = tuple(range(lv.min_period, lv.max_period + 1))
            if lv.forecasts and lv.max_order > lv.min_order:
                out["order" + suffix] = tuple(range(lv.min_order, lv.max_order + 1))
        if lv.max_warmup > lv.min_warmup:
            out["warmup"] = tuple(range(lv.min_warmup, lv.max_warmup + 1))
        if len(lv.granularity) > 1:
            out["granularity"] = lv.granularity
        if len(lv.ranges) > 1:  # per interval: Delta-DiT caches other blocks early than late
            out |= {f"range_{k}": lv.ranges for k in range(self.intervals)}
        return out

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions of the parameters (for ``study.ask(fixed_distributions)``): the
        schedule's integers, the levers' and a joint space's sampling parameters."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        out = {n: IntDistribution(lo, hi) for n, (lo, hi) in self.param_ranges().items()}
        for name, values in self.lever_choices().items():
            out[name] = (CategoricalDistribution(values)
                         if name.startswith(("mode", "range")) or name == "granularity"
                         else IntDistribution(values[0], values[-1]))
        return out | (self.sampling.distributions() if self.sampling is not None else {})

    def suggest(self, trial: Any) -> ExitSchedule:
        """Define-by-run: draw the schedule's parameters from an Optuna trial and decode them."""
        params = {n: trial.suggest_int(n, lo, hi) for n, (lo, hi) in self.param_ranges().items()}
        return self.from_params(params)

    def sample(self, rng: random.Random) -> ExitSchedule:
        """A schedule with every parameter drawn uniformly."""
        params: dict[str, Any] = {n: rng.randint(lo, hi)
                                  for n, (lo, hi) in self.param_ranges().items()}
        params |= {n: rng.choice(values) for n, values in self.lever_choices().items()}
        return self.from_params(params)

    def sampler_from_params(self, params: Mapping[str, Any], default: Any,
                            searched: Mapping[str, Mapping[int, Sequence[int]]] | None = None
                            ) -> Any:
        """The :class:`~ase_search.samplers.SamplerConfig` of a trial: decoded from ``params`` in a
        joint space (at the study's ``searched`` timesteps where the trial chose them, see
        :meth:`SamplingSpace.sampler_config`), ``default`` (the study's one sampler) otherwise."""
        return default if self.sampling is None else self.sampling.from_params(params, searched)

    def seed_params(self, schedule: ExitSchedule) -> dict[str, Any]:
        """Parameters of a seed trial: ``schedule`` at the reference configuration's sampler."""
        params: dict[str, Any] = self.to_params(schedule)
        if self.sampling is not None:
            ref = self.sampling.reference_config
            params |= self.sampling.to_params(ref.name, ref.steps, ref.timestep_spacing)
        return params

    # ------------------------------------------------------------ conversions
    def from_params(self, params: Mapping[str, int], name: str = "searched") -> ExitSchedule:
        """Decode Optuna parameters into a valid schedule (adjacent equal counts are merged)."""
        K = self.intervals
        missing = [n for n in self.param_names() if n not in params]
        if missing:
            raise SpaceError(f"missing parameter(s) {missing}")
        if self.edges is not None:
            edges = self.edges
        else:
            cuts = sorted({int(params[f"cut_{k}"]) for k in range(1, K)})
            cuts = [c for c in cuts if 0 < c < self.cells]
            edges = (0.0, *[round(c * self.edge_grid, 10) for c in cuts], 1.0)
        n = len(edges) - 1
        if self.monotone:
            blocks = [min(max(int(params["blocks_0"]), self.min_blocks[0]), self.max_blocks[0])]
            for k in range(1, n):
                b = blocks[-1] - int(params[f"drop_{k}"])
                blocks.append(min(max(b, self.min_blocks[k]), self.max_blocks[k], blocks[-1]))
        else:
            blocks = [min(max(int(params[f"blocks_{k}"]), self.min_blocks[k]), self.max_blocks[k])
                      for k in range(n)]
        modes, periods, orders = self._decode_levers(params, blocks)
        lv = self.levers
        cached = lv is not None and any(m != "skip" for m in modes)
        warmup = int(params.get("warmup", lv.min_warmup)) if cached else 0
        granularity = str(params.get("granularity", lv.granularity[0])) if cached else "blocks"
        ranges = [str(params.get(f"range_{k}", lv.ranges[0]))
                  if cached and modes[k] != "skip" and granularity == "modules" else "rear"
                  for k in range(n)]
        # Adjacent intervals that decode alike are one interval, reuse ones too: the space
        # cannot say "restart the refresh numbering here" (that needs different counts or
        # periods), so D1 reusing blocks on 0.2-wide intervals decodes to itself from 0.1-wide
        # parameters.
        bounds, runs = [edges[0]], []
        for k, run in enumerate(zip(blocks, modes, periods, orders, ranges)):
            if runs and runs[-1] == run:
                bounds[-1] = edges[k + 1]
            else:
                runs.append(run)
                bounds.append(edges[k + 1])
        return ExitSchedule(self.arch, self.depth, tuple(bounds), tuple(r[0] for r in runs),
                            name, modes=tuple(r[1] for r in runs),
                            periods=tuple(r[2] for r in runs), orders=tuple(r[3] for r in runs),
                            warmup=warmup, granularity=granularity,
                            ranges=tuple(r[4] for r in runs)).merged()

    def _decode_levers(self, params: Mapping[str, Any], blocks: list[int]
                       ) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
        """Each interval's mode, period and order (a full-depth interval skips nothing)."""
        lv = self.levers
        if lv is None or not lv.reuses:
            return ("skip",) * len(blocks), (1,) * len(blocks), (0,) * len(blocks)
        modes, periods, orders = [], [], []
        for k, n in enumerate(blocks):
            suffix = f"_{k}" if lv.per_interval else ""
            mode = params.get("mode" + suffix, lv.modes[0])
            if n == self.depth or mode == "skip":
                modes.append("skip")
                periods.append(1)
                orders.append(0)
            else:
                modes.append(mode)
                periods.append(int(params.get("period" + suffix, lv.min_period)))
                orders.append(int(params.get("order" + suffix, lv.min_order))
                              if mode == "forecast" else 0)
        return tuple(modes), tuple(periods), tuple(orders)

    def to_params(self, schedule: ExitSchedule) -> dict[str, int]:
        """Parameters that decode to ``schedule`` (which must lie in the space)."""
        if not self.contains(schedule):
            raise SpaceError(f"schedule {schedule.name} ({schedule.describe()}) is outside the "
                             f"space")
        K = self.intervals
        if self.edges is not None:
            edges = self.edges
            params: dict[str, int] = {}
        else:
            inner = [round(b / self.edge_grid) for b in schedule.merged().boundaries[1:-1]]
            inner += [inner[-1] if inner else 1] * (K - 1 - len(inner))  # repeats merge away
            params = {f"cut_{k}": c for k, c in enumerate(inner, start=1)}
            edges = (0.0, *[round(c * self.edge_grid, 10) for c in sorted(set(inner))], 1.0)
        counts = [schedule.blocks_at(lo) for lo in edges[:-1]]
        params |= self._encode_levers(schedule, edges)
        if self.monotone:
            params["blocks_0"] = counts[0]
            for k in range(1, K):
                params[f"drop_{k}"] = counts[k - 1] - counts[k] if k < len(counts) else 0
        else:
            for k in range(K):
                params[f"blocks_{k}"] = counts[k] if k < len(counts) else counts[-1]
        return params

    def _encode_levers(self, schedule: ExitSchedule, edges: tuple[float, ...]) -> dict[str, Any]:
        """The lever parameters that decode to ``schedule``'s modes and periods."""
        choices = self.lever_choices()
        if not choices:
            return {}
        lv = self.levers
        assert lv is not None
        exiting = [(schedule.modes[k], schedule.periods[k], schedule.orders[k])
                   for k, n in enumerate(schedule.blocks) if n < schedule.depth]
        first = exiting[0] if exiting else (lv.modes[0], lv.min_period, lv.min_order)
        params: dict[str, Any] = {}
        for k, lo in enumerate(edges[:-1] if lv.per_interval else edges[:1]):
            suffix = f"_{k}" if lv.per_interval else ""
            i = schedule.interval_of(lo)
            mode, period, order = ((schedule.modes[i], schedule.periods[i], schedule.orders[i])
                                   if lv.per_interval and schedule.blocks[i] < schedule.depth
                                   else first)
            period = period if mode != "skip" else lv.min_period
            order = order if mode == "forecast" else lv.min_order
            for key, value in (("mode", mode), ("period", period), ("order", order)):
                if key + suffix in choices:
                    params[key + suffix] = value
        if "warmup" in choices:
            params["warmup"] = schedule.warmup if schedule.reuses else lv.min_warmup
        if "granularity" in choices:
            params["granularity"] = (schedule.granularity if schedule.reuses
                                     else lv.granularity[0])
        for k, lo in enumerate(edges[:-1]):
            if f"range_{k}" in choices:
                value = schedule.ranges[schedule.interval_of(lo)]
                params[f"range_{k}"] = value if value in lv.ranges else lv.ranges[0]
        return params

    def _levers_allow(self, schedule: ExitSchedule) -> bool:
        lv = self.levers or LeverSpace()
        exiting = [(schedule.modes[k], schedule.periods[k], schedule.orders[k])
                   for k, n in enumerate(schedule.blocks) if n < schedule.depth]
        for mode, period, order in exiting:
            if mode not in lv.modes or (mode != "skip"
                                        and not lv.min_period <= period <= lv.max_period):
                return False
            if mode == "forecast" and not lv.min_order <= order <= lv.max_order:
                return False
        if not {r for r, m in zip(schedule.ranges, schedule.modes) if m != "skip"} <= set(
                lv.ranges):
            return False
        cached = any(mode != "skip" for mode, _, _ in exiting)
        if cached and not lv.min_warmup <= schedule.warmup <= lv.max_warmup:
            return False
        if not cached and (schedule.warmup or schedule.granularity != "blocks"):
            return False
        if cached and schedule.granularity not in lv.granularity:
            return False
        return lv.per_interval or len(set(exiting)) <= 1

    def contains(self, schedule: ExitSchedule) -> bool:
        """Whether ``schedule`` is expressible in this space."""
        if schedule.arch != self.arch or schedule.depth != self.depth:
            return False
        if not self._levers_allow(schedule):
            return False
        merged = schedule.merged()
        if self.edges is not None:
            grid = {round(e, 9) for e in self.edges}
            if not all(round(b, 9) in grid for b in merged.boundaries):
                return False
            edges = self.edges
        else:
            if len(merged.boundaries) - 1 > self.intervals:
                return False
            if any(abs(b / self.edge_grid - round(b / self.edge_grid)) > 1e-6
                   for b in merged.boundaries):
                return False
            edges = merged.boundaries
        counts = [merged.blocks_at(lo) for lo in edges[:-1]]
        for k, c in enumerate(counts):
            k_range = min(k, self.intervals - 1)
            if not self.min_blocks[k_range] <= c <= self.max_blocks[k_range]:
                return False
        return not self.monotone or all(a >= b for a, b in zip(counts, counts[1:]))

    def seed_schedules(self) -> list[ExitSchedule]:
        """The seed presets; a space that does not allow ``skip`` seeds them reusing blocks at
        its smallest refresh period."""
        presets = [preset(name, self.arch, self.depth) for name in self.seeds]
        lv = self.levers
        if lv is not None and "skip" not in lv.modes:
            # merged first: a preset's equal neighbours (D1 scaled to 12 blocks ends 9, 9) are
            # one reuse interval, as the space decodes them
            # (the peers' presets already cache: they stay as they are)
            if lv.modes[0] == "forecast":
                return [p if p.reuses else
                        p.merged().with_forecast(lv.min_period, lv.min_order, lv.min_warmup,
                                                 name=p.name, granularity=lv.granularity[0])
                        for p in presets]
            return [p if p.reuses or p.is_full else
                    replace(p.merged().with_reuse(lv.min_period, name=p.name),
                            warmup=lv.min_warmup, granularity=lv.granularity[0])
                    for p in presets]
        return presets

    # -------------------------------------------------------------------- I/O
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SPACE_VERSION,
            "arch": self.arch,
            "depth": self.depth,
            "intervals": self.intervals,
            "edges": "search" if self.edges is None else list(self.edges),
            "edge_grid": self.edge_grid,
            "blocks": {"min": list(self.min_blocks), "max": list(self.max_blocks)},
            "monotone": self.monotone,
            "seeds": list(self.seeds),
            "description": self.description,
        } | ({} if self.sampling is None else {"sampling": self.sampling.to_dict()}) \
          | ({} if self.levers is None else {"levers": self.levers.to_dict()})

    @classmethod
    def from_dict(cls, data: Any, *, depth: int | None = None) -> ScheduleSpace:
        """Build from a parsed YAML mapping; ``depth`` overrides (or supplies) the file's depth."""
        if not isinstance(data, dict):
            raise SpaceError("a search space must be a YAML mapping")
        if data.get("version", SPACE_VERSION) != SPACE_VERSION:
            raise SpaceError(f"version: unknown space version {data.get('version')!r}; this "
                             f"ase-search reads version {SPACE_VERSION}")
        unknown = set(data) - _KEYS
        if unknown:
            raise SpaceError(f"unknown field(s): {', '.join(sorted(unknown))}")
        for key in ("arch", "intervals"):
            if key not in data:
                raise SpaceError(f"missing field: {key}")
        depth = depth if depth is not None else data.get("depth")
        if depth is None:
            raise SpaceError("missing field: depth (the model's exitable depth)")
        K = data["intervals"]
        _check_intervals(K)  # before building K + 1 edges
        raw_edges = data.get("edges", "uniform")
        if raw_edges == "uniform":
            edges: tuple[float, ...] | None = tuple(round(k / K, 10) for k in range(K + 1))
        elif raw_edges == "search":
            edges = None
        elif isinstance(raw_edges, list) and all(isinstance(e, (int, float)) for e in raw_edges):
            if len(raw_edges) != K + 1:
                raise SpaceError(f"edges needs intervals + 1 = {K + 1} values, got "
                                 f"{len(raw_edges)}")
            edges = tuple(float(e) for e in raw_edges)
        else:
            raise SpaceError("edges must be 'uniform', 'search' or a list of numbers")
        blocks = data.get("blocks", {})
        if not isinstance(blocks, dict):
            raise SpaceError("blocks must be a mapping with min and max")
        bounds = []
        for key, default in (("min", 1), ("max", depth)):
            value = blocks.get(key, default)
            if value is None:
                value = default
            if isinstance(value, int) and not isinstance(value, bool):
                value = [value] * K
            if not (isinstance(value, list)
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                raise SpaceError(f"blocks.{key} must be an integer or a list of integers")
            bounds.append(tuple(value))
        seeds = data.get("seeds", [])
        if not isinstance(seeds, list) or not all(isinstance(s, str) for s in seeds):
            raise SpaceError("seeds must be a list of preset names")
        monotone = data.get("monotone", True)
        if not isinstance(monotone, bool):
            raise SpaceError("monotone must be true or false")
        edge_grid = data.get("edge_grid", 0.05)
        if isinstance(edge_grid, bool) or not isinstance(edge_grid, (int, float)):
            raise SpaceError(f"edge_grid must be a number, got {edge_grid!r}")
        sampling, levers = data.get("sampling"), data.get("levers")
        return cls(arch=data["arch"], depth=depth, intervals=K, edges=edges,
                   edge_grid=float(edge_grid), min_blocks=bounds[0], max_blocks=bounds[1],
                   monotone=monotone, seeds=tuple(seeds),
                   description=str(data.get("description", "")),
                   sampling=None if sampling is None else SamplingSpace.from_dict(sampling),
                   levers=None if levers is None else LeverSpace.from_dict(levers))


def _check_range(field: str, lo: Any, hi: Any, minimum: int, why: str = "") -> None:
    """``{min: lo, max: hi}`` of ``field`` holds integers >= ``minimum`` with ``lo <= hi``."""
    for key, value in (("min", lo), ("max", hi)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SpaceError(f"{field}.{key} must be an integer >= {minimum}{why}, got {value!r}")
    if lo > hi:
        raise SpaceError(f"{field}: min {lo} is above max {hi}; swap them")


def _check_intervals(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INTERVALS:
        raise SpaceError(f"intervals must be an integer in [1, {MAX_INTERVALS}], got {value!r}")


def load_space(path: str | Path, *, depth: int | None = None) -> ScheduleSpace:
    """Load and validate a search-space YAML file (see ``search_spaces/``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"search space file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpaceError(f"{path} is not valid YAML: {err}".splitlines()[0]) from None
    except RecursionError:
        # the YAML parser recurses once per nesting level; a space is a flat mapping
        raise SpaceError(f"{path} is not a valid search space: nested too deeply") from None
    try:
        return ScheduleSpace.from_dict(data, depth=depth)
    except SpaceError as err:
        raise SpaceError(f"{path}: {err}") from None


def schedules_equivalent(a: ExitSchedule, b: ExitSchedule) -> bool:
    """Same arch, depth, warm-up, and block count, mode, refresh period and forecast order at
    every t (splits of skip intervals do not matter)."""
    ma, mb = a.merged(), b.merged()
    return ((ma.arch, ma.depth, ma.boundaries, ma.blocks, ma.modes, ma.periods, ma.orders,
             ma.warmup, ma.granularity)
            == (mb.arch, mb.depth, mb.boundaries, mb.blocks, mb.modes, mb.periods, mb.orders,
                mb.warmup, mb.granularity))

