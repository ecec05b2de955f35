"""DDPM: ancestral sampling (Ho et al. 2020), respaced to ``steps`` calls as DiT samples.

The model is called at ``round(linspace(0, T - 1, steps))`` descending by default ("linspace"
spacing: DiT's and improved DDPM's respacing for ``"ddpm<steps>"``), or at ``arange(steps) *
(T // steps)`` descending ("leading"). diffusers' ``DDPMScheduler`` steps to the next of its own
timesteps, so either spacing is exact. Each step draws from the posterior
``q(x_{t'} | x_t, x_0)`` with the "fixed_small" variance, or improved DDPM's "learned_range"
variance when the model predicts it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ase_search.samplers._base import DiffusersSampler, scheduler_kwargs

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ase_search.diffusion import GaussianDiffusion
    from ase_search.samplers._config import SamplerConfig

__all__ = ["DDPM"]


class DDPM(DiffusersSampler):
    """DDPM through diffusers' ``DDPMScheduler``."""

    name = "ddpm"
    spacings = ("linspace", "leading")

    def build_scheduler(
        self, diffusion: GaussianDiffusion, *, learn_sigma: bool, clip_denoised: bool,
        spacing: str | None,
    ) -> Any:
        # Imported here: diffusers takes seconds to import and most callers never sample.
        from diffusers import DDPMScheduler

        return DDPMScheduler(
            **scheduler_kwargs(diffusion),
            variance_type="learned_range" if learn_sigma else "fixed_small",
            clip_sample=clip_denoised,
            clip_sample_range=1.0,
            thresholding=False,
            timestep_spacing=spacing,
        )

    def step(
        self, scheduler: Any, out: Tensor, s: int, s_next: int | None, x: Tensor, *,
        config: SamplerConfig, generator: torch.Generator,
    ) -> Tensor:
        # The full output: diffusers reads the learned-range channels itself.
        return scheduler.step(out, s, x, generator=generator).prev_sample
