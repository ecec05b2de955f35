"""ase_search.fronts: configuration keys and identities, fronts of a hand-made study."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from ase_search.fronts import study_fronts, study_verdict
from ase_search.record import config_identity, config_key
from ase_search.schedule import ExitSchedule, preset

optuna.logging.set_verbosity(optuna.logging.WARNING)

DDIM4 = {"name": "ddim", "steps": 4, "eta": 0.0, "cfg_scale": 1.0}
DPM4 = {"name": "dpm-solver", "steps": 4, "eta": 0.0, "cfg_scale": 1.0}


def _two(edge: float) -> dict:
    return ExitSchedule("dit", 12, (0.0, edge, 1.0), (12, 1)).to_dict()


def test_schedules_that_differ_only_where_the_sampler_never_calls_are_one_configuration():
    # DPM-Solver-4 calls the model at timesteps 999, 749, 500, 250 (none at t < 0.25); DDIM-4
    # (leading) at 750, 500, 250, 0.
    one_block = ExitSchedule("dit", 12, (0.0, 1.0), (1,)).to_dict()
    assert config_identity(DPM4, _two(0.1)) == config_identity(DPM4, _two(0.2)) \
        == config_identity(DPM4, one_block)
    assert config_identity(DDIM4, _two(0.1)) != config_identity(DDIM4, one_block)
    assert config_identity(DPM4, _two(0.3)) != config_identity(DPM4, _two(0.2))
    # the full model however its schedule is written; keys name the configuration
    assert config_identity(DPM4, preset("full", "dit", 12).to_dict()) == \
        config_identity(DPM4, ExitSchedule("dit", 12, (0.0, 0.5, 1.0), (12, 12)).to_dict())
    assert config_key(DPM4, _two(0.2)) == "dpm-solver-4/12|1@0.2"
    reuse = preset("D1", "dit", 12).with_reuse(2).to_dict()
    assert config_key(DDIM4, reuse) == "ddim-4/12|11r2|10r2|9r2|9r2"  # D1 at 12 blocks


def test_a_study_counts_one_configuration_once():
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.set_user_attr("config", {"sampler": "dpm-solver", "steps": 4})
    study.set_user_attr("steps_only:dpm-solver-4/full", {
        "fid": 9.0, "latency": 1.0, "sampler": DPM4,
        "schedule": preset("full", "dit", 12).to_dict()})
    for edge, fid in ((0.1, 50.0), (0.2, 50.0), (0.3, 40.0)):
        study.add_trial(create_trial(
            values=[fid, 0.3 + edge], params={"b": 1}, distributions={"b": IntDistribution(1, 2)},
            user_attrs={"schedule": _two(edge), "sampler": DPM4}, state=TrialState.COMPLETE))
    fronts = study_fronts(study)
    keys = sorted(p.key for p in fronts.points)
    assert keys == ["dpm-solver-4/12|1@0.1", "dpm-solver-4/12|1@0.3", "dpm-solver-4/full"]
    verdict = study_verdict(study)
    assert verdict.verdict is None  # one seed, the search's: nothing is judged on it


def test_a_reuse_schedule_whose_every_call_refreshes_is_the_full_model():
    """DDIM-4 calls each 0.1-wide interval at most once, so every reuse call is its interval's
    first, a refresh that runs every block: the full model. At DDIM-20 (two calls per 0.1
    interval) reuse calls happen and the configuration is its own."""
    ten = ExitSchedule("dit", 12, tuple(round(0.1 * k, 10) for k in range(11)),
                       (12, 10, 8, 6, 4, 2, 1, 1, 1, 1)).with_reuse(2).to_dict()
    full = preset("full", "dit", 12).to_dict()
    assert config_identity(DDIM4, ten) == config_identity(DDIM4, full)
    ddim20 = {**DDIM4, "steps": 20}
    assert config_identity(ddim20, ten) != config_identity(ddim20, full)


def _confirmed_study(exit_fids: list[float], *, seeds=(1, 2, 3, 4, 5), steps_weights="start"):
    """A study with a DDIM ladder (4, 8, 20 steps at latencies 0.2, 0.4, 1.0) and one exit
    trial at latency 0.3, every one confirmed on ``seeds``."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.set_user_attr("config", {"sampler": "ddim", "steps": 20, "seed": 0})
    full = preset("full", "dit", 12).to_dict()
    wiggle = [1.0, 1.02, 0.98, 1.01, 0.99][: len(seeds)]
    for steps, fid, latency in ((4, 6.0, 0.2), (8, 4.4, 0.4), (20, 4.0, 1.0)):
        sampler = {**DDIM4, "steps": steps}
        study.set_user_attr(f"steps_only:ddim-{steps}/full", {
            "fid": fid, "latency": latency, "schedule": full, "sampler": sampler,
            "weights": "start"})
        study.set_user_attr(f"confirm:ddim-{steps}/full", {
            "fids": [fid * w for w in wiggle], "seeds": list(seeds), "weights": steps_weights})
    study.add_trial(create_trial(
        values=[exit_fids[0], 0.3], params={"b": 1}, distributions={"b": IntDistribution(1, 2)},
        user_attrs={"schedule": _two(0.3), "sampler": {**DDIM4, "steps": 20}},
        state=TrialState.COMPLETE))
    study.set_user_attr("confirm:ddim-20/12|1@0.3", {
        "fids": [f * w for f, w in zip(exit_fids, wiggle)], "seeds": list(seeds),
        "weights": "study"})
    return study


