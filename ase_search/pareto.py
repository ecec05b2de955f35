"""Reading a finished (or running) schedule search: its Pareto front, seeds, export, hypervolume.

A search study (``ase-search run``, :mod:`ase_search.search`) minimises two objectives,
``values = [FID, latency]``, where latency is the predicted seconds per sampled batch. Each trial
records its schedule (``ExitSchedule.to_dict()``) and metrics in its user attributes; trials
seeded from the paper's presets carry the preset name in ``user_attrs["preset"]``
(:func:`~ase_search.record.trial_preset`).

Everything here reads a study and writes nothing to its storage (but for moving the points of a
study made before 2026-12-07 into their own study, once: :func:`ase_search.record.point_records`):
:func:`open_study` opens it with
the search's own opener (:func:`ase_search.storage.open_storage`) for reading, which refuses a
missing file instead of letting SQLite create an empty database in its place. The front is
Optuna's (:attr:`optuna.Study.best_trials`) less the trials that only copy a measured twin's
result.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ase_search import __version__
from ase_search.record import points_study_name, screen_study_name, trial_preset
from ase_search.schedule import ExitSchedule, ScheduleError
from ase_search.storage import StudyError, one_line, open_storage
from ase_search.verdict import hypervolume

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FRONT_COLUMNS",
    "SeedStatus",
    "StudyError",
    "complete_trials",
    "distinct_schedules",
    "export_schedule",
    "pareto_table",
    "full_latency_of",
    "hypervolume",
    "hypervolume_history",
    "open_study",
    "pareto_front",
    "seed_report",
    "schedule_string",
    "select_trial",
    "portable_location",
    "storage_location",
    "study_dir",
    "trial_acceleration",
    "trial_schedule",
]

FRONT_COLUMNS = ("trial", "sampler", "schedule", "fid", "acceleration", "latency", "preset",
                 "on_front", "dominated_by")


# ###################################################################### opening a study
def open_study(storage: str | Path, study_name: str | None = None) -> optuna.Study:
    """Open an existing search study for reading.

    Args:
        storage: a SQLite file (``studies/dit.db``), an Optuna JournalStorage file (``*.journal``
            or ``*.log``) or any Optuna storage URL (``sqlite:///studies/dit.db``,
            ``postgresql://...``).
        study_name: which study to open; may be left out when the storage holds exactly one.

    Returns:
        The loaded study.

    Raises:
        StudyError: the file is missing or is not an Optuna storage, the storage holds no study,
            or several studies and no (or an unknown) ``study_name``, or the study is not a
            two-objective (FID, latency) minimisation.
    """
    backend = open_storage(storage)
    try:
        names = [s.study_name for s in backend.get_all_studies()]
    except Exception as err:  # SQLAlchemy / Optuna / JSON errors from a foreign file
        raise StudyError(f"{storage} is not a readable Optuna storage ({one_line(err)})") from None
    # a study's points and screened candidates: not studies to open
    companions = {f(n) for n in names for f in (points_study_name, screen_study_name)}
    names = [n for n in names if n not in companions]
    if not names:
        raise StudyError(
            f"{storage} holds no Optuna study; run `ase-search run` first, or point at the "
            f"storage the search wrote"
        )
    if study_name is None:
        if len(names) > 1:
            raise StudyError(
                f"{storage} holds {len(names)} studies ({', '.join(sorted(names))}); choose one "
                f"with study_name / --study-name"
            )
        study_name = names[0]
    elif study_name not in names:
        raise StudyError(
            f"study_name {study_name!r} is not in {storage}; it holds {', '.join(sorted(names))}"
        )
    study = optuna.load_study(study_name=study_name, storage=backend)
    _check_directions(study)
    return study


def _check_directions(study: optuna.Study) -> None:
    if list(study.directions) != [StudyDirection.MINIMIZE, StudyDirection.MINIMIZE]:
        raise StudyError(
            f"study {study.study_name!r} has directions "
            f"{[d.name.lower() for d in study.directions]}; an ase-search study minimises "
            f"[fid, latency]"
        )


def storage_location(study: optuna.Study) -> str | None:
    """The URL or file path of the study's storage, or ``None`` for in-memory studies."""
    # Optuna has no public accessor for a study's storage; read the two known layouts.
    storage = getattr(study, "_storage", None)
    backend = getattr(storage, "_backend", storage)  # _CachedStorage wraps an RDBStorage
    url = getattr(backend, "url", None)
    if isinstance(url, str):
        return url
    # JournalStorage keeps its JournalFileBackend in `_backend`.
    file_path = getattr(backend, "_file_path", None)
    return str(file_path) if file_path is not None else None


def portable_location(study: optuna.Study, folder: str | Path) -> str | None:
    """Where the study is, as a file written in ``folder`` should record it: a study file's path
    relative to ``folder`` (so a folder moved with its study still finds it), a server URL with
    its password masked, ``None`` in memory."""
    import os

    location = storage_location(study)
    if location is None:
        return None
    directory = study_dir(study)
    if directory is not None:
        name = Path(location.split("///", 1)[-1]).name if "://" in location else Path(location).name
        return os.path.relpath(directory / name, Path(folder).resolve())
    import sqlalchemy.engine

    return sqlalchemy.engine.make_url(location).render_as_string(hide_password=True)


def study_dir(study: optuna.Study) -> Path | None:
    """The folder holding the study's file (relative paths in trials resolve against it)."""
    location = storage_location(study)
    if location is None:
        return None
    if "://" not in location:
        return Path(location).resolve().parent
    import sqlalchemy.engine

    parsed = sqlalchemy.engine.make_url(location)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).resolve().parent
    return None


