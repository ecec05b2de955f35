"""Euler-Maruyama for the reverse VP SDE ``dx = [-beta/2 x - beta score] dt + sqrt(beta) dw``.

The SDE is integrated from ``t = 1`` through ``linspace(1, EM_EPS, steps)`` down to ``t = 0``; the
model is called at ``t * (T - 1)`` for each of those times (U-ViT's ``nnet(x, t * 999)``), and its
eps gives the score ``-eps / sigma(t)``. The last step, to ``t = 0``, returns the mean (no noise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ase_search.samplers._base import ModelCall, Sampler, Trajectory

if TYPE_CHECKING:
    from torch import Tensor


__all__ = ["EM_EPS", "EulerMaruyama", "continuous_times"]

# Euler-Maruyama integrates the VP SDE from t = 1 down to t = EM_EPS, then takes one last noiseless
# step to t = 0 (U-ViT's sampler and Song et al. 2021 use the same cut-off).
EM_EPS = 1e-3


def continuous_times(steps: int) -> np.ndarray:
    """The evaluation times ``linspace(1, EM_EPS, steps)`` (float64)."""
    # linspace(EM_EPS, 1, steps) reversed, so steps == 1 evaluates once at EM_EPS as U-ViT does.
    return np.linspace(EM_EPS, 1.0, steps)[::-1].copy()


class EulerMaruyama(Sampler):
    """Euler-Maruyama on the reverse VP SDE, in-house (no diffusers scheduler)."""

    name = "euler-maruyama"
    integer_times = False  # continuous times: no timestep spacing to choose (``spacings`` empty)

    def max_steps(self, num_train_timesteps: int) -> int | None:
        return None  # continuous time: any number of steps

    def model_times(self, steps: int, num_train_timesteps: int, spacing: str | None) -> np.ndarray:
        return continuous_times(steps) * (num_train_timesteps - 1)

    def run(self, call: ModelCall, x: Tensor, run: Trajectory) -> Tensor:
        # Imported here so the registry, which the CLI reads for its --help, stays torch-free.
        import torch

        channels = x.shape[1]
        ts = [float(t) for t in continuous_times(run.config.steps)] + [0.0]
        for i, (t, t_next) in enumerate(zip(ts, ts[1:])):
            t_arr = torch.tensor(t, dtype=torch.float64)
            beta = float(run.diffusion.vp_beta(t_arr))
            sigma = float(run.diffusion.vp_sigma(t_arr))
            eps = call(x, i)[:, :channels]  # the model at times[i] = t (T - 1)
            score = -eps / sigma  # (B, C, H, W)
            drift = -0.5 * beta * x - beta * score  # f(x, t) - g(t)^2 score
            dt = t_next - t  # negative: integrating backwards in time
            mean = x + drift * dt
            if t_next > 0:
                noise = torch.randn(x.shape, generator=run.generator).to(x.device)
                x = mean + (beta * -dt) ** 0.5 * noise
            else:
                x = mean
        return x
