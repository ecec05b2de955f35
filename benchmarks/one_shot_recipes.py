"""One-shot fine-tune recipes compared (reports/one_shot_recipes.md, .json).

The search measures every trial on weights fine-tuned once over the whole space. This fine-tunes
a testbed model with each recipe at the search's settings (cached under ``--work-dir``): **plain**
(the noise as target, the default) and **distill** (the frozen pretrained model's full-depth
prediction as target), then measures the full model and the paper's presets (FID-MNIST over seeds,
common random numbers) next to the shipped model. One cell per model and column (``dit/shipped``,
``dit/plain``, ``dit/distill``), saved schedule by schedule:

    python -m benchmarks.one_shot_recipes --arch dit --n 500 --seeds 5 --threads 2
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import time
from dataclasses import field
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ROOT,
    check_testbeds,
    display_path,
    fid_text,
    file_sha256,
    report_by_arch,
    section_head,
)
from benchmarks._runner import Benchmark, CellContext, markdown_table, option, run

RECIPES = ("plain", "distill")
COLUMNS = ("shipped", *RECIPES)
SCHEDULES = ("full", "D1", "D3", "D4", "D6")


@dataclasses.dataclass(frozen=True)
class Params:
    """Which model and recipes, and how each column's FIDs are measured."""

    arch: str = field(default="dit", metadata=option("testbed model", identity=False))
    n: int = field(default=500, metadata=option("samples per seed"))
    seeds: int = field(default=5, metadata=option("seeds 0..S-1"))
    plain_weights: Path | None = field(default=None, metadata=option(
        "reuse these weights for the plain recipe (e.g. studies/reference/dit-one-shot-<key>"
        ".safetensors)", parse=Path))
    work_dir: Path = field(default=ROOT / "studies" / "bench" / "one-shot", metadata=option(
        "where the recipes' fine-tuned weights are cached", identity=False))

    def __post_init__(self) -> None:
        check_testbeds((self.arch,))
        if self.n < 2 or self.seeds < 1:
            raise ValueError("--n must be >= 2 and --seeds >= 1")
        if self.plain_weights is not None and not self.plain_weights.is_file():
            raise ValueError(f"--plain-weights {self.plain_weights} does not exist")


def recipe_weights(arch: str, recipe: str, args: Params) -> tuple[Path, float]:
    """The one-shot weights of ``recipe``, made as ``ase-search run`` makes them (cached under
    ``--work-dir/<recipe>/``) unless given, and the minutes their fine-tune took (0: reused)."""
    from ase_search.finetune import one_shot_key, one_shot_path, one_shot_weights
    from ase_search.search import SearchConfig, one_shot_config
    from ase_search.space import load_space
    from ase_search.testbed import TESTBEDS, load_model

    if recipe == "plain" and args.plain_weights is not None:
        return args.plain_weights.resolve(), 0.0
    config = SearchConfig(arch=arch, finetune_distill=recipe == "distill")
    cache = args.work_dir / recipe
    base = load_model(arch)
    space = load_space(TESTBEDS[arch].space, depth=base.exit_depth)
    settings = one_shot_config(config)
    name = config.resolved_study_name
    cached = one_shot_path(cache, name, one_shot_key(base, space, settings, config.data)).is_file()
    t0 = time.perf_counter()
    path = one_shot_weights(base, space, settings, data=config.data, out_dir=cache, name=name)
    return path, 0.0 if cached else (time.perf_counter() - t0) / 60


def one_shot_settings() -> str:
    """The search's one-shot fine-tune settings, as the report states them."""
    from ase_search.search import SearchConfig

    d = SearchConfig()
    return (f"{d.finetune_steps} steps, lr {d.finetune_lr} (cosine), EMA {d.finetune_ema}, "
            f"full share {d.finetune_full_share}, seed {d.seed}")


