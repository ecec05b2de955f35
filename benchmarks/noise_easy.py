"""Noise-Easy vs Data-Easy (Appendix A.1): FID against fine-tuning steps at the same compute.

The paper's Figure 5 fine-tunes DiT with a Noise-Easy schedule (fewer blocks near noise, the ASE
hypothesis) and with its Data-Easy mirror (fewer blocks near data, the same counts with t reflected
to 1 - t) and tracks FID over the fine-tuning steps. Here, for each ``--presets`` schedule (default
D3) and its mirror ``<preset>-data-easy`` on the shipped testbed, Algorithm 1
(:func:`ase_search.finetune.finetune`) runs one trajectory per schedule and the EMA teacher is
scored at every ``--checkpoints`` step (FID-MNIST, mean +- std over seeds, common random numbers).
Each trajectory is trained to a checkpoint, evaluated, and *resumed* from its ``last.pt`` up to
the next one (the training loop's resume is exact: every random draw of step k is seeded by
(seed, k), and the learning rate is held constant so it does not depend on the horizon). The
full model's FID (no exits, no fine-tune) is the reference line.

Run from the repository root:

    python -m benchmarks.noise_easy --presets D3 --checkpoints 0 100 200 400 800 --n 500 --seeds 5

Writes ``reports/noise_easy.md``, ``reports/noise_easy.html`` (offline plotly) and
``reports/noise_easy.json``. Finished evaluations are cached in the JSON and the trajectories'
checkpoints in ``--work-dir``, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import html
import math
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from ase_search.data import build_dataset
from ase_search.evaluate import EvalResult, evaluate, machine_info
from ase_search.measure import block_acceleration
from ase_search.finetune import FinetuneConfig, finetune
from ase_search.metrics.latency import CostModel, profile_components
from ase_search.models import load_state_dict_file
from ase_search.samplers import SamplerConfig
from ase_search.schedule import (
    DATA_EASY_SUFFIX,
    ExitSchedule,
    preset,
    preset_names,
)
from ase_search.testbed import TESTBEDS, load_model
from benchmarks._common import (
    ROOT,
    add_run_options,
    display_path,
    fid_text,
    file_sha256,
    load_json,
    machine_text,
    sampler_name,
    short_hash,
    start_run,
    write_json,
    write_text,
)

VERSION = 1


# ###################################################################### helpers
def uniform_block_acceleration(schedule: ExitSchedule) -> float:
    """Share of exitable blocks skipped over uniform t in [0, 1] (the fine-tune's t law)."""
    widths = [hi - lo for lo, hi in zip(schedule.boundaries, schedule.boundaries[1:])]
    return 1.0 - sum(w * n for w, n in zip(widths, schedule.blocks)) / schedule.depth


def sampler_block_acceleration(schedule: ExitSchedule, sampler: SamplerConfig) -> float:
    """Share of exitable blocks skipped over the sampler's model calls."""
    return block_acceleration(schedule, sampler)


def cell_record(result: EvalResult, step: int, seconds: float) -> dict[str, Any]:
    return {
        "step": step,
        "fid_mean": result.mean("fid"),
        "fid_std": result.std("fid"),
        "per_seed": [m["fid"] for m in result.metrics],
        "block_acceleration": result.block_acceleration,
        "predicted_acceleration": result.predicted_acceleration,
        "seconds": seconds,
    }


def load_cache(path: Path, key: str, fresh: bool) -> dict[str, Any]:
    """Cached cells of a run with the same settings (empty with ``fresh`` or other settings)."""
    stored = None if fresh else load_json(path, VERSION)
    if stored is None:
        return {}
    if stored.get("settings_key") != key:
        print(f"{path} holds a run with other settings; starting afresh (its cells are replaced)",
              file=sys.stderr)
        return {}
    return dict(stored.get("cells", {}))


# ###################################################################### the experiment
def run_trajectory(base: torch.nn.Module, data: Any, schedule: ExitSchedule,
                   config: FinetuneConfig, checkpoints: list[int], run_dir: Path,
                   evaluate_at: Any, cells: dict[str, Any], save: Any) -> None:
    """Fine-tune with ``schedule`` once, evaluating the EMA teacher at every checkpoint.

    ``cells[f"{schedule.name}@{k}"]`` already present are skipped; training resumes from
    ``run_dir/last.pt`` (whatever step it reached) up to the next checkpoint still missing.
    """
    for k in checkpoints:
        key = f"{schedule.name}@{k}"
        if key in cells:
            continue
        if k == 0:
            model = base
        else:
            last = run_dir / "last.pt"
            done = int(load_state_dict_file(last)["step"]) if last.is_file() else 0
            if done > k:
                raise SystemExit(
                    f"{last} is at step {done}, past checkpoint {k} whose FID is not cached; "
                    f"remove {run_dir} (or pass --fresh) to train this trajectory again")
            print(f"fine-tune {schedule.name}: step {done} -> {k}", file=sys.stderr, flush=True)
            result = finetune(copy.deepcopy(base).train(), data, schedule,
                              replace(config, steps=k), out_dir=run_dir, resume=True)
            model = result.ema.eval()
        cells[key] = evaluate_at(model, schedule, k)
        print(f"{schedule.name:>16s} step {k:>6d}: FID {fid_text(cells[key])}", flush=True)
        save()


def verdict(pairs: list[tuple[str, str]], cells: dict[str, Any],
            checkpoints: list[int]) -> list[str]:
    """One sentence per (Noise-Easy, Data-Easy) pair, computed from the numbers.

    At each step count the lower mean FID wins; a difference "exceeds the seed noise" when it is
    larger than the larger of the two standard deviations over seeds.
    """
    sentences = []
    for noise, data in pairs:
        wins, clear = [], []
        for k in checkpoints:
            a, b = cells[f"{noise}@{k}"], cells[f"{data}@{k}"]
            diff = b["fid_mean"] - a["fid_mean"]  # > 0: Noise-Easy is lower
            if diff > 0:
                wins.append(k)
            stds = [s for s in (a["fid_std"], b["fid_std"]) if s is not None]
            if stds and abs(diff) > max(stds):
                clear.append(f"{k} ({noise if diff > 0 else data} lower)")
        last = checkpoints[-1]
        a, b = cells[f"{noise}@{last}"], cells[f"{data}@{last}"]
        text = (f"**{noise} vs {data}:** the Noise-Easy schedule {noise} has the lower FID at "
                f"{len(wins)} of {len(checkpoints)} step counts"
                + (f" ({', '.join(map(str, wins))})" if wins else ""))
        if a["fid_std"] is None:
            text += "; with one seed there is no seed standard deviation to compare against"
        else:
            text += (f"; the difference exceeds the larger seed standard deviation at "
                     f"{len(clear)} of them" + (f": {', '.join(clear)}" if clear else ""))
        text += f". After {last} steps: {noise} {fid_text(a)} vs {data} {fid_text(b)}"
        deltas = [y - x for x, y in zip(a["per_seed"], b["per_seed"])]
        if len(deltas) > 1:
            text += (f"; paired over the common seeds, {data} − {noise} = "
                     f"{statistics.fmean(deltas):+.2f} ± {statistics.stdev(deltas):.2f} (std of "
                     f"the per-seed differences)")
        sentences.append(text + ".")
    return sentences


# ###################################################################### reports
def markdown(record: dict[str, Any]) -> str:
    s, m = record["settings"], record["machine"]
    cells, checkpoints = record["cells"], s["checkpoints"]
    names = [n for pair in record["pairs"] for n in pair]
    full = cells.get("full@0")
    lines = [
        "# Noise-Easy vs Data-Easy (Appendix A.1)", "",
        f"Generated {m['date']} by `{record['command']}` on {machine_text(m)}.", "",
        f"- model: {s['model_name']} ({s['arch']}, {s['depth']} exitable blocks), weights "
        f"`{s['weights']}` (sha256 {s['weights_sha256'][:12]})",
        f"- FID-MNIST (the project's digit-classifier features; not comparable with Inception "
        f"FID) of the EMA teacher, mean ± std over seeds {s['seeds']} (common random numbers: "
        f"every schedule and step count sees the same labels and noise), N = {s['n']} samples "
        f"per seed, sampler {s['sampler']['name']}-{s['sampler']['steps']}",
        f"- fine-tune (Algorithm 1, one trajectory per schedule, evaluated at steps "
        f"{', '.join(map(str, checkpoints))}): "
        + ", ".join(f"{k} {v}" for k, v in s["finetune"].items() if k != "steps")
        + " (constant learning rate, so resuming a trajectory at each checkpoint is exact)",
        "- step 0 is the shipped model without fine-tuning; the full model (no exits, no "
        "fine-tune) is the reference"
        + (f": FID **{fid_text(full)}**" if full else ""), "",
        "Same compute: a schedule and its mirror run the same counts over mirrored intervals, so "
        "they skip the same share of blocks over uniform t (the fine-tune's t) and, up to the "
        "sampler's time grid, over the sampling calls:", "",
        "| schedule | [t interval): blocks | block accel. (uniform t) | block accel. (sampler) "
        "| predicted accel. (cost model) |",
        "|---|---|---:|---:|---:|",
    ]
    for name in names:
        info = record["schedules"][name]
        lines.append(f"| {name} | `{info['intervals']}` | {info['uniform_block_acceleration']:.2%} "
                     f"| {info['sampler_block_acceleration']:.2%} | "
                     f"{info['predicted_acceleration']:.2%} |")
    lines += ["", "## FID against fine-tuning steps", "",
              "| steps | " + " | ".join(names) + " |",
              "|---:|" + "---:|" * len(names)]
    for k in checkpoints:
        row = [fid_text(cells[f"{n}@{k}"]) if f"{n}@{k}" in cells else "–" for n in names]
        lines.append(f"| {k} | " + " | ".join(row) + " |")
    lines += ["", "## Verdict", "", *[f"- {v}" for v in record["verdict"]], "",
              f"Wall time: {record['wall_time_min']:.1f} min (this invocation; cached cells "
              f"cost nothing). Plot: `{record['html']}`.", ""]
    return "\n".join(lines)


def write_html(record: dict[str, Any], path: Path) -> None:
    """One self-contained page: the FID-vs-steps plot (plotly.js inlined) and the table."""
    import plotly.graph_objects as go

    s, cells, checkpoints = record["settings"], record["cells"], record["settings"]["checkpoints"]
    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for p, (noise, data) in enumerate(record["pairs"]):
        colour = palette[p % len(palette)]
        for name, dash in ((noise, "solid"), (data, "dash")):
            ks = [k for k in checkpoints if f"{name}@{k}" in cells]
            fig.add_trace(go.Scatter(
                x=ks, y=[cells[f"{name}@{k}"]["fid_mean"] for k in ks], mode="lines+markers",
                name=name, line={"color": colour, "dash": dash},
                error_y={"type": "data", "visible": True,
                         "array": [cells[f"{name}@{k}"]["fid_std"] or 0.0 for k in ks]}))
    full = cells.get("full@0")
    if full:
        fig.add_hline(y=full["fid_mean"], line={"color": "#555", "dash": "dot"},
                      annotation_text=f"full model {fid_text(full)}")
    fig.update_layout(
        xaxis_title="fine-tuning steps (Algorithm 1)",
        yaxis_title=f"FID-MNIST (mean ± std over {len(s['seeds'])} seeds)",
        template="plotly_white", height=520,
        title=f"{s['model_name']}: Noise-Easy (solid) vs Data-Easy (dashed), "
              f"{s['sampler']['name']}-{s['sampler']['steps']}, N = {s['n']}")
    div = fig.to_html(full_html=False, include_plotlyjs=True, config={"displaylogo": False})
    md = markdown(record)
    doc = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           "<title>Noise-Easy vs Data-Easy</title>\n<style>body { font-family: system-ui, "
           "sans-serif; margin: 2em auto; max-width: 1100px; color: #222; } pre { white-space: "
           "pre-wrap; }</style>\n</head>\n<body>\n<h1>Noise-Easy vs Data-Easy (Appendix A.1)</h1>"
           f"\n{div}\n<h2>Report</h2>\n<pre>{html.escape(md)}</pre>\n</body>\n</html>\n")
    write_text(path, doc)


