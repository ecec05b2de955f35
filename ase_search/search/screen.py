"""The screen (issue #24): spend FID only on the candidates that can reach the front.

Every trial of a search measures FID on hundreds of samples; for a big model that is most of the
search's cost. The caching peers that choose their schedules automatically (ECAD, BudCache)
search against the full model's own output instead, and need no data set. With ``--screen N``
the driver first measures N candidates, proposed by the study's search algorithm, by that
data-free objective: the paired error (``paired_rmse``) of each candidate's samples against the
full model's at the reference configuration from the same noise and labels, on ``--screen-n``
samples, next to its predicted latency. They are trials of the companion study
``<study>:screen`` (:func:`~ase_search.record.screen_study_name`), objectives (paired error,
latency). The study's FID budget then goes to the screen's best: candidates in order of their
non-dominated rank in (paired error, latency), then of paired error, distinct configurations
only, enqueued in the study as ordinary trials (trial attribute ``screen`` ``"front"``; the
rest of the budget, if the screen holds fewer, is the search algorithm's own). ``--screen-audit
K`` also enqueues K of the dropped candidates, drawn at random (``"audit"``), so the study can
say whether the screen dropped a point FID would have kept (:func:`screen_summary`).

An interrupted screen resumes: its finished candidates stay, and the ones in flight are asked
again (:func:`~ase_search.search.study.recover_interrupted`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ase_search.record import config_identity, screen_study_name, study_sampler
from ase_search.search.config import SearchConfig, SearchError
from ase_search.search.points import failure_reason
from ase_search.search.study import HEARTBEAT_EVERY, Driver, recover_interrupted
from ase_search.search.trial import TrialContext, decode_trial, evaluate_schedule

__all__ = ["SCREEN", "ScreenSummary", "enqueue_screened", "screen_candidates", "screen_line",
           "screen_ranks", "screen_summary"]

SCREEN = "screen"  # trial user attribute: "front" (the screen's pick) or "audit" (a dropped one)
_SCREEN_N = "screen_n"  # the screen study's user attribute: samples per candidate


@dataclass(frozen=True)
class ScreenSummary:
    """What a study's screen did.

    Attributes:
        screened: candidates the screen measured (finished).
        measured: of the FID-measured trials, the screen's picks.
        audited: dropped candidates measured with FID too (finished).
        audit_on_front: of those, how many lie on the study's FID front within the quality
            window (FID at most :data:`~ase_search.verdict.WINDOW` times the full model's at the
            reference configuration, where the verdict looks; the whole front when that is not
            measured): points the screen dropped that FID would have kept.
        rank_correlation: Spearman's correlation of screen paired error and FID over the
            screened trials measured with FID (``None``: fewer than three).
    """

    screened: int
    measured: int
    audited: int
    audit_on_front: int
    rank_correlation: float | None

    @property
    def saved(self) -> int:
        """FID evaluations the screen saved: candidates screened but never FID-measured."""
        return self.screened - self.measured - self.audited


def _screen_study(study: Any, config: SearchConfig) -> Any:
    import optuna

    from ase_search.search.config import SEARCH_ALGORITHMS

    name = screen_study_name(study.study_name)
    screen = optuna.create_study(storage=study._storage, study_name=name, load_if_exists=True,
                                 directions=["minimize", "minimize"],
                                 sampler=SEARCH_ALGORITHMS[config.search_algorithm](config.seed))
    held = screen.user_attrs.get(_SCREEN_N)
    if held is None:
        screen.set_user_attr(_SCREEN_N, config.screen_n)
    elif held != config.screen_n:
        raise SearchError(f"the study's screen measured {held} samples per candidate; resume it "
                          f"with --screen-n {held}", fields=("screen_n",))
    return screen


def _screen_one(params: dict[str, Any], ctx: TrialContext) -> dict[str, Any]:
    """One candidate's paired error and predicted latency (a Ray task)."""
    from threadpoolctl import threadpool_limits

    _, schedule, sampler = decode_trial(params, ctx)
    with threadpool_limits(limits=ctx.cpus):
        result = evaluate_schedule(schedule, ctx, sampler=sampler)
    return {k: result[k] for k in ("paired_rmse", "latency", "schedule", "sampler")}


