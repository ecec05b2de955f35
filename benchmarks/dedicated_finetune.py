"""How close can one schedule get to the full model? (reports/dedicated_finetune.md, .json)

Issue #5's target is >= 45% acceleration at an FID within 5% of the full model. The search
measures trials on one-shot weights shared by the whole space; this fine-tunes the testbed model
for *one* schedule alone (Algorithm 1, as `ase-search finetune --schedule` does, at several times
the one-shot budget) and measures its FID next to the shipped full model's over seeds (common
random numbers) under DDIM-20 and optionally other samplers (the paper found DDPM the most
forgiving of exits). If a dedicated fine-tune cannot reach the target, no search over one-shot
weights will. The train phase runs fine-tunes side by side as 1-thread jobs, each with its own
``--out`` (two jobs on one cache lose each other's cells); eval reuses their ``--work-dir`` weights:

    python -m benchmarks.dedicated_finetune --phase train --schedule S45=0.4,0.6:12,6,1 --threads 1
    python -m benchmarks.dedicated_finetune --phase eval --schedule S45=0.4,0.6:12,6,1 --threads 2

A schedule is a preset (``D1``..``D6``) or ``NAME=EDGES:BLOCKS``: the interior edges (ascending in
t) and each interval's block count from data (t = 0) to noise. Cells: each schedule's weights
(``dit/weights/<stem>``) and each FID measurement (``dit/full/ddim:20``, ``dit/<stem>/ddim:20``,
and on one-shot weights ``dit/one-shot/full/ddim:20``, ``dit/one-shot/<stem>/ddim:20``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import statistics
import sys
import time
from dataclasses import field
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ROOT,
    check_testbeds,
    display_path,
    file_sha256,
    load_testbed,
    parse_samplers,
    pct,
    reference_one_shot_weights,
    report_by_arch,
    section_head,
    short_hash,
)
from benchmarks._runner import Benchmark, CellContext, markdown_table, option, run

RECIPES = ("distill", "plain")
FID_SAMPLING_BATCH = 250


@dataclasses.dataclass(frozen=True)
class Params:
    """The schedules, their fine-tune, and how their FIDs are measured."""

    arch: str = field(default="dit", metadata=option("testbed model", identity=False))
    schedule: tuple[str, ...] = field(default=(), metadata=option(
        "NAME=EDGES:BLOCKS or a preset; repeat for several", identity=False, repeat=True))
    phase: str = field(default="all", metadata=option(
        "train: only fine-tune the schedules; eval/all: fine-tune what is missing, then measure",
        identity=False, choices=("train", "eval", "all")))
    # The fine-tune settings name the weights file (and so the cells' keys), so they need not be
    # part of the identity.
    recipe: str = field(default="distill", metadata=option(
        "distill: regress onto the frozen full model (FinetuneConfig.distill); plain: the "
        "paper's noise target", identity=False, choices=RECIPES))
    steps: int = field(default=7200, metadata=option("fine-tune steps (one-shot: 2400)",
                                                     identity=False))
    lr: float = field(default=3e-4, metadata=option("peak lr, cosine decay", identity=False))
    ema: float = field(default=0.999, metadata=option(identity=False))
    batch_size: int = field(default=64, metadata=option(identity=False))
    seed: int = field(default=0, metadata=option(identity=False))
    samplers: tuple[str, ...] = field(default=("ddim:20",), metadata=option(
        "NAME:STEPS, e.g. ddim:20 ddpm:250", identity=False))
    n: int = field(default=500, metadata=option("samples per seed"))
    seeds: int = field(default=5, metadata=option("seeds 0..S-1"))
    one_shot: str | None = field(default=None, metadata=option(
        "also measure each schedule on these one-shot weights: a file, or 'reference' for those "
        "studies/reference/<arch>.db records", identity=False))
    work_dir: Path = field(default=ROOT / "studies" / "bench" / "dedicated", metadata=option(
        "where the fine-tunes run and their weights are kept", identity=False))

    def __post_init__(self) -> None:
        check_testbeds((self.arch,))
        if self.n < 2 or self.seeds < 1 or self.steps < 1:
            raise ValueError("--n must be >= 2, --seeds >= 1 and --steps >= 1")
        if len(parse_samplers(self.samplers)) != len(self.samplers):
            raise ValueError("--samplers entries are NAME:STEPS, e.g. ddim:20 ddpm:250")
        self.schedules  # noqa: B018 -- raises ValueError naming a bad --schedule
        self.one_shot_path  # noqa: B018 -- raises ValueError for one-shot weights not there

    @property
    def schedules(self) -> list[Any]:
        """The ``--schedule`` entries as ExitSchedules for the testbed model."""
        depth = load_testbed(self.arch).exit_depth
        return [parse_schedule(s, self.arch, depth) for s in self.schedule]

    @property
    def one_shot_path(self) -> Path | None:
        """The ``--one-shot`` weights; ``reference`` resolves to the reference study's."""
        if self.one_shot is None:
            return None
        if self.one_shot == "reference":
            try:
                return reference_one_shot_weights(self.arch)
            except ValueError as err:
                raise ValueError(f"--one-shot reference: {err}") from None
        path = Path(self.one_shot)
        if not path.is_file():
            raise ValueError(f"--one-shot {path} does not exist; rebuild the reference study's "
                             f"with python -m tools.reference_study --arch {self.arch} "
                             f"--weights-only and pass --one-shot reference")
        return path


