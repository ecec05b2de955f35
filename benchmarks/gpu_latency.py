"""GPU latency of the paper's exit schedules on the paper's models, against FLOPs and Table 2-4.

DiT-XL/2 (28 blocks, 32x32x4 latents, batch 32, the paper's ImageNet sampling batch) and
U-ViT-S/4 (CelebA 64x64, batch 250, the paper's CelebA sampling batch) with random weights; latency
does not depend on the weights. Three measurements per model, all with CUDA events
(``ase_search.metrics.latency.measure``):

1. **Per step**: one model call at every block count the presets use, timed in interleaved rounds
   (one call per count per round, order rotating); per-step acceleration ``1 - t(k) / t(full)``
   next to the FLOP-ideal ``1 - FLOPs(k) / FLOPs(full)``.
2. **Composed runs**: a sampler's run latency as the sum of the per-step medians over its calls,
   for the samplers of the paper's tables (DiT: DDPM-250, DDIM-200/100/50; U-ViT: EM-1000,
   DPM-50/25), next to the paper's reported accelerations.
3. **Measured runs** (``--measure``, default DDIM-50 and DDPM-250): every network call of one
   sampling run, every preset, timed interleaved call by call by
   ``ase_search.evaluate.benchmark_latency`` (median over ``--repeats`` rounds after a warm-up
   round), with its FLOP-ideal and cost-model accelerations. A run whose estimated time (from the
   per-step medians) does not fit in what is left of ``--budget-seconds`` (all models together,
   DDIM-50 of both models first) is skipped and says so in the report; its composed value (2.)
   stands in. In fp32 on an H100 the DDPM-250 runs (1,250-1,750 calls per round) do not fit the
   default budget; ``--precision bf16`` or a larger budget measures them.

    python -m benchmarks.gpu_latency                      # fp32, writes reports/gpu_latency.md
    python -m benchmarks.gpu_latency --precision bf16     # autocast (also: tf32, fp16)
    python -m benchmarks.gpu_latency --allow-cpu --smoke  # seconds-long check of the script

Without a CUDA device it exits with status 2 unless ``--allow-cpu`` is given. ``--smoke`` shrinks
the models (same registry classes and depths, tiny width and resolution), the batch (2) and the
samplers (2 steps); its numbers mean nothing and it writes to a temporary file by default.

The cells of the report's ``.json`` twin are one per model (``DiT-XL/2``: per-step timing and
composed runs) and one per measured run (``DiT-XL/2|ddim-50``), DDIM-50 of every model first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks._common import pct
from benchmarks._runner import (
    REPORTS,
    Benchmark,
    CellContext,
    Report,
    markdown_table,
    option,
    run,
)

if TYPE_CHECKING:
    import torch

    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule

# The paper's accelerations (%) by model, sampler and preset. DiT-XL/2 on ImageNet 256: Table 3
# (DDPM-250, DDIM-200/100/50; the DDPM-250 column is Table 2's). U-ViT-S/4 on CelebA 64: Table 4
# (EM-1000, the Table 2 column, and DPM-50/25). Wall-clock time to generate one batch on one RTX
# 3090 (Appendix B.1), the whole sampler included, not only the network calls timed here.
PAPER_ACCELERATION: dict[str, dict[str, dict[str, float]]] = {
    "DiT-XL/2": {
        "ddpm-250": {"D1": 16.63, "D3": 23.43, "D4": 30.46, "D6": 38.32},
        "ddim-200": {"D1": 14.42, "D3": 21.04, "D4": 28.61, "D6": 37.25},
        "ddim-100": {"D1": 14.38, "D3": 20.99, "D4": 28.70, "D6": 36.80},
        "ddim-50": {"D1": 14.37, "D3": 20.93, "D4": 28.67, "D6": 36.71},
    },
    "U-ViT-S/4": {
        "euler-maruyama-1000": {"D1": 16.26, "D2": 22.27, "D3": 24.77, "D4": 28.03,
                                "D5": 30.71, "D6": 32.09},
        "dpm-solver-50": {"D1": 11.07, "D2": 14.82, "D3": 15.72, "D4": 21.02, "D5": 23.03,
                          "D6": 23.70},
        "dpm-solver-25": {"D1": 12.16, "D2": 16.41, "D3": 17.60, "D4": 22.45, "D5": 24.27,
                          "D6": 25.67},
    },
}
# The paper's sampling batch per model (Appendix B.1).
BATCH = {"DiT-XL/2": 32, "U-ViT-S/4": 250}
# --smoke: same classes and depths (so the presets' block counts are the paper's), tiny otherwise.
SMOKE_OVERRIDES = {
    "DiT-XL/2": {"hidden_size": 32, "num_heads": 2, "input_size": 8},
    "U-ViT-S/4": {"embed_dim": 32, "num_heads": 2, "img_size": 16},
}
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class Params:
    """Which models, precision and samplers; how long the timing runs."""

    models: str = field(default="DiT-XL/2,U-ViT-S/4", metadata=option(
        f"comma-separated, from {list(BATCH)}", identity=False))
    precision: str = field(default="fp32", metadata=option(choices=PRECISIONS))
    measure: str = field(default="ddim-50,ddpm-250", metadata=option(
        "samplers whose whole run is measured (name-steps, comma-separated; empty for none)"))
    rounds: int = field(default=10, metadata=option("per-step timing rounds"))
    repeats: int = field(default=2, metadata=option("rounds of a measured run"))
    budget_seconds: float = field(default=240.0, metadata=option(
        "time for the measured runs, all models together; a run estimated not to fit in what "
        "is left is skipped"))
    allow_cpu: bool = field(default=False, metadata=option("run without a GPU", identity=False))
    smoke: bool = field(default=False, metadata=option(
        "tiny models, batch 2, 2-step samplers: checks the script works"))

    def __post_init__(self) -> None:
        if not self.model_names or any(m not in BATCH for m in self.model_names):
            raise ValueError(f"--models must name some of {list(BATCH)}, got {self.models!r}")
        for spec in self.measured:
            if not _spec_ok(spec):
                raise ValueError(f"--measure: sampler spec must look like 'ddim-50' "
                                 f"(name-steps), got {spec!r}")
        if self.rounds < 1 or self.repeats < 1:
            raise ValueError("--rounds and --repeats must be >= 1")

    @property
    def model_names(self) -> list[str]:
        return [m for m in self.models.split(",") if m]

    @property
    def measured(self) -> list[str]:
        return [s for s in self.measure.split(",") if s]

    @property
    def timing(self) -> tuple[int, int]:
        """(rounds, repeats) as run: ``--smoke`` caps them at (2, 1)."""
        return (min(self.rounds, 2), 1) if self.smoke else (self.rounds, self.repeats)


def _spec_ok(spec: str) -> bool:
    name, _, steps = spec.rpartition("-")
    return bool(name) and steps.isdigit()


def sampler_config(spec: str) -> SamplerConfig:
    """``"ddim-50"`` -> ``SamplerConfig("ddim", 50)`` (the name may contain dashes)."""
    from ase_search.samplers import SamplerConfig

    name, _, steps = spec.rpartition("-")
    if not _spec_ok(spec):
        raise ValueError(f"sampler spec must look like 'ddim-50' (name-steps), got {spec!r}")
    return SamplerConfig(name, int(steps))


def set_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Set TF32 (on for ``tf32`` only) and return the autocast context (``bf16`` / ``fp16``)."""
    import torch

    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def inputs(model: torch.nn.Module, batch: int, device: torch.device):
    """Random inputs of one call: x (N, C, H, W), t = 500 (N,), labels or None."""
    import torch

    g = torch.Generator().manual_seed(0)
    size = model.input_size
    x = torch.randn(batch, model.in_channels, size, size, generator=g).to(device)
    t = torch.full((batch,), 500.0, device=device)
    y = (torch.randint(0, model.num_labels, (batch,), generator=g).to(device)
         if model.num_labels > 0 else None)
    return x, t, y