def screen_candidates(study: Any, space: Any, config: SearchConfig, ctx: TrialContext, *,
                      resources: dict[str, float], concurrent: int,
                      tick: Callable[[], None] = lambda: None, progress: bool = True,
                      log: Callable[[str], None] = print) -> Any:
    """Measure up to ``config.screen`` candidates of the study's search algorithm by paired
    error and latency, as Ray tasks (at most ``concurrent`` at once), into the screen study;
    returns it.

    Raises:
        SearchError: most candidates failed (the first reason is named).
    """
    import ray
    from optuna.trial import TrialState

    from ase_search.progress import progress_bar

    screen = _screen_study(study, config)
    driver = Driver.this_process()
    driver.beat(screen)
    last_beat = time.monotonic()
    recover_interrupted(screen, names=space.distributions())
    todo = config.screen - len(screen.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if todo <= 0:
        return screen
    log(f"screen: measuring {todo} candidate(s) by their paired error against the full model "
        f"({config.screen_n} samples each)")
    screen_ctx = replace(ctx, config={**ctx.config, "n_samples": config.screen_n,
                                      "fid_data": "self", "grid": 0, "kid": False})
    task = ray.remote(num_cpus=resources.get("cpu", 1), num_gpus=resources.get("gpu", 0),
                      max_retries=0)(_screen_one)
    ref = ray.put(screen_ctx)
    running: dict[Any, Any] = {}
    failed: list[str] = []
    with progress_bar(enabled=progress) as bar:
        bar_task = bar.add_task("screen", total=todo)
        while todo > 0 or running:
            while todo > 0 and len(running) < concurrent:
                trial = screen.ask(space.distributions())
                trial.set_user_attr("driver", driver.id)
                running[task.remote(trial.params, ref)] = trial
                todo -= 1
            done, _ = ray.wait(list(running), num_returns=1, timeout=2.0)
            tick()
            if time.monotonic() - last_beat >= HEARTBEAT_EVERY:
                driver.beat(screen)
                last_beat = time.monotonic()
            for r in done:
                trial = running.pop(r)
                try:
                    result = ray.get(r)
                except Exception as err:  # noqa: BLE001 - one candidate fails, not the screen
                    reason = failure_reason(err)
                    trial.set_user_attr("fail_reason", reason)
                    screen.tell(trial, state=TrialState.FAIL)
                    failed.append(reason)
                else:
                    for key in ("schedule", "sampler"):
                        trial.set_user_attr(key, result[key])
                    screen.tell(trial, [float(result["paired_rmse"]), float(result["latency"])])
                bar.advance(bar_task)
            if len(failed) > max(2, config.screen // 2):
                raise SearchError(f"the screen stopped: {len(failed)} candidates failed "
                                  f"({failed[0]})", fields=("screen",))
    driver.beat(screen, stopped=True)
    return screen


def screen_ranks(trials: list[Any]) -> dict[int, int]:
    """Trial number -> non-dominated rank in (paired error, latency) (1: the screen's front),
    by peeling fronts."""
    from ase_search.verdict import non_dominated

    left = {t.number: (t.number, t.values[0], t.values[1]) for t in trials}
    ranks, rank = {}, 1
    while left:
        front = non_dominated(list(left.values()))
        for number, _, _ in front:
            ranks[number] = rank
            del left[number]
        rank += 1
    return ranks


def _identity(attrs: dict[str, Any]) -> Any:
    return config_identity(attrs["sampler"], attrs["schedule"])


def _held_identity(trial: Any, space: Any, one: Any, searched: dict[str, Any] | None) -> Any:
    """A study trial's configuration: measured (its attributes), or decoded from its (queued:
    fixed) parameters; ``None`` when they are not a whole configuration."""
    from ase_search.space import SpaceError

    if "schedule" in trial.user_attrs and "sampler" in trial.user_attrs:
        return _identity(trial.user_attrs)
    params = trial.params or trial.system_attrs.get("fixed_params") or {}
    try:
        return config_identity(space.sampler_from_params(params, one, searched).to_dict(),
                               space.from_params(params).to_dict())
    except SpaceError:
        return None


def enqueue_screened(study: Any, screen: Any, space: Any, config: SearchConfig,
                     searched: dict[str, Any] | None = None,
                     log: Callable[[str], None] = print) -> int:
    """Enqueue the screen's best candidates in ``study`` (its budget minus what it holds, queued
    or running, and the audit), then ``config.screen_audit`` dropped ones at random; returns how
    many were enqueued. A configuration the study holds already (measured, or queued: decoded
    from its parameters in ``space``, with the study's ``searched`` timesteps) is not enqueued
    again."""
    from optuna.trial import TrialState

    held = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING,
                                                    TrialState.RUNNING))
    one = study_sampler(study.user_attrs.get("config") or {})
    taken = {_held_identity(t, space, one, searched) for t in held}
    audits = sum(t.user_attrs.get(SCREEN) == "audit" for t in held)
    screened = [t for t in screen.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if "schedule" in t.user_attrs]
    ranks = screen_ranks(screened)
    order = sorted(screened, key=lambda t: (ranks[t.number], t.values[0], t.number))
    room = config.budget - len(held) - (config.screen_audit - audits)
    picks, dropped = [], []
    for t in order:
        ident = _identity(t.user_attrs)
        if ident in taken:
            continue
        (picks if len(picks) < room else dropped).append(t)
        taken.add(ident)
    rng = random.Random(config.seed)
    audit = rng.sample(dropped, min(len(dropped), max(0, config.screen_audit - audits)))
    for kind, trials in (("front", picks), ("audit", audit)):
        for t in trials:
            study.enqueue_trial(dict(t.params), user_attrs={
                SCREEN: kind, "screen_trial": t.number, "screen_paired_rmse": t.values[0],
                "screen_rank": ranks[t.number]})
    if picks or audit:
        log(f"screen: {len(picks)} of {len(screened)} screened candidate(s) go to FID"
            + (f", and {len(audit)} dropped one(s) as an audit" if audit else ""))
    return len(picks) + len(audit)


