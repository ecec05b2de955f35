"""Paper-style table (Tables 3-4): FID and measured acceleration per schedule, sampler and steps.

For each testbed model the rows are the full model, the paper's presets D1..D6 and two picks from
the front of the reference study ``studies/reference/<arch>.db`` (the fastest trial with a FID
within ``--pick-fid-ratio`` of the full model's; the lowest-FID trial at least
``--pick-min-acceleration`` faster), all sampled from the one-shot weights the study recorded.
Each sampler and step count gets FID-MNIST (mean ± std over ``--seeds`` seeds, common random
numbers), the measured acceleration ``1 - latency / latency(full)`` and the cost model's
prediction. ``--latency sampling`` times one sampling run's calls, interleaved
(:func:`ase_search.evaluate.benchmark_latency`); ``per-call`` times one call per block count and
sums the medians over the sampler's calls (cheaper; a call's cost does not depend on t). Run from
the repository root on an otherwise idle machine:

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
    ROOT,
    check_testbeds,
    display_path,
    fid_text,
    file_sha256,
    machine_text,
    pct,
    sampler_name,
    short_hash,
)
from benchmarks._runner import Benchmark, CellContext, Report, markdown_table, option, run

if TYPE_CHECKING:
    import torch

    from ase_search.metrics.latency import CostModel
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule

DISPLAY = {"ddpm": "DDPM", "ddim": "DDIM", "dpm-solver": "DPM-Solver", "euler-maruyama": "EM"}
DEFAULT_SAMPLERS = ("ddpm:50,100", "ddim:10,20", "dpm-solver:10,20")
_BOOTSTRAP = 2000


@dataclasses.dataclass(frozen=True)
class Params:
    """What the table holds: models, rows (presets + front picks), samplers, FID and latency."""

    arch: tuple[str, ...] = field(default=("dit", "uvit"),
                                  metadata=option("testbed models", identity=False))
    n: int = field(default=500, metadata=option("samples per seed"))
    seeds: int = field(default=5, metadata=option("seeds 0..S-1"))
    samplers: tuple[str, ...] = field(default=DEFAULT_SAMPLERS, metadata=option(
        "column groups, e.g. ddpm:50,100 ddim:10,20 dpm-solver:10,20"))
    batch_size: int = field(default=250, metadata=option("sampling batch"))
    weights: str = field(default="one-shot", metadata=option(choices=("one-shot", "shipped")))
    studies_dir: Path = ROOT / "studies" / "reference"
    pick_fid_ratio: float = 1.05
    pick_min_acceleration: float = 0.30
    no_picks: bool = field(default=False, metadata=option("leave the front picks out"))
    latency: str = field(default="sampling", metadata=option(choices=("sampling", "per-call")))
    latency_batch: int = 256
    latency_repeats: int = field(default=3, metadata=option(
        "timed rounds (sampling: 3 is enough for the sum over calls; per-call: use ~20)"))

    def __post_init__(self) -> None:
        check_testbeds(self.arch)
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


def parse_samplers(specs: tuple[str, ...]) -> list[SamplerConfig]:
    """``("ddpm:50,100", "ddim:10,20")`` -> sampler configs, in the given order."""
    from ase_search.samplers import SAMPLER_NAMES, SamplerConfig

    samplers = []
    for spec in specs:
        name, _, steps = spec.partition(":")
        name = sampler_name(name)
        if name not in SAMPLER_NAMES or not steps:
            raise ValueError(f"--samplers entries look like ddim:10,20 with a sampler from "
                             f"{list(SAMPLER_NAMES)}; got {spec!r}")
        try:
            counts = [int(s) for s in steps.split(",")]
        except ValueError:
            raise ValueError(f"--samplers {spec!r}: steps must be integers") from None
        samplers += [SamplerConfig(name=name, steps=k) for k in counts]
    return samplers


def schedule_id(schedule: ExitSchedule) -> dict[str, Any]:
    return {"boundaries": list(schedule.boundaries), "blocks": list(schedule.blocks),
            "depth": schedule.depth}


def _cached(cell: dict[str, Any] | None, schedule: ExitSchedule) -> bool:
    return cell is not None and cell.get("schedule") == schedule_id(schedule)


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
    if args.no_picks:
        return rows, None
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
    from ase_search.finetune import recorded_weights
    from ase_search.testbed import TESTBEDS

    shipped = TESTBEDS[arch].path
    if args.weights == "shipped":
        return shipped, "shipped testbed weights (no fine-tune)"
    config = (study or {}).get("config", {})
    record = (study or {}).get("weights")
    if study is None:
        why = "no reference study to take them from"
    elif config.get("finetune") != "one-shot" or not config.get("finetune_steps") or not record:
        why = (f"the reference study was not searched with a one-shot fine-tune "
               f"(finetune={config.get('finetune')!r})")
    else:
        try:
            one_shot = recorded_weights(record, args.studies_dir, arch=arch)
        except ValueError as err:
            why = str(err)
        else:
            return one_shot, (f"one-shot fine-tuned weights of the reference study "
                              f"({config.get('finetune_steps')} steps over the search space)")
    notes.append(f"One-shot weights asked for but {why}: every row uses the shipped testbed "
                 f"weights instead, so the FIDs are not those the study measured.")
    return shipped, "shipped testbed weights (no fine-tune; one-shot weights unavailable)"


# ###################################################################### latency
def per_call_latency(model: torch.nn.Module, args: Params) -> dict[str, list[float]]:
    """Seconds of one call at every block count (``"k"`` -> interleaved rounds)."""
    from ase_search.metrics.latency import sampling_latency_samples
    from ase_search.schedule import ExitSchedule

    single = {str(k): ExitSchedule(model.arch, model.exit_depth, (0.0, 1.0), (k,), f"k={k}")
              for k in range(1, model.exit_depth + 1)}
    samples = sampling_latency_samples(model, single, [999.0], batch_size=args.latency_batch,
                                       repeats=args.latency_repeats)
    return {k: per_call[0] for k, per_call in samples.items()}


def per_call_accelerations(calls: dict[str, list[float]], rows: list[dict[str, Any]],
                           sampler: SamplerConfig) -> dict[str, dict[str, Any]]:
    """Measured acceleration from per-call timings summed over the sampler's calls, with a
    bootstrap standard error over rounds."""
    import numpy as np

    from ase_search.callplan import blocks_per_call

    times = sampler.model_times()
    repeats = len(next(iter(calls.values())))
    arrays = {int(k): np.asarray(v) for k, v in calls.items()}  # k -> (R,)
    rounds = np.random.default_rng(0).integers(0, repeats, size=(_BOOTSTRAP, repeats))

    def latency(schedule: ExitSchedule, pick: Any = None) -> Any:
        ks = blocks_per_call(schedule, times)
        if pick is None:
            return sum(float(np.median(arrays[k])) for k in ks)
        return sum(np.median(arrays[k][pick], axis=1) for k in ks)  # (B,)

    full = rows[0]["schedule"]
    out = {}
    for row in rows:
        s = row["schedule"]
        boot = 1.0 - latency(s, rounds) / latency(full, rounds)
        out[row["name"]] = {
            "measured_acceleration": 1.0 - latency(s) / latency(full),
            "measured_acceleration_se": float(np.std(boot, ddof=1)) if repeats > 1 else None,
            "measured_s": latency(s),
        }
    return out


def sampling_accelerations(model: torch.nn.Module, rows: list[dict[str, Any]],
                           sampler: SamplerConfig, cost: CostModel,
                           args: Params) -> dict[str, dict[str, Any]]:
    from ase_search.evaluate import benchmark_latency

    df = benchmark_latency(model, {r["name"]: r["schedule"] for r in rows}, sampler=sampler,
                           batch_size=args.latency_batch, repeats=args.latency_repeats,
                           cost_model=cost)
    return {r.schedule: {"measured_acceleration": float(r.measured_acceleration),
                         "measured_acceleration_se": _finite(float(r.measured_acceleration_se)),
                         "measured_s": float(r.measured_s)}
            for r in df.itertuples(index=False)}


# ###################################################################### one architecture
def run_arch(args: Params, arch: str, ctx: CellContext) -> dict[str, Any]:
    """One model's cell: its rows, FID cells and latency, each saved as it finishes."""
    import torch

    from ase_search.evaluate import evaluate, machine_info
    from ase_search.metrics.latency import CostModel, profile_components
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
        "latency": dict(keep.get("latency", {})),
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
            if not _cached(record["cells"].get(cell_key(r["name"], s)), r["schedule"])]
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
                "ideal_acceleration": result.flop_acceleration,  # the key the JSON cache stores
                "seconds": seconds, "date": machine_info()["date"],
            }
            record["cells"][cell_key(row["name"], sampler)] = cell
            ctx.checkpoint(record)
            bar.update(task, advance=weight(row, sampler))
            bar.console.print(f"{arch} {row['name']:>12s} {sampler_label(sampler):>14s}: FID "
                              f"{fid_text(cell)} ({seconds:.0f} s)", highlight=False)

        # Latency last, after the sampling, on the same (hopefully idle) machine.
        if args.latency == "per-call":
            key = short_hash({"batch": args.latency_batch, "repeats": args.latency_repeats})
            if (record["per_call"] or {}).get("key") != key:
                lat = bar.add_task(f"{arch} latency (per call)", total=1)
                load, t0 = os.getloadavg()[0], time.perf_counter()
                calls = per_call_latency(model, args)
                record["per_call"] = {"key": key, "calls": calls, "load_before": load,
                                      "load_after": os.getloadavg()[0],
                                      "seconds": time.perf_counter() - t0}
                ctx.checkpoint(record)
                bar.update(lat, advance=1)
        key = short_hash({"method": args.latency, "batch": args.latency_batch,
                          "repeats": args.latency_repeats,
                          "rows": [(r["name"], schedule_id(r["schedule"])) for r in rows],
                          "per_call": (record["per_call"] or {}).get("key")})
        todo_lat = [s for s in samplers
                    if record["latency"].get(sampler_key(s), {}).get("key") != key]
        if todo_lat:
            lat = bar.add_task(f"{arch} latency ({args.latency})",
                               total=sum(s.steps for s in todo_lat))
            for sampler in todo_lat:
                load, t0 = os.getloadavg()[0], time.perf_counter()
                measured = (per_call_accelerations(record["per_call"]["calls"], rows, sampler)
                            if args.latency == "per-call"
                            else sampling_accelerations(model, rows, sampler, cost, args))
                record["latency"][sampler_key(sampler)] = {
                    "key": key, "method": args.latency, "rows": measured,
                    "batch": args.latency_batch, "repeats": args.latency_repeats,
                    "seconds": time.perf_counter() - t0, "load_before": load,
                    "load_after": os.getloadavg()[0], "threads": torch.get_num_threads(),
                }
                ctx.checkpoint(record)
                bar.update(lat, advance=sampler.steps)
    record["wall_time_min"] = (time.perf_counter() - started) / 60
    return record


