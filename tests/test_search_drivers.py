"""Several drivers on one study: each recovers only the trials of drivers that are gone, a result
told to a trial someone else finished is kept, and two real ``ase-search run`` processes on one
journal (and on PostgreSQL) measure every trial once and both finish."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ase_search.search import SearchConfig
from ase_search.search.study import (
    HEARTBEAT_GRACE,
    Driver,
    driver_gone,
    open_or_create_study,
    recover_interrupted,
)
from ase_search.search.tune import make_searcher
from ase_search.storage import resolve_storage
from ase_search.space import load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)
ASE = str(Path(sys.executable).with_name("ase-search"))
_spec = importlib.util.spec_from_file_location("_postgres", Path(__file__).with_name(
    "_postgres.py"))
_postgres = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_postgres)


@pytest.fixture(scope="module")
def postgres_url():
    """An Optuna URL of a throwaway PostgreSQL server, started for these tests."""
    reason = _postgres.why_unavailable()
    if reason is not None:
        pytest.skip(f"no PostgreSQL server for the test: {reason}")
    with _postgres.postgres_server() as url:
        yield url


def _study(tmp_path: Path, tiny: Path, storage: str | None = None):
    config = SearchConfig(arch="dit", budget=4, space=str(tiny / "space.yaml"),
                          checkpoint=str(tiny / "tiny.pt"), steps=2, n_samples=8,
                          finetune="none", search_algorithm="random",
                          storage=storage or str(tmp_path / "s.journal"))
    space = load_space(tiny / "space.yaml")
    storage = resolve_storage(config.storage)
    return config, space, storage, open_or_create_study(config, storage, extra_attrs={})


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_trials_of_gone_drivers_are_recovered(tmp_path, tiny) -> None:
    _, space, _, study = _study(tmp_path, tiny)
    here = socket.gethostname()
    now = time.time()
    drivers = {
        "live": {"host": here, "pid": os.getpid(), "beat": now},
        "dead-pid": {"host": here, "pid": _dead_pid(), "beat": now},
        "stopped": {"host": here, "pid": os.getpid(), "beat": now, "stopped": True},
        "remote-fresh": {"host": "elsewhere", "pid": 1, "beat": now - HEARTBEAT_GRACE / 2},
        "remote-stale": {"host": "elsewhere", "pid": 1, "beat": now - 2 * HEARTBEAT_GRACE},
    }
    for name, record in drivers.items():
        study.set_user_attr(f"driver:{name}", record)
    owners = [*drivers, "never-beat"]
    trials = {}
    for owner in owners:
        trial = study.ask(space.distributions())
        trial.set_user_attr("driver", owner)
        trials[owner] = trial.number
    expected_gone = {"dead-pid", "stopped", "remote-stale", "never-beat"}
    # the reference: which owners driver_gone calls gone
    assert {o for o in owners if driver_gone(study.user_attrs, o)} == expected_gone

    assert recover_interrupted(study) == len(expected_gone)
    for owner, number in trials.items():
        trial = study.trials[number]
        if owner in expected_gone:
            assert trial.state == TrialState.FAIL
            assert "interrupted" in trial.user_attrs["fail_reason"]
        else:
            assert trial.state == TrialState.RUNNING, owner
    # Once the remote driver's heartbeat is older than the grace period, its trial goes too.
    assert recover_interrupted(study, now=now + HEARTBEAT_GRACE) == 1
    assert study.trials[trials["remote-fresh"]].state == TrialState.FAIL
    assert study.trials[trials["live"]].state == TrialState.RUNNING


def test_untagged_running_trials_keep_the_old_behaviour(tmp_path, tiny) -> None:
    """A study made before trials were tagged: with no live driver, RUNNING means interrupted;
    beside a live driver, only trials older than the grace period (not just being tagged)."""
    _, space, _, study = _study(tmp_path, tiny)
    old = study.ask(space.distributions())
    assert recover_interrupted(study) == 1
    assert study.trials[old.number].state == TrialState.FAIL
    Driver.this_process().beat(study)
    fresh = study.ask(space.distributions())
    assert recover_interrupted(study) == 0
    assert recover_interrupted(study, now=time.time() + 2 * HEARTBEAT_GRACE) == 1
    assert study.trials[fresh.number].state == TrialState.FAIL


def test_a_result_for_a_trial_finished_meanwhile_is_kept(tmp_path, tiny) -> None:
    """Driver A's trial is taken for interrupted by driver B (A's heartbeat looked stale); A's
    measurement then arrives: it becomes a COMPLETE trial with the same parameters."""
    config, space, storage, study = _study(tmp_path, tiny)
    a = Driver.this_process()
    a.beat(study)
    searcher = make_searcher(space, storage, config, a.id)
    searcher.set_search_properties(None, None, {})
    params = searcher.suggest("t")
    number = study.trials[-1].number
    assert study.trials[number].user_attrs["driver"] == a.id
    assert recover_interrupted(study, now=time.time() + 2 * HEARTBEAT_GRACE) == 1
    searcher.on_trial_complete("t", {"fid": 5.0, "latency": 0.25, "acceleration": 0.5})
    trials = study.trials
    assert trials[number].state == TrialState.FAIL
    kept = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(kept) == 1 and kept[0].values == [5.0, 0.25] and kept[0].params == params
    assert kept[0].user_attrs["retold_from"] == number
    assert kept[0].user_attrs["acceleration"] == 0.5 and "fail_reason" not in kept[0].user_attrs
    # A failure for a trial finished meanwhile is dropped (the trial is failed already).
    searcher.suggest("u")
    recover_interrupted(study, now=time.time() + 2 * HEARTBEAT_GRACE)
    searcher.on_trial_complete("u", None, error=True)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1


def _two_drivers(tiny: Path, tmp_path: Path, storage: str) -> None:
    budget = 6
    args = [ASE, "run", "--arch", "dit", "--budget", str(budget), "--space",
            str(tiny / "space.yaml"), "--checkpoint", str(tiny / "tiny.pt"), "--steps", "2",
            "--n-samples", "16", "--finetune", "none", "--search-algorithm", "random",
            "--max-concurrent", "1", "--storage", storage]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    logs = [open(tmp_path / f"driver{i}.log", "w+") for i in range(2)]  # noqa: SIM115
    first = subprocess.Popen(args, env=env, stdout=logs[0], stderr=subprocess.STDOUT,
                             cwd=tmp_path)
    second = None
    try:
        # The second driver starts while the first has a trial running (the case).
        deadline = time.time() + 240
        handle = resolve_storage(storage)
        while time.time() < deadline and first.poll() is None:
            try:
                study = optuna.load_study(study_name="dit", storage=handle)
                if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    break
            except KeyError:  # not created yet
                pass
            time.sleep(0.3)
        assert first.poll() is None, "the first driver ended before the second could start"
        second = subprocess.Popen(args, env=env, stdout=logs[1], stderr=subprocess.STDOUT,
                                  cwd=tmp_path)
        codes = [first.wait(timeout=400), second.wait(timeout=400)]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    assert codes == [0, 0], "\n\n".join(o[-2500:] for o in outputs)
    assert not any("Traceback" in o for o in outputs), "\n\n".join(outputs)

    study = optuna.load_study(study_name="dit", storage=resolve_storage(storage))
    trials = study.trials
    assert not [t.number for t in trials if t.state not in (TrialState.COMPLETE,
                                                            TrialState.FAIL)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    # none lost: no live driver's trial was taken for interrupted, none had to be re-told
    assert not failed, [t.user_attrs.get("fail_reason") for t in failed]
    assert not [t for t in complete if "retold_from" in t.user_attrs]
    assert budget <= len(complete) <= budget + 1  # each driver may overshoot by a racing ask
    # every trial measured once: by its own worker, or told a finished twin's values
    assert all(("wall_time" in t.user_attrs) != ("duplicate_of" in t.user_attrs)
               for t in complete)
    ids = {t.user_attrs.get("driver") for t in trials if "duplicate_of" not in t.user_attrs}
    # Usually both drivers measure trials; on a loaded machine the second one's Ray can start
    # after the first has measured the whole budget, so only "one or both" is certain.
    drivers = {k.removeprefix("driver:") for k in study.user_attrs if k.startswith("driver:")}
    assert None not in ids and ids <= drivers, (ids, drivers)
    assert len(drivers) == 2, drivers  # both drivers ran against the study
    for driver in drivers:  # both ended cleanly, and said so
        assert study.user_attrs[f"driver:{driver}"].get("stopped") is True


@pytest.mark.slow
def test_two_drivers_on_one_journal_lose_nothing(tiny, tmp_path) -> None:
    _two_drivers(tiny, tmp_path, str(tmp_path / "study.journal"))
    # Tune's folders (named by the storage file and the study) went with their drivers
    root = tmp_path / "study-dit-tune"
    assert root.is_dir() and not list(root.glob("*"))


@pytest.mark.slow
def test_two_drivers_on_one_postgresql_study_lose_nothing(tiny, tmp_path, postgres_url) -> None:
    _two_drivers(tiny, tmp_path, postgres_url)
