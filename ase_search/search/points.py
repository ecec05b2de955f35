"""Configurations measured outside the Optuna loop: the steps-only baseline and confirmation seeds.

Both run :func:`~ase_search.search.trial.evaluate_schedule` as Ray tasks on the study's cluster
and store each result as soon as it arrives (a trial of the study's companion points study,
named :data:`~ase_search.record.STEPS_ONLY_PREFIX` / :data:`~ase_search.record.CONFIRM_PREFIX`
plus its :func:`~ase_search.record.config_key`: :func:`~ase_search.record.store_point`), so an
interrupted run loses at most the configurations in flight and a resumed one measures only what
is missing.

* :func:`steps_only_jobs`: the full model at every sampler of the space and every count of its
  ``steps_only`` ladder (a fixed-sampler space: the study's sampler at the ladder counts up to its
  step count), plus the reference configuration. They run the **starting weights** (the
  checkpoint the search began from, never fine-tuned): what a user who does not exit would
  sample with. The trials run the study's (one-shot fine-tuned) weights.
* :func:`confirm_study`: the whole steps-only ladder and the joint front's levers, on fresh seeds
  (not the one the search selected on) with common random numbers, for the verdict's rule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ase_search.record import (
    CONFIRM_PREFIX,
    LADDER_TIMESTEPS,
    MEASURED_LATENCY,
    SEARCHED_SOLVERS,
    SEARCHED_TIMESTEPS,
    STEPS_ONLY_PREFIX,
    config_key,
    point_records,
    reference_sampler,
    searched_record,
    store_point,
    study_sampler,
)
from ase_search.search.listed import LISTED, Listed
from ase_search.search.trial import TrialContext, evaluate_schedule

__all__ = ["MAX_STEPS", "PointJob", "add_ladder_timesteps", "confirm", "confirm_jobs",
           "failure_reason", "ladder_extension", "listed_jobs", "measure_jobs", "merged_record",
           "search_ladder_timesteps", "searched_counts", "starting_context", "steps_only_jobs",
           "time_confirmed", "timesteps_missing", "weights_digest"]

# A fixed-sampler space's steps-only ladder: these counts up to the study's step count.
FIXED_LADDER = (4, 5, 6, 8, 10, 14, 20, 30, 50)


@dataclass(frozen=True)
class PointJob:
    """One configuration to measure: its study attribute, schedule, sampler and seeds, and
    whether it runs the starting weights (the full model as the user has it) or the study's. A
    listed configuration (``label`` set) is stored as a trial instead of an attribute."""

    attr: str
    schedule: dict[str, Any]
    sampler: dict[str, Any]
    seeds: tuple[int, ...]
    start: bool = False
    label: str | None = None

    @property
    def weights(self) -> str:
        """What the record says it ran: ``"start"`` or ``"study"``."""
        return "start" if self.start else "study"




def searched_counts(config: dict[str, Any], space: dict[str, Any]) -> dict[str, list[int]]:
    """Per solver of :data:`~ase_search.record.SEARCHED_SOLVERS` in a study's ladder, its step
    counts whose timesteps are searched too: those below the reference configuration's, and in a
    joint space whose spacings include :data:`~ase_search.space.SEARCHED_SPACING` every count
    of its step range (a trial may choose them at any)."""
    from ase_search.space import SEARCHED_SPACING, ScheduleSpace

    ref = reference_sampler(config, space)
    counts: dict[str, set[int]] = {}
    for c in steps_only_samplers(config, space, searched={}):
        if c.name in SEARCHED_SOLVERS and c.timesteps is None and c.steps < ref.steps:
            counts.setdefault(c.name, set()).add(c.steps)
    sampling = ScheduleSpace.from_dict(space).sampling
    if sampling is not None and SEARCHED_SPACING in sampling.timestep_spacings:
        for name in sampling.samplers:
            if name in SEARCHED_SOLVERS:
                counts.setdefault(name, set()).update(range(sampling.min_steps,
                                                            sampling.max_steps + 1))
    return {name: sorted(ks) for name, ks in counts.items()}


def timesteps_missing(study: Any) -> bool:
    """Whether a ladder solver's searched timesteps are not stored yet."""
    attrs = study.user_attrs
    if "space" not in attrs:
        return False
    held = searched_record(attrs.get(SEARCHED_TIMESTEPS))
    return not isinstance(attrs.get(SEARCHED_TIMESTEPS), dict) or any(
        name not in held for name in searched_counts(attrs["config"], attrs["space"]))