@functools.cache
def cost_model(arch: str) -> Any:
    """One component profile per run, so every acceleration of a run comes from the same one
    (every weight file here is the same architecture)."""
    from ase_search.metrics.latency import profile_components

    return profile_components(load_testbed(arch), batch_size=FID_SAMPLING_BATCH)


def parse_schedule(spec: str, arch: str, depth: int) -> Any:
    """``NAME=EDGES:BLOCKS`` (e.g. ``S45=0.4,0.6:12,6,1``) or a preset name, as an ExitSchedule.

    Raises:
        ValueError: naming the entry, when it is neither.
    """
    from ase_search.schedule import ExitSchedule, ScheduleError, preset

    try:
        if "=" not in spec:
            return preset(spec, arch, depth)
        name, _, body = spec.partition("=")
        edges_text, sep, blocks_text = body.partition(":")
        if not sep:
            raise ValueError("write NAME=EDGES:BLOCKS, e.g. S45=0.4,0.6:12,6,1")
        edges = [float(e) for e in edges_text.split(",") if e.strip()]
        blocks = [int(b) for b in blocks_text.split(",")]
        return ExitSchedule(arch=arch, depth=depth, boundaries=(0.0, *edges, 1.0),
                            blocks=tuple(blocks), name=name)
    except (ValueError, KeyError, ScheduleError) as exc:
        raise ValueError(f"--schedule {spec!r}: {exc}") from None


def weights_path(schedule: Any, args: Params) -> Path:
    """Where the dedicated fine-tune of ``schedule`` keeps its EMA weights; the name carries a
    digest of the fine-tune settings."""
    key = short_hash([schedule.to_dict(), args.recipe, args.steps, args.lr, args.ema,
                      args.batch_size, args.seed])
    return args.work_dir / f"{args.arch}-{schedule.name}-{args.recipe}-{key}.safetensors"


def dedicated_weights(schedule: Any, args: Params) -> Path:
    """Fine-tune the testbed model for ``schedule`` alone (resumable); the EMA weights' path."""
    from ase_search.data import build_dataset
    from ase_search.finetune import FinetuneConfig, finetune
    from ase_search.models import save_checkpoint
    from ase_search.testbed import load_model

    out = weights_path(schedule, args)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    model = load_model(args.arch)
    data = build_dataset("mnist", resolution=model.input_size, channels=model.in_channels)
    config = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            lr_schedule="cosine", ema_decay=args.ema, seed=args.seed,
                            distill=args.recipe == "distill")
    t0 = time.perf_counter()
    result = finetune(model.train(), data, schedule, config, out_dir=out.with_suffix(""),
                      resume=True)
    save_checkpoint(out, result.ema, extra={"finetune": "algorithm-1", "recipe": args.recipe,
                                            "schedule": schedule.to_dict(), "steps": result.step,
                                            "minutes": (time.perf_counter() - t0) / 60})
    return out


