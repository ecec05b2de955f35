"""The screen (issue #24): candidates measured by paired error first, FID for the best of them.
Real Ray Tune and Optuna storage."""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.trial import TrialState

from ase_search.models import load_checkpoint
from ase_search.record import config_identity, screen_study_name
from ase_search.samplers import SamplerConfig, sample
from ase_search.schedule import ExitSchedule
from ase_search.search import SearchConfig, SearchError, run_search
from ase_search.search.screen import screen_summary
from ase_search.space import load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _config(root, **kw) -> SearchConfig:
    base = dict(arch="dit", budget=4, space=str(root / "space.yaml"),
                checkpoint=str(root / "tiny.pt"), n_samples=16, batch_size=16, finetune="none",
                search_algorithm="random", storage=str(root / "study.db"), max_concurrent=1,
                latency_batch=8, grid=0, screen=6, screen_n=16, screen_audit=1)
    base.update(kw)
    return SearchConfig(**base)


def _ranks(values: dict[int, tuple[float, float]]) -> dict[int, int]:
    """Non-dominated rank by brute force (1: no other point dominates it)."""
    def dominated(a, pool):
        return any(b[0] <= a[0] and b[1] <= a[1] and b != a for b in pool)

    left, ranks, rank = dict(values), {}, 1
    while left:
        front = [n for n, v in left.items() if not dominated(v, list(left.values()))]
        for n in front:
            ranks[n] = rank
            del left[n]
        rank += 1
    return ranks


@pytest.mark.slow
def test_the_screen_spends_fid_on_its_best_candidates_and_audits_a_dropped_one(
        tmp_path, tiny_dit, joint_space, cli) -> None:
    root = tiny_dit(tmp_path, joint_space("ddim", seeds="full"))
    config = _config(root)
    logs: list[str] = []
    run_search(config, progress=False, log=logs.append)
    url = f"sqlite:///{root / 'study.db'}"
    study = optuna.load_study(study_name="dit", storage=url)
    screen = optuna.load_study(study_name=screen_study_name("dit"), storage=url)
    screened = screen.get_trials(states=(TrialState.COMPLETE,))
    assert len(screened) == 6 and not screen.get_trials(states=(TrialState.RUNNING,))

    # Each candidate's paired error is the RMSE (in [0, 1]) of its samples against the full
    # model's at the reference configuration (DDIM-4), from the same noise: by hand.
    model, _ = load_checkpoint(root / "tiny.pt", ema=True)
    with torch.no_grad():
        full = sample(model, sampler=SamplerConfig("ddim", 4), n=16, seed=config.seed).images
        t = screened[0]
        mine = sample(model, sampler=SamplerConfig.from_dict(t.user_attrs["sampler"]),
                      schedule=ExitSchedule.from_dict(t.user_attrs["schedule"]), n=16,
                      seed=config.seed).images
    by_hand = float((((mine - full) / 2).flatten(1) ** 2).mean(1).sqrt().mean())
    assert t.values[0] == pytest.approx(by_hand, rel=1e-5)

    # The budget (4) holds the seed, the screen's picks and one audit: the picks are the
    # best-ranked distinct candidates, every dropped distinct one ranks no better.
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 4
    picks = [t for t in done if t.user_attrs.get("screen") == "front"]
    audit = [t for t in done if t.user_attrs.get("screen") == "audit"]
    assert len(picks) == 2 and len(audit) == 1
    ranks = _ranks({t.number: tuple(t.values) for t in screened})
    ident = {t.number: config_identity(t.user_attrs["sampler"], t.user_attrs["schedule"])
             for t in screened}
    picked = {t.user_attrs["screen_trial"] for t in picks}
    assert len({ident[n] for n in picked}) == 2
    worst = max((ranks[n], next(s.values[0] for s in screened if s.number == n)) for n in picked)
    seen = {ident[n] for n in picked} | {config_identity(t.user_attrs["sampler"],
                                                         t.user_attrs["schedule"])
                                         for t in done if t.user_attrs.get("preset")}
    for s in screened:
        if s.number not in picked and ident[s.number] not in seen:
            assert (ranks[s.number], s.values[0]) >= worst
    for t in picks + audit:  # measured as screened: the same configuration, now with FID
        s = next(s for s in screened if s.number == t.user_attrs["screen_trial"])
        assert t.params == s.params
        assert config_identity(t.user_attrs["sampler"], t.user_attrs["schedule"]) == \
            ident[s.number]
    assert audit[0].user_attrs["screen_trial"] not in picked

    summary = screen_summary(study)
    assert (summary.screened, summary.measured, summary.audited) == (6, 2, 1)
    assert summary.saved == 3
    assert any("screen: measuring 6 candidate(s)" in line for line in logs)
    code, out, err = cli(["pareto", str(root / "study.db"), "--no-report"])
    assert code == 0, err
    assert "6 candidates screened by paired error, 2 measured with FID (3 FID evaluations " \
           "saved); of 1 dropped candidate(s) measured as an audit" in " ".join(out.split())

    # A re-run with a larger screen and budget, after a driver died with a candidate in flight:
    # that candidate is failed and measured again, no finished one is, and the new pick is FID's.
    space = load_space(root / "space.yaml")
    lost = screen.ask(space.distributions())
    lost.set_user_attr("driver", "a-driver-that-is-gone")
    run_search(_config(root, budget=5, screen=7), progress=False, log=logs.append)
    screen = optuna.load_study(study_name=screen_study_name("dit"), storage=url)
    assert screen.trials[lost.number].state == TrialState.FAIL
    assert "interrupted" in screen.trials[lost.number].user_attrs["fail_reason"]
    again = screen.get_trials(states=(TrialState.COMPLETE,))
    assert len(again) == 7 and [t.number for t in again][:6] == [t.number for t in screened]
    assert any(t.params == lost.params and t.number > lost.number for t in again)
    study = optuna.load_study(study_name="dit", storage=url)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 5 and sum(t.user_attrs.get("screen") == "front" for t in done) == 3


@pytest.mark.parametrize(("kw", "field"), [
    (dict(screen=-1), "screen"), (dict(screen_n=4), "screen_n"),
    (dict(screen_audit=4), "screen_audit"),
    (dict(screen=0, screen_audit=1), "screen_audit"),
    (dict(finetune="per-trial", finetune_steps=5), "screen")])
def test_bad_screen_settings_are_refused_naming_the_field(tmp_path, tiny, kw, field) -> None:
    with pytest.raises(SearchError) as err:
        _config(tiny, **{"storage": str(tmp_path / "s.db"), **kw})
    assert err.value.fields == (field,)
