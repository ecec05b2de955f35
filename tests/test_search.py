"""The search: Ray smoke run, seeds once across resumes, SIGKILL resume, failed trials, bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ase_search.search import SearchConfig, SearchError, TrialContext, run_search
from ase_search.search.study import enqueue_seeds, open_or_create_study, recover_interrupted
from ase_search.search.tune import make_searcher, trainable
from ase_search.storage import resolve_storage
from ase_search.space import load_space, schedules_equivalent

optuna.logging.set_verbosity(optuna.logging.WARNING)
ASE = str(Path(sys.executable).with_name("ase-search"))


def _config(root: Path, **kw) -> SearchConfig:
    base = dict(arch="dit", budget=3, space=str(root / "space.yaml"),
                checkpoint=str(root / "tiny.pt"), steps=2, n_samples=24, batch_size=24,
                finetune="none", search_algorithm="random", storage=str(root / "study.db"),
                max_concurrent=1, latency_batch=8, grid=4)
    base.update(kw)
    return SearchConfig(**base)


def _searcher(tmp_path: Path, tiny: Path, **kw):
    """A fresh study and the Ray searcher that drives it, outside Tune."""
    config = _config(tiny, storage=str(tmp_path / "s.db"), **kw)
    space = load_space(tiny / "space.yaml")
    storage = resolve_storage(config.storage)
    open_or_create_study(config, storage, extra_attrs={})
    searcher = make_searcher(space, storage, config)
    searcher.set_search_properties(None, None, {})
    return config, space, searcher


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(root / "cache"), "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1"}


@pytest.mark.slow
def test_ray_smoke_run_and_resume_enqueues_seeds_once(tiny, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tiny / "cache"))
    summary = run_search(_config(tiny), progress=False, log=lambda m: None)
    assert summary.complete == 3 and summary.new_trials == 3
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{tiny / 'study.db'}")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 3
    for t in done:
        assert all(math.isfinite(v) for v in t.values)
        assert t.user_attrs["schedule"]["arch"] == "dit"
        assert set(t.user_attrs["time_split"]) == {"load", "finetune", "sampling", "fid"}
        # saved by the driver beside the study, recorded relative to it
        assert not Path(t.user_attrs["grid"]).is_absolute()
        assert (tiny / t.user_attrs["grid"]).is_file()
        assert t.user_attrs["node"]  # the Ray node that measured it
        assert t.values[1] == pytest.approx(t.user_attrs["latency"])
    seeds = sorted(t.user_attrs.get("preset") or "" for t in done)
    assert seeds == ["", "D4", "full"]
    # the full schedule's latency is the stored full latency; D4 is faster
    by_seed = {t.user_attrs.get("preset"): t for t in done}
    assert by_seed["full"].values[1] == pytest.approx(study.user_attrs["full_latency"])
    assert by_seed["D4"].values[1] < by_seed["full"].values[1]

    # Resume to a larger budget: seeds are not enqueued again, finished trials are kept.
    summary = run_search(_config(tiny, budget=4), progress=False, log=lambda m: None)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{tiny / 'study.db'}")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert summary.new_trials == 1 and len(done) == 4
    assert [t.user_attrs.get("preset") for t in study.trials].count("full") == 1
    # A resume with other settings is refused rather than mixing incomparable trials.
    with pytest.raises(SearchError, match="other settings"):
        run_search(_config(tiny, budget=5, steps=3), progress=False, log=lambda m: None)
    # The study records no absolute path of the machine it ran on: moved with its files to
    # another folder, it opens, exports (the export names the study relative to itself) and
    # resumes from the files' new paths.
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{tiny / 'study.db'}")
    assert study.user_attrs["config"]["storage"] == "study.db"
    moved = tiny.parent / "moved"
    shutil.copytree(tiny, moved)
    exported = subprocess.run([ASE, "export", str(moved / "study.db"), "--trial", "0", "-o",
                               str(moved / "out" / "t0.json")], env=_env(moved),
                              capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr
    meta = json.loads((moved / "out" / "t0.json").read_text())["metadata"]
    assert meta["storage"] == os.path.join("..", "study.db")
    summary = run_search(_config(moved, budget=5), progress=False, log=lambda m: None)
    assert summary.new_trials == 1


def test_distill_is_part_of_a_study_identity_only_when_set(tmp_path, tiny) -> None:
    """Distilled and plain fine-tunes give incomparable FIDs, so a study refuses to mix them;
    studies made before the option existed (no key) still resume as plain ones."""
    plain = _config(tiny, storage=str(tmp_path / "s.db"))
    assert "finetune_distill" not in plain.identity()
    distilled = _config(tiny, storage=str(tmp_path / "s.db"), finetune_distill=True)
    assert distilled.identity()["finetune_distill"] is True
    storage = resolve_storage(plain.storage)
    open_or_create_study(plain, storage, extra_attrs={})
    with pytest.raises(SearchError, match="other settings"):
        open_or_create_study(distilled, storage, extra_attrs={})
    with pytest.raises(SearchError, match="finetune_distill"):
        _config(tiny, finetune_distill="yes")


def test_timestep_spacing_is_part_of_a_study_identity_only_when_set(tmp_path, tiny) -> None:
    """Another spacing calls the model at other timesteps; studies made before the option
    existed (no key) still resume with the sampler's default."""
    plain = _config(tiny, storage=str(tmp_path / "s.db"))
    assert "timestep_spacing" not in plain.identity() and plain.sampler_config.spacing == "leading"
    official = _config(tiny, storage=str(tmp_path / "s.db"), timestep_spacing="linspace")
    assert official.identity()["timestep_spacing"] == "linspace"
    assert official.sampler_config.model_times()[0] == 999.0  # what every trial samples at
    storage = resolve_storage(plain.storage)
    open_or_create_study(plain, storage, extra_attrs={})
    with pytest.raises(SearchError, match="other settings"):
        open_or_create_study(official, storage, extra_attrs={})
    with pytest.raises(SearchError, match="timestep_spacing"):
        _config(tiny, timestep_spacing="trailing")


