"""The measuring layer: block counts of a sampler's calls, the accelerations' names, and the one
path schedule -> samples -> FID -> cost shared by ``evaluate`` and the search's trials."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ase_search.callplan import block_acceleration, blocks_per_call, call_plan
from ase_search.measure import (
    fid_images,
    measure_sample_quality,
    measure_schedule,
)
from ase_search.metrics.latency import CostModel, flop_acceleration, model_flops
from ase_search.models import create_model, save_checkpoint
from ase_search.samplers import SamplerConfig, sample
from ase_search.schedule import ExitSchedule, preset

torch.set_num_threads(1)

DEPTH, D, TOKENS = 4, 32, 16  # tiny DiT: 28x28 / patch 7 = 16 tokens of width 32


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return create_model("DiT-T", hidden_size=D, depth=DEPTH, num_heads=2).eval()


@pytest.fixture(autouse=True)
def fid_cache(tmp_path_factory, monkeypatch):
    """One FID reference cache for the module, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


# ------------------------------------------------------------------------------ blocks_per_call
def test_blocks_per_call_ddim_10_on_d4_by_hand() -> None:
    # DDIM-10 ("leading" spacing) calls the model at 900, 800, ..., 0; D4 runs 28, 24, 20, 16,
    # 12 blocks over the fifths of t = s / 1000.
    d4 = preset("D4", "dit")
    hand = [12, 12, 16, 16, 20, 20, 24, 24, 28, 28]
    assert blocks_per_call(d4, SamplerConfig("ddim", 10)) == hand
    assert blocks_per_call(d4, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]) == hand
    assert block_acceleration(d4, SamplerConfig("ddim", 10)) == pytest.approx(1 - 200 / 280)


def test_blocks_per_call_other_samplers_presets_and_process_lengths() -> None:
    # DDPM-4 calls at round(linspace(0, 999, 4)) = 999, 666, 333, 0.
    assert blocks_per_call(preset("D4", "dit"), SamplerConfig("ddpm", 4)) == [12, 16, 24, 28]
    # U-ViT D2 is (6, 5, 3, 2, 1) over the fifths of t.
    assert blocks_per_call(preset("D2", "uvit"), SamplerConfig("ddim", 10)) == \
        [1, 1, 2, 2, 3, 3, 5, 5, 6, 6]
    # A 250-step process: DDIM-5 calls at 200, 150, 100, 50, 0, i.e. t = 0.8, ..., 0.
    assert blocks_per_call(preset("D4", "dit"), SamplerConfig("ddim", 5), 250) == \
        [12, 16, 20, 24, 28]
    assert block_acceleration(preset("full", "uvit"), SamplerConfig("ddpm", 7)) == 0.0


def test_blocks_per_call_refuses_what_is_not_a_schedule_or_calls() -> None:
    with pytest.raises(ValueError, match="schedule must be an ExitSchedule"):
        blocks_per_call("D4", SamplerConfig("ddim", 10))
    with pytest.raises(ValueError, match="sampler must be a SamplerConfig or a list"):
        blocks_per_call(preset("D4", "dit"), "ddim")


def test_call_plan_of_reuse_by_hand() -> None:
    # D4 at depth 12 is 12, 10, 9, 7, 5 over the fifths of t; with_reuse(2) reuses every exiting
    # interval. DDIM-10 calls at 900, 800, ..., 0: two calls per interval, the first a refresh.
    r2 = preset("D4", "dit", 12).with_reuse(2)
    plan = call_plan(r2, SamplerConfig("ddim", 10))
    assert [c.count for c in plan] == [5, 5, 7, 7, 9, 9, 10, 10, 12, 12]
    assert [c.reuse for c in plan] == [True] * 8 + [False] * 2
    assert [c.refresh for c in plan] == [True, False] * 4 + [False, False]
    # A refresh runs (and costs) every block.
    assert blocks_per_call(r2, SamplerConfig("ddim", 10)) == [12, 5, 12, 7, 12, 9, 12, 10, 12, 12]
    # r = 3 over four calls in one interval (DDIM-20: 950, 900, 850, 800): calls 0 and 3 refresh.
    r3 = preset("D4", "dit", 12).with_reuse(3)
    assert [c.refresh for c in call_plan(r3, [950, 900, 850, 800])] == [True, False, False, True]
    # Leaving an interval and entering it again starts with an empty cache: a refresh.
    assert [c.refresh for c in call_plan(r2, [900, 700, 900, 850])] == [True, True, True, False]
    # Skip schedules never refresh: their counts are the plain lookups.
    d4 = preset("D4", "dit", 12)
    assert [c.refresh or c.reuse for c in call_plan(d4, SamplerConfig("ddim", 10))] == [False] * 10
    assert blocks_per_call(d4, SamplerConfig("ddim", 10)) == [5, 5, 7, 7, 9, 9, 10, 10, 12, 12]


