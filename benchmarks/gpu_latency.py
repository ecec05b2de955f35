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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ase_search.evaluate import benchmark_latency, machine_info
from ase_search.measure import blocks_per_call
from ase_search.metrics.latency import measure, model_flops
from ase_search.models import create_model
from ase_search.samplers import SamplerConfig
from ase_search.schedule import ExitSchedule, preset, preset_names
from benchmarks._common import ROOT, pct

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


def sampler_config(spec: str) -> SamplerConfig:
    """``"ddim-50"`` -> ``SamplerConfig("ddim", 50)`` (the name may contain dashes)."""
    name, _, steps = spec.rpartition("-")
    if not name or not steps.isdigit():
        raise ValueError(f"sampler spec must look like 'ddim-50' (name-steps), got {spec!r}")
    return SamplerConfig(name, int(steps))


def set_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Set TF32 (on for ``tf32`` only) and return the autocast context (``bf16`` / ``fp16``)."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def inputs(model: torch.nn.Module, batch: int, device: torch.device):
    """Random inputs of one call: x (N, C, H, W), t = 500 (N,), labels or None."""
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
    return sum(step_s[k] for k in blocks_per_call(schedule, times))


def bench_model(name: str, args: argparse.Namespace, device: torch.device
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-step timing and composed runs of one model.

    Returns:
        ``(record, state)``: the JSON-able record, and what :func:`measure_run` needs later
        (the model, its schedules, the autocast context, the per-step medians).
    """
    torch.manual_seed(0)
    overrides = SMOKE_OVERRIDES[name] if args.smoke else {}
    model = create_model(name, **overrides).to(device).eval()
    batch = 2 if args.smoke else BATCH[name]
    depth = model.exit_depth
    schedules = {p: preset(p, model.arch, depth) for p in preset_names(model.arch, data_easy=False)}
    counts = sorted({k for s in schedules.values() for k in s.blocks}, reverse=True)
    if depth not in counts:
        counts.insert(0, depth)
    autocast = set_precision(args.precision, device)
    t0 = time.perf_counter()
    log(f"{name}: batch {batch}, {depth} exitable blocks, per-step timing of {counts}")

    with autocast:
        raw = per_step(model, counts, batch=batch, rounds=args.rounds, device=device)
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
    specs = list(dict.fromkeys([*PAPER_ACCELERATION[name], *args.measure]))
    runs: dict[str, dict[str, Any]] = {}
    for spec in specs:
        config = sampler_config(spec)
        if args.smoke:
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
        estimate = (args.repeats + 1) * sum(composed(s, step_s, times)
                                            for s in schedules.values())
        runs[spec] = {"sampler": config.to_dict(), "composed_full_s": full_s, "rows": rows,
                      "estimate_s": estimate, "measured": None, "skipped": None}
    record = {"model": name, "arch": model.arch, "depth": depth, "batch": batch,
              "overrides": overrides, "num_labels": model.num_labels, "steps": steps,
              "runs": runs, "seconds": time.perf_counter() - t0}
    state = {"model": model, "schedules": schedules, "autocast": autocast}
    return record, state


def measure_run(record: dict[str, Any], state: dict[str, Any], spec: str,
                args: argparse.Namespace, device: torch.device) -> float:
    """Time every call of one sampling run for every preset; returns the seconds it took."""
    run = record["runs"][spec]
    t0 = time.perf_counter()
    log(f"{record['model']} {spec}: measuring (about {run['estimate_s']:.1f} s)")
    with state["autocast"]:
        df = benchmark_latency(state["model"], state["schedules"],
                               sampler=SamplerConfig.from_dict(run["sampler"]),
                               batch_size=record["batch"], repeats=args.repeats, device=device)
    run["measured_full_s"] = float(df.loc[df["schedule"] == "full", "measured_s"].iloc[0])
    for r in df.itertuples(index=False):
        run["rows"][r.schedule].update({
            "measured": r.measured_acceleration,
            "measured_se": r.measured_acceleration_se,
            "predicted": r.predicted_acceleration,
        })
    run["measured"] = True
    seconds = time.perf_counter() - t0
    record["seconds"] += seconds
    return seconds


# ###################################################################### report
def markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
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
        lines += ["### Per step", "",
                  "| blocks | ms per call (± sd) | FLOP-ideal | per-step measured | measured / ideal |",
                  "|---:|---:|---:|---:|---:|"]
        for s in rec["steps"]:
            ratio = s["measured"] / s["ideal"] if s["ideal"] > 0 else math.nan
            lines.append(f"| {s['blocks']} | {s['ms']:.2f} ± {s['ms_spread']:.2f} | "
                         f"{pct(s['ideal'])} | {pct(s['measured'])} | "
                         f"{'–' if math.isnan(ratio) else f'{ratio:.3f}'} |")
        lines.append("")
        for spec, run in rec["runs"].items():
            steps = run["sampler"]["steps"]
            status = ("measured" if run["measured"] else
                      f"not measured: {run['skipped']}" if run["skipped"] else "composed only")
            if not spec.endswith(f"-{steps}"):
                status += f"; smoke: {steps} steps"
            lines += [f"### {spec} ({status})", "",
                      "| schedule | FLOP-ideal | composed | measured run | cost model | paper |",
                      "|---|---:|---:|---:|---:|---:|"]
            for p, r in run["rows"].items():
                lines.append(f"| {p} | {pct(r['ideal'])} | {pct(r['composed'])} | "
                             f"{pct(r.get('measured'), r.get('measured_se'))} | "
                             f"{pct(r.get('predicted'))} | {pct(r['paper'])} |")
            full = f"full run: composed {run['composed_full_s']:.3f} s"
            if run["measured"]:
                full += f", measured {run['measured_full_s']:.3f} s"
            lines += ["", full + ".", ""]
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="DiT-XL/2,U-ViT-S/4",
                        help=f"comma-separated, from {list(BATCH)}")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--measure", default="ddim-50,ddpm-250",
                        help="samplers whose whole run is measured (name-steps, comma-separated; "
                             "empty for none)")
    parser.add_argument("--rounds", type=int, default=10, help="per-step timing rounds")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of a measured run")
    parser.add_argument("--budget-seconds", type=float, default=240.0,
                        help="time for the measured runs, all models together; a run estimated "
                             "not to fit in what is left is skipped")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown report (default reports/gpu_latency.md; a temporary file "
                             "with --smoke)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw records")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny models, batch 2, 2-step samplers: checks the script works")
    args = parser.parse_args(argv)
    command = "python " + shlex.join(["benchmarks/gpu_latency.py",
                                      *(sys.argv[1:] if argv is None else argv)])

    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in BATCH]
    if unknown or not models:
        parser.error(f"--models must name some of {list(BATCH)}, got {args.models!r}")
    args.measure = [s for s in args.measure.split(",") if s]
    try:
        for spec in args.measure:
            sampler_config(spec)
    except ValueError as err:
        parser.error(f"--measure: {err}")
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be >= 1")

    if torch.cuda.is_available():
        device = torch.device("cuda")
        card = torch.cuda.get_device_name()
    elif args.allow_cpu:
        device = torch.device("cpu")
        card = "none (CPU run with --allow-cpu)"
    else:
        print("error: no CUDA device; this benchmark times GPU kernels. Run it on a machine with "
              "a GPU, or pass --allow-cpu (with --smoke for a quick check).", file=sys.stderr)
        return 2
    if args.smoke:
        args.rounds, args.repeats = min(args.rounds, 2), 1
    out = args.out or (Path(tempfile.gettempdir()) / "gpu_latency_smoke.md" if args.smoke
                       else ROOT / "reports" / "gpu_latency.md")

    t0 = time.perf_counter()
    records, states = zip(*(bench_model(name, args, device) for name in models))
    # Measured runs, cheapest sampler first across models, while the budget lasts; the per-step
    # medians predict each run's time, so a run that would not fit is skipped, not cut short.
    left = args.budget_seconds
    for spec in args.measure:
        for record, state in zip(records, states):
            estimate = record["runs"][spec]["estimate_s"]
            if estimate > left:
                record["runs"][spec]["skipped"] = (
                    f"estimated {estimate:.1f} s, {left:.1f} s of --budget-seconds left; "
                    f"its composed value stands in")
                log(f"{record['model']} {spec}: skipped ({record['runs'][spec]['skipped']})")
                continue
            left -= measure_run(record, state, spec, args, device)
    meta = {
        "card": card, "device": device.type, "command": command, "smoke": args.smoke,
        "precision": args.precision,
        "rounds": args.rounds, "repeats": args.repeats, "machine": machine_info(),
        "cuda": torch.version.cuda, "seconds": time.perf_counter() - t0,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(records, meta), encoding="utf-8")
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "records": records}, indent=1,
                                        default=str) + "\n", encoding="utf-8")
    log(f"wrote {out}" + (f" and {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
