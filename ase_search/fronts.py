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
configuration). :func:`study_verdict` judges the levers' configurations against the steps-only
ladder with the one rule of :mod:`ase_search.verdict`, on the fresh seeds ``ase-search confirm``
measured (``confirm:<key>``: every steps-only configuration and the levers' front points, on the
seeds after the study's own, which the search selected on). Before that there is no verdict, only
the fronts.

Latency is the cost model's prediction of a whole sampling run (the sum of its calls' costs),
with that model's validated error for the configuration's levers; tables give it in seconds per
sample and as speedup over the reference configuration (the full model at the reference sampler,
default DDIM-20).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase_search.record import (
    LADDER_TIMESTEPS,
    MEASURED_LATENCY,
    STEPS_ONLY_PREFIX,
    config_identity,
    config_key,
    confirmed_fids,
    looks_at,
    point_records,
    reference_sampler,
    study_sampler,
    trial_preset,
)
from ase_search.verdict import (
    WINDOW,
    Configuration,
    HypervolumeComparison,
    Judgement,
    Latency,
    Point,
    Verdict,
    compare_hypervolumes,
    judge,
    non_dominated,
    predicted_error,
)

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = [
    "WINDOW",
    "Fronts",
    "StudyPoint",
    "StudyVerdict",
    "confirmation_seeds",
    "export_point",
    "fronts_table",
    "lever_word",
    "select_point",
    "study_fronts",
    "study_points",
    "study_verdict",
    "verdict_lines",
    "verdict_record",
]



def _levers(sampler: dict[str, Any], schedule: dict[str, Any] | None) -> list[str]:
    """The levers a configuration uses (keys of :data:`ase_search.verdict.LATENCY_ERROR`)."""
    from ase_search.schedule import ExitSchedule

    levers = ["full"]
    if str(sampler.get("name", "")).startswith("dpm"):
        levers.append("solver")
    if schedule is not None:
        s = ExitSchedule.from_dict(schedule)
        for mode in ("reuse", "forecast"):
            if mode in s.modes:
                levers.append(mode)
        if any(n < s.depth and m == "skip" for n, m in zip(s.blocks, s.modes)):
            levers.append("skip")
    return levers


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
        latency_error: the cost model's relative error for its levers
            (:func:`ase_search.verdict.predicted_error`).
        levers: the levers it uses (keys of :data:`ase_search.verdict.LATENCY_ERROR`).
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
    latency_error: float = 0.0
    levers: tuple[str, ...] = ("full",)

    def point(self, unit: float = 1.0) -> Point:
        """As a :class:`~ase_search.verdict.Point`, latency divided by ``unit``."""
        return Point(self.label, self.fid, self.latency / unit)


def _sampler_dict(trial: Any, study_config: dict[str, Any]) -> dict[str, Any]:
    recorded = trial.user_attrs.get("sampler")
    if isinstance(recorded, dict):
        return recorded
    return study_sampler(study_config).to_dict()  # trials before joint spaces: the one sampler


def study_points(study: optuna.Study, seeds: Collection[int] | None = None
                 ) -> list[StudyPoint]:
    """Every measured configuration of ``study``: its steps-only baseline and its COMPLETE
    trials (told copies left out, and a configuration measured twice, or under two schedules
    that run the same blocks at every call (:func:`config_identity`), once), with confirmation
    seeds where recorded (only ``seeds`` among them when given)."""
    from ase_search.pareto import complete_trials, schedule_string
    from ase_search.samplers import SamplerConfig

    config = study.user_attrs.get("config", {})
    selection = int(config.get("seed", 0))
    records = point_records(study)
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
        levers = _levers(sampler, schedule)
        held = confirmed_fids(records, key, kind, selection=selection, seeds=seeds)
        held_seeds, fids = held if held is not None else (None, None)
        points[key] = StudyPoint(key, kind, label, sampler,
                                 float(sum(fids) / len(fids)) if fids else fid, latency, trial,
                                 fids, held_seeds, predicted_error(levers), tuple(levers))

    brought = {(e["sampler"], tuple(e["timesteps"])): e.get("file", "a file")
               for e in study.user_attrs.get(LADDER_TIMESTEPS) or ()}
    for name, value in sorted(records.items()):
        if name.startswith(STEPS_ONLY_PREFIX):
            key = name[len(STEPS_ONLY_PREFIX):]
            sampler = value["sampler"]
            label = key.replace("/", ", ")
            if sampler.get("timesteps"):
                file = brought.get((sampler["name"], tuple(sampler["timesteps"])))
                label = (f"{sampler['name']}-{sampler['steps']} "
                         + (f"timesteps of {file}" if file else "searched timesteps") + ", full")
            add(key, "steps-only", label, sampler, float(value["fid"]),
                float(value["latency"]), None, value.get("schedule"))
    for t in complete_trials(study):
        if "duplicate_of" in t.user_attrs:
            continue
        sampler = _sampler_dict(t, config)
        key = config_key(sampler, t.user_attrs.get("schedule"))
        full = key.endswith("/full")
        what = "full" if full else (trial_preset(t) or f"trial {t.number}")
        label = f"{SamplerConfig.from_dict(sampler).describe()}, {what}"
        if t.user_attrs.get("label"):  # a listed configuration's
            label = str(t.user_attrs["label"])
        elif not full and trial_preset(t) is None:
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