def test_seeds_are_enqueued_once(tmp_path, tiny) -> None:
    config = _config(tiny, storage=str(tmp_path / "s.db"))
    space = load_space(tiny / "space.yaml")
    study = open_or_create_study(config, resolve_storage(config.storage), extra_attrs={})
    assert enqueue_seeds(study, space) == ["full", "D4"]
    assert enqueue_seeds(study, space) == []
    # a finished seed stays finished; a failed one is queued again
    t = study.ask(space.distributions())
    assert t.params == space.to_params(space.seed_schedules()[0])
    study.tell(t, [1.0, 2.0])
    t = study.ask(space.distributions())
    study.tell(t, state=TrialState.FAIL)
    assert enqueue_seeds(study, space) == ["D4"]
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1


def test_interrupted_trials_are_failed_and_requeued(tmp_path, tiny) -> None:
    config = _config(tiny, storage=str(tmp_path / "s.db"))
    space = load_space(tiny / "space.yaml")
    study = open_or_create_study(config, resolve_storage(config.storage), extra_attrs={})
    finished = study.ask(space.distributions())
    study.tell(finished, [1.0, 1.0])
    running = study.ask(space.distributions())  # left RUNNING, as by a killed driver
    assert recover_interrupted(study) == 1
    trial = study.trials[running.number]
    assert trial.state == TrialState.FAIL and "interrupted" in trial.user_attrs["fail_reason"]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [w.system_attrs["fixed_params"] for w in waiting] == [running.params]
    assert study.trials[finished.number].state == TrialState.COMPLETE
    assert recover_interrupted(study) == 0


def test_a_trial_killed_while_its_parameters_were_drawn_is_failed_not_requeued(tmp_path,
                                                                               tiny) -> None:
    """A driver killed between asking a trial and drawing its last parameter leaves some
    parameters only: queued, they would fix part of a new suggestion, so it is failed alone."""
    config = _config(tiny, storage=str(tmp_path / "s.db"))
    space = load_space(tiny / "space.yaml")
    study = open_or_create_study(config, resolve_storage(config.storage), extra_attrs={})
    names = sorted(space.distributions())
    partial = study.ask({n: d for n, d in space.distributions().items() if n != names[-1]})
    whole = study.ask(space.distributions())
    assert recover_interrupted(study, names=names) == 2
    assert study.trials[partial.number].state == TrialState.FAIL
    assert study.trials[whole.number].state == TrialState.FAIL
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [w.system_attrs["fixed_params"] for w in waiting] == [whole.params]