def test_cost_model_counts_a_refresh_as_a_full_call() -> None:
    r2 = preset("D4", "dit", DEPTH).with_reuse(2)  # DEPTH 4: 4, 3, 3, 2, 2
    cost = CostModel(arch="dit", depth=DEPTH, fixed=3.0, block=2.0, dropped=0.5, batch_size=1,
                     device="cpu", components={})
    # DDIM-10 by hand: per fifth (noise first) a refresh (all 4 blocks: 3 + 4 * 2) then a reuse
    # call at the count (3 + k * 2 + (4 - k) * 0.5), k = 2, 2, 3, 3; the last fifth is full twice.
    hand = sum(11 + 3 + k * 2 + (4 - k) * 0.5 for k in (2, 2, 3, 3)) + 2 * 11
    assert cost.latency(r2, SamplerConfig("ddim", 10)) == pytest.approx(hand)


def test_sampling_runs_the_counted_blocks(dit) -> None:
    schedule = preset("D4", "dit", DEPTH)
    config = SamplerConfig("ddpm", 5)
    out = sample(dit, sampler=config, schedule=schedule, n=2, seed=0)
    assert out.block_evals == sum(blocks_per_call(schedule, config))
    assert out.model_calls == 5


# ------------------------------------------------------------------------------ accelerations
def dit_block_flops_by_hand(n: int = 1) -> int:
    """One DiT block on n samples: 2 FLOPs per multiply-add of every matmul."""
    ada_ln = 2 * n * D * 6 * D
    qkv = 2 * n * TOKENS * D * 3 * D
    attention = 2 * n * TOKENS * TOKENS * D * 2
    proj = 2 * n * TOKENS * D * D
    mlp = 2 * 2 * n * TOKENS * D * 4 * D
    return ada_ln + qkv + attention + proj + mlp


def test_block_and_flop_accelerations_by_hand(dit) -> None:
    schedule = ExitSchedule("dit", DEPTH, (0.0, 0.5, 1.0), (4, 1), "half")
    calls = [999.0, 600.0, 400.0, 0.0]  # two calls with 1 block, two with all 4
    # Blocks: 2 * 1 + 2 * 4 = 10 of 16 block evaluations.
    assert block_acceleration(schedule, calls) == pytest.approx(1 - 10 / 16)
    # FLOPs: every call also runs the embeddings and the final layer (`fixed`), so the share of
    # FLOPs skipped is smaller than the share of blocks.
    block = dit_block_flops_by_hand()
    fixed = model_flops(dit, 1) - block
    assert model_flops(dit, 2) - model_flops(dit, 1) == block
    full = fixed + DEPTH * block
    expected = 1 - (2 * (fixed + block) + 2 * full) / (4 * full)
    assert flop_acceleration(dit, schedule, calls) == pytest.approx(expected, rel=1e-12)
    assert 0 < expected < 1 - 10 / 16
    # The cost model's prediction: the same arithmetic over seconds.
    cost = CostModel(arch="dit", depth=DEPTH, fixed=3.0, block=2.0, dropped=0.0, batch_size=1,
                     device="cpu", components={})
    assert cost.latency(schedule, calls) == 2 * (3 + 2) + 2 * (3 + 8)
    assert cost.acceleration(schedule, calls) == pytest.approx(1 - 32 / 44)


# ------------------------------------------------------------------------------ one path
def test_measurement_equals_sampling_and_fid_done_by_hand(dit) -> None:
    from ase_search.metrics.fid import compute_fid

    schedule = preset("D4", "dit", DEPTH)
    config = SamplerConfig("ddim", 2)
    cost = CostModel(arch="dit", depth=DEPTH, fixed=3.0, block=2.0, dropped=0.0, batch_size=4,
                     device="cpu", components={})
    m = measure_schedule(dit, schedule, sampler=config, n=8, seeds=(3,), cost_model=cost,
                         batch_size=4, keep_images=5)
    out = sample(dit, sampler=config, schedule=schedule, n=8, batch_size=4, seed=3)
    assert m.metrics == (compute_fid(fid_images(out.images, None), reference="mnist"),)
    assert torch.equal(m.images, out.images[:5])
    # D4 on 4 blocks is (4, 3, 3, 2, 2); DDIM-2 calls at t = 0.5 and t = 0.
    assert (m.block_evals, m.model_calls) == (3 + 4, 2)
    assert m.block_acceleration == block_acceleration(schedule, config) == 1 - 7 / 8
    assert m.latency == (3 + 3 * 2) + (3 + 4 * 2)
    assert m.predicted_acceleration == pytest.approx(1 - 20 / 22)
    assert set(m.seconds) == {"sampling", "fid"}


