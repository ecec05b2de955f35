"""A list of configurations measured into an ordinary study (``run --configs``), then confirmed
and judged like searched trials. Real Ray, real Optuna storage."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ase_search.fronts import study_points, study_verdict
from ase_search.record import (
    CONFIRM_PREFIX,
    POINTS,
    SEARCHED_TIMESTEPS,
    STEPS_ONLY_PREFIX,
    config_key,
    point_records,
    points_study_name,
    store_point,
)
from ase_search.samplers import SamplerConfig
from ase_search.schedule import preset
from ase_search.search import SearchConfig, SearchError, confirm_study, run_search
from ase_search.search.listed import LISTED, load_listed
from ase_search.search.trial import TrialContext, evaluate_schedule
from ase_search.testbed import load_model
from ase_search.timesteps import SearchedTimesteps, save_timesteps, search_timesteps

optuna.logging.set_verbosity(optuna.logging.WARNING)


LIST = """configurations:
  - sampler: ddim
    steps: [3, 4]
    schedule: [D1, D4]
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory, tiny_dit, joint_space) -> Path:
    folder = tiny_dit(tmp_path_factory.mktemp("listed"), joint_space("ddim"))
    (folder / "list.yaml").write_text(LIST)
    return folder


def _config(root: Path, **kw) -> SearchConfig:
    base = dict(arch="dit", space=str(root / "space.yaml"), checkpoint=str(root / "tiny.pt"),
                n_samples=16, batch_size=16, finetune="none", storage=str(root / "list.db"),
                max_concurrent=1, latency_batch=8, grid=0, configs=str(root / "list.yaml"))
    return SearchConfig(**{**base, **kw})


