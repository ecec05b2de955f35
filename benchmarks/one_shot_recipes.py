"""One-shot fine-tune recipes compared (reports/one_shot_recipes.md, .json).

The search measures every trial on one set of weights fine-tuned once over the whole space
(`--finetune one-shot`). This benchmark compares recipes for that fine-tune on a testbed model:
the search's default (the noise as target) and distillation (`FinetuneConfig.distill`: the
target is the frozen pretrained model's full-depth prediction). Each recipe is trained with the
search's settings (steps, lr, EMA, full share, seed; cached under ``--work-dir``), then the
full model and the paper's presets are measured with FID-MNIST (mean +- std over seeds, common
random numbers) and the shipped model without fine-tuning is the reference. Reuse the default
recipe's weights with ``--plain-weights studies/reference/<arch>-one-shot-<key>.safetensors``
(the search wrote them with the same settings; the file the reference study names). Run from
the repository root:

    python -m benchmarks.one_shot_recipes --arch dit --n 500 --seeds 5 --threads 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

from ase_search.evaluate import evaluate, machine_info
from ase_search.search import SearchConfig
from ase_search.testbed import TESTBEDS
from benchmarks._common import (
    ROOT,
    display_path,
    file_sha256,
    load_json,
    machine_text,
    start_run,
    write_json,
    write_text,
)

VERSION = 1
RECIPES = ("plain", "distill")
SCHEDULES = ("full", "D1", "D3", "D4", "D6")


def recipe_weights(arch: str, recipe: str, args: argparse.Namespace) -> tuple[Path, float]:
    """The one-shot weights of ``recipe``, made as ``ase-search run`` makes them (cached under
    ``--work-dir/<recipe>/``) unless given, and the minutes their fine-tune took (0: reused)."""
    from ase_search.finetune import one_shot_key, one_shot_path, one_shot_weights
    from ase_search.search import one_shot_config
    from ase_search.space import load_space
    from ase_search.testbed import load_model

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


def measure(arch: str, weights: Path, args: argparse.Namespace) -> dict[str, Any]:
    from ase_search.models import load_checkpoint
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import preset

    model, _ = load_checkpoint(weights)
    model.eval()
    cells = {}
    for name in SCHEDULES:
        result = evaluate(model, preset(name, arch, model.exit_depth),
                          sampler=SamplerConfig(name="ddim", steps=20), n=args.n,
                          seeds=list(range(args.seeds)), batch_size=250)
        cells[name] = {"mean": result.mean("fid"), "std": result.std("fid")}
        print(f"{arch} {weights.name} {name}: FID {cells[name]['mean']:.2f}", file=sys.stderr,
              flush=True)
    return cells


def markdown(store: dict[str, Any]) -> str:
    lines = ["# One-shot fine-tune recipes", "",
             "FID-MNIST (the project's digit-classifier features; not Inception FID), DDIM-20, "
             "mean ± std over the seeds (common random numbers). Every recipe is fine-tuned with "
             "the search's one-shot settings; **plain** is the search's default (the noise as "
             "target, Algorithm 1's loss), **distill** regresses onto the frozen pretrained "
             "model's full-depth prediction. **shipped** is the testbed model without "
             "fine-tuning.", ""]
    for arch, r in store["archs"].items():
        cols = [c for c in ("shipped", *RECIPES) if c in r["cells"]]
        lines += [f"## {arch}: {TESTBEDS[arch].model_name}", "",
                  f"`{r['command']}` on {machine_text(r['machine'])}, {r['date']}; seeds "
                  f"0..{r['seeds'] - 1}, N = {r['n']} per seed; one-shot settings: "
                  f"{r['settings']}.", "",
                  "| schedule | " + " | ".join(cols) + " |",
                  "| --- | " + " | ".join("---:" for _ in cols) + " |"]
        for name in SCHEDULES:
            row = []
            for c in cols:
                cell = r["cells"][c].get(name)
                row.append("–" if cell is None else
                           f"{cell['mean']:.2f}" + (f" ± {cell['std']:.2f}"
                                                    if cell["std"] is not None else ""))
            lines.append(f"| {name} | " + " | ".join(row) + " |")
        lines += ["", "Weights: " + "; ".join(
            f"{k} `{v['path']}` (sha256 {v['sha256'][:12]}"
            + (f", fine-tuned here in {v['minutes']:.1f} min" if v["minutes"] else "") + ")"
            for k, v in r["weights"].items()) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="dit", choices=list(TESTBEDS))
    parser.add_argument("--n", type=int, default=500, help="samples per seed")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..S-1")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--plain-weights", type=Path, default=None,
                        help="reuse these weights for the plain recipe (e.g. "
                             "studies/reference/dit-one-shot.safetensors)")
    parser.add_argument("--no-shipped", action="store_true",
                        help="leave out the shipped model without fine-tuning")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "studies" / "bench" / "one-shot")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "one_shot_recipes.md")
    args = parser.parse_args(argv)
    if args.n < 2 or args.seeds < 1:
        parser.error("--n must be >= 2 and --seeds >= 1")
    if args.plain_weights is not None and not args.plain_weights.is_file():
        parser.error(f"--plain-weights {args.plain_weights} does not exist")
    command = start_run(__file__, argv, args.threads)
    json_path = args.out.with_suffix(".json")
    store = load_json(json_path, VERSION) or {"version": VERSION, "archs": {}}
    defaults = SearchConfig()
    record = {"command": command, "machine": machine_info(), "date": dt.date.today().isoformat(),
              "n": args.n, "seeds": args.seeds, "cells": {}, "weights": {},
              "settings": f"{defaults.finetune_steps} steps, lr {defaults.finetune_lr} (cosine), "
                          f"EMA {defaults.finetune_ema}, full share "
                          f"{defaults.finetune_full_share}, seed {defaults.seed}"}
    store["archs"][args.arch] = record
    columns = ([] if args.no_shipped else ["shipped"]) + args.recipes
    for column in columns:
        if column == "shipped":
            path, minutes = TESTBEDS[args.arch].path, 0.0
        else:
            path, minutes = recipe_weights(args.arch, column, args)
        record["weights"][column] = {"path": display_path(path), "sha256": file_sha256(path),
                                     "minutes": minutes}
        record["cells"][column] = measure(args.arch, path, args)
        write_json(json_path, store)
        write_text(args.out, markdown(store))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
