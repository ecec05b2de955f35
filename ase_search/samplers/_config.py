"""``SamplerConfig``: which solver, how many steps, and at which timesteps it calls the model."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ase_search.samplers._base import TIMESTEP_SPACINGS
from ase_search.samplers._registry import SAMPLERS
from ase_search.samplers.euler_maruyama import continuous_times

__all__ = ["SamplerConfig"]


@dataclass(frozen=True)
class SamplerConfig:
    """A sampler and its settings.

    Args:
        name: a key of :data:`~ase_search.samplers.SAMPLERS`: ``"ddpm"`` (ancestral, respaced
            to ``steps``), ``"ddim"``, ``"dpm-solver"`` (DPM-Solver++ 2M) or
            ``"euler-maruyama"`` (reverse VP SDE).
        steps: number of model calls per trajectory (without the classifier-free-guidance doubling).
        eta: DDIM's stochasticity (0 = deterministic DDIM); must be 0 for samplers that do not
            take it.
        cfg_scale: classifier-free guidance scale; 1.0 turns guidance off.
        timestep_spacing: which ``steps`` of the training timesteps a discrete sampler calls the
            model at: ``"leading"`` (ADM's ``ddim<steps>``, ``arange(steps) * (T // steps)``) or
            ``"linspace"`` (``round(linspace(0, T - 1, steps))``, the official DiT/ASE respacing
            ``create_diffusion(str(steps))``); ``None`` takes the sampler's default (the first of
            its ``spacings``: leading for ddim, linspace for ddpm and dpm-solver). Euler-Maruyama
            has continuous times and takes none.
        timesteps: explicit model timesteps (integers in ``[0, T)``, strictly descending, one per
            step), e.g. searched ones (:mod:`ase_search.timesteps`); they replace the spacing.
            DDIM and DPM-Solver++ take them.
    """

    name: str
    steps: int
    eta: float = 0.0
    cfg_scale: float = 1.0
    timestep_spacing: str | None = None
    timesteps: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"name must be one of {list(SAMPLERS)}, got {self.name!r}")
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
        if self.eta != 0.0 and not SAMPLERS[self.name].takes_eta:
            takers = " and ".join(n for n, s in SAMPLERS.items() if s.takes_eta)
            raise ValueError(
                f"eta only applies to {takers}; set eta=0.0 for {self.name} (got eta={self.eta})"
            )
        spacing, supported = self.timestep_spacing, SAMPLERS[self.name].spacings
        if spacing is not None and spacing not in TIMESTEP_SPACINGS:
            raise ValueError(
                f"timestep_spacing must be one of {list(TIMESTEP_SPACINGS)} (or unset for the "
                f"sampler's default), got {spacing!r}"
            )
        if spacing is not None and not supported:
            raise ValueError(
                f"timestep_spacing does not apply to {self.name} (its times are fixed, e.g. "
                f"continuous); leave it unset, got {spacing!r}"
            )
        if spacing is not None and spacing not in supported:
            raise ValueError(
                f"timestep_spacing {spacing!r} is not offered by {self.name}; use one of "
                f"{list(supported)} or leave it unset"
            )

        if self.timesteps is not None:
            self._check_timesteps()

    def _check_timesteps(self) -> None:
        ts = self.timesteps
        if isinstance(ts, (str, bytes)) or not hasattr(ts, "__len__"):
            raise ValueError(f"timesteps must be a list of integers, got {ts!r}")
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in ts):
            raise ValueError(f"timesteps must be integers, got {list(ts)}")
        ts = tuple(int(v) for v in ts)
        if self.name not in ("ddim", "dpm-solver"):
            raise ValueError(f"explicit timesteps apply to ddim and dpm-solver, not {self.name}")
        if self.timestep_spacing is not None:
            raise ValueError("give timesteps or timestep_spacing, not both")
        if len(ts) != self.steps:
            raise ValueError(f"timesteps needs one timestep per step: steps={self.steps} but "
                             f"{len(ts)} timesteps")
        if any(a <= b for a, b in zip(ts, ts[1:])) or (ts and ts[-1] < 0):
            raise ValueError(f"timesteps must be strictly descending integers >= 0, got "
                             f"{list(ts)}")
        object.__setattr__(self, "timesteps", ts)

    @property
    def spacing(self) -> str | None:
        """The timestep spacing in force: ``timestep_spacing``, else the sampler's default
        (``None`` for a sampler with continuous times)."""
        supported = SAMPLERS[self.name].spacings
        return self.timestep_spacing or (supported[0] if supported else None)

    def describe(self) -> str:
        """``"ddim-20"``; with an explicit spacing ``"ddim-20 linspace"``; with explicit
        timesteps ``"ddim-3 at 999,560,120"``."""
        if self.timesteps is not None:
            return f"{self.name}-{self.steps} at {','.join(map(str, self.timesteps))}"
        return f"{self.name}-{self.steps}" + (f" {self.timestep_spacing}"
                                              if self.timestep_spacing else "")

    @property
    def guided(self) -> bool:
        """Whether classifier-free guidance is on (``cfg_scale != 1``)."""
        return self.cfg_scale != 1.0

    def model_times(self, num_train_timesteps: int = 1000) -> list[float]:
        """Timesteps in ``[0, T)`` at which the model is called, in calling order.

        The registered sampler decides, under :attr:`spacing` (its module, e.g.
        :mod:`ase_search.samplers.ddim`, says how): the discrete samplers call the model at integer
        timesteps (the ones their diffusers schedulers produce, which
        :func:`~ase_search.samplers.sample` checks);
        Euler-Maruyama calls it at ``t * (T - 1)`` for its continuous times
        ``t = linspace(1, EM_EPS, steps)``. An exit schedule is looked up at ``s / T``.

        Raises:
            ValueError: ``num_train_timesteps`` is not an integer >= 2, or the sampler cannot take
                ``steps`` steps with that many training timesteps.
        """
        T = num_train_timesteps
        if isinstance(T, bool) or not isinstance(T, int) or T < 2:
            raise ValueError(f"num_train_timesteps must be an integer >= 2, got {T!r}")
        if self.timesteps is not None:
            if self.timesteps[0] >= T:
                raise ValueError(f"timestep {self.timesteps[0]} is outside [0, {T}) of this "
                                 f"diffusion")
            return [float(s) for s in self.timesteps]
        sampler = SAMPLERS[self.name]
        limit = sampler.max_steps(T)
        if limit is not None and self.steps > limit:
            raise ValueError(
                f"steps={self.steps} is more than {self.name} can take with {T} training "
                f"timesteps; use steps <= {limit}"
            )
        return [float(s) for s in sampler.model_times(self.steps, T, self.spacing)]

    def continuous_times(self) -> np.ndarray:
        """Euler-Maruyama's evaluation times ``linspace(1, EM_EPS, steps)`` (float64)."""
        if self.name != "euler-maruyama":
            raise ValueError(f"continuous_times is defined for euler-maruyama, not {self.name}")
        return continuous_times(self.steps)

    # ---------------------------------------------------------------- JSON I/O
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("timestep_spacing", "timesteps"):
            if data[key] is None:
                del data[key]  # unset: the same JSON as before the field existed
        if "timesteps" in data:
            data["timesteps"] = list(data["timesteps"])
        return data

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
        if isinstance(data.get("timesteps"), list):
            data = {**data, "timesteps": tuple(data["timesteps"])}
        return cls(**data)
