"""ASE fine-tuning (Algorithm 1) for a fixed exit schedule, and the one-shot fine-tune over a space.

Algorithm 1 trains the student with the exit schedule (each sample's t picks its block count),
multiplies the loss by a time-dependent ``lambda(t)`` for the first ``C`` cycles, updates an EMA
teacher ``theta_T <- alpha theta_T + (1 - alpha) theta_S`` and uses AdamW with a constant (DiT) or
cosine (U-ViT) learning rate and the hybrid loss. The teacher is the model that is sampled from.

The one-shot variant draws, for every training sample, a block count from the range the search
space allows at its t (the largest with probability ``full_share``, else uniformly), so one set of
weights serves every schedule of the space and the search can skip per-trial fine-tuning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from ase_search.diffusion import GaussianDiffusion
from ase_search.schedule import ExitSchedule
from ase_search.space import ScheduleSpace
from ase_search.training import TimeReweighting, TrainConfig, TrainResult, train

__all__ = ["FinetuneConfig", "ScheduleExits", "SpaceExits", "finetune", "finetune_one_shot"]


class ScheduleExits:
    """Exit sampler of a fixed schedule: the block count at each sample's t (deterministic)."""

    def __init__(self, schedule: ExitSchedule, num_timesteps: int = 1000) -> None:
        steps = torch.arange(num_timesteps, dtype=torch.float64) / num_timesteps
        self.table = schedule.blocks_for(steps)  # (T,) blocks at every training timestep

    def __call__(self, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.table[t.long().cpu()]

    @property
    def expected_blocks(self) -> torch.Tensor:
        return self.table.double()


class SpaceExits:
    """One-shot exit sampler: each sample's block count is drawn from the space's range at its t.

    With probability ``full_share`` the sample runs the largest count the space allows at its t
    (the "sandwich rule" of weight-shared supernets: the biggest sub-network keeps its quality
    while the others are trained); otherwise the count is uniform over the range. The range at t
    is the union over the intervals that can cover t; for fixed edges it is
    ``[min_blocks[k], max_blocks[k]]`` of the interval holding t.
    """

    def __init__(self, space: ScheduleSpace, num_timesteps: int = 1000, *,
                 full_share: float = 0.0) -> None:
        if not 0.0 <= full_share <= 1.0:
            raise ValueError(f"full_share must lie in [0, 1], got {full_share}")
        lo, hi = [], []
        for i in range(num_timesteps):
            t = i / num_timesteps
            if space.edges is None:
                k_range = range(space.intervals)  # searched edges: any interval may hold t
            else:
                k = sum(1 for e in space.edges[1:-1] if t >= e)
                k_range = range(k, k + 1)
            lo.append(min(space.min_blocks[k] for k in k_range))
            hi.append(max(space.max_blocks[k] for k in k_range))
        self.low = torch.tensor(lo)  # (T,)
        self.high = torch.tensor(hi)  # (T,)
        self.full_share = full_share

    def __call__(self, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        t = t.long().cpu()
        u = torch.rand(t.shape, generator=generator)  # (N,)
        span = (self.high[t] - self.low[t] + 1).double()
        uniform = self.low[t] + (u * span).long().clamp(max=span.long() - 1)  # (N,)
        if self.full_share == 0.0:
            return uniform
        largest = torch.rand(t.shape, generator=generator) < self.full_share  # (N,)
        return torch.where(largest, self.high[t], uniform)

    @property
    def expected_blocks(self) -> torch.Tensor:
        uniform = (self.low + self.high).double() / 2
        return self.full_share * self.high.double() + (1.0 - self.full_share) * uniform


@dataclass(frozen=True)
class FinetuneConfig:
    """Algorithm 1's settings. Defaults follow the paper (B.1) scaled to the testbed.

    Args:
        steps: optimiser steps.
        batch_size: the paper used 64 (DiT) and 128 (U-ViT).
        lr: the paper used 2e-5 (DiT, constant); U-ViT used cosine annealing.
        lr_schedule: ``"constant"`` or ``"cosine"``; ``None`` picks the paper's per architecture
            for Algorithm 1, and cosine for the one-shot fine-tune over a space (its many exits
            knock the model out of its pretrained minimum; the decay brings it back).
        ema_decay: EMA rate ``alpha`` of the teacher.
        gamma: strength of ``lambda(t)`` (see :class:`~ase_search.training.TimeReweighting`).
        cycles: ``C``, epochs during which ``lambda(t)`` applies before it is reset to 1.
        seed: random seed.
        full_share: one-shot only: share of samples trained at the largest block count the space
            allows at their t (see :class:`SpaceExits`); keeps the full model's quality. On the
            DiT testbed 0.5 beat 0.25 for the full model and for every exit alike.
        distill: regress onto the frozen starting model's full-depth prediction instead of the
            noise (see :class:`~ase_search.training.TrainConfig`). Not the paper's recipe.
    """

    steps: int = 500
    batch_size: int = 64
    lr: float = 2e-5
    lr_schedule: Literal["constant", "cosine"] | None = None
    ema_decay: float = 0.999
    gamma: float = 2.0
    cycles: int = 1
    seed: int = 0
    full_share: float = 0.5
    distill: bool = False

    def __post_init__(self) -> None:
        # Fail at construction, naming the field, rather than later inside train().
        for name in ("steps", "cycles", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not isinstance(self.distill, bool):
            raise ValueError(f"distill must be true or false, got {self.distill!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.lr_schedule not in (None, "constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant', 'cosine' or None (the paper's "
                             f"choice per architecture), got {self.lr_schedule!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not (self.gamma >= 0 and math.isfinite(self.gamma)):
            raise ValueError(f"gamma must be a finite number >= 0 (0 disables lambda(t)), got "
                             f"{self.gamma}")
        if self.cycles < 0:
            raise ValueError(f"cycles must be >= 0, got {self.cycles}")
        if not 0.0 <= self.full_share <= 1.0:
            raise ValueError(f"full_share must lie in [0, 1], got {self.full_share}")

    def train_config(self, arch: str, checkpoint_every: int = 1000, *,
                     one_shot: bool = False) -> TrainConfig:
        schedule = self.lr_schedule or ("cosine" if arch == "uvit" or one_shot else "constant")
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           lr_schedule=schedule, ema_decay=self.ema_decay, seed=self.seed,
                           checkpoint_every=checkpoint_every, distill=self.distill)


def finetune(
    model: nn.Module,
    dataset: Dataset,
    target: ExitSchedule | ScheduleSpace,
    config: FinetuneConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
    diffusion: GaussianDiffusion | None = None,
) -> TrainResult:
    """Fine-tune ``model`` with Algorithm 1; returns the student and the EMA teacher.

    Args:
        target: an exit schedule (each sample runs the blocks the schedule gives its t), or a
            search space for the one-shot variant (each sample draws a count from the space's
            range at its t).
    """
    _check_model(model, target.arch, target.depth)
    T = (diffusion or GaussianDiffusion()).num_timesteps
    one_shot = isinstance(target, ScheduleSpace)
    if one_shot:
        exits: ScheduleExits | SpaceExits = SpaceExits(target, T, full_share=config.full_share)
        extra = {"space": target.to_dict(), "finetune": "one-shot"}
    else:
        exits = ScheduleExits(target, T)
        extra = {"schedule": target.to_dict(), "finetune": "algorithm-1"}
    reweighting = TimeReweighting(dropped_share=1.0 - exits.expected_blocks / model.exit_depth,
                                  gamma=config.gamma, cycles=config.cycles)
    return train(model, dataset, config.train_config(model.arch, one_shot=one_shot), exits=exits,
                 reweighting=reweighting, checkpoint_extra=extra, out_dir=out_dir,
                 resume=resume, device=device, progress=progress, diffusion=diffusion)


def finetune_one_shot(model: nn.Module, dataset: Dataset, space: ScheduleSpace,
                      config: FinetuneConfig, **kwargs: Any) -> TrainResult:
    """The one-shot fine-tune over ``space``: :func:`finetune` with the space as target."""
    return finetune(model, dataset, space, config, **kwargs)


def _check_model(model: nn.Module, arch: str, depth: int) -> None:
    if model.arch != arch:
        raise ValueError(f"the schedule is for {arch} but the model is {model.arch}")
    if model.exit_depth != depth:
        raise ValueError(f"the schedule expects {depth} exitable blocks but the model has "
                         f"{model.exit_depth}; rescale it (presets do this) or export one for "
                         f"this model")