# ###################################################################### trial accessors
def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials with two objective values, in trial-number order."""
    _check_directions(study)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted((t for t in trials if t.values is not None and len(t.values) == 2),
                  key=lambda t: t.number)


def trial_schedule(trial: FrozenTrial) -> ExitSchedule:
    """Rebuild the trial's :class:`ExitSchedule` from ``user_attrs["schedule"]``."""
    data = trial.user_attrs.get("schedule")
    if data is None:
        raise StudyError(f"trial {trial.number} records no schedule (user_attrs['schedule'])")
    try:
        return ExitSchedule.from_dict(data)
    except ScheduleError as err:
        raise StudyError(f"trial {trial.number} holds a malformed schedule: {err}") from None


def trial_acceleration(trial: FrozenTrial, full_latency: float | None = None) -> float:
    """The trial's acceleration ``1 - latency / full_latency`` (NaN when it cannot be known)."""
    value = trial.user_attrs.get("acceleration")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if full_latency and trial.values is not None:
        return 1.0 - trial.values[1] / full_latency
    return math.nan


def full_latency_of(study: optuna.Study) -> float | None:
    """The full model's latency (``user_attrs["full_latency"]``), or ``None`` if not recorded."""
    value = study.user_attrs.get("full_latency")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def schedule_string(trial: FrozenTrial) -> str:
    """Blocks per interval: ``28|24|20|16|12`` (equal-width intervals) or ``[0,0.3):28 ...``."""
    try:
        s = trial_schedule(trial)
    except StudyError:
        return "?"
    from ase_search.record import schedule_words

    widths = [hi - lo for lo, hi in zip(s.boundaries, s.boundaries[1:])]
    if max(widths) - min(widths) < 1e-9:  # 8r2: 8 blocks, the rest's residual reused (period 2)
        return "".join(schedule_words(s))
    return s.describe()


