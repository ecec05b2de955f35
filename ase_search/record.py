"""What a study stores, and how it is read: one home for the study record.

An ase-search study is an Optuna study whose user attributes record what the search ran:

* ``config``: the :class:`~ase_search.search.SearchConfig` as a dict; ``space``: the schedule
  space; ``weights``: the weights the trials ran (relative to the study's folder, with their
  one-shot key); ``cost_model``: the profiled components.
* :data:`MEASURED_LATENCY`: whole sampling runs timed in one interleaved session.
* :data:`SEARCHED_TIMESTEPS`: the DDIM and DPM-Solver++ timesteps searched for the steps-only
  ladder; :data:`LADDER_TIMESTEPS`: timesteps a user added to it (``confirm --timesteps``).

Configurations measured outside the search are Optuna trials of a companion study in the same
storage (:func:`points_study_name`: ``<study>:points``), each with a ``kind`` and the record it
measured (:func:`point_records`, :func:`store_point`); they are kept out of the searched study,
whose samplers would read a trial without parameters as an empty search space:

* ``kind`` ``"steps-only"``, ``attr`` :data:`STEPS_ONLY_PREFIX` + :func:`config_key`: one
  steps-only baseline point (the full model at one sampler and step count, on the starting
  weights, at the study's seed).
* ``kind`` ``"confirm"``, ``attr`` :data:`CONFIRM_PREFIX` + :func:`config_key`: one
  configuration's FIDs on the confirmation seeds, with the weights it ran (``"start"`` or
  ``"study"``) and their sha256; a later trial of the same ``attr`` holds the seeds of the
  earlier ones too.

Studies made before 2026-12-07 stored each point as a study user attribute of that name; the
first read moves them into the companion study (:func:`point_records`).

A configuration is its sampler plus what the model computes at each call
(:func:`config_identity`), named by :func:`config_key`; the study's own sampler and its reference
configuration's come from :func:`study_sampler` and :func:`reference_sampler`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ase_search.callplan import call_plan
from ase_search.samplers import SamplerConfig
from ase_search.schedule import ExitSchedule
from ase_search.space import ScheduleSpace
from ase_search.storage import StudyError, one_line

__all__ = [
    "CONFIRM_PREFIX",
    "LADDER_TIMESTEPS",
    "POINTS",
    "PRESET",
    "MEASURED_LATENCY",
    "SEARCHED_SOLVERS",
    "SEARCHED_TIMESTEPS",
    "STEPS_ONLY_PREFIX",
    "VERDICT_LOOKS",
    "config_identity",
    "config_key",
    "confirmed_fids",
    "looks_at",
    "points_study_name",
    "schedule_words",
    "screen_study_name",
    "reference_sampler",
    "searched_record",
    "searched_table",
    "store_point",
    "point_records",
    "study_sampler",
    "trial_preset",
]

STEPS_ONLY_PREFIX = "steps_only:"  # study user attribute of one steps-only baseline point
CONFIRM_PREFIX = "confirm:"  # study user attribute of one configuration's confirmation seeds
MEASURED_LATENCY = "measured_latency"  # study user attribute: whole runs timed in one session
# trial user attribute: the preset a seed trial (the search's initial design) evaluates; studies
# made before 2026-12-07 stored it as "seed", which also names the random seed
PRESET = "preset"
# study user attribute: the seed sets ``confirm`` gave a verdict on, in order (each is a look)
VERDICT_LOOKS = "verdict_looks"
# study user attribute: DDIM timesteps searched on the starting weights, per step count, which
# the steps-only ladder measures beside the uniform spacings (``ase_search.timesteps``)
SEARCHED_TIMESTEPS = "searched_timesteps"
SEARCHED_SOLVERS = ("ddim", "dpm-solver")  # the solvers ase_search.timesteps searches
# study user attribute: timesteps a user gave ``confirm`` (``--timesteps FILE``), which the
# steps-only ladder measures too: [{"sampler": name, "timesteps": [...], "file": name}, ...]
LADDER_TIMESTEPS = "ladder_timesteps"
# study user attribute: the companion study that holds the points (set once they live there)
POINTS = "points_study"
_POINT_KINDS = {STEPS_ONLY_PREFIX: "steps-only", CONFIRM_PREFIX: "confirm"}


def searched_record(record: Any) -> dict[str, dict[str, Any]]:
    """A :data:`~ase_search.record.SEARCHED_TIMESTEPS` record per solver (``{}``: none); the
    first studies that had one (2026-12-07) searched DDIM alone, at its top level."""
    if not isinstance(record, dict):
        return {}
    if "timesteps" in record:
        return {"ddim": record}
    return {k: v for k, v in record.items() if k in SEARCHED_SOLVERS and isinstance(v, dict)}


def searched_table(record: Any) -> dict[str, dict[int, tuple[int, ...]]]:
    """A :data:`SEARCHED_TIMESTEPS` record as ``{solver: {steps: timesteps}}``: what a joint
    space's ``searched`` spacing reads (:meth:`~ase_search.space.SamplingSpace.sampler_config`)."""
    return {name: {int(k): tuple(int(t) for t in ts)
                   for k, ts in (entry.get("timesteps") or {}).items()}
            for name, entry in searched_record(record).items()}