def test_a_confirmed_point_is_judged_by_the_rule():
    from ase_search.fronts import verdict_lines

    # the exit has DDIM-8's FID on every seed (beats DDIM-4, not DDIM-8) at latency 0.3
    verdict = study_verdict(_confirmed_study([4.4] * 5))
    assert verdict.seeds == (1, 2, 3, 4, 5)
    (j,) = verdict.verdict.judgements
    assert j.match.label == "ddim-8/full" and j.speedup == pytest.approx(0.4 / 0.3)
    # predicted latencies: the full model and exits are both good to 5%
    assert j.discounted == pytest.approx(0.4 / 0.3 * 0.95 / 1.05) and j.helps
    lines = verdict_lines(verdict)
    assert any(line.startswith("headline: exits help, 1.21x") for line in lines)


def test_a_point_better_than_the_whole_ladder_gets_no_number():
    verdict = study_verdict(_confirmed_study([3.0] * 5))
    (j,) = verdict.verdict.judgements
    assert j.status == "beyond" and j.speedup is None and not verdict.verdict.helps
    assert j.against.b == "ddim-8/full"  # the cheapest steps-only one at or above 0.3
    assert any("beyond the measured ladder" in line for line in verdict_lines_of(verdict))


def verdict_lines_of(verdict):
    from ase_search.fronts import verdict_lines

    return verdict_lines(verdict)


def test_records_on_the_search_seed_or_other_weights_are_not_judged():
    # seed 0 is the one the search selected on: the verdict judges seeds 1-4 only
    verdict = study_verdict(_confirmed_study([4.4] * 5, seeds=(0, 1, 2, 3, 4)))
    assert verdict.seeds == (1, 2, 3, 4)
    # steps-only records made on the study's weights are not the full model as users have it
    stale = study_verdict(_confirmed_study([4.4] * 5, steps_weights="study"))
    assert stale.verdict is None and {p.key for p in stale.missing} >= {"ddim-8/full"}
    assert "no verdict yet" in verdict_lines_of(stale)[-1]


def test_measured_latencies_replace_the_cost_model_when_every_judged_one_was_timed():
    from ase_search.record import MEASURED_LATENCY

    study = _confirmed_study([4.4] * 5)
    seconds = {"ddim-4/full": 2.0, "ddim-8/full": 4.0, "ddim-20/full": 10.0,
               "ddim-20/12|1@0.3": 2.5}
    study.set_user_attr(MEASURED_LATENCY, {"configs": {
        k: {"seconds": v, "error": 0.02} for k, v in seconds.items()}})
    verdict = study_verdict(study)
    assert verdict.latency_source == "measured"
    (j,) = verdict.verdict.judgements
    assert j.point.latency.source == "measured"
    assert j.speedup == pytest.approx(4.0 / 2.5)
    assert j.discounted == pytest.approx(4.0 / 2.5 * 0.98 / 1.02)
    # predicted relative latencies 0.2 / 0.4 / 0.3 against measured 0.2 / 0.4 / 0.25: the full
    # model's calls are predicted exactly, the exit's skipping 20% high
    assert verdict.cost_model_errors["full"] == (pytest.approx(0.0), 3)
    assert verdict.cost_model_errors["skip"] == (pytest.approx(0.2), 1)
    # one judged configuration not timed: the whole verdict stays on the cost model
    del seconds["ddim-4/full"]
    study.set_user_attr(MEASURED_LATENCY, {"configs": {
        k: {"seconds": v, "error": 0.02} for k, v in seconds.items()}})
    assert study_verdict(study).latency_source == "predicted"


def test_the_ladder_is_extended_where_the_verdict_has_no_number():
    from ase_search.search.points import ladder_extension

    # beyond the whole ladder: twice the most steps, on the study's seed and starting weights
    (job,) = ladder_extension(_confirmed_study([3.0] * 5))
    assert job.attr == "steps_only:ddim-40/full" and job.seeds == (0,) and job.start
    # matched inside the ladder: nothing to add
    assert ladder_extension(_confirmed_study([4.4] * 5)) == []
    # not confirmed yet: no verdict, nothing to add
    assert ladder_extension(_confirmed_study([4.4] * 5, steps_weights="study")) == []


def test_an_export_carries_the_rules_word_on_its_point(tmp_path):
    import json

    from ase_search.fronts import export_point, study_points

    study = _confirmed_study([4.4] * 5)
    (exit_point,) = [p for p in study_points(study) if p.kind == "exit"]
    export_point(study, exit_point, tmp_path / "e.json")
    verdict = json.loads((tmp_path / "e.json").read_text())["metadata"]["verdict"]
    assert verdict["status"] == "matched" and verdict["helps"] is True
    assert verdict["match"] == "ddim-8/full" and verdict["seeds"] == [1, 2, 3, 4, 5]
    assert verdict["discounted_speedup"] == pytest.approx(0.4 / 0.3 * 0.95 / 1.05)
    steps = next(p for p in study_points(study) if p.key == "ddim-4/full")
    export_point(study, steps, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["metadata"]["verdict"]["status"] \
        == "steps-only"


def test_a_replication_judges_its_own_seeds_alone():
    study = _confirmed_study([4.4] * 5)
    replication = study_verdict(study, seeds=range(3, 6))
    assert replication.seeds == (3, 4, 5)
    ladder8 = next(p for p in replication.fronts.points if p.key == "ddim-8/full")
    assert ladder8.fids == pytest.approx((4.4 * 0.98, 4.4 * 1.01, 4.4 * 0.99))
    assert ladder8.fid == pytest.approx(4.4 * (0.98 + 1.01 + 0.99) / 3)
    (j,) = replication.verdict.judgements
    assert j.point.seeds == (3, 4, 5) and j.match.label == "ddim-8/full"
    with pytest.raises(ValueError, match="selected its points on"):
        study_verdict(study, seeds=(0, 1, 2))
    with pytest.raises(ValueError, match=r"no FID on seed\(s\) 6, 7"):
        study_verdict(study, seeds=range(4, 8))
