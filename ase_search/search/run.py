"""Running a search: :func:`run_search` (the driver loop) and its progress bar."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ase_search.record import SEARCHED_TIMESTEPS, searched_table
from ase_search.search.config import SearchConfig, SearchError, one_shot_config
from ase_search.storage import resolve_storage
from ase_search.search.study import (
    HEARTBEAT_EVERY,
    Driver,
    enqueue_seeds,
    open_or_create_study,
    recover_interrupted,
    remove_stale_tune_dirs,
    resolve_recorded_path,
)
from ase_search.search.listed import load_listed
from ase_search.search.points import (
    add_ladder_timesteps,
    confirm,
    confirm_jobs,
    listed_jobs,
    measure_jobs,
    search_ladder_timesteps,
    timesteps_missing,
    starting_context,
    steps_only_jobs,
    time_confirmed,
)
from ase_search.search.trial import TrialContext
from ase_search.search.tune import (
    fit_polling,
    init_ray,
    make_searcher,
    trainable,
    trial_resources,
)

__all__ = ["SearchSummary", "StudyProgress", "check_space", "check_weights_key", "confirm_study",
           "run_search", "starting_weights", "study_prefix"]


@dataclass
class SearchSummary:
    """What :func:`run_search` did: the study, its trial counts, the run's wall time in seconds
    and its setup steps' (profiling, one-shot fine-tune)."""

    study_name: str
    storage: str
    complete: int
    failed: int
    wall_time: float
    new_trials: int
    setup_time: dict[str, float] = field(default_factory=dict)


