"""Testbed report (reports/testbed.md): the shipped DiT-T / U-ViT-T under the paper's schedules.

For each model: sample quality of the full model (share of samples the digit classifier reads with
top-1 probability >= 0.9, and a grid), the FID noise at the search's N (std over seeds), and
FID-MNIST (mean +- std over seeds, common random numbers) of full, D1..D6 and their Data-Easy
mirrors with no fine-tune, after Algorithm 1 (per schedule) and after the one-shot fine-tune over
the search space. Run from the repository root:

    python -m benchmarks.testbed --arch dit uvit --n 500 --seeds 5 --finetune-steps 300
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import time
from pathlib import Path

from ase_search.data import build_dataset
from ase_search.evaluate import evaluate, machine_info
from ase_search.finetune import FinetuneConfig, finetune, finetune_one_shot
from ase_search.metrics.latency import profile_components
from ase_search.models import load_checkpoint
from ase_search.report import save_grid
from ase_search.samplers import SamplerConfig
from ase_search.search import SearchConfig
from ase_search.schedule import DATA_EASY_SUFFIX, preset, preset_names
from ase_search.space import load_space
from ase_search.testbed import TESTBEDS, load_model
from benchmarks._common import (
    ROOT,
    QUALITY_N,
    load_json,
    machine_text,
    sample_quality,
    start_run,
    write_json,
    write_text,
)


def fid_cell(result) -> str:
    std = result.std("fid")
    return f"{result.mean('fid'):.2f}" + (f" ± {std:.2f}" if std is not None else "")


def run_arch(arch: str, args: argparse.Namespace, out_dir: Path,
             command: str) -> dict:
    t_start = time.perf_counter()
    checkpoint = getattr(args, f"checkpoint_{arch}")
    base = load_model(arch, checkpoint)
    sampler = SamplerConfig(name=args.sampler, steps=args.steps)
    seeds = list(range(args.seeds))
    data = build_dataset("mnist", resolution=base.input_size, channels=base.in_channels)
    cost = profile_components(base, batch_size=256)
    names = [n for n in preset_names(arch) if not args.presets or n in args.presets]
    record: dict = {"arch": arch, "schedules": {}}

    # Quality of the full model: 1,000 samples per seed read by the digit classifier.
    quality = sample_quality(base, args.quality_seeds)
    grid = save_grid(quality["images"], out_dir / f"testbed-{arch}-full.png", nrow=10)
    record["quality"] = {"share_top1_ge_0.9": quality["confident"],
                         "per_seed": quality["confidents"], "grid": grid.name}

    def fids(model, label: str, names: list[str]) -> None:
        for name in names:
            schedule = preset(name, arch, model.exit_depth)
            result = evaluate(model, schedule, sampler=sampler, n=args.n, seeds=seeds,
                              cost_model=cost, batch_size=250)
            entry = record["schedules"].setdefault(name, {
                "blocks": list(schedule.blocks), "boundaries": list(schedule.boundaries),
                "block_acceleration": result.block_acceleration,
                "predicted_acceleration": result.predicted_acceleration})
            entry[label] = {"mean": result.mean("fid"), "std": result.std("fid"),
                            "cell": fid_cell(result)}
            print(f"{arch} {label:9s} {name:14s} FID {fid_cell(result)}", flush=True)

    fids(base, "none", names)
    # Algorithm 1 for the Noise-Easy presets (their mirrors' fine-tuning is benchmarks/noise_easy.py)
    tuned_names = [n for n in names if n != "full" and not n.endswith(DATA_EASY_SUFFIX)]
    if args.finetune_steps > 0:
        config = FinetuneConfig(steps=args.finetune_steps, lr=args.finetune_lr,
                                ema_decay=args.finetune_ema, seed=0)
        for name in tuned_names:
            schedule = preset(name, arch, base.exit_depth)
            tuned = finetune(copy.deepcopy(base).train(), data, schedule, config,
                             progress=False).ema.eval()
            result = evaluate(tuned, schedule, sampler=sampler, n=args.n, seeds=seeds,
                              cost_model=cost, batch_size=250)
            record["schedules"][name]["algorithm1"] = {
                "mean": result.mean("fid"), "std": result.std("fid"), "cell": fid_cell(result)}
            print(f"{arch} algorithm1 {name:14s} FID {fid_cell(result)}", flush=True)
        space = load_space(TESTBEDS[arch].space, depth=base.exit_depth)
        reuse = getattr(args, f"one_shot_{arch}")
        if reuse is not None:  # e.g. the weights the reference search fine-tuned (same settings)
            one_shot, meta = load_checkpoint(reuse)
            one_shot.eval()
            record["one_shot_steps"] = int(meta.get("steps", args.one_shot_steps))
        else:
            one_shot_config = FinetuneConfig(steps=args.one_shot_steps, lr=args.finetune_lr,
                                             ema_decay=args.finetune_ema, seed=0)
            one_shot = finetune_one_shot(copy.deepcopy(base).train(), data, space, one_shot_config,
                                         progress=False).ema.eval()
            record["one_shot_steps"] = args.one_shot_steps
        # the one-shot weights serve the schedules of the space (the mirrors are not monotone)
        fids(one_shot, "one-shot",
             [n for n in names if space.contains(preset(n, arch, base.exit_depth))])
    record["wall_time_min"] = (time.perf_counter() - t_start) / 60

    lines = [f"## {arch}: {TESTBEDS[arch].model_name}", ""]
    shares = quality["confidents"]
    lines += [f"Generated {dt.date.today().isoformat()} by `{command}` on "
              f"{machine_text(machine_info())}. Seeds 0..{args.seeds - 1} (common random "
              f"numbers), N = {args.n} samples per seed, {args.sampler}-{args.steps}.", ""]
    lines += [f"- samples the digit classifier reads with top-1 >= 0.9: **{quality['confident']:.1%}**"
              f" of {QUALITY_N:,} per seed, mean over sample seeds 0-{len(shares) - 1} ("
              + " / ".join(f"{v:.1%}" for v in shares) + f"; full model, ddim-20); grid: "
              f"`{grid.name}`"]
    full = record["schedules"].get("full", {}).get("none")
    if full and full["std"] is not None:
        lines += [f"- FID noise at N = {args.n}: std over {args.seeds} seeds = "
                  f"**{full['std']:.3f}** (full model, common random numbers)"]
        d6 = record["schedules"].get("D6", {}).get("none")
        if d6:
            gap = d6["mean"] - full["mean"]
            lines += [f"- FID(D6, no fine-tune) - FID(full) = **{gap:.2f}**, "
                      f"{abs(gap) / full['std']:.1f}x the noise: "
                      + ("the noise is smaller, as required" if abs(gap) > full["std"]
                         else "the noise is NOT smaller: raise N or average more seeds")]
    header = "| schedule | blocks (data → noise) | block accel. | predicted accel. | FID no FT |"
    rule = "| --- | --- | ---: | ---: | ---: |"
    if args.finetune_steps > 0:
        header += f" FID Alg. 1 ({args.finetune_steps} steps) | FID one-shot ({record['one_shot_steps']} steps) |"
        rule += " ---: | ---: |"
    lines += ["", header, rule]
    for name, entry in record["schedules"].items():
        row = (f"| {name} | {' '.join(map(str, entry['blocks']))} | "
               f"{entry['block_acceleration']:.1%} | {entry['predicted_acceleration']:.1%} | "
               f"{entry['none']['cell']} |")
        if args.finetune_steps > 0:
            row += (f" {entry.get('algorithm1', {}).get('cell', '—')} |"
                    f" {entry.get('one-shot', {}).get('cell', '—')} |")
        lines.append(row)
    lines += ["", f"Wall time: {record['wall_time_min']:.1f} min.", ""]
    record["section"] = "\n".join(lines)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["dit", "uvit"], choices=list(TESTBEDS))
    parser.add_argument("--checkpoint-dit", default=None)
    parser.add_argument("--checkpoint-uvit", default=None)
    parser.add_argument("--presets", nargs="*", default=None)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--one-shot-steps", type=int, default=SearchConfig.finetune_steps,
                        help="steps of the one-shot fine-tune (the search's default)")
    parser.add_argument("--finetune-lr", type=float, default=3e-4,
                        help="lr of both fine-tunes (the search's one-shot default)")
    parser.add_argument("--finetune-ema", type=float, default=0.99,
                        help="EMA decay of their teachers (the search's default)")
    parser.add_argument("--one-shot-dit", default=None,
                        help="Reuse these one-shot weights (fine-tuned with --one-shot-steps).")
    parser.add_argument("--one-shot-uvit", default=None,
                        help="Reuse these one-shot weights (fine-tuned with --one-shot-steps).")
    parser.add_argument("--quality-seeds", type=int, default=5,
                        help="sample seeds of the full model's quality bar (1,000 samples each)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "testbed.md")
    args = parser.parse_args()
    command = start_run(__file__, None, args.threads)
    out_dir = args.out.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    # Models not rerun keep their sections (and JSON records) from the previous report.
    json_path = args.out.with_suffix(".json")
    earlier = load_json(json_path)
    records = {r["arch"]: r for r in (earlier if isinstance(earlier, list) else [])}
    header = [
        "# Testbed report", "",
        "FID-MNIST uses the project's digit classifier features (not comparable with "
        "Inception FID); every model's command, machine, date, seeds (common random numbers "
        "across schedules), N and sampler are under its heading.", "",
    ]
    for arch in args.arch:
        records[arch] = run_arch(arch, args, out_dir, command)
        kept = [records[a] for a in TESTBEDS if a in records and "section" in records[a]]
        write_text(args.out, "\n".join(header + [r["section"] for r in kept]))
        write_json(json_path, kept)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