def per_step(model: torch.nn.Module, counts: list[int], *, batch: int, rounds: int,
             device: torch.device) -> dict[int, list[float]]:
    """Seconds of one call at each block count: ``result[k][r]``, interleaved over rounds.

    Each round times one call per count, in an order that rotates with the round, so a drift in
    clock or load hits every count alike; round 0 (and five full calls before it) is warm-up.
    """
    from ase_search.metrics.latency import measure

    x, t, y = inputs(model, batch, device)
    measure(lambda: model(x, t, y), warmup=5, repeats=1, device=device)
    times: dict[int, list[float]] = {k: [] for k in counts}
    for r in range(rounds + 1):
        shift = r % len(counts)
        for k in counts[shift:] + counts[:shift]:
            seconds = measure(lambda k=k: model(x, t, y, n_blocks=k), warmup=0, repeats=1,
                              device=device)
            if r > 0:
                times[k].append(seconds)
    return times


def composed(schedule: ExitSchedule, step_s: dict[int, float], times: list[float]) -> float:
    """Seconds of a run's network calls as the sum of per-step medians."""
    from ase_search.callplan import blocks_per_call

    return sum(step_s[k] for k in blocks_per_call(schedule, times))


def device(params: Params) -> torch.device:
    """The CUDA device, or the CPU with ``--allow-cpu``; otherwise exit 2 with one line."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if params.allow_cpu:
        return torch.device("cpu")
    print("error: no CUDA device; this benchmark times GPU kernels. Run it on a machine with "
          "a GPU, or pass --allow-cpu (with --smoke for a quick check).", file=sys.stderr)
    raise SystemExit(2)


@functools.cache
def model_state(params: Params, name: str) -> dict[str, Any]:
    """One model (random weights, seed 0) on the device, its presets and the autocast context."""
    import torch

    from ase_search.models import create_model
    from ase_search.schedule import preset, preset_names

    dev = device(params)
    torch.manual_seed(0)
    overrides = SMOKE_OVERRIDES[name] if params.smoke else {}
    model = create_model(name, **overrides).to(dev).eval()
    schedules = {p: preset(p, model.arch, model.exit_depth)
                 for p in preset_names(model.arch, data_easy=False)}
    return {"model": model, "schedules": schedules, "overrides": overrides, "device": dev,
            "autocast": set_precision(params.precision, dev)}


def run_facts(params: Params, ctx: CellContext, dev: torch.device) -> dict[str, Any]:
    """Card, command, date and versions of the run a cell belongs to."""
    import torch

    from ase_search.evaluate import machine_info

    card = (torch.cuda.get_device_name() if dev.type == "cuda"
            else "none (CPU run with --allow-cpu)")
    rounds, repeats = params.timing
    return {"card": card, "device": dev.type, "command": ctx.command, "smoke": params.smoke,
            "precision": params.precision, "rounds": rounds, "repeats": repeats,
            "machine": machine_info(), "cuda": torch.version.cuda,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def model_cell(params: Params, name: str, ctx: CellContext) -> dict[str, Any]:
    """Per-step timing and composed runs of one model (a cell)."""
    from ase_search.callplan import blocks_per_call
    from ase_search.metrics.latency import model_flops
    from ase_search.samplers import SamplerConfig

    state = model_state(params, name)
    model, schedules, dev = state["model"], state["schedules"], state["device"]
    batch = 2 if params.smoke else BATCH[name]
    depth = model.exit_depth
    rounds, repeats = params.timing
    counts = sorted({k for s in schedules.values() for k in s.blocks}, reverse=True)
    if depth not in counts:
        counts.insert(0, depth)
    t0 = time.perf_counter()
    log(f"{name}: batch {batch}, {depth} exitable blocks, per-step timing of {counts}")

    with state["autocast"]:
        raw = per_step(model, counts, batch=batch, rounds=rounds, device=dev)
    step_s = {k: statistics.median(v) for k, v in raw.items()}
    flops = {k: model_flops(model, k) for k in counts}  # batch 1; FLOPs scale with the batch
    steps = [{
        "blocks": k,
        "ms": step_s[k] * 1e3,
        "ms_spread": (statistics.stdev(raw[k]) * 1e3) if len(raw[k]) > 1 else math.nan,
        "ideal": 1.0 - flops[k] / flops[depth],
        "measured": 1.0 - step_s[k] / step_s[depth],
    } for k in counts]

    # Composed runs for the paper's samplers (and the measured ones, to check the composition).
    specs = list(dict.fromkeys([*PAPER_ACCELERATION[name], *params.measured]))
    runs: dict[str, dict[str, Any]] = {}
    for spec in specs:
        config = sampler_config(spec)
        if params.smoke:
            config = SamplerConfig(config.name, 2)
        times = config.model_times()
        full_s = composed(schedules["full"], step_s, times)
        rows = {}
        for p, s in schedules.items():
            used = sum(flops[k] for k in blocks_per_call(s, times))
            rows[p] = {
                "ideal": 1.0 - used / (flops[depth] * len(times)),
                "composed": 1.0 - composed(s, step_s, times) / full_s,
                "paper": PAPER_ACCELERATION[name].get(spec, {}).get(p, math.nan) / 100,
            }
        # One warm-up round plus --repeats timed rounds of every schedule's calls.
        estimate = (repeats + 1) * sum(composed(s, step_s, times) for s in schedules.values())
        runs[spec] = {"sampler": config.to_dict(), "composed_full_s": full_s, "rows": rows,
                      "estimate_s": estimate, "measured": None, "skipped": None}
    return {"model": name, "arch": model.arch, "depth": depth, "batch": batch,
            "overrides": state["overrides"], "num_labels": model.num_labels, "steps": steps,
            "runs": runs, "seconds": time.perf_counter() - t0,
            **run_facts(params, ctx, dev)}


def measured_keys(params: Params) -> list[str]:
    """The measured runs' cells, cheapest sampler first across models (``--measure`` order)."""
    return [f"{m}|{spec}" for spec in params.measured for m in params.model_names]