def measure_column(args: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """One column (``<arch>/<shipped|recipe>``): its weights, then FID of every schedule."""
    from ase_search.evaluate import machine_info
    from ase_search.measure import measure_schedule
    from ase_search.models import load_checkpoint
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import preset
    from ase_search.testbed import TESTBEDS

    arch, _, column = key.partition("/")
    if column == "shipped":
        path, minutes = TESTBEDS[arch].path, 0.0
    else:
        path, minutes = recipe_weights(arch, column, args)
    weights = {"path": display_path(path), "sha256": file_sha256(path), "minutes": minutes}
    old = ctx.previous or {}
    # FIDs measured on the same weights with the same N and seeds still hold.
    same = (old.get("weights", {}).get("sha256"), old.get("n"), old.get("seeds")) == (
        weights["sha256"], args.n, args.seeds)
    cell: dict[str, Any] = {
        "arch": arch, "column": column, "command": ctx.command, "machine": machine_info(),
        "date": dt.date.today().isoformat(), "n": args.n, "seeds": args.seeds,
        "settings": one_shot_settings(), "weights": weights,
        "fids": dict(old.get("fids", {})) if same else {},
    }
    if same and set(cell["fids"]) >= set(SCHEDULES):
        return old
    model, _ = load_checkpoint(path)
    model.eval()
    for name in [s for s in SCHEDULES if s not in cell["fids"]]:
        result = measure_schedule(model, preset(name, arch, model.exit_depth),
                                  sampler=SamplerConfig(name="ddim", steps=20), n=args.n,
                                  seeds=list(range(args.seeds)), batch_size=250, keep_images=0)
        cell["fids"][name] = {"fid_mean": result.mean("fid"), "fid_std": result.std("fid")}
        ctx.checkpoint(cell)
        print(f"{arch} {path.name} {name}: FID {fid_text(cell['fids'][name])}",
              file=sys.stderr, flush=True)
    return cell


# ###################################################################### report
def arch_section(arch: str, cells: list[dict[str, Any]]) -> str:
    """One model's section: the run(s), the FID table (schedules x columns), the weights."""
    import pandas as pd

    cells = sorted(cells, key=lambda c: COLUMNS.index(c["column"]))
    first = cells[0]
    title, runs = section_head(arch, cells, first)
    lines = [title, "", f"{runs}; seeds 0..{first['seeds'] - 1}, N = {first['n']} per seed; "
             f"one-shot settings: {first['settings']}.", ""]
    others = [c for c in cells if (c["n"], c["seeds"]) != (first["n"], first["seeds"])]
    if others:
        lines += ["Measured with other seeds or N: " + "; ".join(
            f"{c['column']} seeds 0..{c['seeds'] - 1}, N = {c['n']}" for c in others) + ".", ""]
    table = [[name, *(fid_text(c["fids"].get(name)) for c in cells)] for name in SCHEDULES]
    frame = pd.DataFrame(table, columns=["schedule", *(c["column"] for c in cells)])
    lines += [markdown_table(frame, align=["left"] + ["right"] * len(cells)), ""]
    lines += ["Weights: " + "; ".join(
        f"{c['column']} `{c['weights']['path']}` (sha256 {c['weights']['sha256'][:12]}"
        + (f", fine-tuned here in {c['weights']['minutes']:.1f} min"
           if c["weights"]["minutes"] else "") + ")" for c in cells) + ".", ""]
    return "\n".join(lines)


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> str:
    return report_by_arch(
        cells, "One-shot fine-tune recipes",
        "FID-MNIST (the project's digit-classifier features; not Inception FID), DDIM-20, mean ± "
        "std over the seeds (common random numbers). Every recipe is fine-tuned with the search's "
        "one-shot settings; **plain** is the search's default (the noise as target, Algorithm "
        "1's loss), **distill** regresses onto the frozen pretrained model's full-depth "
        "prediction. **shipped** is the testbed model without fine-tuning.", arch_section)


BENCHMARK = Benchmark(name="one_shot_recipes", doc=__doc__, params=Params,
                      keys=lambda params: [f"{params.arch}/{c}" for c in COLUMNS],
                      cell=measure_column, report=report, version=2)


if __name__ == "__main__":
    run(BENCHMARK)
