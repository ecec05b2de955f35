"""Study bookkeeping: a study's identity, its seeds, its drivers, recovery and re-used results.

The Optuna storage is the single source of truth. Several drivers may share a study on any
storage (a journal file on one machine; an RDB URL such as PostgreSQL across machines): each tags
the trials it asks with its id and keeps a heartbeat in the study (:class:`Driver`). A run marks
FAILED ("interrupted") and enqueues again only the RUNNING trials whose driver is gone
(:func:`driver_gone`: a dead process on this host, or a heartbeat older than
:data:`HEARTBEAT_GRACE`), so no finished trial is lost, no interrupted one is skipped and no live
driver's trial is taken. A result for a trial that was finished meanwhile is kept as a new
COMPLETE trial (``retold_from``, :func:`tell_result`). A suggestion whose schedule a finished
trial already measured is told that trial's values without running (``duplicate_of`` names the
twin, :func:`measured_twin`).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ase_search.search.config import SEARCH_ALGORITHMS, SearchConfig, SearchError

__all__ = [
    "HEARTBEAT_EVERY",
    "HEARTBEAT_GRACE",
    "METRICS",
    "NESTED_ATTRS",
    "TRIAL_ATTRS",
    "Driver",
    "driver_gone",
    "enqueue_seeds",
    "measured_twin",
    "open_or_create_study",
    "params_key",
    "recover_interrupted",
    "remove_stale_tune_dirs",
    "tell_result",
]

METRICS = ("fid", "latency")  # the study's objectives, both minimised
# Trial user attributes written from a worker's result (the contract of ase_search.pareto).
TRIAL_ATTRS = ("schedule", "sampler", "fid", "kid_mean", "kid_std", "latency", "acceleration",
               "lever_acceleration", "block_acceleration", "block_evals", "finetune_steps",
               "wall_time", "time_split", "preset", "paired_rmse", "node")
# dict-valued: they travel through Tune as JSON text
NESTED_ATTRS = ("schedule", "sampler", "time_split")


# Identity keys that name files: a study moved to another folder or machine is given other paths
# to the same files, so what those hold is compared instead (the space's content by check_space,
# a diffusers folder by its fingerprint, the checkpoint by its sha256 where both record one).
_PATH_KEYS = ("space", "checkpoint", "diffusers")


def _comparable(identity: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """``identity`` without its file paths, and without content keys ``other`` lacks (studies
    recorded before those keys existed resume as before)."""
    content = ("checkpoint_sha256",)
    return {k: v for k, v in identity.items()
            if k not in _PATH_KEYS and (k not in content or k in other)}


def storage_folder(config: Any) -> Path | None:
    """The folder of a study file (``None`` for a server database)."""
    storage = config.resolved_storage
    if "://" in storage and not storage.startswith("sqlite:///"):
        return None
    return Path(storage.split("///", 1)[-1]).resolve().parent


def portable_config(config: Any, folder: Path | None) -> dict[str, Any]:
    """``config`` as the study records it: the storage as the study file's name and a diffusers
    folder relative to the study's folder, so that the study moved elsewhere (another folder,
    another machine) still resolves them (:func:`resolve_recorded_path`)."""
    recorded = asdict(config)
    if folder is not None:
        recorded["storage"] = Path(config.resolved_storage.split("///", 1)[-1]).name
        if config.diffusers:
            recorded["diffusers"] = os.path.relpath(Path(config.diffusers).resolve(), folder)
    return recorded


def resolve_recorded_path(recorded: str, folder: Path | None) -> Path:
    """A path a study recorded: relative ones against the study's folder; an absolute one that is
    gone (the study moved) by its name beside the study, where that exists."""
    path = Path(recorded)
    if not path.is_absolute():
        return (folder / path) if folder is not None else path
    if not path.exists() and folder is not None and (folder / path.name).exists():
        return folder / path.name
    return path


def open_or_create_study(config: SearchConfig, storage: Any, *, extra_attrs: dict[str, Any]):
    """Load the study or create it; refuse to continue a study made with other settings."""
    import optuna

    name = config.resolved_study_name
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                directions=["minimize", "minimize"],
                                sampler=SEARCH_ALGORITHMS[config.search_algorithm](config.seed))
    if len(study.directions) != 2:
        raise SearchError(f"study {name!r} in {config.resolved_storage} is not a two-objective "
                          f"ase-search study; pass another study_name", fields=("study_name",))
    stored = study.user_attrs.get("identity")
    if stored is None:
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2; the API is stable
            warnings.simplefilter("ignore")
            study.set_metric_names(list(METRICS))
        study.set_user_attr("identity", config.identity())
        study.set_user_attr("config", portable_config(config, storage_folder(config)))
        study.set_user_attr("arch", config.arch)
        study.set_user_attr("created", time.strftime("%Y-%m-%d %H:%M:%S"))
        for key, value in extra_attrs.items():
            study.set_user_attr(key, value)
    elif bool(stored.get("listed")) != (config.configs is not None):
        raise SearchError(
            f"study {name!r} in {config.resolved_storage} "
            + ("measured a list of configurations; give it configs again (a list study is not "
               "searched)" if stored.get("listed") else
               "is a search; measure a list of configurations in a study of its own")
            + ", or pass another study_name", fields=("study_name",))
    elif _comparable(stored, config.identity()) != _comparable(config.identity(), stored):
        now = config.identity()
        diff = {k: (stored.get(k), v) for k, v in _comparable(now, stored).items()
                if stored.get(k) != v}
        raise SearchError(
            f"study {name!r} in {config.resolved_storage} was run with other settings "
            f"(stored vs now: {diff}); resume with the same settings or pass another study_name",
            fields=("study_name",))
    return study


def params_key(trial: Any) -> tuple:
    """A trial's parameters; a WAITING (enqueued) trial keeps them in ``fixed_params``."""
    params = trial.params or trial.system_attrs.get("fixed_params", {})
    return tuple(sorted(params.items()))


