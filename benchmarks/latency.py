"""Measured vs predicted vs FLOP-ideal acceleration of the paper's presets on the testbed sizes.

For DiT-T (12 blocks, every one exitable) and U-ViT-T (6 exitable decoder blocks) with random
weights, the network calls of one DDIM sampling run at a fixed batch are timed for ``full`` and
every Table 2 preset in interleaved rounds (median), next to the cost model's prediction and the
share of FLOPs skipped. Latency does not depend on the weights.

    python -m benchmarks.latency --steps 10 --batch-size 256 --repeats 5 --threads 1

Each model's measurement is one interleaved run, a cell of ``reports/latency.json`` keyed by model
name; ``--models`` picks which to measure, so the two models can be timed separately. Run it on an
otherwise idle machine: other processes on the same cores change the absolute times and, through
cache and scheduler effects, the ratios.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from dataclasses import field
from typing import Any

from benchmarks._common import machine_text
from benchmarks._runner import Benchmark, CellContext, Report, option, run

TARGET = 0.95  # measured / ideal acceleration every preset should reach


@dataclasses.dataclass(frozen=True)
class Params:
    """What one latency run measures."""

    models: tuple[str, ...] = field(default=("DiT-T", "U-ViT-T"),
                                    metadata=option("registry names", identity=False))
    sampler: str = "ddim"
    steps: int = 10
    batch_size: int = 256
    repeats: int = 5
    device: str = "cpu"
    note: str = field(default="", metadata=option("a sentence about the conditions of the run",
                                                  identity=False))

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.repeats < 1:
            raise ValueError("--steps, --batch-size and --repeats must be >= 1")


def always_run_shares(model: Any, cost: dict[str, Any]) -> tuple[float, float]:
    """Share of a full call spent outside the exitable blocks' droppable part: (time, FLOPs).

    Time comes from the cost model (``fixed + depth * dropped`` over the full call); FLOPs from
    counting a one-block and a full forward (the difference is ``depth - 1`` droppable parts).
    """
    from ase_search.metrics.latency import model_flops

    depth = model.exit_depth
    full_time = cost["fixed"] + depth * cost["block"]
    time_share = (cost["fixed"] + depth * cost["dropped"]) / full_time
    one, full = model_flops(model, 1), model_flops(model, None)
    body = (full - one) / (depth - 1)
    return time_share, 1.0 - depth * body / full


def measure_model(args: Params, name: str, ctx: CellContext) -> dict[str, Any]:
    """Time one model's presets in one interleaved run; return a JSON-able record (a cell)."""
    import torch

    from ase_search.evaluate import benchmark_latency, machine_info
    from ase_search.models import create_model
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import preset, preset_names

    torch.manual_seed(0)
    model = create_model(name)
    schedules = {p: preset(p, model.arch, model.exit_depth)
                 for p in preset_names(model.arch, data_easy=False)}
    info = machine_info()
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    df = benchmark_latency(model, schedules, sampler=SamplerConfig(args.sampler, args.steps),
                           batch_size=args.batch_size, repeats=args.repeats, device=args.device)
    seconds = time.perf_counter() - t0
    print(df.drop(columns="intervals").to_string(), file=sys.stderr)
    time_share, flop_share = always_run_shares(model, df.attrs["cost_model"])
    return {
        "model": name,
        "arch": model.arch,
        "command": ctx.command,
        "machine": info,
        "note": args.note,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "seconds": seconds,
        "always_run_share": {"time": time_share, "flops": flop_share},
        "settings": df.attrs,
        # NaN (the full row's measured / ideal) is not JSON; None reads back as NaN.
        "rows": df.astype(object).where(df.notna(), None).to_dict("records"),
    }


def call_time_fit(record: dict[str, Any]) -> tuple[float, float, float]:
    """Least-squares fit ``t(k) = a + b k`` of the median call times on the block count ``k``:
    ``(a, b, se_a)``, ``se_a`` the usual OLS standard error of the intercept."""
    import numpy as np

    from ase_search.callplan import blocks_per_call
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import preset

    settings = record["settings"]
    times = SamplerConfig.from_dict(settings["sampler"]).model_times()
    ks, ts = [], []
    for name, per_call in settings["samples"].items():
        ks += blocks_per_call(preset(name, record["arch"], settings["depth"]), times)
        ts += [statistics.median(v) for v in per_call]
    (b, a), cov = np.polyfit(ks, ts, 1, cov=True)  # cov scaled by residuals / (n - 2)
    return float(a), float(b), float(np.sqrt(cov[1, 1]))


