"""The joint search (#15): sampler x steps x schedule, the steps-only baseline, three fronts,
confirmation seeds. Real Ray Tune, real Optuna storage, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import TrialState

from ase_search.fronts import study_fronts, study_verdict
from ase_search.record import (
    CONFIRM_PREFIX,
    SEARCHED_TIMESTEPS,
    STEPS_ONLY_PREFIX,
    point_records,
    points_study_name,
)
from ase_search.search import SearchConfig, run_search
from ase_search.search.study import open_or_create_study
from ase_search.space import ScheduleSpace, SpaceError, load_space
from ase_search.storage import resolve_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
ASE = str(Path(sys.executable).with_name("ase-search"))

JOINT_SPACE = """version: 1
arch: dit
depth: 4
intervals: 5
edges: uniform
blocks: {min: 1, max: null}
monotone: true
seeds: [full, D4]
sampling:
  samplers: [ddim, dpm-solver]
  steps: {min: 2, max: 6}
  steps_only: [2, 3]
  reference: {sampler: ddim, steps: 4}
"""

BASE = {k: v for k, v in ScheduleSpace.from_dict(
    {"version": 1, "arch": "dit", "depth": 4, "intervals": 5}).to_dict().items()}


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(root / "cache"), "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def joint(tmp_path_factory, tiny_dit) -> Path:
    return tiny_dit(tmp_path_factory.mktemp("joint"), JOINT_SPACE)


def _config(root: Path, **kw) -> SearchConfig:
    base = dict(arch="dit", budget=4, space=str(root / "space.yaml"),
                checkpoint=str(root / "tiny.pt"), n_samples=16, batch_size=16,
                finetune="none", search_algorithm="random", storage=str(root / "study.db"),
                max_concurrent=1, latency_batch=8, grid=0)
    base.update(kw)
    return SearchConfig(**base)


# ---------------------------------------------------------------------------- the space
@pytest.mark.parametrize("sampling, message", [
    ({"samplers": ["ddim", "heun"], "steps": {"min": 4, "max": 8}}, "unknown sampler 'heun'"),
    ({"samplers": ["ddim"], "steps": {"min": 0, "max": 8}}, "steps.min must be an integer >= 1"),
    ({"samplers": [], "steps": {"min": 4, "max": 8}}, "at least one sampler"),
    ({"samplers": ["ddim"], "steps": {"min": 9, "max": 8}}, "min 9 is above max 8"),
    ({"samplers": ["ddim"], "steps": {"min": 4, "max": 8}, "steps_only": [2]},
     "steps_only: 2 is not an integer in the step range"),
    ({"samplers": ["ddim"], "steps": {"min": 4, "max": 8}, "typo": 1}, "unknown field(s) typo"),
    ({"samplers": ["ddim"], "steps": {"min": 4, "max": 8},
      "reference": {"sampler": "ddpm", "steps": 5}}, "reference.sampler 'ddpm'"),
    ({"samplers": ["ddim"], "steps": {"min": 4, "max": 8},
      "timestep_spacing": ["searched", "leading"]}, "list a uniform spacing first"),
    ({"samplers": ["ddim"], "steps": {"min": 4, "max": 8},
      "timestep_spacing": ["leading", "searched", "searched"]}, "lists a spacing twice"),
    ({"samplers": ["ddim"], "steps": {"min": 4, "max": 8},
      "timestep_spacing": ["leading", "optimal"]}, "unknown spacing 'optimal'"),
])
def test_a_malformed_sampling_section_is_refused_naming_the_field(sampling, message) -> None:
    with pytest.raises(SpaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ScheduleSpace.from_dict({**BASE, "sampling": sampling})


@pytest.mark.parametrize("sampling, message", [
    ("samplers: [ddim, heun]\n  steps: {min: 4, max: 8}", "unknown sampler 'heun'"),
    ("samplers: [ddim]\n  steps: {min: 0, max: 8}", "steps.min must be an integer >= 1"),
    ("samplers: []\n  steps: {min: 4, max: 8}", "at least one sampler"),
    ("samplers: [ddim]\n  steps: {min: 9, max: 8}", "min 9 is above max 8"),
])
def test_the_cli_says_a_malformed_sampling_section_in_one_line(tmp_path, tiny_dit, sampling,
                                                               message, cli,
                                                               monkeypatch) -> None:
    root = tiny_dit(tmp_path, JOINT_SPACE.split("sampling:")[0] + "sampling:\n  " + sampling)
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    code, _, err = cli(["run", "--arch", "dit", "--budget", "1", "--space",
                        str(root / "space.yaml"), "--checkpoint", str(root / "tiny.pt"),
                        "--finetune", "none", "--storage", str(tmp_path / "s.db")])
    assert code == 2, err
    # one error line (after the line saying how many torch threads the command uses)
    lines = [line for line in err.strip().splitlines()
             if line.strip() and not line.startswith("torch threads")]
    assert len(lines) == 1 and message in lines[0] and "space.yaml" in lines[0], err
    assert "Traceback" not in err


def test_joint_parameters_decode_to_a_sampler_and_seeds_sit_at_the_reference() -> None:
    space = ScheduleSpace.from_dict({**BASE, "seeds": ["full", "D1"], "sampling": {
        "samplers": ["ddim", "dpm-solver"], "steps": {"min": 4, "max": 50}}})
    dists = space.distributions()
    assert dists["sampler"].choices == ("ddim", "dpm-solver")
    assert (dists["steps"].low, dists["steps"].high, dists["steps"].log) == (4, 50, True)
    # defaults: the ladder inside the range, the reference DDIM-20
    assert space.sampling.steps_only == (4, 5, 6, 8, 10, 14, 20, 30, 50)
    assert space.sampling.reference == ("ddim", 20)
    params = space.seed_params(space.seed_schedules()[1])
    assert (params["sampler"], params["steps"]) == ("ddim", 20)
    got = space.sampler_from_params({**params, "sampler": "dpm-solver", "steps": 7}, None)
    assert (got.name, got.steps) == ("dpm-solver", 7)
    # a space without the section keeps the study's one sampler
    assert ScheduleSpace.from_dict(BASE).sampler_from_params({}, "one") == "one"
    assert ScheduleSpace.from_dict(space.to_dict()) == space  # round trip


def test_the_searched_spacing_decodes_to_the_study_s_timesteps() -> None:
    """Uniform or searched is a choice of the search: ``searched`` decodes to the study's
    searched timesteps of the trial's sampler and step count; a solver it holds none for runs
    its default spacing; the steps-only ladder takes only the uniform spacings from the space."""
    space = ScheduleSpace.from_dict({**BASE, "seeds": ["full"], "sampling": {
        "samplers": ["ddim", "dpm-solver"], "steps": {"min": 2, "max": 4},
        "timestep_spacing": ["leading", "searched"], "reference": {"sampler": "ddim",
                                                                   "steps": 4}}})
    assert space.distributions()["timestep_spacing"].choices == ("leading", "searched")
    table = {"ddim": {2: (700, 100), 3: (800, 450, 90), 4: (900, 600, 300, 50)}}
    params = {**space.seed_params(space.seed_schedules()[0]), "steps": 3,
              "timestep_spacing": "searched"}
    got = space.sampler_from_params(params, None, table)
    assert (got.name, got.steps, got.timesteps) == ("ddim", 3, (800, 450, 90))
    dpm = space.sampler_from_params({**params, "sampler": "dpm-solver"}, None, table)
    assert dpm.timesteps is None and dpm == space.sampling.sampler_config("dpm-solver", 3)
    uniform = space.sampler_from_params({**params, "timestep_spacing": "leading"}, None, table)
    assert uniform.timesteps is None and uniform.timestep_spacing == "leading"
    with pytest.raises(SpaceError, match=r"no searched ddim timesteps at 3 steps"):
        space.sampler_from_params(params, None, {"ddim": {2: (700, 100)}})
    assert space.sampling.reference_config.timestep_spacing == "leading"
    assert all(c.timesteps is None for c in space.sampling.steps_only_configs())
    assert ScheduleSpace.from_dict(space.to_dict()) == space


def test_the_one_shot_key_does_not_depend_on_the_sampling_section(tmp_path) -> None:
    """The one-shot weights are trained over t, not for a sampler: a joint space and the same
    space without sampling share them."""
    from ase_search.finetune import FinetuneConfig, one_shot_key
    from ase_search.models import create_model

    model = create_model("DiT-test")
    plain = ScheduleSpace.from_dict(BASE)
    joint = ScheduleSpace.from_dict({**BASE, "sampling": {"samplers": ["ddim"],
                                                          "steps": {"min": 4, "max": 8}}})
    assert one_shot_key(model, plain, FinetuneConfig(), "mnist") == \
        one_shot_key(model, joint, FinetuneConfig(), "mnist")


# ---------------------------------------------------------------------------- a joint study
def _hand_latency(cost: dict, schedule: dict, sampler: dict) -> float:
    """The sum of per-call costs, with the calls' timesteps and block counts worked out here
    from the samplers' definitions (not through blocks_per_call)."""
    T, steps = 1000, sampler["steps"]
    if sampler["name"] == "ddim" and sampler.get("timestep_spacing") in (None, "leading"):
        times = (np.arange(steps) * (T // steps))[::-1]  # ADM's ddimN
    else:  # dpm-solver's default: linspace(0, T - 1, steps) rounded
        times = np.linspace(0, T - 1, steps).round()[::-1]
    edges, blocks = schedule["boundaries"], schedule["blocks"]
    modes = schedule.get("modes") or ["skip"] * len(blocks)
    periods = schedule.get("periods") or [1] * len(blocks)
    total, last, j = 0.0, None, 0
    for s in times:
        t = s / T
        i = next(i for i, (lo, hi) in enumerate(zip(edges, edges[1:])) if lo <= t < hi or hi == 1.0)
        j = j + 1 if i == last else 0  # calls since entering the interval
        last = i
        # a reuse interval's every r-th call (its first included) runs every block
        k = cost["depth"] if modes[i] == "reuse" and j % periods[i] == 0 else blocks[i]
        total += cost["fixed"] + k * cost["block"] + (cost["depth"] - k) * cost["dropped"]
    return total


@pytest.mark.slow
def test_a_joint_study_searches_samplers_measures_steps_only_once_and_judges(joint) -> None:
    logs: list[str] = []
    run_search(_config(joint), progress=False, log=logs.append)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{joint / 'study.db'}")
    attrs = study.user_attrs
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 4
    cost = attrs["cost_model"]

    # Every trial's latency objective is the sum of its sampler's per-call costs.
    for t in done:
        sampler = t.user_attrs["sampler"]
        assert sampler["name"] in ("ddim", "dpm-solver") and 2 <= sampler["steps"] <= 6
        assert t.values[1] == pytest.approx(_hand_latency(cost, t.user_attrs["schedule"],
                                                          sampler), rel=1e-9)
    # Seeds ran at the reference configuration.
    seeds = [t for t in done if t.user_attrs.get("preset")]
    assert {(t.user_attrs["sampler"]["name"], t.user_attrs["sampler"]["steps"])
            for t in seeds} == {("ddim", 4)}

    # The steps-only baseline: both samplers x the ladder, plus the reference, plus DDIM at the
    # timesteps searched for the counts below the reference's.
    baseline = {k: v for k, v in point_records(study).items() if k.startswith(STEPS_ONLY_PREFIX)}
    # ... stored as trials of the companion study: every trial of the searched study was
    # suggested, so the samplers' shared search space is the whole space
    assert all(t.params for t in study.trials)
    assert set(IntersectionSearchSpace().calculate(study)) >= {"sampler", "steps"}
    points = optuna.load_study(study_name=points_study_name("dit"),
                               storage=f"sqlite:///{joint / 'study.db'}")
    assert {t.user_attrs["attr"] for t in points.trials} == set(baseline)
    assert {t.user_attrs["kind"] for t in points.trials} == {"steps-only"}
    searched = attrs[SEARCHED_TIMESTEPS]  # each solver's, with its own update
    assert {name: sorted(r["timesteps"]) for name, r in searched.items()} == {
        "ddim": ["2", "3"], "dpm-solver": ["2", "3"]}
    assert set(baseline) == {STEPS_ONLY_PREFIX + k for k in (
        "ddim-4/full", "ddim-2/full", "ddim-3/full", "dpm-solver-2/full", "dpm-solver-3/full",
        *(f"{name}-{len(ts)} at {','.join(map(str, ts))}/full"
          for name, r in searched.items() for ts in r["timesteps"].values()))}
    for v in baseline.values():
        assert v["latency"] == pytest.approx(_hand_latency(cost, v["schedule"], v["sampler"]))
        assert v["weights"] == "start"  # the starting checkpoint (here also the trials')
    assert any("steps-only baseline: measuring" in m for m in logs)

    # A resume measures no baseline point again.
    stamps = {k: v["measured"] for k, v in baseline.items()}
    logs.clear()
    run_search(_config(joint, budget=5), progress=False, log=logs.append)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{joint / 'study.db'}")
    again = {k: v["measured"] for k, v in point_records(study).items()
             if k.startswith(STEPS_ONLY_PREFIX)}
    assert again == stamps
    assert not any("steps-only baseline" in m for m in logs)

    # Three fronts, brute force: a point is on a front iff no point of its set dominates it.
    fronts = study_fronts(study)

    def brute(points):
        return {p.key for p in points if not any(
            q.fid <= p.fid and q.latency <= p.latency and (q.fid < p.fid or q.latency < p.latency)
            for q in points)}

    steps_only = [p for p in fronts.points if p.kind == "steps-only"]
    at_ref = [p for p in fronts.points if p.sampler == fronts.reference_sampler]
    assert {p.key for p in fronts.steps_only} == brute(steps_only)
    assert {p.key for p in fronts.exits_at_reference} == brute(at_ref)
    assert {p.key for p in fronts.joint} == brute(fronts.points)
    assert fronts.reference is not None and fronts.reference.key == "ddim-4/full"
    verdict = study_verdict(study)
    assert verdict.hypervolume is not None and verdict.hypervolume.ratio >= 1.0 - 1e-12


@pytest.mark.slow
def test_a_trial_at_the_searched_spacing_runs_the_study_s_searched_timesteps(tmp_path,
                                                                            tiny_dit) -> None:
    """A joint space with ``timestep_spacing: [leading, searched]``: the study searches DDIM's
    timesteps at every count of its step range (the ladder measures them at its own counts only),
    and a trial that chose ``searched`` measures exactly what the ladder's point at those
    timesteps measured (two paths to one configuration: the same FID)."""
    root = tiny_dit(tmp_path, JOINT_SPACE
                    .replace("samplers: [ddim, dpm-solver]", "samplers: [ddim]")
                    .replace("steps: {min: 2, max: 6}",
                             "steps: {min: 2, max: 4}\n  timestep_spacing: [leading, searched]")
                    .replace("seeds: [full, D4]", "seeds: [full]"))
    config = _config(root, budget=2)
    space = load_space(root / "space.yaml")
    study = open_or_create_study(config, resolve_storage(config.storage),
                                 extra_attrs={"space": space.to_dict()})
    full = space.seed_params(space.seed_schedules()[0])
    study.enqueue_trial({**full, "steps": 3, "timestep_spacing": "searched"})
    run_search(config, progress=False, log=lambda line: None)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{root / 'study.db'}")
    searched = study.user_attrs[SEARCHED_TIMESTEPS]["ddim"]["timesteps"]
    assert sorted(searched, key=int) == ["2", "3", "4"]  # the whole step range
    ladder = {k: v for k, v in point_records(study).items() if k.startswith(STEPS_ONLY_PREFIX)}
    assert not any(k.startswith(STEPS_ONLY_PREFIX + "ddim-4 at") for k in ladder)
    trial = next(t for t in study.get_trials(states=(TrialState.COMPLETE,))
                 if t.params.get("timestep_spacing") == "searched")
    assert trial.user_attrs["sampler"]["timesteps"] == searched["3"]
    point = ladder[STEPS_ONLY_PREFIX + f"ddim-3 at {','.join(map(str, searched['3']))}/full"]
    assert trial.values[0] == pytest.approx(point["fid"], rel=1e-9)


@pytest.mark.slow
def test_confirm_remeasures_over_seeds_and_pareto_judges_paired(joint, tmp_path) -> None:
    """Runs after the joint study above (module-scoped folder): confirm over 2 seeds through the
    CLI, then pareto's verdict is the paired one."""
    db = joint / "study.db"
    if not db.exists():
        run_search(_config(joint), progress=False, log=lambda m: None)
    result = subprocess.run([ASE, "confirm", str(db), "--seeds", "2"], env=_env(tmp_path),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{db}")
    confirmed = {k: v for k, v in point_records(study).items() if k.startswith(CONFIRM_PREFIX)}
    fronts = study_fronts(study)
    # the whole ladder and the joint front, on fresh seeds (the search selected on seed 0)
    assert {CONFIRM_PREFIX + p.key for p in fronts.joint} <= set(confirmed)
    assert {CONFIRM_PREFIX + p.key for p in fronts.points if p.kind == "steps-only"} \
        <= set(confirmed)
    for v in confirmed.values():
        assert v["seeds"] == [1, 2] and len(v["fids"]) == 2 and v["weights_sha256"]
    verdict = study_verdict(study)
    assert verdict.confirmed and verdict.seeds == (1, 2)
    # a third seed is measured alone and merged: the first two are kept as they were
    again = subprocess.run([ASE, "confirm", str(db), "--seeds", "3"], env=_env(tmp_path),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{db}")
    records = point_records(study)
    for key, v in confirmed.items():
        now = records[key]
        assert now["seeds"] == [1, 2, 3] and now["fids"][:2] == v["fids"]
    shown = subprocess.run([ASE, "pareto", str(db), "--no-report"], env=_env(tmp_path),
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "Three fronts" in shown.stdout and "verdict:" in shown.stdout
    assert "judged on 3 seeds (seeds 1-3)" in " ".join(shown.stdout.split())


def test_a_study_refuses_a_space_file_edited_under_the_same_name() -> None:
    """A fixed-sampler study resumed with its space file turned joint would mix trials."""
    from ase_search.search import SearchError
    from ase_search.search.run import check_space

    plain = ScheduleSpace.from_dict(BASE)
    joint = ScheduleSpace.from_dict({**BASE, "sampling": {"samplers": ["ddim"],
                                                          "steps": {"min": 4, "max": 8}}})
    study = optuna.create_study(directions=["minimize", "minimize"], study_name="s")
    study.set_user_attr("space", {**plain.to_dict(), "description": "old words"})
    check_space(study, plain)  # the description may change
    with pytest.raises(SearchError, match="searched in another space .its sampling differ"):
        check_space(study, joint)


@pytest.mark.slow
def test_a_training_free_reuse_study_runs_without_a_fine_tune(tmp_path, tiny_dit) -> None:
    """A space whose levers allow block reuse, run with finetune none: trials reuse blocks at the
    searched period, and their latency counts every refresh call at full depth."""
    space = JOINT_SPACE.replace("seeds: [full, D4]\n", "seeds: [full, D4]\nlevers:\n"
                                "  modes: [reuse]\n  period: {min: 2, max: 3}\n")
    root = tiny_dit(tmp_path, space)
    run_search(_config(root, budget=3, search_algorithm="random"), progress=False,
               log=lambda m: None)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{root / 'study.db'}")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 3
    cost = study.user_attrs["cost_model"]
    reusing = 0
    for t in done:
        schedule = t.user_attrs["schedule"]
        for n, mode, r in zip(schedule["blocks"], schedule["modes"], schedule["periods"]):
            assert (mode, r) == ("skip", 1) if n == 4 else (mode == "reuse" and r in (2, 3))
        reusing += "reuse" in schedule["modes"]
        assert t.values[1] == pytest.approx(_hand_latency(cost, schedule,
                                                          t.user_attrs["sampler"]), rel=1e-9)
    assert reusing >= 1
    d4 = next(t for t in done if t.user_attrs.get("preset") == "D4")
    assert "reuse" in d4.user_attrs["schedule"]["modes"]


@pytest.mark.slow
def test_an_exit_heads_space_trains_heads_in_the_one_shot_fine_tune(tmp_path, tiny_dit) -> None:
    from ase_search.models import load_checkpoint
    from ase_search.search import SearchError

    space = JOINT_SPACE.replace("seeds: [full, D4]\n", "seeds: [full, D4]\nlevers:\n"
                                "  exit_heads: true\n")
    root = tiny_dit(tmp_path, space)
    with pytest.raises(SearchError, match="asks for exit heads, which the one-shot fine-tune"):
        run_search(_config(root, budget=2), progress=False, log=lambda m: None)
    run_search(_config(root, budget=2, finetune="one-shot", finetune_steps=4,
                       storage=str(root / "heads.db")), progress=False, log=lambda m: None)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{root / 'heads.db'}")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2
    weights = root / study.user_attrs["weights"]["path"]
    model, _ = load_checkpoint(weights, ema=True)
    assert model.config["exit_heads"]  # the trials ran the model with its trained heads
    # The steps-only baseline runs the starting checkpoint, never fine-tuned: what a user who
    # does not exit samples with. Its FID is the starting model's, measured here directly.
    from ase_search.measure import measure_schedule
    from ase_search.samplers import SamplerConfig

    start, _ = load_checkpoint(root / "tiny.pt")
    record = point_records(study)["steps_only:ddim-4/full"]
    assert record["weights"] == "start"
    direct = measure_schedule(start, None, sampler=SamplerConfig(name="ddim", steps=4), n=16,
                              seeds=(0,), batch_size=16)
    assert record["fid"] == pytest.approx(direct.mean("fid"), rel=1e-6)


@pytest.mark.slow
def test_export_picks_from_the_joint_front_fewer_steps_included(joint, tmp_path) -> None:
    """--max-fid takes the fastest configuration of the joint front, which may be the full model
    at fewer steps (a steps-only point, not a trial): it is exported as the full schedule with
    its sampler and steps."""
    import json

    from ase_search.fronts import study_fronts

    db = joint / "study.db"
    if not db.exists():
        run_search(_config(joint), progress=False, log=lambda m: None)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{db}")
    fronts = study_fronts(study)
    bound = max(p.fid for p in fronts.joint)
    expected = min((p for p in fronts.joint if p.fid <= bound), key=lambda p: p.latency)
    out = tmp_path / "pick.json"
    result = subprocess.run([ASE, "export", str(db), "--max-fid", str(bound), "-o", str(out)],
                            env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    meta = data["metadata"]
    assert (meta["sampler"], meta["steps"]) == (expected.sampler["name"],
                                                expected.sampler["steps"])
    assert meta["fid"] == pytest.approx(expected.fid) or \
        meta["confirmed"]["fid_mean"] == pytest.approx(expected.fid)
    if expected.trial is None:
        assert meta["kind"] == "steps-only" and set(data["blocks"]) == {4}
    assert f"--sampler {meta['sampler']} --steps {meta['steps']}" in result.stdout
