"""The Ray Tune glue: the trainable that measures a trial on a worker, the searcher that tells
its results into the study, and the cluster's resources.

Tune's own experiment restore is not used: its searcher snapshot can lag the database, which is
what decides (:mod:`ase_search.search.study`).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ase_search.search.config import SEARCH_ALGORITHMS, SearchConfig, SearchError
from ase_search.search.study import METRICS, NESTED_ATTRS, TRIAL_ATTRS, measured_twin, tell_result
from ase_search.search.trial import TrialContext, decode_trial, evaluate_schedule

__all__ = ["MAX_REUSED_PER_SUGGESTION", "fit_polling", "init_ray",
           "make_searcher", "shipped_package", "trainable", "trial_resources"]

# Suggestions told a measured twin's result in a row before the searcher measures one anyway.
MAX_REUSED_PER_SUGGESTION = 20


def trainable(params: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable: decode, evaluate, report (never raises)."""
    from ray import tune

    from ase_search.space import schedules_equivalent

    started = time.perf_counter()
    try:
        space, schedule, sampler = decode_trial(params, ctx)
        preset_name = next((name for name, s in zip(space.seeds, space.seed_schedules())
                            if schedules_equivalent(s, schedule)), None)
        schedule = replace(schedule, name=preset_name or schedule.name)
        # A seed trial is a preset at the reference configuration's sampler (a joint space's
        # preset at another sampler is a searched point that happens to use a preset schedule).
        reference = space.sampling.reference_config if space.sampling is not None else sampler
        preset = preset_name if sampler == reference else None
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=ctx.cpus):  # oversubscribed BLAS threads spin for ages
            result = evaluate_schedule(schedule, ctx, sampler=sampler, reference=reference)
        result["preset"] = preset
        if result.get("grid_png") is not None:  # bytes travel as text; the driver saves them
            result["grid_png"] = base64.b64encode(result["grid_png"]).decode("ascii")
    except Exception as err:  # reported as a FAILED trial with its reason; the study goes on
        last = traceback.format_exc().strip().splitlines()[-1]
        # Tune insists that every result carries the study's metrics (its strict metric check
        # raises in the driver otherwise), so a failure reports them as NaN; the searcher's
        # on_trial_complete sees fail_reason and tells the study FAIL, never the NaNs.
        result = {**{m: float("nan") for m in METRICS},
                  "fail_reason": f"{type(err).__name__}: {err}"[:500], "traceback": last}
    result["worker_time"] = time.perf_counter() - started
    import ray

    if ray.is_initialized():  # on a worker; asking outside one would start a local Ray
        result["node"] = ray.get_runtime_context().get_node_id()  # which node measured it
    # Tune flattens nested dicts in results; ship them as JSON text and decode in the searcher.
    tune.report({k: json.dumps(v) if k in NESTED_ATTRS else v for k, v in result.items()})


def make_searcher(space: Any, storage: Any, config: SearchConfig, driver_id: str | None = None,
                  grids_dir: str | Path | None = None, grids_base: str | Path | None = None):
    """Ray's OptunaSearch, telling results (and failures, with reasons) into our study; every
    trial it asks is tagged with ``driver_id`` (see :class:`Driver`). A trial's sample grid,
    sent back as PNG bytes, is saved as ``grids_dir/trial-<id>.png`` (on the driver: the trial's
    node may see none of the study's folder) and recorded relative to ``grids_base`` (the study
    file's folder; None: as an absolute path)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        def suggest(self, trial_id: str) -> dict | str | None:
            # A suggestion whose schedule a finished trial already measured is told that trial's
            # values at once (the measurement is deterministic: common random numbers), and the
            # sampler is asked again. Many parameter sets decode to one schedule, and GP on an
            # integer space re-proposes points it has seen.
            for _ in range(MAX_REUSED_PER_SUGGESTION):
                if self._count(optuna.trial.TrialState.COMPLETE,
                               optuna.trial.TrialState.RUNNING) >= config.budget:
                    return self.FINISHED
                params = super().suggest(trial_id)
                ot_trial = self._ot_trials[trial_id]
                if driver_id is not None:  # at once: other drivers recover untagged trials
                    ot_trial.set_user_attr("driver", driver_id)
                twin = measured_twin(self._ot_study, space, ot_trial.params)
                if twin is None:
                    return params
                for key, value in twin.user_attrs.items():
                    if key not in ("wall_time", "time_split", "worker_time", "preset", "seed"):
                        ot_trial.set_user_attr(key, value)
                # The twin ran the same configuration, perhaps written as another schedule
                # (one that differs only where the sampler never calls the model): the trial
                # keeps its own.
                ot_trial.set_user_attr("schedule", space.from_params(ot_trial.params).to_dict())
                ot_trial.set_user_attr("duplicate_of", twin.number)
                self._ot_study.tell(ot_trial, list(twin.values))
                del self._ot_trials[trial_id]
            return params  # the sampler insists: measure it again rather than stall

        def _count(self, *states: Any) -> int:
            return len(self._ot_study.get_trials(deepcopy=False, states=states))

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            if trial_id in self._completed_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            reason = None
            values: list[float] = []
            if error or not result:
                reason = "the trial's worker crashed (see the Ray logs)"
            elif result.get("fail_reason"):
                reason = str(result["fail_reason"])
            else:
                values = [float(result.get(m, float("nan"))) for m in METRICS]
                if not all(math.isfinite(v) for v in values):
                    reason = f"non-finite objectives {dict(zip(METRICS, values))}"
            attrs = {key: json.loads(result[key]) if key in NESTED_ATTRS else result[key]
                     for key in (*TRIAL_ATTRS, "worker_time")
                     if result and result.get(key) is not None}
            if reason is None and grids_dir is not None and result.get("grid_png"):
                from ase_search.files import atomic_write

                png = base64.b64decode(result["grid_png"])
                file = atomic_write(Path(grids_dir) / f"trial-{trial_id}.png",
                                    lambda tmp: tmp.write_bytes(png))
                attrs["grid"] = (os.path.relpath(file, grids_base) if grids_base is not None
                                 else str(file))
            if reason is not None:
                attrs["fail_reason"] = reason
            tell_result(self._ot_study, ot_trial, None if reason is not None else values, attrs)
            self._completed_trials.add(trial_id)

    searcher = StudySearch(
        space=space.distributions(),
        metric=list(METRICS),
        mode=["min", "min"],
        sampler=SEARCH_ALGORITHMS[config.search_algorithm](config.seed),
        storage=storage,
        study_name=config.resolved_study_name,
        seed=config.seed,
    )
    return searcher




class _FirstLine(logging.Filter):
    """Ray Tune logs whole tracebacks (a failed trial's, a dead node's, a failed sync of its own
    state); the study records a failure with its reason, so the user gets the first line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info or "\n" in message:
            record.msg, record.args, record.exc_info = message.splitlines()[0], (), None
        return True


