"""Paper-style table (Tables 3-4): FID and measured acceleration per schedule, sampler and steps.

For each testbed model the rows are the full model, the paper's presets D1..D6 and two picks from
the front of the reference study ``studies/reference/<arch>.db`` (the fastest trial with a FID
within ``--pick-fid-ratio`` of the full model's; the lowest-FID trial at least
``--pick-min-acceleration`` faster), all sampled from the one-shot weights the study recorded.
Each sampler and step count gets FID-MNIST (mean ± std over ``--seeds`` seeds, common random
numbers), the measured acceleration ``1 - latency / latency(full)`` and the cost model's
prediction. The latency times one call per block count, interleaved, and sums the medians over
the sampler's calls (a call's cost does not depend on t). Run from the repository root on an
otherwise idle machine:

    python -m benchmarks.paper_table --arch dit uvit --n 500 --seeds 5
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase_search.progress import progress_bar
from benchmarks._common import (
    REFERENCE_STUDIES,
    bootstrap_latencies,
    display_path,
    fid_text,
    file_sha256,
    machine_text,
    parse_samplers,
    pct,
    reference_one_shot_weights,
    rerun_command,
    short_hash,
)
from benchmarks._runner import Benchmark, CellContext, TestbedParams, markdown_table, option, run

if TYPE_CHECKING:
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule

DISPLAY = {"ddpm": "DDPM", "ddim": "DDIM", "dpm-solver": "DPM-Solver", "euler-maruyama": "EM"}
DEFAULT_SAMPLERS = ("ddpm:50,100", "ddim:10,20", "dpm-solver:10,20")


@dataclasses.dataclass(frozen=True)
class Params(TestbedParams):
    """What the table holds: models, rows (presets + front picks), samplers, FID and latency."""

    seeds: int = field(default=5, metadata=option("seeds 0..S-1"))
    samplers: tuple[str, ...] = field(default=DEFAULT_SAMPLERS, metadata=option(
        "column groups, e.g. ddpm:50,100 ddim:10,20 dpm-solver:10,20"))
    batch_size: int = field(default=250, metadata=option("sampling batch"))
    weights: str = field(default="one-shot", metadata=option(choices=("one-shot", "shipped")))
    studies_dir: Path = REFERENCE_STUDIES
    pick_fid_ratio: float = 1.05
    pick_min_acceleration: float = 0.30
    latency_batch: int = 256
    latency_repeats: int = field(default=3, metadata=option("timed interleaved rounds (use ~20)"))

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_samplers(self.samplers)  # raises ValueError naming the bad entry
        if self.n < 2 or self.seeds < 1:
            raise ValueError("--n must be >= 2 and --seeds >= 1")


# ###################################################################### small helpers
def sampler_label(sampler: SamplerConfig) -> str:
    return f"{DISPLAY.get(sampler.name, sampler.name)} {sampler.steps}"


def sampler_key(sampler: SamplerConfig) -> str:
    return f"{sampler.name}-{sampler.steps}"


def cell_key(row: str, sampler: SamplerConfig) -> str:
    return f"{row}|{sampler_key(sampler)}"


def schedule_id(schedule: ExitSchedule) -> dict[str, Any]:
    """What a cached FID cell records of its schedule, to be reused only for the same one."""
    return {"boundaries": list(schedule.boundaries), "blocks": list(schedule.blocks),
            "depth": schedule.depth}


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


# ###################################################################### rows: presets + picks
def table_rows(arch: str, depth: int, args: Params, notes: list[str]
               ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """full, D1..D6, then the two picks from the reference study's front that are not already
    rows (a duplicate becomes a note); and the study's settings (``None`` without a study)."""
    from ase_search.pareto import (
        StudyError,
        complete_trials,
        full_latency_of,
        open_study,
        select_trial,
        trial_acceleration,
        trial_schedule,
    )
    from ase_search.record import trial_preset
    from ase_search.schedule import preset, preset_names
    from ase_search.space import schedules_equivalent

    rows = [{"name": name, "source": "paper preset (Table 2, rescaled)" if name != "full"
             else "no exits", "schedule": preset(name, arch, depth)}
            for name in preset_names(arch, data_easy=False)]
    path = args.studies_dir / f"{arch}.db"
    if not path.is_file():
        notes.append(f"No reference study at `{display_path(path)}`: the front picks are left "
                     "out.")
        return rows, None
    try:
        study = open_study(path)
    except StudyError as err:
        notes.append(f"The reference study `{display_path(path)}` cannot be read ({err}); the "
                     f"front picks are left out.")
        return rows, None
    full_latency = full_latency_of(study)
    info = {"path": display_path(path), "study_name": study.study_name,
            "config": dict(study.user_attrs.get("config") or {}),
            "weights": study.user_attrs.get("weights")}
    trials = [(t, trial_schedule(t)) for t in complete_trials(study)]
    full = next((t for t, _ in trials if trial_preset(t) == "full"), None)
    if full is None:
        full = next((t for t, s in trials if all(n == depth for n in s.blocks)), None)
    criteria: list[tuple[str, dict[str, float]]] = []
    if full is not None:
        limit = args.pick_fid_ratio * full.values[0]
        criteria.append((f"front pick: fastest with FID ≤ {args.pick_fid_ratio:g} × full "
                         f"({limit:.2f})", {"max_fid": limit}))
        info["full_fid"] = full.values[0]
    else:
        notes.append(f"The study {study.study_name!r} holds no full-model trial, so the pick "
                     f"'FID within {args.pick_fid_ratio:g} × full' is left out.")
    criteria.append((f"front pick: lowest FID with accel. ≥ {args.pick_min_acceleration:.0%}",
                     {"min_acceleration": args.pick_min_acceleration}))
    picks = []
    for label, criterion in criteria:
        try:
            trial = select_trial(study, **criterion)
        except StudyError as err:
            notes.append(f"Pick '{label}' is left out: {err}.")
            continue
        schedule = trial_schedule(trial)
        if (schedule.arch, schedule.depth) != (arch, depth):
            notes.append(f"Pick '{label}' (trial {trial.number}) is a {schedule.arch} schedule "
                         f"for {schedule.depth} blocks, not for this model; left out.")
            continue
        picks.append({"name": f"front #{trial.number}", "source": label, "schedule": schedule,
                      "trial": trial.number, "study_fid": trial.values[0],
                      "study_acceleration": _finite(trial_acceleration(trial, full_latency)),
                      "study_seed": trial_preset(trial)})
    for pick in picks:
        same = next((r for r in rows if schedules_equivalent(r["schedule"], pick["schedule"])),
                    None)
        if same is None:
            rows.append(pick)
            continue
        same.setdefault("also", []).append(f"{pick['source']} (trial {pick['trial']})")
        notes.append(f"Pick '{pick['source']}' is trial {pick['trial']}, whose schedule is "
                     f"the same as row {same['name']}; it is not repeated.")
    # The study's own (one-seed) numbers for the rows it evaluated, e.g. the seeded presets.
    for row in rows:
        match = next((t for t, s in trials if schedules_equivalent(s, row["schedule"])), None)
        if match is not None and "trial" not in row:
            row.update(trial=match.number, study_fid=match.values[0],
                       study_acceleration=_finite(trial_acceleration(match, full_latency)))
    return rows, info


