"""The sampler registry drives everything: config validation, model times, the loop, the CLI help.

Adding a sampler is one module plus one registry entry; the throwaway samplers below are each one
class and one ``SAMPLERS[name] = ...`` line, and sample() then runs them like the shipped ones.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ase_search.diffusion import GaussianDiffusion
from ase_search.samplers import (
    SAMPLER_NAMES,
    SAMPLERS,
    DiffusersSampler,
    Sampler,
    SamplerConfig,
    sample,
)
from ase_search.schedule import ExitSchedule

ASE = str(Path(sys.executable).with_name("ase-search"))
ACP = GaussianDiffusion().alphas_cumprod  # float64
REGISTERED = sorted(SAMPLERS)
SPACED = [(n, sp) for n in REGISTERED for sp in SAMPLERS[n].spacings]  # explicit spacings


pytestmark = pytest.mark.usefixtures("one_thread")


class Shrink(nn.Module):
    """An unconditional stand-in model, eps = 0.8 sqrt(1 - abar_t) x, recording its calls."""

    arch = "dit"
    exit_depth = 6
    in_channels = 1
    input_size = 3
    learn_sigma = False
    num_labels = 0
    null_class = None

    def __init__(self, num_timesteps: int = 1000) -> None:
        super().__init__()
        self.acp = GaussianDiffusion(num_timesteps=num_timesteps).alphas_cumprod
        self.calls: list[tuple[torch.Tensor, int | None]] = []

    def forward(self, x, t, y=None, n_blocks=None):
        self.calls.append((t.clone(), n_blocks))
        abar = self.acp[t.double().round().long()].float().view(-1, 1, 1, 1)
        return 0.8 * (1 - abar).sqrt() * x  # (N, C, H, W)


def schedule() -> ExitSchedule:
    return ExitSchedule("dit", 6, (0.0, 0.3, 0.7, 1.0), (6, 3, 1))


# ----------------------------------------------------------------- the registry drives everything
def test_names_and_config_come_from_the_registry():
    assert SAMPLER_NAMES == tuple(SAMPLERS) == ("ddpm", "ddim", "dpm-solver", "euler-maruyama")
    for name, entry in SAMPLERS.items():
        assert isinstance(entry, Sampler) and entry.name == name
        SamplerConfig(name, 3)  # valid
        if not entry.takes_eta:
            with pytest.raises(ValueError, match="eta only applies to ddim"):
                SamplerConfig(name, 3, eta=0.5)


@pytest.mark.parametrize(("name", "spacing"), [(n, None) for n in REGISTERED] + SPACED)
@pytest.mark.parametrize("num_timesteps", [1000, 400])
def test_the_model_is_called_at_model_times_with_their_blocks(name, spacing, num_timesteps):
    config = SamplerConfig(name, 7, timestep_spacing=spacing)
    model = Shrink(num_timesteps)
    out = sample(model, sampler=config, schedule=schedule(), n=2,
                 diffusion=GaussianDiffusion(num_timesteps=num_timesteps))
    times = config.model_times(num_timesteps)
    assert [float(t[0]) for t, _ in model.calls] == pytest.approx(times, abs=1e-3)
    assert [k for _, k in model.calls] == [schedule().blocks_at(s / num_timesteps) for s in times]
    dtype = torch.long if SAMPLERS[name].integer_times else torch.float32
    assert all(t.dtype == dtype for t, _ in model.calls)
    assert out.model_calls == len(times) and torch.isfinite(out.images).all()


def test_registry_and_config_import_neither_torch_nor_diffusers():
    code = ("import sys; from ase_search.samplers import SAMPLER_NAMES, SamplerConfig; "
            "SamplerConfig('ddim', 20).model_times(); "
            "print([m for m in ('torch', 'diffusers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_help_lists_every_registered_sampler():
    out = subprocess.run([ASE, "sample", "--help"], capture_output=True, text=True, check=True)
    help_text = " ".join(out.stdout.replace("│", " ").split())  # rich wraps inside a box
    assert ", ".join(SAMPLER_NAMES[:-1]) + " or " + SAMPLER_NAMES[-1] in help_text


# ------------------------------------------------------------------- throwaway samplers
class DDIMTrailing(DiffusersSampler):
    """DDIM with diffusers' "trailing" spacing (Lin et al. 2023): a new sampler in one class."""

    name = "ddim-trailing"

    def model_times(self, steps: int, num_train_timesteps: int, spacing) -> np.ndarray:
        return np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / steps)) - 1

    def build_scheduler(self, diffusion, *, learn_sigma, clip_denoised, spacing) -> Any:
        from diffusers import DDIMScheduler

        return DDIMScheduler(num_train_timesteps=diffusion.num_timesteps,
                             trained_betas=diffusion.betas.tolist(), clip_sample=clip_denoised,
                             set_alpha_to_one=True, timestep_spacing="trailing")

    def step(self, scheduler, out, s, s_next, x, *, config, generator):
        return scheduler.step(out, s, x).prev_sample  # uniform spacing: diffusers' own step holds


