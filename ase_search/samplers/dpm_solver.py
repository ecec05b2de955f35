"""DPM-Solver++ 2M (Lu et al. 2022), first order at the first and last step.

The model is called at ``round(linspace(0, T - 1, steps + 1))[1:]`` descending (diffusers' default
for DPM-Solver++); the last step jumps to ``sigma = 0``, so ``steps`` can be at most ``T - 1``.
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

__all__ = ["DPM_SOLVER_SETTINGS", "DPMSolver"]

# diffusers ``DPMSolverMultistepScheduler`` settings of ase-search's DPM-Solver++ 2M, shared with
# the diffusers-model path (:func:`ase_search.integrations.diffusers.load_scheduler`), which keeps
# the folder's own betas.
DPM_SOLVER_SETTINGS: dict[str, Any] = dict(
    algorithm_type="dpmsolver++",
    solver_order=2,
    solver_type="midpoint",
    thresholding=False,
    lower_order_final=True,
    final_sigmas_type="zero",
    timestep_spacing="linspace",
)


class DPMSolver(DiffusersSampler):
    """DPM-Solver++ 2M through diffusers' ``DPMSolverMultistepScheduler``, without thresholding."""

    name = "dpm-solver"
    spacings = ("linspace",)  # diffusers' "linspace" for DPM-Solver: steps + 1 points, see above

    def max_steps(self, num_train_timesteps: int) -> int | None:
        return num_train_timesteps - 1

    def model_times(self, steps: int, num_train_timesteps: int, spacing: str | None) -> np.ndarray:
        return np.linspace(0, num_train_timesteps - 1, steps + 1).round()[::-1][:-1]

    def build_scheduler(
        self, diffusion: GaussianDiffusion, *, learn_sigma: bool, clip_denoised: bool,
        spacing: str | None,
    ) -> Any:
        # Imported here: diffusers takes seconds to import and most callers never sample.
        from diffusers import DPMSolverMultistepScheduler

        return DPMSolverMultistepScheduler(**scheduler_kwargs(diffusion), **DPM_SOLVER_SETTINGS)

    def set_timesteps(self, scheduler: Any, timesteps: list[int]) -> None:
        scheduler.set_timesteps(timesteps=timesteps)  # the last step still goes to sigma = 0

    def step(
        self, scheduler: Any, out: Tensor, s: int, s_next: int | None, x: Tensor, *,
        config: SamplerConfig, generator: torch.Generator,
    ) -> Tensor:
        return scheduler.step(out[:, : x.shape[1]], s, x).prev_sample
