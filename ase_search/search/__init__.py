"""The search: an Optuna multi-objective study over exit schedules, evaluated by Ray Tune workers.

Objectives (both minimised): FID of samples drawn with the schedule, and the schedule's sampling
latency predicted by the per-component cost model (:mod:`ase_search.metrics.latency`), which is
noise-free, so trials stay comparable on a busy machine. The space's seed presets (the paper's
D-schedules) are enqueued once, however often a run is resumed.

Fault model. The Optuna storage is the single source of truth. A trial whose worker raises (NaN
loss, out of memory, a bad schedule) is told FAILED with its reason in the ``fail_reason`` user
attribute (the worker reports the metrics as NaN beside it, as Ray Tune requires); a NaN is
never told as a value. Several drivers may share a study (:mod:`~ase_search.search.study`);
``budget`` counts finished (COMPLETE) trials: re-running continues up to it.

Modules:
    config: :class:`SearchConfig`, the Optuna samplers by name, :class:`SearchError`.
    storage: :func:`open_storage`, the one opener of a study's storage (search, pareto, export).
    study: bookkeeping (identity, seeds, drivers and heartbeats, recovery, re-used results).
    trial: the measuring of one trial (:class:`TrialContext`, :func:`evaluate_schedule`).
    tune: the Ray Tune glue (trainable, searcher, resources).
    points: configurations measured outside the Optuna loop (the steps-only baseline, the
        confirmation seeds), as Ray tasks.
    run: :func:`run_search` and its progress bar; :func:`confirm_study`.
"""

from ase_search.search.config import (
    FINETUNE_MODES,
    SAMPLER_ALGOS,
    SearchConfig,
    SearchError,
    one_shot_config,
)
from ase_search.search.run import (
    SearchSummary,
    StudyProgress,
    check_weights_key,
    confirm_study,
    run_search,
)
from ase_search.storage import JOURNAL_SUFFIXES, StudyError, open_storage, resolve_storage
from ase_search.search.study import (
    HEARTBEAT_EVERY,
    HEARTBEAT_GRACE,
    METRICS,
    TRIAL_ATTRS,
    Driver,
    driver_gone,
    enqueue_seeds,
    open_or_create_study,
    recover_interrupted,
    remove_stale_tune_dirs,
)
from ase_search.search.trial import TrialContext, evaluate_schedule
from ase_search.search.tune import make_searcher, trainable

__all__ = [
    "FINETUNE_MODES",
    "HEARTBEAT_EVERY",
    "HEARTBEAT_GRACE",
    "JOURNAL_SUFFIXES",
    "METRICS",
    "SAMPLER_ALGOS",
    "TRIAL_ATTRS",
    "Driver",
    "SearchConfig",
    "SearchError",
    "SearchSummary",
    "StudyError",
    "StudyProgress",
    "TrialContext",
    "check_weights_key",
    "confirm_study",
    "driver_gone",
    "enqueue_seeds",
    "evaluate_schedule",
    "make_searcher",
    "one_shot_config",
    "open_or_create_study",
    "open_storage",
    "recover_interrupted",
    "remove_stale_tune_dirs",
    "resolve_storage",
    "run_search",
    "trainable",
]