class InHouseDDIM(Sampler):
    """Deterministic DDIM (Song et al. 2021, Eq. 12) written out, with ADM's "leading" times."""

    name = "ddim-in-house"

    def model_times(self, steps: int, num_train_timesteps: int, spacing) -> np.ndarray:
        return (np.arange(steps) * (num_train_timesteps // steps))[::-1]

    def run(self, call, x, run):
        acp, times = run.diffusion.alphas_cumprod, run.times
        for i, s in enumerate(times):
            a = float(acp[int(s)])
            a_prev = float(acp[int(times[i + 1])]) if i + 1 < len(times) else 1.0
            eps = call(x, i)
            x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5
            x0 = x0.clamp(-1, 1) if run.clip_denoised else x0
            x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
        return x


def reference_ddim(x: torch.Tensor, times: list[int]) -> torch.Tensor:
    """DDIM with eta = 0 on Shrink's eps, x_0 clipped to [-1, 1], in float64."""
    x = x.double()
    for i, t in enumerate(times):
        a = ACP[t]
        a_prev = ACP[times[i + 1]] if i + 1 < len(times) else torch.tensor(1.0, dtype=torch.float64)
        eps = 0.8 * (1 - a).sqrt() * x
        x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x.clamp(-1, 1).float()


def initial_noise(n: int, seed: int) -> torch.Tensor:
    """x_T as sample() draws it for an unconditional (1, 3, 3) model (see its module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn((1, 3, 3), generator=generator) for _ in range(n)])


def test_a_sampler_registered_in_one_line_is_validated_and_sampled(monkeypatch):
    with monkeypatch.context() as registry:
        registry.setitem(SAMPLERS, DDIMTrailing.name, DDIMTrailing())  # the one registry line

        config = SamplerConfig.from_dict({"name": "ddim-trailing", "steps": 5})
        assert config.model_times() == [999.0, 799.0, 599.0, 399.0, 199.0]
        with pytest.raises(ValueError, match="eta only applies to ddim"):
            SamplerConfig("ddim-trailing", 5, eta=0.5)
        with pytest.raises(ValueError, match="steps"):
            SamplerConfig("ddim-trailing", 1001).model_times()
        with pytest.raises(ValueError, match="ddim-trailing"):
            SamplerConfig("heun", 5)  # the error lists what is registered

        model = Shrink()
        out = sample(model, sampler=config, schedule=schedule(), n=4, seed=3)
        times = [int(s) for s in config.model_times()]
        assert [int(t[0]) for t, _ in model.calls] == times
        assert out.block_evals == sum(schedule().blocks_at(s / 1000) for s in times) == 14  # 1+1+3+3+6
        torch.testing.assert_close(out.images, reference_ddim(initial_noise(4, 3), times),
                                   atol=1e-5, rtol=0)

    # Unregistered again: the name is refused.
    with pytest.raises(ValueError, match="name must be one of"):
        SamplerConfig("ddim-trailing", 5)


def test_an_in_house_sampler_matches_the_diffusers_one(monkeypatch):
    monkeypatch.setitem(SAMPLERS, InHouseDDIM.name, InHouseDDIM())
    ours = sample(Shrink(), sampler=SamplerConfig("ddim-in-house", 8), n=4, seed=5)
    theirs = sample(Shrink(), sampler=SamplerConfig("ddim", 8), n=4, seed=5)
    assert ours.model_calls == theirs.model_calls == 8
    torch.testing.assert_close(ours.images, theirs.images, atol=1e-5, rtol=0)
    times = [int(s) for s in SamplerConfig("ddim", 8).model_times()]
    torch.testing.assert_close(ours.images, reference_ddim(initial_noise(4, 5), times),
                               atol=1e-5, rtol=0)


# ------------------------------------------------------------------- DDIM at any timestep spacing
@pytest.mark.parametrize("steps", [7, 10, 25])
def test_ddim_with_linspace_spacing_is_exact_ddim(steps):
    # diffusers' DDIMScheduler.step would jump from t to t - T // steps: for linspace spacing
    # (999, 888, ... for 10 steps) that is not the next model time, so the result would differ.
    config = SamplerConfig("ddim", steps, timestep_spacing="linspace")
    times = [int(s) for s in config.model_times()]
    assert times[0] == 999 and times[-1] == 0
    model = Shrink()
    out = sample(model, sampler=config, n=4, seed=2)
    assert [int(t[0]) for t, _ in model.calls] == times
    torch.testing.assert_close(out.images, reference_ddim(initial_noise(4, 2), times),
                               atol=1e-5, rtol=0)


def test_ddpm_with_explicit_linspace_is_its_default():
    # DDPM's default spacing is linspace: naming it changes nothing, to the bit.
    default = sample(Shrink(), sampler=SamplerConfig("ddpm", 9), n=3, seed=4)
    named = sample(Shrink(), sampler=SamplerConfig("ddpm", 9, timestep_spacing="linspace"), n=3,
                   seed=4)
    assert torch.equal(default.images, named.images)


@pytest.mark.parametrize("eta", [0.3, 1.0])
@pytest.mark.parametrize("clip", [True, False])
def test_a_stochastic_ddim_step_between_uneven_times_is_eq_12_and_16(eta, clip):
    # One step from s = 958 to s_next = 938 (steps 2 and 3 of 50 linspace steps), and the last
    # one, to abar = 1, against Eq. 12 with sigma from Eq. 16 in float64, same noise draw.
    entry = SAMPLERS["ddim"]
    config = SamplerConfig("ddim", 50, eta=eta, timestep_spacing="linspace")
    scheduler = entry.build_scheduler(GaussianDiffusion(), learn_sigma=False, clip_denoised=clip,
                                      spacing="linspace")
    scheduler.set_timesteps(50)
    x, eps = torch.randn(2, 3, 1, 4, 4, generator=torch.Generator().manual_seed(0)).unbind(0)
    x = 2 * x  # some predicted x_0 fall outside [-1, 1], so clipping matters
    for s, s_next in [(958, 938), (20, None)]:
        ours = entry.step(scheduler, eps, s, s_next, x, config=config,
                          generator=torch.Generator().manual_seed(7))
        a = ACP[s]
        a_prev = ACP[s_next] if s_next is not None else torch.tensor(1.0, dtype=torch.float64)
        x0 = (x.double() - (1 - a).sqrt() * eps.double()) / a.sqrt()
        x0 = x0.clamp(-1, 1) if clip else x0
        sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7)).double()
        expected = (a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).sqrt() * eps.double()
                    + sigma * noise)
        torch.testing.assert_close(ours.double(), expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("eta", [0.0, 0.6])
@pytest.mark.parametrize("clip", [True, False])
def test_ddim_at_leading_spacing_is_bit_for_bit_diffusers_step(eta, clip):
    # Leading spacing is uniform, where diffusers' own DDIMScheduler.step is right: the in-house
    # step must give exactly its floats (what every DDIM result so far was sampled with).
    entry = SAMPLERS["ddim"]
    config = SamplerConfig("ddim", 20, eta=eta)
    scheduler = entry.build_scheduler(GaussianDiffusion(), learn_sigma=False, clip_denoised=clip,
                                      spacing="leading")
    scheduler.set_timesteps(20)
    times = [int(s) for s in config.model_times()]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 4, 4, generator=gen)
    for s, s_next in zip(times, [*times[1:], None]):
        eps = torch.randn(x.shape, generator=gen)
        ours = entry.step(scheduler, eps, s, s_next, x, config=config,
                          generator=torch.Generator().manual_seed(s))
        theirs = scheduler.step(eps, s, x, eta=eta,
                                generator=torch.Generator().manual_seed(s) if eta else None)
        assert torch.equal(ours, theirs.prev_sample)
        x = ours
