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
    (The one opener of a study's storage, :func:`ase_search.storage.open_storage`, is a primitive.)
    study: bookkeeping (identity, seeds, drivers and heartbeats, recovery, re-used results).
    trial: the measuring of one trial (:class:`TrialContext`, :func:`evaluate_schedule`).
    tune: the Ray Tune glue (trainable, searcher, resources).
    points: configurations measured outside the Optuna loop (the steps-only baseline, the
        confirmation seeds), as Ray tasks.
    run: :func:`run_search` and its progress bar; :func:`confirm_study`.
"""

from ase_search.search.config import SearchConfig, SearchError, one_shot_config
from ase_search.search.run import SearchSummary, confirm_study, run_search
from ase_search.search.trial import TrialContext, evaluate_schedule
from ase_search.storage import StudyError

# What users call; everything else is imported from its submodule.
__all__ = [
    "SearchConfig",
    "SearchError",
    "SearchSummary",
    "StudyError",
    "TrialContext",
    "confirm_study",
    "evaluate_schedule",
    "one_shot_config",
    "run_search",
]
