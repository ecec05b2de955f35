"""Samplers: one contract (``sample(model, sampler=SamplerConfig(...), schedule=...)``) for DDPM,
DDIM and DPM-Solver++ (diffusers schedulers) and Euler-Maruyama for the VP SDE (in-house)."""

from __future__ import annotations

from ase_search.samplers._config import EM_EPS, SAMPLER_NAMES, SamplerConfig
from ase_search.samplers._sample import PIXEL_CHANNELS, SampleOutput, sample
from ase_search.samplers._schedulers import build_scheduler

__all__ = [
    "EM_EPS",
    "PIXEL_CHANNELS",
    "SAMPLER_NAMES",
    "SampleOutput",
    "SamplerConfig",
    "build_scheduler",
    "sample",
]
