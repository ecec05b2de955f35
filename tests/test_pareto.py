"""Pareto front, seed domination, trial selection, export and hypervolume of search studies.

Studies are synthetic but follow the search's contract: values = [FID, latency], the schedule and
metrics in trial user attributes, the search config in study user attributes.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import random
import re
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from ase_search.pareto import (
    FRONT_COLUMNS,
    StudyError,
    complete_trials,
    export_schedule,
    pareto_table,
    hypervolume,
    hypervolume_history,
    open_study,
    pareto_front,
    seed_report,
    select_trial,
    storage_location,
)
from ase_search.schedule import ExitSchedule

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

FULL_LATENCY = 1.0
CONFIG = {"sampler": "ddim", "steps": 20, "n_samples": 500, "finetune": "one-shot",
          "checkpoint": "runs/dit/last.pt", "space": "search_spaces/dit.yaml"}


def _schedule(latency: float, depth: int = 12) -> ExitSchedule:
    # Any valid schedule will do; derive it from the latency so trials differ.
    n = max(1, min(depth, round(depth * latency)))
    blocks = (depth, max(1, n), max(1, n - 1), max(1, n - 2), max(1, n - 3))
    return ExitSchedule("dit", depth, (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), blocks)


def add(study: optuna.Study, fid: float, latency: float, *, seed: str | None = None,
        state: TrialState = TrialState.COMPLETE, **attrs) -> None:
    schedule = _schedule(latency)
    user_attrs = {"schedule": schedule.to_dict(), "fid": fid, "latency": latency,
                  "acceleration": 1 - latency / FULL_LATENCY, "finetune_steps": 0, **attrs}
    if seed:  # D1's as studies made before 2026-12-07 stored it
        user_attrs["seed" if seed == "D1" else "preset"] = seed
    params = {f"blocks_{k}": n for k, n in enumerate(schedule.blocks)}
    dists = {k: IntDistribution(1, 12) for k in params}
    values = [fid, latency] if state == TrialState.COMPLETE else None
    if state == TrialState.FAIL:
        user_attrs["fail_reason"] = "out of memory"
    study.add_trial(create_trial(state=state, values=values, params=params, distributions=dists,
                                 user_attrs=user_attrs))


def new_study(storage: str | None = None, name: str = "dit") -> optuna.Study:
    study = optuna.create_study(directions=["minimize", "minimize"], storage=storage,
                                study_name=name)
    study.set_metric_names(["fid", "latency"])
    study.set_user_attr("arch", "dit")
    study.set_user_attr("config", CONFIG)
    study.set_user_attr("full_latency", FULL_LATENCY)
    study.set_user_attr("ase_search_version", "0.1.0")
    return study


def hand_made(storage: str | None = None) -> optuna.Study:
    """Trials 0..6; front = {0, 2, 4, 5}; seed D4 (1) is dominated by front trials 2 and 5."""
    study = new_study(storage)
    add(study, 10.0, 1.0, seed="full")  # 0: front (lowest FID)
    add(study, 12.0, 0.6, seed="D4")  # 1: dominated by 2, 3 (off front) and 5
    add(study, 11.0, 0.5)  # 2: front
    add(study, 11.5, 0.55)  # 3: dominated by 2
    add(study, 10.5, 0.8, seed="D1")  # 4: front
    add(study, 12.0, 0.4)  # 5: front
    add(study, 9.0, 0.3, state=TrialState.FAIL)  # 6: failed, ignored
    return study


def brute_front(points: list[tuple[float, float]]) -> set[int]:
    def dominates(a, b):
        return a[0] <= b[0] and a[1] <= b[1] and a != b

    return {i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)}


# ###################################################################### front and seeds
def test_front_matches_brute_force_on_random_studies():
    rng = random.Random(0)
    for case in range(40):
        study = new_study()
        points = []
        for _ in range(rng.randint(1, 30)):
            # Small integer ranges force ties and exact duplicates.
            p = (float(rng.randint(0, 8)), float(rng.randint(1, 8)) / 8)
            points.append(p)
            add(study, *p)
            if rng.random() < 0.2:
                add(study, 0.0, 0.0, state=TrialState.FAIL)
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        expected = {complete[i].number for i in brute_front(points)}
        front = pareto_front(study)
        assert {t.number for t in front} == expected, case
        assert len(front) == len(expected)  # no trial listed twice
        assert [t.values for t in front] == sorted(t.values for t in front)


def test_duplicates_all_stay_on_front():
    study = new_study()
    add(study, 5.0, 0.5)
    add(study, 5.0, 0.5)
    add(study, 6.0, 0.5)  # dominated by the equal-latency, lower-FID pair
    add(study, 4.0, 0.9)
    assert [t.number for t in pareto_front(study)] == [3, 0, 1]
    # a trial the search told its measured twin's result is represented by the twin
    add(study, 4.0, 0.9, duplicate_of=3)
    assert [t.number for t in pareto_front(study)] == [3, 0, 1]


def test_seed_report_names_the_dominating_front_trials():
    report = {s.name: s for s in seed_report(hand_made())}
    assert set(report) == {"full", "D1", "D4"}
    assert report["full"].on_front and report["full"].dominated_by == ()
    assert report["D1"].on_front and report["D1"].dominated_by == ()
    d4 = report["D4"]
    assert not d4.on_front
    assert d4.trial == 1 and d4.dominated_by == (2, 5)
    assert d4.acceleration == pytest.approx(0.4)


def test_front_table_lists_front_and_seeds_by_acceleration():
    table = pareto_table(hand_made())
    assert tuple(table.columns) == FRONT_COLUMNS
    assert list(table.trial) == [0, 4, 1, 2, 5]  # acceleration 0, .2, .4, .5, .6
    assert list(table.acceleration) == pytest.approx([0.0, 0.2, 0.4, 0.5, 0.6])
    row = table.set_index("trial").loc[1]
    assert row.preset == "D4" and not row.on_front and row.dominated_by == "2, 5"
    assert table.set_index("trial").loc[2].schedule == "|".join(
        str(n) for n in _schedule(0.5).blocks)
    assert 3 in set(pareto_table(hand_made(), include_all=True).trial)


# ###################################################################### selecting trials
def test_select_trial_by_each_criterion():
    study = hand_made()
    assert select_trial(study, trial=3).number == 3  # any complete trial by number
    assert select_trial(study, max_fid=11.0).number == 2  # fastest with FID <= 11
    assert select_trial(study, max_fid=10.0).number == 0
    assert select_trial(study, min_acceleration=0.55).number == 5
    assert select_trial(study, min_acceleration=0.1).number == 4  # best FID with >= 10%


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one"),
    ({"trial": 1, "max_fid": 11.0}, "exactly one"),
    ({"max_fid": 9.0}, "lowest FID is 10"),
    ({"min_acceleration": 0.7}, "highest is 60.00% (trial 5"),
    ({"trial": 42}, "does not exist"),
    ({"trial": 6}, "FAIL (out of memory)"),
    ({"min_acceleration": 1.5}, "min_acceleration"),
])
def test_select_trial_errors_say_what_is_available(kwargs, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        select_trial(hand_made(), **kwargs)


# ###################################################################### export
def test_export_round_trips_with_provenance(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    # A journal file is much faster to fill than SQLite; open_study tests cover both.
    storage = str(tmp_path / "dit.journal")
    study = hand_made(optuna.storages.JournalStorage(JournalFileBackend(storage)))
    out = tmp_path / "schedules" / "best.json"
    written = export_schedule(study, select_trial(study, max_fid=11.0), out)
    loaded = ExitSchedule.from_json(out)
    assert loaded == written  # equality ignores metadata
    expected = _schedule(0.5)
    assert (loaded.arch, loaded.depth, loaded.boundaries, loaded.blocks) == (
        expected.arch, expected.depth, expected.boundaries, expected.blocks)
    meta = loaded.metadata
    # the study named relative to the exported file: the pair can move together
    assert meta["study"] == "dit" and meta["trial"] == 2 and meta["storage"] == "../dit.journal"
    assert (out.parent / meta["storage"]).resolve() == Path(storage).resolve()
    assert meta["fid"] == 11.0 and meta["latency"] == 0.5
    assert meta["acceleration"] == pytest.approx(0.5)
    assert meta["sampler"] == "ddim" and meta["steps"] == 20
    assert meta["finetune"] == "one-shot" and meta["checkpoint"] == "runs/dit/last.pt"
    assert meta["search_config"] == CONFIG
    assert loaded.name == "dit-trial2"
    # The exporter's installed version, and the one the study recorded when it was made.
    assert meta["ase_search_version"] == importlib.metadata.version("ase-search")
    assert meta["study_ase_search_version"] == "0.1.0"
    seed = export_schedule(study, 1, tmp_path / "d4.json")  # by number; seeds keep their name
    assert seed.name == "D4" and seed.metadata["preset"] == "D4"
    assert not list(tmp_path.glob("schedules/.*"))  # no temporary file left behind
    with pytest.raises(StudyError, match="json"):
        export_schedule(study, 2, tmp_path / "best.txt")


# ###################################################################### opening studies
def test_open_study_from_path_url_and_journal(tmp_path):
    db = tmp_path / "dit.db"
    hand_made("sqlite:///" + str(db))
    for spec in (db, str(db), "sqlite:///" + str(db)):
        study = open_study(spec)
        assert study.study_name == "dit" and len(pareto_front(study)) == 4
    journal = tmp_path / "dit.journal"
    from optuna.storages.journal import JournalFileBackend

    hand_made(optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    study = open_study(journal)
    assert [t.number for t in pareto_front(study)] == [0, 4, 2, 5]
    assert storage_location(study) == str(journal)


def test_open_study_refuses_missing_and_foreign_files(tmp_path):
    missing = tmp_path / "nope.db"
    for spec in (missing, "sqlite:///" + str(missing)):
        with pytest.raises(StudyError, match="not found"):
            open_study(spec)
    assert not missing.exists()  # SQLite must not have created an empty database

    text = tmp_path / "notes.db"
    text.write_text("hello, not a database\n")
    with pytest.raises(StudyError, match="not an Optuna storage"):
        open_study(text)
    bad_journal = tmp_path / "notes.journal"
    bad_journal.write_text("hello\n")
    # the search's opener reads a journal-named file as a journal, naming the bad line
    with pytest.raises(StudyError, match="not a readable Optuna journal \\(line 1 is not JSON"):
        open_study(bad_journal)
    empty_journal = tmp_path / "empty.log"
    empty_journal.touch()
    with pytest.raises(StudyError, match="holds no Optuna study"):
        open_study(empty_journal)
    with pytest.raises(StudyError, match="directory"):
        open_study(tmp_path)

    foreign = tmp_path / "other.db"
    con = sqlite3.connect(foreign)
    con.execute("create table measurements (x integer)")
    con.commit()
    con.close()
    with pytest.raises(StudyError, match="not a readable Optuna storage"):
        open_study(foreign)
    con = sqlite3.connect(foreign)
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    con.close()
    assert tables == {"measurements"}  # opening did not add Optuna's tables


def test_open_study_with_several_studies_needs_a_name(tmp_path):
    storage = "sqlite:///" + str(tmp_path / "all.db")
    new_study(storage, "dit")
    hand_made_uvit = new_study(storage, "uvit")
    add(hand_made_uvit, 3.0, 0.5)
    with pytest.raises(StudyError, match="2 studies \\(dit, uvit\\).*--study-name"):
        open_study(tmp_path / "all.db")
    with pytest.raises(StudyError, match="'u-vit' is not in .*dit, uvit"):
        open_study(tmp_path / "all.db", "u-vit")
    assert len(open_study(tmp_path / "all.db", "uvit").trials) == 1
    empty = tmp_path / "empty.db"
    optuna.storages.RDBStorage("sqlite:///" + str(empty))  # tables, no study
    with pytest.raises(StudyError, match="holds no Optuna study"):
        open_study(empty)


def test_open_study_refuses_other_directions(tmp_path):
    storage = "sqlite:///" + str(tmp_path / "max.db")
    optuna.create_study(directions=["maximize", "minimize"], storage=storage, study_name="m")
    with pytest.raises(StudyError, match="minimises"):
        open_study(tmp_path / "max.db")


# ###################################################################### hypervolume
def brute_hypervolume(points: list[tuple[int, int]], ref: tuple[int, int]) -> int:
    """Count the unit cells [a, a+1) x [b, b+1) below ``ref`` that some point dominates."""
    return sum(1 for a, b in itertools.product(range(ref[0]), range(ref[1]))
               if any(p[0] <= a and p[1] <= b for p in points))


def test_hypervolume_matches_grid_count_and_optuna():
    from optuna._hypervolume import compute_hypervolume

    rng = random.Random(1)
    for _ in range(60):
        ref = (rng.randint(1, 12), rng.randint(1, 12))
        # Some points lie on or beyond the reference and must add nothing.
        points = [(rng.randint(0, 13), rng.randint(0, 13)) for _ in range(rng.randint(0, 12))]
        assert hypervolume(points, ref) == brute_hypervolume(points, ref)
    for _ in range(20):
        pts = np.random.default_rng(rng.randint(0, 99)).random((15, 2))
        assert hypervolume(pts.tolist(), (1.0, 1.0)) == pytest.approx(
            compute_hypervolume(pts, np.array([1.0, 1.0])))


def test_hypervolume_history_is_the_prefix_hypervolume():
    rng = random.Random(2)
    study = new_study()
    points = []
    for _ in range(25):
        p = (rng.randint(0, 9), rng.randint(0, 9))
        points.append(p)
        add(study, *map(float, p))
        if rng.random() < 0.3:
            add(study, 1.0, 1.0, state=TrialState.FAIL)  # no entry, no change
    ref = (10, 10)
    history = hypervolume_history(study, ref)
    assert history == [brute_hypervolume(points[: k + 1], ref) for k in range(len(points))]
    assert history == sorted(history)
    with pytest.raises(StudyError, match="reference_point"):
        hypervolume_history(study, (1.0,))


def test_exported_json_is_plain_json(tmp_path):
    out = tmp_path / "s.json"
    export_schedule(hand_made(), 0, out)
    data = json.loads(Path(out).read_text())
    assert data["blocks"] == [12, 12, 11, 10, 9] and data["metadata"]["preset"] == "full"
    assert data["metadata"]["storage"] is None  # in-memory study


# ###################################################################### the reference studies
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "studies" / "reference"


@pytest.mark.parametrize("arch", ["dit", "uvit"])
def test_reference_studies_fronts_and_hypervolumes_match_independent_references(arch, tmp_path):
    """On the committed reference studies: the front is the brute-force non-dominated set of the
    measured (not told) trials, and the hypervolume history is Optuna's own."""
    import shutil

    from optuna.visualization import plot_hypervolume_history

    from ase_search.report import default_reference_point

    copy = tmp_path / f"{arch}.db"  # a copy: the committed study is never opened for writing
    shutil.copyfile(REFERENCE_DIR / f"{arch}.db", copy)
    study = open_study(copy)
    measured = [t for t in complete_trials(study) if "duplicate_of" not in t.user_attrs]
    brute = {t.number for t in measured if not any(
        o.values[0] <= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
        for o in measured)}
    front = pareto_front(study)
    assert {t.number for t in front} == brute
    # Told copies (duplicate_of) are on Optuna's own front beside their twin, and only there.
    copies = {t.number for t in study.best_trials} - {t.number for t in front}
    assert all(study.trials[n].user_attrs["duplicate_of"] in brute for n in copies)
    ref = default_reference_point(study)
    history = hypervolume_history(study, ref)
    assert history[-1] == pytest.approx(hypervolume([t.values for t in front], ref), rel=1e-12)
    # Optuna's own hypervolume history (public, if experimental) is the independent reference.
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna_history = plot_hypervolume_history(study, ref).data[0].y
    assert history == pytest.approx(list(optuna_history), rel=1e-9)
    for s in seed_report(study):  # a seed is dominated exactly by the front trials that beat it
        t = study.trials[s.trial]
        assert set(s.dominated_by) == {f.number for f in front if
                                       f.values[0] <= t.values[0] and f.values[1] <= t.values[1]
                                       and f.values != t.values}
