"""Samplers: one contract (``sample(model, sampler=SamplerConfig(...), schedule=...)``) for DDPM,
DDIM and DPM-Solver++ (diffusers schedulers) and Euler-Maruyama for the VP SDE (in-house).

Each sampler is one module (:mod:`~ase_search.samplers.ddpm`, :mod:`~ase_search.samplers.ddim`,
:mod:`~ase_search.samplers.dpm_solver`, :mod:`~ase_search.samplers.euler_maruyama`) holding a
:class:`Sampler`; :data:`SAMPLERS` maps names to them, and :class:`SamplerConfig` and
:func:`sample` go through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ase_search.samplers._base import (
    TIMESTEP_SPACINGS,
    DiffusersSampler,
    ModelCall,
    Sampler,
    Trajectory,
)
from ase_search.samplers._config import SamplerConfig
from ase_search.samplers._registry import SAMPLER_NAMES, SAMPLERS, build_scheduler
from ase_search.samplers.euler_maruyama import EM_EPS

if TYPE_CHECKING:
    from ase_search.samplers._sample import PIXEL_CHANNELS, SampleOutput, sample

__all__ = [
    "DiffusersSampler",
    "EM_EPS",
    "ModelCall",
    "PIXEL_CHANNELS",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "SampleOutput",
    "Sampler",
    "TIMESTEP_SPACINGS",
    "SamplerConfig",
    "Trajectory",
    "build_scheduler",
    "sample",
]

_TORCH_NAMES = ("PIXEL_CHANNELS", "SampleOutput", "sample")


def __getattr__(name: str) -> Any:
    # sample() needs torch, which takes seconds to import; the registry and SamplerConfig do not,
    # and the CLI reads SAMPLER_NAMES for its --help.
    if name in _TORCH_NAMES:
        from ase_search.samplers import _sample

        return getattr(_sample, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