def resolve_weights(arch: str, args: Params, study: dict[str, Any] | None,
                    notes: list[str]) -> tuple[Path, str]:
    """The weights every row is sampled from, and what they are: the study's recorded one-shot
    weights, else the shipped ones with a note."""
    from ase_search.testbed import TESTBEDS

    shipped = TESTBEDS[arch].path
    if args.weights == "shipped":
        return shipped, "shipped testbed weights (no fine-tune)"
    try:
        one_shot = reference_one_shot_weights(arch, args.studies_dir)
    except ValueError as err:
        notes.append(f"One-shot weights asked for but {err}: every row uses the shipped testbed "
                     f"weights instead, so the FIDs are not those the study measured.")
        return shipped, "shipped testbed weights (no fine-tune; one-shot weights unavailable)"
    steps = (study or {}).get("config", {}).get("finetune_steps")
    return one_shot, (f"one-shot fine-tuned weights of the reference study ({steps} steps over "
                      f"the search space)")


# ###################################################################### latency
def per_call_accelerations(calls: dict[str, list[float]], rows: list[dict[str, Any]],
                           sampler: SamplerConfig) -> dict[str, dict[str, Any]]:
    """Measured acceleration from per-call timings summed over the sampler's calls, with a
    bootstrap standard error over rounds."""
    from ase_search.callplan import blocks_per_call

    times = sampler.model_times()
    latency = bootstrap_latencies(
        {r["name"]: [calls[str(k)] for k in blocks_per_call(r["schedule"], times)] for r in rows},
        rows[0]["name"])
    return {name: {"measured_acceleration": lat["acceleration"],
                   "measured_acceleration_se": lat["acceleration_se"],
                   "measured_s": lat["seconds"]} for name, lat in latency.items()}


