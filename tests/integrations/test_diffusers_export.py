"""The DiT testbed in diffusers form: conversion, a scheduler loop with a schedule, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ase_search.integrations.diffusers import (
    apply_exit_schedule,
    export_dit,
    load_scheduler,
    load_transformer,
    remove_exit_schedule,
    sample_diffusers,
)
from ase_search.schedule import ExitSchedule

pytestmark = pytest.mark.usefixtures("one_thread")
ASE = str(Path(sys.executable).with_name("ase-search"))
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ASE_SEARCH_THREADS": "1",
       "PATH": "/usr/bin:/bin"}


def _random_dit():
    from ase_search.models import create_model

    torch.manual_seed(0)
    model = create_model("DiT-test")
    with torch.no_grad():  # adaLN-Zero starts every block as the identity: make them all count
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model.eval()


def _inputs(model, n=6):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, model.in_channels, model.input_size, model.input_size, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    y = torch.randint(0, model.num_labels + 1, (n,), generator=g)  # the null label included
    return x, t, y


def test_converted_testbed_equals_native(tmp_path):
    from diffusers import DDIMScheduler, DiTTransformer2DModel

    from ase_search.testbed import load_model

    native = load_model("dit")
    export_dit(native, tmp_path / "dit", source="testbed")
    converted = load_transformer(tmp_path / "dit")
    x, t, y = _inputs(native)
    with torch.no_grad():
        want = native(x, t, y)
        got = converted(x, timestep=t, class_labels=y, return_dict=False)[0]
        # A plain from_pretrained keeps diffusers' own timestep frequencies: visibly different.
        plain = DiTTransformer2DModel.from_pretrained(tmp_path / "dit", low_cpu_mem_usage=False)
        stock = plain.eval()(x, timestep=t, class_labels=y, return_dict=False)[0]
    assert got.shape == want.shape == (6, 2, 28, 28)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (stock - want).abs().max() > 1e-2
    scheduler = DDIMScheduler.from_pretrained(tmp_path / "dit")
    assert scheduler.config.num_train_timesteps == 1000
    assert scheduler.config.beta_schedule == "linear"
    assert (scheduler.config.beta_start, scheduler.config.beta_end) == (1e-4, 0.02)


def test_scheduler_loop_with_a_schedule_matches_the_native_sampler(tmp_path):
    """A diffusers DDIM loop (CFG batches) through the hooks == ase-search's own DDIM sampler."""
    from ase_search.samplers import SamplerConfig, sample

    model = _random_dit()
    export_dit(model, tmp_path / "tiny", source="test")
    transformer, scheduler = load_transformer(tmp_path / "tiny"), load_scheduler(tmp_path / "tiny")
    schedule = ExitSchedule("dit", 4, (0.0, 0.5, 1.0), (4, 1), "half")
    state = apply_exit_schedule(transformer, schedule)
    try:
        out = sample_diffusers(transformer, scheduler, n=5, steps=4, seed=7, cfg_scale=2.0,
                               batch_size=3)
    finally:
        remove_exit_schedule(transformer)
    # DDIM-4, leading spacing: timesteps 750, 500, 250, 0 -> t >= 0.5 runs 1 block, below 4;
    # two batches (3 + 2 samples), each call one CFG batch.
    assert [int(t) for t in scheduler.timesteps] == [750, 500, 250, 0]
    assert [c.evaluated for c in state.calls] == [1, 1, 4, 4] * 2
    assert out.block_evals == 10 and out.model_calls == 4
    native = sample(model, sampler=SamplerConfig(name="ddim", steps=4, cfg_scale=2.0),
                    schedule=schedule, n=5, seed=7, batch_size=3)
    assert torch.equal(out.labels, native.labels)
    assert native.block_evals == out.block_evals
    torch.testing.assert_close(out.images, native.images, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["ddim", "dpm-solver"])