def init_ray(config: SearchConfig) -> bool:
    """Start (or join) Ray; return whether we started it (and so must shut it down)."""
    import ray

    # Tune's tracebacks: a failed trial's, and its own experiment-state sync, which races with
    # the searcher's state file at times (harmless: the study, not Tune's state, is restored).
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune",
                 "ray.tune.execution.experiment_state"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _FirstLine) for f in logger.filters):
            logger.addFilter(_FirstLine())

    if ray.is_initialized():
        return False
    # Ray starts its workers at nice 15; next to any other busy process (a data loader, another
    # job) the trials then crawl (measured: 20x slower beside one CPU-bound process). The trials
    # are the work here, so they run at normal priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if config.ray_address:
        # The other nodes run this driver's ase_search, shipped through Ray: a node need not
        # have it installed (or see the driver's checkout), and never runs another version.
        _check_reachable(config.ray_address)
        try:
            ray.init(address=config.ray_address, logging_level="ERROR", log_to_driver=False,
                     runtime_env=shipped_package())
        except (ConnectionError, ray.exceptions.AuthenticationError) as err:
            why = f"{err} {err.__cause__}"
            if "AuthToken" in why or "Authentication" in why:
                raise SearchError(f"the Ray cluster at {config.ray_address} asks for its token: "
                                  f"run with RAY_AUTH_MODE=token (the token in "
                                  f"~/.ray/auth_token or RAY_AUTH_TOKEN)",
                                  fields=("ray_address",)) from None
            raise SearchError(f"cannot join the Ray cluster at {config.ray_address}: "
                              f"{str(err).splitlines()[0]}", fields=("ray_address",)) from None
        return False
    # "local": a new instance of our own. Without it ray.init() joins the cluster a `ray start`
    # on this machine left its address for, even a dead one (then it waits forever).
    ray.init(address="local", include_dashboard=False, logging_level="ERROR",
             log_to_driver=False, configure_logging=True)
    return True


def _check_reachable(address: str) -> None:
    """Refuse at once a ``host:port`` with nothing listening (Ray itself retries for minutes)."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or "://" in address or not port.isdigit():
        return  # "auto", "ray://...": Ray's own forms
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise SearchError(f"cannot reach a Ray cluster at {address} ({err.strerror or err}); "
                          f"start one there with `ray start --head --port {port}`, or check the "
                          f"address", fields=("ray_address",)) from None


def shipped_package() -> dict[str, Any]:
    """The Ray runtime environment that ships this ase_search package to every node (less the
    one-shot weights, which only the driver reads; trials get their weights in the context)."""
    import ase_search

    return {"py_modules": [os.path.dirname(ase_search.__file__)],
            "excludes": ["__pycache__", "*.pyc", "assets/one-shot"]}


def trial_resources(config: SearchConfig) -> tuple[dict[str, float], int, int]:
    """Per-trial resources that the cluster can actually grant, concurrency and CPU threads."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = int(total.get("CPU", 1)), int(total.get("GPU", 0))
    gpus_per_trial = config.gpus_per_trial
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 if gpus > 0 else 0.0
    if gpus_per_trial > gpus:
        raise SearchError(f"gpus_per_trial is {gpus_per_trial} but the Ray cluster has {gpus} "
                          f"GPU(s), so the trials could never start; set it to 0",
                          fields=("gpus_per_trial",))
    if config.max_concurrent is not None:
        concurrent = config.max_concurrent
    elif gpus_per_trial > 0:
        concurrent = max(1, int(gpus // gpus_per_trial))
    else:  # one single-threaded trial per core: small models scale badly across threads
        concurrent = max(1, cpus)
    cpus_per_trial = max(1, cpus // concurrent)
    return {"cpu": cpus_per_trial, "gpu": gpus_per_trial}, concurrent, cpus_per_trial



def fit_polling(tuner: Any, tick: Callable[[], None], every: float = 2.0) -> None:
    """Run ``tuner.fit()`` in a thread while the main thread calls ``tick`` (progress bar,
    heartbeat) every ``every`` seconds."""
    import threading

    error: list[BaseException] = []

    def target() -> None:
        try:
            tuner.fit()
        except BaseException as err:  # re-raised in the driver thread
            error.append(err)

    thread = threading.Thread(target=target, name="ray-tune-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(every)
        tick()
    if error:
        raise error[0]