# ###################################################################### one architecture
def run_arch(args: Params, arch: str, ctx: CellContext) -> dict[str, Any]:
    """One model's cell: its rows, FID cells and latency, each saved as it finishes."""
    from ase_search.evaluate import evaluate, machine_info
    from ase_search.metrics.latency import (
        CostModel,
        profile_components,
        sampling_latency_samples,
    )
    from ase_search.schedule import ExitSchedule
    from ase_search.testbed import load_model

    started = time.perf_counter()
    samplers, seeds = parse_samplers(args.samplers), list(range(args.seeds))
    notes: list[str] = []
    rows, study = table_rows(arch, load_model(arch).exit_depth, args, notes)  # before weights
    weights, weights_kind = resolve_weights(arch, args, study, notes)
    model = load_model(arch, weights)
    settings = {
        "arch": arch, "model_name": getattr(model, "model_name", arch),
        "depth": model.exit_depth, "weights": display_path(weights),
        "weights_sha256": file_sha256(weights), "weights_kind": weights_kind,
        "n": args.n, "seeds": seeds, "batch_size": args.batch_size, "data": "mnist",
        "fid": "FID-MNIST (digit-classifier features)",
    }
    identity = {k: settings[k] for k in ("weights_sha256", "n", "seeds", "batch_size", "data")}
    old = ctx.previous or {}
    if old and old.get("identity") != identity:
        print(f"{arch}: the cached cells were made with other settings; they are replaced",
              file=sys.stderr)
    keep = old if old.get("identity") == identity else {}
    record: dict[str, Any] = {
        "command": ctx.command, "machine": machine_info(), "settings": settings,
        "identity": identity, "study": study, "notes": notes,
        "samplers": [s.to_dict() for s in samplers],
        "cost_model": keep.get("cost_model"),
        "rows": [{"name": r["name"], "source": r["source"], "also": r.get("also", []),
                  "schedule": r["schedule"].to_dict(), "intervals": r["schedule"].describe(),
                  **{k: r[k] for k in ("trial", "study_fid", "study_acceleration", "study_seed")
                     if k in r}} for r in rows],
        "cells": dict(keep.get("cells", {})),
        "per_call": keep.get("per_call"),
    }
    if record["cost_model"] is None:
        record["cost_model"] = profile_components(model, batch_size=args.latency_batch).to_dict()
    cost = CostModel.from_dict(record["cost_model"])

    def weight(row: dict[str, Any], sampler: SamplerConfig) -> float:
        # Expected cost: model calls times the share of a full call the schedule runs.
        return sampler.steps * len(seeds) * (1.0 - cost.acceleration(row["schedule"],
                                                                     sampler.model_times()))

    todo = [(r, s) for s in samplers for r in rows
            if record["cells"].get(cell_key(r["name"], s), {}).get("schedule")
            != schedule_id(r["schedule"])]
    total = sum(weight(r, s) for s in samplers for r in rows)
    with progress_bar(counts=False) as bar:
        task = bar.add_task(f"{arch} FID cells", total=total,
                            completed=total - sum(weight(r, s) for r, s in todo))
        for row, sampler in todo:
            t0 = time.perf_counter()
            result = evaluate(model, row["schedule"], sampler=sampler, n=args.n, seeds=seeds,
                              batch_size=args.batch_size, cost_model=cost)
            seconds = time.perf_counter() - t0
            cell = {
                "schedule": schedule_id(row["schedule"]),
                "fid_mean": result.mean("fid"), "fid_std": result.std("fid"),
                "per_seed": [m["fid"] for m in result.metrics],
                "predicted_acceleration": result.predicted_acceleration,
                "block_acceleration": result.block_acceleration,
                "flop_acceleration": result.flop_acceleration,
                "seconds": seconds, "date": machine_info()["date"],
            }
            record["cells"][cell_key(row["name"], sampler)] = cell
            ctx.checkpoint(record)
            bar.update(task, advance=weight(row, sampler))
            bar.console.print(f"{arch} {row['name']:>12s} {sampler_label(sampler):>14s}: FID "
                              f"{fid_text(cell)} ({seconds:.0f} s)", highlight=False)

    # Latency last, after the sampling, on the same (hopefully idle) machine: the seconds of one
    # call at every block count, over interleaved rounds.
    key = short_hash({"batch": args.latency_batch, "repeats": args.latency_repeats})
    if (record["per_call"] or {}).get("key") != key:
        single = {str(k): ExitSchedule(arch, model.exit_depth, (0.0, 1.0), (k,), f"k={k}")
                  for k in range(1, model.exit_depth + 1)}
        load, t0 = os.getloadavg()[0], time.perf_counter()
        samples = sampling_latency_samples(model, single, [999.0], batch_size=args.latency_batch,
                                           repeats=args.latency_repeats)
        record["per_call"] = {"key": key, "calls": {k: c[0] for k, c in samples.items()},
                              "load_before": load, "load_after": os.getloadavg()[0],
                              "seconds": time.perf_counter() - t0}
    record["latency"] = {
        sampler_key(s): {"rows": per_call_accelerations(record["per_call"]["calls"], rows, s),
                         "batch": args.latency_batch, "repeats": args.latency_repeats}
        for s in samplers}
    record["wall_time_min"] = (time.perf_counter() - started) / 60
    return record