def test_explicit_timesteps_through_diffusers_schedulers_match_the_native_sampler(tmp_path,
                                                                                 name):
    """Searched timesteps on the diffusers path (DDIM as diffusers' DPM-Solver++ at order 1,
    which is DDIM's update) == ase-search's own sampler at those timesteps, through the hooks."""
    from ase_search.integrations.diffusers import set_timesteps
    from ase_search.samplers import SamplerConfig, sample

    model = _random_dit()
    export_dit(model, tmp_path / "tiny", source="test")
    transformer = load_transformer(tmp_path / "tiny")
    scheduler = load_scheduler(tmp_path / "tiny", name, explicit=True)
    timesteps = (903, 650, 420, 250)  # uneven, and ending far from t = 0, as searched ones do
    schedule = ExitSchedule("dit", 4, (0.0, 0.5, 1.0), (4, 2), "half")
    apply_exit_schedule(transformer, schedule)
    try:
        out = sample_diffusers(transformer, scheduler, n=5, steps=4, seed=7, cfg_scale=2.0,
                               batch_size=3, timesteps=timesteps)
    finally:
        remove_exit_schedule(transformer)
    assert [int(t) for t in scheduler.timesteps] == list(timesteps)
    native = sample(model, sampler=SamplerConfig(name=name, steps=4, cfg_scale=2.0,
                                                 timesteps=timesteps),
                    schedule=schedule, n=5, seed=7, batch_size=3)
    assert native.block_evals == out.block_evals == 4 + 4 + 2 + 2
    torch.testing.assert_close(out.images, native.images, rtol=0, atol=1e-4)
    # diffusers' own DDIM scheduler cannot take them: one clear error, not a wrong update
    with pytest.raises(ValueError, match="DDIMScheduler takes no explicit timesteps"):
        set_timesteps(load_scheduler(tmp_path / "tiny", "ddim"), 4, timesteps)


def test_export_refuses_a_non_dit(tmp_path):
    from ase_search.models import create_model

    with pytest.raises(ValueError, match="only DiT"):
        export_dit(create_model("U-ViT-T"), tmp_path / "u", source="test")
    assert not (tmp_path / "u").exists()


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "dit-t"
    run = subprocess.run([ASE, "export-diffusers", "--arch", "dit", "-o", str(out)],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr
    assert {"config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json",
            "ase_search.json"} <= {p.name for p in out.iterdir()}
    return out


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ASE, *args], capture_output=True, text=True, env=ENV, timeout=300)


def _one_error_line(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, run.stderr
    return lines[0]


def test_export_into_a_used_folder_is_refused(exported):
    before = sorted(p.name for p in exported.iterdir())
    line = _one_error_line(_cli("export-diffusers", "-o", str(exported)))
    assert "not empty" in line
    assert sorted(p.name for p in exported.iterdir()) == before


def test_depth_mismatch_is_one_line(exported, tmp_path):
    schedule = tmp_path / "deep.json"
    ExitSchedule("dit", 28, (0.0, 0.5, 1.0), (28, 14), "deep").to_json(schedule)
    line = _one_error_line(_cli("sample", "--diffusers", str(exported), "--schedule",
                                str(schedule), "--n", "2", "-o", str(tmp_path / "g.png")))
    assert "28" in line and "12" in line
    assert not (tmp_path / "g.png").exists()


def test_eval_self_reference(exported, tmp_path):
    """Full model against itself: FID 0 and no paired distance; D4 skips what it should."""
    out = {}
    for name in ("full", "D4"):
        run = _cli("eval", "--diffusers", str(exported), "--schedule", name, "--fid-data", "self",
                   "--n", "16", "--steps", "2", "--json", str(tmp_path / f"{name}.json"),
                   "--grid", str(tmp_path / f"{name}.png"))
        assert run.returncode == 0, run.stderr
        out[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert out["full"]["metrics"][0]["paired_rmse"] == 0.0
    assert out["full"]["metrics"][0]["fid"] == pytest.approx(0.0, abs=1e-3)
    # DDIM-2, leading: timesteps 500 and 0. D4 at depth 12: [0.4, 0.6) runs 9 blocks, [0, 0.2) 12.
    assert out["D4"]["block_evals"] == 9 + 12 and out["D4"]["full_block_evals"] == 24
    assert out["D4"]["metrics"][0]["paired_rmse"] > 0.0


def test_sample_with_diffusers(exported, tmp_path):
    run = _cli("sample", "--diffusers", str(exported), "--schedule", "D4", "--n", "4",
               "--steps", "2", "--cfg-scale", "1.5", "-o", str(tmp_path / "g.png"))
    assert run.returncode == 0, run.stderr
    assert "21/24 block evaluations" in run.stdout
    assert (tmp_path / "g.png").is_file()


def test_sample_and_eval_with_diffusers_take_a_timesteps_file(exported, tmp_path):
    from ase_search.timesteps import SearchedTimesteps, save_timesteps

    found = SearchedTimesteps("ddim", (800, 450, 300), 0.0, 0.0, 100, (64, 10000))
    path = save_timesteps(tmp_path / "ts.json", found, arch="dit")
    run = _cli("sample", "--diffusers", str(exported), "--timesteps", str(path), "--n", "4",
               "-o", str(tmp_path / "g.png"))
    assert run.returncode == 0, run.stderr
    assert "36/36 block evaluations" in run.stdout  # three calls, the folder's 12 blocks
    run = _cli("eval", "--diffusers", str(exported), "--timesteps", str(path), "--fid-data",
               "self", "--n", "8", "--json", str(tmp_path / "e.json"),
               "--grid", str(tmp_path / "e.png"))
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "e.json").read_text())["timesteps"] == [800, 450, 300]


