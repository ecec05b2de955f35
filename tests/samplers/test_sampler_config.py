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
    TIMESTEP_SPACINGS,
    DiffusersSampler,
    SamplerConfig,
    build_scheduler,
)

# Every registered sampler whose steps a diffusers scheduler takes.
DIFFUSERS_SAMPLERS = [n for n, s in SAMPLERS.items() if isinstance(s, DiffusersSampler)]
# Every (sampler, explicit timestep spacing) the registry offers.
SPACED = [(n, sp) for n, s in SAMPLERS.items() for sp in s.spacings]


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
        ({"name": "ddim", "steps": 10, "timestep_spacing": "trailing"}, "timestep_spacing"),
        ({"name": "ddim", "steps": 10, "timestep_spacing": "Linspace"}, "timestep_spacing"),
        ({"name": "ddim", "steps": 10, "timestep_spacing": 1}, "timestep_spacing"),
        ({"name": "ddim", "steps": 10, "timestep_spacing": ""}, "timestep_spacing"),
        ({"name": "dpm-solver", "steps": 10, "timestep_spacing": "leading"}, "timestep_spacing"),
        ({"name": "euler-maruyama", "steps": 10, "timestep_spacing": "linspace"},
         "timestep_spacing"),
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


@pytest.mark.parametrize(("name", "spacing"), SPACED)
def test_dict_round_trip_with_a_spacing(name, spacing):
    config = SamplerConfig(name, 9, timestep_spacing=spacing)
    assert config.to_dict()["timestep_spacing"] == spacing
    assert SamplerConfig.from_dict(config.to_dict()) == config


def test_unset_spacing_keeps_the_old_json_and_the_old_config():
    old = {"name": "ddim", "steps": 20, "eta": 0.0, "cfg_scale": 1.0}  # written before the field
    config = SamplerConfig.from_dict(old)
    assert config == SamplerConfig("ddim", 20) and hash(config) == hash(SamplerConfig("ddim", 20))
    assert config.timestep_spacing is None and config.to_dict() == old
    # An explicit spacing is a different config, even when it is the default one.
    assert SamplerConfig("ddim", 20, timestep_spacing="leading") != config


def test_each_sampler_resolves_its_default_spacing():
    assert TIMESTEP_SPACINGS == ("leading", "linspace")
    defaults = {name: SamplerConfig(name, 5).spacing for name in SAMPLER_NAMES}
    assert defaults == {"ddpm": "linspace", "ddim": "leading", "dpm-solver": "linspace",
                        "euler-maruyama": None}
    assert SamplerConfig("ddim", 5, timestep_spacing="linspace").spacing == "linspace"


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
@pytest.mark.parametrize("spacing", [None, "leading"])
def test_ddim_times_are_adms_ddim_spacing(steps, spacing):
    times = SamplerConfig("ddim", steps, timestep_spacing=spacing).model_times(1000)
    assert times == [float(s) for s in reversed(range(0, 1000, 1000 // steps))]


# The official DiT/ASE respacing, create_diffusion(str(N)) = ADM's space_timesteps(1000, str(N)),
# written out by hand from its rule: one section, frac_stride = 999 / (N - 1), the kept steps
# are round(i * frac_stride) with Python's round (ties to even), listed in calling order.
# N = 10: stride 111. N = 25: stride 41.625, so 4 * 41.625 = 166.5 -> 166, 12 * 41.625 = 499.5 ->
# 500 and 20 * 41.625 = 832.5 -> 832 (ties to even). N = 50: stride 20.3877..., no ties.
# N = 250: stride 4.01205, no ties (999 i / 249 = 333 i / 83 is never a half).
OFFICIAL_TIMESTEPS = {
    10: [999, 888, 777, 666, 555, 444, 333, 222, 111, 0],
    25: [999, 957, 916, 874, 832, 791, 749, 708, 666, 624, 583, 541, 500, 458, 416, 375, 333, 291,
         250, 208, 166, 125, 83, 42, 0],
    50: [999, 979, 958, 938, 917, 897, 877, 856, 836, 816, 795, 775, 754, 734, 714, 693, 673, 652,
         632, 612, 591, 571, 550, 530, 510, 489, 469, 449, 428, 408, 387, 367, 347, 326, 306, 285,
         265, 245, 224, 204, 183, 163, 143, 122, 102, 82, 61, 41, 20, 0],
    250: [999, 995, 991, 987, 983, 979, 975, 971, 967, 963, 959, 955, 951, 947, 943, 939, 935,
          931, 927, 923, 919, 915, 911, 907, 903, 899, 895, 891, 887, 883, 879, 875, 871, 867, 863,
          859, 855, 851, 847, 843, 839, 835, 830, 826, 822, 818, 814, 810, 806, 802, 798, 794, 790,
          786, 782, 778, 774, 770, 766, 762, 758, 754, 750, 746, 742, 738, 734, 730, 726, 722, 718,
          714, 710, 706, 702, 698, 694, 690, 686, 682, 678, 674, 670, 666, 662, 658, 654, 650, 646,
          642, 638, 634, 630, 626, 622, 618, 614, 610, 606, 602, 598, 594, 590, 586, 582, 578, 574,
          570, 566, 562, 558, 554, 550, 546, 542, 538, 534, 530, 526, 522, 518, 514, 510, 506, 502,
          497, 493, 489, 485, 481, 477, 473, 469, 465, 461, 457, 453, 449, 445, 441, 437, 433, 429,
          425, 421, 417, 413, 409, 405, 401, 397, 393, 389, 385, 381, 377, 373, 369, 365, 361, 357,
          353, 349, 345, 341, 337, 333, 329, 325, 321, 317, 313, 309, 305, 301, 297, 293, 289, 285,
          281, 277, 273, 269, 265, 261, 257, 253, 249, 245, 241, 237, 233, 229, 225, 221, 217, 213,
          209, 205, 201, 197, 193, 189, 185, 181, 177, 173, 169, 164, 160, 156, 152, 148, 144, 140,
          136, 132, 128, 124, 120, 116, 112, 108, 104, 100, 96, 92, 88, 84, 80, 76, 72, 68, 64, 60,
          56, 52, 48, 44, 40, 36, 32, 28, 24, 20, 16, 12, 8, 4, 0],
}


@pytest.mark.parametrize("steps", sorted(OFFICIAL_TIMESTEPS))
@pytest.mark.parametrize(("name", "spacing"), [("ddim", "linspace"), ("ddpm", "linspace"),
                                               ("ddpm", None)])
def test_linspace_is_the_official_respacing(name, spacing, steps):
    expected = OFFICIAL_TIMESTEPS[steps]
    assert len(expected) == len(set(expected)) == steps  # the lists themselves are well formed
    times = SamplerConfig(name, steps, timestep_spacing=spacing).model_times(1000)
    assert times == [float(s) for s in expected]
    assert times == [float(s) for s in sorted(adm_space_timesteps(1000, steps), reverse=True)]


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


@pytest.mark.parametrize(("name", "spacing"),
                         [(n, None) for n in DIFFUSERS_SAMPLERS] + SPACED)
@pytest.mark.parametrize("steps", [1, 3, 20, 25, 50, 99, 250])
@pytest.mark.parametrize("num_timesteps", [1000, 400])
def test_model_times_equal_the_diffusers_scheduler_timesteps(name, spacing, steps, num_timesteps):
    config = SamplerConfig(name, steps, timestep_spacing=spacing)
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