def section(record: dict[str, Any]) -> tuple[str, str]:
    """(summary line, markdown section) of one model's record."""
    import pandas as pd

    from ase_search.evaluate import latency_markdown

    df = pd.DataFrame(record["rows"])
    df.attrs.update(record["settings"])
    exits = df[df["schedule"] != "full"]
    ratios = exits["measured_over_flop"]
    below = exits[ratios < TARGET]
    name, m = record["model"], record["machine"]
    share = record["always_run_share"]
    expected = (exits["predicted_acceleration"] / exits["flop_acceleration"]).mean()
    summary = (f"- {name}: measured / ideal from {ratios.min():.3f} "
               f"({exits.loc[ratios.idxmin(), 'schedule']}) to {ratios.max():.3f} "
               f"({exits.loc[ratios.idxmax(), 'schedule']}). The cost model predicts "
               f"{expected:.3f} of the ideal (the parts every call runs take {share['time']:.1%} "
               f"of a full call's time and {share['flops']:.1%} of its FLOPs). ")
    if below.empty:
        summary += f"Every preset reaches {TARGET}."
    else:
        gaps = ", ".join(
            f"{r.schedule} {r.measured_over_flop:.3f} ± {r.measured_over_flop_se:.3f} "
            f"({(TARGET - r.measured_over_flop) / r.measured_over_flop_se:.2f} standard errors "
            f"below)" for r in below.itertuples())
        summary += f"Below {TARGET}: {gaps}."
    cost = record["settings"]["cost_model"]
    depth = record["settings"]["depth"]
    a, b, se_a = call_time_fit(record)
    body = cost["block"] - cost["dropped"]
    parts = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in cost["components"].items())
    always = ("embeddings, encoder and mid blocks, skip_linear of dropped decoder blocks, final "
              "layer" if record["arch"] == "uvit" else "embeddings, final layer")
    text = "\n".join([
        latency_markdown(df, title=f"{name} ({record['arch']})"),
        f"Measured by `{record['command']}` on {m['date']} ({record['seconds']:.0f} s): "
        f"{machine_text(m)}; load average (1 min) {record['load_before']:.2f} before, "
        f"{record['load_after']:.2f} after." + (f" {record['note']}" if record["note"] else ""),
        "",
        f"Cost model (median per component at batch {cost['batch_size']}): {parts}. The parts "
        f"that run whatever the schedule ({always}) take {share['time']:.1%} of a full call's "
        f"time and {share['flops']:.1%} of its FLOPs.",
        "",
        f"Fit of the measured call times on the number of exitable blocks run, t(k) = a + b k: "
        f"a = {a * 1e3:.1f} ± {se_a * 1e3:.1f} ms, b = {b * 1e3:.1f} ms, so the parts every "
        f"call runs take {a / (a + b * depth):.1%} ± {se_a / (a + b * depth):.1%} of a full "
        f"call in the sampling loop (cost model: {share['time']:.1%}); b is {b / body - 1:+.0%} off the cost model's isolated "
        f"{'block' if record['arch'] == 'dit' else 'decoder body (block - dropped)'}, a "
        f"factor that scales every schedule alike.",
        "",
    ])
    return summary, text


def precision(records: dict[str, dict[str, Any]]) -> str:
    """A sentence on how noisy the timings were (from the raw call timings)."""
    spreads, ses = [], []
    for r in records.values():
        for per_call in r["settings"]["samples"].values():
            spreads += [statistics.stdev(v) / statistics.median(v) for v in per_call if len(v) > 1]
        ses += [row["measured_over_flop_se"] for row in r["rows"]
                if row["measured_over_flop_se"] is not None]
    if not spreads or not ses:
        return ""
    return (f"Precision: one model call's time varies from round to round by a median "
            f"{statistics.median(spreads):.1%} (standard deviation over median) on this machine, "
            f"so measured / ideal carries a bootstrap standard error of {min(ses):.3f} to "
            f"{max(ses):.3f}; differences of a few hundredths between presets are within the "
            f"noise. The cost model's prediction is exact arithmetic on one profile of the "
            f"components, so it does not scatter from preset to preset.")


def markdown(records: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    """The report: a summary over the models, then one section per model."""
    summaries, sections = zip(*(section(r) for r in records.values()))
    text = "\n".join([
        "# Latency: measured vs predicted vs ideal acceleration",
        "",
        "Written by `benchmarks/latency.py` from the records in `reports/latency.json`; each "
        "model's table is one interleaved run (its exact command, machine and date are under the "
        "table). Random weights; only the network calls of one sampling run of one batch are "
        "timed (the sampler's own arithmetic is the same for every schedule); one warm-up round, "
        "then the median over rounds that each time every schedule once.",
        "",
        "Columns: *block accel.* = share of exitable-block evaluations skipped; *FLOP-ideal* = "
        "share of the network's FLOPs skipped, every layer counted (torch's FLOP counter, "
        "attention included); *cost-model* = the search's prediction from profiled components "
        "(`ase_search.metrics.latency.CostModel`); *measured* = `1 - t(schedule) / t(full)` of "
        "wall-clock time; *measured / ideal* = the share of the FLOP saving that turns into "
        "time. Seconds are per sampling run of one batch.",
        "",
        f"## Summary (target: measured / ideal >= {TARGET} for every preset)",
        "",
        *summaries,
        "",
        precision(records),
        "",
        "## Results",
        "",
        *sections,
    ])
    return Report(text)


BENCHMARK = Benchmark(name="latency", doc=__doc__, params=Params,
                      keys=lambda params: list(params.models), cell=measure_model,
                      report=markdown)


if __name__ == "__main__":
    run(BENCHMARK)