def test_failing_trials_are_failed_with_reason_and_the_study_goes_on(tmp_path, tiny,
                                                                     monkeypatch) -> None:
    config, space, searcher = _searcher(tmp_path, tiny)
    study = searcher._ot_study

    # A worker that raises reports its reason (captured here instead of sent to Tune).
    reported: list[dict] = []
    from ray import tune

    monkeypatch.setattr(tune, "report", lambda metrics: reported.append(metrics))

    class _Ctx:
        def get_trial_id(self) -> str:
            return "t0"

    monkeypatch.setattr(tune, "get_context", lambda: _Ctx())
    ctx = TrialContext(config=config.__dict__ | {"fid_weights": None}, weights=str(tmp_path / "x.pt"),
                       space=space.to_dict(), cost_model={}, cpus=1)
    params = searcher.suggest("a")
    trainable(params, ctx)
    # the worker names the missing weights and the node it runs on
    assert f"weights {tmp_path / 'x.pt'} does not exist on node" in reported[-1]["fail_reason"]
    assert math.isnan(reported[-1]["fid"])  # the metrics Tune insists on, as NaN
    searcher.on_trial_complete("a", reported[-1])
    # NaN metrics never become values: the trial is FAILED, not left RUNNING.
    searcher.suggest("b")
    searcher.on_trial_complete("b", {"fid": float("nan"), "latency": 1.0})
    # A crashed worker (no result at all).
    searcher.suggest("c")
    searcher.on_trial_complete("c", None, error=True)
    # and the study goes on
    searcher.suggest("d")
    searcher.on_trial_complete("d", {"fid": 3.0, "latency": 1.0, "acceleration": 0.1})
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL] * 3 + [TrialState.COMPLETE]
    reasons = [t.user_attrs.get("fail_reason", "") for t in study.trials[:3]]
    assert "does not exist on node" in reasons[0]
    assert "non-finite" in reasons[1] and "crashed" in reasons[2]
    assert study.trials[3].values == [3.0, 1.0]


def test_a_schedule_already_measured_is_not_measured_again(tmp_path, tiny) -> None:
    config, space, searcher = _searcher(tmp_path, tiny, budget=4)
    study = searcher._ot_study
    d4 = space.seed_schedules()[1]
    # Trial 0 measured D4; then the sampler proposes D4 again (here: enqueued twice, once
    # through different parameters that decode to the same schedule), then something new.
    params = space.to_params(d4)
    study.enqueue_trial(params)
    first = searcher.suggest("a")
    assert first == params
    searcher.on_trial_complete("a", {"fid": 7.0, "latency": 0.5, "acceleration": 0.4,
                                     "schedule": json.dumps(d4.to_dict()), "wall_time": 9.0})
    study.enqueue_trial(params)
    study.enqueue_trial(params)
    fresh = searcher.suggest("b")
    decoded = space.from_params(fresh)
    assert not schedules_equivalent(decoded, d4)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert [t.number for t in done] == [0, 1, 2]
    for twin in done[1:]:  # told D4's values without running anything
        assert twin.values == [7.0, 0.5] and twin.user_attrs["duplicate_of"] == 0
        assert "wall_time" not in twin.user_attrs
    # reused trials count toward the budget: 3 done + 1 running = 4, so nothing more is asked
    assert searcher.suggest("c") == searcher.FINISHED