def measure_cell(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """Every call of one sampling run timed for every preset (a cell), or why it was skipped.

    The measured runs before it in ``--measure`` order spend ``--budget-seconds``; the per-step
    medians predict this run's time, so a run that would not fit is skipped, not cut short.
    """
    from ase_search.evaluate import benchmark_latency
    from ase_search.samplers import SamplerConfig

    name, _, spec = key.partition("|")
    record = ctx.cells[name]["runs"][spec]
    earlier = measured_keys(params)[:measured_keys(params).index(key)]
    left = params.budget_seconds - sum(ctx.cells[k]["seconds"] for k in earlier)
    if record["estimate_s"] > left:
        skipped = (f"estimated {record['estimate_s']:.1f} s, {left:.1f} s of --budget-seconds "
                   f"left; its composed value stands in")
        log(f"{name} {spec}: skipped ({skipped})")
        return {"skipped": skipped, "seconds": 0.0}
    state = model_state(params, name)
    t0 = time.perf_counter()
    log(f"{name} {spec}: measuring (about {record['estimate_s']:.1f} s)")
    with state["autocast"]:
        df = benchmark_latency(state["model"], state["schedules"],
                               sampler=SamplerConfig.from_dict(record["sampler"]),
                               batch_size=ctx.cells[name]["batch"], repeats=params.timing[1],
                               device=state["device"])
    rows = {r.schedule: {"measured": r.measured_acceleration,
                         "measured_se": r.measured_acceleration_se,
                         "predicted": r.predicted_acceleration}
            for r in df.itertuples(index=False)}
    return {"measured_full_s": float(df.loc[df["schedule"] == "full", "measured_s"].iloc[0]),
            "rows": rows, "skipped": None, "seconds": time.perf_counter() - t0}


def cell(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    return measure_cell(params, key, ctx) if "|" in key else model_cell(params, key, ctx)

# ###################################################################### report
def markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    import pandas as pd

    m = meta["machine"]
    lines = [
        "# GPU latency of the paper's exit schedules",
        "",
        *(["**SMOKE RUN: tiny models, batch 2, 2-step samplers; the numbers mean nothing.**", ""]
          if meta["smoke"] else []),
        f"- Card: {meta['card']}",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']}; {meta['seconds']:.0f} s",
        f"- torch {m['torch']} (CUDA {meta['cuda']}), Python {m['python']}, CPU {m['cpu']}",
        f"- Precision: {meta['precision']} (TF32 matmuls "
        f"{'on' if meta['precision'] == 'tf32' else 'off'}"
        f"{'; autocast' if meta['precision'] in ('bf16', 'fp16') else ''}); random weights; "
        f"per-step medians over {meta['rounds']} interleaved round(s), measured runs over "
        f"{meta['repeats']} round(s) after a warm-up round; timed with "
        f"{'CUDA events' if meta['device'] == 'cuda' else 'time.perf_counter (CPU)'}.",
        "",
        "Columns: *FLOP-ideal* = share of the network's FLOPs skipped (every layer, torch's FLOP "
        "counter); *per-step measured* = `1 - t(k) / t(full)` of one call; *composed* = a run's "
        "network time as the sum of per-step medians over the sampler's calls; *measured run* = "
        "every call of one run timed interleaved (`ase_search.evaluate.benchmark_latency`), ± a "
        "bootstrap standard error; *cost model* = `CostModel` prediction; *paper* = the paper's "
        "Table 2/3/4 acceleration (whole sampler on an RTX 3090, so it includes time outside the "
        "network).",
        "",
    ]
    for rec in records:
        lines += [f"## {rec['model']} ({rec['arch']}, {rec['depth']} exitable blocks, batch "
                  f"{rec['batch']}{', class labels' if rec['num_labels'] else ''})", ""]
        if rec["overrides"]:
            lines += [f"Smoke overrides: `{json.dumps(rec['overrides'])}`.", ""]
        rows = []
        for s in rec["steps"]:
            ratio = s["measured"] / s["ideal"] if s["ideal"] > 0 else math.nan
            rows.append([str(s["blocks"]), f"{s['ms']:.2f} ± {s['ms_spread']:.2f}",
                         pct(s["ideal"]), pct(s["measured"]),
                         "–" if math.isnan(ratio) else f"{ratio:.3f}"])
        lines += ["### Per step", "", markdown_table(pd.DataFrame(rows, columns=[
            "blocks", "ms per call (± sd)", "FLOP-ideal", "per-step measured",
            "measured / ideal"]), align=["right"] * 5), ""]
        for spec, measured_run in rec["runs"].items():
            steps = measured_run["sampler"]["steps"]
            status = ("measured" if measured_run["measured"] else
                      f"not measured: {measured_run['skipped']}" if measured_run["skipped"]
                      else "composed only")
            if not spec.endswith(f"-{steps}"):
                status += f"; smoke: {steps} steps"
            rows = [[p, pct(r["ideal"]), pct(r["composed"]),
                     pct(r.get("measured"), r.get("measured_se")), pct(r.get("predicted")),
                     pct(r["paper"])] for p, r in measured_run["rows"].items()]
            lines += [f"### {spec} ({status})", "", markdown_table(pd.DataFrame(rows, columns=[
                "schedule", "FLOP-ideal", "composed", "measured run", "cost model", "paper"]),
                align=["left"] + ["right"] * 5)]
            full = f"full run: composed {measured_run['composed_full_s']:.3f} s"
            if measured_run["measured"]:
                full += f", measured {measured_run['measured_full_s']:.3f} s"
            lines += ["", full + ".", ""]
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    """The models' records with their measured runs merged in, as one markdown report."""
    records = []
    for name in params.model_names:
        if name not in cells:
            continue
        record = json.loads(json.dumps(cells[name]))  # a copy: the measured runs go into it
        for spec, run_ in record["runs"].items():
            measured = cells.get(f"{name}|{spec}")
            if measured is None:
                continue
            record["seconds"] += measured["seconds"]
            run_["skipped"] = measured["skipped"]
            if measured["skipped"] is None:
                run_["measured"] = True
                run_["measured_full_s"] = measured["measured_full_s"]
                for p, row in measured["rows"].items():
                    run_["rows"][p].update(row)
        records.append(record)
    if not records:
        return Report(f"# GPU latency of the paper's exit schedules\n\nNo model of "
                      f"{params.models!r} is in `{json_name}` yet.\n")
    meta = {**records[0], "seconds": sum(r["seconds"] for r in records)}
    return Report(markdown(records, meta))


BENCHMARK = Benchmark(
    name="gpu_latency", doc=__doc__, params=Params,
    keys=lambda params: [*params.model_names, *measured_keys(params)], cell=cell, report=report,
    out=lambda params: (Path(tempfile.gettempdir()) / "gpu_latency_smoke.md" if params.smoke
                        else REPORTS / "gpu_latency.md"))


if __name__ == "__main__":
    run(BENCHMARK)
