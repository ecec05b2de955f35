"""``sample``: every solver of the registry, with exit schedules and common random numbers.

``sample`` draws the labels and noise, batches, applies guidance and looks up the exit schedule at
each model call; the registered sampler (:data:`~ase_search.samplers.SAMPLERS`) walks each batch
from noise to data.

Random numbers are drawn so that runs are comparable across exit schedules (common random
numbers): one CPU generator seeded with ``seed`` draws all labels first, then each sample's initial
noise in sample order (one draw per sample, so the result does not depend on ``batch_size``
either); per-step noise (DDPM, DDIM with ``eta > 0``, Euler-Maruyama) comes from one generator per
batch seeded from ``(seed, batch index)``, so it is independent of the schedule but does depend on
``batch_size``.

Block reuse (``reuse`` intervals of the schedule, :mod:`ase_search.schedule`): each batch
trajectory gets a fresh :class:`~ase_search.models.layers.BlockReuse` cache, so nothing carries
over between runs, seeds or batches and, as every cached residual is per sample, the result does not
depend on ``batch_size``; the calls follow :func:`ase_search.callplan.call_plan`, the plan the block
counts and the cost model are built on.

Pixel-space models (1 or 3 channels) produce images in ``[-1, 1]``: DDPM and DDIM clip their
predicted ``x_0`` and the result is clamped (ADM's ``clip_denoised=True``). Latent models (e.g.
DiT-XL/2 on 4-channel SD-VAE latents) are never clipped, as in DiT's own sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ase_search.diffusion import GaussianDiffusion
from ase_search.callplan import blocks_per_call, call_plan
from ase_search.models.layers import BlockReuse, guided_eps
from ase_search.samplers._base import Trajectory
from ase_search.samplers._config import SamplerConfig
from ase_search.samplers._registry import SAMPLERS
from ase_search.schedule import ExitSchedule

__all__ = ["PIXEL_CHANNELS", "SampleOutput", "sample"]

PIXEL_CHANNELS = (1, 3)  # gray or RGB images; anything else is a latent space


@dataclass
class SampleOutput:
    """What :func:`sample` returns.

    Attributes:
        images: ``(N, C, H, W)`` float32 in ``[-1, 1]``, on the CPU.
        labels: ``(N,)`` long class labels used for conditioning, or ``None`` (unconditional).
        block_evals: exitable-block evaluations per sample trajectory, summed over model calls
            (classifier-free guidance's doubled batch is not counted twice).
        model_calls: model calls per sample trajectory.
    """

    images: Tensor
    labels: Tensor | None
    block_evals: int
    model_calls: int


def _batch_seed(seed: int, batch_index: int) -> int:
    """A 64-bit seed for batch ``batch_index``'s step noise, decorrelated from ``seed`` itself."""
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1, dtype=np.uint64)[0])


def _check_model(model: nn.Module) -> None:
    missing = [
        a for a in ("arch", "exit_depth", "in_channels", "input_size", "learn_sigma",
                    "num_labels", "null_class")
        if not hasattr(model, a)
    ]
    if missing:
        raise ValueError(
            f"model lacks the attribute(s) {missing} of the ase-search model interface; build it "
            f"with ase_search.models.create_model"
        )


def _resolve_labels(
    model: nn.Module, labels: Tensor | None, n: int, generator: torch.Generator
) -> Tensor | None:
    if model.num_labels == 0:
        if labels is not None:
            raise ValueError("labels were given but the model is unconditional (num_labels == 0)")
        return None
    if labels is None:
        return torch.randint(0, model.num_labels, (n,), generator=generator)
    if not isinstance(labels, Tensor) or labels.shape != (n,):
        raise ValueError(
            f"labels must be a tensor of shape ({n},), got {getattr(labels, 'shape', labels)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= model.num_labels):
        raise ValueError(
            f"labels must lie in [0, {model.num_labels}) (real classes), got values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.long().cpu()


def _guided_model(
    model: nn.Module, cfg_scale: float
) -> Callable[[Tensor, Tensor, Tensor | None, int | None, BlockReuse | None], Tensor]:
    """``model`` as a function ``(x, t, y, n_blocks, reuse) -> output``, with classifier-free
    guidance.

    With guidance the conditional and null-label batches run as one doubled batch through
    :func:`~ase_search.models.layers.guided_eps`, and its conditional half is kept: the guided
    eps, and the other channels (learned variance) of the conditional pass. A reuse cache then
    holds both branches.
    """
    if cfg_scale == 1.0:
        # reuse= only when reusing, so a model without block reuse still serves skip schedules.
        return lambda x, t, y, k, reuse: model(x, t, y, n_blocks=k,
                                               **({} if reuse is None else {"reuse": reuse}))

    def guided(x: Tensor, t: Tensor, y: Tensor | None, k: int | None,
               reuse: BlockReuse | None) -> Tensor:
        assert y is not None  # checked in sample(): guidance needs a class-conditional model
        null = torch.full_like(y, model.null_class)
        out = guided_eps(model, torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]),
                         cfg_scale, n_blocks=k, reuse=reuse)  # (2B, C_out, H, W)
        return out[: x.shape[0]]  # (B, C_out, H, W)

    return guided