def search_ladder_timesteps(study: Any, model: Any, *, device: str = "cpu",
                            log: Callable[[str], None] = print) -> None:
    """Search each ladder solver's timesteps at :func:`searched_counts` on ``model`` (the
    starting weights' full model) once per study and store them
    (:data:`~ase_search.record.SEARCHED_TIMESTEPS`), so the steps-only ladder measures searched
    timesteps beside the uniform spacings: the strongest fewer-steps a user can run
    (:mod:`ase_search.timesteps`)."""
    from ase_search.timesteps import search_timesteps

    attrs = study.user_attrs
    if "space" not in attrs:
        return
    if not timesteps_missing(study):
        return
    held = searched_record(attrs.get(SEARCHED_TIMESTEPS))
    wanted = {name: ks for name, ks in searched_counts(attrs["config"], attrs["space"]).items()
              if name not in held}
    ref = reference_sampler(attrs["config"], attrs["space"])
    for name, counts in wanted.items():
        log(f"searching {name} timesteps for the steps-only ladder at {counts} steps")
        found = search_timesteps(model, counts, sampler=name, cfg_scale=ref.cfg_scale,
                                 device=device)
        first = next(iter(found.values()))
        held[name] = {"timesteps": {str(k): list(r.timesteps) for k, r in found.items()},
                      "grid": first.grid, "calibration": {"n": first.calibration[0],
                                                          "seed": first.calibration[1]},
                      "cfg_scale": ref.cfg_scale}
    study.set_user_attr(SEARCHED_TIMESTEPS, held)


def steps_only_samplers(config: dict[str, Any], space: dict[str, Any],
                        searched: dict[str, Any] | None = None,
                        added: list[dict[str, Any]] | None = None) -> list[Any]:
    """The sampler configs of a study's steps-only baseline (reference configuration first),
    with the solvers at the ``searched`` timesteps (a
    :data:`~ase_search.record.SEARCHED_TIMESTEPS` record) and at the timesteps a user ``added``
    (a :data:`~ase_search.record.LADDER_TIMESTEPS` record) last."""
    from ase_search.samplers import SamplerConfig
    from ase_search.space import ScheduleSpace

    sampling = ScheduleSpace.from_dict(space).sampling
    reference = reference_sampler(config, space)
    if sampling is not None:
        configs = sampling.steps_only_configs()
    else:
        one = study_sampler(config)
        configs = [type(one)(name=one.name, steps=n, timestep_spacing=one.timestep_spacing)
                   for n in FIXED_LADDER if n < one.steps]
    ordered = [reference] + [c for c in configs if c != reference]
    for name, record in searched_record(searched).items():
        ladder = {c.steps for c in configs if c.name == name}  # (a joint space's searched
        for ts in (record.get("timesteps") or {}).values():   # spacing holds more counts)
            if len(ts) in ladder:
                ordered.append(SamplerConfig(name, len(ts), cfg_scale=reference.cfg_scale,
                                             timesteps=tuple(int(t) for t in ts)))
    for entry in added or ():
        config = SamplerConfig(entry["sampler"], len(entry["timesteps"]),
                               cfg_scale=reference.cfg_scale,
                               timesteps=tuple(int(t) for t in entry["timesteps"]))
        if config not in ordered:
            ordered.append(config)
    return ordered


def add_ladder_timesteps(study: Any, files: list[str | Path]) -> list[Any]:
    """Add the timesteps in ``files`` (``ase-search timesteps`` JSON) to the study's steps-only
    ladder (:data:`~ase_search.record.LADDER_TIMESTEPS`), so ``confirm`` measures the full model
    there too and the verdict judges every lever against them; returns the sampler configs
    added (none for timesteps the study holds already).

    Raises:
        ValueError: a file that is not a timesteps file, or timesteps beyond the study's
            diffusion (the message names the file).
    """
    from ase_search.samplers import SamplerConfig
    from ase_search.timesteps import load_timesteps

    held = list(study.user_attrs.get(LADDER_TIMESTEPS) or [])
    added = []
    for file in files:
        name, ts = load_timesteps(file)
        try:
            config = SamplerConfig(name, len(ts), timesteps=ts)
            config.model_times()
        except ValueError as err:
            raise ValueError(f"{file}: {err}") from None
        if any(e["sampler"] == name and tuple(e["timesteps"]) == ts for e in held):
            continue
        held.append({"sampler": name, "timesteps": list(ts), "file": Path(file).name})
        added.append(config)
    if added:
        study.set_user_attr(LADDER_TIMESTEPS, held)
    return added