@pytest.mark.slow
def test_sigkilled_run_resumes_without_losing_finished_trials(tiny, tmp_path) -> None:
    db = tmp_path / "killed.db"
    args = [ASE, "run", "--arch", "dit", "--budget", "6", "--space", str(tiny / "space.yaml"),
            "--checkpoint", str(tiny / "tiny.pt"), "--steps", "2", "--n-samples", "24",
            "--finetune", "none", "--search-algorithm", "random", "--storage", str(db),
            "--max-concurrent", "1"]
    proc = subprocess.Popen(args, env=_env(tmp_path), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"sqlite:///{db}"
    deadline = time.time() + 300
    killed_with = None
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            study = optuna.load_study(study_name="dit", storage=url)
        except Exception:
            continue
        if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
            continue
        # A reused trial actor finishes a trial in a fraction of a second: freeze the driver
        # and every Ray process it started, then read the study, so that the kill lands on
        # the state that was read
        os.killpg(proc.pid, signal.SIGSTOP)
        time.sleep(0.2)
        try:  # (frozen while it held the database's write lock: try again)
            states = [t.state for t in optuna.load_study(study_name="dit", storage=url)
                      .get_trials(deepcopy=False)]
        except Exception:
            states = []
        if TrialState.RUNNING in states:
            os.killpg(proc.pid, signal.SIGKILL)
            killed_with = states
            break
        os.killpg(proc.pid, signal.SIGCONT)
    proc.wait(timeout=60)
    assert killed_with is not None, "the run finished or stalled before it could be killed"
    study = optuna.load_study(study_name="dit", storage=url)
    finished = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
    interrupted = [t for t in study.trials if t.state == TrialState.RUNNING]
    assert interrupted

    result = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    study = optuna.load_study(study_name="dit", storage=url)
    for number, values in finished.items():  # nothing finished was lost or changed
        assert study.trials[number].state == TrialState.COMPLETE
        assert study.trials[number].values == values
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 6
    # the killed driver's Tune folder (beside the study) went with the re-run, which removed
    # its own when it ended
    assert not list((tmp_path / "killed-dit-tune").iterdir())  # <storage stem>-<study>
    for t in interrupted:
        after = study.trials[t.number]
        assert after.state == TrialState.FAIL
        assert "interrupted" in after.user_attrs["fail_reason"]
        rerun = [u for u in study.get_trials(states=(TrialState.COMPLETE,))
                 if u.params == t.params and u.number > t.number]
        if set(load_space(tiny / "space.yaml").distributions()) <= set(t.params):
            assert rerun, f"interrupted trial {t.number} was not re-run"
        else:  # killed while its parameters were drawn: never a fixed part of a later trial
            assert not [u for u in study.trials
                        if u.system_attrs.get("fixed_params") == t.params], t.params


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--arch", "unet"], "--arch must be dit or uvit"),
        (["--checkpoint", "/nonexistent/model.pt"], "checkpoint not found"),
        (["--space", "MALFORMED"], "not valid YAML"),
        (["--storage", "NOTADB"], "is not an Optuna storage"),
        (["--budget", "0"], "--budget must be >= 1"),
        (["--full-share", "1.5"], "--full-share must lie in [0, 1]"),
        (["--finetune-steps", "-5"], "--finetune-steps must be >= 0"),
        (["--storage", "UNDERFILE"], "is a file, not a folder"),
        (["--timestep-spacing", "trailing"], "--timestep-spacing must be one of"),
    ],
)
def test_bad_input_gives_one_clear_line(tiny, tmp_path, extra, message, cli,
                                        monkeypatch) -> None:
    (tmp_path / "bad.yaml").write_text("arch: [dit\n")
    (tmp_path / "bad.db").write_text("this is not a database\n" * 20)
    (tmp_path / "file").write_text("a regular file\n")
    extra = [{"MALFORMED": str(tmp_path / "bad.yaml"),
              "NOTADB": str(tmp_path / "bad.db"),
              "UNDERFILE": str(tmp_path / "file" / "s.db")}.get(x, x) for x in extra]
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    code, _, err = cli(["run", "--space", str(tiny / "space.yaml"), "--checkpoint",
                        str(tiny / "tiny.pt"), "--storage", str(tmp_path / "s.db"), *extra])
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) <= 2 and "Traceback" not in err
    assert message in " ".join(err.split()), err


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"op_code": 0, "worker_id": "w", "study_name": "dit", "directions": [1, 1]}\n'
         b'{"op_code": 99}\n', "Should not reach"),  # an operation Optuna does not know
        (b"garbage, not JSON\n", "line 1 is not JSON"),  # Optuna would skip it, then append
        (b'{"op_code": 4, "worker_id": "w", "trial_id": 7}\n', "study_id"),  # a foreign record
    ],
)
def test_a_corrupt_journal_is_refused_in_one_line_and_left_untouched(tiny, tmp_path, content,
                                                                     why, cli,
                                                                     monkeypatch) -> None:
    journal = tmp_path / "study.journal"
    journal.write_bytes(content)
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    code, _, err = cli(["run", "--space", str(tiny / "space.yaml"), "--checkpoint",
                        str(tiny / "tiny.pt"), "--finetune", "none", "--storage", str(journal)])
    said = " ".join(err.split())
    assert code == 2 and "Traceback" not in err, err[-2000:]
    assert f"{journal} is not a readable Optuna journal" in said and why in said, said
    assert journal.read_bytes() == content


