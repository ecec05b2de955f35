"""Testbed report (reports/testbed.md): the shipped DiT-T / U-ViT-T under the paper's schedules.

For each model: sample quality of the full model (share of samples the digit classifier reads with
top-1 probability >= 0.9, and a grid), the FID noise at the search's N (std over seeds), and
FID-MNIST (mean +- std over seeds, common random numbers) of full, D1..D6 and their Data-Easy
mirrors with no fine-tune, after Algorithm 1 (per schedule) and after the one-shot fine-tune over
the search space. Run from the repository root:

    python -m benchmarks.testbed --arch dit uvit --n 500 --seeds 5 --finetune-steps 300

One cell of ``reports/testbed.json`` per model, recomputed when the settings or the weights it
starts from change; within a cell every FID is saved as it finishes, so an interrupted run
continues where it stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import field
from pathlib import Path
from typing import Any

from ase_search.measure import QUALITY_N
from ase_search.schedule import DATA_EASY_SUFFIX
from ase_search.search import SearchConfig
from benchmarks._common import fid_text, file_sha256, machine_text, sampler_name
from benchmarks._runner import (
    REPORTS,
    Benchmark,
    CellContext,
    identity,
    markdown_table,
    option,
    run,
)

ARCHS = ("dit", "uvit")
QUALITY_SAMPLER = ("ddim", 20)  # the full model's quality bar: the search's sampler


@dataclasses.dataclass(frozen=True)
class Params:
    """What the testbed report measures."""

    arch: tuple[str, ...] = field(default=ARCHS, metadata=option("testbed models",
                                                                 identity=False, choices=ARCHS))
    n: int = field(default=500, metadata=option("samples per seed"))
    seeds: int = field(default=5, metadata=option("seeds 0..S-1"))
    sampler: str = "ddim"
    steps: int = 20
    finetune_steps: int = field(default=300, metadata=option(
        "steps of Algorithm 1 per schedule; 0 skips both fine-tunes"))
    one_shot_steps: int = field(default=SearchConfig.finetune_steps, metadata=option(
        "steps of the one-shot fine-tune (the search's default)"))
    finetune_lr: float = field(default=3e-4, metadata=option(
        "lr of both fine-tunes (the search's one-shot default)"))
    finetune_ema: float = field(default=0.99, metadata=option(
        "EMA decay of their teachers (the search's default)"))
    one_shot_dit: str | None = field(default=None, metadata=option(
        "reuse these one-shot weights (fine-tuned with --one-shot-steps)", identity=False))
    one_shot_uvit: str | None = field(default=None, metadata=option(
        "reuse these one-shot weights (fine-tuned with --one-shot-steps)", identity=False))
    quality_seeds: int = field(default=5, metadata=option(
        "sample seeds of the full model's quality bar"))
    quality_n: int = field(default=QUALITY_N, metadata=option("samples per quality seed"))

    def __post_init__(self) -> None:
        if min(self.n, self.seeds, self.steps, self.quality_seeds) < 1 or self.quality_n < 2:
            raise ValueError("--n, --seeds, --steps and --quality-seeds must be >= 1 and "
                             "--quality-n >= 2")
        if self.finetune_steps < 0 or self.one_shot_steps < 1:
            raise ValueError("--finetune-steps must be >= 0 and --one-shot-steps >= 1")

    def one_shot(self, arch: str) -> Path | None:
        path = getattr(self, f"one_shot_{arch}")
        return None if path is None else Path(path)


def weights_identity(params: Params, arch: str) -> dict[str, Any]:
    """The digests of the weights a model's cell starts from (and of reused one-shot weights)."""
    from ase_search.testbed import TESTBEDS

    one_shot = params.one_shot(arch)
    return {"weights_sha256": file_sha256(TESTBEDS[arch].path),
            "one_shot_sha256": None if one_shot is None else file_sha256(one_shot)}


