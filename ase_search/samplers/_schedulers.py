"""diffusers schedulers configured to match :class:`~ase_search.diffusion.GaussianDiffusion`."""

from __future__ import annotations

from typing import Any

from ase_search.diffusion import GaussianDiffusion
from ase_search.samplers._config import SamplerConfig

__all__ = ["build_scheduler"]


def build_scheduler(
    sampler: SamplerConfig, diffusion: GaussianDiffusion, *, learn_sigma: bool = False,
    clip_denoised: bool = True
) -> Any:
    """The diffusers scheduler that takes ``sampler``'s steps, with ``diffusion``'s betas.

    The betas are passed as ``trained_betas`` so the scheduler uses exactly ``diffusion.betas``
    (rounded to float32, diffusers' precision). With ``clip_denoised`` (pixel-space models, ADM's
    ``clip_denoised=True``) DDPM and DDIM clip the predicted ``x_0`` to ``[-1, 1]``; latents are
    never clipped (DiT samples its VAE latents with ``clip_denoised=False``). DPM-Solver++ runs
    without thresholding. ``set_timesteps(sampler.steps)`` is left to the caller.

    Args:
        sampler: a ``ddpm``, ``ddim`` or ``dpm-solver`` config.
        diffusion: the training diffusion whose betas the scheduler must reproduce.
        learn_sigma: DDPM only: the model predicts improved DDPM's "learned_range" variance
            (pass the full ``2C``-channel output to ``step``); otherwise "fixed_small".
        clip_denoised: DDPM and DDIM: clip the predicted ``x_0`` to ``[-1, 1]``.

    Returns:
        A ``DDPMScheduler``, ``DDIMScheduler`` or ``DPMSolverMultistepScheduler``.
    """
    # Imported here: diffusers takes seconds to import and most callers never sample.
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = dict(
        num_train_timesteps=diffusion.num_timesteps,
        trained_betas=diffusion.betas.tolist(),
        prediction_type="epsilon",
    )
    if sampler.name == "ddpm":
        return DDPMScheduler(
            **common,
            variance_type="learned_range" if learn_sigma else "fixed_small",
            clip_sample=clip_denoised,
            clip_sample_range=1.0,
            thresholding=False,
            timestep_spacing="linspace",
        )
    if sampler.name == "ddim":
        return DDIMScheduler(
            **common,
            clip_sample=clip_denoised,
            clip_sample_range=1.0,
            thresholding=False,
            set_alpha_to_one=True,
            steps_offset=0,
            timestep_spacing="leading",
        )
    if sampler.name == "dpm-solver":
        return DPMSolverMultistepScheduler(
            **common,
            algorithm_type="dpmsolver++",
            solver_order=2,
            solver_type="midpoint",
            thresholding=False,
            lower_order_final=True,
            final_sigmas_type="zero",
            timestep_spacing="linspace",
        )
    raise ValueError(
        f"sampler {sampler.name!r} has no diffusers scheduler (euler-maruyama is implemented in "
        f"ase_search.samplers); use one of 'ddpm', 'ddim', 'dpm-solver'"
    )