def test_a_list_is_measured_as_trials_then_confirmed_and_judged(root) -> None:
    config = _config(root)
    summary = run_search(config, progress=False, log=lambda m: None)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{root / 'list.db'}")
    listed = [t for t in study.trials if t.user_attrs.get("kind") == LISTED]
    assert summary.complete == len(listed) == 4 and summary.failed == 0
    assert not [t for t in study.trials if t.user_attrs.get("kind") != LISTED]  # no search
    # each trial holds what the trial's own function measures for its configuration
    ctx = TrialContext(config={**config.__dict__}, weights=str(root / "tiny.pt"),
                       space=study.user_attrs["space"], cost_model=study.user_attrs["cost_model"],
                       cpus=1)
    trial = next(t for t in listed if t.user_attrs["label"] == "ddim-3, D1")
    direct = evaluate_schedule(preset("D1", "dit", 4), ctx, sampler=SamplerConfig("ddim", 3))
    assert trial.values == [direct["fid"], direct["latency"]]
    assert trial.user_attrs["schedule"] == preset("D1", "dit", 4).to_dict()
    # the steps-only ladder is measured beside it, as in every study: DDIM at the space's
    # counts, and at the timesteps searched for the counts below the reference's (DDIM-4)
    searched = search_timesteps(load_model("dit", str(root / "tiny.pt")), [2, 3])
    assert study.user_attrs[SEARCHED_TIMESTEPS]["ddim"]["timesteps"] == {
        str(k): list(r.timesteps) for k, r in searched.items()}
    assert {k for k in point_records(study) if k.startswith(STEPS_ONLY_PREFIX)} == {
        STEPS_ONLY_PREFIX + config_key(c.to_dict(), None)
        for c in [SamplerConfig("ddim", n) for n in (4, 2, 3)]
        + [r.sampler_config() for r in searched.values()]}
    points = {p.label: p for p in study_points(study)}
    assert {"ddim-3, D1", "ddim-4, D1", "ddim-3, D4", "ddim-4, D4"} <= set(points)

    # run again: nothing to measure; one more line: only it is measured
    assert run_search(config, progress=False, log=lambda m: None).new_trials == 0
    (root / "list.yaml").write_text(LIST + "  - {sampler: ddim, steps: 2, schedule: D4}\n")
    again = run_search(config, progress=False, log=lambda m: None)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{root / 'list.db'}")
    assert again.complete == 5
    assert [t.values for t in study.trials[:4]] == [t.values for t in listed]

    # confirm measures every listed configuration (none was selected), the verdict judges them
    run_search(_config(root, confirm=2), progress=False, log=lambda m: None)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{root / 'list.db'}")
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        key = config_key(t.user_attrs["sampler"], t.user_attrs["schedule"])
        if not key.endswith("/full"):
            assert point_records(study)[CONFIRM_PREFIX + key]["seeds"] == [1, 2]
    verdict = study_verdict(study)
    assert verdict.confirmed and verdict.seeds == (1, 2)
    assert {"ddim-2 searched timesteps, full", "ddim-3 searched timesteps, full"} <= {
        p.label for p in verdict.fronts.points if p.seeds == (1, 2)}

    # a study made before the ladder had searched timesteps: confirm searches and measures them
    # (its points study holds all the others)
    keys = [config_key(r.sampler_config().to_dict(), None) for r in searched.values()]
    records = point_records(study)
    optuna.delete_study(study_name=points_study_name("dit"),
                        storage=f"sqlite:///{root / 'list.db'}")
    study.set_user_attr(POINTS, None)
    study.set_user_attr(SEARCHED_TIMESTEPS, None)
    for attr, record in records.items():
        if not any(attr.endswith(key) for key in keys):
            store_point(study, attr, record)
    assert not any(attr.endswith(key) for attr in point_records(study) for key in keys)
    confirm_study(str(root / "list.db"), seeds=2, progress=False, log=lambda m: None)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{root / 'list.db'}")
    for key in keys:
        assert point_records(study)[STEPS_ONLY_PREFIX + key]["weights"] == "start"
        assert point_records(study)[CONFIRM_PREFIX + key]["seeds"] == [1, 2]

    # timesteps a user brings (confirm --timesteps) join the ladder: the full model there, on
    # the starting weights, the study's seed and the confirmation seeds; the lever's verdict is
    # judged against them too. A file that is not one is refused before anything runs. The
    # list itself is not needed any more: it may have moved since the run.
    (root / "list.yaml").rename(root / "moved.yaml")
    mine = SearchedTimesteps("ddim", (999, 500, 100), 0.0, 0.0, 0, (0, 0))
    save_timesteps(root / "mine.json", mine, arch="dit")
    (root / "bad.json").write_text("{}")
    with pytest.raises(SearchError, match="not an ase-search timesteps file"):
        confirm_study(str(root / "list.db"), seeds=2, progress=False, log=lambda m: None,
                      timesteps=[root / "bad.json"])
    confirm_study(str(root / "list.db"), seeds=2, progress=False, log=lambda m: None,
                  timesteps=[root / "mine.json"])
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{root / 'list.db'}")
    key = config_key(mine.sampler_config().to_dict(), None)
    assert key == "ddim-3 at 999,500,100/full"
    assert point_records(study)[STEPS_ONLY_PREFIX + key]["weights"] == "start"
    assert point_records(study)[CONFIRM_PREFIX + key]["seeds"] == [1, 2]
    direct = evaluate_schedule(preset("full", "dit", 4), ctx, sampler=mine.sampler_config(),
                               seeds=(1, 2))
    assert point_records(study)[CONFIRM_PREFIX + key]["fids"] == pytest.approx(direct["fids"])
    assert {p.key: p.label for p in study_verdict(study).fronts.points
            if p.kind == "steps-only"}[key] == "ddim-3 timesteps of mine.json, full"


def test_a_list_study_and_a_search_do_not_mix(root, tmp_path) -> None:
    storage = str(tmp_path / "mixed.db")
    run_search(_config(root, storage=storage, configs=None, budget=1, search_algorithm="random"),
               progress=False, log=lambda m: None)
    with pytest.raises(SearchError, match="is a search; measure a list of configurations"):
        run_search(_config(root, storage=storage), progress=False, log=lambda m: None)