def steps_only_jobs(study: Any) -> list[PointJob]:
    """The steps-only baseline configurations ``study`` does not hold yet (or holds measured on
    other weights than the starting ones, as studies made before this rule did)."""
    from ase_search.schedule import preset

    attrs = study.user_attrs
    records = point_records(study)
    space = attrs["space"]
    full = preset("full", space["arch"], space["depth"]).to_dict()
    jobs = []
    for sampler in steps_only_samplers(attrs["config"], space, attrs.get(SEARCHED_TIMESTEPS),
                                       attrs.get(LADDER_TIMESTEPS)):
        attr = STEPS_ONLY_PREFIX + config_key(sampler.to_dict(), None)
        recorded = records.get(attr)
        if not isinstance(recorded, dict) or recorded.get("weights") != "start":
            jobs.append(PointJob(attr, full, sampler.to_dict(), (attrs["config"]["seed"],),
                                 start=True))
    return jobs


def listed_trials(study: Any) -> list[Any]:
    """The COMPLETE trials of ``study`` that measured a listed configuration."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("kind") == LISTED]


def listed_jobs(study: Any, listed: tuple[Listed, ...]) -> list[PointJob]:
    """The configurations of ``listed`` that ``study`` does not hold yet, on the study's weights
    and seed."""
    from ase_search.record import config_identity

    held = {config_identity(t.user_attrs["sampler"], t.user_attrs["schedule"])
            for t in listed_trials(study)}
    seed = int(study.user_attrs["config"]["seed"])
    return [PointJob(f"{LISTED}:{config_key(c.sampler.to_dict(), c.schedule.to_dict())}",
                     c.schedule.to_dict(), c.sampler.to_dict(), (seed,), label=c.label)
            for c in listed
            if config_identity(c.sampler.to_dict(), c.schedule.to_dict()) not in held]


def _add_listed_trial(study: Any, job: PointJob, result: dict[str, Any]) -> None:
    """Store a listed configuration's measurement as a COMPLETE trial (no parameters: it was
    not suggested)."""
    import optuna

    from ase_search.search.study import TRIAL_ATTRS

    attrs = {k: result[k] for k in (*TRIAL_ATTRS, "measured", "weights_sha256")
             if result.get(k) is not None}
    study.add_trial(optuna.trial.create_trial(
        values=[float(result["fid"]), float(result["latency"])],
        user_attrs={**attrs, "kind": LISTED, "label": job.label}))


def weights_digest(ctx: TrialContext) -> str | None:
    """A short sha256 of the weights ``ctx`` runs (``None`` when they are not a file here, e.g.
    a diffusers folder): stored with every confirmation record, so seeds measured on other
    weights are never merged or judged with these."""
    import hashlib

    data = ctx.weights_bytes
    if data is None and Path(ctx.weights).is_file():
        data = Path(ctx.weights).read_bytes()
    return None if data is None else hashlib.sha256(data).hexdigest()[:16]


def confirm_jobs(study: Any, seeds: int,
                 digests: dict[str, str | None] | None = None) -> list[PointJob]:
    """The configurations ``ase-search confirm`` measures on ``seeds`` fresh seeds
    (:func:`~ase_search.fronts.confirmation_seeds`: after the study's own, which the search
    selected on), so that the verdict's rule can compare them all on the same seeds: the whole
    steps-only ladder (the reference included), every lever's configuration on the joint front,
    and every configuration confirmed before. Seeds a configuration already holds on the right
    weights are not measured again (``digests``: :func:`weights_digest` of the ``"start"`` and
    ``"study"`` weights; a record with another digest is measured again whole, one from before
    digests were recorded is taken by its weights label)."""
    from ase_search.fronts import StudyPoint, confirmation_seeds, study_fronts

    attrs = study.user_attrs
    records = point_records(study)
    wanted = confirmation_seeds(int(attrs["config"]["seed"]), seeds)
    fronts = study_fronts(study)
    chosen: dict[str, StudyPoint] = {p.key: p for p in fronts.points if p.kind == "steps-only"}
    chosen |= {p.key: p for p in fronts.joint}
    # a lever's point examined once stays a candidate: dropping the ones that looked bad on the
    # first seeds would choose the candidates on the seeds that judge them
    chosen |= {p.key: p for p in fronts.points if p.seeds is not None}
    # a fixed list is judged whole: none of it was selected on the study's seed
    listed = {t.number for t in listed_trials(study)}
    chosen |= {p.key: p for p in fronts.points if p.trial in listed}
    jobs = []
    for key, p in chosen.items():
        start = p.kind == "steps-only"  # the full model runs the starting weights
        weights = "start" if start else "study"
        held = _held_seeds(records.get(CONFIRM_PREFIX + key), weights,
                           (digests or {}).get(weights))
        missing = tuple(s for s in wanted if s not in held)
        if missing:
            jobs.append(PointJob(CONFIRM_PREFIX + key, _schedule_of(study, p), p.sampler,
                                 missing, start=start))
    return jobs


def _held_seeds(record: Any, weights: str, digest: str | None = None) -> dict[int, float]:
    """Seed -> FID of a confirmation record measured on ``weights`` (empty for none, or for a
    record of other weights: another label, or another digest where both are known). A record
    without a label is from before labels were written, when confirmation ran the study's
    weights alone."""
    if not isinstance(record, dict) or record.get("weights", "study") != weights:
        return {}
    if digest and record.get("weights_sha256") not in (None, digest):
        return {}
    seeds, fids = record.get("seeds") or [], record.get("fids") or []
    return {int(s): float(f) for s, f in zip(seeds, fids)} if len(seeds) == len(fids) else {}


def merged_record(old: Any, new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s confirmation result with the seeds ``old`` already held on the same weights
    (sorted by seed; ``fid`` the mean over them all)."""
    held = _held_seeds(old, new["weights"], new.get("weights_sha256"))
    held |= {int(s): float(f) for s, f in zip(new["seeds"], new["fids"])}
    seeds = sorted(held)
    fids = [held[s] for s in seeds]
    return {**new, "seeds": seeds, "fids": fids, "fid": sum(fids) / len(fids)}


