"""Block reuse through ``sample``: the sampler's cache against a model that caches by hand.

:class:`HandReuse` wraps a test-size model and runs the blocks itself, refreshing at call indices
written out by hand for the schedule below and keeping the residuals in a dict that it empties
at the start of every trajectory. ``sample`` gives it the skip schedule with the same counts, so
both runs share every sampler step and differ only in who keeps the cache.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ase_search.models import create_model
from ase_search.samplers import SamplerConfig, sample
from ase_search.schedule import ExitSchedule

pytestmark = pytest.mark.usefixtures("one_thread")

DDIM = SamplerConfig("ddim", 10)  # calls at 900, 800, ..., 0
# Counts over [0, .3), [.3, .7), [.7, 1]: three calls (900, 800, 700) at 1 block with r = 2, four
# (600 ... 300) at 2 blocks with r = 3, and three (200, 100, 0) skipping down to 3 blocks.
SKIP = ExitSchedule("dit", 4, (0.0, 0.3, 0.7, 1.0), (3, 2, 1))
# Refresh at the first call of each reuse interval, then every r-th: calls 0, 2 and 3, 6.
REFRESH = {0: True, 1: False, 2: True, 3: True, 4: False, 5: False, 6: True}


def reuse_schedule(arch: str, depth: int) -> ExitSchedule:
    return ExitSchedule(arch, depth, SKIP.boundaries, SKIP.blocks, "reuse",
                        modes=("skip", "reuse", "reuse"), periods=(1, 3, 2))


def tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


class HandReuse(nn.Module):
    """The ase-search model interface over ``model``, with block reuse written out by hand."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        for name in ("arch", "exit_depth", "in_channels", "input_size", "learn_sigma",
                     "num_labels", "null_class", "cfg_channels"):
            setattr(self, name, getattr(model, name))
        self.calls = 0

    def forward(self, x, t, y=None, n_blocks=None):
        call = self.calls % DDIM.steps
        self.calls += 1
        if call == 0:
            self.cache = {}  # a new trajectory: nothing carries over
        refresh = REFRESH.get(call)  # None: a skip interval's call
        return self.run(x, t, y, n_blocks, refresh, self.cache.__setitem__, self.cache.__getitem__)

    def run(self, x, t, y, n_blocks, refresh, keep, added):
        """The model by hand: a refresh runs every block and ``keep(key, residual)``s what the
        blocks past the count add; a reuse call (``refresh is False``) adds ``added(key)``."""
        if self.model.arch == "dit":
            h, c = self.model.embed(x, t, y)
            for i, block in enumerate(self.model.blocks):
                if i == n_blocks and refresh is not None:
                    after_count = h
                if i >= n_blocks and not refresh:
                    break
                h = block(h, c)
            if refresh:
                keep("past", h - after_count)
            elif refresh is False:
                h = h + added("past")
            return self.model.head(h, c)
        h, skips = self.model.encode(self.model.embed(x, t, y))
        for i, blk in enumerate(self.model.out_blocks):
            z = blk.skip_linear(torch.cat([h, skips.pop()], dim=-1))
            if i < n_blocks or refresh:
                h = blk.body(z)
                if refresh:
                    keep(i, h - z)
            else:
                h = z + added(i) if refresh is False else z
        return self.model.head(h)


@pytest.mark.parametrize(("name", "cfg_scale"),
                         [("DiT-test", 1.0), ("DiT-test", 3.0), ("U-ViT-test", 1.0),
                          ("U-ViT-test", 3.0)])
