"""Measure an exit schedule: the one path from a schedule to its figures.

* :func:`measure_schedule`: schedule -> samples (common random numbers) -> decoded images (latent
  models) -> FID -> predicted cost. :func:`ase_search.evaluate.evaluate`, every search trial and
  the benchmarks' cells call it (what each call computes comes from :mod:`ase_search.callplan`).
* :func:`time_sampling_runs`: whole sampling runs timed, interleaved, for measured latency.

The accelerations a schedule is reported with, one name per meaning:

* ``block_acceleration``: share of exitable-block evaluations skipped
  (:func:`ase_search.callplan.block_acceleration`);
* ``flop_acceleration``: share of the network's FLOPs skipped, every layer counted
  (:func:`ase_search.metrics.latency.flop_acceleration`);
* ``predicted_acceleration``: the cost model's ``1 - latency / latency(full)``
  (:meth:`ase_search.metrics.latency.CostModel.acceleration`);
* ``measured_acceleration``: the same share of measured wall-clock time
  (:func:`ase_search.evaluate.benchmark_latency`).

The metrics, the samplers and torch are imported inside the functions that use them.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase_search.callplan import Calls, block_acceleration, blocks_per_call
from ase_search.schedule import ExitSchedule, preset

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ase_search.metrics.fid import FIDConfig
    from ase_search.metrics.latency import CostModel
    from ase_search.samplers import SamplerConfig
    from ase_search.vae import LatentDecoder

__all__ = [
    "GRID_SAMPLES",
    "Measurement",
    "QUALITY_N",
    "SELF_REFERENCE_SEED",
    "SampleQuality",
    "SelfReference",
    "check_fid_reference",
    "check_finite_samples",
    "check_positive_int",
    "check_schedule",
    "fid_images",
    "measure_sample_quality",
    "measure_schedule",
    "paired_rmse",
    "time_sampling_runs",
]

# Samples of the first seed a measurement keeps for a sample grid, by default.
GRID_SAMPLES = 64

# ###################################################################### checks
def check_schedule(model: nn.Module, schedule: ExitSchedule | None,
                   name: str = "schedule") -> ExitSchedule:
    """The schedule to run on ``model``: ``schedule``, or every block when it is ``None``.

    Raises:
        ValueError: ``schedule`` is not an :class:`ExitSchedule` or is built for another model.
    """
    if schedule is None:
        return preset("full", model.arch, model.exit_depth)
    if not isinstance(schedule, ExitSchedule):
        raise ValueError(f"{name} must be an ExitSchedule or None, got {type(schedule).__name__}")
    if schedule.arch != model.arch or schedule.depth != model.exit_depth:
        raise ValueError(
            f"{name} {schedule.name!r} is for {schedule.arch} with {schedule.depth} exitable "
            f"blocks but the model is {model.arch} with {model.exit_depth}; build it for this "
            f"model (e.g. preset(name, {model.arch!r}, {model.exit_depth}))"
        )
    return schedule


def check_finite_samples(images: torch.Tensor, what: str = "sampling") -> None:
    """Refuse samples holding NaN or inf, which no image format or FID can represent.

    Raises:
        FloatingPointError: with a message that says the model diverged and what to try.
    """
    import torch

    if not bool(torch.isfinite(images).all()):
        raise FloatingPointError(
            f"{what} diverged: the model produced NaN/inf samples, so its weights are not usable "
            f"(a fine-tune that diverged?); fine-tune again with a lower --lr, or use another "
            f"--checkpoint"
        )


def check_fid_reference(model: nn.Module, reference: str, decoder: LatentDecoder | None) -> None:
    """Fail fast on a FID reference that the samples (decoded by ``decoder``) cannot be scored
    against: builds the reference data set at the samples' resolution and channels.

    Raises:
        ValueError: a decoder that does not fit the model, a latent model without a decoder.
        ase_search.data.DataError: the reference is not ``"mnist"`` or a folder of images.
    """
    from ase_search.data import DataError, build_dataset
    from ase_search.samplers import PIXEL_CHANNELS

    name = getattr(model, "model_name", type(model).__name__)
    if decoder is not None:
        from ase_search.vae import LatentDecoder

        if not isinstance(decoder, LatentDecoder):
            raise ValueError(f"decoder must be a LatentDecoder (ase_search.vae.load_vae) or None, "
                             f"got {type(decoder).__name__}")
        if decoder.latent_channels != model.in_channels:
            raise ValueError(
                f"the VAE decodes {decoder.latent_channels}-channel latents but {name} samples "
                f"{model.in_channels} channels; pass the VAE the model's latents come from"
            )
        resolution = decoder.image_size(model.input_size)
        channels = decoder.out_channels
    elif model.in_channels not in PIXEL_CHANNELS:
        raise ValueError(
            f"{name} has in_channels={model.in_channels}: its samples are latents, not images, "
            f"and FID needs images. Pass a VAE (decoder=load_vae(PATH); --vae PATH on the "
            f"command line) and a folder of images as the FID reference"
        )
    else:
        resolution, channels = model.input_size, model.in_channels
    if (isinstance(reference, str) and reference.lower() != "mnist"
            and Path(reference).expanduser().is_file()):
        raise DataError(
            f"FID reference {reference!r} is a file, not images; FID needs 'mnist' or a folder of "
            f"images" + (" (a latents file is for fine-tuning, not for FID)"
                         if decoder is not None or model.in_channels not in PIXEL_CHANNELS else "")
        )
    build_dataset(reference, resolution=resolution, channels=channels)


def fid_images(samples: torch.Tensor, decoder: LatentDecoder | None) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` for FID: the samples, or their decoding for latents."""
    from ase_search.images import to_uint8

    return to_uint8(samples) if decoder is None else decoder.decode_uint8(samples)