def _schedule_of(study: Any, point: Any) -> dict[str, Any]:
    from ase_search.schedule import preset

    if point.trial is None:
        space = study.user_attrs["space"]
        return preset("full", space["arch"], space["depth"]).to_dict()
    return study.trials[point.trial].user_attrs["schedule"]


def _measure(job: PointJob, ctx: TrialContext) -> dict[str, Any]:
    """Measure one job (runs in a Ray task)."""
    from threadpoolctl import threadpool_limits

    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule

    ctx = replace(ctx, config={**ctx.config, "grid": 0})  # a table's points, not pictures
    with threadpool_limits(limits=ctx.cpus):
        result = evaluate_schedule(ExitSchedule.from_dict(job.schedule), ctx,
                                   sampler=SamplerConfig.from_dict(job.sampler),
                                   seeds=job.seeds)
    result.pop("grid_png", None)  # None: no grid was made
    result.pop("time_split", None)
    if "fids" not in result:
        result["fids"] = [result["fid"]]
    return result


def failure_reason(err: BaseException) -> str:
    """One line (at most 300 characters) naming why a Ray task failed: its cause's type and
    message (Ray wraps a task's exception)."""
    cause = getattr(err, "cause", None) or err
    return f"{type(cause).__name__}: {cause}".splitlines()[0][:300]


