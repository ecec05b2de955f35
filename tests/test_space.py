"""Search spaces: YAML loading, Optuna parameter round trips, seeds and bad files."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ase_search.schedule import ExitSchedule, preset
from ase_search.space import ScheduleSpace, SpaceError, load_space, schedules_equivalent

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_shipped_spaces_load_and_hold_their_seeds(path: Path) -> None:
    space = load_space(path)
    assert space.seeds, "a shipped space enqueues the paper's presets"
    for seed in space.seed_schedules():
        assert space.contains(seed)
        back = space.from_params(space.to_params(seed))
        assert schedules_equivalent(back, seed)


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
@given(seed=st.integers(0, 10**6))
@settings(max_examples=40, deadline=None)
def test_params_round_trip(path: Path, seed: int) -> None:
    space = load_space(path)
    schedule = space.sample(random.Random(seed))
    assert space.contains(schedule)
    params = space.to_params(schedule)
    assert set(params) == set(space.param_names())
    for name, (lo, hi) in space.param_ranges().items():
        assert lo <= params[name] <= hi
    assert schedules_equivalent(space.from_params(params), schedule)


def test_monotone_decoding_never_adds_blocks_toward_noise() -> None:
    space = load_space(ROOT / "search_spaces" / "dit.yaml")
    rng = random.Random(0)
    for _ in range(200):
        s = space.sample(rng)
        counts = [s.blocks_at(0.1 * k + 0.05) for k in range(10)]
        assert counts == sorted(counts, reverse=True)


def test_data_easy_schedule_is_outside_a_monotone_space() -> None:
    space = load_space(ROOT / "search_spaces" / "uvit.yaml")
    assert not space.contains(preset("D3-data-easy", "uvit"))
    with pytest.raises(SpaceError, match="outside the space"):
        space.to_params(preset("D3-data-easy", "uvit"))


def test_optuna_distributions_match_ranges() -> None:
    import optuna

    space = load_space(ROOT / "search_spaces" / "uvit.yaml")
    study = optuna.create_study()
    trial = study.ask(space.distributions())
    schedule = space.from_params(trial.params)
    assert isinstance(schedule, ExitSchedule) and space.contains(schedule)


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


BASE = {"version": 1, "arch": "dit", "depth": 12, "intervals": 5, "edges": "uniform",
        "blocks": {"min": 1, "max": 12}, "monotone": True, "seeds": ["D4"]}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"arch": "unet"}, "arch"),
        ({"intervals": 0}, "intervals"),
        ({"edges": [0.0, 0.5, 1.0]}, "edges needs"),
        ({"edges": [0.0, 0.5, 0.4, 0.6, 0.8, 1.0]}, "strictly increasing"),
        ({"blocks": {"min": 0, "max": 12}}, "blocks range"),
        ({"blocks": {"min": 1, "max": 13}}, "blocks range"),
        ({"blocks": {"min": [1, 1], "max": 12}}, "blocks.min needs 5"),
        ({"seeds": ["D2"]}, "unknown preset 'D2'"),
        ({"blocks": {"min": 8, "max": 12}}, "preset D4"),
        ({"colour": "red"}, "unknown field"),
        ({"version": 3}, "version"),
        ({"edges": "search", "edge_grid": 0.3}, "edge_grid"),
        # 0, subnormal, NaN, inf, negative: 1 / edge_grid divides by zero, overflows or is NaN
        ({"edges": "search", "edge_grid": 0}, r"edge_grid must be a number in \[0.001, 1\)"),
        ({"edges": "search", "edge_grid": 1.0e-320}, r"edge_grid must be a number in \[0.001"),
        ({"edges": "search", "edge_grid": float("nan")}, r"edge_grid must be a number in \["),
        ({"edges": "search", "edge_grid": float("inf")}, r"edge_grid must be a number in \["),
        ({"edges": "search", "edge_grid": -0.5}, r"edge_grid must be a number in \["),
        ({"edges": "search", "edge_grid": True}, "edge_grid must be a number"),
        ({"intervals": 10**9}, r"intervals must be an integer in \[1, 1000\]"),
        ({"intervals": True}, "intervals must be an integer"),
        ({"edges": [0.0, 0.2, float("nan"), 0.6, 0.8, 1.0]}, "edges: boundaries must be finite"),
        ({"blocks": {"min": True, "max": 12}}, "blocks.min must be an integer"),
    ],
)
def test_bad_yaml_is_rejected_with_the_field_named(tmp_path, patch, message) -> None:
    with pytest.raises(SpaceError, match=message):
        load_space(_write(tmp_path, {**BASE, **patch}))


def test_deeply_nested_yaml_is_refused(tmp_path) -> None:
    with pytest.raises(SpaceError, match="nested too deeply"):
        load_space(_write(tmp_path, "[" * 100_000 + "]" * 100_000))


def test_unparseable_and_missing_files(tmp_path) -> None:
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(_write(tmp_path, "arch: [dit\n"))
    with pytest.raises(SpaceError, match="not found"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(SpaceError, match="mapping"):
        load_space(_write(tmp_path, "- 1\n- 2\n"))


def test_depth_override_rescales_seeds() -> None:
    space = load_space(ROOT / "search_spaces" / "dit.yaml", depth=28)
    assert space.depth == 28 and space.seed_schedules()[-1] == preset("D6", "dit")


def test_searched_edges_decode_sorted_cuts() -> None:
    space = ScheduleSpace(arch="uvit", depth=6, intervals=3, edges=None, edge_grid=0.1,
                          min_blocks=(1,) * 3, max_blocks=(6,) * 3, monotone=True)
    s = space.from_params({"cut_1": 7, "cut_2": 3, "blocks_0": 6, "drop_1": 2, "drop_2": 1})
    assert s.boundaries == (0.0, 0.3, 0.7, 1.0) and s.blocks == (6, 4, 3)


# ------------------------------------------------------------------------------ levers (#16)
def _lever_space(levers: dict, **kw) -> ScheduleSpace:
    data = {"version": 1, "arch": "dit", "depth": 12, "intervals": 5, "seeds": ["full", "D1"],
            "levers": levers, **kw}
    return ScheduleSpace.from_dict(data)


def test_lever_parameters_round_trip_reuse_schedules() -> None:
    import random

    for per_interval in (False, True):
        space = _lever_space({"modes": ["skip", "reuse"], "period": {"min": 2, "max": 4},
                              "per_interval": per_interval})
        rng = random.Random(0)
        seen_reuse = False
        for _ in range(200):
            s = space.sample(rng)
            assert space.contains(s)
            assert schedules_equivalent(space.from_params(space.to_params(s)), s)
            for n, mode, r in zip(s.blocks, s.modes, s.periods):
                assert (mode, r) == ("skip", 1) or (n < 12 and mode == "reuse" and 2 <= r <= 4)
            seen_reuse |= s.reuses
            if not per_interval:  # one mode and period for every exiting interval
                assert len({(m, r) for n, m, r in zip(s.blocks, s.modes, s.periods)
                            if n < 12}) <= 1
        assert seen_reuse


def test_forecast_parameters_round_trip_and_bound_the_schedules() -> None:
    space = _lever_space({"modes": ["forecast", "reuse"], "period": {"min": 2, "max": 4},
                          "order": {"min": 1, "max": 2}, "warmup": {"min": 0, "max": 2}})
    assert space.lever_choices() == {"mode": ("forecast", "reuse"), "period": (2, 3, 4),
                                     "order": (1, 2), "warmup": (0, 1, 2)}
    rng = random.Random(1)
    seen = set()
    for _ in range(200):
        s = space.sample(rng)
        assert space.contains(s)
        assert schedules_equivalent(space.from_params(space.to_params(s)), s)
        for n, mode, p in zip(s.blocks, s.modes, s.orders):
            assert (mode, p) in {("skip", 0), ("reuse", 0), ("forecast", 1), ("forecast", 2)}
            seen.add((mode, p))
        assert 0 <= s.warmup <= 2 and (s.warmup == 0 or s.reuses)
    assert {("forecast", 1), ("forecast", 2), ("reuse", 0)} <= seen
    d4 = preset("D4", "dit", 12)
    assert space.contains(d4.with_forecast(3, order=2, warmup=1))
    assert not space.contains(d4.with_forecast(3, order=2, warmup=3))  # warm-up out of range
    assert not space.contains(d4.with_forecast(5, order=1))  # period out of range
    # per module or per block tail, searched
    both = _lever_space({"modes": ["forecast"], "period": 2, "granularity": ["modules", "blocks"]})
    assert both.lever_choices() == {"granularity": ("modules", "blocks")}
    kept = {both.sample(random.Random(i)).granularity for i in range(60)}
    assert kept == {"modules", "blocks"}
    assert not space.contains(replace(d4.with_forecast(3), granularity="modules"))
    # the peers' presets seed as they are, at their own settings
    peers = _lever_space({"modes": ["forecast", "reuse"], "period": {"min": 2, "max": 4},
                          "order": {"min": 1, "max": 2}, "warmup": {"min": 0, "max": 2},
                          "granularity": ["modules"]},
                         seeds=["full", "taylorseer-4", "fora-3"])
    _, taylorseer, fora = peers.seed_schedules()
    assert (taylorseer.modes, taylorseer.periods, taylorseer.orders, taylorseer.warmup) == (
        ("forecast",), (4,), (1,), 2)
    assert (fora.modes, fora.periods, fora.warmup) == (("reuse",), (3,), 0)


def test_block_ranges_are_searched_per_interval_and_round_trip() -> None:
    """Per interval, which blocks a per-module interval caches: Delta-DiT's rear-then-front
    pattern and the L2C-like alternate one seed as they are; random parameters decode to
    schedules in the space whose params decode back to them."""
    space = _lever_space({"modes": ["reuse", "forecast"], "period": {"min": 2, "max": 3},
                          "granularity": ["modules", "blocks"],
                          "ranges": ["rear", "front", "alternate"]},
                         seeds=["full", "delta-dit", "l2c-alternate"], intervals=10)
    assert {k: v for k, v in space.lever_choices().items() if k.startswith("range")} == {
        f"range_{k}": ("rear", "front", "alternate") for k in range(10)}
    _, delta, l2c = space.seed_schedules()
    assert delta.ranges == ("front", "rear") and l2c.ranges == ("alternate",)
    for seed in (delta, l2c):
        assert space.from_params(space.to_params(seed), name=seed.name) == seed.merged()
    rng = random.Random(3)
    seen = set()
    for _ in range(200):
        s = space.sample(rng)
        assert space.contains(s)
        assert space.from_params(space.to_params(s), name=s.name) == s
        for mode, r in zip(s.modes, s.ranges):
            assert r == "rear" or (mode != "skip" and s.granularity == "modules")
            seen.add(r)
    assert seen == {"rear", "front", "alternate"}
    narrow = _lever_space({"modes": ["reuse"], "period": 2, "granularity": ["modules"]},
                          intervals=10)
    assert not narrow.contains(delta) and narrow.contains(replace(delta, ranges=()))
    with pytest.raises(SpaceError, match="add modules to levers.granularity"):
        _lever_space({"modes": ["reuse"], "ranges": ["rear", "front"]})
    with pytest.raises(SpaceError, match="levers.ranges must list"):
        _lever_space({"modes": ["reuse"], "granularity": ["modules"], "ranges": ["middle"]})


def test_a_reuse_only_space_seeds_the_presets_reusing_blocks() -> None:
    space = _lever_space({"modes": ["reuse"], "period": 3})
    full, d1 = space.seed_schedules()
    assert full.is_full and not full.reuses
    assert d1.name == "D1" and set(d1.modes[1:]) == {"reuse"} and set(d1.periods[1:]) == {3}
    assert not space.contains(preset("D1", "dit", 12))  # D1 skipping blocks is outside
    assert space.lever_choices() == {}  # one mode, one period: nothing to search
    params = space.to_params(d1)
    assert schedules_equivalent(space.from_params(params), d1)


@pytest.mark.parametrize("levers, message", [
    ({"modes": ["skip", "cache"]}, "unknown mode 'cache'"),
    ({"modes": []}, "levers.modes must list skip, reuse and/or forecast"),
    ({"modes": ["forecast"], "order": 3}, "levers.order: at most 2"),
    ({"modes": ["forecast"], "order": 0}, "levers.order.min must be an integer >= 1"),
    ({"modes": ["forecast"], "warmup": -1}, "levers.warmup.min must be an integer >= 0"),
    ({"modes": ["forecast"], "granularity": ["heads"]}, "levers.granularity must list"),
    ({"modes": ["reuse"], "period": 1}, "levers.period.min must be an integer >= 2"),
    ({"modes": ["reuse"], "period": {"min": 4, "max": 2}}, "min 4 is above max 2"),
    ({"modes": ["reuse"], "colour": 1}, "levers: unknown field(s) colour"),
    ({"exit_heads": "yes"}, "levers.exit_heads must be true or false"),
])
def test_a_malformed_levers_section_names_the_field(levers, message) -> None:
    with pytest.raises(SpaceError, match=re.escape(message)):
        _lever_space(levers)


def test_per_interval_levers_need_fixed_edges() -> None:
    with pytest.raises(SpaceError, match="levers.per_interval needs fixed edges"):
        _lever_space({"modes": ["reuse"], "per_interval": True}, edges="search", seeds=[])