def check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


# ###################################################################### the measurement
@dataclass(frozen=True)
class Measurement:
    """What :func:`measure_schedule` returns.

    Attributes:
        schedule: the exit schedule measured.
        sampler: the sampler and its settings.
        n: samples per seed.
        seeds: the seeds, in order.
        reference: the FID reference data set spec.
        fid_config: how FID was measured.
        metrics: per seed, ``{"fid": ...}`` plus KID / precision-recall when asked for.
        block_evals: exitable-block evaluations per sample trajectory.
        model_calls: model calls per sample trajectory.
        depth: exitable depth of the model.
        cost_model: the component profile the prediction comes from.
        latency: the cost model's seconds to sample one batch with ``schedule``.
        predicted_acceleration: the cost model's ``1 - latency / latency(full)``.
        seconds: wall-clock seconds over all seeds of ``"sampling"``, ``"decode"`` (latent
            models only) and ``"fid"``.
        images: ``(k, C, H, W)`` in ``[-1, 1]``: the first samples of the first seed (decoded
            images for a latent model).
        vae: the VAE folder that decoded the samples; ``None`` for a pixel-space model.
    """

    schedule: ExitSchedule
    sampler: SamplerConfig
    n: int
    seeds: tuple[int, ...]
    reference: str
    fid_config: FIDConfig
    metrics: tuple[dict[str, float], ...]
    block_evals: int
    model_calls: int
    depth: int
    cost_model: CostModel
    latency: float
    predicted_acceleration: float
    seconds: dict[str, float]
    images: torch.Tensor = field(repr=False, compare=False)
    vae: str | None = None

    @property
    def block_acceleration(self) -> float:
        """Share of exitable-block evaluations skipped: ``1 - block_evals / (depth * calls)``."""
        return 1.0 - self.block_evals / (self.depth * self.model_calls)

    def mean(self, key: str = "fid") -> float:
        """Mean of metric ``key`` over seeds."""
        return statistics.fmean(m[key] for m in self.metrics)

    def std(self, key: str = "fid") -> float | None:
        """Sample standard deviation (``ddof = 1``) of ``key`` over seeds; ``None`` for one seed."""
        if len(self.metrics) < 2:
            return None
        return statistics.stdev(m[key] for m in self.metrics)

    @property
    def metric_names(self) -> list[str]:
        return list(self.metrics[0])


