"""The sampler contract: what one sampler module gives the registry.

A sampler says at which timesteps it calls the model (:meth:`Sampler.model_times`) and how it walks
a batch from ``x_T`` to ``x_0`` (:meth:`Sampler.run`), calling the model through a function that
:func:`~ase_search.samplers.sample` hands it. ``sample`` owns everything else: labels, noise, exit
schedules, guidance, batching. A sampler whose steps a diffusers scheduler takes subclasses
:class:`DiffusersSampler` and only says how to build the scheduler and take one step.

This module and the sampler modules import neither torch nor diffusers at import time: the CLI
reads the registry's names for its ``--help``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ase_search.diffusion import GaussianDiffusion
    from ase_search.samplers._config import SamplerConfig

__all__ = ["DiffusersSampler", "ModelCall", "Sampler", "Trajectory", "scheduler_kwargs"]

# call(x, i): the model's output (B, C_out, H, W) for x at the i-th of the sampler's model_times,
# with the blocks the exit schedule gives there (and classifier-free guidance if configured).
ModelCall = Callable[["Tensor", int], "Tensor"]


@dataclass(frozen=True)
class Trajectory:
    """What :meth:`Sampler.run` needs besides the model and the noise, for one batch.

    Attributes:
        config: the sampler settings (steps, eta).
        diffusion: the training diffusion.
        times: ``config.model_times(diffusion.num_timesteps)``.
        learn_sigma: the model's output carries learned-variance channels after the eps ones.
        clip_denoised: clip predicted ``x_0`` to ``[-1, 1]`` (pixel-space models).
        generator: the CPU generator of this batch's step noise.
    """

    config: SamplerConfig
    diffusion: GaussianDiffusion
    times: list[float]
    learn_sigma: bool
    clip_denoised: bool
    generator: torch.Generator


class Sampler(ABC):
    """One solver: the timesteps it calls the model at, and its trajectory from noise to data.

    Attributes:
        name: the registry key (``SamplerConfig.name``).
        takes_eta: whether ``SamplerConfig.eta`` applies (otherwise it must be 0).
        integer_times: the model is called at integer timesteps of the training chain (as long
            tensors); ``False`` for a continuous-time solver (float32 timesteps).
    """

    name: ClassVar[str]
    takes_eta: ClassVar[bool] = False
    integer_times: ClassVar[bool] = True

    def max_steps(self, num_train_timesteps: int) -> int | None:
        """The most steps it can take with ``num_train_timesteps`` (``None``: no limit)."""
        return num_train_timesteps

    @abstractmethod
    def model_times(self, steps: int, num_train_timesteps: int) -> np.ndarray:
        """The ``steps`` timesteps in ``[0, T)`` at which the model is called, in calling order.

        ``steps`` is already checked against :meth:`max_steps`.
        """

    @abstractmethod
    def run(self, call: ModelCall, x: Tensor, run: Trajectory) -> Tensor:
        """One batch's trajectory from ``x = x_T`` ``(B, C, H, W)`` to the sample.

        Args:
            call: the model, see :data:`ModelCall`; call it once per entry of ``run.times``, in
                order.
            x: the initial noise.
            run: the settings of this trajectory (see :class:`Trajectory`).
        """


def scheduler_kwargs(diffusion: GaussianDiffusion) -> dict[str, Any]:
    """diffusers scheduler arguments that reproduce ``diffusion``.

    The betas are passed as ``trained_betas`` so the scheduler uses exactly ``diffusion.betas``
    (rounded to float32, diffusers' precision); the models predict eps.
    """
    return dict(
        num_train_timesteps=diffusion.num_timesteps,
        trained_betas=diffusion.betas.tolist(),
        prediction_type="epsilon",
    )


class DiffusersSampler(Sampler):
    """A sampler whose steps a fresh diffusers scheduler takes (one per batch)."""

    @abstractmethod
    def build_scheduler(
        self, diffusion: GaussianDiffusion, *, learn_sigma: bool, clip_denoised: bool
    ) -> Any:
        """The diffusers scheduler, configured with :func:`scheduler_kwargs`; ``set_timesteps`` is
        left to the caller.

        With ``clip_denoised`` (pixel-space models, ADM's ``clip_denoised=True``) a scheduler that
        can clips the predicted ``x_0`` to ``[-1, 1]``; latents are never clipped (DiT samples its
        VAE latents with ``clip_denoised=False``).
        """

    @abstractmethod
    def step(
        self, scheduler: Any, out: Tensor, s: int, x: Tensor, *, config: SamplerConfig,
        generator: torch.Generator,
    ) -> Tensor:
        """``x`` at the next timestep, from the model's full output ``out`` at timestep ``s``."""

    def run(self, call: ModelCall, x: Tensor, run: Trajectory) -> Tensor:
        scheduler = self.build_scheduler(run.diffusion, learn_sigma=run.learn_sigma,
                                         clip_denoised=run.clip_denoised)
        scheduler.set_timesteps(run.config.steps)
        if [float(s) for s in scheduler.timesteps.tolist()] != run.times:
            # model_times() and the scheduler must agree, or block counts and costs would be wrong.
            raise RuntimeError(
                f"diffusers' {type(scheduler).__name__} chose timesteps "
                f"{scheduler.timesteps.tolist()} but SamplerConfig.model_times gave {run.times}; the "
                f"installed diffusers changed its timestep spacing"
            )
        for i, s in enumerate(run.times):
            out = call(x, i)  # (B, C_out, H, W)
            x = self.step(scheduler, out, int(s), x, config=run.config, generator=run.generator)
        return x
