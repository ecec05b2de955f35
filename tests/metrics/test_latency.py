"""Latency metrics: median timing, the per-component cost model, FLOP counts by hand."""

from __future__ import annotations

import dataclasses

import bisect

import pytest
import torch

from ase_search.metrics import latency
from ase_search.metrics.latency import (
    CostModel,
    flop_acceleration,
    measure,
    model_flops,
    profile_components,
    sampling_latencies,
    sampling_latency_samples,
)
from ase_search.models import create_model
from ase_search.samplers import SamplerConfig
from ase_search.schedule import ExitSchedule, preset

torch.set_num_threads(1)

# Tiny DiT: 28x28 / patch 7 = 16 tokens of width 32, MLP width 128, 4 blocks, 2 heads.
T_TOKENS, D, DEPTH = 16, 32, 4


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return create_model("DiT-T", hidden_size=D, depth=DEPTH, num_heads=2).eval()


@pytest.fixture(scope="module")
def uvit():
    torch.manual_seed(0)
    # conv=True pinned: the hand count below includes the official 3x3 output convolution.
    return create_model("U-ViT-T", embed_dim=D, depth=6, num_heads=2, conv=True).eval()


def blocks_by_hand(schedule: ExitSchedule, s: float) -> int:
    """Block count at timestep s (t = s / 1000), found by bisection over the boundaries."""
    k = bisect.bisect_right(schedule.boundaries, s / 1000) - 1
    return schedule.blocks[min(k, len(schedule.blocks) - 1)]


# ------------------------------------------------------------------------------- measure()
def test_measure_returns_median_of_timed_calls_after_warmup(monkeypatch):
    durations = iter([50.0, 40.0, 0.3, 0.1, 0.9, 0.2, 0.5])  # two warm-ups, then five timed
    clock = [0.0]
    monkeypatch.setattr(latency.time, "perf_counter", lambda: clock[0])

    def fn():
        clock[0] += next(durations)

    # Median 0.3, not the mean 0.4 and not anything containing the slow warm-ups.
    assert measure(fn, warmup=2, repeats=5) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="repeats"):
        measure(fn, repeats=0)


def test_measure_real_sleeps():
    import time

    sleeps = iter([0.0, 0.2, 0.01, 0.02])  # one warm-up, then three timed calls
    seconds = measure(lambda: time.sleep(next(sleeps)), warmup=1, repeats=3)
    assert 0.02 <= seconds < 0.07  # the median; the mean would be 0.077


# ------------------------------------------------------------------------------- CostModel
def test_cost_model_arithmetic_by_hand():
    cost = CostModel(arch="uvit", depth=6, fixed=10.0, block=2.0, dropped=0.5, batch_size=4,
                     device="cpu", components={})
    assert cost.call_latency(6) == 10 + 12
    assert cost.call_latency(2) == 10 + 4 + 4 * 0.5
    schedule = ExitSchedule("uvit", 6, (0.0, 0.5, 1.0), (6, 2), "half")
    times = [900.0, 600.0, 400.0, 0.0]  # two calls in [0.5, 1] (2 blocks), two in [0, 0.5) (6)
    assert cost.latency(None, times) == 4 * 22
    assert cost.latency(schedule, times) == 2 * 22 + 2 * 16
    assert cost.acceleration(schedule, times) == pytest.approx(1 - 76 / 88)
    with pytest.raises(ValueError, match="n_blocks"):
        cost.call_latency(7)
    assert CostModel.from_dict(cost.to_dict()) == cost


@pytest.mark.parametrize("arch", ["dit", "uvit"])
def test_predicted_latency_is_the_sum_of_profiled_components(arch, dit, uvit):
    model = dit if arch == "dit" else uvit
    cost = profile_components(model, batch_size=2, warmup=1, repeats=2)
    parts = cost.components
    fixed = parts["embed"] + parts["final"]
    expected_parts = {"embed", "block", "final"}
    if arch == "uvit":
        fixed += len(model.in_blocks) * parts["encoder_block"] + parts["mid_block"]
        expected_parts |= {"encoder_block", "mid_block", "dropped"}
    expected_parts |= {"forecast1", "forecast2"} | ({"gated"} if arch == "dit" else set())
    assert set(parts) == expected_parts and all(v > 0 for v in parts.values())
    assert cost.forecast == (0.0, parts["forecast1"], parts["forecast2"])
    assert cost.gated == parts.get("gated", 0.0)
    dropped = parts.get("dropped", 0.0)

    schedule = preset("D4", arch, model.exit_depth)
    times = SamplerConfig("ddim", 10).model_times()
    by_hand = sum(
        fixed + k * parts["block"] + (model.exit_depth - k) * dropped
        for k in (blocks_by_hand(schedule, s) for s in times)
    )
    full = len(times) * (fixed + model.exit_depth * parts["block"])
    assert cost.latency(schedule, times) == pytest.approx(by_hand, rel=1e-12)
    assert cost.acceleration(schedule, times) == pytest.approx(1 - by_hand / full, rel=1e-12)