# ###################################################################### markdown
def arch_section(record: dict[str, Any]) -> str:
    """One model's section: its run, the FID/acceleration table, the rows' sources, notes."""
    import pandas as pd

    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule

    s, m = record["settings"], record["machine"]
    samplers = [SamplerConfig.from_dict(d) for d in record["samplers"]]
    full = record["rows"][0]["name"]
    lines = [f"## {s['model_name']} ({s['arch']}, {s['depth']} exitable blocks)", "",
             f"Weights: {s['weights_kind']}, `{s['weights']}` (sha256 "
             f"{s['weights_sha256'][:12]}). Last run: `{record['command']}` on {m['date']}, "
             f"{machine_text(m)}"
             + (f", {record['wall_time_min']:.1f} min" if "wall_time_min" in record else "")
             + ".", ""]
    columns = ["schedule"] + [f"{sampler_label(x)} {c}" for x in samplers
                              for c in ("FID", "accel.", "pred.")]
    table = []
    for row in record["rows"]:
        cells = [row["name"] + (" (= front pick)" if row.get("also") else "")]
        for sampler in samplers:
            cell = record["cells"].get(cell_key(row["name"], sampler))
            lat = record["latency"].get(sampler_key(sampler), {}).get("rows", {}).get(row["name"])
            cached = _cached(cell, ExitSchedule.from_dict(row["schedule"]))
            cells.append(fid_text(cell if cached else None))
            if row["name"] == full:
                cells += ["–", "–"]
            else:
                cells += ["–" if lat is None else pct(lat["measured_acceleration"],
                                                      lat.get("measured_acceleration_se")),
                          "–" if cell is None else pct(cell["predicted_acceleration"])]
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
    timed = [(sampler_label(x), record["latency"][sampler_key(x)]) for x in samplers
             if record["latency"].get(sampler_key(x))]
    if timed:
        method = next(iter(record["latency"].values()))["method"]
        if method == "per-call" and record.get("per_call"):
            timed = [("one call at each block count", record["per_call"])]
        lines += ["", f"Latency ({method}): " + "; ".join(
            f"{what} {t['seconds']:.0f} s (load {t['load_before']:.2f} → {t['load_after']:.2f})"
            for what, t in timed) + "."]
    if record["notes"]:
        lines += ["", *[f"- {n}" for n in record["notes"]]]
    return "\n".join(lines) + "\n"