# --------------------------------------------------------------------------------------------
# Drivers: several may share a study; each proves it is alive by a heartbeat in the study
# --------------------------------------------------------------------------------------------
HEARTBEAT_EVERY = 10.0  # seconds between a driver's heartbeats
HEARTBEAT_GRACE = 120.0  # a driver silent for longer is gone (its host may be unreachable)
_DRIVER_PREFIX = "driver:"  # study user attribute of driver <id>: {host, pid, beat[, stopped]}


@dataclass(frozen=True)
class Driver:
    """One search driver process. It tags the trials it asks (trial user attribute ``driver``)
    and records a heartbeat in the study (study user attribute ``driver:<id>``), so that another
    driver on the same study (any storage) recovers only trials whose driver is gone.

    Args:
        id: unique over hosts and time (host, pid and a random suffix).
        host: the host name the driver runs on.
        pid: its process id there.
    """

    id: str
    host: str
    pid: int

    @classmethod
    def this_process(cls) -> Driver:
        import socket
        import uuid

        host, pid = socket.gethostname(), os.getpid()
        return cls(id=f"{host}-{pid}-{uuid.uuid4().hex[:8]}", host=host, pid=pid)

    def beat(self, study: Any, *, stopped: bool = False) -> None:
        """Record that this driver is alive now (or, with ``stopped``, that it has ended)."""
        record = {"host": self.host, "pid": self.pid, "beat": time.time()}
        if stopped:
            record["stopped"] = True
        study.set_user_attr(_DRIVER_PREFIX + self.id, record)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def driver_gone(study_attrs: dict[str, Any], driver_id: str, *, now: float | None = None,
                grace: float = HEARTBEAT_GRACE) -> bool:
    """Whether driver ``driver_id`` of a study (its ``user_attrs``) has stopped: it said so, or
    it ran on this host and its process is dead, or its last heartbeat is older than ``grace``
    seconds. A driver with no heartbeat at all is gone (a driver beats before it asks a trial)."""
    import socket

    record = study_attrs.get(_DRIVER_PREFIX + driver_id)
    if not isinstance(record, dict) or record.get("stopped"):
        return True
    if record.get("host") == socket.gethostname() and not _pid_alive(int(record.get("pid", 0))):
        return True
    return (time.time() if now is None else now) - float(record.get("beat", 0.0)) > grace