def test_the_progress_front_counts_distinct_measured_schedules(tmp_path, tiny) -> None:
    from ase_search.search.run import StudyProgress

    config = _config(tiny, storage=str(tmp_path / "s.db"))
    space = load_space(tiny / "space.yaml")
    study = open_or_create_study(config, resolve_storage(config.storage), extra_attrs={})
    full, d4 = space.seed_schedules()
    dominated = space.from_params({**space.to_params(d4), "blocks_0": 3})

    def add(schedule, values, **attrs) -> None:
        study.add_trial(optuna.trial.create_trial(
            params=space.to_params(schedule), distributions=space.distributions(), values=values,
            user_attrs={"schedule": schedule.to_dict(), "acceleration": 0.1, **attrs}))

    add(full, [1.0, 2.0])
    add(full, [1.0, 2.0])  # the same schedule measured again (two drivers at once)
    add(full, [1.0, 2.0], duplicate_of=0)  # a twin told trial 0's result
    add(d4, [3.0, 1.0])
    add(d4, [3.0, 1.0], duplicate_of=3)
    add(dominated, [4.0, 1.5])
    bar = StudyProgress(study, total=10, enabled=False)
    text = bar.progress.tasks[0].fields["best"]
    assert text.startswith("front 2, failed 0"), text  # full and D4; the rest are copies


def test_tune_folders_of_gone_drivers_are_removed(tmp_path, tiny) -> None:
    from ase_search.search.study import Driver, remove_stale_tune_dirs

    config = _config(tiny, storage=str(tmp_path / "s.db"))
    study = open_or_create_study(config, resolve_storage(config.storage), extra_attrs={})
    live = Driver.this_process()
    live.beat(study)
    ended = Driver.this_process()
    ended.beat(study, stopped=True)
    root = tmp_path / "dit-tune"
    for name in (live.id, ended.id, "killed-before-heartbeats-existed"):
        (root / name / "exp").mkdir(parents=True)
    remove_stale_tune_dirs(root, study)
    assert [p.name for p in root.iterdir()] == [live.id]


def _context(tiny: Path, config: SearchConfig, tmp_path: Path, **kw) -> TrialContext:
    space = load_space(tiny / "space.yaml")
    from ase_search.models import load_checkpoint
    from ase_search.metrics.latency import profile_components

    model, _ = load_checkpoint(tiny / "tiny.pt")
    base = dict(config=config.__dict__.copy(), weights=str(tiny / "tiny.pt"),
                space=space.to_dict(),
                cost_model=profile_components(model, batch_size=2, device="cpu").to_dict(), cpus=1)
    base.update(kw)
    return TrialContext(**base)


def test_shipped_weights_make_the_driver_path_irrelevant(tiny, tmp_path, monkeypatch) -> None:
    """A trial on another node has no copy of the driver's weights file: the bytes travel in the
    context, and the measurement equals the one made from the file."""
    from ase_search.search import evaluate_schedule

    monkeypatch.setenv("XDG_CACHE_HOME", str(tiny / "cache"))
    config = _config(tiny, n_samples=8, batch_size=8, grid=0)
    d4 = load_space(tiny / "space.yaml").seed_schedules()[1]
    from_file = evaluate_schedule(d4, _context(tiny, config, tmp_path))
    shipped = _context(tiny, config, tmp_path, weights=str(tmp_path / "driver-only" / "tiny.pt"),
                       weights_bytes=(tiny / "tiny.pt").read_bytes())
    from_bytes = evaluate_schedule(d4, shipped)
    assert math.isfinite(from_file["fid"]) and from_bytes["fid"] == from_file["fid"]


