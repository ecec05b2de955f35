"""GPU latency of the paper's exit schedules on the paper's models, against FLOPs and Table 2-4.

DiT-XL/2 (28 blocks, 32x32x4 latents, batch 32) and U-ViT-S/4 (CelebA 64x64, batch 250), the
paper's sampling batches, with random weights (latency does not depend on them), timed with CUDA
events (``ase_search.metrics.latency.measure``):

1. **Per step**: one call at every block count the presets use, in interleaved rounds (order
   rotating); ``1 - t(k) / t(full)`` next to the FLOP-ideal ``1 - FLOPs(k) / FLOPs(full)``.
2. **Composed runs**: a run's latency as the sum of per-step medians over its calls, for the
   samplers of the paper's tables, next to the paper's accelerations.
3. **Measured runs** (DDIM-50, DDPM-250): every call of one run, every preset, timed interleaved by
   ``ase_search.evaluate.benchmark_latency`` (``--repeats`` rounds after a warm-up round). A run
   estimated (from 1.) not to fit in what is left of ``--budget-seconds`` is skipped and its
   composed value stands in; in fp32 on an H100 the DDPM-250 runs do not fit the default.

    python -m benchmarks.gpu_latency                      # fp32, writes reports/gpu_latency.md
    python -m benchmarks.gpu_latency --precision bf16     # autocast (also: tf32, fp16)
    python -m benchmarks.gpu_latency --allow-cpu --smoke  # seconds-long check of the script

Without a CUDA device it exits 2 unless ``--allow-cpu``. ``--smoke`` shrinks the models (same
classes and depths), the batch (2) and the samplers (2 steps), and writes to a temporary file.
Cells: one per model (``DiT-XL/2``) and one per measured run (``DiT-XL/2|ddim-50``); ``--only``
picks some of them.
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
from pathlib import Path
from typing import Any

from benchmarks._common import pct
from benchmarks._runner import REPORTS, Benchmark, CellContext, Report, markdown_table, option, run

# The paper's accelerations (%) by model, sampler and preset: DiT-XL/2 on ImageNet 256, Table 3
# (its DDPM-250 column is Table 2's); U-ViT-S/4 on CelebA 64, Table 4 (EM-1000 is Table 2's).
# Wall-clock time of one batch on one RTX 3090 (Appendix B.1), the whole sampler included.
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
BATCH = {"DiT-XL/2": 32, "U-ViT-S/4": 250}  # the paper's sampling batch (Appendix B.1)
# --smoke: same classes and depths (so the presets' block counts are the paper's), tiny otherwise.
SMOKE_OVERRIDES = {
    "DiT-XL/2": {"hidden_size": 32, "num_heads": 2, "input_size": 8},
    "U-ViT-S/4": {"embed_dim": 32, "num_heads": 2, "img_size": 16},
}
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
MEASURED = ("ddim-50", "ddpm-250")  # samplers whose whole run is measured, cheapest first
MEASURED_KEYS = [f"{m}|{spec}" for spec in MEASURED for m in BATCH]


@dataclasses.dataclass(frozen=True)
class Params:
    """Precision and how long the timing runs."""

    precision: str = field(default="fp32", metadata=option(choices=PRECISIONS))
    rounds: int = field(default=10, metadata=option("per-step timing rounds"))
    repeats: int = field(default=2, metadata=option("rounds of a measured run"))
    budget_seconds: float = field(default=240.0, metadata=option(
        "time for the measured runs, all models together; a run estimated not to fit in what "
        "is left is skipped"))
    allow_cpu: bool = field(default=False, metadata=option("run without a GPU", identity=False))
    smoke: bool = field(default=False, metadata=option(
        "tiny models, batch 2, 2-step samplers: checks the script works"))

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.repeats < 1:
            raise ValueError("--rounds and --repeats must be >= 1")

    @property
    def timing(self) -> tuple[int, int]:
        """(rounds, repeats) as run: ``--smoke`` caps them at (2, 1)."""
        return (min(self.rounds, 2), 1) if self.smoke else (self.rounds, self.repeats)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def per_step(model: Any, counts: list[int], *, batch: int, rounds: int,
             device: Any) -> dict[int, list[float]]:
    """Seconds of one call at each block count: ``result[k][r]``, interleaved over rounds after
    a warm-up round (:func:`ase_search.metrics.latency.sampling_latency_samples` on one call)."""
    from ase_search.metrics.latency import sampling_latency_samples
    from ase_search.schedule import ExitSchedule

    schedules = {k: ExitSchedule(model.arch, model.exit_depth, (0.0, 1.0), (k,)) for k in counts}
    times = sampling_latency_samples(model, schedules, [500.0], batch_size=batch, device=device,
                                     repeats=rounds)
    return {k: per_call[0] for k, per_call in times.items()}


@functools.cache
def model_state(params: Params, name: str) -> dict[str, Any]:
    """One model (random weights, seed 0) on the CUDA device (the CPU with ``--allow-cpu``), its
    presets and the precision's autocast context (TF32 is on for ``tf32`` only)."""
    import torch

    from ase_search.models import create_model
    from ase_search.schedule import preset, preset_names

    if not (torch.cuda.is_available() or params.allow_cpu):
        print("error: no CUDA device; this benchmark times GPU kernels. Run it on a machine with "
              "a GPU, or pass --allow-cpu (with --smoke for a quick check).", file=sys.stderr)
        raise SystemExit(2)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = (
        params.precision == "tf32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(params.precision)
    torch.manual_seed(0)
    overrides = SMOKE_OVERRIDES[name] if params.smoke else {}
    model = create_model(name, **overrides).to(dev).eval()
    schedules = {p: preset(p, model.arch, model.exit_depth)
                 for p in preset_names(model.arch, data_easy=False)}
    return {"model": model, "schedules": schedules, "overrides": overrides, "device": dev,
            "autocast": contextlib.nullcontext() if dtype is None
            else torch.autocast(device_type=dev.type, dtype=dtype)}


# ###################################################################### cells
def model_cell(params: Params, name: str, ctx: CellContext) -> dict[str, Any]:
    """Per-step timing and composed runs of one model, with the run's machine and versions."""
    import torch

    from ase_search.callplan import blocks_per_call
    from ase_search.evaluate import machine_info
    from ase_search.metrics.latency import model_flops
    from ase_search.samplers import SamplerConfig

    state = model_state(params, name)
    model, schedules = state["model"], state["schedules"]
    batch = 2 if params.smoke else BATCH[name]
    depth = model.exit_depth
    rounds, repeats = params.timing
    counts = sorted({k for s in schedules.values() for k in s.blocks}, reverse=True)  # full first
    t0 = time.perf_counter()
    log(f"{name}: batch {batch}, {depth} exitable blocks, per-step timing of {counts}")
    with state["autocast"]:
        raw = per_step(model, counts, batch=batch, rounds=rounds, device=state["device"])
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
    runs: dict[str, dict[str, Any]] = {}
    for spec in dict.fromkeys([*PAPER_ACCELERATION[name], *MEASURED]):
        sampler, _, n_steps = spec.rpartition("-")
        config = SamplerConfig(sampler, 2 if params.smoke else int(n_steps))
        times = config.model_times()
        calls = {p: blocks_per_call(s, times) for p, s in schedules.items()}
        # A run's network time composed as the sum of the per-step medians over its calls.
        composed = {p: sum(step_s[k] for k in c) for p, c in calls.items()}
        rows = {p: {
            "ideal": 1.0 - sum(flops[k] for k in c) / (flops[depth] * len(times)),
            "composed": 1.0 - composed[p] / composed["full"],
            "paper": PAPER_ACCELERATION[name].get(spec, {}).get(p, math.nan) / 100,
        } for p, c in calls.items()}
        # One warm-up round plus --repeats timed rounds of every schedule's calls.
        runs[spec] = {"sampler": config.to_dict(), "composed_full_s": composed["full"],
                      "rows": rows, "estimate_s": (repeats + 1) * sum(composed.values())}
    return {"model": name, "arch": model.arch, "depth": depth, "batch": batch,
            "overrides": state["overrides"], "num_labels": model.num_labels, "steps": steps,
            "runs": runs, "seconds": time.perf_counter() - t0, "command": ctx.command,
            "smoke": params.smoke, "precision": params.precision, "rounds": rounds,
            "repeats": repeats, "machine": machine_info(), "cuda": torch.version.cuda}


def measure_cell(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """Every call of one sampling run timed for every preset, or why it was skipped: the
    measured runs before it spend ``--budget-seconds``, and the per-step medians predict its time,
    so a run that would not fit is skipped, not cut short."""
    from ase_search.evaluate import benchmark_latency
    from ase_search.samplers import SamplerConfig

    name, _, spec = key.partition("|")
    record = ctx.cells[name]["runs"][spec]
    earlier = MEASURED_KEYS[:MEASURED_KEYS.index(key)]
    left = params.budget_seconds - sum(ctx.cells[k]["seconds"] for k in earlier if k in ctx.cells)
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


# ###################################################################### report
def run_section(spec: str, run_: dict[str, Any], measured: dict[str, Any] | None) -> list[str]:
    """One sampler's table: each preset composed and, when ``measured`` ran, measured."""
    import pandas as pd

    ran = measured is not None and measured["skipped"] is None
    steps = run_["sampler"]["steps"]
    status = ("measured" if ran else f"not measured: {measured['skipped']}" if measured
              else "composed only")
    if not spec.endswith(f"-{steps}"):
        status += f"; smoke: {steps} steps"
    rows = []
    for p, r in run_["rows"].items():
        m = measured["rows"].get(p, {}) if ran else {}
        rows.append([p, pct(r["ideal"]), pct(r["composed"]),
                     pct(m.get("measured"), m.get("measured_se")), pct(m.get("predicted")),
                     pct(r["paper"])])
    full = f"full run: composed {run_['composed_full_s']:.3f} s"
    if ran:
        full += f", measured {measured['measured_full_s']:.3f} s"
    return [f"### {spec} ({status})", "", markdown_table(pd.DataFrame(rows, columns=[
        "schedule", "FLOP-ideal", "composed", "measured run", "cost model", "paper"]),
        align=["left"] + ["right"] * 5), "", full + ".", ""]


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    """One section per model: its per-step timing, then every run, measured where it was."""
    import pandas as pd

    records = [cells[name] for name in BATCH if name in cells]
    meta, m = records[0], records[0]["machine"]
    lines = [
        "# GPU latency of the paper's exit schedules",
        "",
        *(["**SMOKE RUN: tiny models, batch 2, 2-step samplers; the numbers mean nothing.**", ""]
          if meta["smoke"] else []),
        f"- Card: {m['gpu'] or 'none (CPU run with --allow-cpu)'}",
        f"- Command: `{meta['command']}`",
        f"- Date: {m['date']}; {sum(c['seconds'] for c in cells.values()):.0f} s",
        f"- torch {m['torch']} (CUDA {meta['cuda']}), Python {m['python']}, CPU {m['cpu']}",
        f"- Precision: {meta['precision']} (TF32 matmuls "
        f"{'on' if meta['precision'] == 'tf32' else 'off'}"
        f"{'; autocast' if meta['precision'] in ('bf16', 'fp16') else ''}); random weights; "
        f"per-step medians over {meta['rounds']} interleaved round(s), measured runs over "
        f"{meta['repeats']} round(s) after a warm-up round; timed with "
        f"{'CUDA events' if m['gpu'] else 'time.perf_counter (CPU)'}.",
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
        rows = [[str(s["blocks"]), f"{s['ms']:.2f} ± {s['ms_spread']:.2f}", pct(s["ideal"]),
                 pct(s["measured"]),
                 f"{s['measured'] / s['ideal']:.3f}" if s["ideal"] > 0 else "–"]
                for s in rec["steps"]]
        lines += ["### Per step", "", markdown_table(pd.DataFrame(rows, columns=[
            "blocks", "ms per call (± sd)", "FLOP-ideal", "per-step measured",
            "measured / ideal"]), align=["right"] * 5), ""]
        for spec, run_ in rec["runs"].items():
            lines += run_section(spec, run_, cells.get(f"{rec['model']}|{spec}"))
    return Report("\n".join(lines))


BENCHMARK = Benchmark(
    name="gpu_latency", doc=__doc__, params=Params, keys=lambda params: [*BATCH, *MEASURED_KEYS],
    cell=lambda params, key, ctx: (measure_cell if "|" in key else model_cell)(params, key, ctx),
    report=report,
    out=lambda params: (Path(tempfile.gettempdir()) / "gpu_latency_smoke.md" if params.smoke
                        else REPORTS / "gpu_latency.md"))


if __name__ == "__main__":
    run(BENCHMARK)