def test_sampling_with_reuse_equals_the_hand_written_cache(name: str, cfg_scale: float) -> None:
    model = tiny(name)
    config = SamplerConfig("ddim", DDIM.steps, cfg_scale=cfg_scale)
    schedule = reuse_schedule(model.arch, model.exit_depth)
    skip = ExitSchedule(model.arch, model.exit_depth, SKIP.boundaries, SKIP.blocks)
    # Three batches, the last one short: the cache must start empty in each.
    got = sample(model, sampler=config, schedule=schedule, n=5, batch_size=2, seed=3)
    want = sample(HandReuse(model), sampler=config, schedule=skip, n=5, batch_size=2, seed=3)
    torch.testing.assert_close(got.images, want.images, rtol=1e-5, atol=1e-5)
    # Reuse changed the samples: skipping the same blocks gives others.
    skipped = sample(model, sampler=config, schedule=skip, n=5, batch_size=2, seed=3)
    assert not torch.allclose(got.images, skipped.images, atol=1e-3)


def test_period_one_is_the_full_model() -> None:
    model = tiny("DiT-test")
    every = ExitSchedule("dit", 4, SKIP.boundaries, SKIP.blocks, modes=("reuse",) * 3,
                         periods=(1, 1, 1))
    out = sample(model, sampler=DDIM, schedule=every, n=3, seed=0)
    full = sample(model, sampler=DDIM, schedule=None, n=3, seed=0)
    assert torch.equal(out.images, full.images) and out.block_evals == full.block_evals


def test_skip_schedules_never_pass_a_cache() -> None:
    # A model that knows nothing of reuse still serves skip schedules, through the very calls
    # ase-search made before block reuse existed.
    model = tiny("DiT-test")

    class Plain(HandReuse):
        def forward(self, x, t, y=None, n_blocks=None):
            return self.model(x, t, y, n_blocks=n_blocks)

    for cfg_scale in (1.0, 3.0):
        config = SamplerConfig("ddim", DDIM.steps, cfg_scale=cfg_scale)
        got = sample(model, sampler=config, schedule=SKIP, n=3, seed=0)
        want = sample(Plain(model), sampler=config, schedule=SKIP, n=3, seed=0)
        assert torch.equal(got.images, want.images)