@pytest.mark.parametrize("lever", ["reuse", "forecast1", "forecast2", "reuse-modules",
                                   "forecast2-modules"])
def test_block_reuse_matches_the_native_sampler(tmp_path, lever):
    """Block reuse and forecast through the hooks == ase-search's own, call by call and sample
    by sample (two implementations of one plan: the hooks see one call at a time)."""
    from ase_search.callplan import blocks_per_call
    from ase_search.samplers import SamplerConfig, sample

    model = _random_dit()
    export_dit(model, tmp_path / "tiny", source="test")
    transformer, scheduler = load_transformer(tmp_path / "tiny"), load_scheduler(tmp_path / "tiny")
    half = ExitSchedule("dit", 4, (0.0, 0.3, 1.0), (4, 1), "half")
    schedule = (half.with_reuse(2) if lever.startswith("reuse") else
                half.with_forecast(3, order=int(lever[8]), warmup=2))
    if lever.endswith("-modules"):
        from dataclasses import replace

        schedule = replace(schedule, granularity="modules")
    state = apply_exit_schedule(transformer, schedule)
    try:
        out = sample_diffusers(transformer, scheduler, n=5, steps=6, seed=3, batch_size=3)
    finally:
        remove_exit_schedule(transformer)
    config = SamplerConfig(name="ddim", steps=6)
    expected = blocks_per_call(schedule, config)
    assert [c.evaluated for c in state.calls] == expected * 2  # two batches, each a new run
    native = sample(model, sampler=config, schedule=schedule, n=5, seed=3, batch_size=3)
    assert native.block_evals == out.block_evals == sum(expected)
    torch.testing.assert_close(out.images, native.images, rtol=0, atol=1e-4)


def test_timed_diffusers_runs_run_every_configuration_whole_through_the_hooks(tmp_path,
                                                                            monkeypatch):
    """Each configuration runs its whole scheduler loop once per round plus a warm-up round,
    with its schedule's hooks on and then off again: counted blocks, not times."""
    import ase_search.integrations.diffusers as hooks
    from ase_search.callplan import blocks_per_call
    from ase_search.samplers import SamplerConfig

    export_dit(_random_dit(), tmp_path / "tiny", source="test")
    transformer = load_transformer(tmp_path / "tiny")
    monkeypatch.setattr(hooks, "load_transformer", lambda path: transformer)
    evaluated = []
    for block in transformer.transformer_blocks:  # its attention runs only when the block does
        block.attn1.register_forward_hook(lambda *a: evaluated.append(1))
    reuse = ExitSchedule("dit", 4, (0.0, 0.3, 1.0), (4, 1)).with_forecast(2, warmup=1)
    configs = {"full-3": (None, SamplerConfig(name="ddim", steps=3)),
               "forecast-5": (reuse, SamplerConfig(name="dpm-solver", steps=5))}
    runs = hooks.time_diffusers_runs(tmp_path / "tiny", configs, batch_size=2, rounds=2)
    assert set(runs) == set(configs) and all(len(r.rounds) == 2 for r in runs.values())
    timesteps = hooks.scheduler_timesteps(load_scheduler(tmp_path / "tiny", "dpm-solver"), 5)
    per_run = 4 * 3 + sum(blocks_per_call(reuse, timesteps))
    assert len(evaluated) == 3 * per_run  # warm-up + 2 rounds
    assert hooks.exit_schedule_state(transformer) is None  # the hooks are gone again


@pytest.mark.parametrize("steps", [6, 9])
def test_per_module_forecast_is_diffusers_taylorseer_at_its_settings(tmp_path, steps):
    """The peer's own implementation as the reference: diffusers' TaylorSeer hook (order 1,
    float32 factors) on the attention and MLP of blocks 1-3 equals a one-interval schedule that
    forecasts the modules of the blocks past the first at order 1. Its refresh pattern with two
    warm-up steps and interval 2 (steps 0, 1, 3, 5, ...) is this format's warm-up 1, period 2;
    DDIM's uniform steps make its step-index differences this format's differences in t."""
    from diffusers import hooks as H

    export_dit(_random_dit(), tmp_path / "tiny", source="test")
    scheduler = load_scheduler(tmp_path / "tiny")
    ours = load_transformer(tmp_path / "tiny")
    schedule = ExitSchedule("dit", 4, (0.0, 1.0), (1,), modes=("forecast",), periods=(2,),
                            orders=(1,), warmup=1, granularity="modules")
    apply_exit_schedule(ours, schedule)
    got = sample_diffusers(ours, scheduler, n=3, steps=steps, seed=5, cfg_scale=2.0)
    theirs = load_transformer(tmp_path / "tiny")
    H.apply_taylorseer_cache(theirs, H.TaylorSeerCacheConfig(
        cache_interval=2, disable_cache_before_step=2, max_order=1,
        taylor_factors_dtype=torch.float32,
        cache_identifiers=[r"^transformer_blocks\.[1-3]\.(attn1|ff)$"]))
    want = sample_diffusers(theirs, scheduler, n=3, steps=steps, seed=5, cfg_scale=2.0,
                            cache_context=True)
    torch.testing.assert_close(got.images, want.images, rtol=1e-4, atol=1e-4)
    plain = sample_diffusers(load_transformer(tmp_path / "tiny"), scheduler, n=3, steps=steps,
                             seed=5, cfg_scale=2.0)
    assert not torch.allclose(got.images, plain.images, atol=1e-3)  # the cache did something