def sample(
    model: nn.Module,
    *,
    sampler: SamplerConfig,
    schedule: ExitSchedule | None = None,
    n: int,
    batch_size: int = 256,
    seed: int = 0,
    labels: Tensor | None = None,
    diffusion: GaussianDiffusion | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> SampleOutput:
    """Draw ``n`` samples from ``model`` with ``sampler``, running the blocks ``schedule`` asks for.

    At every model call at timestep ``s`` (see :meth:`SamplerConfig.model_times`) the model runs
    ``schedule.blocks_at(s / T)`` exitable blocks (all of them when ``schedule`` is ``None``), or,
    in a ``reuse`` interval, follows :func:`ase_search.callplan.call_plan` (a refresh runs all of
    them and caches the residual of the rest; the other calls add it).

    Args:
        model: a network with the ase-search model interface, already on ``device``; it is run in
            eval mode and its training flag is restored afterwards.
        sampler: solver and its settings.
        schedule: exit schedule for ``model`` (same ``arch`` and ``depth == model.exit_depth``).
        n: number of samples.
        batch_size: samples per model call (doubled internally under guidance).
        seed: seed of the random numbers; the same seed gives the same labels, initial noise and
            step noise whatever the schedule (see the module docstring).
        labels: ``(n,)`` class labels for a class-conditional model; drawn uniformly if ``None``.
        diffusion: the training diffusion (default: linear schedule, ``T = 1000``).
        device: where the model runs.
        progress: show a progress bar on stderr.

    Returns:
        A :class:`SampleOutput`: images in ``[-1, 1]`` for pixel-space models, unclipped latents
        otherwise.
    """
    if not isinstance(sampler, SamplerConfig):
        raise ValueError(f"sampler must be a SamplerConfig, got {type(sampler).__name__}")
    _check_model(model)
    for key, value in (("n", n), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if schedule is not None:
        if not isinstance(schedule, ExitSchedule):
            raise ValueError(
                f"schedule must be an ExitSchedule or None, got {type(schedule).__name__}"
            )
        if schedule.arch != model.arch or schedule.depth != model.exit_depth:
            raise ValueError(
                f"schedule is for {schedule.arch} with {schedule.depth} exitable blocks but the "
                f"model is {model.arch} with {model.exit_depth}; use a schedule built for this "
                f"model"
            )
    if sampler.guided and (model.num_labels == 0 or model.null_class is None):
        raise ValueError(
            f"cfg_scale={sampler.cfg_scale} needs a class-conditional model with a null class "
            f"(model.null_class is {model.null_class}); use cfg_scale=1.0"
        )
    diffusion = diffusion if diffusion is not None else GaussianDiffusion()
    T = diffusion.num_timesteps
    device = torch.device(device)

    solver = SAMPLERS[sampler.name]
    times = sampler.model_times(T)
    clip = model.in_channels in PIXEL_CHANNELS  # images live in [-1, 1]; latents do not
    # One plan for what runs and for what is counted: a refresh counts as a full-depth call.
    plan = [None] * len(times) if schedule is None else call_plan(schedule, times, T)
    calls = [model.exit_depth] * len(times) if schedule is None else blocks_per_call(schedule,
                                                                                     times, T)
    block_evals = sum(calls)
    reuses = schedule is not None and schedule.reuses

    generator = torch.Generator().manual_seed(seed)
    labels = _resolve_labels(model, labels, n, generator)
    shape = (model.in_channels, model.input_size, model.input_size)
    channels = model.in_channels
    forward = _guided_model(model, sampler.cfg_scale)
    out_channels = 2 * channels if model.learn_sigma else channels

    t_dtype = torch.long if solver.integer_times else torch.float32

    def call(x: Tensor, i: int, *, y: Tensor | None, reuse: BlockReuse | None) -> Tensor:
        """The model at the i-th model time, running the blocks the schedule gives there."""
        t = torch.full((x.shape[0],), times[i], dtype=t_dtype, device=device)  # (B,)
        k = None if plan[i] is None else plan[i].count
        if plan[i] is not None and plan[i].reuse:
            reuse.begin(plan[i], times[i] / T)
        else:
            reuse = None  # a skip interval's call: nothing added past the count
        out = forward(x, t, y, k, reuse).float()  # (B, C_out, H, W)
        if out.shape != (x.shape[0], out_channels, *shape[1:]):
            raise ValueError(
                f"model returned shape {tuple(out.shape)}, expected "
                f"{(x.shape[0], out_channels, *shape[1:])} from its in_channels/learn_sigma"
            )
        if bar is not None:
            bar.advance(task)
        return out

    num_batches = (n + batch_size - 1) // batch_size
    bar, task = _progress_bar(progress, num_batches * len(times), sampler)
    images = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in range(num_batches):
                start, stop = b * batch_size, min(n, (b + 1) * batch_size)
                # One draw per sample keeps the initial noise independent of batch_size.
                x = torch.stack([torch.randn(shape, generator=generator)
                                 for _ in range(start, stop)]).to(device)  # (B, C, H, W)
                y = None if labels is None else labels[start:stop].to(device)
                step_generator = torch.Generator().manual_seed(_batch_seed(seed, b))

                run = Trajectory(config=sampler, diffusion=diffusion, times=times,
                                 learn_sigma=model.learn_sigma, clip_denoised=clip,
                                 generator=step_generator)
                # A fresh reuse cache per trajectory: nothing leaks across batches, seeds or runs.
                reuse = (BlockReuse(modules=schedule.granularity == "modules") if reuses
                         else None)
                x = solver.run(partial(call, y=y, reuse=reuse), x, run)
                images.append((x.clamp(-1.0, 1.0) if clip else x).float().cpu())
    finally:
        model.train(was_training)
        if bar is not None:
            bar.stop()
    return SampleOutput(
        images=torch.cat(images),
        labels=labels,
        block_evals=int(block_evals),
        model_calls=len(times),
    )


def _progress_bar(enabled: bool, total: int, sampler: SamplerConfig) -> tuple[Any, Any]:
    if not enabled:
        return None, None
    from ase_search.progress import progress_bar

    bar = progress_bar()
    task = bar.add_task(f"{sampler.name} {sampler.steps} steps", total=total)
    bar.start()
    return bar, task