def points_study_name(study_name: str) -> str:
    """The name of the companion study that holds a study's points."""
    return f"{study_name}:points"


def screen_study_name(study_name: str) -> str:
    """The name of the companion study that holds a study's screened candidates
    (:mod:`ase_search.search.screen`)."""
    return f"{study_name}:screen"


def _open_points_study(study: Any) -> Any:
    import optuna

    # the storage the study was opened with (Optuna keeps it as ``_storage``, public only as
    # the argument it was opened with): the companion lives beside it, whatever the backend
    name = points_study_name(study.study_name)
    try:  # loading says nothing; create_study(load_if_exists=True) logs a line each time
        return optuna.load_study(study_name=name, storage=study._storage)
    except KeyError:  # none yet
        return optuna.create_study(storage=study._storage, study_name=name,
                                   load_if_exists=True, directions=["minimize", "minimize"])


def _add_point(points: Any, attr: str, record: dict[str, Any]) -> None:
    import math

    import optuna

    kind = next(k for prefix, k in _POINT_KINDS.items() if attr.startswith(prefix))
    values = [float(record.get("fid", math.nan)), float(record.get("latency", math.nan))]
    finite = all(math.isfinite(v) for v in values)
    points.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE if finite else optuna.trial.TrialState.FAIL,
        values=values if finite else None,
        user_attrs={"kind": kind, "attr": attr, "record": record}))


def _points_study(study: Any) -> Any:
    """The study's companion points study. A study made before the points had a study of their
    own has them moved there first (once; the old attributes stay, and nothing reads them
    again), so they stay older than any point stored after."""
    if study.user_attrs.get(POINTS) is not None:
        return _open_points_study(study)
    try:
        points = _open_points_study(study)
        held = {t.user_attrs.get("attr") for t in points.get_trials(deepcopy=False)}
        for name, value in sorted(study.user_attrs.items()):
            if name.startswith(tuple(_POINT_KINDS)) and isinstance(value, dict) and (
                    name not in held):
                _add_point(points, name, value)
        study.set_user_attr(POINTS, points.study_name)
    except Exception as err:  # e.g. a read-only file: SQLAlchemy's or Optuna's error
        raise StudyError(
            f"study {study.study_name!r} keeps its steps-only and confirmation points as "
            f"study attributes (made before 2026-12-07); moving them into the study "
            f"{points_study_name(study.study_name)!r} beside it failed ({one_line(err)}); "
            f"open it where its storage can be written once") from None
    return points


def point_records(study: Any) -> dict[str, dict[str, Any]]:
    """The points measured outside the search: attribute name (``STEPS_ONLY_PREFIX`` or
    ``CONFIRM_PREFIX`` + a :func:`config_key`) -> its latest record."""
    found: dict[str, dict[str, Any]] = {}
    for t in _points_study(study).get_trials(deepcopy=False):  # in stored order: later wins
        attr, record = t.user_attrs.get("attr"), t.user_attrs.get("record")
        if isinstance(attr, str) and isinstance(record, dict):
            found[attr] = record
    return found


def store_point(study: Any, attr: str, record: dict[str, Any]) -> None:
    """Store one point's record as a trial of the study's companion study (``attr``:
    :data:`STEPS_ONLY_PREFIX` or :data:`CONFIRM_PREFIX` + its :func:`config_key`)."""
    if not attr.startswith(tuple(_POINT_KINDS)):
        raise ValueError(f"a point's name starts with {' or '.join(_POINT_KINDS)}, got {attr!r}")
    _add_point(_points_study(study), attr, record)


def looks_at(attrs: dict[str, Any], seeds: Collection[int]) -> int:
    """How many verdicts a judgement on ``seeds`` makes in all: the recorded looks at seed sets
    that share a seed with it (another set than ``seeds``), plus this one."""
    judged = {int(s) for s in seeds}
    earlier = {tuple(sorted(int(s) for s in look)) for look in attrs.get(VERDICT_LOOKS) or ()
               if isinstance(look, list)}
    return 1 + sum(1 for look in earlier if set(look) & judged and set(look) != judged)


def trial_preset(trial: Any) -> str | None:
    """The preset a seed trial evaluates (``None`` for a searched or listed trial)."""
    name = trial.user_attrs.get(PRESET) or trial.user_attrs.get("seed")  # "seed": older studies
    return str(name) if name else None


def study_sampler(config: dict[str, Any]) -> Any:
    """The study's one sampler (``config`` is a :class:`SearchConfig` as a dict)."""
    # .get: configs written before timestep spacings existed have no such key (and hand-made
    # studies no config): SearchConfig's defaults.
    return SamplerConfig(name=config.get("sampler", "ddim"), steps=config.get("steps", 20),
                         timestep_spacing=config.get("timestep_spacing"))


def reference_sampler(config: dict[str, Any], space: dict[str, Any] | None) -> Any:
    """The sampler of the study's reference configuration (the full model there is what
    accelerations and speedups are measured against): a joint space's ``sampling.reference``,
    else the study's one sampler (also when no space is recorded, or an empty one)."""
    sampling = ScheduleSpace.from_dict(space).sampling if space else None
    return study_sampler(config) if sampling is None else sampling.reference_config


