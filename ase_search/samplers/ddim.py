"""DDIM (Song et al. 2021), deterministic at ``eta = 0``, ancestral-like at ``eta = 1``.

The model is called at ``arange(steps) * (T // steps)`` descending ("leading" spacing, as ADM's
``"ddim<steps>"``); the last step goes to ``abar = 1`` (``set_alpha_to_one``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ase_search.samplers._base import DiffusersSampler, scheduler_kwargs

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ase_search.diffusion import GaussianDiffusion
    from ase_search.samplers._config import SamplerConfig

__all__ = ["DDIM"]


class DDIM(DiffusersSampler):
    """DDIM through diffusers' ``DDIMScheduler``; ``SamplerConfig.eta`` sets its stochasticity."""

    name = "ddim"
    takes_eta = True

    def model_times(self, steps: int, num_train_timesteps: int) -> np.ndarray:
        return (np.arange(steps) * (num_train_timesteps // steps))[::-1]

    def build_scheduler(
        self, diffusion: GaussianDiffusion, *, learn_sigma: bool, clip_denoised: bool
    ) -> Any:
        # Imported here: diffusers takes seconds to import and most callers never sample.
        from diffusers import DDIMScheduler

        return DDIMScheduler(
            **scheduler_kwargs(diffusion),
            clip_sample=clip_denoised,
            clip_sample_range=1.0,
            thresholding=False,
            set_alpha_to_one=True,
            steps_offset=0,
            timestep_spacing="leading",
        )

    def step(
        self, scheduler: Any, out: Tensor, s: int, x: Tensor, *, config: SamplerConfig,
        generator: torch.Generator,
    ) -> Tensor:
        eps = out[:, : x.shape[1]]  # learned-variance channels, if any, are not used
        return scheduler.step(eps, s, x, eta=config.eta,
                              generator=generator if config.eta > 0 else None).prev_sample