# ###################################################################### cells
def keys(args: Params) -> list[str]:
    """The weights of every schedule; with ``--phase eval``/``all`` also every FID cell."""
    stems = [weights_path(s, args).stem for s in args.schedules]
    out = [f"{args.arch}/weights/{stem}" for stem in stems]
    if args.phase == "train":
        return out
    weights = [""] if args.one_shot is None else ["", "one-shot/"]
    return out + [f"{args.arch}/{w}{row}/{sampler}" for w in weights
                  for sampler in args.samplers for row in ["full", *stems]]


def cell_identity(args: Params, key: str) -> dict[str, Any]:
    """A one-shot cell depends on which one-shot weights it measures."""
    path = args.one_shot_path
    return {"one_shot_sha256": file_sha256(path)} if "/one-shot/" in key and path else {}


def compute(args: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """One cell: a schedule's fine-tuned weights, or one FID measurement over the seeds."""
    from ase_search.evaluate import machine_info
    from ase_search.measure import measure_schedule
    from ase_search.models import load_checkpoint
    from ase_search.testbed import TESTBEDS

    arch, _, rest = key.partition("/")
    by_stem = {weights_path(s, args).stem: s for s in args.schedules}
    run = {"arch": arch, "command": ctx.command, "machine": machine_info(),
           "date": dt.date.today().isoformat()}
    if rest.startswith("weights/"):
        schedule = by_stem[rest.removeprefix("weights/")]
        path = dedicated_weights(schedule, args)
        _, meta = load_checkpoint(path)
        return {**run, "kind": "weights", "name": schedule.name,
                "blocks": " ".join(str(b) for b in schedule.blocks),
                "schedule": schedule.to_dict(), "weights": display_path(path),
                "sha256": file_sha256(path), "minutes": float(meta.get("minutes", 0.0)),
                "settings": f"{args.recipe}, {args.steps} steps, batch {args.batch_size}, lr "
                            f"{args.lr} (cosine), EMA {args.ema}, seed {args.seed}"}

    one_shot = rest.startswith("one-shot/")
    row, _, sampler = rest.removeprefix("one-shot/").partition("/")
    schedule = None if row == "full" else by_stem[row]
    path = (args.one_shot_path if one_shot else TESTBEDS[arch].path if schedule is None
            else dedicated_weights(schedule, args))
    inputs = {"sha256": file_sha256(path), "schedule": None if schedule is None
              else schedule.to_dict(), "sampler": sampler, "n": args.n, "seeds": args.seeds}
    if (ctx.previous or {}).get("inputs") == inputs:
        return ctx.previous  # measured on the same weights with the same settings
    model, _ = load_checkpoint(path)
    result = measure_schedule(model.eval(), schedule, sampler=parse_samplers((sampler,))[0],
                              n=args.n, seeds=list(range(args.seeds)),
                              batch_size=FID_SAMPLING_BATCH, cost_model=cost_model(arch),
                              keep_images=0)
    print(f"{row} {sampler}: FID {result.mean('fid'):.2f}", file=sys.stderr, flush=True)
    return {**run, "kind": "one-shot" if one_shot else "fid", "row": row, "sampler": sampler,
            "weights": {"path": display_path(path), "sha256": inputs["sha256"]},
            "inputs": inputs, "n": args.n, "seeds": args.seeds,
            "fids": [m["fid"] for m in result.metrics], "fid_mean": result.mean("fid"),
            "fid_std": result.std("fid"), "predicted": result.predicted_acceleration}


# ###################################################################### report
def arch_section(arch: str, cells: list[dict[str, Any]]) -> str:
    """One model's section: the runs, the table of schedules x samplers, the best within 5%."""
    import pandas as pd

    weights = [c for c in cells if c["kind"] == "weights"]
    full = {c["sampler"]: c for c in cells if c["kind"] == "fid" and c["row"] == "full"}
    fid = {(c["row"], c["sampler"]): c for c in cells if c["kind"] == "fid"}
    shot = {(c["row"], c["sampler"]): c for c in cells if c["kind"] == "one-shot"}
    measured = [c for c in cells if c["kind"] != "weights"]
    first = measured[0] if measured else None
    title, runs = section_head(arch, cells, (measured or cells)[-1])
    settings = "; ".join(dict.fromkeys(c["settings"] for c in weights))
    lines = [title, "", f"{runs}."
             + (f" Seeds 0..{first['seeds'] - 1}, N = {first['n']} per seed." if first else "")
             + f" Fine-tune: {settings}.", ""]
    table: list[list[str]] = []
    within: dict[str, list[tuple[float, str]]] = {}  # sampler -> (acceleration, name) within 5%
    for w in weights:
        row = Path(w["weights"]).stem
        for sampler, base in full.items():
            cell = fid.get((row, sampler))
            if cell is None:
                continue
            # per-seed FID ratios to the full model (common random numbers)
            ratios = [a / b for a, b in zip(cell["fids"], base["fids"], strict=True)]
            mean = statistics.fmean(ratios)
            if mean <= 1.05:
                within.setdefault(sampler, []).append((cell["predicted"], w["name"]))
            one_shot, one_shot_full = shot.get((row, sampler)), shot.get(("full", sampler))
            table.append([
                w["name"], w["blocks"], sampler, pct(cell["predicted"]),
                f"{cell['fid_mean']:.2f} ± {cell['fid_std'] or 0:.2f}",
                f"{base['fid_mean']:.2f} ± {base['fid_std'] or 0:.2f}",
                f"{mean:.2f} ({min(ratios):.2f}-{max(ratios):.2f})",
                "yes" if mean <= 1.05 else "no",
                "–" if one_shot is None or one_shot_full is None else
                f"{one_shot['fid_mean']:.2f} (full {one_shot_full['fid_mean']:.2f})"])
    columns = ["schedule", "blocks (data → noise)", "sampler", "acceleration", "FID", "full FID",
               "ratio", "within 5%", "one-shot weights"]
    lines += [markdown_table(pd.DataFrame(table, columns=columns),
                             align=["left"] * 3 + ["right"] * 3 + ["left", "center", "right"]),
              ""]
    for sampler in full:
        best = max(within.get(sampler, []), default=None)
        lines.append(f"- {sampler}: best acceleration within 5% of the full model: "
                     + (f"**{best[0]:.1%}** ({best[1]})" if best else "**none** of these"))
    one_shot_weights = next((c["weights"] for c in cells if c["kind"] == "one-shot"), None)
    lines += ["", "Weights: " + "; ".join(
        f"{w['name']} `{w['weights']}` (sha256 {w['sha256'][:12]}, fine-tuned in "
        f"{w['minutes']:.1f} min)" for w in weights) + "."
              + (f" One-shot: `{one_shot_weights['path']}` (sha256 "
                 f"{one_shot_weights['sha256'][:12]})." if one_shot_weights else ""), ""]
    return "\n".join(lines)


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> str:
    return report_by_arch(
        cells, "Dedicated fine-tunes against the search's target",
        "Issue #5's target: >= 45% acceleration at an FID within 5% of the full model. Each "
        "schedule below was fine-tuned **alone** (Algorithm 1 for that schedule, not the "
        "search's one-shot weights shared by the space) and is measured next to the shipped "
        "full model: FID-MNIST (digit-classifier features, not Inception FID), mean ± std "
        "over seeds with common random numbers; **ratio** is the per-seed FID ratio to the "
        "full model (mean, min-max). Acceleration is the cost model's prediction for the "
        "sampler's timesteps. **one-shot weights** gives the same schedule's FID (and the full "
        "model's) on the search's one-shot weights, where measured.", arch_section)


BENCHMARK = Benchmark(name="dedicated_finetune", doc=__doc__, params=Params, keys=keys,
                      cell=compute, report=report, version=2, cell_identity=cell_identity)


if __name__ == "__main__":
    run(BENCHMARK)