def measure_jobs(study: Any, jobs: list[PointJob], contexts: dict[str, TrialContext], *,
                 resources: dict[str, float], concurrent: int, what: str,
                 tick: Callable[[], None] = lambda: None, progress: bool = True,
                 log: Callable[[str], None] = print,
                 digests: dict[str, str | None] | None = None) -> dict[str, str]:
    """Measure ``jobs`` as Ray tasks (at most ``concurrent`` at once), each on the context of its
    weights (``contexts["start"]``, ``contexts["study"]``), storing each result in ``study``
    under its attribute as it arrives. Returns the failures: attribute -> reason (a failed
    configuration is not stored, so the next run measures it again)."""
    import ray

    from ase_search.progress import progress_bar

    if not jobs:
        return {}
    task = ray.remote(num_cpus=resources.get("cpu", 1), num_gpus=resources.get("gpu", 0),
                      max_retries=0)(_measure)
    refs = {name: ray.put(ctx) for name, ctx in contexts.items()}
    if digests is None:  # the caller's, when it has them: hashing weights reads every byte
        digests = {name: weights_digest(ctx) for name, ctx in contexts.items()}
    queue, running, failures = list(jobs), {}, {}
    bar = progress_bar(enabled=progress)
    with bar:
        bar_task = bar.add_task(what, total=len(jobs))
        while queue or running:
            while queue and len(running) < concurrent:
                job = queue.pop(0)
                running[task.remote(job, refs[job.weights])] = job
            done, _ = ray.wait(list(running), num_returns=1, timeout=2.0)
            tick()
            for ref in done:
                job = running.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as err:  # noqa: BLE001 - one configuration fails, not the run
                    failures[job.attr] = failure_reason(err)
                    log(f"{job.attr}: failed ({failures[job.attr]}); the next run measures it "
                        f"again")
                else:
                    result["measured"] = time.strftime("%Y-%m-%d %H:%M:%S")
                    result["weights"] = job.weights
                    result["weights_sha256"] = digests[job.weights]
                    if job.label is not None and not all(
                            math.isfinite(float(result[m])) for m in ("fid", "latency")):
                        failures[job.attr] = (f"non-finite objectives (FID {result['fid']}, "
                                              f"latency {result['latency']})")
                        log(f"{job.attr}: failed ({failures[job.attr]}); the next run measures "
                            f"it again")
                    elif job.label is not None:
                        _add_listed_trial(study, job, result)
                    else:
                        if job.attr.startswith(CONFIRM_PREFIX):  # keep the seeds held before
                            result = merged_record(point_records(study).get(job.attr), result)
                        store_point(study, job.attr, result)
                bar.advance(bar_task)
    return failures


def confirm(study: Any, seeds: int, contexts: dict[str, TrialContext], *,
            resources: dict[str, float],
            concurrent: int, tick: Callable[[], None] = lambda: None, progress: bool = True,
            log: Callable[[str], None] = print, rounds: int = 3) -> tuple[int, dict[str, str]]:
    """Measure :func:`confirm_jobs` until none is left (at most ``rounds`` rounds): mean FIDs
    over seeds can move points onto the joint front that the study's one seed left off, and
    those need their seeds too (the rule counts every confirmed lever's point among its
    candidates, so this adds no selection it does not correct for). Returns the configurations
    measured and the failures."""
    measured, failures = 0, {}
    digests = {name: weights_digest(ctx) for name, ctx in contexts.items()}  # once per run
    for _ in range(rounds):
        baseline = [j for j in steps_only_jobs(study) if j.attr not in failures]
        if baseline:  # e.g. the searched timesteps of a study made before they were
            log(f"steps-only baseline: measuring {len(baseline)} missing configuration(s)")
            failures |= measure_jobs(study, baseline, contexts, resources=resources,
                                     concurrent=concurrent, what="steps-only baseline",
                                     tick=tick, progress=progress, log=log, digests=digests)
        extend = [j for j in ladder_extension(study) if j.attr not in failures]
        if extend:  # the new steps-only points on the study's seed, then on the fresh ones
            log("the verdict puts a lever's point beyond or below the measured ladder: adding "
                + ", ".join(j.attr[len(STEPS_ONLY_PREFIX):] for j in extend))
            failures |= measure_jobs(study, extend, contexts, resources=resources,
                                     concurrent=concurrent, what="ladder extension", tick=tick,
                                     progress=progress, log=log, digests=digests)
        jobs = [j for j in confirm_jobs(study, seeds, digests) if j.attr not in failures]
        for j in [j for j in jobs if j.weights not in contexts]:
            failures[j.attr] = f"needs the {j.weights} weights, which this run did not load"
            log(f"{j.attr}: not measured: it needs the {j.weights} weights")
        jobs = [j for j in jobs if j.weights in contexts]
        if not jobs:
            break
        log(f"confirming {len(jobs)} configuration(s) over {seeds} seeds")
        failures |= measure_jobs(study, jobs, contexts, resources=resources,
                                 concurrent=concurrent,
                                 what=f"confirm ({seeds} seeds)", tick=tick, progress=progress,
                                 log=log, digests=digests)
        measured += len(jobs)
    return measured, failures


MAX_STEPS = 1000  # a ladder is never extended past the diffusion's own length


