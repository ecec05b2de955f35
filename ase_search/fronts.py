"""The three fronts of a study and its verdict: do exits beat simply taking fewer steps?

A study holds two kinds of measured configurations (sampler x step count x exit schedule):

* its **trials** (the Optuna search; in a joint space each has its own sampler and step count);
* its **steps-only baseline**: the full model at every sampler of the space and a ladder of step
  counts, measured once per study apart from the trials, on the starting checkpoint (never
  fine-tuned: what a user who does not exit samples with; study user attribute
  ``steps_only:<key>``, see :mod:`ase_search.search.points`). It stands for the full model in
  the fronts, in place of full-schedule trials, which ran the study's fine-tuned weights.

From them :func:`study_fronts` builds three Pareto fronts in (FID, latency): **steps-only**,
**exits at the reference sampler** (the front a fixed-sampler search gives) and **joint** (every
configuration). :func:`study_verdict` judges the joint front against the steps-only one with
:mod:`ase_search.verdict`: the hypervolume of each, every joint point's speedup at matched FID, and
the headline (the largest speedup within ``window`` x the reference configuration's FID). When
``ase-search confirm`` has re-measured the configurations over several seeds (``confirm:<key>``),
the verdict is made on those paired measurements and carries their spread.

Latency is the cost model's prediction of a whole sampling run (the sum of its calls' costs);
tables give it in seconds per sample and as speedup over the reference configuration (the full
model at the reference sampler, default DDIM-20).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase_search.verdict import (
    Headline,
    HypervolumeComparison,
    PairedPoint,
    PairedSpeedup,
    Point,
    SeedRatio,
    compare_hypervolumes,
    headline,
    non_dominated,
    paired_headline,
    paired_speedup,
    speedup_at_matched_fid,
)

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = [
    "CONFIRM_PREFIX",
    "Beyond",
    "STEPS_ONLY_PREFIX",
    "WINDOW",
    "Fronts",
    "StudyPoint",
    "StudyVerdict",
    "config_identity",
    "export_point",
    "select_point",
    "config_key",
    "fronts_table",
    "study_fronts",
    "study_points",
    "study_verdict",
    "verdict_lines",
]

STEPS_ONLY_PREFIX = "steps_only:"  # study user attribute of one steps-only baseline point
CONFIRM_PREFIX = "confirm:"  # study user attribute of one configuration's confirmation seeds
WINDOW = 1.25  # the headline counts points with FID <= WINDOW x the reference configuration's


def config_key(sampler: dict[str, Any], schedule: dict[str, Any] | None) -> str:
    """A configuration's key: ``"ddim-10/full"``, ``"dpm-solver-7 linspace/12|10|8|8|6"``
    (merged intervals; ``8r2``: 8 blocks reusing the rest's residual, refreshed every 2nd call;
    ``@0.3,0.7`` names the inner edges when the intervals are unequal).

    Args:
        sampler: a :class:`~ase_search.samplers.SamplerConfig` as a dict.
        schedule: an :class:`~ase_search.schedule.ExitSchedule` as a dict (``None``: the full
            model).
    """
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule

    name = SamplerConfig.from_dict(sampler).describe()
    if schedule is None:
        return f"{name}/full"
    s = ExitSchedule.from_dict(schedule).merged()
    if all(n == s.depth for n in s.blocks):
        return f"{name}/full"
    widths = [hi - lo for lo, hi in zip(s.boundaries, s.boundaries[1:])]
    uniform = max(widths) - min(widths) < 1e-9  # equal intervals: the counts say it all
    edges = "" if uniform else "@" + ",".join(f"{b:g}" for b in s.boundaries[1:-1])
    counts = "|".join(f"{n}r{r}" if mode == "reuse" else str(n)
                      for n, mode, r in zip(s.blocks, s.modes, s.periods))
    return f"{name}/{counts}{edges}"


def config_identity(sampler: dict[str, Any], schedule: dict[str, Any] | None) -> tuple:
    """What decides a configuration's samples: the sampler and what the model computes at each
    of its calls (:func:`~ase_search.measure.call_plan`): the full network (every block run, a
    reuse refresh included), ``k`` blocks, or ``k`` blocks plus the residual the last refresh
    kept. Two schedules that differ only where the sampler never calls the model
    (DPM-Solver-4's calls never reach t < 0.25), or a reuse schedule whose every call refreshes
    (one call per interval) and the full model, are one configuration: with common random
    numbers they give the same samples and cost."""
    from ase_search.measure import call_plan
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule

    config = SamplerConfig.from_dict(sampler)
    if schedule is None:
        return (config.describe(), None)
    s = ExitSchedule.from_dict(schedule)
    calls = tuple("full" if c.refresh or c.count == s.depth else (c.count, c.reuse)
                  for c in call_plan(s, config))
    return (config.describe(), s.arch, s.depth, calls)


@dataclass(frozen=True)
class StudyPoint:
    """One measured configuration of a study.

    Attributes:
        key: :func:`config_key` of its sampler and schedule.
        kind: ``"steps-only"`` (the full model; a baseline point or a trial of the full model)
            or ``"exit"`` (a trial with an exit schedule).
        label: for tables: ``"ddim-10, full"``, ``"ddim-7, D1"``, ``"dpm-solver-7, trial 22"``.
        sampler: the sampler as a dict.
        fid: FID at the study's seed (or the mean over confirmation seeds, see ``fids``).
        latency: the cost model's seconds for one batch of the profiled size.
        trial: the trial number, ``None`` for a baseline point.
        fids: FID per confirmation seed (``ase-search confirm``), ``None`` when not confirmed.
        seeds: those seeds.
    """

    key: str
    kind: str
    label: str
    sampler: dict[str, Any]
    fid: float
    latency: float
    trial: int | None = None
    fids: tuple[float, ...] | None = None
    seeds: tuple[int, ...] | None = None

    def point(self, unit: float = 1.0) -> Point:
        """As a :class:`~ase_search.verdict.Point`, latency divided by ``unit``."""
        return Point(self.label, self.fid, self.latency / unit)

    def paired(self, unit: float = 1.0) -> PairedPoint:
        """As a :class:`~ase_search.verdict.PairedPoint` (confirmed points only)."""
        if self.fids is None:
            raise ValueError(f"{self.label} has no confirmation seeds")
        return PairedPoint(self.label, self.fids, self.latency / unit)


def _sampler_dict(trial: Any, study_config: dict[str, Any]) -> dict[str, Any]:
    recorded = trial.user_attrs.get("sampler")
    if isinstance(recorded, dict):
        return recorded
    from ase_search.search.trial import study_sampler

    return study_sampler(study_config).to_dict()  # trials before joint spaces: the one sampler


def study_points(study: optuna.Study) -> list[StudyPoint]:
    """Every measured configuration of ``study``: its steps-only baseline and its COMPLETE
    trials (told copies left out, and a configuration measured twice, or under two schedules
    that run the same blocks at every call (:func:`config_identity`), once), with confirmation
    seeds where recorded."""
    from ase_search.pareto import complete_trials, schedule_string
    from ase_search.samplers import SamplerConfig

    attrs = study.user_attrs
    config = attrs.get("config", {})
    confirmed = {k[len(CONFIRM_PREFIX):]: v for k, v in attrs.items()
                 if k.startswith(CONFIRM_PREFIX) and isinstance(v, dict)}
    points: dict[str, StudyPoint] = {}
    identities: set[tuple] = set()

    def add(key: str, kind: str, label: str, sampler: dict[str, Any], fid: float,
            latency: float, trial: int | None, schedule: dict[str, Any] | None) -> None:
        if key in points or not (math.isfinite(fid) and math.isfinite(latency) and latency > 0):
            return
        identity = config_identity(sampler, schedule)
        if identity in identities:  # the same configuration under another schedule: one point
            return
        identities.add(identity)
        c = confirmed.get(key)
        fids = tuple(float(f) for f in c["fids"]) if c and c.get("fids") else None
        points[key] = StudyPoint(key, kind, label, sampler,
                                 float(sum(fids) / len(fids)) if fids else fid, latency, trial,
                                 fids, tuple(c["seeds"]) if fids else None)

    for name, value in sorted(attrs.items()):
        if name.startswith(STEPS_ONLY_PREFIX) and isinstance(value, dict):
            key = name[len(STEPS_ONLY_PREFIX):]
            sampler = value["sampler"]
            add(key, "steps-only", key.replace("/", ", "), sampler, float(value["fid"]),
                float(value["latency"]), None, value.get("schedule"))
    for t in complete_trials(study):
        if "duplicate_of" in t.user_attrs:
            continue
        sampler = _sampler_dict(t, config)
        key = config_key(sampler, t.user_attrs.get("schedule"))
        full = key.endswith("/full")
        what = "full" if full else (t.user_attrs.get("seed") or f"trial {t.number}")
        label = f"{SamplerConfig.from_dict(sampler).describe()}, {what}"
        if not full and t.user_attrs.get("seed") is None:
            label += f" ({schedule_string(t)})"
        add(key, "steps-only" if full else "exit", label, sampler, float(t.values[0]),
            float(t.values[1]), t.number, t.user_attrs.get("schedule"))
    return list(points.values())


@dataclass(frozen=True)
class Fronts:
    """The three fronts of a study (each sorted by latency) and its reference configuration.

    Attributes:
        points: every measured configuration.
        steps_only: the front of the full model's configurations.
        exits_at_reference: the front of the configurations at the reference sampler and step
            count (a fixed-sampler search's front).
        joint: the front of every configuration.
        reference: the full model at the reference configuration, ``None`` when not measured.
        reference_sampler: the reference configuration's sampler as a dict.
        reference_latency: the cost model's latency of the full model at the reference
            configuration (the unit of relative latencies and speedups).
        batch_size: the batch the cost model was profiled at (latency / batch_size is seconds
            per sample).
    """

    points: list[StudyPoint]
    steps_only: list[StudyPoint]
    exits_at_reference: list[StudyPoint]
    joint: list[StudyPoint]
    reference: StudyPoint | None
    reference_sampler: dict[str, Any]
    reference_latency: float
    batch_size: int


def _front(points: Sequence[StudyPoint]) -> list[StudyPoint]:
    by_key = {p.key: p for p in points}  # keys are unique; labels need not be
    return [by_key[q.label] for q in non_dominated([Point(p.key, p.fid, p.latency)
                                                    for p in points])]


def study_fronts(study: optuna.Study) -> Fronts:
    """The steps-only, exits-at-reference and joint fronts of ``study``."""
    from ase_search.search.trial import reference_sampler

    attrs = study.user_attrs
    ref_sampler = reference_sampler(attrs.get("config", {}), attrs.get("space")).to_dict()
    points = study_points(study)
    steps_only = [p for p in points if p.kind == "steps-only"]
    at_reference = [p for p in points if p.sampler == ref_sampler]
    reference = next((p for p in steps_only if p.sampler == ref_sampler), None)
    cost = attrs.get("cost_model", {})
    unit = (reference.latency if reference is not None
            else float(attrs.get("full_latency") or math.nan))
    return Fronts(points, _front(steps_only), _front(at_reference), _front(points), reference,
                  ref_sampler, unit, int(cost.get("batch_size", 1)))


@dataclass(frozen=True)
class Beyond:
    """A joint front point in the quality window whose FID no steps-only configuration reaches:
    its speedup at matched FID is at least ``lower_bound``, the latency of the steps-only
    configuration of lowest FID (``best``) over its own.

    Attributes:
        point: the configuration.
        best: the steps-only configuration of lowest FID.
        lower_bound: ``best.latency / point.latency``.
        ratio: per seed, ``FID_point / FID_best`` (confirmed points only, else ``None``).
    """

    point: StudyPoint
    best: StudyPoint
    lower_bound: float
    ratio: SeedRatio | None = None


@dataclass(frozen=True)
class StudyVerdict:
    """Does the joint front beat fewer steps? (see :mod:`ase_search.verdict`)

    Latencies are relative to the reference configuration. When every joint front point and the
    steps-only points carry the same confirmation seeds, ``paired`` holds each joint point's
    paired speedup and ``paired_headline`` is made on the seeds' mean FIDs; otherwise only the
    study's one seed is judged.

    Attributes:
        fronts: the study's fronts.
        window: the headline's quality window (a factor on the reference FID).
        headline: the largest speedup at matched FID within the window, ``None`` when no point
            qualifies (no reference FID, or nothing in the window).
        paired_headline: the same on paired seeds, when confirmed.
        speedups: each joint front point's speedup at matched FID (``None``: no steps-only point
            is as good), by key.
        paired: the paired speedups, by key, when confirmed.
        hypervolume: the joint front's against the steps-only front's, up to (window x reference
            FID, 1.0): inside the quality window and faster than the reference.
        beyond: joint points in the window better in FID than every steps-only configuration
            (the headline cannot match them; their speedup has a lower bound).
    """

    fronts: Fronts
    window: float
    headline: Headline | None
    paired_headline: PairedSpeedup | None
    speedups: dict[str, float | None]
    paired: dict[str, PairedSpeedup | None] = field(default_factory=dict)
    hypervolume: HypervolumeComparison | None = None
    beyond: tuple[Beyond, ...] = ()

    @property
    def confirmed(self) -> bool:
        return bool(self.paired)


def _confirmed_sets(fronts: Fronts) -> tuple[list[StudyPoint], list[StudyPoint]] | None:
    """The joint front and the steps-only points to judge it against on confirmation seeds;
    ``None`` unless every joint front point and a steps-only point share the same seeds."""
    seeds = {p.seeds for p in fronts.joint}
    if None in seeds or len(seeds) != 1:
        return None
    (common,) = seeds
    baseline = [p for p in fronts.points if p.kind == "steps-only" and p.seeds == common]
    return (fronts.joint, baseline) if baseline else None


def study_verdict(study: optuna.Study, window: float = WINDOW) -> StudyVerdict:
    """Judge ``study``'s joint front against its steps-only configurations."""
    fronts = study_fronts(study)
    unit = fronts.reference_latency
    steps_only = [p.point(unit) for p in fronts.points if p.kind == "steps-only"]
    speedups = {p.key: speedup_at_matched_fid(p.point(unit), steps_only) for p in fronts.joint}
    ref = fronts.reference
    top = hv = None
    if ref is not None:
        top = headline([p.point(unit) for p in fronts.joint], steps_only, ref.fid, window)
        hv = compare_hypervolumes([p.point(unit) for p in fronts.joint],
                                  [p.point(unit) for p in fronts.steps_only],
                                  (window * ref.fid, 1.0))
    paired: dict[str, PairedSpeedup | None] = {}
    top_paired = None
    sets = _confirmed_sets(fronts)
    if sets is not None and ref is not None:
        joint, baseline = sets
        base = [q.paired(unit) for q in baseline]
        paired = {p.key: paired_speedup(p.paired(unit), base) for p in joint}
        if ref.fids:
            top_paired = paired_headline([p.paired(unit) for p in joint], base, ref.fid, window)
    beyond: list[Beyond] = []
    steps_pts = [q for q in fronts.points if q.kind == "steps-only"]
    if ref is not None and steps_pts:
        best = min(steps_pts, key=lambda q: (q.fid, q.latency))
        for p in fronts.joint:
            if p.kind == "exit" and p.fid < best.fid and p.fid <= window * ref.fid:
                ratio = (SeedRatio.of(p.fids, best.fids) if p.fids and best.fids
                         and len(p.fids) == len(best.fids) else None)
                beyond.append(Beyond(p, best, best.latency / p.latency, ratio))
    return StudyVerdict(fronts, window, top, top_paired, speedups, paired, hv,
                        tuple(sorted(beyond, key=lambda b: -b.lower_bound)))


def fronts_table(verdict: StudyVerdict) -> pd.DataFrame:
    """Every configuration of the study with its fronts and speedup at matched FID, sorted by
    latency.

    Columns: ``configuration``, ``kind``, ``trial``, ``fid`` (mean over confirmation seeds when
    confirmed), ``fid_sd``, ``ms_per_sample``, ``speedup`` (over the reference configuration),
    ``steps_only_front``, ``exits_front`` (the front at the reference sampler), ``joint_front``,
    ``matched_speedup`` (exit configurations: the speedup at matched FID; paired when confirmed).
    """
    import statistics

    import pandas as pd

    f = verdict.fronts
    fronts = {name: {p.key for p in pts} for name, pts in
              (("steps_only_front", f.steps_only), ("exits_front", f.exits_at_reference),
               ("joint_front", f.joint))}
    rows = []
    for p in sorted(f.points, key=lambda p: (p.latency, p.fid, p.label)):
        if p.kind != "exit":
            matched = None
        elif p.key in verdict.paired:  # confirmed: matched on the seeds' mean FIDs
            paired = verdict.paired[p.key]
            matched = None if paired is None else paired.speedup
        else:
            matched = _matched(verdict, p)
        rows.append({
            "configuration": p.label,
            "kind": p.kind,
            "trial": p.trial,
            "fid": p.fid,
            "fid_sd": statistics.stdev(p.fids) if p.fids and len(p.fids) > 1 else None,
            "ms_per_sample": p.latency / f.batch_size * 1e3,
            "speedup": f.reference_latency / p.latency,
            **{name: p.key in keys for name, keys in fronts.items()},
            "matched_speedup": matched,
        })
    return pd.DataFrame(rows, columns=["configuration", "kind", "trial", "fid", "fid_sd",
                                       "ms_per_sample", "speedup", "steps_only_front",
                                       "exits_front", "joint_front", "matched_speedup"])


def _matched(verdict: StudyVerdict, p: StudyPoint) -> float | None:
    unit = verdict.fronts.reference_latency
    return speedup_at_matched_fid(p.point(unit), [q.point(unit) for q in verdict.fronts.points
                                                  if q.kind == "steps-only"])


def verdict_lines(verdict: StudyVerdict) -> list[str]:
    """The verdict in words: the reference, the headline, the hypervolumes, what they mean."""
    import statistics

    from ase_search.samplers import SamplerConfig

    f = verdict.fronts
    ref = f.reference
    ref_name = SamplerConfig.from_dict(f.reference_sampler).describe()
    if ref is None:
        return [f"no verdict yet: the full model at the reference configuration ({ref_name}) is "
                f"not measured; run the search (its steps-only baseline measures it)"]
    spread = (f" ± {statistics.stdev(ref.fids):.2f} over {len(ref.fids)} seeds"
              if ref.fids and len(ref.fids) > 1 else "")
    lines = [f"reference: full model (starting weights), {ref_name}: FID {ref.fid:.2f}{spread}, "
             f"{ref.latency / f.batch_size * 1e3:.2f} ms per sample (predicted)"]
    top, paired = verdict.headline, verdict.paired_headline
    window = f"within FID <= {verdict.window:g} x the reference ({verdict.window * ref.fid:.2f})"
    if paired is not None:
        lines.append(
            f"headline ({len(paired.point.fids)} seeds, paired): {paired.speedup:.2f}x at matched "
            f"FID {window}, by {paired.point.label} (FID {paired.point.fid:.2f}) against "
            f"{paired.matched.label} (FID {paired.matched.fid:.2f}); FID ratio per seed "
            f"{paired.ratio.text()}")
    elif top is not None:
        lines.append(
            f"headline (1 seed; `ase-search confirm` re-measures over 5): {top.speedup:.2f}x at "
            f"matched FID {window}, by {top.point.label} (FID {top.point.fid:.2f}) against "
            f"{top.matched.label} (FID {top.matched.fid:.2f})")
    else:
        lines.append(f"headline: no configuration {window} has a steps-only match")
    for b in verdict.beyond:
        ratio = "" if b.ratio is None else f"; FID ratio per seed {b.ratio.text()}"
        lines.append(
            f"beyond fewer steps: {b.point.label} reaches FID {b.point.fid:.2f}, below every "
            f"steps-only configuration's (the best: {b.best.label}, {b.best.fid:.2f}), at "
            f"{b.best.latency / b.point.latency:.2f}x its speed: a speedup at matched FID of at "
            f"least {b.lower_bound:.2f}x{ratio}")
    hv = verdict.hypervolume
    if hv is not None:
        lines.append(f"hypervolume up to (FID {hv.reference_point[0]:.2f}, the reference's "
                     f"latency): joint front {hv.front:.3f}, steps-only front {hv.baseline:.3f} "
                     f"(ratio {hv.ratio:.3f})")
    best = paired.speedup if paired is not None else top.speedup if top is not None else None
    if verdict.beyond:
        best = max(best or 0.0, verdict.beyond[0].lower_bound)
    exits = [p for p in f.joint if p.kind == "exit"]
    if not exits:
        lines.append("exits do not help on this model: every point of the joint front is the "
                     "full model at some sampler and step count; take the fastest of those that "
                     "meets your FID")
    elif best is not None and best <= 1.0:
        lines.append("exits do not help within the quality window: fewer steps are at least as "
                     "fast at every quality there; exits are on the joint front only at worse "
                     "FID")
    elif best is not None:
        bound = "at least " if verdict.beyond and best == verdict.beyond[0].lower_bound else ""
        lines.append(f"exits help: {bound}{best:.2f}x faster than fewer steps at matched FID")
    return lines


def select_point(study: optuna.Study, *, max_fid: float | None = None,
                 min_acceleration: float | None = None) -> StudyPoint:
    """The joint front's configuration for a quality or speed target (FIDs are the confirmation
    seeds' means where confirmed): the fastest with FID <= ``max_fid``, or the lowest-FID one at
    least ``min_acceleration`` faster than the reference configuration (``0.3``: 30% less
    latency). It may be the full model at fewer steps: that is the answer when it is best.

    Raises:
        ValueError: not exactly one target, or no configuration meets it (the message gives the
            best available).
    """
    if (max_fid is None) == (min_acceleration is None):
        raise ValueError("choose by exactly one of max_fid / min_acceleration")
    fronts = study_fronts(study)
    if not fronts.joint:
        raise ValueError(f"study {study.study_name!r} has no measured configuration yet")
    unit = fronts.reference_latency
    if max_fid is not None:
        if not math.isfinite(max_fid):
            raise ValueError(f"max_fid must be a finite number, got {max_fid}")
        ok = [p for p in fronts.joint if p.fid <= max_fid]
        if not ok:
            best = min(fronts.joint, key=lambda p: p.fid)
            raise ValueError(f"no configuration reaches FID <= {max_fid:g}; the lowest FID is "
                             f"{best.fid:.4g} ({best.label}); raise max_fid")
        return min(ok, key=lambda p: (p.latency, p.fid, p.label))
    assert min_acceleration is not None
    if not math.isfinite(min_acceleration) or min_acceleration > 1:
        raise ValueError(f"min_acceleration must be a fraction <= 1 (0.3 = 30% faster), got "
                         f"{min_acceleration}")
    ok = [p for p in fronts.joint if 1.0 - p.latency / unit >= min_acceleration]
    if not ok:
        best = min(fronts.joint, key=lambda p: p.latency)
        raise ValueError(f"no configuration reaches acceleration >= {min_acceleration:.2%}; the "
                         f"highest is {1 - best.latency / unit:.2%} ({best.label}); lower "
                         f"min_acceleration")
    return min(ok, key=lambda p: (p.fid, p.latency, p.label))


def export_point(study: optuna.Study, point: StudyPoint, path: str | Path) -> Any:
    """Write ``point``'s schedule as JSON with its provenance, sampler and confirmation: a
    trial's through :func:`ase_search.pareto.export_schedule`, a steps-only configuration as the
    full schedule."""
    import datetime as dt

    from ase_search import __version__
    from ase_search.pareto import StudyError, export_schedule, storage_location
    from ase_search.schedule import preset

    if point.trial is not None:
        return export_schedule(study, point.trial, path)
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise StudyError(f"schedules are exported as JSON; got {path.name!r}, use a .json path")
    space = study.user_attrs.get("space") or {}
    full = preset("full", space.get("arch", study.user_attrs.get("arch", "dit")),
                  space.get("depth", 12))
    fronts = study_fronts(study)
    metadata = {
        "source": "ase-search export", "kind": "steps-only",
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "study": study.study_name, "storage": storage_location(study),
        "sampler": point.sampler["name"], "steps": point.sampler["steps"],
        "timestep_spacing": point.sampler.get("timestep_spacing"),
        "fid": point.fid, "latency": point.latency,
        "acceleration": 1.0 - point.latency / fronts.reference_latency,
        "confirmed": None if point.fids is None else {"seeds": list(point.seeds or ()),
                                                      "fids": list(point.fids),
                                                      "fid_mean": point.fid},
        "ase_search_version": __version__,
    }
    out = replace(full, name=f"{study.study_name}-{point.key.replace('/', '-')}",
                  metadata=metadata)
    out.to_json(path)
    return out