def test_an_input_missing_where_the_trial_runs_is_named_with_the_node(tiny, tmp_path) -> None:
    import socket

    from ase_search.search import evaluate_schedule

    config = _config(tiny, n_samples=8, batch_size=8, grid=0)
    images = tmp_path / "images"  # never made: a folder on the driver's disk only
    ctx = dataclasses.replace(_context(tiny, config, tmp_path),
                              config={**config.__dict__, "fid_data": str(images)})
    d4 = load_space(tiny / "space.yaml").seed_schedules()[1]
    with pytest.raises(FileNotFoundError,
                       match=f"--fid-data {images} does not exist on node {socket.gethostname()}"):
        evaluate_schedule(d4, ctx)


def test_a_resume_with_other_weights_is_refused_before_any_work(tmp_path, tiny,
                                                                 monkeypatch) -> None:
    """The study records the one-shot key of the weights it was measured on; a resume whose
    weights have another key (here: none, the plain checkpoint) is refused in one line, and
    the record is left as it was."""
    from ase_search.search.run import check_weights_key

    monkeypatch.setenv("XDG_CACHE_HOME", str(tiny / "cache"))
    config = _config(tiny, storage=str(tmp_path / "s.db"))
    study = open_or_create_study(config, resolve_storage(config.storage), extra_attrs={})
    record = {"path": "dit-one-shot-0123456789ab.safetensors", "one_shot_key": "0123456789ab" * 5}
    study.set_user_attr("weights", record)
    with pytest.raises(SearchError, match="one-shot key 0123456789ab, but these settings use "
                                          "weights with key none"):
        run_search(config, progress=False, log=lambda m: None)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert study.user_attrs["weights"] == record
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.COMPLETE))
    check_weights_key(study, record["one_shot_key"])  # the same key goes on
    study.set_user_attr("weights", "old/absolute/path.safetensors")  # made before keys: no check
    check_weights_key(study, None)


def test_config_errors_name_fields_and_the_cli_says_its_flags(tiny, tmp_path) -> None:
    """SearchConfig speaks of its fields; `ase-search run` says the flags the user typed, even
    where a path spells a field's name."""
    with pytest.raises(SearchError, match=r"^finetune_full_share must lie in \[0, 1\]") as info:
        _config(tiny, finetune_full_share=1.5)
    assert info.value.fields == ("finetune_full_share",)
    missing = tmp_path / "data"
    args = [ASE, "run", "--space", str(tiny / "space.yaml"), "--checkpoint",
            str(tiny / "tiny.pt"), "--storage", str(tmp_path / "s.db"), "--data", str(missing)]
    result = subprocess.run(args, env=_env(tmp_path), capture_output=True, text=True,
                            timeout=120)
    said = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"error: --data {missing} does not exist; pass an existing path or mnist" in said


def test_a_trial_validates_its_space_once_and_plans_its_calls_once(tiny, tmp_path, monkeypatch):
    """The work a trial repeats: the space decoded and validated once (by the trainable), and
    the call plan computed once, however many parts (sampler, block counter, cost model,
    accelerations) read it."""
    import ray.tune

    from ase_search import callplan
    from ase_search.metrics.latency import CostModel
    from ase_search.search.tune import trainable
    from ase_search.space import ScheduleSpace, load_space

    monkeypatch.setenv("XDG_CACHE_HOME", str(tiny / "cache"))
    space = load_space(tiny / "space.yaml")
    config = _config(tiny, storage=str(tmp_path / "s.db"), grid=0)
    cost = CostModel(arch="dit", depth=space.depth, fixed=3.0, block=2.0, dropped=0.0,
                     batch_size=8, device="cpu", components={})
    ctx = TrialContext(config=dataclasses.asdict(config), weights=str(tiny / "tiny.pt"),
                       space=space.to_dict(), cost_model=cost.to_dict(), cpus=1)
    params = {name: dist.low for name, dist in space.distributions().items()}
    validations, reports = [], []
    original = ScheduleSpace.__post_init__

    def counting(self):
        validations.append(1)
        original(self)

    class Context:
        def get_trial_id(self):
            return "t0"

    monkeypatch.setattr(ScheduleSpace, "__post_init__", counting)
    monkeypatch.setattr(ray.tune, "report", reports.append)
    monkeypatch.setattr(ray.tune, "get_context", lambda: Context())
    callplan._plan.cache_clear()
    trainable(params, ctx)
    (result,) = reports
    assert "fail_reason" not in result, result
    assert len(validations) == 1
    assert callplan._plan.cache_info().misses == 1