def markdown(records: list[dict[str, Any]], json_name: str) -> str:
    """The report: an introduction, then one section per model."""
    s = records[0]["settings"]
    lat0 = next((lat for r in records for lat in r["latency"].values()), {})
    method, batch, repeats = lat0.get("method"), lat0.get("batch"), lat0.get("repeats")
    method_text = {
        "sampling": "the network calls of one sampling run (one batch of "
                    f"{batch}) at the sampler's step count are timed for every row, "
                    "interleaved call by call, and each row's latency is the sum over its calls "
                    f"of the median over {repeats} rounds "
                    "(`ase_search.evaluate.benchmark_latency`); ± is a bootstrap standard error "
                    "over rounds",
        "per-call": "one network call at every block count is timed (one batch of "
                    f"{batch}, {repeats} interleaved rounds, median), "
                    "and a row's latency is the sum of those medians over the sampler's calls "
                    "(a call's cost depends on its block count, not on t); ± is a bootstrap "
                    "standard error over rounds",
        None: "not measured yet",
    }[method]
    lines = [
        "# Paper-style table (Tables 3-4 layout)", "",
        f"Written by `benchmarks/paper_table.py` from `{json_name}`; each "
        "model's command, machine and date are under its heading. FID-MNIST (the project's "
        "digit-classifier features; not comparable with the paper's Inception FIDs) is the mean "
        f"± std over seeds {s['seeds']} with N = {s['n']} samples per seed; the seeds are common "
        "random numbers (every row and sampler draws the same labels and noise for a seed).", "",
        "Columns per sampler and step count: **FID**; **accel.** = measured acceleration "
        f"`1 - latency / latency(full)`, where {method_text}; **pred.** = the cost model's "
        "prediction from profiled components (`ase_search.metrics.latency.CostModel`), the "
        "search's latency objective. DDPM is ancestral sampling respaced to the step count, "
        "DDIM is deterministic (eta = 0), DPM-Solver is DPM-Solver++ 2M.", "",
        "Unlike the paper, where every D-n row is its own Algorithm 1 fine-tune, every row of a "
        "model here is sampled from the same weights (see each heading), so the rows differ only "
        "by the blocks they skip.", "",
    ]
    return "\n".join(lines + [arch_section(r) for r in records])


# ###################################################################### the benchmark
def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    from ase_search.testbed import TESTBEDS

    return Report(markdown([cells[a] for a in TESTBEDS if a in cells], json_name))


BENCHMARK = Benchmark(name="paper_table", doc=__doc__, params=Params,
                      keys=lambda params: list(params.arch), cell=run_arch, report=report)


if __name__ == "__main__":
    run(BENCHMARK)