# ###################################################################### markdown
def arch_section(record: dict[str, Any]) -> str:
    """One model's section: its run, the FID/acceleration table, the rows' sources, notes. A
    finished cell holds every row's FID and latency under every sampler."""
    import pandas as pd

    from ase_search.samplers import SamplerConfig

    s, m, t = record["settings"], record["machine"], record["per_call"]
    samplers = [SamplerConfig.from_dict(d) for d in record["samplers"]]
    full = record["rows"][0]["name"]
    lines = [f"## {s['model_name']} ({s['arch']}, {s['depth']} exitable blocks)", "",
             f"Weights: {s['weights_kind']}, `{s['weights']}` (sha256 "
             f"{s['weights_sha256'][:12]}). Last run: `{rerun_command(record['command'])}` "
             f"on {m['date']}, "
             f"{machine_text(m)}, {record['wall_time_min']:.1f} min.", ""]
    columns = ["schedule"] + [f"{sampler_label(x)} {c}" for x in samplers
                              for c in ("FID", "accel.", "pred.")]
    table = []
    for row in record["rows"]:
        cells = [row["name"] + (" (= front pick)" if row.get("also") else "")]
        for sampler in samplers:
            cell = record["cells"][cell_key(row["name"], sampler)]
            lat = record["latency"][sampler_key(sampler)]["rows"][row["name"]]
            cells += [fid_text(cell)] + (["–", "–"] if row["name"] == full else [
                pct(lat["measured_acceleration"], lat["measured_acceleration_se"]),
                pct(cell["predicted_acceleration"])])
        table.append(cells)
    lines += [markdown_table(pd.DataFrame(table, columns=columns),
                             align=["left"] + ["right"] * (len(columns) - 1)), ""]
    rows = [[row["name"], "; ".join([row["source"], *row.get("also", [])]),
             f"`{row['intervals']}`", str(row["trial"]) if "trial" in row else "–",
             f"{row['study_fid']:.2f}" if "study_fid" in row else "–",
             pct(row["study_acceleration"]) if "study_acceleration" in row else "–"]
            for row in record["rows"]]
    lines.append(markdown_table(
        pd.DataFrame(rows, columns=["schedule", "source", "[t interval): blocks", "study trial",
                                    "study FID", "study accel. (cost model)"]),
        align=["left"] * 3 + ["right"] * 3))
    if study := record.get("study"):
        c = study["config"]
        lines += ["", f"Study columns: `{study['path']}` (study {study['study_name']!r}), one "
                  f"FID per trial at seed {c.get('seed')}, N = {c.get('n_samples')}, "
                  f"{c.get('sampler')}-{c.get('steps')}, fine-tune {c.get('finetune')} "
                  f"({c.get('finetune_steps')} steps); its acceleration is the cost model's at "
                  f"that sampler."]
    lines += ["", f"Latency (per-call): one call at each block count {t['seconds']:.0f} s "
              f"(load {t['load_before']:.2f} → {t['load_after']:.2f})."]
    if record["notes"]:
        lines += ["", *[f"- {n}" for n in record["notes"]]]
    return "\n".join(lines) + "\n"


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> str:
    """The report: an introduction, then one section per model (in testbed order)."""
    from ase_search.testbed import TESTBEDS

    records = [cells[a] for a in TESTBEDS if a in cells]
    s = records[0]["settings"]
    lat = next(iter(records[0]["latency"].values()))
    lines = [
        "# Paper-style table (Tables 3-4 layout)", "",
        f"Written by `benchmarks/paper_table.py` from `{json_name}`; each "
        "model's command, machine and date are under its heading. FID-MNIST (the project's "
        "digit-classifier features; not comparable with the paper's Inception FIDs) is the mean "
        f"± std over seeds {s['seeds']} with N = {s['n']} samples per seed; the seeds are common "
        "random numbers (every row and sampler draws the same labels and noise for a seed).", "",
        "Columns per sampler and step count: **FID**; **accel.** = measured acceleration "
        "`1 - latency / latency(full)`, where one network call at every block count is timed "
        f"(one batch of {lat['batch']}, {lat['repeats']} interleaved rounds, median), and a "
        "row's latency is the sum of those medians over the sampler's calls (a call's cost "
        "depends on its block count, not on t); ± is a bootstrap standard error over rounds; "
        "**pred.** = the cost model's prediction from profiled components "
        "(`ase_search.metrics.latency.CostModel`), the search's latency objective. DDPM is "
        "ancestral sampling respaced to the step count, DDIM is deterministic (eta = 0), "
        "DPM-Solver is DPM-Solver++ 2M.", "",
        "Unlike the paper, where every D-n row is its own Algorithm 1 fine-tune, every row of a "
        "model here is sampled from the same weights (see each heading), so the rows differ only "
        "by the blocks they skip.", "",
    ]
    return "\n".join(lines + [arch_section(r) for r in records])


BENCHMARK = Benchmark(name="paper_table", doc=__doc__, params=Params,
                      keys=lambda params: list(params.arch), cell=run_arch, report=report)


if __name__ == "__main__":
    run(BENCHMARK)