def screen_summary(study: Any) -> ScreenSummary | None:
    """What the study's screen did (``None``: it had none)."""
    import optuna
    from optuna.trial import TrialState

    from ase_search.fronts import study_fronts
    from ase_search.verdict import WINDOW, non_dominated

    try:
        screen = optuna.load_study(study_name=screen_study_name(study.study_name),
                                   storage=study._storage)
    except KeyError:
        return None
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reference = study_fronts(study).reference
    edge = float("inf") if reference is None else WINDOW * reference.fid
    front = {number for number, fid, _ in non_dominated(
        [(t.number, t.values[0], t.values[1]) for t in done]) if fid <= edge}
    picked = [t for t in done if t.user_attrs.get(SCREEN) == "front"]
    audited = [t for t in done if t.user_attrs.get(SCREEN) == "audit"]
    screened = [t for t in (*picked, *audited) if "screen_paired_rmse" in t.user_attrs]
    correlation = None
    if len(screened) >= 3:
        import pandas as pd

        frame = pd.DataFrame({"rmse": [t.user_attrs["screen_paired_rmse"] for t in screened],
                              "fid": [t.values[0] for t in screened]})
        value = frame["rmse"].corr(frame["fid"], method="spearman")
        correlation = None if value != value else float(value)  # NaN: constant column
    return ScreenSummary(
        screened=len(screen.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
        measured=len(picked), audited=len(audited),
        audit_on_front=sum(t.number in front for t in audited),
        rank_correlation=correlation)


def screen_line(summary: ScreenSummary) -> str:
    """One sentence for ``pareto``."""
    audit = ("" if not summary.audited else
             f"; of {summary.audited} dropped candidate(s) measured as an audit, "
             f"{summary.audit_on_front} lie on the FID front in the quality window"
             + (" (the screen dropped a point FID would have kept)"
                if summary.audit_on_front else " (none that FID would have kept)"))
    corr = ("" if summary.rank_correlation is None else
            f"; rank correlation of screen error and FID {summary.rank_correlation:.2f}")
    return (f"screen: {summary.screened} candidates screened by paired error, "
            f"{summary.measured} measured with FID ({summary.saved} FID evaluations saved)"
            + audit + corr)