@pytest.mark.parametrize(("text", "message"), [
    ("configurations: [", "is not valid YAML"),
    ("steps: 3", "needs a non-empty list under 'configurations:'"),
    ("configurations:\n  - {sampler: ddim, steps: 3}", "configuration 1 needs schedule"),
    ("configurations:\n  - {sampler: ddim, steps: 3, schedule: D9}",
     "configuration 1: unknown preset 'D9'"),
    ("configurations:\n  - {sampler: heun, steps: 3, schedule: D1}", "configuration 1: "),
    ("configurations:\n  - {sampler: ddim, steps: 3, schedule: D1, reuse: 0}",
     "reuse must be null or a refresh period >= 1"),
    ("configurations:\n  - {sampler: ddim, steps: 3, schedule: D1, period: 2}",
     "unknown field(s) period"),
    ("configurations:\n  - {sampler: ddim, steps: 3, schedule: missing.json}",
     "configuration 1: "),
])
def test_a_malformed_list_is_one_line_naming_the_entry(tmp_path, text, message) -> None:
    file = tmp_path / "list.yaml"
    file.write_text(text)
    with pytest.raises(SearchError, match="^configs .*" + message.replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[")) as err:
        load_listed(file, arch="dit", depth=4)
    assert "\n" not in str(err.value)


def test_repeats_are_measured_once(tmp_path) -> None:
    file = tmp_path / "list.yaml"
    file.write_text("configurations:\n  - {sampler: ddim, steps: 3, schedule: [full, full]}\n"
                    "  - {sampler: ddim, steps: 3, schedule: D1, reuse: [null, 1]}\n")
    listed = load_listed(file, arch="dit", depth=4)
    # full twice is one configuration; reuse at period 1 refreshes at every call: another one
    # (every block runs), so it is the full model again and dropped too
    assert [c.label for c in listed] == ["ddim-3, full", "ddim-3, D1"]


def test_the_cli_takes_a_list(root, tmp_path, cli) -> None:
    code, out, err = cli(["run", "--arch", "dit", "--configs", str(tmp_path / "nope.yaml")])
    assert code != 0 and "--configs" in err and "is not a file" in err


def test_a_data_free_study_measures_against_the_full_models_own_samples(root, tmp_path) -> None:
    """fid_data self on a native model: FID against an independent draw of the starting model's
    full model at the reference configuration, and the paired distance to its samples from the
    same seed, which is 0 for the reference configuration itself."""
    import torch

    from ase_search.metrics.fid import compute_fid
    from ase_search.measure import fid_images
    from ase_search.samplers import sample
    from ase_search.measure import SELF_REFERENCE_SEED

    (tmp_path / "list.yaml").write_text(
        "configurations:\n  - {sampler: ddim, steps: 4, schedule: D1}\n")
    config = _config(root, storage=str(tmp_path / "self.db"), fid_data="self",
                     configs=str(tmp_path / "list.yaml"))
    run_search(config, progress=False, log=lambda m: None)
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{tmp_path / 'self.db'}")
    ref = point_records(study)[STEPS_ONLY_PREFIX + "ddim-4/full"]
    assert ref["paired_rmse"] == 0.0  # the reference configuration against itself
    model = load_model("dit", str(root / "tiny.pt"))
    with torch.no_grad():
        draw = {s: sample(model, sampler=SamplerConfig("ddim", 4), n=16, batch_size=16,
                          seed=s).images for s in (0, SELF_REFERENCE_SEED)}
    want = compute_fid(fid_images(draw[0], None), reference=fid_images(
        draw[SELF_REFERENCE_SEED], None))["fid"]
    assert ref["fid"] == pytest.approx(want, rel=1e-6)
    listed = next(t for t in study.trials if t.user_attrs.get("kind") == LISTED)
    assert listed.user_attrs["paired_rmse"] > 0.0
    cached = list(tmp_path.glob("*-self/*.pt"))  # the reference's draws, beside the study
    assert any(p.name.endswith(f"-seed{SELF_REFERENCE_SEED}.pt") for p in cached)


def test_a_ddim_only_record_of_the_first_studies_reads_as_ddims() -> None:
    from ase_search.record import searched_record

    old = {"timesteps": {"4": [999, 700, 400, 250]}, "grid": 104}
    assert searched_record(old) == {"ddim": old}
    assert searched_record(None) == {} and searched_record({"dpm-solver": old}) == {
        "dpm-solver": old}