def test_sample_quality_equals_sampling_classifier_and_fid_done_by_hand(dit) -> None:
    from ase_search.metrics.extractor import classifier_confidence
    from ase_search.metrics.fid import compute_fid
    from ase_search.images import to_uint8

    config = SamplerConfig("ddim", 2)
    q = measure_sample_quality(dit, sampler=config, seeds=(0, 2), n=12, batch_size=5,
                               keep_images=3)
    fids, shares = [], []
    for seed in (0, 2):  # every block run, no schedule at all
        out = sample(dit, sampler=config, n=12, batch_size=5, seed=seed)
        top1 = classifier_confidence(out.images).max(dim=1).values
        fids.append(compute_fid(to_uint8(out.images), reference="mnist")["fid"])
        shares.append(float((top1 >= 0.9).float().mean()))
        if seed == 0:
            assert torch.equal(q.images, out.images[:3])
    assert (q.fids, q.confidents, q.seeds, q.n) == (tuple(fids), tuple(shares), (0, 2), 12)
    assert q.fid == sum(fids) / 2 and q.confident == sum(shares) / 2
    with pytest.raises(ValueError, match="threshold"):
        measure_sample_quality(dit, sampler=config, seeds=(0,), n=12, threshold=1.5)


def test_evaluate_and_a_search_trial_measure_alike(dit, tmp_path) -> None:
    """The CLI's evaluate and a search trial share one path: the same schedule and seed give the
    same FID, predicted latency and block counts."""
    from ase_search.evaluate import evaluate
    from ase_search.search import SearchConfig, TrialContext, evaluate_schedule

    weights = save_checkpoint(tmp_path / "tiny.pt", dit)
    schedule = preset("D4", "dit", DEPTH)
    cost = CostModel(arch="dit", depth=DEPTH, fixed=3.0, block=2.0, dropped=0.0, batch_size=8,
                     device="cpu", components={})
    config = SearchConfig(steps=2, n_samples=8, batch_size=8, grid=0, seed=1,
                          finetune="none")
    ctx = TrialContext(config=config.__dict__.copy(), weights=str(weights), space={},
                       cost_model=cost.to_dict(), cpus=1)
    trial = evaluate_schedule(schedule, ctx)

    from ase_search.models import load_checkpoint

    model, _ = load_checkpoint(weights, ema=True)
    result = evaluate(model, schedule, sampler=SamplerConfig(config.sampler, config.steps),
                      n=8, seeds=(1,), batch_size=8, cost_model=cost)
    assert trial["fid"] == result.metrics[0]["fid"]
    assert trial["latency"] == cost.latency(schedule, SamplerConfig(config.sampler, config.steps))
    assert trial["acceleration"] == result.predicted_acceleration
    assert trial["block_acceleration"] == result.block_acceleration
    assert trial["block_evals"] == result.block_evals
    assert Path(weights).is_file()


# ###################################################################### measured latency
def test_timed_run_spread_by_hand() -> None:
    from ase_search.metrics.latency import TimedRun

    run = TimedRun.of([1.0, 1.2, 0.9, 1.1, 1.0])
    # sorted 0.9 1.0 1.0 1.1 1.2: median 1.0; inclusive quartiles 1.0 and 1.1
    assert run.seconds == 1.0 and run.error == pytest.approx(0.05)
    assert TimedRun.of([2.0, 4.0]).error == pytest.approx((4.0 - 2.0) / 2 / 3.0)


def test_time_sampling_runs_times_every_configuration_whole(dit) -> None:
    """Every configuration runs its whole sampler once per round plus a warm-up round: counted
    model calls and blocks, not times (times belong in benchmarks)."""
    from ase_search.measure import time_sampling_runs

    calls: list[int | None] = []
    original = dit.forward

    def counting(*args, n_blocks=None, **kwargs):
        calls.append(n_blocks)
        return original(*args, n_blocks=n_blocks, **kwargs)

    dit.forward = counting
    try:
        d4 = preset("D4", "dit", DEPTH)
        configs = {"full-3": (None, SamplerConfig(name="ddim", steps=3)),
                   "d4-5": (d4, SamplerConfig(name="ddim", steps=5))}
        runs = time_sampling_runs(dit, configs, batch_size=2, rounds=2)
    finally:
        del dit.forward
    assert set(runs) == {"full-3", "d4-5"}
    assert all(len(r.rounds) == 2 and r.seconds > 0 for r in runs.values())
    assert len(calls) == 3 * (3 + 5)  # (warm-up + 2 rounds) x (3 + 5 calls)
    d4_blocks = blocks_per_call(d4, SamplerConfig(name="ddim", steps=5))
    assert sum(1 for c in calls if c is not None and c < DEPTH) == 3 * sum(
        1 for k in d4_blocks if k < DEPTH)
