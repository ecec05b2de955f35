"""Evaluate exit schedules: FID over seeds, and measured against predicted acceleration.

:func:`evaluate` samples ``n`` images per seed with an exit schedule and scores them with FID
against a reference data set. Seeds are common random numbers (see :mod:`ase_search.samplers`):
seed ``s`` draws the same labels and noise whatever the schedule, so two schedules evaluated with
the same seeds differ only by the blocks they skip. A latent-space model's samples (DiT-XL/2's
``4 x 32 x 32`` SD-VAE latents) are decoded by a :class:`~ase_search.vae.LatentDecoder` first and
scored against a folder of images. FID is reported as mean +- standard deviation
over seeds, as in the paper's Tables 3 and 4, next to three accelerations:

* block count: ``1 - block_evals / (depth * model_calls)``, the share of exitable blocks skipped;
* cost model: :class:`~ase_search.metrics.latency.CostModel`'s prediction from profiled components;
* FLOP ideal: the share of the network's FLOPs skipped, every layer counted.

:func:`benchmark_latency` measures the real wall-clock acceleration of schedules (interleaved
rounds, median) next to the cost model's prediction and the FLOP ideal.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ase_search.metrics.fid import FIDConfig
from ase_search.metrics.latency import CostModel
from ase_search.samplers import PIXEL_CHANNELS, SamplerConfig
from ase_search.schedule import ExitSchedule, preset

if TYPE_CHECKING:
    import pandas as pd

    from ase_search.vae import LatentDecoder

__all__ = [
    "EvalResult",
    "benchmark_latency",
    "check_finite_samples",
    "evaluate",
    "latency_markdown",
    "machine_info",
]

# Samples of the first seed kept on the result for a sample grid.
GRID_SAMPLES = 64
# Bootstrap resamples for the standard error of a measured acceleration.
_BOOTSTRAP = 2000


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate` returns.

    Attributes:
        schedule: the exit schedule evaluated.
        sampler: the sampler and its settings.
        n: samples per seed.
        seeds: the seeds, in order.
        data: reference data set spec of the FID.
        fid_config: how FID was measured.
        metrics: per seed, ``{"fid": ...}`` plus KID / precision-recall when asked for.
        block_evals: exitable-block evaluations per sample trajectory.
        model_calls: model calls per sample trajectory.
        depth: exitable depth of the model.
        predicted_acceleration: the cost model's ``1 - latency / latency(full)``.
        ideal_acceleration: share of the network FLOPs skipped over the sampler's calls.
        cost_model: the component profile the prediction comes from.
        seconds: wall-clock seconds of sampling and FID, all seeds.
        images: ``(k, C, H, W)`` in ``[-1, 1]``: the first ``k <= 64`` samples of the first seed
            (decoded images for a latent model).
        vae: the VAE folder that decoded the samples; ``None`` for a pixel-space model.
    """

    schedule: ExitSchedule
    sampler: SamplerConfig
    n: int
    seeds: tuple[int, ...]
    data: str
    fid_config: FIDConfig
    metrics: tuple[dict[str, float], ...]
    block_evals: int
    model_calls: int
    depth: int
    predicted_acceleration: float
    ideal_acceleration: float
    cost_model: CostModel
    seconds: float
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (without the images)."""
        return {
            "schedule": self.schedule.to_dict(),
            "sampler": self.sampler.to_dict(),
            "n": self.n,
            "seeds": list(self.seeds),
            "data": self.data,
            "vae": self.vae,
            "fid_config": {
                "extractor": self.fid_config.extractor,
                "fid_weights": self.fid_config.fid_weights,
                "kid": self.fid_config.kid,
                "prc": self.fid_config.prc,
                "feature_layer": self.fid_config.feature_layer,
            },
            "per_seed": [dict(m) for m in self.metrics],
            **{f"{k}_mean": self.mean(k) for k in self.metric_names},
            **{f"{k}_std": self.std(k) for k in self.metric_names},
            "block_evals": self.block_evals,
            "model_calls": self.model_calls,
            "depth": self.depth,
            "block_acceleration": self.block_acceleration,
            "predicted_acceleration": self.predicted_acceleration,
            "ideal_acceleration": self.ideal_acceleration,
            "cost_model": self.cost_model.to_dict(),
            "seconds": self.seconds,
        }


def check_finite_samples(images: torch.Tensor, what: str = "sampling") -> None:
    """Refuse samples holding NaN or inf, which no image format or FID can represent.

    Raises:
        FloatingPointError: with a message that says the model diverged and what to try.
    """
    if not bool(torch.isfinite(images).all()):
        raise FloatingPointError(
            f"{what} diverged: the model produced NaN/inf samples, so its weights are not usable "
            f"(a fine-tune that diverged?); fine-tune again with a lower --lr, or use another "
            f"--checkpoint"
        )


def _check_schedule(model: nn.Module, schedule: ExitSchedule | None, name: str) -> ExitSchedule:
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


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_fid_reference(model: nn.Module, data: str, decoder: LatentDecoder | None) -> None:
    """Fail fast on a FID reference the samples (decoded by ``decoder``) cannot be scored
    against; builds the reference data set at the samples' resolution and channels."""
    from ase_search.data import DataError, build_dataset

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
    if isinstance(data, str) and data.lower() != "mnist" and Path(data).expanduser().is_file():
        raise DataError(
            f"FID reference {data!r} is a file, not images; FID needs 'mnist' or a folder of "
            f"images" + (" (a latents file is for fine-tuning, not for FID)"
                         if decoder is not None or model.in_channels not in PIXEL_CHANNELS else "")
        )
    build_dataset(data, resolution=resolution, channels=channels)