# The seed of the independent draw a ``self`` reference measures FID against (no trial, baseline
# point, confirmation or evaluation samples it: seeds count from 0 up).
SELF_REFERENCE_SEED = 999_983


@dataclass(frozen=True)
class SelfReference:
    """The full model's own samples as a measurement's reference (no data set needed): a
    data-free screening objective, the distance to what the model would sample anyway.

    Attributes:
        paired: ``seed -> (n, C, H, W)`` samples from the same noise and labels as the measured
            ones, for the paired per-image distance (:func:`paired_rmse`).
        distribution: an independent draw of the same model and configuration, the set FID is
            measured against; the full model then scores the FID between two of its own draws
            (the noise floor) rather than 0, so "within 1.25x the reference's FID" keeps a
            meaning.
    """

    paired: Callable[[int], torch.Tensor]
    distribution: torch.Tensor


def paired_rmse(images: torch.Tensor, reference: torch.Tensor) -> float:
    """The root-mean-square pixel difference of each image and its reference (samples in
    ``[-1, 1]``, measured in ``[0, 1]``), averaged over the images."""
    if images.shape != reference.shape:
        raise ValueError(f"the reference samples have shape {tuple(reference.shape)}, the "
                         f"measured ones {tuple(images.shape)}")
    diff = (images.float() - reference.float()) / 2.0
    return float(diff.flatten(1).pow(2).mean(1).sqrt().mean())


