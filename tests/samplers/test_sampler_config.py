"""SamplerConfig validation, model_times, and the diffusers schedulers' configuration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ase_search.diffusion import GaussianDiffusion
from ase_search.samplers import (
    EM_EPS,
    SAMPLER_NAMES,
    SAMPLERS,
    DiffusersSampler,
    SamplerConfig,
    build_scheduler,
)

# Every registered sampler whose steps a diffusers scheduler takes.
DIFFUSERS_SAMPLERS = [n for n, s in SAMPLERS.items() if isinstance(s, DiffusersSampler)]


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "heun", "steps": 10}, "name"),
        ({"name": "DDIM", "steps": 10}, "name"),
        ({"name": "ddim", "steps": 0}, "steps"),
        ({"name": "ddim", "steps": 2.5}, "steps"),
        ({"name": "ddim", "steps": True}, "steps"),
        ({"name": "ddim", "steps": "50"}, "steps"),
        ({"name": "ddim", "steps": 10, "eta": -0.1}, "eta"),
        ({"name": "ddim", "steps": 10, "eta": float("nan")}, "eta"),
        ({"name": "ddpm", "steps": 10, "eta": 0.5}, "eta"),
        ({"name": "ddim", "steps": 10, "cfg_scale": -1.0}, "cfg_scale"),
        ({"name": "ddim", "steps": 10, "cfg_scale": float("inf")}, "cfg_scale"),
        ({"name": "ddim", "steps": 10, "cfg_scale": "4"}, "cfg_scale"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplerConfig(**kwargs)


def test_config_is_frozen_and_normalised():
    config = SamplerConfig("ddim", np.int64(20), eta=1, cfg_scale=4)
    assert config.steps == 20 and type(config.steps) is int
    assert config.eta == 1.0 and type(config.eta) is float
    assert config.guided and not SamplerConfig("ddim", 20).guided
    with pytest.raises(AttributeError):
        config.steps = 5  # type: ignore[misc]


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_dict_round_trip(name):
    config = SamplerConfig(name, 17, cfg_scale=1.5)
    assert SamplerConfig.from_dict(config.to_dict()) == config
    assert config.to_dict() == {"name": name, "steps": 17, "eta": 0.0, "cfg_scale": 1.5}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"name": "ddim", "steps": 5, "clip": True}, "clip"),
        ({"name": "ddim"}, "steps"),
        (["ddim", 5], "dict"),
    ],
)
def test_from_dict_rejects_bad_data(data, match):
    with pytest.raises(ValueError, match=match):
        SamplerConfig.from_dict(data)


# ------------------------------------------------------------------------------ model_times
def adm_space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """Improved DDPM's ``space_timesteps(T, [count])`` respacing (what DiT's ``"250"`` means)."""
    frac_stride = (num_timesteps - 1) / (count - 1) if count > 1 else 1
    cur, taken = 0.0, []
    for _ in range(count):
        taken.append(round(cur))
        cur += frac_stride
    return taken


@pytest.mark.parametrize("steps", [2, 25, 100, 250, 1000])
def test_ddpm_times_are_dits_respacing(steps):
    times = SamplerConfig("ddpm", steps).model_times(1000)
    assert times == [float(s) for s in sorted(adm_space_timesteps(1000, steps), reverse=True)]


@pytest.mark.parametrize("steps", [10, 50, 100, 200])
def test_ddim_times_are_adms_ddim_spacing(steps):
    times = SamplerConfig("ddim", steps).model_times(1000)
    assert times == [float(s) for s in reversed(range(0, 1000, 1000 // steps))]


def test_euler_maruyama_times():
    times = SamplerConfig("euler-maruyama", 1000).model_times(1000)
    assert times[0] == 999.0
    assert times[-1] == pytest.approx(EM_EPS * 999)
    assert np.allclose(np.diff(times), -(1 - EM_EPS) * 999 / 999)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("steps", [1, 7, 20, 50])
def test_times_are_decreasing_in_range_and_one_per_step(name, steps):
    times = SamplerConfig(name, steps).model_times(1000)
    assert len(times) == steps
    assert all(0 <= s < 1000 for s in times)
    assert all(a > b for a, b in zip(times, times[1:]))


@pytest.mark.parametrize(("name", "steps"), [("ddpm", 1001), ("ddim", 1001), ("dpm-solver", 1000)])
def test_too_many_steps_for_t_is_rejected(name, steps):
    with pytest.raises(ValueError, match="steps"):
        SamplerConfig(name, steps).model_times(1000)


@pytest.mark.parametrize("name", DIFFUSERS_SAMPLERS)
@pytest.mark.parametrize("steps", [1, 3, 20, 25, 50, 99, 250])
@pytest.mark.parametrize("num_timesteps", [1000, 400])
def test_model_times_equal_the_diffusers_scheduler_timesteps(name, steps, num_timesteps):
    config = SamplerConfig(name, steps)
    scheduler = build_scheduler(config, GaussianDiffusion(num_timesteps=num_timesteps))
    scheduler.set_timesteps(steps)
    assert [float(s) for s in scheduler.timesteps.tolist()] == config.model_times(num_timesteps)


# ------------------------------------------------------------------- diffusers schedulers
@pytest.mark.parametrize("name", DIFFUSERS_SAMPLERS)
@pytest.mark.parametrize("num_timesteps", [1000, 250])
def test_scheduler_betas_equal_the_diffusion_betas(name, num_timesteps):
    diffusion = GaussianDiffusion(num_timesteps=num_timesteps)
    scheduler = build_scheduler(SamplerConfig(name, 10), diffusion)
    # An independent construction of the DDPM/DiT linear schedule (in float64).
    scale = 1000 / num_timesteps
    expected = np.linspace(scale * 1e-4, scale * 0.02, num_timesteps)
    assert scheduler.config.num_train_timesteps == num_timesteps
    assert torch.equal(scheduler.betas, torch.tensor(expected, dtype=torch.float32))
    assert torch.equal(scheduler.betas, diffusion.betas.float())
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), diffusion.alphas_cumprod,
                               rtol=2e-5, atol=0)


def test_scheduler_settings():
    diffusion = GaussianDiffusion()
    ddpm = build_scheduler(SamplerConfig("ddpm", 10), diffusion)
    assert ddpm.config.variance_type == "fixed_small" and ddpm.config.clip_sample
    assert ddpm.config.clip_sample_range == 1.0 and not ddpm.config.thresholding
    learned = build_scheduler(SamplerConfig("ddpm", 10), diffusion, learn_sigma=True)
    assert learned.config.variance_type == "learned_range"
    ddim = build_scheduler(SamplerConfig("ddim", 10), diffusion)
    assert ddim.config.clip_sample and ddim.config.set_alpha_to_one
    dpm = build_scheduler(SamplerConfig("dpm-solver", 10), diffusion)
    assert dpm.config.algorithm_type == "dpmsolver++" and dpm.config.solver_order == 2
    assert not dpm.config.thresholding
    for scheduler in (ddpm, ddim, dpm):
        assert scheduler.config.prediction_type == "epsilon"
    with pytest.raises(ValueError, match="euler-maruyama"):
        build_scheduler(SamplerConfig("euler-maruyama", 10), diffusion)


def test_dpm_solver_sigmas_are_the_diffusion_noise_levels():
    diffusion = GaussianDiffusion()
    config = SamplerConfig("dpm-solver", 20)
    scheduler = build_scheduler(config, diffusion)
    scheduler.set_timesteps(20)
    acp = diffusion.alphas_cumprod
    expected = [math.sqrt((1 - acp[int(s)]) / acp[int(s)]) for s in config.model_times()] + [0.0]
    torch.testing.assert_close(scheduler.sigmas.double(), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-5, atol=0)