def study_fronts(study: optuna.Study, seeds: Collection[int] | None = None) -> Fronts:
    """The steps-only, exits-at-reference and joint fronts of ``study`` (confirmed FIDs over
    ``seeds`` only, when given)."""
    attrs = study.user_attrs
    ref_sampler = reference_sampler(attrs.get("config", {}), attrs.get("space")).to_dict()
    points = study_points(study, seeds)
    steps_only = [p for p in points if p.kind == "steps-only"]
    at_reference = [p for p in points if p.sampler == ref_sampler]
    reference = next((p for p in steps_only if p.sampler == ref_sampler), None)
    cost = attrs.get("cost_model", {})
    unit = (reference.latency if reference is not None
            else float(attrs.get("full_latency") or math.nan))
    return Fronts(points, _front(steps_only), _front(at_reference), _front(points), reference,
                  ref_sampler, unit, int(cost.get("batch_size", 1)))


@dataclass(frozen=True)
class StudyVerdict:
    """Do the study's levers beat fewer steps? (the one rule, :func:`ase_search.verdict.judge`)

    The rule needs every compared configuration (the levers' points in the quality window, the
    whole steps-only ladder and the reference) measured on the same fresh seeds, none of them a
    seed the search selected on: ``ase-search confirm`` measures them. Until then ``verdict`` is
    ``None`` and ``missing`` says what is left.

    Attributes:
        fronts: the study's fronts.
        window: the quality window (a factor on the reference FID).
        verdict: the rule's verdict on the confirmation seeds, ``None`` when not confirmed.
        seeds: the confirmation seeds judged (``()`` when none).
        missing: the configurations the verdict still needs on those seeds.
        hypervolume: the joint front's against the steps-only front's, up to (window x reference
            FID, 1.0): a picture of the fronts, never a claim.
        latency_source: ``"measured"`` when every judged configuration's whole run was timed in
            one session (``confirm`` does it for native models), else ``"predicted"``.
        cost_model_errors: per lever, the median relative error of the cost model's latency
            (relative to the reference) against the measured one, and how many configurations
            it rests on.
    """

    fronts: Fronts
    window: float
    verdict: Verdict | None
    seeds: tuple[int, ...] = ()
    missing: tuple[StudyPoint, ...] = ()
    hypervolume: HypervolumeComparison | None = None
    latency_source: str = "predicted"
    cost_model_errors: dict[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def confirmed(self) -> bool:
        return self.verdict is not None

    def judgement(self, key: str) -> Judgement | None:
        """The rule's judgement of the configuration ``key`` (candidates only)."""
        if self.verdict is None:
            return None
        return next((j for j in self.verdict.judgements if j.point.label == key), None)


def confirmation_seeds(study_seed: int, n: int) -> tuple[int, ...]:
    """The fresh seeds ``ase-search confirm`` measures: the ``n`` after the study's (the search
    selected its points on the study's seed, so that one is never judged on)."""
    return tuple(range(study_seed + 1, study_seed + 1 + n))


def _judged_seeds(fronts: Fronts, selection: set[int]) -> tuple[int, ...]:
    """The largest set of fresh seeds the reference holds (the verdict's seeds)."""
    ref = fronts.reference
    if ref is None or ref.seeds is None:
        return ()
    return tuple(s for s in ref.seeds if s not in selection)


def _configuration(p: StudyPoint, seeds: tuple[int, ...], latency: Latency
                   ) -> Configuration | None:
    """``p`` on ``seeds`` as the rule's :class:`Configuration` (labelled by its key), ``None``
    when it lacks one of them."""
    if p.seeds is None or p.fids is None or not set(seeds) <= set(p.seeds):
        return None
    fid = dict(zip(p.seeds, p.fids))
    return Configuration(p.key, tuple(fid[s] for s in seeds), seeds, latency)


def _latencies(points: Sequence[StudyPoint], reference: StudyPoint, unit: float,
               measured: dict[str, Any]) -> tuple[dict[str, Latency], str]:
    """Each point's latency relative to the reference: measured when every one of them (and the
    reference) was timed in the study's one timing session, else the cost model's."""
    timed = {p.key for p in points} | {reference.key}
    if measured and timed <= set(measured):
        ref = float(measured[reference.key]["seconds"])
        return ({p.key: Latency(float(measured[p.key]["seconds"]) / ref,
                                min(0.99, float(measured[p.key]["error"])), "measured")
                 for p in points}, "measured")
    return {p.key: Latency(p.latency / unit, p.latency_error) for p in points}, "predicted"


def _cost_model_errors(points: Sequence[StudyPoint], reference: StudyPoint, unit: float,
                       measured: dict[str, Any]) -> dict[str, tuple[float, int]]:
    """Per lever, the median of ``predicted / measured - 1`` over the timed configurations'
    latencies relative to the reference's (a configuration counts for each lever it uses)."""
    if reference.key not in measured:
        return {}
    ref = float(measured[reference.key]["seconds"])
    errors: dict[str, list[float]] = {}
    for p in points:
        if p.key in measured and p.key != reference.key:
            error = (p.latency / unit) / (float(measured[p.key]["seconds"]) / ref) - 1.0
            for lever in p.levers:
                errors.setdefault(lever, []).append(error)
    return {k: (statistics.median(v), len(v)) for k, v in sorted(errors.items())}


def study_verdict(study: optuna.Study, window: float = WINDOW,
                  seeds: Collection[int] | None = None, looks: int | None = None
                  ) -> StudyVerdict:
    """Judge ``study``'s levers against its steps-only ladder by the one rule, on the fresh seeds
    its confirmation measured, or on ``seeds`` alone (an independent replication: ``confirm
    --seeds 16`` then ``seeds=range(9, 17)``; see :class:`StudyVerdict`).

    ``looks`` (default: counted from the study's record, :func:`~ase_search.record.looks_at`)
    is how many verdicts on these seeds' sets the rule pays for; a history of the study's looks
    passes each one's number as it was then.

    Raises:
        ValueError: ``seeds`` names a seed the reference was not measured on, or the one the
            search selected on.
    """
    selection = {int(study.user_attrs.get("config", {}).get("seed", 0))}
    if seeds is not None:
        seeds = {int(s) for s in seeds}
        if seeds & selection:
            raise ValueError(f"seed {min(seeds & selection)} is the one the search selected its "
                             f"points on; judge fresh seeds only")
    fronts = study_fronts(study, seeds)
    unit = fronts.reference_latency
    ref = fronts.reference
    hv = None
    if ref is not None:
        hv = compare_hypervolumes([p.point(unit) for p in fronts.joint],
                                  [p.point(unit) for p in fronts.steps_only],
                                  (window * ref.fid, 1.0))
    if seeds is not None and ref is not None and not seeds <= set(ref.seeds or ()):
        lacking = sorted(seeds - set(ref.seeds or ()))
        raise ValueError(f"the reference configuration holds no FID on seed(s) "
                         f"{', '.join(map(str, lacking))}; `ase-search confirm STUDY --seeds N` "
                         f"measures the N seeds after the study's")
    seeds = _judged_seeds(fronts, selection)
    if ref is None or len(seeds) < 2:
        return StudyVerdict(fronts, window, None, (), tuple(fronts.points), hv)
    ladder_points = [p for p in fronts.points if p.kind == "steps-only"]
    edge = window * ref.fid
    # the levers' candidates: every exit configuration confirmed on these seeds (the rule tests
    # each at alpha / K), and the joint front's unconfirmed ones in the window, which it needs
    exits = [p for p in fronts.points if p.kind == "exit"]
    confirmed = [p for p in fronts.points if _configuration(p, seeds, Latency(1.0)) is not None]
    measured = (study.user_attrs.get(MEASURED_LATENCY) or {}).get("configs", {})
    latency, source = _latencies(confirmed + [ref], ref, unit, measured)
    errors = _cost_model_errors(confirmed, ref, unit, measured)

    def configuration(p: StudyPoint) -> Configuration | None:
        return None if p.key not in latency else _configuration(p, seeds, latency[p.key])

    reference = configuration(ref)
    ladder = [configuration(q) for q in ladder_points]
    points = [configuration(p) for p in exits]
    joint = {p.key for p in fronts.joint}
    missing = [q for q, c in zip(ladder_points, ladder) if c is None]
    missing += [p for p, c in zip(exits, points) if c is None and p.key in joint
                and p.fid <= edge]
    if missing or reference is None:
        return StudyVerdict(fronts, window, None, seeds, tuple(missing), hv, source, errors)
    verdict = judge([c for c in points if c is not None], ladder, reference, window=window,
                    selection_seeds=selection,
                    looks=looks if looks is not None else looks_at(study.user_attrs, seeds))
    return StudyVerdict(fronts, window, verdict, seeds, (), hv, source, errors)


def fronts_table(verdict: StudyVerdict) -> pd.DataFrame:
    """Every configuration of the study with its fronts and the rule's judgement, sorted by
    latency.

    Columns: ``configuration``, ``kind``, ``trial``, ``fid`` (mean over the judged seeds when
    confirmed), ``fid_sd``, ``ms_per_sample``, ``speedup`` (over the reference configuration),
    ``steps_only_front``, ``exits_front`` (the front at the reference sampler), ``joint_front``,
    ``vs_fewer_steps`` (the rule's word on a lever's point in the quality window: ``"1.32x"``
    (discounted speedup at matched FID), ``"beyond the ladder"``, ``"below the ladder"``; empty
    outside the window and before confirmation).
    """
    import statistics

    import pandas as pd

    f = verdict.fronts
    fronts = {name: {p.key for p in pts} for name, pts in
              (("steps_only_front", f.steps_only), ("exits_front", f.exits_at_reference),
               ("joint_front", f.joint))}
    rows = []
    for p in sorted(f.points, key=lambda p: (p.latency, p.fid, p.label)):
        j = verdict.judgement(p.key)
        word = None if j is None else (f"{j.discounted:.2f}x" if j.discounted is not None
                                       else f"{j.status} the ladder")
        rows.append({
            "configuration": p.label,
            "kind": p.kind,
            "trial": p.trial,
            "fid": p.fid,
            "fid_sd": statistics.stdev(p.fids) if p.fids and len(p.fids) > 1 else None,
            "ms_per_sample": p.latency / f.batch_size * 1e3,
            "speedup": f.reference_latency / p.latency,
            **{name: p.key in keys for name, keys in fronts.items()},
            "vs_fewer_steps": word,
        })
    return pd.DataFrame(rows, columns=["configuration", "kind", "trial", "fid", "fid_sd",
                                       "ms_per_sample", "speedup", "steps_only_front",
                                       "exits_front", "joint_front", "vs_fewer_steps"])


def lever_word(fronts: Fronts) -> str:
    """What the study's levers are called in its verdict: exits, block reuse or forecast
    configurations."""
    keys = [p.key for p in fronts.points if p.kind == "exit"]
    tails = [k.split("/", 1)[1].split("@")[0] for k in keys]
    if keys and all("f" in t for t in tails):
        return "forecast configurations"
    if keys and all("r" in t for t in tails):  # every one caches: reuse, some forecast
        return ("forecast and reuse configurations" if any("f" in t for t in tails)
                else "block reuse configurations")
    return "exits"


def verdict_lines(verdict: StudyVerdict) -> list[str]:
    """The verdict in words: the reference, then the rule's lines (or what it still needs)."""
    from ase_search.samplers import SamplerConfig

    f = verdict.fronts
    ref = f.reference
    ref_name = SamplerConfig.from_dict(f.reference_sampler).describe()
    if ref is None:
        return [f"no verdict yet: the full model at the reference configuration ({ref_name}) is "
                f"not measured; run the search (its steps-only baseline measures it)"]
    spread = (f" ± {statistics.stdev(ref.fids):.2f} over the {len(ref.fids)} fresh seeds"
              if ref.fids and len(ref.fids) > 1 else " (the search's seed)")
    lines = [f"reference: full model (starting weights), {ref_name}: FID {ref.fid:.2f}{spread}, "
             f"{ref.latency / f.batch_size * 1e3:.2f} ms per sample (predicted)"]
    if verdict.verdict is None:
        what = (f"{len(verdict.missing)} configuration(s) (the steps-only ladder and the levers' "
                f"points in the quality window) lack FIDs on fresh seeds")
        lines.append(f"no verdict yet: {what}; `ase-search confirm STUDY` measures them (one "
                     f"seed, the one the search selected on, resolves nothing)")
        return lines
    lines += verdict.verdict.lines(lever_word(f))
    judged = {j.point.label for j in verdict.verdict.judgements}
    dominated = [p for p in f.points if p.kind == "exit" and p.seeds is None
                 and p.fid <= verdict.verdict.window * ref.fid and p.key not in judged]
    if dominated:
        lines.append(f"judged: the levers' points of the joint front; {len(dominated)} more in "
                     f"the quality window were dominated by fewer steps on the search's seed and "
                     f"not confirmed")
    lines.append("latency: " + ("whole sampling runs timed in one interleaved session"
                                if verdict.latency_source == "measured" else
                                "the cost model's prediction, discounted by its error per lever"))
    if verdict.cost_model_errors:
        lines.append("cost model against the timed runs (relative to the reference, median): "
                     + ", ".join(f"{lever} {error:+.1%} ({n})" for lever, (error, n)
                                 in verdict.cost_model_errors.items()))
    hv = verdict.hypervolume
    if hv is not None:
        lines.append(f"hypervolume up to (FID {hv.reference_point[0]:.2f}, the reference's "
                     f"latency), a picture, not a claim: joint front {hv.front:.3f}, steps-only "
                     f"front {hv.baseline:.3f}")
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


def verdict_record(verdict: StudyVerdict, point: StudyPoint) -> dict[str, Any]:
    """What the rule says of ``point``, for an exported schedule's metadata: its judgement
    (a lever's point in the quality window), or why there is none."""
    if verdict.verdict is None:
        return {"status": "not judged", "why": "the study is not confirmed on fresh seeds "
                                                "(ase-search confirm)"}
    base = {"seeds": list(verdict.seeds), "latency": verdict.latency_source}
    if point.kind == "steps-only":
        return {**base, "status": "steps-only", "why": "the full model at fewer steps: the "
                                                       "baseline levers are judged against"}
    j = verdict.judgement(point.key)
    if j is None:
        return {**base, "status": "not judged", "why": "outside the quality window"}
    return {**base, "status": j.status, "helps": j.helps, "speedup": j.speedup,
            "discounted_speedup": j.discounted, "match": None if j.match is None else
            j.match.label, "text": j.text()}


def export_point(study: optuna.Study, point: StudyPoint, path: str | Path) -> Any:
    """Write ``point``'s schedule as JSON with its provenance, sampler and confirmation: a
    trial's through :func:`ase_search.pareto.export_schedule`, a steps-only configuration as the
    full schedule."""
    import datetime as dt

    from ase_search import __version__
    from ase_search.pareto import StudyError, export_schedule, portable_location
    from ase_search.schedule import preset

    verdict = {"verdict": verdict_record(study_verdict(study), point)}
    if point.trial is not None:
        return export_schedule(study, point.trial, path, extra=verdict)
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
        "study": study.study_name, "storage": portable_location(study, path.parent),
        "sampler": point.sampler["name"], "steps": point.sampler["steps"],
        "timestep_spacing": point.sampler.get("timestep_spacing"),
        "fid": point.fid, "latency": point.latency,
        "acceleration": 1.0 - point.latency / fronts.reference_latency,
        "confirmed": None if point.fids is None else {"seeds": list(point.seeds or ()),
                                                      "fids": list(point.fids),
                                                      "fid_mean": point.fid},
        "ase_search_version": __version__,
        **verdict,
    }
    out = replace(full, name=f"{study.study_name}-{point.key.replace('/', '-')}",
                  metadata=metadata)
    out.to_json(path)
    return out
