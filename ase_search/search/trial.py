"""The measuring of one configuration: :class:`TrialContext` (what a worker needs) and
:func:`evaluate_schedule` (fine-tune per trial, sample with common random numbers, FID,
predicted latency). Search trials, the steps-only baseline and confirmation seeds all measure
through it."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase_search.record import reference_sampler, study_sampler

__all__ = ["TrialContext", "decode_trial", "evaluate_schedule"]


@dataclass(frozen=True)
class TrialContext:
    """What a worker needs to evaluate one schedule (plain data: it travels to Ray workers,
    through Ray's object store).

    A trial may run on another node than the driver. The weights every trial starts from (the
    one-shot weights the driver made, typically) travel inside the context (``weights_bytes``),
    so no node needs them on its disk; the other inputs the trial reads (``data``, ``fid_data``,
    ``fid_weights``, ``vae``: user data, often large) must exist at the same path where the trial
    runs, which :func:`evaluate_schedule` checks first. Nothing is written on the trial's node:
    the sample grid comes back as PNG bytes in the result (``grid_png``), which the driver saves
    beside the study.
    """

    config: dict[str, Any]
    weights: str  # absolute path of the weights every trial starts from (its name, when shipped)
    space: dict[str, Any]
    cost_model: dict[str, Any]
    cpus: int
    weights_bytes: bytes | None = None  # the content of ``weights``; None: read the path
    # A diffusers study's full-model samples at the reference configuration (its ``fid_data
    # self`` reference), cached here across trials; None: not cached.
    cache_dir: str | None = None
    # the study's searched timesteps, {sampler: {steps: timesteps}}, which a joint space's
    # ``searched`` spacing decodes to (:func:`~ase_search.record.searched_table`)
    searched: dict[str, dict[int, tuple[int, ...]]] | None = None


def decode_trial(params: dict[str, Any], ctx: TrialContext) -> tuple[Any, Any, Any]:
    """``(space, schedule, sampler)`` that a trial's Optuna parameters decode to in the study's
    space (a joint space's ``searched`` spacing at the study's searched timesteps)."""
    from ase_search.space import ScheduleSpace

    space = ScheduleSpace.from_dict(ctx.space)
    return (space, space.from_params(params),
            space.sampler_from_params(params, study_sampler(ctx.config), ctx.searched))


def evaluate_schedule(schedule: Any, ctx: TrialContext, *, sampler: Any = None,
                      reference: Any = None,
                      seeds: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Fine-tune (per-trial mode), sample with common random numbers, FID, predicted latency.

    A latent model's samples are decoded with ``config["vae"]`` before FID, which is measured
    against ``config["fid_data"]`` (default ``config["data"]``); fine-tuning reads ``data``.

    Args:
        schedule: the exit schedule.
        ctx: the study's context.
        sampler: the :class:`~ase_search.samplers.SamplerConfig` (a joint space's trial); default:
            the study's one sampler.
        reference: the reference configuration's sampler, when the caller has decoded the space
            already (a trial); default: read from the study's space.
        seeds: sample seeds (common random numbers); default: the study's seed. With several,
            ``fid`` is their mean and ``fids`` lists them.

    Returns:
        The result: ``fid``, ``latency`` (the cost model's seconds for one batch of
        ``latency_batch`` samples, the sum of its calls' costs), ``acceleration`` (``1 - latency /
        latency`` of the full model at the reference configuration), ``lever_acceleration`` (the
        same against the full model at this trial's sampler: what the exit, reuse or forecast
        alone saves; studies made before 2026-12-07 call it ``exit_acceleration``), the schedule
        and sampler as dicts, and timings.
    """
    import torch

    from ase_search.data import build_dataset
    from ase_search.finetune import FinetuneConfig, finetune
    from ase_search.measure import check_fid_reference, measure_schedule
    from ase_search.metrics.fid import FIDConfig
    from ase_search.metrics.latency import CostModel
    from ase_search.models import load_checkpoint
    from ase_search.images import grid_png
    from ase_search.vae import load_vae

    cfg = ctx.config
    torch.set_num_threads(max(1, ctx.cpus))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    split: dict[str, float] = {}
    t0 = time.perf_counter()
    _check_inputs_here(ctx)
    sampler = sampler if sampler is not None else study_sampler(cfg)
    ref_sampler = reference if reference is not None else reference_sampler(cfg, ctx.space)
    seeds = seeds if seeds is not None else (cfg["seed"],)
    if cfg.get("diffusers"):
        return _evaluate_diffusers(schedule, ctx, sampler=sampler, reference_config=ref_sampler,
                                   seeds=seeds, device=device)
    with _weights_file(ctx) as weights:
        model, _ = load_checkpoint(weights, ema=True)
    # .get: contexts written before these settings existed have no such keys.
    decoder = load_vae(cfg["vae"], device=device) if cfg.get("vae") else None
    reference = cfg.get("fid_data") or cfg["data"]
    if reference == "self":  # data-free: the starting weights' full model's own samples
        reference = _native_self_reference(ctx, device)
    else:
        check_fid_reference(model, reference, decoder)  # before minutes of fine-tuning
    split["load"] = time.perf_counter() - t0
    finetune_steps = 0
    if cfg["finetune"] == "per-trial" and cfg["finetune_steps"] > 0:
        data = build_dataset(cfg["data"], resolution=model.input_size, channels=model.in_channels)
        result = finetune(model, data, schedule,
                          FinetuneConfig(steps=cfg["finetune_steps"], lr=cfg["finetune_lr"],
                                         ema_decay=cfg["finetune_ema"], seed=cfg["seed"],
                                         distill=cfg.get("finetune_distill", False)),
                          device=device, progress=False)
        model, finetune_steps = result.ema, result.step
    split["finetune"] = time.perf_counter() - t0 - split["load"]

    cost_model = CostModel.from_dict(ctx.cost_model)
    reference_latency = cost_model.latency(None, ref_sampler)
    m = measure_schedule(
        model, schedule, sampler=sampler,
        n=cfg["n_samples"], seeds=seeds, reference=reference,
        fid_config=FIDConfig(extractor=cfg["fid_extractor"], fid_weights=cfg["fid_weights"],
                             kid=cfg["kid"]),
        decoder=decoder, cost_model=cost_model,
        batch_size=cfg["batch_size"], device=device, keep_images=cfg["grid"])
    split.update(m.seconds)  # sampling, decode (latent models), fid
    grid = grid_png(m.images) if cfg["grid"] > 0 else None
    return _result(schedule, sampler, m.metrics, seeds, latency=m.latency,
                   reference_latency=reference_latency,
                   lever_acceleration=m.predicted_acceleration,
                   block_acceleration=m.block_acceleration, block_evals=m.block_evals,
                   finetune_steps=finetune_steps, split=split, started=t0, grid=grid)


def _result(schedule: Any, sampler: Any, rows: list[dict[str, float]], seeds: tuple[int, ...],
            *, latency: float, reference_latency: float, lever_acceleration: float,
            block_acceleration: float, block_evals: int, finetune_steps: int,
            split: dict[str, float], started: float, grid: bytes | None) -> dict[str, Any]:
    """A measured configuration as trials, baseline points and confirmations store it: the
    metrics averaged over the seeds' ``rows`` (and each seed's FID when there are several)."""
    metrics = {key: statistics.fmean(row[key] for row in rows) for key in rows[0]}
    if len(seeds) > 1:
        metrics["fids"] = [row["fid"] for row in rows]
    return {
        "schedule": schedule.to_dict(),
        "sampler": sampler.to_dict(),
        **metrics,
        "seeds": list(seeds),
        "latency": latency,
        # the key studies store the prediction under: against the reference configuration
        "acceleration": 1.0 - latency / reference_latency,
        "lever_acceleration": lever_acceleration,  # against the full model at this sampler
        "block_acceleration": block_acceleration,
        "block_evals": block_evals,
        "finetune_steps": finetune_steps,
        "time_split": split,
        "wall_time": time.perf_counter() - started,
        "grid_png": grid,  # the sample grid's PNG bytes (None: no grid asked)
    }


def _evaluate_diffusers(schedule: Any, ctx: TrialContext, *, sampler: Any, reference_config: Any,
                        seeds: tuple[int, ...], device: str) -> dict[str, Any]:
    """:func:`evaluate_schedule` on a diffusers study's transformer (``config["diffusers"]``):
    the exit-schedule hooks and a diffusers scheduler built from the folder's config
    (:func:`~ase_search.integrations.diffusers.load_scheduler`), training-free.

    Latency is the cost model's sum over the scheduler's own call timesteps, the same calls the
    hooks count; the two are checked against each other. With ``fid_data`` ``self`` the reference
    is the full model at the study's reference configuration (:func:`_self_reference`), so fewer
    steps and exits are both measured against it.
    """
    from ase_search.integrations.diffusers import (
        scheduler_timesteps,
        load_scheduler,
        load_transformer,
        measure_diffusers,
    )
    from ase_search.callplan import blocks_per_call
    from ase_search.metrics.fid import FIDConfig
    from ase_search.metrics.latency import CostModel
    from ase_search.images import grid_png

    cfg, t0 = ctx.config, time.perf_counter()
    folder = cfg["diffusers"]
    transformer = load_transformer(folder).to(device)
    scheduler = load_scheduler(folder, sampler.name, timestep_spacing=sampler.timestep_spacing,
                               explicit=sampler.timesteps is not None)
    split = {"load": time.perf_counter() - t0, "finetune": 0.0}
    reference: Any = cfg.get("fid_data") or cfg["data"]
    if reference == "self":
        reference = _diffusers_self_reference(ctx, transformer, device)
    plan = None if schedule.is_full else schedule
    m = measure_diffusers(
        transformer, scheduler, plan, steps=sampler.steps, n=cfg["n_samples"], seeds=seeds,
        reference=reference, cfg_scale=sampler.cfg_scale,
        fid_config=FIDConfig(extractor=cfg["fid_extractor"], fid_weights=cfg["fid_weights"],
                             kid=cfg["kid"]),
        batch_size=cfg["batch_size"], device=device, timesteps=sampler.timesteps)
    split["measure"] = time.perf_counter() - t0 - split["load"]
    cost_model = CostModel.from_dict(ctx.cost_model)
    timesteps = scheduler_timesteps(scheduler, sampler.steps, sampler.timesteps)
    counted = sum(blocks_per_call(schedule, timesteps))
    if counted != m.block_evals:  # the cost model's calls are not the ones that ran
        raise RuntimeError(f"the hooks ran {m.block_evals} block evaluations per sample but the "
                           f"schedule's plan over the scheduler's timesteps counts {counted}")
    latency = cost_model.latency(schedule, timesteps)
    ref = reference_config
    ref_timesteps = scheduler_timesteps(
        load_scheduler(folder, ref.name, timestep_spacing=ref.timestep_spacing,
                       explicit=ref.timesteps is not None), ref.steps, ref.timesteps)
    grid = grid_png(m.images[:cfg["grid"]]) if cfg["grid"] > 0 else None
    return _result(schedule, sampler, m.metrics, seeds, latency=latency,
                   reference_latency=cost_model.latency(None, ref_timesteps),
                   lever_acceleration=1.0 - latency / cost_model.latency(None, timesteps),
                   block_acceleration=m.block_acceleration, block_evals=m.block_evals,
                   finetune_steps=0, split=split, started=t0, grid=grid)


def _self_reference(ctx: TrialContext, identity: str, draw: Callable[[int], Any]) -> Any:
    """The ``fid_data self`` reference of a study (:class:`~ase_search.measure.SelfReference`):
    the full model at the study's reference configuration, from each measured seed (paired) and
    from :data:`SELF_REFERENCE_SEED` (the FID set), drawn by ``draw(seed)``. Each seed is sampled
    once and cached as a tensor file under ``ctx.cache_dir``, named by ``identity`` (what the
    model holds), the sampler and the sampling settings, so changed weights never read stale
    samples."""
    import torch

    from ase_search.files import atomic_write
    from ase_search.measure import SELF_REFERENCE_SEED, SelfReference, check_finite_samples

    cfg = ctx.config
    ref = reference_sampler(cfg, ctx.space)
    key = (f"{identity[:12]}-{ref.describe().replace(' ', '-').replace(',', '_')}"
           f"-cfg{ref.cfg_scale:g}-n{cfg['n_samples']}-b{cfg['batch_size']}")

    def images(seed: int) -> Any:
        path = None if ctx.cache_dir is None else Path(ctx.cache_dir) / f"{key}-seed{seed}.pt"
        if path is not None and path.is_file():
            return torch.load(path, weights_only=True)
        out = draw(seed)
        check_finite_samples(out)
        if path is not None:  # atomic: trials running at once may write the same seed
            atomic_write(path, lambda tmp: torch.save(out, tmp))
        return out

    return SelfReference(paired=images, distribution=images(SELF_REFERENCE_SEED))


def _diffusers_self_reference(ctx: TrialContext, transformer: Any, device: str) -> Any:
    """A diffusers study's ``fid_data self`` reference: the folder's transformer, unhooked."""
    from ase_search.integrations.diffusers import (
        load_scheduler,
        sample_diffusers,
        transformer_fingerprint,
    )

    cfg = ctx.config
    ref = reference_sampler(cfg, ctx.space)
    scheduler = load_scheduler(cfg["diffusers"], ref.name, timestep_spacing=ref.timestep_spacing,
                               explicit=ref.timesteps is not None)
    return _self_reference(ctx, transformer_fingerprint(cfg["diffusers"]), lambda seed: (
        sample_diffusers(transformer, scheduler, n=cfg["n_samples"], steps=ref.steps, seed=seed,
                         cfg_scale=ref.cfg_scale, batch_size=cfg["batch_size"], device=device,
                         timesteps=ref.timesteps).images))


def _native_self_reference(ctx: TrialContext, device: str) -> Any:
    """A native study's ``fid_data self`` reference: the full model on the starting weights (the
    model as its user has it, never fine-tuned), whatever weights the trial runs."""
    import functools

    from ase_search.samplers import sample
    from ase_search.files import file_sha256
    from ase_search.testbed import TESTBEDS, load_model

    cfg = ctx.config
    ref = reference_sampler(cfg, ctx.space)
    digest = file_sha256(cfg.get("checkpoint") or TESTBEDS[cfg["arch"]].path)

    @functools.cache
    def model() -> Any:  # loaded only when a draw is not cached yet
        return load_model(cfg["arch"], cfg.get("checkpoint")).to(device)

    return _self_reference(ctx, digest, lambda seed: (
        sample(model(), sampler=ref, n=cfg["n_samples"], batch_size=cfg["batch_size"],
               seed=seed, device=device).images))


def _check_inputs_here(ctx: TrialContext) -> None:
    """Refuse, naming the path and the node, an input that does not exist where the trial runs
    (a path on the driver's disk only, when the trial runs on another node)."""
    import socket

    cfg = ctx.config
    inputs = {"--data": cfg.get("data"), "--fid-data": cfg.get("fid_data"),
              "--fid-weights": cfg.get("fid_weights"), "--vae": cfg.get("vae"),
              "--diffusers": cfg.get("diffusers")}
    if ctx.weights_bytes is None:
        inputs["weights"] = ctx.weights
    for flag, value in inputs.items():
        if value and value.lower() not in ("mnist", "self") and not Path(value).exists():
            raise FileNotFoundError(
                f"{flag} {value} does not exist on node {socket.gethostname()}, where this trial "
                f"runs; put it at that path on every node (a shared file system)")


@contextmanager
def _weights_file(ctx: TrialContext) -> Iterator[str]:
    """A path holding the trial's starting weights: ``ctx.weights``, or the shipped bytes in a
    temporary file with the same name (its suffix tells the checkpoint format)."""
    if ctx.weights_bytes is None:
        yield ctx.weights
        return
    with tempfile.TemporaryDirectory(prefix="ase-search-weights-") as folder:
        path = Path(folder) / Path(ctx.weights).name
        path.write_bytes(ctx.weights_bytes)
        yield str(path)

