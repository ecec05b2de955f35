"""``SamplerConfig``: which solver, how many steps, and at which timesteps it calls the model."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

__all__ = ["EM_EPS", "SAMPLER_NAMES", "SamplerConfig"]

SAMPLER_NAMES = ("ddpm", "ddim", "dpm-solver", "euler-maruyama")
# Euler-Maruyama integrates the VP SDE from t = 1 down to t = EM_EPS, then takes one last noiseless
# step to t = 0 (U-ViT's sampler and Song et al. 2021 use the same cut-off).
EM_EPS = 1e-3


@dataclass(frozen=True)
class SamplerConfig:
    """A sampler and its settings.

    Args:
        name: ``"ddpm"`` (ancestral, respaced to ``steps``), ``"ddim"``, ``"dpm-solver"``
            (DPM-Solver++ 2M) or ``"euler-maruyama"`` (reverse VP SDE).
        steps: number of model calls per trajectory (without the classifier-free-guidance doubling).
        eta: DDIM's stochasticity (0 = deterministic DDIM); must be 0 for the other samplers.
        cfg_scale: classifier-free guidance scale; 1.0 turns guidance off.
    """

    name: str
    steps: int
    eta: float = 0.0
    cfg_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in SAMPLER_NAMES:
            raise ValueError(f"name must be one of {list(SAMPLER_NAMES)}, got {self.name!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)):
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps}")
        object.__setattr__(self, "steps", int(self.steps))
        for key in ("eta", "cfg_scale"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
                raise ValueError(f"{key} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{key} must be a finite number >= 0, got {value}")
            object.__setattr__(self, key, float(value))
        if self.eta != 0.0 and self.name != "ddim":
            raise ValueError(
                f"eta only applies to ddim; set eta=0.0 for {self.name} (got eta={self.eta})"
            )

    @property
    def guided(self) -> bool:
        """Whether classifier-free guidance is on (``cfg_scale != 1``)."""
        return self.cfg_scale != 1.0

    def model_times(self, num_train_timesteps: int = 1000) -> list[float]:
        """Timesteps in ``[0, T)`` at which the model is called, in calling order.

        The discrete samplers call the model at integer timesteps (the ones the diffusers
        schedulers produce); Euler-Maruyama calls it at ``t * (T - 1)`` for its continuous times
        ``t = linspace(1, EM_EPS, steps)``. An exit schedule is looked up at ``s / T``.

        * ``ddpm``: ``round(linspace(0, T - 1, steps))`` descending ("linspace" spacing; DiT's and
          improved DDPM's respacing for ``"ddpm<steps>"``).
        * ``ddim``: ``arange(steps) * (T // steps)`` descending ("leading" spacing, as ADM's
          ``"ddim<steps>"``).
        * ``dpm-solver``: ``round(linspace(0, T - 1, steps + 1))[1:]`` descending (diffusers'
          default for DPM-Solver++; the last step jumps to ``sigma = 0``).
        """
        T = num_train_timesteps
        if isinstance(T, bool) or not isinstance(T, int) or T < 2:
            raise ValueError(f"num_train_timesteps must be an integer >= 2, got {T!r}")
        limit = T - 1 if self.name == "dpm-solver" else T
        if self.name != "euler-maruyama" and self.steps > limit:
            raise ValueError(
                f"steps={self.steps} is more than {self.name} can take with {T} training "
                f"timesteps; use steps <= {limit}"
            )
        if self.name == "ddpm":
            times = np.linspace(0, T - 1, self.steps).round()[::-1]
        elif self.name == "ddim":
            times = (np.arange(self.steps) * (T // self.steps))[::-1]
        elif self.name == "dpm-solver":
            times = np.linspace(0, T - 1, self.steps + 1).round()[::-1][:-1]
        else:
            times = self.continuous_times() * (T - 1)
        return [float(s) for s in times]

    def continuous_times(self) -> np.ndarray:
        """Euler-Maruyama's evaluation times ``linspace(1, EM_EPS, steps)`` (float64)."""
        if self.name != "euler-maruyama":
            raise ValueError(f"continuous_times is defined for euler-maruyama, not {self.name}")
        # linspace(EM_EPS, 1, steps) reversed, so steps == 1 evaluates once at EM_EPS as U-ViT does.
        return np.linspace(EM_EPS, 1.0, self.steps)[::-1].copy()

    # ---------------------------------------------------------------- JSON I/O
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> SamplerConfig:
        if not isinstance(data, dict):
            raise ValueError(f"a sampler config must be a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown sampler field(s): {', '.join(sorted(unknown))}; known: {sorted(known)}"
            )
        missing = [k for k in ("name", "steps") if k not in data]
        if missing:
            raise ValueError(f"missing sampler field(s): {', '.join(missing)}")
        return cls(**data)