def ladder_extension(study: Any) -> list[PointJob]:
    """Steps-only configurations to add when the verdict cannot put a number on a lever's point:
    one beyond the whole ladder (better than every steps-only configuration) asks for each
    solver at twice its most steps, one below it (cheaper than all and beating none) for each
    solver at half its fewest. Measured like the baseline (the starting weights, the study's
    seed); ``confirm`` then measures them on the fresh seeds too."""
    from dataclasses import replace as _replace

    from ase_search.fronts import study_verdict
    from ase_search.samplers import SamplerConfig

    verdict = study_verdict(study).verdict
    if verdict is None:
        return []
    statuses = {j.status for j in verdict.judgements}
    attrs = study.user_attrs
    records = point_records(study)
    ladder: dict[str, list[SamplerConfig]] = {}
    full: dict[str, Any] = {}
    for key, value in records.items():
        if key.startswith(STEPS_ONLY_PREFIX):
            sampler = SamplerConfig.from_dict(value["sampler"])
            if sampler.timesteps is not None:  # searched ones are not extended
                continue
            ladder.setdefault(sampler.name, []).append(sampler)
            full = value["schedule"]  # the full model, as the baseline ran it
    wanted = []
    for configs in ladder.values():
        if "beyond" in statuses:
            top = max(configs, key=lambda c: c.steps)
            if top.steps < MAX_STEPS:
                wanted.append(_replace(top, steps=min(MAX_STEPS, 2 * top.steps)))
        if "below" in statuses:
            low = min(configs, key=lambda c: c.steps)
            if low.steps > 1:
                wanted.append(_replace(low, steps=max(1, low.steps // 2)))
    return [PointJob(STEPS_ONLY_PREFIX + config_key(c.to_dict(), None), full, c.to_dict(),
                     (int(attrs["config"]["seed"]),), start=True)
            for c in wanted if STEPS_ONLY_PREFIX + config_key(c.to_dict(), None) not in records]


def time_confirmed(study: Any, weights: str | Path, *, batch_size: int, rounds: int = 5,
                   diffusers: bool = False, log: Callable[[str], None] = print) -> int:
    """Time the whole sampling run of every confirmed configuration (the steps-only ladder and
    the levers' points), interleaved in one session (:func:`~ase_search.measure
    .time_sampling_runs`), and store it in the study (:data:`~ase_search.fronts.MEASURED_LATENCY`)
    for the verdict, which then uses measured latencies instead of the cost model's. Done again
    whole when a configuration is missing, so every time compared comes from one session. With
    ``diffusers``, ``weights`` is the study's diffusers folder and the runs go through the hooks
    and its schedulers (:func:`~ase_search.integrations.diffusers.time_diffusers_runs`).
    Returns how many configurations were timed (0: all held)."""
    import torch

    from ase_search.measure import time_sampling_runs
    from ase_search.models import load_checkpoint
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule

    attrs = study.user_attrs
    configs = {k[len(CONFIRM_PREFIX):]: v for k, v in point_records(study).items()
               if k.startswith(CONFIRM_PREFIX) and "sampler" in v and "schedule" in v}
    held = (attrs.get(MEASURED_LATENCY) or {}).get("configs", {})
    if not configs or set(configs) <= set(held):
        return 0
    log(f"timing {len(configs)} configuration(s): whole sampling runs of {batch_size} samples, "
        f"{rounds} interleaved rounds")
    plans = {k: (ExitSchedule.from_dict(v["schedule"]), SamplerConfig.from_dict(v["sampler"]))
             for k, v in configs.items()}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if diffusers:
        from ase_search.integrations.diffusers import time_diffusers_runs

        runs = time_diffusers_runs(weights, plans, batch_size=batch_size, rounds=rounds,
                                   device=device)
    else:
        model, _ = load_checkpoint(str(weights), ema=True)
        runs = time_sampling_runs(model, plans, batch_size=batch_size, rounds=rounds,
                                  device=device)
    study.set_user_attr(MEASURED_LATENCY, {
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "batch_size": batch_size,
        "rounds": rounds, "threads": torch.get_num_threads(),
        "configs": {k: {"seconds": r.seconds, "error": r.error, "rounds": list(r.rounds)}
                    for k, r in runs.items()}})
    return len(runs)


def starting_context(ctx: TrialContext, weights: str | Path) -> TrialContext:
    """``ctx`` on the starting weights ``weights``, without any fine-tune: the full model as the
    user has it, which the steps-only baseline runs."""
    path = Path(weights).resolve()
    return replace(ctx, config={**ctx.config, "finetune": "none"}, weights=str(path),
                   weights_bytes=path.read_bytes() if path.is_file() else None)
