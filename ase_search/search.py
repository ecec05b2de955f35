"""The search: an Optuna multi-objective study over exit schedules, evaluated by Ray Tune workers.

Objectives (both minimised): FID of samples drawn with the schedule, and the schedule's sampling
latency predicted by the per-component cost model (:mod:`ase_search.metrics.latency`), which is
noise-free, so trials stay comparable on a busy machine. The space's seed presets (the paper's
D-schedules) are enqueued once, however often a run is resumed.

Fault model. The Optuna storage is the single source of truth. A trial whose worker raises (NaN
loss, out of memory, a bad schedule) is told FAILED with its reason in the ``fail_reason`` user
attribute (the worker reports the metrics as NaN beside it, as Ray Tune requires); a NaN is
never told as a value. Several drivers may share a study on any storage (a journal file on one
machine; an RDB URL such as PostgreSQL across machines): each tags the trials it asks with its id
and keeps a heartbeat in the study (:class:`Driver`). A run marks FAILED ("interrupted") and
enqueues again only the RUNNING trials whose driver is gone (:func:`driver_gone`: a dead process
on this host, or a heartbeat older than :data:`HEARTBEAT_GRACE`), so no finished trial is lost,
no interrupted one is skipped and no live driver's trial is taken. A result for a trial that was
finished meanwhile is kept as a new COMPLETE trial (``retold_from``). ``budget`` counts finished
(COMPLETE) trials: re-running continues up to it. A suggestion whose schedule a finished trial
already measured is told that trial's values without running (``duplicate_of`` names the twin). (Tune's own experiment restore is not used:
its searcher snapshot can lag the database, which is what decides.)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "SAMPLER_ALGOS",
    "SearchConfig",
    "SearchError",
    "SearchSummary",
    "TrialContext",
    "evaluate_schedule",
    "open_or_create_study",
    "recover_interrupted",
    "Driver",
    "driver_gone",
    "enqueue_seeds",
    "resolve_storage",
    "run_search",
]

METRICS = ("fid", "latency")
# Trial user attributes written from a worker's result (the contract of ase_search.pareto).
TRIAL_ATTRS = ("schedule", "fid", "kid_mean", "kid_std", "latency", "acceleration",
               "block_acceleration", "block_evals", "finetune_steps", "wall_time", "time_split",
               "seed", "grid")
FINETUNE_MODES = ("one-shot", "per-trial", "none")
_NESTED = ("schedule", "time_split")


class SearchError(ValueError):
    """A search cannot start or continue; the message says why and what to do."""


def _gp(seed: int):
    import optuna

    # The objective is deterministic (common random numbers: a schedule always gets the same
    # FID and latency), so the GP interpolates its observations and never values a measured
    # point again. The paper's presets (enqueued first) are the initial design; five startup
    # trials in all, instead of ten, leave the model more of a ~40-trial budget.
    with warnings.catch_warnings():  # deterministic_objective is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5,
                                         deterministic_objective=True)


def _tpe(seed: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def _nsga2(seed: int):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)


def _random(seed: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


# Optuna samplers by CLI name. GP (log-EHVI) is the default: it is the most sample-efficient for
# ~40-trial multi-objective budgets, where NSGA-II would spend its whole budget on early
# generations.
SAMPLER_ALGOS: dict[str, Callable[[int], Any]] = {
    "gp": _gp,
    "tpe": _tpe,
    "nsga2": _nsga2,
    "random": _random,
}


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search run. Stored in the study, so a resume can check it.

    Args:
        arch: ``"dit"`` or ``"uvit"``.
        budget: finished (COMPLETE) trials the study should hold when the run ends.
        space: search-space YAML (default: ``search_spaces/<arch>.yaml``).
        checkpoint: model to search for (default: the shipped testbed model).
        data: fine-tuning data, and the FID reference unless ``fid_data`` is given (``mnist``,
            an image folder or a latents file). Paths are made absolute (Ray runs trials in
            their own folders).
        sampler: ``ddpm``, ``ddim``, ``dpm-solver`` or ``euler-maruyama``.
        steps: sampling steps.
        n_samples: samples per trial for FID.
        finetune: ``one-shot`` (fine-tune once for the whole space, before the trials),
            ``per-trial`` (Algorithm 1 for each trial's schedule) or ``none``.
        finetune_steps: optimiser steps of that fine-tune (per trial with ``per-trial``, so
            lower it there). On the 17,500-step DiT testbed, 600 one-shot
            steps left the full model at FID-MNIST 22 (7.5 before) and D6 at 63; 2,400 steps
            (cosine lr, ``finetune_full_share`` 0.5) gave 10.9 and 38.
        finetune_lr: its learning rate. The paper's 2e-5 suits a long fine-tune of DiT-XL/2; on
            the testbed, 600 steps at 2e-5 left exits at FID-MNIST 250+, at 3e-4 at 31-63.
        finetune_ema: EMA decay of its teacher (the weights the trials use); 0.99 averages the
            last ~100 steps, where 0.999 would still be 55% the weights before fine-tuning.
        finetune_full_share: one-shot only: share of samples trained with the most blocks the
            space allows at their t (see :class:`~ase_search.finetune.FinetuneConfig`).
        finetune_distill: regress onto the frozen starting model's full-depth prediction instead
            of the noise (:class:`~ase_search.finetune.FinetuneConfig`); on the DiT testbed's
            one-shot fine-tune it lowered every FID by 7-13% (reports/one_shot_recipes.md).
        storage: Optuna storage: a ``.db`` path (sqlite), a ``.journal`` path (several drivers)
            or any storage URL (default ``studies/<arch>.db``).
        study_name: default ``<arch>``.
        sampler_algo: Optuna sampler, a key of :data:`SAMPLER_ALGOS`.
        max_concurrent: trials at once (default: one per GPU, else one per two CPU cores).
        gpus_per_trial: GPUs per trial (default: 1 when the cluster has GPUs, else 0).
        ray_address: join this Ray cluster instead of starting a local one.
        seed: seed of the sampler, of the fine-tune and of every trial's sampling noise (common
            random numbers across trials).
        batch_size: sampling batch size.
        latency_batch: batch size the cost model is profiled at.
        fid_extractor: ``mnist-classifier`` or ``inception-v3-compat``.
        fid_weights: local path of the Inception weights (real datasets).
        kid: also compute KID.
        grid: samples saved per trial as a PNG grid (0: none).
        vae: local diffusers ``AutoencoderKL`` folder that decodes a latent model's samples
            before FID (:mod:`ase_search.vae`); needed when the model's samples are latents.
        fid_data: FID reference (``mnist`` or a folder of images) when it differs from ``data``,
            e.g. images next to the latents file a latent model is fine-tuned on.
    """

    arch: str = "dit"
    budget: int = 40
    space: str | None = None
    checkpoint: str | None = None
    data: str = "mnist"
    sampler: str = "ddim"
    steps: int = 20
    n_samples: int = 500
    finetune: Literal["one-shot", "per-trial", "none"] = "one-shot"
    finetune_steps: int = 2400
    finetune_lr: float = 3e-4
    finetune_ema: float = 0.99
    finetune_full_share: float = 0.5
    finetune_distill: bool = False
    storage: str | None = None
    study_name: str | None = None
    sampler_algo: str = "gp"
    max_concurrent: int | None = None
    gpus_per_trial: float | None = None
    ray_address: str | None = None
    seed: int = 0
    batch_size: int = 250
    latency_batch: int = 256
    fid_extractor: str = "mnist-classifier"
    fid_weights: str | None = None
    kid: bool = False
    grid: int = 16
    vae: str | None = None
    fid_data: str | None = None

    def __post_init__(self) -> None:
        from ase_search.metrics.fid import FIDConfig
        from ase_search.samplers import SamplerConfig
        from ase_search.vae import check_vae_folder

        if self.arch not in ("dit", "uvit"):
            raise SearchError(f"--arch must be dit or uvit, got {self.arch!r}")
        if self.budget < 1:
            raise SearchError(f"--budget must be >= 1, got {self.budget}")
        if self.finetune_steps < 0:
            raise SearchError(f"--finetune-steps must be >= 0 (0: no fine-tune), got "
                              f"{self.finetune_steps}")
        if not (self.finetune_lr > 0 and math.isfinite(self.finetune_lr)):
            raise SearchError(f"--finetune-lr must be a finite number > 0, got {self.finetune_lr}")
        if not 0.0 <= self.finetune_ema < 1.0:
            raise SearchError(f"--finetune-ema must lie in [0, 1), got {self.finetune_ema}")
        if not 0.0 <= self.finetune_full_share <= 1.0:
            raise SearchError(f"--full-share must lie in [0, 1], got {self.finetune_full_share}")
        if not isinstance(self.finetune_distill, bool):
            raise SearchError(f"finetune_distill must be true or false, got "
                              f"{self.finetune_distill!r}")
        if self.finetune not in FINETUNE_MODES:
            raise SearchError(f"--finetune must be one of {list(FINETUNE_MODES)}, got "
                              f"{self.finetune!r}")
        if self.sampler_algo not in SAMPLER_ALGOS:
            raise SearchError(f"--sampler-algo must be one of {list(SAMPLER_ALGOS)}, got "
                              f"{self.sampler_algo!r}")
        if self.n_samples < 2:
            raise SearchError(f"--n-samples must be >= 2 for FID, got {self.n_samples}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise SearchError(f"--max-concurrent must be >= 1, got {self.max_concurrent}")
        if self.gpus_per_trial is not None and self.gpus_per_trial < 0:
            raise SearchError(f"--gpus-per-trial must be >= 0, got {self.gpus_per_trial}")
        SamplerConfig(name=self.sampler, steps=self.steps)  # validates sampler and steps
        # Trials run in Ray's per-trial folders, where a relative path means something else.
        for name in ("data", "fid_data", "fid_weights"):
            value = getattr(self, name)
            is_data = name != "fid_weights"
            if value is None or (is_data and value.lower() == "mnist"):
                continue
            path = Path(value).expanduser()
            if not path.exists():
                raise SearchError(f"--{name.replace('_', '-')} {value} does not exist; pass an "
                                  f"existing path" + (" or mnist" if is_data else ""))
            object.__setattr__(self, name, str(path.resolve()))
        if self.fid_data == self.data:
            object.__setattr__(self, "fid_data", None)  # one spelling of "FID reads data"
        if self.vae is not None:
            object.__setattr__(self, "vae", str(check_vae_folder(self.vae)))
        if self.fid_reference.lower() != "mnist" and Path(self.fid_reference).is_file():
            raise SearchError(
                f"FID needs images but its reference {self.fid_reference} is a file (latents?); "
                f"keep --data for fine-tuning and pass --fid-data FOLDER, a folder of images"
                + ("" if self.vae is not None else
                   ", and --vae PATH to decode a latent model's samples")
            )
        FIDConfig(extractor=self.fid_extractor, fid_weights=self.fid_weights, kid=self.kid)

    @property
    def fid_reference(self) -> str:
        """The data set FID is measured against: ``fid_data``, else ``data``."""
        return self.fid_data if self.fid_data is not None else self.data

    @property
    def resolved_study_name(self) -> str:
        return self.study_name or self.arch

    @property
    def resolved_storage(self) -> str:
        return self.storage or str(Path("studies") / f"{self.arch}.db")

    def identity(self) -> dict[str, Any]:
        """The settings that make trials comparable; a resumed run must not change them."""
        keys = ("arch", "space", "checkpoint", "data", "sampler", "steps", "n_samples",
                "finetune", "finetune_steps", "finetune_lr", "finetune_ema", "finetune_full_share",
                "seed",
                "latency_batch", "fid_extractor", "kid")
        identity = {k: getattr(self, k) for k in keys}
        # Another VAE or FID reference, or another fine-tune target, gives incomparable FIDs.
        # Recorded only when set, so studies made before these settings existed still resume.
        identity.update({k: getattr(self, k) for k in ("vae", "fid_data", "finetune_distill")
                         if getattr(self, k) not in (None, False)})
        return identity


@dataclass(frozen=True)
class TrialContext:
    """What a worker needs to evaluate one schedule (plain data: it travels to Ray workers,
    through Ray's object store).

    A trial may run on another node than the driver. The weights every trial starts from (the
    one-shot weights the driver made, typically) travel inside the context (``weights_bytes``),
    so no node needs them on its disk; the other inputs the trial reads (``data``, ``fid_data``,
    ``fid_weights``, ``vae``: user data, often large) must exist at the same path where the trial
    runs, which :func:`evaluate_schedule` checks first. Sample grids are written under
    ``grids_dir`` on the node that ran the trial.
    """

    config: dict[str, Any]
    weights: str  # absolute path of the weights every trial starts from (its name, when shipped)
    space: dict[str, Any]
    cost_model: dict[str, Any]
    grids_dir: str
    cpus: int
    weights_bytes: bytes | None = None  # the content of ``weights``; None: read the path


@dataclass
class SearchSummary:
    study_name: str
    storage: str
    complete: int
    failed: int
    wall_time: float
    new_trials: int
    setup_time: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Storage and study bookkeeping
# --------------------------------------------------------------------------------------------
def resolve_storage(spec: str) -> Any:
    """An Optuna storage *object* for a path or URL (Ray's OptunaSearch needs an object).

    ``*.journal`` / ``*.log`` paths give a file journal (several drivers on one machine); any
    other path is a sqlite database (made absolute, so Ray workers in other folders find it);
    ``scheme://`` strings are passed to :class:`optuna.storages.RDBStorage` as they are (an RDB
    server such as PostgreSQL serves drivers on several machines).

    Raises:
        SearchError: the path cannot be written (a read-only folder, below a regular file), or
            the file is not a readable study storage. A journal is read through before anything
            is appended to it, so a corrupt one is left as it was.
    """
    import optuna

    from ase_search.files import check_writable

    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    path = Path(spec).expanduser().resolve()
    try:
        check_writable(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SearchError(f"--storage {spec}: {err}") from None
    if path.suffix in (".journal", ".log"):
        return _read_journal(path)
    try:
        return optuna.storages.RDBStorage(f"sqlite:///{path}")
    except Exception as err:  # not a database, a newer schema, ...
        raise SearchError(f"{path} is not a usable Optuna sqlite storage "
                          f"({str(err).splitlines()[0]}); pass another --storage") from None


def _read_journal(path: Path) -> Any:
    """Open a journal file and replay it in full, refusing a corrupt one untouched."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    def refuse(why: str) -> SearchError:
        return SearchError(f"{path} is not a readable Optuna journal ({why}); move it aside or "
                           f"pass another --storage")

    if path.is_file():
        # Optuna skips a last line that does not decode (it may be a write in progress), and
        # then appends after it, which turns it into an error on every later read. A line that
        # ends in a newline is complete, so here it must decode.
        with path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                if not line.endswith(b"\n"):
                    break
                try:
                    json.loads(line)
                except ValueError:
                    raise refuse(f"line {number} is not JSON") from None
    try:  # the storage replays the whole log when made
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except Exception as err:  # Optuna's replay asserts, or misses keys, on foreign records
        raise refuse(f"replaying it fails: {type(err).__name__}: {err}".rstrip(": ")) from None
    return storage


def open_or_create_study(config: SearchConfig, storage: Any, *, extra_attrs: dict[str, Any]):
    """Load the study or create it; refuse to continue a study made with other settings."""
    import optuna

    name = config.resolved_study_name
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                directions=["minimize", "minimize"],
                                sampler=SAMPLER_ALGOS[config.sampler_algo](config.seed))
    if len(study.directions) != 2:
        raise SearchError(f"study {name!r} in {config.resolved_storage} is not a two-objective "
                          f"ase-search study; pass another --study-name")
    stored = study.user_attrs.get("identity")
    if stored is None:
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2; the API is stable
            warnings.simplefilter("ignore")
            study.set_metric_names(list(METRICS))
        study.set_user_attr("identity", config.identity())
        study.set_user_attr("config", asdict(config))
        study.set_user_attr("arch", config.arch)
        study.set_user_attr("created", time.strftime("%Y-%m-%d %H:%M:%S"))
        for key, value in extra_attrs.items():
            study.set_user_attr(key, value)
    elif stored != config.identity():
        diff = {k: (stored.get(k), v) for k, v in config.identity().items() if stored.get(k) != v}
        raise SearchError(
            f"study {name!r} in {config.resolved_storage} was run with other settings "
            f"(stored vs now: {diff}); resume with the same settings or pass another --study-name"
        )
    return study


def _params_key(trial: Any) -> tuple:
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
                        grace: float = HEARTBEAT_GRACE) -> int:
    """Mark trials left RUNNING by a driver that is gone FAILED and enqueue their parameters
    again. Trials of live drivers (:func:`driver_gone`) are theirs to finish. A RUNNING trial
    with no ``driver`` tag comes from a study made before drivers were tagged, or was asked an
    instant ago and is about to be tagged: it is recovered unless it started within ``grace``
    seconds while a live driver was around."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    attrs = study.user_attrs
    now = time.time() if now is None else now
    live = [key[len(_DRIVER_PREFIX):] for key in attrs if key.startswith(_DRIVER_PREFIX)
            and not driver_gone(attrs, key[len(_DRIVER_PREFIX):], now=now, grace=grace)]
    waiting = {_params_key(t)
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
        if trial.params and key not in waiting:
            study.enqueue_trial(dict(trial.params), user_attrs=dict(
                {k: v for k, v in trial.user_attrs.items() if k == "seed"}))
            waiting.add(key)
        recovered += 1
    return recovered


def enqueue_seeds(study: Any, space: Any) -> list[str]:
    """Enqueue each seed preset unless a trial with its parameters is already finished, queued
    or running (a seed that failed is queued again)."""
    from optuna.trial import TrialState

    taken = {
        _params_key(t)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING,
                                                          TrialState.RUNNING))
    }
    added = []
    for name, schedule in zip(space.seeds, space.seed_schedules()):
        params = space.to_params(schedule)
        key = tuple(sorted(params.items()))
        if key not in taken:
            study.enqueue_trial(params, user_attrs={"seed": name})
            taken.add(key)
            added.append(name)
    return added


# --------------------------------------------------------------------------------------------
# One trial
# --------------------------------------------------------------------------------------------
def evaluate_schedule(schedule: Any, ctx: TrialContext, *, tag: str = "trial") -> dict[str, Any]:
    """Fine-tune (per-trial mode), sample with common random numbers, FID, predicted latency.

    A latent model's samples are decoded with ``config["vae"]`` before FID, which is measured
    against ``config["fid_data"]`` (default ``config["data"]``); fine-tuning reads ``data``.
    """
    import torch

    from ase_search.data import build_dataset
    from ase_search.evaluate import _check_fid_reference, _fid_images
    from ase_search.finetune import FinetuneConfig, finetune
    from ase_search.metrics.fid import FIDConfig, compute_fid
    from ase_search.metrics.latency import CostModel
    from ase_search.models import load_checkpoint
    from ase_search.report import save_grid
    from ase_search.samplers import SamplerConfig, sample
    from ase_search.vae import load_vae

    cfg = ctx.config
    torch.set_num_threads(max(1, ctx.cpus))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    split: dict[str, float] = {}
    t0 = time.perf_counter()
    _check_inputs_here(ctx)
    with _weights_file(ctx) as weights:
        model, _ = load_checkpoint(weights, ema=True)
    # .get: contexts written before these settings existed have no such keys.
    decoder = load_vae(cfg["vae"], device=device) if cfg.get("vae") else None
    reference = cfg.get("fid_data") or cfg["data"]
    _check_fid_reference(model, reference, decoder)  # before minutes of fine-tuning and sampling
    split["load"] = time.perf_counter() - t0
    finetune_steps = 0
    if cfg["finetune"] == "per-trial" and cfg["finetune_steps"] > 0:
        data = build_dataset(cfg["data"], resolution=model.input_size, channels=model.in_channels)
        result = finetune(model, data, schedule,
                          FinetuneConfig(steps=cfg["finetune_steps"], lr=cfg["finetune_lr"],
                                         ema_decay=cfg["finetune_ema"], seed=cfg["seed"],
                                         distill=cfg.get("finetune_distill", False)),
                          device=device, progress=False)
        model, finetune_steps = result.ema, result.step
    split["finetune"] = time.perf_counter() - t0 - split["load"]

    t1 = time.perf_counter()
    model = model.to(device).eval()
    sampler = SamplerConfig(name=cfg["sampler"], steps=cfg["steps"])
    out = sample(model, sampler=sampler, schedule=schedule, n=cfg["n_samples"],
                 batch_size=cfg["batch_size"], seed=cfg["seed"], device=device)
    split["sampling"] = time.perf_counter() - t1
    if not torch.isfinite(out.images).all():
        raise FloatingPointError("sampling produced NaN/inf images (the model diverged)")

    t2 = time.perf_counter()
    images = _fid_images(out.images, decoder)  # (n, C, H, W) uint8: decoded when latents
    if decoder is not None:
        split["decode"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    fid_config = FIDConfig(extractor=cfg["fid_extractor"], fid_weights=cfg["fid_weights"],
                           kid=cfg["kid"])
    metrics = compute_fid(images, reference=reference, config=fid_config)
    split["fid"] = time.perf_counter() - t3
    if not all(math.isfinite(v) for v in metrics.values()):
        raise FloatingPointError(f"FID is not finite: {metrics}")

    cost = CostModel.from_dict(ctx.cost_model)
    times = sampler.model_times()
    latency = cost.latency(schedule, times)
    grid = None
    if cfg["grid"] > 0:
        shown = images[: cfg["grid"]].float() / 127.5 - 1.0  # (k, C, H, W) in [-1, 1]
        grid = str(save_grid(shown, Path(ctx.grids_dir) / f"{tag}.png"))
    result = {
        "schedule": schedule.to_dict(),
        **metrics,
        "latency": latency,
        "acceleration": cost.acceleration(schedule, times),
        "block_acceleration": 1.0 - out.block_evals / (schedule.depth * out.model_calls),
        "block_evals": out.block_evals,
        "finetune_steps": finetune_steps,
        "time_split": split,
        "wall_time": time.perf_counter() - t0,
        "grid": grid,
    }
    return result


def _check_inputs_here(ctx: TrialContext) -> None:
    """Refuse, naming the path and the node, an input that does not exist where the trial runs
    (a path on the driver's disk only, when the trial runs on another node)."""
    import socket

    cfg = ctx.config
    inputs = {"--data": cfg.get("data"), "--fid-data": cfg.get("fid_data"),
              "--fid-weights": cfg.get("fid_weights"), "--vae": cfg.get("vae")}
    if ctx.weights_bytes is None:
        inputs["weights"] = ctx.weights
    for flag, value in inputs.items():
        if value and value.lower() != "mnist" and not Path(value).exists():
            raise FileNotFoundError(
                f"{flag} {value} does not exist on node {socket.gethostname()}, where this trial "
                f"runs; put it at that path on every node (a shared file system)")


@contextmanager
def _weights_file(ctx: TrialContext) -> Iterator[str]:
    """A path holding the trial's starting weights: ``ctx.weights``, or the shipped bytes in a
    temporary file with the same name (its suffix tells the checkpoint format)."""
    if ctx.weights_bytes is None:
        yield ctx.weights
        return
    with tempfile.TemporaryDirectory(prefix="ase-search-weights-") as folder:
        path = Path(folder) / Path(ctx.weights).name
        path.write_bytes(ctx.weights_bytes)
        yield str(path)


def _trainable(params: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable: decode, evaluate, report (never raises)."""
    from ray import tune

    from ase_search.space import ScheduleSpace, schedules_equivalent

    started = time.perf_counter()
    try:
        space = ScheduleSpace.from_dict(ctx.space)
        schedule = space.from_params(params)
        seed = next((name for name, s in zip(space.seeds, space.seed_schedules())
                     if schedules_equivalent(s, schedule)), None)
        schedule = replace(schedule, name=seed or schedule.name)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=ctx.cpus):  # oversubscribed BLAS threads spin for ages
            result = evaluate_schedule(schedule, ctx,
                                       tag=f"trial-{tune.get_context().get_trial_id()}")
        result["seed"] = seed
    except Exception as err:  # reported as a FAILED trial with its reason; the study goes on
        last = traceback.format_exc().strip().splitlines()[-1]
        # Tune insists that every result carries the study's metrics (its strict metric check
        # raises in the driver otherwise), so a failure reports them as NaN; the searcher's
        # on_trial_complete sees fail_reason and tells the study FAIL, never the NaNs.
        result = {**{m: float("nan") for m in METRICS},
                  "fail_reason": f"{type(err).__name__}: {err}"[:500], "traceback": last}
    result["worker_time"] = time.perf_counter() - started
    # Tune flattens nested dicts in results; ship them as JSON text and decode in the searcher.
    tune.report({k: json.dumps(v) if k in _NESTED else v for k, v in result.items()})


def _make_searcher(space: Any, storage: Any, config: SearchConfig, driver_id: str | None = None):
    """Ray's OptunaSearch, telling results (and failures, with reasons) into our study; every
    trial it asks is tagged with ``driver_id`` (see :class:`Driver`)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        def suggest(self, trial_id: str) -> dict | str | None:
            # A suggestion whose schedule a finished trial already measured is told that trial's
            # values at once (the measurement is deterministic: common random numbers), and the
            # sampler is asked again. Many parameter sets decode to one schedule, and GP on an
            # integer space re-proposes points it has seen.
            for _ in range(_MAX_REUSED_PER_SUGGESTION):
                if self._count(optuna.trial.TrialState.COMPLETE,
                               optuna.trial.TrialState.RUNNING) >= config.budget:
                    return self.FINISHED
                params = super().suggest(trial_id)
                ot_trial = self._ot_trials[trial_id]
                if driver_id is not None:  # at once: other drivers recover untagged trials
                    ot_trial.set_user_attr("driver", driver_id)
                twin = _measured_twin(self._ot_study, space, ot_trial.params)
                if twin is None:
                    return params
                for key, value in twin.user_attrs.items():
                    if key not in ("wall_time", "time_split", "worker_time", "seed"):
                        ot_trial.set_user_attr(key, value)
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
            attrs = {key: json.loads(result[key]) if key in _NESTED else result[key]
                     for key in (*TRIAL_ATTRS, "worker_time")
                     if result and result.get(key) is not None}
            if reason is not None:
                attrs["fail_reason"] = reason
            _tell(self._ot_study, ot_trial, None if reason is not None else values, attrs)
            self._completed_trials.add(trial_id)

    searcher = StudySearch(
        space=space.distributions(),
        metric=list(METRICS),
        mode=["min", "min"],
        sampler=SAMPLER_ALGOS[config.sampler_algo](config.seed),
        storage=storage,
        study_name=config.resolved_study_name,
        seed=config.seed,
    )
    return searcher


_MAX_REUSED_PER_SUGGESTION = 20


def _tell(study: Any, trial: Any, values: list[float] | None, attrs: dict[str, Any]) -> None:
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


def _measured_twin(study: Any, space: Any, params: dict[str, Any]) -> Any:
    """The first COMPLETE trial of ``study`` whose schedule equals what ``params`` decode to."""
    from optuna.trial import TrialState

    from ase_search.schedule import ExitSchedule
    from ase_search.space import schedules_equivalent

    schedule = space.from_params(params)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        data = trial.user_attrs.get("schedule")
        if data is not None and schedules_equivalent(ExitSchedule.from_dict(data), schedule):
            return trial
    return None


class _StudyProgress:
    """A rich progress bar fed by polling the study (the database is the truth; Tune callbacks
    would have to be pickled with the experiment)."""

    def __init__(self, study: Any, total: int, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.study = study
        self.progress = Progress(
            TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled)
        self.task = self.progress.add_task("search", total=total, best="")
        self.refresh()

    def refresh(self) -> None:
        from optuna.trial import TrialState

        from ase_search.pareto import pareto_front
        from ase_search.schedule import ExitSchedule

        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        fails = len(self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        # The report's front (twins told a measured result are left out), counted in distinct
        # schedules: one schedule measured by two trials (two drivers at once) is one point.
        distinct: dict[Any, Any] = {}
        for t in pareto_front(self.study):
            data = t.user_attrs.get("schedule")
            merged = ExitSchedule.from_dict(data).merged() if data else None
            key = t.number if merged is None else (merged.arch, merged.depth,
                                                   merged.boundaries, merged.blocks)
            distinct.setdefault(key, t)
        front = list(distinct.values())
        text = f"front {len(front)}, failed {fails}"
        best = max(front, key=lambda t: t.user_attrs.get("acceleration", 0.0), default=None)
        if best is not None:
            text += (f", fastest on front: {best.user_attrs.get('acceleration', 0.0):.0%} "
                     f"at FID {best.values[0]:.2f}")
        self.progress.update(self.task, completed=len(complete), best=text)

    def __enter__(self) -> _StudyProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.refresh()
        self.progress.__exit__(*exc)


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------
def one_shot_config(config: SearchConfig) -> Any:
    """The :class:`~ase_search.finetune.FinetuneConfig` of the search's one-shot fine-tune (for
    :func:`~ase_search.finetune.one_shot_weights`, which caches the weights by it)."""
    from ase_search.finetune import FinetuneConfig

    return FinetuneConfig(steps=config.finetune_steps, lr=config.finetune_lr,
                          ema_decay=config.finetune_ema, seed=config.seed,
                          full_share=config.finetune_full_share, distill=config.finetune_distill)


def _init_ray(config: SearchConfig) -> bool:
    """Start (or join) Ray; return whether we started it (and so must shut it down)."""
    import ray

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
        ray.init(address=config.ray_address, logging_level="ERROR", log_to_driver=False)
        return False
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             configure_logging=True)
    return True


def _resources(config: SearchConfig) -> tuple[dict[str, float], int, int]:
    """Per-trial resources that the cluster can actually grant, concurrency and CPU threads."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = int(total.get("CPU", 1)), int(total.get("GPU", 0))
    gpus_per_trial = config.gpus_per_trial
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 if gpus > 0 else 0.0
    if gpus_per_trial > gpus:
        raise SearchError(f"--gpus-per-trial {gpus_per_trial} but the Ray cluster has {gpus} "
                          f"GPU(s); the trials could never start. Use --gpus-per-trial 0")
    if config.max_concurrent is not None:
        concurrent = config.max_concurrent
    elif gpus_per_trial > 0:
        concurrent = max(1, int(gpus // gpus_per_trial))
    else:  # one single-threaded trial per core: small models scale badly across threads
        concurrent = max(1, cpus)
    cpus_per_trial = max(1, cpus // concurrent)
    return {"cpu": cpus_per_trial, "gpu": gpus_per_trial}, concurrent, cpus_per_trial


def run_search(config: SearchConfig, *, progress: bool = True,
               log: Callable[[str], None] = print) -> SearchSummary:
    """Run (or resume) the search until the study holds ``config.budget`` finished trials."""
    import torch
    from optuna.trial import TrialState

    from ase_search.metrics.latency import profile_components
    from ase_search.samplers import SamplerConfig
    from ase_search.space import load_space
    from ase_search.testbed import TESTBEDS, load_model

    started = time.perf_counter()
    setup: dict[str, float] = {}
    model = load_model(config.arch, config.checkpoint)
    space_path = Path(config.space) if config.space else TESTBEDS[config.arch].space
    space = load_space(space_path, depth=model.exit_depth)
    if space.arch != config.arch:
        raise SearchError(f"{space_path} is a {space.arch} space but --arch is {config.arch}")
    storage_spec = config.resolved_storage
    storage = resolve_storage(storage_spec)
    storage_dir = (Path(storage_spec).expanduser().resolve().parent if "://" not in storage_spec
                   else Path("studies").resolve())
    sampler = SamplerConfig(name=config.sampler, steps=config.steps)

    # The cost model is profiled once per study and stored, so resumed runs stay comparable.
    study = open_or_create_study(config, storage, extra_attrs={"space": space.to_dict()})
    if "cost_model" not in study.user_attrs:
        t = time.perf_counter()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        cost = profile_components(model, batch_size=config.latency_batch, device=device)
        study.set_user_attr("cost_model", cost.to_dict())
        study.set_user_attr("full_latency", cost.latency(None, sampler.model_times()))
        setup["profile"] = time.perf_counter() - t
    recovered = recover_interrupted(study)
    if recovered:
        log(f"re-queued {recovered} trial(s) interrupted by an earlier run")
    seeds = enqueue_seeds(study, space)
    if seeds:
        log(f"enqueued seed schedules: {', '.join(seeds)}")

    def count(state: TrialState) -> int:
        return len(study.get_trials(deepcopy=False, states=(state,)))

    complete_before = count(TrialState.COMPLETE)
    if complete_before >= config.budget:
        log(f"study {config.resolved_study_name!r} already holds {complete_before} finished "
            f"trials (budget {config.budget}); raise --budget to search further")
        return SearchSummary(config.resolved_study_name, storage_spec, complete_before,
                             count(TrialState.FAIL), 0.0, 0, setup)

    t = time.perf_counter()
    if config.finetune == "one-shot" and config.finetune_steps > 0:
        from ase_search.finetune import one_shot_weights

        weights = one_shot_weights(model, space, one_shot_config(config), data=config.data,
                                   out_dir=storage_dir, name=config.resolved_study_name,
                                   progress=progress)
    else:
        weights = Path(config.checkpoint).resolve() if config.checkpoint else \
            TESTBEDS[config.arch].path
    setup["one_shot_finetune"] = time.perf_counter() - t
    from ase_search.finetune import weights_record  # relative to the study: found on a clone

    study.set_user_attr("weights", weights_record(weights, None if "://" in storage_spec
                                                  else storage_dir))  # named by exports

    driver = Driver.this_process()
    driver.beat(study)  # before it asks a trial, so others see the trial's driver alive
    # Tune's own files (results, searcher snapshots) sit beside the study, one folder per
    # driver; the folders of drivers that are gone (killed: no cleanup) are removed here.
    tune_root = storage_dir / f"{config.resolved_study_name}-tune"
    _remove_stale_tune_dirs(tune_root, study)
    tune_dir = tune_root / driver.id
    started_ray = _init_ray(config)
    try:
        from ray import tune
        from ray.tune.search import ConcurrencyLimiter

        resources, concurrent, cpus = _resources(config)
        ctx = TrialContext(config=asdict(config), weights=str(Path(weights).resolve()),
                           space=space.to_dict(), cost_model=study.user_attrs["cost_model"],
                           grids_dir=str(storage_dir / f"{config.resolved_study_name}-grids"),
                           cpus=cpus, weights_bytes=Path(weights).read_bytes())
        with _StudyProgress(study, config.budget, progress) as bar:
            last_beat = time.monotonic()

            def tick() -> None:
                nonlocal last_beat
                bar.refresh()
                if time.monotonic() - last_beat >= HEARTBEAT_EVERY:
                    driver.beat(study)
                    last_beat = time.monotonic()

            stalled = rounds = 0
            while count(TrialState.COMPLETE) < config.budget and stalled < 2:
                if count(TrialState.COMPLETE) + count(TrialState.RUNNING) >= config.budget:
                    # The rest of the budget is running under other drivers: wait for them, and
                    # take their trials over (failed and re-queued) if their driver goes.
                    time.sleep(2.0)
                    tick()
                    recover_interrupted(study)
                    continue
                rounds += 1
                before = count(TrialState.COMPLETE), count(TrialState.FAIL)
                searcher = ConcurrencyLimiter(_make_searcher(space, storage, config, driver.id),
                                              max_concurrent=concurrent)
                tuner = tune.Tuner(
                    tune.with_resources(tune.with_parameters(_trainable, ctx=ctx), resources),
                    tune_config=tune.TuneConfig(search_alg=searcher,
                                                num_samples=config.budget - before[0],
                                                max_concurrent_trials=concurrent),
                    # One experiment name per round: Ray keeps a round's state in a folder
                    # named by name and second, and two rounds within one second would share
                    # (and delete) each other's files.
                    run_config=tune.RunConfig(name=f"{config.resolved_study_name}-{rounds}",
                                              storage_path=str(tune_dir), verbose=0),
                )
                _fit_polling(tuner, tick)
                # A round that finished nothing is a stall when its trials failed, or when no
                # other driver holds running trials (those would explain an empty round).
                if count(TrialState.COMPLETE) > before[0]:
                    stalled = 0
                elif count(TrialState.FAIL) > before[1] or not count(TrialState.RUNNING):
                    stalled += 1
    finally:
        if started_ray:
            import ray

            ray.shutdown()
        driver.beat(study, stopped=True)
        shutil.rmtree(tune_dir, ignore_errors=True)
    complete = count(TrialState.COMPLETE)
    if complete < config.budget:
        reasons = {t.user_attrs.get("fail_reason", "?")
                   for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        raise SearchError(f"the search stopped at {complete}/{config.budget} finished trials: "
                          f"trials keep failing ({'; '.join(sorted(reasons))[:400]})")
    return SearchSummary(config.resolved_study_name, storage_spec, complete,
                         count(TrialState.FAIL), time.perf_counter() - started,
                         complete - complete_before, setup)


def _remove_stale_tune_dirs(root: Path, study: Any) -> None:
    """Remove the Tune folders under ``root`` whose driver (the folder's name) is gone."""
    if not root.is_dir():
        return
    attrs = study.user_attrs
    for folder in root.iterdir():
        if folder.is_dir() and driver_gone(attrs, folder.name):
            shutil.rmtree(folder, ignore_errors=True)


def _fit_polling(tuner: Any, tick: Callable[[], None], every: float = 2.0) -> None:
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
