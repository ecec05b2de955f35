"""Evaluate exit schedules: FID over seeds, and measured against predicted acceleration.

:func:`evaluate` measures a schedule with :func:`ase_search.measure.measure_schedule` (samples
with common random numbers, decoded for a latent model, FID, predicted cost) and adds its FLOP
share. FID is reported as mean +- standard deviation over seeds, as in the paper's Tables 3 and
4, next to three accelerations (named as in :mod:`ase_search.measure`):

* ``block_acceleration``: ``1 - block_evals / (depth * model_calls)``, exitable blocks skipped;
* ``predicted_acceleration``: :class:`~ase_search.metrics.latency.CostModel`'s prediction from
  profiled components;
* ``flop_acceleration``: the share of the network's FLOPs skipped, every layer counted.

:func:`benchmark_latency` measures the real wall-clock acceleration of schedules (interleaved
rounds, median), the ``measured_acceleration``, next to the others.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ase_search.callplan import block_acceleration
from ase_search.measure import (
    GRID_SAMPLES,
    Measurement,
    check_positive_int,
    check_schedule,
)
from ase_search.metrics.fid import FIDConfig
from ase_search.metrics.latency import CostModel
from ase_search.samplers import SamplerConfig
from ase_search.schedule import ExitSchedule, preset

if TYPE_CHECKING:
    import pandas as pd

    from ase_search.vae import LatentDecoder

__all__ = [
    "EvalResult",
    "benchmark_latency",
    "evaluate",
    "latency_markdown",
    "machine_info",
]

# Bootstrap resamples for the standard error of a measured acceleration.
_BOOTSTRAP = 2000


@dataclass(frozen=True)
class EvalResult(Measurement):
    """What :func:`evaluate` returns: a :class:`~ase_search.measure.Measurement` and the share of
    the network's FLOPs its schedule skips.

    Attributes:
        flop_acceleration: share of the network FLOPs skipped over the sampler's calls.
    """

    flop_acceleration: float = math.nan

    @property
    def data(self) -> str:
        """The FID reference data set spec (``reference``)."""
        return self.reference

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (without the images)."""
        return {
            "schedule": self.schedule.to_dict(),
            "sampler": self.sampler.to_dict(),
            "n": self.n,
            "seeds": list(self.seeds),
            "data": self.reference,
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
            "flop_acceleration": self.flop_acceleration,
            "cost_model": self.cost_model.to_dict(),
            "seconds": sum(self.seconds.values()),
        }


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

    :func:`ase_search.measure.measure_schedule` does the measuring (see it for the checks made
    before anything is sampled, and for latent models); this adds the FLOP acceleration.

    Args:
        model, schedule, sampler, n, seeds, fid_config, batch_size, device, cost_model, progress,
            decoder: as for :func:`~ase_search.measure.measure_schedule`.
        data: ``measure_schedule``'s ``reference``, e.g. ``"mnist"`` or a folder of images.

    Returns:
        An :class:`EvalResult`.

    Raises:
        ValueError: bad arguments, a schedule for another model, unusable data or FID weights,
            a latent model without a decoder.
        FloatingPointError: the model produced NaN/inf samples, or FID is not finite.
    """
    from ase_search.measure import measure_schedule
    from ase_search.metrics.latency import flop_acceleration

    m = measure_schedule(model, schedule, sampler=sampler, n=n, seeds=seeds, reference=data,
                         fid_config=fid_config, decoder=decoder, cost_model=cost_model,
                         batch_size=batch_size, device=device, progress=progress,
                         keep_images=GRID_SAMPLES)
    return EvalResult(**{f.name: getattr(m, f.name) for f in fields(Measurement)},
                      flop_acceleration=flop_acceleration(model, m.schedule, sampler))


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
    """Measured wall-clock acceleration of each schedule, next to the block, FLOP and predicted
    ones.

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
        ``block_acceleration``, ``flop_acceleration`` (the FLOP acceleration; result files
        written before 2026-12-07 call it ``ideal_acceleration``), ``predicted_acceleration``
        (cost model),
        ``measured_acceleration`` and its standard error ``measured_acceleration_se`` (bootstrap
        over rounds; NaN for one round), ``measured_over_flop`` and ``measured_over_flop_se``
        (measured over FLOP acceleration; NaN where that is 0), ``measured_s`` and
        ``predicted_s`` (seconds of one sampling run's network calls). ``df.attrs`` holds the
        settings, the cost model and the raw call timings.
    """
    import numpy as np
    import pandas as pd

    from ase_search.metrics.latency import (
        flop_acceleration,
        profile_components,
        sampling_latencies,
        sampling_latency_samples,
    )

    if not isinstance(sampler, SamplerConfig):
        raise ValueError(f"sampler must be a SamplerConfig, got {type(sampler).__name__}")
    if not isinstance(schedules, Mapping) or not schedules:
        raise ValueError("schedules must be a non-empty mapping of name -> ExitSchedule")
    check_positive_int("batch_size", batch_size)
    check_positive_int("repeats", repeats)
    plans = {str(name): check_schedule(model, s, f"schedules[{name!r}]")
             for name, s in schedules.items()}
    baseline = next((name for name, s in plans.items() if _is_full(s)), None)
    if baseline is None:
        baseline = "full"
        if baseline in plans:
            raise ValueError("a schedule named 'full' must run every block; rename it")
        plans = {baseline: preset("full", model.arch, model.exit_depth), **plans}

    device = torch.device(device)
    model = model.to(device).eval()
    if cost_model is None:
        cost_model = profile_components(model, batch_size=batch_size, device=str(device))
    samples = sampling_latency_samples(model, dict(plans), sampler, batch_size=batch_size,
                                       device=str(device), repeats=repeats)
    # Latency: sum over calls of the median over rounds (sampling_latencies). Its standard
    # error: a bootstrap over rounds, resampled jointly for all schedules since a round's calls
    # ran side by side.
    arrays = {name: np.asarray(per_call) for name, per_call in samples.items()}  # (calls, R)
    measured = sampling_latencies(samples)
    rounds = np.random.default_rng(0).integers(0, repeats, size=(_BOOTSTRAP, repeats))
    boot = {name: np.median(a[:, rounds], axis=2).sum(axis=0)  # (B,)
            for name, a in arrays.items()}

    rows = []
    for name, s in plans.items():
        flops = flop_acceleration(model, s, sampler)
        accel = 1.0 - measured[name] / measured[baseline]
        se = float(np.std(1.0 - boot[name] / boot[baseline], ddof=1)) if repeats > 1 else math.nan
        rows.append({
            "schedule": name,
            "blocks": " ".join(str(k) for k in s.blocks),
            "intervals": s.describe(),
            "block_acceleration": block_acceleration(s, sampler),
            "flop_acceleration": flops,
            "predicted_acceleration": cost_model.acceleration(s, sampler),
            "measured_acceleration": accel,
            "measured_acceleration_se": se,
            "measured_over_flop": accel / flops if flops > 0 else math.nan,
            "measured_over_flop_se": se / flops if flops > 0 else math.nan,
            "measured_s": measured[name],
            "predicted_s": cost_model.latency(s, sampler),
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
            f"{r.flop_acceleration:.1%} | {r.predicted_acceleration:.1%} | "
            f"{pm(r.measured_acceleration, r.measured_acceleration_se, '.1f', 100)}% | "
            f"{pm(r.measured_over_flop, r.measured_over_flop_se, '.3f')} | "
            f"{r.measured_s:.3f} | {r.predicted_s:.3f} |"
        )
    return "\n".join(lines) + "\n"