def measure_schedule(
    model: nn.Module,
    schedule: ExitSchedule | None,
    *,
    sampler: SamplerConfig,
    n: int,
    seeds: Sequence[int] = (0,),
    reference: str | SelfReference = "mnist",
    fid_config: FIDConfig | None = None,
    decoder: LatentDecoder | None = None,
    cost_model: CostModel | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
    keep_images: int = GRID_SAMPLES,
) -> Measurement:
    """Sample ``n`` images per seed with ``schedule``, score them with FID, predict their cost.

    Seeds are common random numbers (see :mod:`ase_search.samplers`): seed ``s`` draws the same
    labels and noise whatever the schedule, so two schedules measured with the same seeds differ
    only by the blocks they skip. The reference data and the extractor weights are checked before
    anything is sampled, so a wrong path fails in seconds rather than after the sampling. A
    latent-space model (``in_channels`` not 1 or 3, e.g. DiT-XL/2's 4) needs ``decoder``: its
    samples are decoded to images before FID, and ``reference`` is then a folder of images at the
    decoded resolution.

    Args:
        model: an ase-search model (see :mod:`ase_search.models`).
        schedule: the exit schedule; ``None`` runs every block.
        sampler: solver and steps (``cfg_scale`` included).
        n: samples per seed (>= 2, FID needs a covariance).
        seeds: seeds of the common random numbers; one FID per seed.
        reference: FID reference data set spec: ``"mnist"`` or a folder of images; or a
            :class:`SelfReference` (FID against the full model's own independent draw, and
            ``paired_rmse`` against its samples from the same seed).
        fid_config: FID settings; ``None`` for FID-MNIST (the shipped digit classifier).
        decoder: the VAE of a latent-space model (:func:`ase_search.vae.load_vae`); it is moved
            to ``device``.
        cost_model: component profile for the predicted cost; ``None`` profiles ``model`` at
            ``batch_size`` on ``device``.
        batch_size: samples per model call.
        device: where the model runs.
        progress: show sampling progress bars on stderr.
        keep_images: how many samples of the first seed to keep on the result.

    Returns:
        A :class:`Measurement`.

    Raises:
        ValueError: bad arguments, a schedule or cost model for another model, unusable
            reference data or FID weights, a latent model without a decoder.
        FloatingPointError: the model produced NaN/inf samples, or FID is not finite.
    """
    import torch

    from ase_search.metrics.fid import FIDConfig, compute_fid, extractor_weights
    from ase_search.metrics.latency import profile_components
    from ase_search.samplers import SamplerConfig, sample

    if not isinstance(sampler, SamplerConfig):
        raise ValueError(f"sampler must be a SamplerConfig, got {type(sampler).__name__}")
    schedule = check_schedule(model, schedule, "schedule")
    check_positive_int("n", n, 2)
    check_positive_int("batch_size", batch_size)
    check_positive_int("keep_images", keep_images, 0)
    seeds = tuple(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct (a repeated seed repeats its samples), got "
                         f"{list(seeds)}")
    fid_config = FIDConfig() if fid_config is None else fid_config
    if not isinstance(fid_config, FIDConfig):
        raise ValueError(f"fid_config must be a FIDConfig, got {type(fid_config).__name__}")
    if cost_model is not None and (cost_model.arch, cost_model.depth) != (model.arch,
                                                                           model.exit_depth):
        raise ValueError(
            f"cost_model was profiled on {cost_model.arch} with {cost_model.depth} exitable "
            f"blocks, not on this {model.arch} with {model.exit_depth}; pass cost_model=None"
        )
    # Fail fast: both raise naming the path before minutes of sampling.
    self_ref = isinstance(reference, SelfReference)
    if not self_ref:
        check_fid_reference(model, reference, decoder)
    extractor_weights(fid_config)

    device = torch.device(device)
    model = model.to(device).eval()
    if decoder is not None:
        decoder = decoder.to(device)
    if cost_model is None:
        cost_model = profile_components(model, batch_size=batch_size, device=str(device))
    # Under guidance every call runs a doubled batch for every schedule alike, so the shares of
    # cost skipped are those of one unguided call.
    latency = cost_model.latency(schedule, sampler)
    predicted = cost_model.acceleration(schedule, sampler)

    seconds = {"sampling": 0.0, **({"decode": 0.0} if decoder is not None else {}), "fid": 0.0}
    metrics, images = [], None
    block_evals = model_calls = 0
    for seed in seeds:
        t0 = time.perf_counter()
        out = sample(model, sampler=sampler, schedule=schedule, n=n, batch_size=batch_size,
                     seed=seed, device=device, progress=progress)
        seconds["sampling"] += time.perf_counter() - t0
        check_finite_samples(out.images, f"sampling (seed {seed})")
        t0 = time.perf_counter()
        scored = fid_images(out.images, decoder)  # (n, C, H, W) uint8
        if decoder is not None:
            seconds["decode"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        if self_ref:
            values = compute_fid(scored, reference=fid_images(reference.distribution, decoder),
                                 config=fid_config)
            values["paired_rmse"] = paired_rmse(out.images, reference.paired(seed))
        else:
            values = compute_fid(scored, reference=reference, config=fid_config)
        seconds["fid"] += time.perf_counter() - t0
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"FID is not finite (seed {seed}): {values}")
        metrics.append(values)
        if images is None:
            images = (out.images[:keep_images].clone() if decoder is None  # (k, C, H, W)
                      else scored[:keep_images].float() / 127.5 - 1.0)
        block_evals, model_calls = out.block_evals, out.model_calls
    return Measurement(
        schedule=schedule,
        sampler=sampler,
        n=n,
        seeds=seeds,
        reference="self" if self_ref else reference,
        fid_config=fid_config,
        metrics=tuple(metrics),
        block_evals=block_evals,
        model_calls=model_calls,
        depth=model.exit_depth,
        cost_model=cost_model,
        latency=latency,
        predicted_acceleration=predicted,
        seconds=seconds,
        images=images,
        vae=None if decoder is None else decoder.path,
    )


# ###################################################################### sample quality
QUALITY_N = 1000  # samples per seed of the testbed quality bar (issue #4: "of 1,000 samples")


