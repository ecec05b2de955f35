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

__all__ = [
    "TIMESTEP_SPACINGS", "DiffusersSampler", "ModelCall", "Sampler", "Trajectory",
    "scheduler_kwargs", "spaced_times",
]

# How a discrete sampler picks its ``steps`` of the ``T`` training timesteps (names as diffusers'):
# "leading" is ADM's "ddim<N>", ``arange(N) * (T // N)``; "linspace" is ``round(linspace(0, T - 1,
# N))``, the respacing of ADM's ``space_timesteps(T, str(N))`` that the official DiT code (and the
# ASE paper's, built on it) samples with through ``create_diffusion(str(N))``.
TIMESTEP_SPACINGS = ("leading", "linspace")


def spaced_times(spacing: str, steps: int, num_train_timesteps: int) -> np.ndarray:
    """``steps`` of the ``T = num_train_timesteps`` training timesteps under ``spacing``, descending.

    "leading": ``arange(steps) * (T // steps)`` (980, 960, ..., 0 for 50 of 1000); "linspace":
    ``round(linspace(0, T - 1, steps))`` (999, 979, 958, ..., 0), which equals ADM's
    ``space_timesteps`` (``round(i * (T - 1) / (steps - 1))``, ties to even alike).
    """
    T = num_train_timesteps
    if spacing == "leading":
        return (np.arange(steps) * (T // steps))[::-1]
    if spacing == "linspace":
        return np.linspace(0, T - 1, steps).round()[::-1]
    raise ValueError(f"timestep spacing must be one of {list(TIMESTEP_SPACINGS)}, got {spacing!r}")

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
        spacings: the :data:`TIMESTEP_SPACINGS` it can call the model at, its default first;
            empty for a solver whose times are fixed (e.g. continuous times).
    """

    name: ClassVar[str]
    takes_eta: ClassVar[bool] = False
    integer_times: ClassVar[bool] = True
    spacings: ClassVar[tuple[str, ...]] = ()

    def max_steps(self, num_train_timesteps: int) -> int | None:
        """The most steps it can take with ``num_train_timesteps`` (``None``: no limit)."""
        return num_train_timesteps

    def model_times(self, steps: int, num_train_timesteps: int, spacing: str | None) -> np.ndarray:
        """The ``steps`` timesteps in ``[0, T)`` at which the model is called, in calling order.

        ``steps`` is already checked against :meth:`max_steps`; ``spacing`` is one of
        :attr:`spacings` (``None`` when that is empty). By default the spacing's integer
        timesteps (:func:`spaced_times`); a solver with other times overrides this.
        """
        assert spacing is not None  # SamplerConfig.spacing resolves the default
        return spaced_times(spacing, steps, num_train_timesteps)

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
        self, diffusion: GaussianDiffusion, *, learn_sigma: bool, clip_denoised: bool,
        spacing: str | None,
    ) -> Any:
        """The diffusers scheduler, configured with :func:`scheduler_kwargs` and the timestep
        ``spacing`` (one of :attr:`spacings`); ``set_timesteps`` is left to the caller.

        With ``clip_denoised`` (pixel-space models, ADM's ``clip_denoised=True``) a scheduler that
        can clips the predicted ``x_0`` to ``[-1, 1]``; latents are never clipped (DiT samples its
        VAE latents with ``clip_denoised=False``).
        """

    @abstractmethod
    def step(
        self, scheduler: Any, out: Tensor, s: int, s_next: int | None, x: Tensor, *,
        config: SamplerConfig, generator: torch.Generator,
    ) -> Tensor:
        """``x`` at timestep ``s_next``, from the model's full output ``out`` at timestep ``s``.

        ``s_next`` is the next of the sampler's model times, ``None`` after the last (the step to
        ``x_0``). A scheduler that finds it itself may ignore it; one that assumes uniform spacing
        (diffusers' DDIM takes ``s - T // steps``) must not.
        """

    def set_timesteps(self, scheduler: Any, timesteps: list[int]) -> None:
        """Give ``scheduler`` explicit model timesteps (``SamplerConfig.timesteps``); a sampler
        that takes them overrides this."""
        raise ValueError(f"{self.name} does not take explicit timesteps")

    def run(self, call: ModelCall, x: Tensor, run: Trajectory) -> Tensor:
        scheduler = self.build_scheduler(run.diffusion, learn_sigma=run.learn_sigma,
                                         clip_denoised=run.clip_denoised,
                                         spacing=run.config.spacing)
        explicit = run.config.timesteps
        if explicit is None:
            scheduler.set_timesteps(run.config.steps)
        else:
            self.set_timesteps(scheduler, list(explicit))
        if [float(s) for s in scheduler.timesteps.tolist()] != run.times:
            # model_times() and the scheduler must agree, or block counts and costs would be wrong.
            raise RuntimeError(
                f"diffusers' {type(scheduler).__name__} chose timesteps "
                f"{scheduler.timesteps.tolist()} but SamplerConfig.model_times gave {run.times}; the "
                f"installed diffusers changed its timestep spacing"
            )
        times = [int(s) for s in run.times]
        for i, (s, s_next) in enumerate(zip(times, [*times[1:], None])):
            out = call(x, i)  # (B, C_out, H, W)
            x = self.step(scheduler, out, s, s_next, x, config=run.config,
                          generator=run.generator)
        return x