# ------------------------------------------------------------------------------- FLOPs
def dit_block_flops_by_hand(n: int) -> int:
    """One DiT block on n samples, counting 2 FLOPs per multiply-add of every matmul."""
    mlp = 4 * D
    ada_ln = 2 * n * D * 6 * D  # adaLN_modulation: (n, D) -> (n, 6D)
    qkv = 2 * n * T_TOKENS * D * 3 * D
    attention = 2 * n * T_TOKENS * T_TOKENS * D * 2  # q k^T and (softmax) v, all heads
    proj = 2 * n * T_TOKENS * D * D
    fc1 = fc2 = 2 * n * T_TOKENS * D * mlp
    return ada_ln + qkv + attention + proj + fc1 + fc2


def test_dit_flops_per_block_match_hand_count(dit):
    counts = [model_flops(dit, k) for k in range(1, DEPTH + 1)]
    assert model_flops(dit, None) == counts[-1]
    assert all(b - a == dit_block_flops_by_hand(1) for a, b in zip(counts, counts[1:]))
    assert model_flops(dit, 2, batch_size=3) - model_flops(dit, 1, batch_size=3) == \
        dit_block_flops_by_hand(3)


def test_uvit_flops_are_monotone_and_keep_skip_linear(uvit):
    counts = [model_flops(uvit, k) for k in range(1, uvit.exit_depth + 1)]
    assert all(a < b for a, b in zip(counts, counts[1:]))
    assert model_flops(uvit, None) == counts[-1]
    # A dropped decoder block still runs skip_linear (2D -> D on every token); a whole one adds
    # the transformer body: qkv (no bias), attention, proj, fc1, fc2.
    tokens = T_TOKENS + 2  # time and label tokens
    body = (2 * tokens * D * 3 * D + 2 * tokens * tokens * D * 2 + 2 * tokens * D * D
            + 2 * 2 * tokens * D * 4 * D)
    assert counts[1] - counts[0] == body
    # One decoder block whole: patch embedding, encoder + mid + one decoder body, every decoder's
    # skip_linear, decoder_pred on all tokens and the 3x3 output convolution (1 channel, 28x28).
    patch_embed = 2 * T_TOKENS * 49 * D
    skip_linear = 2 * tokens * 2 * D * D
    decoder_pred = 2 * tokens * D * 49
    conv = 2 * 28 * 28 * 9
    assert len(uvit.in_blocks) == uvit.exit_depth == 3
    assert counts[0] == (patch_embed + (3 + 1 + 1) * body + 3 * skip_linear + decoder_pred
                         + conv)


def test_flop_acceleration_matches_closed_form(dit):
    schedule = preset("D4", "dit", DEPTH)
    times = SamplerConfig("ddim", 10).model_times()
    per_block = dit_block_flops_by_hand(1)
    fixed = model_flops(dit, 1) - per_block
    full = fixed + DEPTH * per_block
    used = sum(fixed + blocks_by_hand(schedule, s) * per_block for s in times)
    assert flop_acceleration(dit, schedule, times) == pytest.approx(1 - used / (len(times) * full))


# ------------------------------------------------------------------------------- measured
def test_sampling_latencies_interleave_schedules_call_by_call(dit, monkeypatch):
    calls = []
    original = type(dit).forward

    def counting_forward(self, x, t, y=None, n_blocks=None):
        calls.append(n_blocks)
        return original(self, x, t, y, n_blocks=n_blocks)

    monkeypatch.setattr(type(dit), "forward", counting_forward)
    schedules = {"full": None, "D4": preset("D4", "dit", DEPTH)}
    times = [900.0, 100.0]
    seconds = sampling_latencies(sampling_latency_samples(dit, schedules, times, batch_size=2,
                                                          repeats=2))
    assert set(seconds) == {"full", "D4"} and all(v > 0 for v in seconds.values())
    d4 = [blocks_by_hand(schedules["D4"], s) for s in times]
    assert d4 == [2, 4]
    # Three rounds (one warm-up) x two calls; at call j every schedule runs its call j once,
    # the order rotating so neither schedule always goes first.
    groups = [calls[i:i + 2] for i in range(0, len(calls), 2)]
    assert len(groups) == 3 * len(times)
    for g, group in enumerate(groups):
        assert sorted(group, key=str) == sorted([None, d4[g % len(times)]], key=str)
    assert {group[0] for group in groups} == {None, *d4}
    with pytest.raises(ValueError, match="repeats"):
        sampling_latency_samples(dit, schedules, times, batch_size=2, repeats=0)