@dataclass(frozen=True)
class SampleQuality:
    """What :func:`measure_sample_quality` returns.

    Attributes:
        sampler: the sampler and its settings.
        n: samples per seed.
        seeds: the sample seeds, in order.
        threshold: the top-1 probability a sample needs to count as confident.
        fids: FID-MNIST per seed.
        confidents: per seed, the share of samples the calibrated digit classifier gives a top-1
            probability >= ``threshold``.
        images: ``(k, C, H, W)`` in ``[-1, 1]``: the first samples of the first seed, for a grid.
    """

    sampler: SamplerConfig
    n: int
    seeds: tuple[int, ...]
    threshold: float
    fids: tuple[float, ...]
    confidents: tuple[float, ...]
    images: torch.Tensor = field(repr=False, compare=False)

    @property
    def fid(self) -> float:
        """Mean FID-MNIST over seeds."""
        return statistics.fmean(self.fids)

    @property
    def confident(self) -> float:
        """Mean share of confident samples over seeds."""
        return statistics.fmean(self.confidents)


def measure_sample_quality(
    model: nn.Module,
    *,
    sampler: SamplerConfig,
    seeds: Sequence[int],
    n: int = QUALITY_N,
    threshold: float = 0.9,
    batch_size: int = 250,
    device: str | torch.device = "cpu",
    keep_images: int = 100,
) -> SampleQuality:
    """How readable a pixel-space digit model's samples are, with every block run.

    For each seed, :func:`measure_schedule` samples ``n`` images with the full model and scores
    their FID-MNIST; the calibrated digit classifier
    (:func:`ase_search.metrics.extractor.classifier_confidence`) then reads every sample, and the
    share it gives a top-1 probability >= ``threshold`` is that seed's confident share. The cost
    model is profiled once, for the first seed.

    Args:
        model: an ase-search model sampling MNIST-like images.
        sampler: solver and steps.
        seeds: sample seeds (common random numbers); one FID and one share per seed.
        n: samples per seed.
        threshold: the top-1 probability that counts as confident.
        batch_size: samples per model call.
        device: where the model runs.
        keep_images: how many samples of the first seed to keep for a grid.

    Raises:
        ValueError: bad arguments (see :func:`measure_schedule`), or ``threshold`` outside
            ``(0, 1]``.
    """
    from ase_search.metrics.extractor import classifier_confidence

    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    check_positive_int("keep_images", keep_images, 0)
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    fids, confidents, images, cost_model = [], [], None, None
    for seed in seeds:
        # every sample kept: the classifier reads them all
        m = measure_schedule(model, None, sampler=sampler, n=n, seeds=(seed,),
                             cost_model=cost_model, batch_size=batch_size, device=device,
                             keep_images=n)
        cost_model = m.cost_model
        top1 = classifier_confidence(m.images).max(dim=1).values  # (n,)
        fids.append(m.metrics[0]["fid"])
        confidents.append(float((top1 >= threshold).float().mean()))
        images = m.images[:keep_images] if images is None else images
    return SampleQuality(sampler=sampler, n=n, seeds=seeds, threshold=threshold,
                         fids=tuple(fids), confidents=tuple(confidents), images=images)


# ###################################################################### measured latency
def time_sampling_runs(model: nn.Module, configs: dict[str, tuple[ExitSchedule | None, Any]], *,
                       batch_size: int, rounds: int = 5,
                       device: str | torch.device = "cpu") -> dict[str, TimedRun]:
    """Time each configuration's whole sampling run of ``batch_size`` samples, interleaved
    (:func:`~ase_search.metrics.latency.time_interleaved`).

    Unlike the cost model, which times the network's parts, this times everything the sampler
    runs, so it checks the cost model where it was never validated (block reuse, forecast,
    DPM-Solver++).

    Args:
        model: the network (weights do not matter for time).
        configs: name -> (schedule, :class:`~ase_search.samplers.SamplerConfig`).
        batch_size: samples of one run.
        rounds: timed rounds (>= 1).
        device: where to run.
    """
    import torch

    from ase_search.metrics.latency import time_interleaved
    from ase_search.samplers import sample

    check_positive_int("batch_size", batch_size)
    device = torch.device(device)
    model = model.to(device)

    def run(schedule: ExitSchedule | None, sampler: Any) -> Callable[[], Any]:
        return lambda: sample(model, sampler=sampler, schedule=schedule, n=batch_size,
                              batch_size=batch_size, seed=0, device=device)

    return time_interleaved({name: run(*config) for name, config in configs.items()},
                            rounds=rounds, device=device)
