"""Latency: wall-clock measurement done right, and a per-component cost model of early exits.

Measurement (:func:`measure`): warm-up calls first, then ``repeats`` timed calls; on CUDA each call
is bracketed by CUDA events after a synchronisation, on CPU by ``time.perf_counter``; the median is
reported. Everything runs at a stated batch size under ``torch.inference_mode``.

Cost model (:class:`CostModel`): each model call costs ``fixed + n * block + (depth - n) *
dropped`` seconds, where ``fixed`` is everything that always runs (embeddings, U-ViT's encoder and
mid block, the final layer), ``block`` one exitable block, and ``dropped`` what a dropped block
still runs (U-ViT's ``skip_linear``; zero for DiT). The components are profiled once per run, so a
search compares schedules with a noise-free latency that is the exact sum of its parts.

Profiling runs in rounds, each timing every component once (a median of ``repeats`` calls), and
keeps each component's fastest round (:func:`fastest_round`): load from other processes only ever
adds time, so a burst during one round (on a shared 2-core machine one such profile stored 74 s
per batch against 5.7 s quiet) does not become the cost model. The load average before and after,
the usable CPUs and torch's threads are stored with it (``CostModel.conditions``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ase_search.callplan import Calls, blocks_per_call, call_plan, call_timesteps, forecast
from ase_search.schedule import ExitSchedule

__all__ = [
    "TimedRun",
    "time_interleaved",
    "CostModel",
    "example_inputs",
    "fastest_round",
    "load_average",
    "flop_acceleration",
    "measure",
    "model_flops",
    "profile_components",
    "sampling_latencies",
    "sampling_latency_samples",
]


def measure(fn: Callable[[], Any], *, warmup: int = 3, repeats: int = 10,
            device: str | torch.device = "cpu") -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                    enable_timing=True)
                torch.cuda.synchronize(device)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(device)
                times.append(start.elapsed_time(end) / 1000.0)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass(frozen=True)
class CostModel:
    """Per-call latency of a model as the sum of its components (seconds at ``batch_size``).

    Args:
        arch: ``"dit"`` or ``"uvit"``.
        depth: exitable depth.
        fixed: seconds of the parts that always run.
        block: seconds of one exitable block.
        dropped: seconds a dropped block still costs (U-ViT ``skip_linear``; 0 for DiT).
        batch_size: batch the components were timed at.
        device: where they were timed.
        components: the raw profile (component name -> seconds).
        conditions: what the machine was doing while it was profiled: ``load_before`` and
            ``load_after`` (1-, 5- and 15-minute load averages), ``cpus`` usable, torch
            ``threads``, ``rounds`` and ``repeats``; empty for cost models stored before they
            were recorded.
        gated: seconds of a skipped block's adaLN gates on its kept attention and MLP outputs
            (DiT, a cached call of a ``modules`` schedule; :meth:`DiTBlock.gated`).
        forecast: seconds to forecast one kept hidden-state tensor, by order (index 0: order
            0, nothing to compute): a cached call of a ``forecast`` interval forecasts one
            residual, or two tensors per skipped block with ``modules``.

    ``gated`` and ``forecast`` are 0 in cost models stored before they were profiled, which
    then predict what they predicted then.
    """

    arch: str
    depth: int
    fixed: float
    block: float
    dropped: float
    batch_size: int
    device: str
    components: dict[str, float]
    conditions: dict[str, Any] = field(default_factory=dict)
    gated: float = 0.0
    forecast: tuple[float, ...] = ()

    def call_latency(self, n_blocks: int) -> float:
        """Seconds of one model call that runs ``n_blocks`` exitable blocks."""
        if not 1 <= n_blocks <= self.depth:
            raise ValueError(f"n_blocks must lie in [1, {self.depth}], got {n_blocks}")
        return self.fixed + n_blocks * self.block + (self.depth - n_blocks) * self.dropped

    def latency(self, schedule: ExitSchedule | None, sampler: Calls,
                num_train_timesteps: int = 1000) -> float:
        """Seconds to sample one batch: the sum over the sampler's model calls.

        Args:
            schedule: the exit schedule; ``None`` runs every block.
            sampler: a :class:`~ase_search.samplers.SamplerConfig`, or its calls' timesteps.
            num_train_timesteps: ``T`` of the training process.
        """
        if schedule is None:  # every call runs every block: no plan to read
            return len(call_timesteps(sampler, num_train_timesteps)) * self.call_latency(
                self.depth)
        return sum(self._planned_latency(c, schedule)
                   for c in call_plan(schedule, sampler, num_train_timesteps))

    def _planned_latency(self, call: Any, schedule: ExitSchedule) -> float:
        """One planned call: its block count (a refresh at full depth), plus on a cached call
        the kept outputs' gates and forecasts."""
        if call.refresh or call.count >= self.depth:
            return self.call_latency(self.depth)
        seconds = self.call_latency(call.count)
        if not call.reuse:
            return seconds
        skipped = self.depth - call.count
        modules = schedule.granularity == "modules"
        if modules:
            seconds += skipped * self.gated
        if call.order and call.order < len(self.forecast):
            seconds += (2 * skipped if modules else 1) * self.forecast[call.order]
        return seconds

    def acceleration(self, schedule: ExitSchedule, sampler: Calls,
                     num_train_timesteps: int = 1000) -> float:
        """Predicted acceleration: ``1 - latency(schedule) / latency(full)``."""
        full = self.latency(None, sampler, num_train_timesteps)
        return 1.0 - self.latency(schedule, sampler, num_train_timesteps) / full

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (stored in a study's ``user_attrs["cost_model"]``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostModel:
        """Rebuild from :meth:`to_dict`; older dicts without ``conditions``, ``gated`` or
        ``forecast`` still load."""
        return cls(**{**data, "forecast": tuple(data.get("forecast", ()))})


def example_inputs(model: nn.Module, batch_size: int, device: str | torch.device = "cpu"):
    """Fixed inputs ``(x, t, y)`` of one model call at ``batch_size`` (seeded; t = 500), the
    ones latency and FLOPs are measured on."""
    g = torch.Generator().manual_seed(0)
    size = model.input_size
    x = torch.randn(batch_size, model.in_channels, size, size, generator=g).to(device)
    t = torch.full((batch_size,), 500.0, device=device)
    y = (torch.randint(0, model.num_labels, (batch_size,), generator=g).to(device)
         if model.num_labels > 0 else None)
    return x, t, y


def _forecasts(h: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """A forecast of one kept tensor shaped like the hidden state ``h``, at orders 1 and 2 (the
    arithmetic of :func:`~ase_search.callplan.forecast` from three refreshes)."""
    history = [(0.9, h), (0.8, h * 0.5), (0.7, h * 0.25)]
    return {f"forecast{order}": (lambda order=order: forecast(history, 0.6, order))
            for order in (1, 2)}


def _dit_components(model: nn.Module, x, t, y) -> dict[str, Callable[[], Any]]:
    """DiT: the model's ``embed``, one exitable block, its ``head`` (final layer + unpatchify),
    a block's gates on kept module outputs, and forecasts of a kept tensor."""
    h, c = model.embed(x, t, y)  # (N, T, D), (N, D)
    block = model.exit_blocks[0]
    _, attn, mlp = block.parts(h, c)  # (N, T, D) each
    return {
        "embed": lambda: model.embed(x, t, y),
        "block": lambda: block(h, c),
        # The shared final layer; an exit head (exit_heads=True) is a copy of it, so it costs
        # the same and the cost model holds for models with exit heads too.
        "final": lambda: model.head(h, c),
        "gated": lambda: block.gated(h, c, attn, mlp),
        **_forecasts(h),
    }


def _uvit_components(model: nn.Module, x, t, y) -> dict[str, Callable[[], Any]]:
    """U-ViT: the model's ``embed``, an encoder block, the mid block, an exitable (decoder) block
    whole, a dropped one (``skip_linear`` only), and its ``head`` (norm, decoder_pred,
    unpatchify, conv)."""
    h = model.embed(x, t, y)  # (N, extras + L, D)
    enc, dec = model.in_blocks[0], model.exit_blocks[0]
    return {
        "embed": lambda: model.embed(x, t, y),
        "encoder_block": lambda: enc(h),
        "mid_block": lambda: model.mid_block(h),
        "block": lambda: dec(h, h),
        "dropped": lambda: dec.fuse(h, h),
        "final": lambda: model.head(h),  # an exit head is a copy of it: the same cost
        **_forecasts(h),
    }


def fastest_round(round_seconds: Sequence[float]) -> float:
    """A component's cost from its per-round timings: the fastest round.

    Other processes can only slow a round down, never speed it up, so the minimum is the round
    closest to the component's own cost.
    """
    if not round_seconds:
        raise ValueError("fastest_round needs at least one round")
    return min(round_seconds)


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (``None`` where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # a platform without a load average
        return None


def profile_components(model: nn.Module, *, batch_size: int = 256, device: str = "cpu",
                       warmup: int = 3, repeats: int = 5, rounds: int = 5) -> CostModel:
    """Time every component of ``model`` and return the cost model.

    Args:
        model: a DiT or U-ViT.
        batch_size: batch the components are timed at.
        device: where to time them.
        warmup: untimed calls of each component before the first round.
        repeats: timed calls per component and round (their median is the round's time).
        rounds: rounds over all components; each component keeps its fastest
            (:func:`fastest_round`).
    """
    from ase_search.runtime import available_cpus

    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    device_t = torch.device(device)
    model = model.to(device_t).eval()
    x, t, y = example_inputs(model, batch_size, device_t)
    load_before = load_average()
    with torch.inference_mode():
        parts = (_dit_components if model.arch == "dit" else _uvit_components)(model, x, t, y)
        times: dict[str, list[float]] = {name: [] for name in parts}
        # Rounds interleave the components, so a burst of load costs each of them one round.
        for r in range(rounds):
            for name, fn in parts.items():
                times[name].append(measure(fn, warmup=warmup if r == 0 else 0, repeats=repeats,
                                           device=device_t))
        seconds = {name: fastest_round(v) for name, v in times.items()}
    conditions = {"load_before": load_before, "load_after": load_average(),
                  "cpus": available_cpus(), "threads": torch.get_num_threads(),
                  "rounds": rounds, "repeats": repeats}
    fixed = seconds["embed"] + seconds["final"]
    if model.arch == "uvit":
        fixed += len(model.in_blocks) * seconds["encoder_block"] + seconds["mid_block"]
    return CostModel(arch=model.arch, depth=model.exit_depth, fixed=fixed,
                     block=seconds["block"], dropped=seconds.get("dropped", 0.0),
                     batch_size=batch_size, device=str(device_t), components=seconds,
                     conditions=conditions, gated=seconds.get("gated", 0.0),
                     forecast=(0.0, seconds["forecast1"], seconds["forecast2"]))


def _sdpa_flops(query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None,
                **kwargs: Any) -> int:
    """FLOPs of attention ``softmax(q k^T) v``: two batched matmuls (2 FLOPs per multiply-add)."""
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * d_q + 2 * b * h * s_q * s_k * d_v


def model_flops(model: nn.Module, n_blocks: int | None = None, *, batch_size: int = 1) -> int:
    """FLOPs of one forward pass running ``n_blocks`` exitable blocks (every layer counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    # torch's counter knows the CUDA attention kernels but not the CPU one, which would leave
    # attention out of every count made on a CPU.
    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}
    x, t, y = example_inputs(model, batch_size, next(model.parameters()).device)
    with torch.inference_mode(), FlopCounterMode(display=False,
                                                 custom_mapping=cpu_attention) as counter:
        model(x, t, y, n_blocks=n_blocks)
    return int(counter.get_total_flops())


def flop_acceleration(model: nn.Module, schedule: ExitSchedule, sampler: Calls,
                      num_train_timesteps: int = 1000) -> float:
    """Share of the model's FLOPs the schedule skips over a sampler's calls (every layer).

    Args:
        model: the model the schedule runs on.
        schedule: the exit schedule.
        sampler: a :class:`~ase_search.samplers.SamplerConfig`, or its calls' timesteps.
        num_train_timesteps: ``T`` of the training process.
    """
    calls = blocks_per_call(schedule, sampler, num_train_timesteps)
    flops = {n: model_flops(model, n) for n in set(calls)}
    full = model_flops(model, None)
    return 1.0 - sum(flops[k] for k in calls) / (full * len(calls))


def sampling_latency_samples(
    model: nn.Module,
    schedules: dict[str, ExitSchedule | None],
    sampler: Calls,
    *,
    batch_size: int,
    device: str = "cpu",
    repeats: int = 3,
    num_train_timesteps: int = 1000,
) -> dict[str, list[list[float]]]:
    """Seconds of every timed model call: ``result[name][j][r]`` is call ``j`` in round ``r``.

    Schedules are timed *interleaved* call by call: each round walks the sampler's calls and, at
    call ``j``, times call ``j`` of every schedule (in an order that rotates with ``j`` and the
    round), so the calls being compared run seconds apart and a burst of load on the machine hits
    them alike. One warm-up round comes first and is not returned. Only the network calls are
    timed, not the sampler's arithmetic, which does not depend on the schedule.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device_t = torch.device(device)
    model = model.to(device_t).eval()
    x, t, y = example_inputs(model, batch_size, device_t)
    n_calls = len(call_timesteps(sampler, num_train_timesteps))
    plans = {  # None runs the model's full forward
        name: [None] * n_calls if s is None else blocks_per_call(s, sampler, num_train_timesteps)
        for name, s in schedules.items()
    }
    names = list(plans)
    times: dict[str, list[list[float]]] = {name: [[] for _ in range(n_calls)] for name in names}
    for r in range(repeats + 1):  # round 0 is the warm-up
        for j in range(n_calls):
            shift = (j + r) % len(names)
            for name in names[shift:] + names[:shift]:
                k = plans[name][j]
                seconds = measure(lambda k=k: model(x, t, y, n_blocks=k), warmup=0, repeats=1,
                                  device=device_t)
                if r > 0:
                    times[name][j].append(seconds)
    return times


def sampling_latencies(samples: Mapping[str, Sequence[Sequence[float]]]) -> dict[str, float]:
    """Each schedule's measured seconds for the model calls of one sampling run, from
    :func:`sampling_latency_samples`: the sum over its calls of the median over the rounds."""
    return {name: sum(statistics.median(v) for v in per_call)
            for name, per_call in samples.items()}


# ###################################################################### whole runs, timed
@dataclass(frozen=True)
class TimedRun:
    """Wall-clock seconds of one whole sampling run (every model call and the sampler's own
    arithmetic: block-reuse caches, DPM-Solver++'s multistep update), over interleaved rounds.

    Attributes:
        seconds: the median over rounds.
        error: half the rounds' interquartile range over the median: the relative spread of one
            round, the uncertainty a verdict discounts a measured latency by.
        rounds: each round's seconds.
    """

    seconds: float
    error: float
    rounds: tuple[float, ...]

    @classmethod
    def of(cls, rounds: Sequence[float]) -> TimedRun:
        ordered = sorted(rounds)
        median = statistics.median(ordered)
        if len(ordered) >= 4:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1, q3 = ordered[0], ordered[-1]
        return cls(median, (q3 - q1) / 2 / median, tuple(rounds))


def time_interleaved(runs: Mapping[str, Callable[[], Any]], *, rounds: int = 5,
                     device: str | torch.device = "cpu") -> dict[str, TimedRun]:
    """Time each of ``runs`` (a whole sampling run each), interleaved.

    One warm-up round, then ``rounds`` rounds, each calling every run once in an order that
    rotates with the round, so that a burst of load on the machine hits them alike. Native
    sampling (:func:`ase_search.measure.time_sampling_runs`) and the diffusers hooks
    (:func:`ase_search.integrations.diffusers.time_diffusers_runs`) both time through it.

    Args:
        runs: name -> a call that runs one whole sampling run.
        rounds: timed rounds (>= 1).
        device: where the runs compute (a CUDA device is synchronised around each run).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    device = torch.device(device)
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds + 1):  # round 0 warms up
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            runs[name]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if r > 0:
                times[name].append(time.perf_counter() - start)
    return {name: TimedRun.of(t) for name, t in times.items()}
