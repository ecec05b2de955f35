"""DDIM (Song et al. 2021), deterministic at ``eta = 0``, ancestral-like at ``eta = 1``.

The model is called at the "leading" spacing by default, ``arange(steps) * (T // steps)``
descending (ADM's ``"ddim<steps>"``), or at the "linspace" spacing, ``round(linspace(0, T - 1,
steps))`` descending (the official DiT code's ``create_diffusion(str(steps))``); the last step goes
to ``abar = 1`` (``set_alpha_to_one``).

diffusers' ``DDIMScheduler`` gives the timesteps and the ``alphas_cumprod`` table, but its ``step``
takes the previous timestep as ``t - T // steps``, which holds for "leading" only; the update
(Eq. 12 and 16 of the paper) is therefore taken here, between the true consecutive model times,
with diffusers' float32 arithmetic in diffusers' order (so "leading" is bit-for-bit diffusers').
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ase_search.samplers._base import DiffusersSampler, scheduler_kwargs

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ase_search.diffusion import GaussianDiffusion
    from ase_search.samplers._config import SamplerConfig

__all__ = ["DDIM"]


class DDIM(DiffusersSampler):
    """DDIM on diffusers' ``DDIMScheduler`` tables; ``SamplerConfig.eta`` sets its stochasticity."""

    name = "ddim"
    takes_eta = True
    spacings = ("leading", "linspace")

    def build_scheduler(
        self, diffusion: GaussianDiffusion, *, learn_sigma: bool, clip_denoised: bool,
        spacing: str | None,
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
            timestep_spacing=spacing,
        )

    def set_timesteps(self, scheduler: Any, timesteps: list[int]) -> None:
        # DDIMScheduler.set_timesteps takes a count only; the step below reads the true next
        # model time, so the table of timesteps is all the scheduler needs.
        import torch

        scheduler.num_inference_steps = len(timesteps)
        scheduler.timesteps = torch.tensor(timesteps, dtype=torch.long)

    def step(
        self, scheduler: Any, out: Tensor, s: int, s_next: int | None, x: Tensor, *,
        config: SamplerConfig, generator: torch.Generator,
    ) -> Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        eps = out[:, : x.shape[1]]  # learned-variance channels, if any, are not used
        # 1. abar at this model time and at the next one (not s - T // steps: see the docstring).
        alpha_prod_t = scheduler.alphas_cumprod[s]
        alpha_prod_t_prev = (scheduler.alphas_cumprod[s_next] if s_next is not None
                             else scheduler.final_alpha_cumprod)
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        # 2. predicted x_0 (Eq. 12), clipped for pixel-space models.
        x0 = (x - beta_prod_t ** (0.5) * eps) / alpha_prod_t ** (0.5)
        if scheduler.config.clip_sample:
            x0 = x0.clamp(-scheduler.config.clip_sample_range, scheduler.config.clip_sample_range)
        # 3. sigma_t(eta) (Eq. 16).
        variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
        std_dev_t = config.eta * variance ** (0.5)
        # 4. x at s_next: the direction pointing to x_t, plus noise when eta > 0.
        direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * eps
        x_prev = alpha_prod_t_prev ** (0.5) * x0 + direction
        if config.eta > 0:
            noise = randn_tensor(eps.shape, generator=generator, device=eps.device, dtype=eps.dtype)
            x_prev = x_prev + std_dev_t * noise
        return x_prev