def _fid_images(samples: torch.Tensor, decoder: LatentDecoder | None) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` for FID: the samples, or their decoding for latents."""
    from ase_search.report import to_uint8

    return to_uint8(samples) if decoder is None else decoder.decode_uint8(samples)


def evaluate(
    model: nn.Module,
    schedule: ExitSchedule | None,
    *,
    sampler: SamplerConfig,
    n: int,
    seeds: Sequence[int] = (0,),
    data: str = "mnist",
    fid_config: FIDConfig | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    cost_model: CostModel | None = None,
    progress: bool = False,
    decoder: LatentDecoder | None = None,
) -> EvalResult:
    """Sample ``n`` images per seed with ``schedule`` and measure FID against ``data``.

    The reference data and the extractor weights are checked before anything is sampled, so a
    wrong path fails in seconds rather than after the sampling. A latent-space model (its
    ``in_channels`` is not 1 or 3, e.g. DiT-XL/2's 4) needs ``decoder``: its samples are decoded
    to images before FID, and ``data`` is then a folder of images at the decoded resolution.

    Args:
        model: an ase-search model (see :mod:`ase_search.models`).
        schedule: the exit schedule; ``None`` runs every block.
        sampler: solver and steps (``cfg_scale`` included).
        n: samples per seed (>= 2, FID needs a covariance).
        seeds: seeds of the common random numbers; one FID per seed.
        data: reference data set spec: ``"mnist"`` or a folder of images.
        fid_config: FID settings; ``None`` for FID-MNIST (the shipped digit classifier).
        batch_size: samples per model call, also the batch the cost model is profiled at.
        device: where the model runs.
        cost_model: component profile for the predicted acceleration; ``None`` profiles ``model``.
        progress: show sampling progress bars on stderr.
        decoder: the VAE of a latent-space model (:func:`ase_search.vae.load_vae`); it is moved
            to ``device``.

    Returns:
        An :class:`EvalResult`.

    Raises:
        ValueError: bad arguments, a schedule for another model, unusable data or FID weights,
            a latent model without a decoder.
    """
    from ase_search.metrics.fid import _resolve_weights, compute_fid
    from ase_search.metrics.latency import ideal_acceleration, profile_components
    from ase_search.samplers import sample

    if not isinstance(sampler, SamplerConfig):
        raise ValueError(f"sampler must be a SamplerConfig, got {type(sampler).__name__}")
    schedule = _check_schedule(model, schedule, "schedule")
    _check_positive_int("n", n, 2)
    _check_positive_int("batch_size", batch_size)
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
    # Fail fast: both raise a ValueError naming the path before minutes of sampling.
    _check_fid_reference(model, data, decoder)
    _resolve_weights(fid_config)

    device = torch.device(device)
    model = model.to(device).eval()
    if decoder is not None:
        decoder = decoder.to(device)
    times = sampler.model_times()
    if cost_model is None:
        cost_model = profile_components(model, batch_size=batch_size, device=str(device))
    # Under guidance every call runs a doubled batch for every schedule alike, so the shares of
    # cost skipped are those of one unguided call.
    predicted = cost_model.acceleration(schedule, times)
    ideal = ideal_acceleration(model, schedule, times)

    t0 = time.perf_counter()
    metrics, images = [], None
    block_evals = model_calls = 0
    for seed in seeds:
        out = sample(model, sampler=sampler, schedule=schedule, n=n, batch_size=batch_size,
                     seed=seed, device=device, progress=progress)
        check_finite_samples(out.images, f"sampling (seed {seed})")
        fid_images = _fid_images(out.images, decoder)  # (n, C, H, W) uint8
        metrics.append(compute_fid(fid_images, reference=data, config=fid_config))
        if images is None:
            images = (out.images[:GRID_SAMPLES].clone() if decoder is None  # (k, C, H, W)
                      else fid_images[:GRID_SAMPLES].float() / 127.5 - 1.0)
        block_evals, model_calls = out.block_evals, out.model_calls
    return EvalResult(
        schedule=schedule,
        sampler=sampler,
        n=n,
        seeds=seeds,
        data=data,
        fid_config=fid_config,
        metrics=tuple(metrics),
        block_evals=block_evals,
        model_calls=model_calls,
        depth=model.exit_depth,
        predicted_acceleration=predicted,
        ideal_acceleration=ideal,
        cost_model=cost_model,
        seconds=time.perf_counter() - t0,
        images=images,
        vae=None if decoder is None else decoder.path,
    )


# ###################################################################### latency benchmark
def _is_full(schedule: ExitSchedule | None) -> bool:
    return schedule is None or schedule.is_full


def benchmark_latency(
    model: nn.Module,
    schedules: Mapping[str, ExitSchedule | None],
    *,
    sampler: SamplerConfig,
    batch_size: int = 256,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    cost_model: CostModel | None = None,
) -> pd.DataFrame:
    """Measured wall-clock acceleration of each schedule, next to the predicted and ideal ones.

    The network calls of one sampling run (``sampler.model_times()``, one batch of
    ``batch_size``) are timed for every schedule, interleaved call by call
    (:func:`~ase_search.metrics.latency.sampling_latency_samples`); a schedule's latency is the
    sum over its calls of the median over ``repeats`` rounds, as
    :func:`~ase_search.metrics.latency.sampling_latencies` computes it. A full-depth run is
    always timed as the baseline (added as row ``"full"`` when no schedule runs every block).

    Args:
        model: an ase-search model (weights do not matter for latency).
        schedules: display name -> schedule (``None`` runs every block).
        sampler: whose model calls are timed.
        batch_size: samples per model call.
        repeats: timed rounds (one warm-up round comes first).
        device: where to run.
        cost_model: component profile for the prediction; ``None`` profiles ``model`` first.

    Returns:
        One row per schedule, columns ``schedule``, ``blocks`` (counts per interval),
        ``intervals`` (intervals and counts),
        ``block_acceleration``, ``ideal_acceleration`` (FLOPs, every layer),
        ``predicted_acceleration`` (cost model), ``measured_acceleration`` and its standard error
        ``measured_acceleration_se`` (bootstrap over rounds; NaN for one round), ``measured_over_ideal`` and ``measured_over_ideal_se`` (NaN where the
        ideal is 0), ``measured_s`` and ``predicted_s`` (seconds of one sampling run's network
        calls). ``df.attrs`` holds the settings, the cost model and the raw call timings.
    """
    import numpy as np
    import pandas as pd

    from ase_search.metrics.latency import (
        ideal_acceleration,
        profile_components,
        sampling_latency_samples,
    )

    if not isinstance(sampler, SamplerConfig):
        raise ValueError(f"sampler must be a SamplerConfig, got {type(sampler).__name__}")
    if not isinstance(schedules, Mapping) or not schedules:
        raise ValueError("schedules must be a non-empty mapping of name -> ExitSchedule")
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("repeats", repeats)
    plans = {str(name): _check_schedule(model, s, f"schedules[{name!r}]")
             for name, s in schedules.items()}
    baseline = next((name for name, s in plans.items() if _is_full(s)), None)
    if baseline is None:
        baseline = "full"
        if baseline in plans:
            raise ValueError("a schedule named 'full' must run every block; rename it")
        plans = {baseline: preset("full", model.arch, model.exit_depth), **plans}

    device = torch.device(device)
    model = model.to(device).eval()
    times = sampler.model_times()
    if cost_model is None:
        cost_model = profile_components(model, batch_size=batch_size, device=str(device))
    samples = sampling_latency_samples(model, dict(plans), times, batch_size=batch_size,
                                       device=str(device), repeats=repeats)
    # Latency: sum over calls of the median over rounds (as sampling_latencies). Its standard
    # error: a bootstrap over rounds, resampled jointly for all schedules since a round's calls
    # ran side by side.
    arrays = {name: np.asarray(per_call) for name, per_call in samples.items()}  # (calls, R)
    measured = {name: float(np.median(a, axis=1).sum()) for name, a in arrays.items()}
    rounds = np.random.default_rng(0).integers(0, repeats, size=(_BOOTSTRAP, repeats))
    boot = {name: np.median(a[:, rounds], axis=2).sum(axis=0)  # (B,)
            for name, a in arrays.items()}

    rows = []
    for name, s in plans.items():
        block = 1.0 - sum(s.blocks_at(m / 1000) for m in times) / (s.depth * len(times))
        ideal = ideal_acceleration(model, s, times)
        accel = 1.0 - measured[name] / measured[baseline]
        se = float(np.std(1.0 - boot[name] / boot[baseline], ddof=1)) if repeats > 1 else math.nan
        rows.append({
            "schedule": name,
            "blocks": " ".join(str(k) for k in s.blocks),
            "intervals": s.describe(),
            "block_acceleration": block,
            "ideal_acceleration": ideal,
            "predicted_acceleration": cost_model.acceleration(s, times),
            "measured_acceleration": accel,
            "measured_acceleration_se": se,
            "measured_over_ideal": accel / ideal if ideal > 0 else math.nan,
            "measured_over_ideal_se": se / ideal if ideal > 0 else math.nan,
            "measured_s": measured[name],
            "predicted_s": cost_model.latency(s, times),
        })
    df = pd.DataFrame(rows)
    df.attrs.update({
        "arch": model.arch,
        "model": getattr(model, "model_name", type(model).__name__),
        "depth": model.exit_depth,
        "sampler": sampler.to_dict(),
        "batch_size": batch_size,
        "repeats": repeats,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cost_model": cost_model.to_dict(),
        "samples": samples,  # seconds of every timed call: [schedule][call][round]
    })
    return df


def machine_info() -> dict[str, Any]:
    """The machine a benchmark ran on: CPU model, cores, GPU, torch and Python versions, date."""
    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass  # not Linux: keep platform's answer
    info = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return info


def latency_markdown(df: pd.DataFrame, *, title: str | None = None) -> str:
    """A markdown section (settings line and table) for a :func:`benchmark_latency` result."""
    a = df.attrs
    lines = []
    if title:
        lines += [f"### {title}", ""]
    if a:
        s = a["sampler"]
        lines += [
            f"{a['model']} ({a['arch']}, {a['depth']} exitable blocks), {s['name']} "
            f"{s['steps']} steps, batch {a['batch_size']}, {a['device']}, "
            f"{a['threads']} thread(s), median of {a['repeats']} interleaved rounds "
            f"(± one bootstrap standard error).",
            "",
        ]
    lines += [
        "| schedule | [t interval): blocks | block accel. | FLOP-ideal accel. | "
        "cost-model accel. | measured accel. | measured / ideal | measured s | predicted s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    def pm(value: float, se: float, fmt: str, scale: float = 1.0) -> str:
        if math.isnan(value):
            return "–"
        text = format(value * scale, fmt)
        return text if math.isnan(se) or se == 0 else f"{text} ± {format(se * scale, fmt)}"

    for r in df.itertuples(index=False):
        lines.append(
            f"| {r.schedule} | `{r.intervals}` | {r.block_acceleration:.1%} | "
            f"{r.ideal_acceleration:.1%} | {r.predicted_acceleration:.1%} | "
            f"{pm(r.measured_acceleration, r.measured_acceleration_se, '.1f', 100)}% | "
            f"{pm(r.measured_over_ideal, r.measured_over_ideal_se, '.3f')} | "
            f"{r.measured_s:.3f} | {r.predicted_s:.3f} |"
        )
    return "\n".join(lines) + "\n"