# ###################################################################### one model
def measure_arch(params: Params, arch: str, ctx: CellContext) -> dict[str, Any]:
    """One model's cell: its quality bar and every FID, each saved as it finishes."""
    from ase_search.data import build_dataset
    from ase_search.evaluate import evaluate, machine_info
    from ase_search.finetune import FinetuneConfig, finetune, finetune_one_shot
    from ase_search.measure import measure_sample_quality
    from ase_search.metrics.latency import profile_components
    from ase_search.models import load_checkpoint
    from ase_search.images import save_grid
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import preset, preset_names
    from ase_search.space import load_space
    from ase_search.testbed import TESTBEDS, load_model

    started = time.perf_counter()
    base = load_model(arch)
    sampler = SamplerConfig(name=sampler_name(params.sampler), steps=params.steps)
    seeds = list(range(params.seeds))
    names = preset_names(arch)
    same = {**identity(params), **weights_identity(params, arch)}
    old = ctx.previous if (ctx.previous or {}).get("identity") == same else {}
    record: dict[str, Any] = {
        "arch": arch, "model": TESTBEDS[arch].model_name, "command": ctx.command,
        "machine": machine_info(), "identity": same, "n": params.n, "seeds": seeds,
        "sampler": f"{sampler.name}-{sampler.steps}", "finetune_steps": params.finetune_steps,
        "quality": old.get("quality"),
        "schedules": {k: copy.deepcopy(v) for k, v in old.get("schedules", {}).items()
                      if k in names},
        "one_shot_steps": old.get("one_shot_steps"),
    }

    def save() -> None:
        record["wall_time_min"] = (time.perf_counter() - started) / 60 + old.get(
            "wall_time_min", 0.0)
        ctx.checkpoint(record)

    if record["quality"] is None:
        name, steps = QUALITY_SAMPLER
        quality = measure_sample_quality(base, sampler=SamplerConfig(name, steps),
                                         seeds=range(params.quality_seeds), n=params.quality_n)
        grid = save_grid(quality.images, REPORTS / f"testbed-{arch}-full.png", nrow=10)
        record["quality"] = {"confident": quality.confident, "per_seed": list(quality.confidents),
                             "seeds": list(quality.seeds), "n": quality.n,
                             "sampler": f"{name}-{steps}", "grid": grid.name}
        save()
    cost = profile_components(base, batch_size=256)

    def fids(model: Any, label: str, todo: list[str]) -> None:
        for name in todo:
            schedule = preset(name, arch, model.exit_depth)
            if label in record["schedules"].get(name, {}):
                continue
            result = evaluate(model, schedule, sampler=sampler, n=params.n, seeds=seeds,
                              cost_model=cost, batch_size=250)
            entry = record["schedules"].setdefault(name, {
                "blocks": list(schedule.blocks), "boundaries": list(schedule.boundaries),
                "block_acceleration": result.block_acceleration,
                "predicted_acceleration": result.predicted_acceleration})
            entry[label] = {"fid_mean": result.mean("fid"), "fid_std": result.std("fid"),
                            "per_seed": [m["fid"] for m in result.metrics]}
            print(f"{arch} {label:10s} {name:14s} FID {fid_text(entry[label])}", flush=True)
            save()

    fids(base, "none", names)
    if params.finetune_steps > 0:
        data = build_dataset("mnist", resolution=base.input_size, channels=base.in_channels)
        config = FinetuneConfig(steps=params.finetune_steps, lr=params.finetune_lr,
                                ema_decay=params.finetune_ema, seed=0)
        # Algorithm 1 for the Noise-Easy presets (their mirrors' fine-tuning is noise_easy.py)
        for name in [n for n in names if n != "full" and not n.endswith(DATA_EASY_SUFFIX)]:
            if "algorithm1" in record["schedules"][name]:
                continue
            schedule = preset(name, arch, base.exit_depth)
            tuned = finetune(copy.deepcopy(base).train(), data, schedule, config,
                             progress=False).ema.eval()
            fids(tuned, "algorithm1", [name])
        space = load_space(TESTBEDS[arch].space, depth=base.exit_depth)
        # the one-shot weights serve the schedules of the space (the mirrors are not monotone)
        in_space = [n for n in names if space.contains(preset(n, arch, base.exit_depth))]
        if any("one-shot" not in record["schedules"][n] for n in in_space):
            reuse = params.one_shot(arch)
            if reuse is not None:  # e.g. the weights the reference search fine-tuned
                one_shot, meta = load_checkpoint(reuse)
                record["one_shot_steps"] = int(meta.get("steps", params.one_shot_steps))
            else:
                one_shot = finetune_one_shot(
                    copy.deepcopy(base).train(), data, space,
                    dataclasses.replace(config, steps=params.one_shot_steps), progress=False).ema
                record["one_shot_steps"] = params.one_shot_steps
            fids(one_shot.eval(), "one-shot", in_space)
    save()
    return record