# ###################################################################### Pareto front
def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Non-dominated COMPLETE trials (both objectives minimised), sorted by FID then latency.

    A trial is dominated when another is no worse in both FID and latency and better in one;
    trials with identical values do not dominate each other and are all kept, except those the
    search told a measured twin's result (``user_attrs["duplicate_of"]``): the twin stands for them.
    """
    _check_directions(study)
    # A told copy has its twin's values exactly, so it is on Optuna's front only beside its twin;
    # leaving copies out afterwards gives the front of the measured trials.
    front = [t for t in study.best_trials if "duplicate_of" not in t.user_attrs]
    return sorted(front, key=lambda t: (t.values[0], t.values[1], t.number))


def distinct_schedules(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """``trials`` with one trial (the first) per schedule: a schedule measured by two trials
    (two drivers at once, or a result kept as ``retold_from``) is one point of a front."""
    distinct: dict[Any, FrozenTrial] = {}
    for t in trials:
        try:
            s = trial_schedule(t).merged()
        except StudyError:  # no schedule recorded: the trial is its own point
            distinct.setdefault(t.number, t)
            continue
        distinct.setdefault((s.arch, s.depth, s.boundaries, s.blocks, s.modes, s.periods), t)
    return list(distinct.values())


@dataclass(frozen=True)
class SeedStatus:
    """How a seed trial (a paper preset evaluated in the search) fared against the front.

    Attributes:
        name: the preset name (``"D4"``, ``"full"``, ...).
        trial: its trial number.
        fid, latency, acceleration: its measured values.
        on_front: whether it is non-dominated.
        dominated_by: numbers of the front trials that dominate it (empty when on the front).
    """

    name: str
    trial: int
    fid: float
    latency: float
    acceleration: float
    on_front: bool
    dominated_by: tuple[int, ...]


def seed_report(study: optuna.Study) -> list[SeedStatus]:
    """For each COMPLETE seed trial: on the front, or which front trials dominate it."""
    front = pareto_front(study)
    on_front = {t.number for t in front}
    full = full_latency_of(study)
    report = []
    for t in complete_trials(study):
        name = trial_preset(t)
        if name is None:
            continue
        by = tuple(sorted(f.number for f in front if _dominates(f.values, t.values)))
        report.append(SeedStatus(name, t.number, t.values[0], t.values[1],
                                 trial_acceleration(t, full), t.number in on_front, by))
    return report


def pareto_table(study: optuna.Study, *, include_all: bool = False) -> pd.DataFrame:
    """The Pareto front (plus every seed trial) as a table sorted by acceleration.

    Args:
        study: an ase-search study.
        include_all: list every COMPLETE trial, not just the front and the seeds.

    Returns:
        A DataFrame with columns :data:`FRONT_COLUMNS`: ``trial``, ``sampler`` (``ddim-20``: the
        trial's in a joint space, else the study's one), ``schedule`` (blocks per interval), ``fid``, ``acceleration``, ``latency``, ``preset`` (a seed trial's preset, else ``""``),
        ``on_front`` and ``dominated_by`` (comma-separated numbers of the front trials that
        dominate the row, ``""`` on the front).
    """
    import pandas as pd

    from ase_search.samplers import SamplerConfig
    from ase_search.record import study_sampler

    front = pareto_front(study)
    on_front = {t.number for t in front}
    full = full_latency_of(study)
    one_sampler = study_sampler(study.user_attrs.get("config") or {}).to_dict()
    rows = []
    for t in complete_trials(study):
        preset = trial_preset(t)
        if not (include_all or t.number in on_front or preset):
            continue
        by = [f.number for f in front if _dominates(f.values, t.values)]
        rows.append({
            "trial": t.number,
            "sampler": SamplerConfig.from_dict(t.user_attrs.get("sampler") or one_sampler
                                               ).describe(),
            "schedule": schedule_string(t),
            "fid": float(t.values[0]),
            "acceleration": trial_acceleration(t, full),
            "latency": float(t.values[1]),
            "preset": preset or "",
            "on_front": t.number in on_front,
            "dominated_by": ", ".join(str(n) for n in sorted(by)),
        })
    table = pd.DataFrame(rows, columns=list(FRONT_COLUMNS))
    # Latency orders exactly like acceleration and is always present; FID breaks ties.
    return table.sort_values(["latency", "fid", "trial"], ascending=[False, True, True],
                             ignore_index=True)


# ###################################################################### choosing and exporting
def select_trial(
    study: optuna.Study,
    *,
    trial: int | None = None,
    max_fid: float | None = None,
    min_acceleration: float | None = None,
) -> FrozenTrial:
    """Pick one trial by exactly one criterion.

    Args:
        study: an ase-search study.
        trial: a trial number (any COMPLETE trial).
        max_fid: the front trial with the highest acceleration whose FID is at most this.
        min_acceleration: the front trial with the lowest FID whose acceleration is at least this
            (a fraction, ``0.3`` = 30% faster than the full model).

    Raises:
        StudyError: not exactly one criterion, or no trial qualifies (the message gives the best
            values available).
    """
    given = {k: v for k, v in (("trial", trial), ("max_fid", max_fid),
                               ("min_acceleration", min_acceleration)) if v is not None}
    if len(given) != 1:
        raise StudyError(
            "choose the trial by exactly one of trial / max_fid / min_acceleration "
            f"(--trial, --max-fid, --min-acceleration); got {', '.join(given) or 'none'}"
        )
    if trial is not None:
        if isinstance(trial, bool) or not isinstance(trial, numbers.Integral) or trial < 0:
            raise StudyError(f"trial must be a non-negative trial number, got {trial!r}")
        found = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
        if not found:
            n = len(study.get_trials(deepcopy=False))
            have = f"trials 0..{n - 1}" if n else "no trials yet"
            raise StudyError(f"trial {trial} does not exist; study {study.study_name!r} has "
                             f"{have}")
        if found[0].state != TrialState.COMPLETE or found[0].values is None:
            reason = found[0].user_attrs.get("fail_reason")
            raise StudyError(
                f"trial {trial} is {found[0].state.name}"
                + (f" ({reason})" if reason else "")
                + "; choose a COMPLETE trial, e.g. one from `ase-search pareto`"
            )
        return found[0]

    front = pareto_front(study)
    if not front:
        raise StudyError(f"study {study.study_name!r} has no COMPLETE trial yet")
    full = full_latency_of(study)
    scored = [(t, trial_acceleration(t, full)) for t in front]
    if max_fid is not None:
        if not math.isfinite(max_fid):
            raise StudyError(f"max_fid must be a finite number, got {max_fid}")
        ok = [t for t in front if t.values[0] <= max_fid]
        if not ok:
            best = min(front, key=lambda t: t.values[0])
            raise StudyError(
                f"no trial reaches FID <= {max_fid:g}; the lowest FID is {best.values[0]:.4g} "
                f"(trial {best.number}); raise max_fid"
            )
        # Highest acceleration is lowest latency, which every trial records.
        return min(ok, key=lambda t: (t.values[1], t.values[0], t.number))
    assert min_acceleration is not None
    if not math.isfinite(min_acceleration) or min_acceleration > 1:
        raise StudyError(
            f"min_acceleration must be a fraction <= 1 (0.3 = 30% faster), got {min_acceleration}"
        )
    ok = [(t, a) for t, a in scored if not math.isnan(a) and a >= min_acceleration]
    if not ok:
        known = [(t, a) for t, a in scored if not math.isnan(a)]
        if not known:
            raise StudyError("the front's trials record no acceleration; select by max_fid or "
                             "trial instead")
        best, acc = max(known, key=lambda ta: ta[1])
        raise StudyError(
            f"no trial reaches acceleration >= {min_acceleration:.2%}; the highest is "
            f"{acc:.2%} (trial {best.number}, FID {best.values[0]:.4g}); lower min_acceleration"
        )
    return min(ok, key=lambda ta: (ta[0].values[0], -ta[1], ta[0].number))[0]


def export_schedule(study: optuna.Study, trial: FrozenTrial | int, path: str | Path, *,
                    extra: dict[str, Any] | None = None) -> ExitSchedule:
    """Write a trial's schedule as JSON (atomically), with its provenance in ``metadata``.

    Args:
        study: the study the trial belongs to.
        trial: the trial or its number.
        path: the ``.json`` file to write.

    Returns:
        The exported schedule (as written).
    """
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise StudyError(f"schedules are exported as JSON; got {path.name!r}, use a .json path")
    if not isinstance(trial, FrozenTrial):
        trial = select_trial(study, trial=trial)
    elif trial.state != TrialState.COMPLETE or trial.values is None:
        raise StudyError(f"trial {trial.number} is {trial.state.name}; export a COMPLETE trial")
    from ase_search.finetune import rebase_weights  # relative to the schedule file

    from ase_search.record import study_sampler

    schedule = trial_schedule(trial)
    attrs, config = trial.user_attrs, study.user_attrs.get("config") or {}
    sampler = attrs.get("sampler") or study_sampler(config).to_dict()
    preset = trial_preset(trial)
    provenance: dict[str, Any] = {
        "source": "ase-search export",
        "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "study": study.study_name,
        "storage": portable_location(study, path.parent),
        "trial": trial.number,
        "preset": preset,
        "fid": float(trial.values[0]),
        "kid_mean": attrs.get("kid_mean"),
        "latency": float(trial.values[1]),
        "full_latency": full_latency_of(study),
        "acceleration": _nan_to_none(trial_acceleration(trial, full_latency_of(study))),
        "block_acceleration": attrs.get("block_acceleration"),
        "finetune_steps": attrs.get("finetune_steps"),
        # the trial's own sampler (a joint space's), else the study's one
        "sampler": sampler["name"],
        "steps": sampler["steps"],
        "timestep_spacing": sampler.get("timestep_spacing"),
        "confirmed": _confirmation(study, sampler, attrs.get("schedule")),
        "finetune": config.get("finetune", config.get("finetune_mode")),
        "checkpoint": config.get("checkpoint"),
        "weights": rebase_weights(study.user_attrs.get("weights"), study_dir(study), path.parent),
        "search_config": config,
        "ase_search_version": __version__,  # the exporter's
        "study_ase_search_version": study.user_attrs.get("ase_search_version"),
    }
    name = preset or f"{study.study_name}-trial{trial.number}"
    out = dataclasses.replace(schedule, name=name,
                              metadata={**schedule.metadata, **provenance, **(extra or {})})
    out.to_json(path)
    return out


def _confirmation(study: optuna.Study, sampler: dict[str, Any],
                  schedule: dict[str, Any] | None) -> dict[str, Any] | None:
    """The configuration's FIDs on the fresh confirmation seeds (``ase-search confirm``), if
    measured (:func:`ase_search.record.confirmed_fids`)."""
    from ase_search.record import config_key, confirmed_fids, point_records

    key = config_key(sampler, schedule)
    held = confirmed_fids(point_records(study), key,
                          "steps-only" if key.endswith("/full") else "exit",
                          selection=int(study.user_attrs.get("config", {}).get("seed", 0)))
    if held is None:
        return None
    seeds, fids = held
    return {"seeds": list(seeds), "fids": list(fids), "fid_mean": sum(fids) / len(fids)}


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


# ###################################################################### hypervolume
def _check_reference(reference_point: Sequence[float]) -> tuple[float, float]:
    ref = [float(x) for x in reference_point]
    if len(ref) != 2 or not all(math.isfinite(x) for x in ref):
        raise StudyError(
            f"reference_point must be two finite numbers (fid, latency), got {reference_point!r}"
        )
    return ref[0], ref[1]


def hypervolume_history(study: optuna.Study, reference_point: Sequence[float]) -> list[float]:
    """Hypervolume of the front after each COMPLETE trial, in trial-number order.

    Entry ``k`` belongs to ``complete_trials(study)[k]`` and covers that trial and all earlier
    complete ones; the sequence never decreases.
    """
    ref = _check_reference(reference_point)
    front: list[tuple[float, float]] = []
    history: list[float] = []
    current = 0.0
    for t in complete_trials(study):
        p = (float(t.values[0]), float(t.values[1]))
        if p[0] < ref[0] and p[1] < ref[1] and not any(
                q[0] <= p[0] and q[1] <= p[1] for q in front):
            # Only a point that is new and undominated changes the front (and the area).
            front = [q for q in front if not _dominates(p, q)] + [p]
            current = hypervolume(front, ref)
        history.append(current)
    return history