@pytest.mark.parametrize("block_range", ["front", "alternate"])
def test_a_block_range_is_diffusers_taylorseer_on_those_blocks_natively_too(tmp_path,
                                                                           block_range):
    """Front and alternate block ranges (Delta-DiT, L2C-like) against the peer's own
    implementation: diffusers' TaylorSeer hook on exactly the blocks the range caches equals the
    schedule through the hooks, and the native model runs the same samples."""
    from diffusers import hooks as H

    from ase_search.samplers import SamplerConfig, sample
    from ase_search.schedule import cached_blocks

    model = _random_dit()
    export_dit(model, tmp_path / "tiny", source="test")
    scheduler = load_scheduler(tmp_path / "tiny")
    schedule = ExitSchedule("dit", 4, (0.0, 1.0), (2,), modes=("forecast",), periods=(2,),
                            orders=(1,), warmup=1, granularity="modules", ranges=(block_range,))
    cached = cached_blocks(block_range, 2, 4)
    assert cached == {"front": (0, 1), "alternate": (1, 3)}[block_range]
    ours = load_transformer(tmp_path / "tiny")
    apply_exit_schedule(ours, schedule)
    got = sample_diffusers(ours, scheduler, n=3, steps=7, seed=5, cfg_scale=2.0)
    assert got.block_evals == 4 * 4 + 3 * 2  # refreshes at calls 0, 1, 3, 5; 2 blocks else
    theirs = load_transformer(tmp_path / "tiny")
    H.apply_taylorseer_cache(theirs, H.TaylorSeerCacheConfig(
        cache_interval=2, disable_cache_before_step=2, max_order=1,
        taylor_factors_dtype=torch.float32,
        cache_identifiers=[rf"^transformer_blocks\.[{''.join(map(str, cached))}]\.(attn1|ff)$"]))
    want = sample_diffusers(theirs, scheduler, n=3, steps=7, seed=5, cfg_scale=2.0,
                            cache_context=True)
    torch.testing.assert_close(got.images, want.images, rtol=1e-4, atol=1e-4)
    native = sample(model, sampler=SamplerConfig("ddim", 7, cfg_scale=2.0), schedule=schedule,
                    n=3, seed=5)
    torch.testing.assert_close(native.images, got.images, rtol=1e-4, atol=1e-4)
    assert native.block_evals == got.block_evals


def test_delta_dit_caches_the_rear_blocks_early_and_the_front_ones_late_natively_too(tmp_path):
    """The Delta-DiT preset through the hooks equals the native model, and differs from a
    schedule that caches the rear blocks throughout (the front range did something)."""
    from ase_search.samplers import SamplerConfig, sample
    from ase_search.schedule import preset

    model = _random_dit()
    export_dit(model, tmp_path / "tiny", source="test")
    delta = preset("delta-dit", "dit", 4)
    assert delta.ranges == ("front", "rear") and delta.blocks == (2, 2)
    ours = load_transformer(tmp_path / "tiny")
    apply_exit_schedule(ours, delta)
    got = sample_diffusers(ours, load_scheduler(tmp_path / "tiny"), n=3, steps=8, seed=2)
    native = sample(model, sampler=SamplerConfig("ddim", 8), schedule=delta, n=3, seed=2)
    torch.testing.assert_close(native.images, got.images, rtol=1e-4, atol=1e-4)
    rear = ExitSchedule("dit", 4, delta.boundaries, delta.blocks, modes=delta.modes,
                        periods=delta.periods, granularity="modules")
    other = sample(model, sampler=SamplerConfig("ddim", 8), schedule=rear, n=3, seed=2)
    assert not torch.allclose(native.images, other.images, atol=1e-3)
    assert native.block_evals == other.block_evals