def test_sampling_latencies_sum_per_call_medians(dit, monkeypatch):
    """With a fake clock where a call costs its block count, latency = sum of counts."""
    clock = [0.0]
    monkeypatch.setattr(latency.time, "perf_counter", lambda: clock[0])
    original = type(dit).forward

    def timed_forward(self, x, t, y=None, n_blocks=None):
        clock[0] += DEPTH if n_blocks is None else n_blocks
        return original(self, x, t, y, n_blocks=n_blocks)

    monkeypatch.setattr(type(dit), "forward", timed_forward)
    schedules = {"full": None, "D4": preset("D4", "dit", DEPTH)}
    times = [900.0, 500.0, 100.0]
    seconds = sampling_latencies(sampling_latency_samples(dit, schedules, times, batch_size=1,
                                                          repeats=3))
    assert seconds == {"full": 3 * DEPTH,
                       "D4": sum(blocks_by_hand(schedules["D4"], s) for s in times)}


# ------------------------------------------------------------------------------- robust profile
def test_fastest_round_ignores_rounds_slowed_by_load():
    # Five rounds of one component; a neighbour's burst slowed rounds 2 and 4 by 13x.
    assert latency.fastest_round([0.31, 4.1, 0.29, 3.8, 0.30]) == 0.29
    with pytest.raises(ValueError, match="round"):
        latency.fastest_round([])


def test_profile_takes_each_components_fastest_round_and_records_the_load(dit, monkeypatch):
    # Every timed call of round 1 is slow (a burst of load); rounds 0 and 2 are quiet.
    calls: list[int] = []
    clock = [0.0]
    monkeypatch.setattr(latency.time, "perf_counter", lambda: clock[0])
    real_measure = latency.measure

    def timed(fn, *, warmup, repeats, device):
        calls.append(1)
        r = (len(calls) - 1) // 6  # DiT has 6 components per round
        return real_measure(lambda: clock.__setitem__(0, clock[0] + (9.0 if r == 1 else 0.1)),
                            warmup=warmup, repeats=repeats, device=device)

    monkeypatch.setattr(latency, "measure", timed)
    cost = profile_components(dit, batch_size=2, warmup=1, repeats=2, rounds=3)
    assert len(calls) == 18  # 3 rounds x 6 components
    assert cost.components == {name: pytest.approx(0.1) for name in (
        "embed", "block", "final", "gated", "forecast1", "forecast2")}
    c = cost.conditions
    assert len(c["load_before"]) == len(c["load_after"]) == 3
    assert c["threads"] == torch.get_num_threads() and c["cpus"] >= 1
    assert (c["rounds"], c["repeats"]) == (3, 2)
    assert CostModel.from_dict(cost.to_dict()) == cost
    with pytest.raises(ValueError, match="rounds"):
        profile_components(dit, rounds=0)


def test_cached_calls_cost_their_gates_and_forecasts_by_hand():
    """A cached call of a modules schedule runs its count, the gates of every skipped block and
    (forecasting) two forecasts per skipped block; with blocks, one forecast of the residual."""
    cost = CostModel(arch="dit", depth=4, fixed=10.0, block=2.0, dropped=0.0, batch_size=4,
                     device="cpu", components={}, gated=0.5, forecast=(0.0, 0.25, 0.75))
    times = [900.0, 700.0, 500.0, 300.0, 100.0]  # five calls, all in the one interval
    full = 10 + 4 * 2
    one = 10 + 2  # a call of 1 block
    base = ExitSchedule("dit", 4, (0.0, 1.0), (1,), "one")
    # period 2: calls 0, 2, 4 refresh (full), calls 1 and 3 are cached
    assert cost.latency(base.with_reuse(2), times) == 3 * full + 2 * one
    modules = base.with_forecast(2, order=2, granularity="modules")
    assert cost.latency(modules, times) == 3 * full + 2 * (one + 3 * 0.5 + 2 * 3 * 0.75)
    reuse_modules = dataclasses.replace(base.with_reuse(2), granularity="modules")
    assert cost.latency(reuse_modules, times) == 3 * full + 2 * (one + 3 * 0.5)
    blocks = base.with_forecast(2, order=1)
    assert cost.latency(blocks, times) == 3 * full + 2 * (one + 0.25)
    assert cost.latency(base, times) == 5 * one  # skipping costs no cache
    assert CostModel.from_dict(cost.to_dict()) == cost


def test_cost_model_from_an_old_dict_without_conditions():
    old = {"arch": "dit", "depth": 12, "fixed": 0.5, "block": 0.25, "dropped": 0.0,
           "batch_size": 256, "device": "cpu", "components": {"embed": 0.2, "block": 0.25,
                                                              "final": 0.3}}
    cost = CostModel.from_dict(old)
    assert cost.conditions == {} and cost.call_latency(12) == 0.5 + 12 * 0.25
