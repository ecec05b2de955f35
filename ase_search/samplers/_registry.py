"""The sampler registry: ``SAMPLERS`` maps each name to its sampler. Adding a sampler is one module
(a :class:`~ase_search.samplers.Sampler` subclass) and one entry below."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ase_search.samplers._base import DiffusersSampler, Sampler
from ase_search.samplers.ddim import DDIM
from ase_search.samplers.ddpm import DDPM
from ase_search.samplers.dpm_solver import DPMSolver
from ase_search.samplers.euler_maruyama import EulerMaruyama

if TYPE_CHECKING:
    from ase_search.diffusion import GaussianDiffusion
    from ase_search.samplers._config import SamplerConfig

__all__ = ["SAMPLERS", "SAMPLER_NAMES", "build_scheduler"]

SAMPLERS: dict[str, Sampler] = {s.name: s for s in (DDPM(), DDIM(), DPMSolver(), EulerMaruyama())}
SAMPLER_NAMES = tuple(SAMPLERS)  # the shipped samplers, in the CLI's order


def build_scheduler(
    sampler: SamplerConfig, diffusion: GaussianDiffusion, *, learn_sigma: bool = False,
    clip_denoised: bool = True
) -> Any:
    """The diffusers scheduler that takes ``sampler``'s steps, with ``diffusion``'s betas.

    The betas are passed as ``trained_betas`` so the scheduler uses exactly ``diffusion.betas``
    (rounded to float32, diffusers' precision). With ``clip_denoised`` (pixel-space models, ADM's
    ``clip_denoised=True``) DDPM and DDIM clip the predicted ``x_0`` to ``[-1, 1]``; latents are
    never clipped (DiT samples its VAE latents with ``clip_denoised=False``). DPM-Solver++ runs
    without thresholding. The scheduler's timestep spacing is ``sampler.spacing``.
    ``set_timesteps(sampler.steps)`` is left to the caller.

    Args:
        sampler: the config of a sampler built on diffusers (``ddpm``, ``ddim``, ``dpm-solver``).
        diffusion: the training diffusion whose betas the scheduler must reproduce.
        learn_sigma: DDPM only: the model predicts improved DDPM's "learned_range" variance
            (pass the full ``2C``-channel output to ``step``); otherwise "fixed_small".
        clip_denoised: DDPM and DDIM: clip the predicted ``x_0`` to ``[-1, 1]``.

    Returns:
        The sampler's scheduler, e.g. a ``DDPMScheduler``, ``DDIMScheduler`` or
        ``DPMSolverMultistepScheduler``.

    Raises:
        ValueError: the sampler takes its own steps (``euler-maruyama``).
    """
    entry = SAMPLERS[sampler.name]
    if not isinstance(entry, DiffusersSampler):
        choices = ", ".join(repr(n) for n, s in SAMPLERS.items() if isinstance(s, DiffusersSampler))
        raise ValueError(
            f"sampler {sampler.name!r} has no diffusers scheduler ({type(entry).__module__} takes "
            f"its own steps); use one of {choices}"
        )
    return entry.build_scheduler(diffusion, learn_sigma=learn_sigma, clip_denoised=clip_denoised,
                                 spacing=sampler.spacing)