# ###################################################################### main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="dit", choices=list(TESTBEDS))
    parser.add_argument("--checkpoint", default=None,
                        help="model weights (default: the shipped testbed model)")
    parser.add_argument("--presets", nargs="+", default=["D3"],
                        help="Noise-Easy presets; each is run with its '-data-easy' mirror")
    parser.add_argument("--checkpoints", nargs="+", type=int, default=[0, 100, 200, 400, 800],
                        help="fine-tuning steps at which FID is measured")
    parser.add_argument("--n", type=int, default=500, help="samples per seed")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..S-1")
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--batch-size", type=int, default=250, help="sampling batch")
    parser.add_argument("--ft-batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--gamma", type=float, default=2.0, help="strength of lambda(t)")
    parser.add_argument("--cycles", type=int, default=1, help="epochs C with lambda(t)")
    parser.add_argument("--ft-seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "studies" / "noise-easy",
                        help="where the trajectories' last.pt checkpoints are kept")
    add_run_options(parser, ROOT / "reports" / "noise_easy.md",
                    fresh="ignore cached cells and trajectories")
    args = parser.parse_args(argv)
    args.sampler = sampler_name(args.sampler)
    if any(k < 0 for k in args.checkpoints):
        parser.error("--checkpoints must be >= 0")
    args.checkpoints = sorted(set(args.checkpoints))
    for p in args.presets:
        if p.endswith(DATA_EASY_SUFFIX) or p == "full" or p not in preset_names(args.arch):
            parser.error(f"--presets takes Noise-Easy presets of {args.arch}: "
                         f"{preset_names(args.arch, data_easy=False)[1:]}, got {p!r}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = start_run(__file__, argv, args.threads)
    started = time.perf_counter()
    weights = Path(args.checkpoint) if args.checkpoint else TESTBEDS[args.arch].path
    base = load_model(args.arch, weights)
    depth = base.exit_depth
    sampler = SamplerConfig(name=args.sampler, steps=args.steps)
    seeds = list(range(args.seeds))
    config = FinetuneConfig(steps=max(args.checkpoints), batch_size=args.ft_batch_size,
                            lr=args.lr, lr_schedule="constant", ema_decay=args.ema_decay,
                            gamma=args.gamma, cycles=args.cycles, seed=args.ft_seed)
    pairs = [(p, p + DATA_EASY_SUFFIX) for p in args.presets]
    schedules = {name: preset(name, args.arch, depth) for pair in pairs for name in pair}

    cost = profile_components(base, batch_size=256)
    sched_info = {}
    for name, s in schedules.items():
        sched_info[name] = {
            "schedule": s.to_dict(), "intervals": s.describe(),
            "uniform_block_acceleration": uniform_block_acceleration(s),
            "sampler_block_acceleration": sampler_block_acceleration(s, sampler),
            "predicted_acceleration": cost.acceleration(s, sampler.model_times()),
        }
    for noise, data in pairs:
        a, b = sched_info[noise], sched_info[data]
        print(f"{noise:>16s} {a['intervals']}\n{data:>16s} {b['intervals']}\n"
              f"  block acceleration over uniform t: {a['uniform_block_acceleration']:.4f} vs "
              f"{b['uniform_block_acceleration']:.4f}; over the {sampler.name}-{sampler.steps} "
              f"calls: {a['sampler_block_acceleration']:.4f} vs "
              f"{b['sampler_block_acceleration']:.4f}", file=sys.stderr)
        if not math.isclose(a["uniform_block_acceleration"], b["uniform_block_acceleration"],
                            abs_tol=1e-9):
            raise SystemExit(f"{noise} and {data} do not skip the same share of blocks; the "
                             f"comparison would not be at the same compute")

    settings = {
        "arch": args.arch, "model_name": getattr(base, "model_name", args.arch), "depth": depth,
        "weights": display_path(weights), "weights_sha256": file_sha256(weights),
        "n": args.n, "seeds": seeds, "sampler": sampler.to_dict(), "batch_size": args.batch_size,
        "finetune": asdict(config), "data": "mnist", "checkpoints": args.checkpoints,
    }
    # The cache is valid for any checkpoint list (each cell is one step), so that is left out.
    key = short_hash({k: v for k, v in settings.items()
                      if k not in ("checkpoints", "finetune", "model_name")}
                     | {"finetune": {k: v for k, v in settings["finetune"].items()
                                     if k != "steps"}})
    json_path = args.out.with_suffix(".json")
    cells = load_cache(json_path, key, args.fresh)
    record: dict[str, Any] = {
        "version": VERSION, "command": command, "machine": machine_info(),
        "settings": settings, "settings_key": key, "pairs": pairs, "schedules": sched_info,
        "cost_model": cost.to_dict(), "cells": cells, "html": args.out.with_suffix(".html").name,
    }

    def save() -> None:
        record["wall_time_min"] = (time.perf_counter() - started) / 60
        write_json(json_path, record)

    def evaluate_at(model: torch.nn.Module, schedule: ExitSchedule, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        result = evaluate(model, schedule, sampler=sampler, n=args.n, seeds=seeds,
                          cost_model=CostModel.from_dict(record["cost_model"]),
                          batch_size=args.batch_size)
        return cell_record(result, step, time.perf_counter() - t0)

    if "full@0" not in cells:
        cells["full@0"] = evaluate_at(base, preset("full", args.arch, depth), 0)
        print(f"{'full':>16s} step      0: FID {fid_text(cells['full@0'])}", flush=True)
        save()
    data = build_dataset("mnist", resolution=base.input_size, channels=base.in_channels)
    for name, schedule in schedules.items():
        run_dir = args.work_dir / f"{args.arch}-{name}-{key}"
        if args.fresh and (run_dir / "last.pt").is_file():
            (run_dir / "last.pt").unlink()
        run_trajectory(base, data, schedule, config, args.checkpoints, run_dir, evaluate_at,
                       cells, save)

    record["verdict"] = verdict(pairs, cells, args.checkpoints)
    save()
    text = markdown(record)
    write_text(args.out, text)
    write_html(record, args.out.with_suffix(".html"))
    print(text)
    print(f"wrote {args.out}, {args.out.with_suffix('.html')} and {json_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
