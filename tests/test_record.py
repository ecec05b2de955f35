"""ase_search.record: points measured outside the search live in a companion study, and a
study that stored them as its attributes (before 2026-12-07) has them moved there. Real Optuna
storage (SQLite)."""

from __future__ import annotations

import optuna
import pytest
from optuna.search_space import IntersectionSearchSpace

from ase_search.pareto import open_study
from ase_search.record import (
    CONFIRM_PREFIX,
    POINTS,
    STEPS_ONLY_PREFIX,
    confirmed_fids,
    point_records,
    points_study_name,
    store_point,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _searched(storage: str) -> optuna.Study:
    """A two-objective study with three suggested trials, as a search leaves it."""
    study = optuna.create_study(storage=storage, study_name="dit",
                                directions=["minimize", "minimize"])
    for k in range(3):
        trial = study.ask()
        study.tell(trial, [float(trial.suggest_int("steps", 2, 20) + k),
                           trial.suggest_float("share", 0.0, 1.0)])
    return study


def _record(fid: float, seeds=(0,), weights="start") -> dict:
    return {"fid": fid, "latency": 1.5, "fids": [fid] * len(seeds), "seeds": list(seeds),
            "weights": weights, "sampler": {"name": "ddim", "steps": 4}}


def test_points_are_trials_of_a_companion_study_and_the_searched_one_keeps_its_space(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = _searched(storage)
    space = IntersectionSearchSpace().calculate(study)
    store_point(study, STEPS_ONLY_PREFIX + "ddim-4/full", _record(5.0))
    store_point(study, CONFIRM_PREFIX + "ddim-4/full", _record(4.0, seeds=(1, 2)))
    store_point(study, CONFIRM_PREFIX + "ddim-4/full", _record(4.5, seeds=(1, 2, 3)))
    # the searched study is as the search left it: no trial without parameters joins it, so
    # Optuna's samplers still see the whole space
    again = optuna.load_study(study_name="dit", storage=storage)
    assert len(again.trials) == 3 and IntersectionSearchSpace().calculate(again) == space
    points = optuna.load_study(study_name=points_study_name("dit"), storage=storage)
    assert [(t.user_attrs["kind"], t.values) for t in points.trials] == [
        ("steps-only", [5.0, 1.5]), ("confirm", [4.0, 1.5]), ("confirm", [4.5, 1.5])]
    records = point_records(again)  # the latest record of each name
    assert records[CONFIRM_PREFIX + "ddim-4/full"]["seeds"] == [1, 2, 3]
    assert confirmed_fids(records, "ddim-4/full", "steps-only", selection=0) == (
        (1, 2, 3), (4.5, 4.5, 4.5))
    assert confirmed_fids(records, "ddim-4/full", "steps-only", selection=2) == (
        (1, 3), (4.5, 4.5))  # the seed the search selected on is never judged
    # the companion is no study to open: the storage still holds one
    assert open_study(tmp_path / "s.db").study_name == "dit"


def test_a_study_with_points_as_attributes_has_them_moved_once(tmp_path):
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    study = _searched(storage)
    old = {STEPS_ONLY_PREFIX + "ddim-4/full": _record(5.0),
           STEPS_ONLY_PREFIX + "ddim-2/full": _record(9.0),
           CONFIRM_PREFIX + "ddim-4/full": _record(4.0, seeds=(1, 2))}
    for name, record in old.items():
        study.set_user_attr(name, record)
    study.set_user_attr(CONFIRM_PREFIX + "ddim-2/full", None)  # not a record: not a point
    assert point_records(study) == old
    assert study.user_attrs[POINTS] == points_study_name("dit")
    reopened = optuna.load_study(study_name="dit", storage=storage)
    assert point_records(reopened) == old  # read again: nothing moved twice
    points = optuna.load_study(study_name=points_study_name("dit"), storage=storage)
    assert len(points.trials) == 3
    # a later record supersedes a moved one
    store_point(reopened, CONFIRM_PREFIX + "ddim-4/full", _record(4.2, seeds=(1, 2, 3)))
    assert point_records(reopened)[CONFIRM_PREFIX + "ddim-4/full"]["fid"] == 4.2


def test_a_point_of_another_name_and_a_failed_measurement(tmp_path):
    study = _searched(f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(ValueError, match="starts with"):
        store_point(study, "listed:ddim-4/full", _record(5.0))
    store_point(study, STEPS_ONLY_PREFIX + "ddim-3/full", _record(float("nan")))
    # kept (the run says it failed), but as a failed trial: no objective values
    assert point_records(study)[STEPS_ONLY_PREFIX + "ddim-3/full"]["latency"] == 1.5
    points = optuna.load_study(study_name=points_study_name("dit"), storage=study._storage)
    assert points.trials[0].state == optuna.trial.TrialState.FAIL


def test_an_old_study_that_cannot_be_written_is_refused_in_one_line(tmp_path):
    from ase_search.storage import StudyError

    study = _searched(f"sqlite:///{tmp_path / 'old.db'}")
    study.set_user_attr(STEPS_ONLY_PREFIX + "ddim-4/full", _record(5.0))
    del study
    read_only = optuna.load_study(
        study_name="dit", storage=f"sqlite:///file:{tmp_path / 'old.db'}?mode=ro&uri=true")
    with pytest.raises(StudyError, match="moving them into the study 'dit:points'") as err:
        point_records(read_only)
    assert "\n" not in str(err.value)