def test_no_leak_across_runs_and_seeds_and_no_batch_size_dependence() -> None:
    model = tiny("U-ViT-test")
    schedule = reuse_schedule("uvit", model.exit_depth)
    run = lambda seed, batch_size=8: sample(  # noqa: E731
        model, sampler=DDIM, schedule=schedule, n=6, batch_size=batch_size, seed=seed).images
    first0, then1, again0 = run(0), run(1), run(0)
    assert torch.equal(first0, again0)
    assert torch.equal(run(1), then1)  # seed 1 after seed 0 or alone: the same
    assert not torch.allclose(first0, then1)
    for batch_size in (1, 4):  # float32 matmuls round differently per batch shape, no more
        torch.testing.assert_close(run(0, batch_size), first0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["DiT-test", "U-ViT-test"])
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_block_evals_equal_the_blocks_that_ran(name: str, cfg_scale: float) -> None:
    model = tiny(name)
    rows = []
    hooks = [blk.mlp.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
             for blk in model.exit_blocks]  # one MLP pass per exitable block that runs
    try:
        n = 3
        out = sample(model, sampler=SamplerConfig("ddim", DDIM.steps, cfg_scale=cfg_scale),
                     schedule=reuse_schedule(model.arch, model.exit_depth), n=n, seed=0)
    finally:
        for h in hooks:
            h.remove()
    branches = 2 if cfg_scale != 1.0 else 1
    assert out.block_evals * n * branches == sum(rows)
    # By hand: refreshes (calls 0, 2, 3, 6) run all blocks; the others their count.
    depth = model.exit_depth
    counts = [1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    assert out.block_evals == sum(depth if i in (0, 2, 3, 6) else k for i, k in enumerate(counts))


# Forecast (issue #24): one forecasting interval over [0.3, 1] (DDIM-10 calls 0-6 at t = 0.9 ...
# 0.3) at 1 block, period 3 after two warm-up refreshes, then [0, 0.3) skipping down to 3 blocks.
# Refreshes: calls 0 and 1 (warm-up), 2 (j - 2 = 0) and 5; calls 3, 4 and 6 forecast.
FORECAST_REFRESH = {0: True, 1: True, 2: True, 3: False, 4: False, 5: True, 6: False}
FORECAST_SKIP = ExitSchedule("dit", 4, (0.0, 0.3, 1.0), (3, 1))


def lagrange(points: list[tuple[float, torch.Tensor]], t: float) -> torch.Tensor:
    """The interpolating polynomial through ``points`` at ``t``, in Lagrange's form (an
    independent second formula: ase-search uses Newton's)."""
    out = torch.zeros_like(points[0][1])
    for i, (ti, ri) in enumerate(points):
        weight = 1.0
        for j, (tj, _) in enumerate(points):
            if j != i:
                weight *= (t - tj) / (ti - tj)
        out = out + weight * ri
    return out


class HandForecast(HandReuse):
    """The model with the forecast written out by hand: residuals kept at the refreshes of
    :data:`FORECAST_REFRESH` and extrapolated through the last ``order + 1`` of them."""

    def __init__(self, model: nn.Module, order: int) -> None:
        super().__init__(model)
        self.order = order

    def forward(self, x, t, y=None, n_blocks=None):
        call = self.calls % DDIM.steps
        self.calls += 1
        if call == 0:
            self.kept = {}
        refresh = FORECAST_REFRESH.get(call)
        now = (900 - 100 * call) / 1000

        def keep(key, residual):
            self.kept.setdefault(key, []).append((now, residual))

        def added(key):
            return lagrange(self.kept[key][-(self.order + 1):], now)

        return self.run(x, t, y, n_blocks, refresh, keep, added)


@pytest.mark.parametrize("name", ["DiT-test", "U-ViT-test"])
@pytest.mark.parametrize("order", [1, 2])
def test_sampling_with_forecast_equals_the_hand_written_extrapolation(name: str,
                                                                     order: int) -> None:
    model = tiny(name)
    config = SamplerConfig("ddim", DDIM.steps, cfg_scale=3.0)
    skip = ExitSchedule(model.arch, model.exit_depth, FORECAST_SKIP.boundaries,
                        FORECAST_SKIP.blocks)
    schedule = ExitSchedule(model.arch, model.exit_depth, skip.boundaries, skip.blocks,
                            modes=("skip", "forecast"), periods=(1, 3), orders=(0, order),
                            warmup=2)
    got = sample(model, sampler=config, schedule=schedule, n=5, batch_size=2, seed=3)
    want = sample(HandForecast(model, order), sampler=config, schedule=skip, n=5, batch_size=2,
                  seed=3)
    torch.testing.assert_close(got.images, want.images, rtol=1e-4, atol=1e-4)
    # forecasting changed the samples: reusing the last refresh as it is gives others
    reused = ExitSchedule(model.arch, model.exit_depth, skip.boundaries, skip.blocks,
                          modes=("skip", "reuse"), periods=(1, 3), warmup=2)
    plain = sample(model, sampler=config, schedule=reused, n=5, batch_size=2, seed=3)
    assert not torch.allclose(got.images, plain.images, atol=1e-3)


@pytest.mark.parametrize(("granularity", "ranges"), [
    ("blocks", ()), ("modules", ()), ("modules", ("front", "alternate"))])
@pytest.mark.parametrize("order", [1, 2])
def test_forecast_at_full_depth_or_period_one_is_the_full_model_bit_for_bit(
        order: int, granularity: str, ranges: tuple[str, ...]) -> None:
    model = tiny("DiT-test")
    full = sample(model, sampler=DDIM, schedule=None, n=3, seed=0)
    for blocks in ((4, 4), (1, 2)):  # full depth; and exits that every call refreshes
        every = ExitSchedule("dit", 4, (0.0, 0.5, 1.0), blocks, modes=("forecast",) * 2,
                             periods=(1, 1), orders=(order, order), warmup=1,
                             granularity=granularity, ranges=ranges)
        out = sample(model, sampler=DDIM, schedule=every, n=3, seed=0)
        assert torch.equal(out.images, full.images) and out.block_evals == full.block_evals