def config_key(sampler: dict[str, Any], schedule: dict[str, Any] | None) -> str:
    """A configuration's key: ``"ddim-10/full"``, ``"dpm-solver-7 linspace/12|10|8|8|6"``
    (merged intervals; ``8r2``: 8 blocks reusing the rest's residual, refreshed every 2nd call;
    ``8f1r4``: forecasting it at order 1, refreshed every 4th; ``@0.3,0.7`` names the inner edges
    when the intervals are unequal; ``w2``: two warm-up refreshes).

    Args:
        sampler: a :class:`~ase_search.samplers.SamplerConfig` as a dict.
        schedule: an :class:`~ase_search.schedule.ExitSchedule` as a dict (``None``: the full
            model).
    """
    name = SamplerConfig.from_dict(sampler).describe()
    if schedule is None:
        return f"{name}/full"
    s = ExitSchedule.from_dict(schedule).merged()
    if all(n == s.depth for n in s.blocks):
        return f"{name}/full"
    widths = [hi - lo for lo, hi in zip(s.boundaries, s.boundaries[1:])]
    uniform = max(widths) - min(widths) < 1e-9  # equal intervals: the counts say it all
    edges = "" if uniform else "@" + ",".join(f"{b:g}" for b in s.boundaries[1:-1])
    counts, cache = schedule_words(s)
    return f"{name}/{counts}{edges}{cache}"


_RANGE_WORDS = {"rear": "", "front": "front", "alternate": "alt"}


def schedule_words(s: ExitSchedule) -> tuple[str, str]:
    """The counts of a schedule's intervals (``8r2``: reuse every 2nd call; ``8f1r4``: forecast
    at order 1, refreshed every 4th; ``6r2front``/``6r2alt``: caching the front or alternate
    blocks) and its cache's settings (``w2``: two warm-up refreshes; ``-modules``: per module),
    as configuration keys and tables write them."""
    counts = "|".join((f"{n}r{r}" if mode == "reuse" else f"{n}f{p}r{r}" if mode == "forecast"
                       else str(n)) + _RANGE_WORDS[g]
                      for n, mode, r, p, g in zip(s.blocks, s.modes, s.periods, s.orders,
                                                  s.ranges))
    warmup = f"w{s.warmup}" if s.warmup and s.reuses else ""
    modules = "-modules" if s.granularity == "modules" and s.reuses else ""
    return counts, warmup + modules


def config_identity(sampler: dict[str, Any], schedule: dict[str, Any] | None) -> tuple:
    """What decides a configuration's samples: the sampler and what the model computes at each
    of its calls (:func:`~ase_search.callplan.call_plan`): the full network (every block run, a
    reuse refresh included), ``k`` blocks, or ``k`` blocks plus the residual the last refresh
    kept. Two schedules that differ only where the sampler never calls the model
    (DPM-Solver-4's calls never reach t < 0.25), or a reuse schedule whose every call refreshes
    (one call per interval) and the full model, are one configuration: with common random
    numbers they give the same samples and cost."""
    config = SamplerConfig.from_dict(sampler)
    if schedule is None:
        return (config.describe(), None)
    s = ExitSchedule.from_dict(schedule)
    calls = tuple("full" if c.refresh or c.count == s.depth else
                  ((c.count, True, c.order) if c.order else (c.count, c.reuse))
                  + ((c.block_range,) if c.block_range != "rear" else ())
                  for c in call_plan(s, config))
    kept = s.granularity if any(c != "full" and c[1] for c in calls) else "blocks"
    return (config.describe(), s.arch, s.depth, calls) + ((kept,) if kept != "blocks" else ())


_WEIGHTS = {"steps-only": "start", "exit": "study"}  # what each kind of point runs


def confirmed_fids(points: dict[str, Any], key: str, kind: str, *, selection: int,
                   seeds: Collection[int] | None = None
                   ) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """The fresh-seed FIDs a study's ``points`` (:func:`point_records`) hold for configuration
    ``key`` (a ``"steps-only"`` or an ``"exit"`` one), as ``(seeds, fids)``; ``None`` when there
    are none.

    A record counts only for the weights it ran: the starting ones for the full model, the
    study's for an exit (a record without a label predates labels, when confirmation ran the
    study's weights alone: never the full model's starting weights). The seed the search
    selected on (``selection``, the study's seed) is dropped: it is never judged, nor averaged
    into a confirmed FID. ``seeds`` keeps only those seeds (an independent replication judges a
    later set alone).
    """
    record = points.get(CONFIRM_PREFIX + key)
    if not (isinstance(record, dict) and record.get("weights", "study") == _WEIGHTS[kind]
            and record.get("fids") and len(record["fids"]) == len(record.get("seeds", ()))):
        return None
    held = [(int(s), float(f)) for s, f in zip(record["seeds"], record["fids"])
            if int(s) != selection and (seeds is None or int(s) in seeds)]
    if not held:
        return None
    return tuple(s for s, _ in held), tuple(f for _, f in held)