def recover_interrupted(study: Any, *, now: float | None = None,
                        grace: float = HEARTBEAT_GRACE,
                        names: Collection[str] | None = None) -> int:
    """Mark trials left RUNNING by a driver that is gone FAILED and enqueue their parameters
    again. Trials of live drivers (:func:`driver_gone`) are theirs to finish. A RUNNING trial
    with no ``driver`` tag comes from a study made before drivers were tagged, or was asked an
    instant ago and is about to be tagged: it is recovered unless it started within ``grace``
    seconds while a live driver was around. A driver killed while its sampler was still
    suggesting leaves a trial with only some parameters: with ``names`` (the parameters of a whole
    configuration, the space's), a trial missing one is not queued again, where its parameters
    would fix part of a new suggestion."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    attrs = study.user_attrs
    now = time.time() if now is None else now
    live = [key[len(_DRIVER_PREFIX):] for key in attrs if key.startswith(_DRIVER_PREFIX)
            and not driver_gone(attrs, key[len(_DRIVER_PREFIX):], now=now, grace=grace)]
    waiting = {params_key(t)
               for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("driver")
        if owner is not None and owner in live:
            continue
        if owner is None and live and trial.datetime_start is not None and \
                now - trial.datetime_start.timestamp() < grace:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason",
                                        "interrupted: the search driver stopped before this "
                                        "trial finished; it was queued again")
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:  # its driver told it meanwhile: nothing to recover
            continue
        key = tuple(sorted(trial.params.items()))
        whole = names is None or set(names) <= set(trial.params)
        if trial.params and whole and key not in waiting:
            study.enqueue_trial(dict(trial.params), user_attrs=dict(
                {k: v for k, v in trial.user_attrs.items() if k in ("preset", "seed")}))
            waiting.add(key)
        recovered += 1
    return recovered


def enqueue_seeds(study: Any, space: Any) -> list[str]:
    """Enqueue each seed preset unless a trial with its parameters is already finished, queued
    or running (a seed that failed is queued again)."""
    from optuna.trial import TrialState

    taken = {
        params_key(t)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING,
                                                          TrialState.RUNNING))
    }
    added = []
    for name, schedule in zip(space.seeds, space.seed_schedules()):
        params = space.seed_params(schedule)  # at the reference sampler in a joint space
        key = tuple(sorted(params.items()))
        if key not in taken:
            study.enqueue_trial(params, user_attrs={"preset": name})
            taken.add(key)
            added.append(name)
    return added



def tell_result(study: Any, trial: Any, values: list[float] | None, attrs: dict[str, Any]) -> None:
    """Tell ``trial`` its measurement (``values``; ``None``: FAILED) and user attributes. If it
    was finished meanwhile by someone else (a driver that took ours for gone), a measurement is
    kept as a new COMPLETE trial with the same parameters (``retold_from`` names the original)
    rather than lost; a failure is dropped, the trial being failed already."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if values is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, values)
        return
    except UpdateFinishedTrialError:
        pass
    except ValueError as err:  # study.tell's "Cannot tell a FAIL trial."
        if "Cannot tell" not in str(err):
            raise
    if values is None:
        return
    frozen = study._storage.get_trial(trial._trial_id)
    study.add_trial(optuna.trial.create_trial(
        params=frozen.params, distributions=frozen.distributions, values=values,
        user_attrs={**{k: v for k, v in frozen.user_attrs.items() if k != "fail_reason"},
                    **attrs, "retold_from": frozen.number}))


def measured_twin(study: Any, space: Any, params: dict[str, Any]) -> Any:
    """The first COMPLETE trial of ``study`` that measured the configuration ``params`` decode
    to: the same sampler and the same blocks at every call (:func:`~ase_search.fronts.
    config_identity`; schedules that differ only where the sampler never calls the model are one
    configuration). A trial that records no sampler ran the study's one sampler."""
    from optuna.trial import TrialState

    from ase_search.record import (SEARCHED_TIMESTEPS, config_identity, searched_table,
                                   study_sampler)

    one = study_sampler(study.user_attrs.get("config") or {})
    searched = searched_table(study.user_attrs.get(SEARCHED_TIMESTEPS))
    sampler = space.sampler_from_params(params, one, searched).to_dict()
    wanted = config_identity(sampler, space.from_params(params).to_dict())
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        data = trial.user_attrs.get("schedule")
        if data is not None and config_identity(trial.user_attrs.get("sampler")
                                                or one.to_dict(), data) == wanted:
            return trial
    return None



def remove_stale_tune_dirs(root: Path, study: Any) -> None:
    """Remove the Tune folders under ``root`` whose driver (the folder's name) is gone."""
    if not root.is_dir():
        return
    attrs = study.user_attrs
    for folder in root.iterdir():
        if folder.is_dir() and driver_gone(attrs, folder.name):
            shutil.rmtree(folder, ignore_errors=True)

