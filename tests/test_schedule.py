"""Exit schedules: Table 2 presets, lookups, JSON round trips and malformed files."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ase_search.callplan import block_acceleration, blocks_per_call
from ase_search.metrics.latency import CostModel
from ase_search.schedule import (
    ExitSchedule,
    ScheduleError,
    cached_blocks,
    preset,
    preset_names,
    scale_blocks,
)

# Table 2 of the paper, typed in again here as the independent reference: blocks per 0.1-wide bin
# of t, from data (t = 0) to noise (t = 1).
TABLE_2_PER_DECILE = {
    ("dit", "D1"): [28, 28, 26, 26, 24, 24, 22, 22, 20, 20],
    ("dit", "D3"): [28, 28, 25, 25, 22, 22, 19, 19, 16, 16],
    ("dit", "D4"): [28, 28, 24, 24, 20, 20, 16, 16, 12, 12],
    ("dit", "D6"): [28, 28, 24, 22, 20, 18, 12, 10, 8, 6],
    ("uvit", "D1"): [6, 6, 5, 5, 4, 4, 3, 3, 2, 2],
    ("uvit", "D2"): [6, 6, 5, 5, 3, 3, 2, 2, 1, 1],
    ("uvit", "D3"): [6, 6, 4, 4, 3, 3, 2, 2, 1, 1],
    ("uvit", "D4"): [5, 5, 4, 4, 2, 2, 2, 2, 1, 1],
    ("uvit", "D5"): [5, 5, 4, 4, 2, 2, 1, 1, 1, 1],
    ("uvit", "D6"): [5, 5, 3, 3, 2, 2, 1, 1, 1, 1],
}


@pytest.mark.parametrize(("arch", "name"), sorted(TABLE_2_PER_DECILE))
def test_presets_equal_table_2(arch: str, name: str) -> None:
    schedule = preset(name, arch)
    got = [schedule.blocks_at(0.1 * k + 0.05) for k in range(10)]
    assert got == TABLE_2_PER_DECILE[(arch, name)]
    assert schedule.depth == {"dit": 28, "uvit": 6}[arch]


def test_preset_names_cover_the_paper() -> None:
    assert preset_names("dit", data_easy=False, peers=False) == ["full", "D1", "D3", "D4", "D6"]
    assert set(preset_names("dit", peers=True)) - set(preset_names("dit")) == {
        "taylorseer-4", "taylorseer-2", "taylorseer-4-o2", "taylorseer-2-o2", "fora-2", "fora-3",
        "delta-dit", "l2c-alternate"}
    assert preset_names("uvit", data_easy=False, peers=False) == ["full"] + [f"D{i}" for i in range(1, 7)]


def test_block_acceleration_matches_paper_ddim() -> None:
    # Table 3, DDIM-50: measured acceleration 14.37 / 20.93 / 28.67 / 36.71 % for D1/D3/D4/D6; the
    # block share alone explains them to within one point.
    timesteps = list(range(0, 1000, 20))
    for name, paper in [("D1", 0.1437), ("D3", 0.2093), ("D4", 0.2867), ("D6", 0.3671)]:
        assert block_acceleration(preset(name, "dit"), timesteps) == pytest.approx(paper, abs=0.01)


def test_predicted_acceleration_counts_fixed_and_dropped_cost() -> None:
    s = ExitSchedule("uvit", 6, (0.0, 0.5, 1.0), (6, 2))
    steps = [0, 999]  # one step in each half
    # per call: full = 10 + 6*2 = 22; exited = 10 + 2*2 + 4*0.5 = 16
    expected = 1 - (22 + 16) / (2 * 22)
    cost = CostModel(arch="uvit", depth=6, fixed=10.0, block=2.0, dropped=0.5, batch_size=1,
                     device="cpu", components={})
    assert cost.acceleration(s, steps) == pytest.approx(expected)


def test_blocks_at_edges_and_indices() -> None:
    s = preset("D4", "dit")
    assert s.blocks_at(0.0) == 28
    assert s.blocks_at(0.2) == 24  # intervals are closed on the left
    assert s.blocks_at(1.0) == 12  # the last interval holds t = 1
    assert s.blocks_at_index(199) == 28 and s.blocks_at_index(200) == 24
    assert s.blocks_at_index(999) == 12
    with pytest.raises(ValueError, match="timestep"):
        s.blocks_at_index(1000)
    t = torch.tensor([0.0, 0.19, 0.2, 0.6, 0.99, 1.0])
    assert s.blocks_for(t).tolist() == [s.blocks_at(float(x)) for x in t.tolist()]


def test_mean_blocks_and_full() -> None:
    calls = blocks_per_call(preset("D4", "dit"), range(1000))
    assert sum(calls) / len(calls) == pytest.approx((28 + 24 + 20 + 16 + 12) / 5)
    full = preset("full", "dit", depth=12)
    assert blocks_per_call(full, range(0, 1000, 50)) == [12] * 20
    assert block_acceleration(full, range(0, 1000, 50)) == 0.0
    assert full.is_full and not preset("D1", "dit", depth=12).is_full


def test_data_easy_mirror() -> None:
    ne = preset("D6", "dit")
    de = preset("D6-data-easy", "dit")
    assert de.name == "D6-data-easy"
    for k in range(10):
        t = 0.1 * k + 0.05
        assert de.blocks_at(t) == ne.blocks_at(1 - t)
    # Same compute over a symmetric grid of timesteps.
    grid = list(range(5, 1000, 10))
    assert sum(blocks_per_call(de, grid)) == sum(blocks_per_call(ne, grid))
    assert de.mirrored() == ne


def test_scaling_rule() -> None:
    assert scale_blocks(28, 12, 28) == 12
    assert scale_blocks(14, 12, 28) == 6
    assert scale_blocks(6, 12, 28) == 3  # 2.57 rounds half up to 3
    assert scale_blocks(1, 3, 28) == 1  # never below one block
    s = preset("D4", "dit", depth=12)
    assert s.blocks == (12, 10, 9, 7, 5)
    assert preset("D3", "uvit", depth=6) == preset("D3", "uvit")


schedules = st.integers(1, 8).flatmap(
    lambda k: st.tuples(
        st.sampled_from(["dit", "uvit"]),
        st.integers(1, 40),
        st.lists(st.floats(0.001, 0.999), min_size=k - 1, max_size=k - 1, unique=True),
        st.lists(st.integers(1, 1000), min_size=k, max_size=k),
        st.text(min_size=0, max_size=12),
    )
)


@given(schedules)
@settings(max_examples=100, deadline=None)
def test_json_round_trip(parts) -> None:
    arch, depth, inner, raw_blocks, name = parts
    boundaries = (0.0, *sorted(inner), 1.0)
    blocks = tuple(1 + (b - 1) % depth for b in raw_blocks)
    s = ExitSchedule(arch, depth, boundaries, blocks, name, {"trial": 3})
    back = ExitSchedule.from_json(s.to_json())
    assert back == s and back.metadata == {"trial": 3}


def test_json_file_round_trip(tmp_path) -> None:
    s = preset("D6", "uvit")
    path = tmp_path / "s.json"
    s.to_json(path)
    assert ExitSchedule.from_json(path) == s
    assert ExitSchedule.from_json(str(path)) == s


GOOD = preset("D4", "dit").to_dict()


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"version": 99}, "version"),
        ({"arch": "unet"}, "arch"),
        ({"boundaries": [0.0, 0.2, 0.5, 0.4, 0.8, 1.0]}, "strictly increasing"),
        ({"boundaries": [0.0, 0.2, 0.2, 0.6, 0.8, 1.0]}, "strictly increasing"),
        ({"boundaries": [0.1, 0.2, 0.4, 0.6, 0.8, 1.0]}, "without gaps"),
        ({"boundaries": [0.0, 0.2, 0.4, 0.6, 0.8, 0.9]}, "without gaps"),
        ({"blocks": [28, 24, 20, 16]}, "one count per interval"),
        ({"blocks": [29, 24, 20, 16, 12]}, r"outside \[1, depth=28\]"),
        ({"blocks": [28, 24, 20, 16, 0]}, r"outside \[1, depth=28\]"),
        ({"blocks": [28, 24, 20, 16, 1.5]}, "integers"),
        ({"blocks": "28"}, "blocks must be a list"),
        ({"depth": 0}, "depth"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_malformed_json_is_rejected_with_the_field_named(patch, message) -> None:
    data = {**GOOD, **patch}
    with pytest.raises(ScheduleError, match=message):
        ExitSchedule.from_json(json.dumps(data))


def test_missing_fields_and_bad_files(tmp_path) -> None:
    data = dict(GOOD)
    del data["blocks"]
    with pytest.raises(ScheduleError, match="missing field"):
        ExitSchedule.from_json(json.dumps(data))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ScheduleError, match="not valid JSON"):
        ExitSchedule.from_json(bad)
    with pytest.raises(ScheduleError, match="not found"):
        ExitSchedule.from_json(tmp_path / "missing.json")
    with pytest.raises(ScheduleError, match="JSON object"):
        ExitSchedule.from_json("[1, 2]")


def test_deeply_nested_json_is_refused(tmp_path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "deep.json"
    path.write_text(deep)
    for source in (path, deep):
        with pytest.raises(ScheduleError, match="nested too deeply"):
            ExitSchedule.from_json(source)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_schedule_file_has_normal_permissions(tmp_path, umask) -> None:
    old = os.umask(umask)
    try:
        preset("D4", "dit").to_json(tmp_path / "s.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) == 0o666 & ~umask


def test_unknown_preset() -> None:
    with pytest.raises(ScheduleError, match="unknown preset 'D2'"):
        preset("D2", "dit")


# ------------------------------------------------------------------ block reuse (issue #16)
reuse_schedules = st.integers(1, 6).flatmap(
    lambda k: st.tuples(
        st.integers(1, 30),
        st.lists(st.floats(0.001, 0.999), min_size=k - 1, max_size=k - 1, unique=True),
        st.lists(st.integers(1, 1000), min_size=k, max_size=k),
        st.lists(st.sampled_from(["skip", "reuse"]), min_size=k, max_size=k),
        st.lists(st.integers(1, 9), min_size=k, max_size=k),
    )
)


@given(reuse_schedules)
@settings(max_examples=60, deadline=None)
def test_reuse_json_round_trip(parts) -> None:
    depth, inner, raw_blocks, modes, raw_periods = parts
    periods = [r if m == "reuse" else 1 for m, r in zip(modes, raw_periods)]
    s = ExitSchedule("dit", depth, (0.0, *sorted(inner), 1.0),
                     tuple(1 + (b - 1) % depth for b in raw_blocks), "r",
                     modes=tuple(modes), periods=tuple(periods))
    data = json.loads(s.to_json())
    assert data["version"] == 2 and data["modes"] == modes and data["periods"] == periods
    back = ExitSchedule.from_json(s.to_json())
    assert back == s and back.modes == tuple(modes) and back.periods == tuple(periods)


def test_defaults_and_presets_skip_everywhere() -> None:
    s = ExitSchedule("dit", 12, (0.0, 0.5, 1.0), (12, 6))
    assert s.modes == ("skip", "skip") and s.periods == (1, 1) and not s.reuses
    for arch in ("dit", "uvit"):
        for name in preset_names(arch):
            p = preset(name, arch)
            assert set(p.modes) == {"skip"} and set(p.periods) == {1}, name


def test_version_1_file_loads_as_all_skip(tmp_path) -> None:
    # A version-1 file as ase-search wrote it before issue #16 (no modes, no periods).
    v1 = {"version": 1, "name": "D4", "arch": "dit", "depth": 28,
          "boundaries": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], "blocks": [28, 24, 20, 16, 12],
          "metadata": {"trial": 7}}
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(v1))
    s = ExitSchedule.from_json(path)
    assert s == preset("D4", "dit") and s.modes == ("skip",) * 5 and s.periods == (1,) * 5
    # Version 1 knows no reuse: its fields are unknown there.
    with pytest.raises(ScheduleError, match="unknown field.*modes"):
        ExitSchedule.from_json(json.dumps({**v1, "modes": ["skip"] * 5}))


def test_with_reuse_mirrored_and_merged_keep_modes() -> None:
    d4 = preset("D4", "dit", 12)  # 12 10 9 7 5
    r = d4.with_reuse(3)
    assert r.modes == ("skip", "reuse", "reuse", "reuse", "reuse")
    assert r.periods == (1, 3, 3, 3, 3) and r.blocks == d4.blocks and r.reuses
    m = r.mirrored()
    assert m.modes == tuple(reversed(r.modes)) and m.periods == tuple(reversed(r.periods))
    assert m.mirrored() == r
    # Adjacent equal-count skip intervals merge; reuse intervals never do (entering one restarts
    # its refresh numbering).
    two = ExitSchedule("dit", 12, (0.0, 0.25, 0.5, 0.75, 1.0), (6, 6, 6, 6),
                       modes=("skip", "skip", "reuse", "reuse"), periods=(1, 1, 2, 2))
    merged = two.merged()
    assert merged.boundaries == (0.0, 0.5, 0.75, 1.0) and merged.blocks == (6, 6, 6)
    assert merged.modes == ("skip", "reuse", "reuse") and merged.periods == (1, 2, 2)
    assert "reuse/3" in r.describe() and "reuse" not in d4.describe()


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"modes": ["skip", "reuse", "reuse", "cache", "skip"]},
         r"modes\[3\] = 'cache' is not a mode"),
        ({"modes": ["skip", "reuse"]}, "modes needs one entry per interval"),
        ({"modes": "reuse"}, "modes must be a list"),
        ({"modes": [1, 2, 3, 4, 5]}, r"modes\[0\] = 1 is not a mode"),
        ({"modes": ["reuse"] * 5, "periods": [1, 2, 0, 1, 1]},
         r"periods\[2\] = 0 must be an integer >= 1"),
        ({"modes": ["reuse"] * 5, "periods": [1, 2, 2.5, 1, 1]},
         r"periods\[2\] = 2.5 must be an integer >= 1"),
        ({"modes": ["reuse"] * 5, "periods": [1, True, 1, 1, 1]},
         r"periods\[1\] = True must be an integer"),
        ({"periods": [1, 1, 1, 1, 1, 1]}, "periods needs one entry per interval"),
        ({"periods": [1, 2, 1, 1, 1]}, r"periods\[1\] = 2 but interval 1 is a skip interval"),
    ],
)
def test_malformed_reuse_fields_are_rejected_with_the_field_named(patch, message) -> None:
    with pytest.raises(ScheduleError, match=message):
        ExitSchedule.from_json(json.dumps({**GOOD, **patch}))


def test_forecast_schedules_round_trip_and_old_files_stay_version_2():
    d4 = preset("D4", "dit", 12)
    f = d4.with_forecast(4, order=2, warmup=2)
    assert f.modes == ("skip", "forecast", "forecast", "forecast", "forecast")
    assert f.orders == (0, 2, 2, 2, 2) and f.periods == (1, 4, 4, 4, 4) and f.reuses
    data = f.to_dict()
    assert data["version"] == 3 and data["warmup"] == 2
    assert ExitSchedule.from_dict(data) == f
    assert ExitSchedule.from_json(f.to_json()) == f
    # without forecast or warm-up: the version-2 object, unchanged
    assert d4.with_reuse(2).to_dict()["version"] == 2 and "orders" not in d4.with_reuse(2).to_dict()
    assert "forecast2/4" in f.describe() and f.describe().endswith("warmup 2")
    # a forecast interval defaults to order 1
    one = ExitSchedule("dit", 4, (0.0, 1.0), (2,), modes=("forecast",), periods=(2,))
    assert one.orders == (1,)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"modes": ("forecast",), "periods": (2,), "orders": (3,)}, "order must be 1 or 2"),
    ({"modes": ("reuse",), "periods": (2,), "orders": (1,)}, "reuse interval; its order must be 0"),
    ({"modes": ("forecast",), "periods": (2,), "warmup": -1}, "warmup = -1"),
    ({"modes": ("skip",), "periods": (2,)}, "'reuse' or 'forecast'"),
])
def test_bad_forecast_fields_are_refused_with_the_field_named(kwargs, message):
    with pytest.raises(ScheduleError, match=message):
        ExitSchedule("dit", 4, (0.0, 1.0), (2,), **kwargs)


def test_per_module_caching_is_for_dit_and_round_trips():
    ts = preset("taylorseer-4", "dit", 12)
    assert (ts.blocks, ts.modes, ts.periods, ts.orders, ts.warmup, ts.granularity) == (
        (1,), ("forecast",), (4,), (1,), 2, "modules")
    assert ExitSchedule.from_json(ts.to_json()) == ts and ts.to_dict()["version"] == 3
    assert preset("fora-2", "uvit", 6).granularity == "blocks"  # U-ViT blocks have no gates
    with pytest.raises(ScheduleError, match="granularity 'modules' is for DiT"):
        ExitSchedule("uvit", 6, (0.0, 1.0), (2,), modes=("reuse",), periods=(2,),
                     granularity="modules")
    with pytest.raises(ScheduleError, match="granularity = 'heads'"):
        ExitSchedule("dit", 6, (0.0, 1.0), (2,), granularity="heads")


@pytest.mark.parametrize(("depth", "count"), [(4, 1), (4, 2), (12, 6), (12, 8), (28, 14), (7, 3)])
def test_block_ranges_cache_depth_minus_count_blocks(depth, count):
    m = depth - count
    assert cached_blocks("rear", count, depth) == tuple(range(count, depth))
    assert cached_blocks("front", count, depth) == tuple(range(m))
    alternate = cached_blocks("alternate", count, depth)
    assert len(set(alternate)) == m and alternate[-1] == depth - 1 and alternate[0] >= 0
    gaps = [b - a for a, b in zip(alternate, alternate[1:])]
    assert not gaps or max(gaps) - min(gaps) <= 1  # spread evenly
    if 2 * count == depth:
        assert alternate == tuple(range(1, depth, 2))  # every other block


def test_block_ranges_round_trip_and_need_a_per_module_cache():
    delta = preset("delta-dit", "dit", 12)
    assert (delta.boundaries, delta.blocks, delta.ranges) == ((0.0, 0.5, 1.0), (6, 6),
                                                              ("front", "rear"))
    assert ExitSchedule.from_json(delta.to_json()) == delta
    assert delta.to_dict()["ranges"] == ["front", "rear"] and "front" in delta.describe()
    assert "ranges" not in preset("taylorseer-4", "dit", 12).to_dict()  # as before ranges
    assert preset("l2c-alternate", "dit", 12).ranges == ("alternate",)
    assert delta.mirrored().ranges == ("rear", "front")
    assert "delta-dit" not in preset_names("uvit", peers=True)
    with pytest.raises(ScheduleError, match=r"ranges\[0\] = 'front'.*granularity 'modules'"):
        ExitSchedule("dit", 4, (0.0, 1.0), (2,), modes=("reuse",), periods=(2,),
                     ranges=("front",))
    with pytest.raises(ScheduleError, match=r"ranges\[0\] = 'front'.*reuse or forecast"):
        ExitSchedule("dit", 4, (0.0, 1.0), (2,), granularity="modules", ranges=("front",))
    with pytest.raises(ScheduleError, match=r"ranges\[0\] = 'middle' is not a block range"):
        ExitSchedule("dit", 4, (0.0, 1.0), (2,), ranges=("middle",))


def test_a_version_2_file_with_forecast_fields_is_refused():
    data = preset("D4", "dit", 12).with_forecast(2).to_dict()
    data["version"] = 2
    with pytest.raises(ScheduleError, match="unknown field"):
        ExitSchedule.from_dict(data)