# ###################################################################### the report
def section(record: dict[str, Any]) -> str:
    """One model's section: its run, its quality bar, the FID noise and the table."""
    import pandas as pd

    m, q = record["machine"], record["quality"]
    seeds, n = record["seeds"], record["n"]
    lines = [f"## {record['arch']}: {record['model']}", "",
             f"Generated {m['date'].split()[0]} by `{record['command']}` on {machine_text(m)}. "
             f"Seeds {seeds[0]}..{seeds[-1]} (common random numbers across schedules), N = {n} "
             f"samples per seed, {record['sampler']}.", "",
             f"- samples the digit classifier reads with top-1 >= 0.9: **{q['confident']:.1%}** "
             + (f"of {q['n']:,} (sample seed {q['seeds'][0]}" if len(q["seeds"]) == 1 else
                f"of {q['n']:,} per seed, mean over sample seeds {q['seeds'][0]}-"
                f"{q['seeds'][-1]} (" + " / ".join(f"{v:.1%}" for v in q["per_seed"]))
             + f"; full model, {q['sampler']}); grid: `{q['grid']}`"]
    full = record["schedules"].get("full", {}).get("none")
    if full and full["fid_std"] is not None:
        lines += [f"- FID noise at N = {n}: std over {len(seeds)} seeds = "
                  f"**{full['fid_std']:.3f}** (full model, common random numbers)"]
        d6 = record["schedules"].get("D6", {}).get("none")
        if d6:
            gap = d6["fid_mean"] - full["fid_mean"]
            lines += [f"- FID(D6, no fine-tune) - FID(full) = **{gap:.2f}**, "
                      f"{abs(gap) / full['fid_std']:.1f}x the noise: "
                      + ("the noise is smaller, as required" if abs(gap) > full["fid_std"]
                         else "the noise is NOT smaller: raise N or average more seeds")]
    columns = ["schedule", "blocks (data → noise)", "block accel.", "predicted accel.",
               "FID no FT"]
    tuned = record["finetune_steps"] > 0
    if tuned:
        columns += [f"FID Alg. 1 ({record['finetune_steps']} steps)",
                    f"FID one-shot ({record['one_shot_steps']} steps)"]
    rows = []
    for name, entry in record["schedules"].items():
        row = [name, " ".join(map(str, entry["blocks"])), f"{entry['block_acceleration']:.1%}",
               f"{entry['predicted_acceleration']:.1%}", fid_text(entry.get("none"), "—")]
        if tuned:
            row += [fid_text(entry.get(k), "—") for k in ("algorithm1", "one-shot")]
        rows.append(row)
    lines += ["", markdown_table(pd.DataFrame(rows, columns=columns),
                                 align=["left", "left"] + ["right"] * (len(columns) - 2)),
              "", f"Wall time: {record['wall_time_min']:.1f} min.", ""]
    return "\n".join(lines)


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> str:
    header = [
        "# Testbed report", "",
        f"Written by `benchmarks/testbed.py` from `{json_name}`. FID-MNIST uses the project's "
        "digit classifier features (not comparable with Inception FID); every model's command, "
        "machine, date, seeds (common random numbers across schedules), N and sampler are under "
        "its heading.", "",
    ]
    return "\n".join(header + [section(cells[a]) for a in ARCHS if a in cells])


BENCHMARK = Benchmark(name="testbed", doc=__doc__, params=Params,
                      keys=lambda params: list(params.arch), cell=measure_arch, report=report,
                      cell_identity=weights_identity)


if __name__ == "__main__":
    run(BENCHMARK)