class StudyProgress:
    """A rich progress bar fed by polling the study (the database is the truth; Tune callbacks
    would have to be pickled with the experiment)."""

    def __init__(self, study: Any, total: int, enabled: bool) -> None:
        from ase_search.progress import progress_bar

        self.study = study
        self.progress = progress_bar(note="{task.fields[best]}", enabled=enabled)
        self.task = self.progress.add_task("search", total=total, best="")
        self.refresh()

    def refresh(self) -> None:
        from optuna.trial import TrialState

        from ase_search.pareto import distinct_schedules, pareto_front

        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        fails = len(self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        # The report's front, counted in distinct schedules.
        front = distinct_schedules(pareto_front(self.study))
        text = f"front {len(front)}, failed {fails}"
        best = max(front, key=lambda t: t.user_attrs.get("acceleration", 0.0), default=None)
        if best is not None:
            text += (f", fastest on front: {best.user_attrs.get('acceleration', 0.0):.0%} "
                     f"at FID {best.values[0]:.2f}")
        self.progress.update(self.task, completed=len(complete), best=text)

    def __enter__(self) -> StudyProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.refresh()
        self.progress.__exit__(*exc)


def run_search(config: SearchConfig, *, progress: bool = True,
               log: Callable[[str], None] = print) -> SearchSummary:
    """Run (or resume) the search until the study holds ``config.budget`` finished trials (with
    ``config.configs``: until it holds every listed configuration)."""
    import torch
    from optuna.trial import TrialState

    from ase_search.metrics.latency import profile_components
    from ase_search.space import load_space
    from ase_search.testbed import TESTBEDS, load_model

    started = time.perf_counter()
    setup: dict[str, float] = {}
    if config.ray_address:  # joined first: a wrong address or token fails before any work
        init_ray(config)
    if config.diffusers:
        from ase_search.integrations.diffusers import exit_blocks, load_transformer

        model = load_transformer(config.diffusers)
        depth = len(exit_blocks(model))
    else:
        model = load_model(config.arch, config.checkpoint)
        depth = model.exit_depth
    start_model = model  # the starting weights' full model, as its user has it (the ladder's)
    space_path = Path(config.space) if config.space else TESTBEDS[config.arch].space
    space = load_space(space_path, depth=depth)
    if space.arch != config.arch:
        raise SearchError(f"{space_path} is a {space.arch} space but arch is {config.arch}",
                          fields=("arch",))
    if config.diffusers and space.sampling is not None:
        from ase_search.integrations.diffusers import SCHEDULER_NAMES

        others = sorted(set(space.sampling.samplers) - set(SCHEDULER_NAMES))
        if others:
            raise SearchError(f"{space_path} searches {', '.join(others)}, which the diffusers "
                              f"path does not run (it runs {', '.join(SCHEDULER_NAMES)}); give a "
                              f"space without them", fields=("space",))
    if space.levers is not None and space.levers.exit_heads:
        # Exit heads are trained by the one-shot fine-tune (copies of the shared head until then).
        if config.finetune != "one-shot" or config.finetune_steps == 0:
            raise SearchError(f"{space_path} asks for exit heads, which the one-shot fine-tune "
                              f"trains; use finetune one-shot with finetune_steps > 0, or set "
                              f"levers.exit_heads: false", fields=("finetune",))
        from ase_search.models import add_exit_heads

        model = add_exit_heads(model)  # a copy: ``start_model`` stays as it was
    # a list's mistakes are one line before any work
    listed = load_listed(config.configs, arch=config.arch, depth=depth) if config.configs else ()
    storage_spec = config.resolved_storage
    storage = resolve_storage(storage_spec)
    storage_dir = (Path(storage_spec).expanduser().resolve().parent if "://" not in storage_spec
                   else Path("studies").resolve())
    # The reference configuration: accelerations and speedups are measured against the full
    # model there (a joint space's sampling.reference; else the study's one sampler).
    reference = space.sampling.reference_config if space.sampling else config.sampler_config

    # The cost model is profiled once per study and stored, so resumed runs stay comparable.
    study = open_or_create_study(config, storage, extra_attrs={"space": space.to_dict()})
    check_space(study, space)
    if "cost_model" not in study.user_attrs:
        t = time.perf_counter()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if config.diffusers:  # whole calls through the hooks: the transformer as it runs
            from ase_search.integrations.diffusers import profile_diffusers

            cost = profile_diffusers(model, batch_size=config.latency_batch, device=device)
        else:
            cost = profile_components(model, batch_size=config.latency_batch, device=device)
        study.set_user_attr("cost_model", cost.to_dict())
        study.set_user_attr("full_latency", cost.latency(None, reference.model_times()))
        setup["profile"] = time.perf_counter() - t
    names = set(space.distributions())  # a whole configuration's parameters
    recovered = recover_interrupted(study, names=names)
    if recovered:
        log(f"re-queued {recovered} trial(s) interrupted by an earlier run")
    seeds = () if listed else enqueue_seeds(study, space)  # a list study has its own
    if seeds:
        log(f"enqueued seed schedules: {', '.join(seeds)}")

    def count(state: TrialState) -> int:
        return len(study.get_trials(deepcopy=False, states=(state,)))

    # a list study's budget is its list
    budget = count(TrialState.COMPLETE) + len(listed_jobs(study, listed)) if listed else (
        config.budget)
    complete_before = count(TrialState.COMPLETE)
    searched = bool(config.diffusers) or not timesteps_missing(study)
    if (complete_before >= budget and searched and not steps_only_jobs(study)
            and not (config.confirm and confirm_jobs(study, config.confirm))):
        log(f"study {config.resolved_study_name!r} already holds {complete_before} finished "
            + ("trials: every listed configuration" if listed else
               f"trials (budget {budget}); raise --budget to search further"))
        return SearchSummary(config.resolved_study_name, storage_spec, complete_before,
                             count(TrialState.FAIL), 0.0, 0, setup)

    from ase_search.finetune import one_shot_key, one_shot_weights, weights_record

    one_shot = config.finetune == "one-shot" and config.finetune_steps > 0
    folder = None if "://" in storage_spec else storage_dir  # records are relative to it
    start = starting_weights(config)  # the steps-only baseline runs them, never fine-tuned
    if not one_shot:
        weights = start
    # The study's trials were measured on the weights it records; a resume must use the same
    # ones (checked before the fine-tune that would make others). None: not one-shot weights.
    key = (one_shot_key(model, space, one_shot_config(config), config.data) if one_shot
           else weights_record(weights, folder)["one_shot_key"])
    check_weights_key(study, key)
    if not searched:  # the ladder's searched timesteps, once per study (not for diffusers)
        t = time.perf_counter()
        search_ladder_timesteps(study, start_model,
                                device="cuda" if torch.cuda.is_available() else "cpu", log=log)
        setup["searched_timesteps"] = time.perf_counter() - t
    t = time.perf_counter()
    if one_shot:
        weights = one_shot_weights(model, space, one_shot_config(config), data=config.data,
                                   out_dir=storage_dir, name=config.resolved_study_name,
                                   progress=progress, key=key)
    setup["one_shot_finetune"] = time.perf_counter() - t
    if not isinstance(study.user_attrs.get("weights"), dict):  # new, or a bare path: keyed now
        # named by exports; relative to the study's folder, so a clone finds it
        study.set_user_attr("weights", weights_record(weights, folder))

    driver = Driver.this_process()
    driver.beat(study)  # before it asks a trial, so others see the trial's driver alive
    # Tune's own files (results, searcher snapshots) sit beside the study, one folder per
    # driver; the folders of drivers that are gone (killed: no cleanup) are removed here.
    # Named by the storage file (and the study, when it is not the file's default one), so two
    # studies in one folder never share their grids or Tune's files.
    prefix = study_prefix(storage_spec, config.resolved_study_name)
    tune_root = storage_dir / f"{prefix}-tune"
    remove_stale_tune_dirs(tune_root, study)
    tune_dir = tune_root / driver.id
    started_ray = init_ray(config)
    try:
        from ray import tune
        from ray.tune.search import ConcurrencyLimiter

        resources, concurrent, cpus = trial_resources(config)
        ctx = TrialContext(config=asdict(config), weights=str(Path(weights).resolve()),
                           space=space.to_dict(), cost_model=study.user_attrs["cost_model"],
                           cpus=cpus,
                           # a diffusers study's weights are its folder, read where trials run
                           weights_bytes=(Path(weights).read_bytes() if Path(weights).is_file()
                                          else None),
                           cache_dir=str(storage_dir / f"{prefix}-self"),
                           searched=searched_table(study.user_attrs.get(SEARCHED_TIMESTEPS)))
        contexts = {"study": ctx, "start": starting_context(ctx, start)}
        last_beat = time.monotonic()

        def beat() -> None:
            nonlocal last_beat
            if time.monotonic() - last_beat >= HEARTBEAT_EVERY:
                driver.beat(study)
                last_beat = time.monotonic()

        # The steps-only baseline: the full model at every sampler and step count of the
        # space's ladder, once per study (a resumed run measures only what is missing).
        jobs = steps_only_jobs(study)
        if jobs:
            t = time.perf_counter()
            log(f"steps-only baseline: measuring the full model at {len(jobs)} sampler "
                f"configuration(s)")
            measure_jobs(study, jobs, contexts, resources=resources, concurrent=concurrent,
                         what="steps-only baseline", tick=beat, progress=progress, log=log)
            setup["steps_only_baseline"] = time.perf_counter() - t
        jobs = listed_jobs(study, listed)
        if jobs:
            log(f"measuring {len(jobs)} listed configuration(s)")
            measure_jobs(study, jobs, contexts, resources=resources, concurrent=concurrent,
                         what="listed configurations", tick=beat, progress=progress, log=log)
        if config.screen and not listed:  # FID only for the screen's best candidates
            from ase_search.search.screen import enqueue_screened, screen_candidates

            t = time.perf_counter()
            screen = screen_candidates(study, space, config, contexts["study"],
                                       resources=resources, concurrent=concurrent, tick=beat,
                                       progress=progress, log=log)
            enqueue_screened(study, screen, space, config, ctx.searched, log=log)
            setup["screen"] = time.perf_counter() - t
        with StudyProgress(study, budget, progress and not listed) as bar:

            def tick() -> None:
                bar.refresh()
                beat()

            stalled = rounds = 0
            while not listed and count(TrialState.COMPLETE) < budget and stalled < 2:
                if count(TrialState.COMPLETE) + count(TrialState.RUNNING) >= budget:
                    # The rest of the budget is running under other drivers: wait for them, and
                    # take their trials over (failed and re-queued) if their driver goes.
                    time.sleep(2.0)
                    tick()
                    recover_interrupted(study, names=names)
                    continue
                rounds += 1
                before = count(TrialState.COMPLETE), count(TrialState.FAIL)
                searcher = ConcurrencyLimiter(make_searcher(space, storage, config, driver.id,
                                                           storage_dir / f"{prefix}-grids",
                                                           folder),
                                              max_concurrent=concurrent)
                tuner = tune.Tuner(
                    tune.with_resources(tune.with_parameters(trainable, ctx=ctx), resources),
                    tune_config=tune.TuneConfig(search_alg=searcher,
                                                num_samples=budget - before[0],
                                                max_concurrent_trials=concurrent,
                                                # a fresh worker per trial costs ~5 s of
                                                # process start and imports per trial
                                                reuse_actors=True),
                    # One experiment name per round: Ray keeps a round's state in a folder
                    # named by name and second, and two rounds within one second would share
                    # (and delete) each other's files.
                    run_config=tune.RunConfig(name=f"{config.resolved_study_name}-{rounds}",
                                              storage_path=str(tune_dir), verbose=0),
                )
                fit_polling(tuner, tick)
                # A round that finished nothing is a stall when its trials failed, or when no
                # other driver holds running trials (those would explain an empty round).
                if count(TrialState.COMPLETE) > before[0]:
                    stalled = 0
                elif count(TrialState.FAIL) > before[1] or not count(TrialState.RUNNING):
                    stalled += 1
        if config.confirm and count(TrialState.COMPLETE) >= budget:
            t = time.perf_counter()
            confirm(study, config.confirm, contexts, resources=resources, concurrent=concurrent,
                    tick=beat, progress=progress, log=log)
            setup["confirm"] = time.perf_counter() - t
    finally:
        if started_ray:
            import ray

            ray.shutdown()
        driver.beat(study, stopped=True)
        shutil.rmtree(tune_dir, ignore_errors=True)
    complete = count(TrialState.COMPLETE)
    if listed and listed_jobs(study, listed):
        missing = [str(j.label) for j in listed_jobs(study, listed)]
        raise SearchError(f"{len(missing)} listed configuration(s) failed "
                          f"({'; '.join(missing)[:400]}); the next run measures them again")
    if complete < budget:
        reasons = {t.user_attrs.get("fail_reason", "?")
                   for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        raise SearchError(f"the search stopped at {complete}/{budget} finished trials: "
                          f"trials keep failing ({'; '.join(sorted(reasons))[:400]})")
    summary = SearchSummary(config.resolved_study_name, storage_spec, complete,
                            count(TrialState.FAIL), time.perf_counter() - started,
                            complete - complete_before, setup)
    if summary.new_trials:  # where the last run that searched spent its time, for reports
        study.set_user_attr("last_run", {"finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                         "wall_time": summary.wall_time, "setup": setup,
                                         "new_trials": summary.new_trials})
    return summary



def check_weights_key(study: Any, key: str | None) -> None:
    """Refuse to go on measuring ``study`` with weights of one-shot key ``key`` (``None``: not
    made by a one-shot fine-tune) when the study recorded other weights.

    The study's identity covers the settings by name (checkpoint and space paths, data spec);
    the key covers what they hold, so a checkpoint or data set changed under the same name is
    caught here. A study that records no weights yet, or a bare path (made before weights were
    keyed), is not checked.

    Raises:
        SearchError: the recorded key differs.
    """
    record = study.user_attrs.get("weights")
    if not isinstance(record, dict):
        return
    recorded = record.get("one_shot_key")
    if recorded != key:
        def name(k: str | None) -> str:
            return "none (not one-shot weights)" if k is None else k[:12]

        raise SearchError(
            f"study {study.study_name!r} was measured on weights with one-shot key "
            f"{name(recorded)}, but these settings use weights with key {name(key)} (the "
            f"checkpoint, space or data changed under the same name); resume with what made "
            f"the study or pass another study_name", fields=("study_name",))


CONFIRM_SEEDS = 8  # fresh seeds: resolves a 5% FID difference at the same-weights noise (sd 0.05)


def confirm_study(storage: str, *, study_name: str | None = None, seeds: int = CONFIRM_SEEDS,
                  max_concurrent: int | None = None, progress: bool = True,
                  timesteps: Sequence[str | Path] = (),
                  log: Callable[[str], None] = print) -> int:
    """Measure ``study``'s whole steps-only ladder and the levers on its joint front on ``seeds``
    fresh seeds (:func:`~ase_search.search.points.confirm_jobs`), on the weights, data and cost
    model the study recorded; returns how many configurations were measured. ``timesteps``:
    ``ase-search timesteps`` files whose timesteps join the ladder first (the full model there,
    so every lever is judged against them too; they stay in the study's ladder).

    Raises:
        SearchError: ``seeds`` < 2, the study has no trials or steps-only baseline yet, or a
            timesteps file is not one.
    """
    from dataclasses import fields

    from ase_search.finetune import recorded_weights
    from ase_search.pareto import open_study, study_dir

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise SearchError(f"seeds must be an integer >= 2 (a spread needs two), got {seeds!r}",
                          fields=("seeds",))
    study = open_study(storage, study_name)
    attrs = study.user_attrs
    if "config" not in attrs or "cost_model" not in attrs:
        raise SearchError(f"study {study.study_name!r} is not an ase-search study with measured "
                          f"trials; run `ase-search run` first")
    known = {f.name for f in fields(SearchConfig)}
    # A list study's list is not read again (its configurations are the study's trials), and
    # may have moved or gone since the run.
    config = SearchConfig(**{k: v for k, v in attrs["config"].items()
                             if k in known and k != "configs"})
    folder = study_dir(study)
    # the study's own file, and a diffusers folder recorded relative to it (or moved with it)
    config = replace(config, storage=storage, diffusers=None if not config.diffusers else
                     str(resolve_recorded_path(config.diffusers, folder)))
    if max_concurrent is not None:
        config = replace(config, max_concurrent=max_concurrent)

    def timed() -> None:
        time_confirmed(study, starting_weights(config), batch_size=config.batch_size,
                       diffusers=bool(config.diffusers), log=log)
        record_look(study)

    try:
        for added in add_ladder_timesteps(study, list(timesteps)):
            log(f"the steps-only ladder gains {added.describe()}")
    except ValueError as err:
        raise SearchError(str(err), fields=()) from None
    if not config.diffusers and timesteps_missing(study):  # made before the ladder had them
        import torch

        from ase_search.testbed import load_model

        search_ladder_timesteps(study, load_model(config.arch, config.checkpoint),
                                device="cuda" if torch.cuda.is_available() else "cpu", log=log)
    jobs = confirm_jobs(study, seeds)
    if not jobs and not steps_only_jobs(study):
        log(f"every configuration to confirm already holds {seeds} seeds")
        timed()
        return 0
    # The study's (fine-tuned) weights only where a lever's point still needs seeds: the
    # steps-only ladder runs the starting weights, so a study whose one-shot weights are not on
    # this machine can still have its ladder measured on the seeds its levers hold.
    needs_study = any(not j.start for j in jobs)
    weights = (Path(config.diffusers) if config.diffusers else
               recorded_weights(attrs.get("weights"), folder, arch=config.arch) if needs_study
               else starting_weights(config))
    started = time.perf_counter()
    started_ray = init_ray(config)
    try:
        resources, concurrent, cpus = trial_resources(config)
        cache = ((folder or Path("studies").resolve())
                 / f"{study_prefix(storage, study.study_name)}-self")
        ctx = TrialContext(config=asdict(config), weights=str(weights), space=attrs["space"],
                           cost_model=attrs["cost_model"], cpus=cpus,
                           weights_bytes=(Path(weights).read_bytes() if Path(weights).is_file()
                                          else None), cache_dir=str(cache))
        contexts = {"start": starting_context(ctx, starting_weights(config))}
        if needs_study:
            contexts["study"] = ctx
        measured, failures = confirm(study, seeds, contexts, resources=resources,
                                     concurrent=concurrent, progress=progress, log=log)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    study.set_user_attr("last_confirm", {"finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                         "wall_time": time.perf_counter() - started,
                                         "seeds": seeds, "measured": measured})
    if failures:
        raise SearchError(f"{len(failures)} configuration(s) failed: "
                          + "; ".join(f"{k}: {v}" for k, v in failures.items())[:400])
    timed()
    return measured


def record_look(study: Any) -> None:
    """Record the seed set the study's verdict now rests on as a look (:data:`~ase_search.record
    .VERDICT_LOOKS`): a later verdict on more of these seeds is another try at the same claim,
    and the rule pays for each (:func:`ase_search.verdict.judge`'s ``looks``)."""
    from ase_search.fronts import study_verdict
    from ase_search.record import VERDICT_LOOKS

    seeds = list(study_verdict(study).seeds)
    looks = list(study.user_attrs.get(VERDICT_LOOKS) or [])
    if seeds and seeds not in looks:
        study.set_user_attr(VERDICT_LOOKS, looks + [seeds])


def check_space(study: Any, space: Any) -> None:
    """Refuse to go on with ``space`` when ``study`` was searched in another one.

    The study's identity names the space file; this compares what it holds (a space file edited
    under the same name, e.g. given a ``sampling:`` section, would mix incomparable trials). The
    prose description is not compared.

    Raises:
        SearchError: the stored space differs.
    """
    stored = study.user_attrs.get("space")
    if not isinstance(stored, dict):
        return
    now = space.to_dict()
    differ = sorted(k for k in set(stored) | set(now)
                    if k != "description" and stored.get(k) != now.get(k))
    if differ:
        raise SearchError(
            f"study {study.study_name!r} was searched in another space (its {', '.join(differ)} "
            f"differ from the space file's now); resume with the space it was made with or pass "
            f"another study_name", fields=("study_name",))


def starting_weights(config: SearchConfig) -> Path:
    """The checkpoint the search starts from (``checkpoint``, a diffusers folder, else the shipped
    testbed)."""
    from ase_search.testbed import TESTBEDS

    if config.diffusers:
        return Path(config.diffusers)
    return Path(config.checkpoint).resolve() if config.checkpoint else TESTBEDS[config.arch].path


def study_prefix(storage: str, study_name: str) -> str:
    """What names a study's folders beside its storage (``<prefix>-grids``, ``-tune``, ``-self``):
    the storage file's stem, plus the study's name when it is not the file's default one (so two
    studies in one file never share them); the study's name for a database URL."""
    if "://" in storage:
        return study_name
    stem = Path(storage).stem
    return stem if study_name == stem else f"{stem}-{study_name}"
