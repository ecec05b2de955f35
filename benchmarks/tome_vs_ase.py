"""ToMe vs ASE on the testbed (the paper's Appendix B.3, Tables 5-8): FID at measured acceleration.

Does token merging (ToMe, :mod:`ase_search.tome`) at the paper's merge ratios and block schedules
match the paper's early-exit presets (ASE) at the same speed? Per testbed model, every row (the
full model, D1..D6, ToMe ratio x schedule) is sampled training-free (``--ase-weights`` gives the
ASE rows the reference study's one-shot weights) for FID-MNIST over ``--seeds`` seeds of common
random numbers, and each distinct model call is timed in one interleaved wall-clock run (the cost
model knows nothing of ToMe); each ToMe row is matched with the ASE preset of nearest measured
acceleration. The report's introduction says the rest. One cell per model; its FID rows and
latency run are saved as they finish and reused by runs whose settings do not change them. Run
from the repository root on an otherwise idle machine:

    python -m benchmarks.tome_vs_ase --arch dit uvit --n 500 --seeds 3 --threads 2
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import os
import time
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase_search.progress import progress_bar
from benchmarks._common import (
    bootstrap_latencies,
    display_path,
    fid_text,
    file_sha256,
    machine_text,
    pct,
    reference_one_shot_weights,
    rerun_command,
    short_hash,
)
from benchmarks._runner import (
    Benchmark,
    CellContext,
    Report,
    TestbedParams,
    markdown_table,
    option,
    run,
)

if TYPE_CHECKING:
    import torch

    from ase_search.samplers import SamplerConfig

# Appendix B.3's attn-ratio-2 .. -6, stride 2 (tomesd's "down-1": every block of a transformer).
PAPER_RATIOS = (0.2, 0.3, 0.4, 0.5, 0.6)
# The models of the paper's ToMe tables: block count (as ase_search.tome counts them) and the
# schedules tabulated (DiT-XL/2: Tables 5 and 6; U-ViT-S/4: Tables 7 and 8).
PAPER_TOME = {
    "dit": (28, ("B2", "B4", "B6", "B8", "all", "R2", "R4", "R6", "R8", "R10")),
    "uvit": (13, ("R2", "R3", "R4", "R5", "all")),
}


@dataclasses.dataclass(frozen=True)
class Params(TestbedParams):
    """What the comparison holds: models, rows (presets + ToMe configurations), FID and latency."""

    seeds: int = field(default=3, metadata=option("number of seeds"))
    seed: int = field(default=0, metadata=option("first seed"))
    sampler: str = "ddim"
    steps: int = field(default=20, metadata=option("sampler steps"))
    batch_size: int = field(default=256, metadata=option(
        "samples per model call, for sampling and for timing"))
    tome_ratios: tuple[float, ...] = field(default=PAPER_RATIOS, metadata=option(
        "merge ratios (default: the paper's 0.2 .. 0.6)"))
    tome_seed: int = field(default=0, metadata=option(
        "seed of ToMe's destination draw (ToMeConfig.seed)"))
    ase_weights: str = field(default="shipped", metadata=option(
        "weights for the ASE rows: the shipped testbed weights, or the one-shot weights "
        "studies/reference/{arch}.db records", choices=("shipped", "one-shot")))
    latency_repeats: int = field(default=3, metadata=option(
        "timed interleaved rounds after one warm-up round"))

    def __post_init__(self) -> None:
        from ase_search.tome import ToMeConfig

        super().__post_init__()
        if self.n < 2 or self.seeds < 1 or self.seed < 0:
            raise ValueError("--n must be >= 2, --seeds >= 1 and --seed >= 0")
        if self.batch_size < 1 or self.latency_repeats < 1:
            raise ValueError("--batch-size and --latency-repeats must be >= 1")
        self.sampler_config  # noqa: B018 -- raises ValueError naming a bad sampler or steps
        for ratio in self.tome_ratios:
            try:
                ToMeConfig(ratio=ratio)
            except ValueError as err:
                raise ValueError(f"--tome-ratios {ratio:g}: {err}") from None

    @property
    def sampler_config(self) -> SamplerConfig:
        from ase_search.samplers import SamplerConfig

        return SamplerConfig(name=self.sampler, steps=self.steps)


# ###################################################################### ToMe configurations
def scale_tome_schedule(schedule: str, depth: int, reference_depth: int) -> str:
    """A ToMe schedule written for ``reference_depth`` blocks, for a model of ``depth`` blocks.

    ``F<k>``/``R<k>`` rescale ``k`` with :func:`~ase_search.schedule.scale_blocks`; ``B<k>``
    rescales the ``k / 2`` blocks it takes from each end, so it stays even; ``all`` stays ``all``.
    """
    from ase_search.schedule import scale_blocks
    from ase_search.tome import ToMeConfig

    canonical = ToMeConfig(0.0, schedule).schedule
    if canonical == "all" or depth == reference_depth:
        return canonical
    kind, k = canonical[0], int(canonical[1:])
    if kind == "B":
        return f"B{2 * scale_blocks(k // 2, depth // 2, reference_depth // 2)}"
    return f"{kind}{scale_blocks(k, depth, reference_depth)}"


def tome_schedules_for(arch: str, tome_depth: int) -> list[str]:
    """The paper's ToMe block schedules of ``arch``, rescaled and de-duplicated."""
    reference_depth, paper = PAPER_TOME[arch]
    return list(dict.fromkeys(scale_tome_schedule(s, tome_depth, reference_depth) for s in paper))


def twin(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` sharing its parameters and buffers: ToMe hooks module instances, so
    each configuration needs its own modules, not its own weights."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


# ###################################################################### rows
def build_rows(arch: str, base: torch.nn.Module, args: Params,
               ase_on_other_weights: bool) -> list[dict[str, Any]]:
    """full, [full on the ASE weights], the D-n presets, then ToMe ratio x schedule."""
    from ase_search.callplan import blocks_per_call
    from ase_search.metrics.latency import flop_acceleration
    from ase_search.schedule import preset, preset_names
    from ase_search.tome import ToMeConfig, tome_blocks, tome_flop_acceleration

    depth = base.exit_depth
    times = args.sampler_config.model_times()

    def ase_row(name: str, label: str, method: str, weights: str) -> dict[str, Any]:
        schedule = preset(name, arch, depth)
        return {"name": label, "method": method, "config": name, "weights": weights,
                "schedule": schedule.to_dict(), "detail": f"`{schedule.describe()}`",
                "flop_acceleration": flop_acceleration(base, schedule, times),
                "calls": blocks_per_call(schedule, times)}

    rows = [ase_row("full", "full", "full", "shipped")]
    if ase_on_other_weights:
        rows.append(ase_row("full", "full (ASE weights)", "full", "ase"))
    rows += [ase_row(n, n, "ASE", "ase" if ase_on_other_weights else "shipped")
             for n in preset_names(arch, data_easy=False) if n != "full"]
    for schedule in tome_schedules_for(arch, len(tome_blocks(base, "all"))):
        for ratio in args.tome_ratios:
            config = ToMeConfig(ratio=ratio, schedule=schedule, seed=args.tome_seed)
            blocks = tome_blocks(base, config)
            rows.append({"name": config.describe(), "method": "ToMe",
                         "config": f"ratio {ratio:g}, {config.schedule}", "weights": "shipped",
                         "tome": config.to_dict(), "tome_blocks": blocks,
                         "detail": "blocks " + ",".join(map(str, blocks)),
                         "flop_acceleration": tome_flop_acceleration(base, config),
                         "calls": [depth] * len(times)})
    return rows


def timing_signature(row: dict[str, Any]) -> Any:
    """What determines a row's latency: ToMe's config or the block count of every call."""
    return (json.dumps(row.get("tome"), sort_keys=True), tuple(row["calls"]))


# ###################################################################### latency
def measure_latency(base: torch.nn.Module, twins: dict[str, torch.nn.Module],
                    rows: list[dict[str, Any]], args: Params) -> dict[str, Any]:
    """One interleaved run timing each distinct call of the rows (a ToMe row's calls, a block
    count's call) once per round, in an order that rotates with the round
    (:func:`ase_search.metrics.latency.time_interleaved`), so the calls compared ran seconds
    apart and a burst of load hits them alike; per row, the latency per call (the mean over the
    sampler's calls of the median over rounds) and the acceleration over the first row's."""
    import torch

    from ase_search.metrics.latency import example_inputs, time_interleaved

    x, t, y = example_inputs(base, args.batch_size, torch.device("cpu"))  # (B, C, H, W), (B,), (B,)

    def key(row: dict[str, Any], k: int) -> str:  # what a row's call of k blocks is timed as
        return f"{row['name'] if row['method'] == 'ToMe' else 'blocks'}@{k}"

    calls = {}
    for row in rows:
        model = twins.get(row["name"], base)
        for k in row["calls"]:
            calls.setdefault(key(row, k), lambda model=model, k=k: model(x, t, y, n_blocks=k))
    load, t0 = os.getloadavg()[0], time.perf_counter()
    with torch.inference_mode():
        timed = time_interleaved(calls, rounds=args.latency_repeats)
    seconds = time.perf_counter() - t0
    samples = {k: list(run.rounds) for k, run in timed.items()}
    n_calls = len(rows[0]["calls"])
    latency = bootstrap_latencies(
        {row["name"]: [samples[key(row, k)] for k in row["calls"]] for row in rows},
        rows[0]["name"])
    out = {name: {"latency_per_call_s": lat["seconds"] / n_calls,
                  "latency_per_call_se": (None if lat["seconds_se"] is None
                                          else lat["seconds_se"] / n_calls),
                  "acceleration": lat["acceleration"], "acceleration_se": lat["acceleration_se"]}
           for name, lat in latency.items()}
    return {"rows": out, "samples": samples, "seconds": seconds, "load_before": load,
            "load_after": os.getloadavg()[0]}


# ###################################################################### one architecture
def resolve_ase_weights(arch: str, args: Params, notes: list[str]) -> tuple[Path, str]:
    """The weights of the ASE rows and a description of them."""
    from ase_search.testbed import TESTBEDS

    shipped = TESTBEDS[arch].path
    if args.ase_weights == "shipped":
        return shipped, "shipped testbed weights (no fine-tune)"
    try:
        return (reference_one_shot_weights(arch),
                "one-shot fine-tuned weights of the reference study")
    except ValueError as err:
        notes.append(f"`--ase-weights one-shot` asked for the reference study's one-shot "
                     f"weights, but {err}: the ASE rows use the shipped testbed weights.")
        return shipped, "shipped testbed weights (no fine-tune; one-shot weights absent)"


def run_arch(args: Params, arch: str, ctx: CellContext) -> dict[str, Any]:
    """One model's cell: its rows, FID rows and latency run, each saved as it finishes."""
    import torch

    from ase_search.evaluate import machine_info
    from ase_search.measure import measure_schedule
    from ase_search.metrics.latency import profile_components
    from ase_search.schedule import ExitSchedule
    from ase_search.testbed import TESTBEDS, load_model
    from ase_search.tome import ToMeConfig, apply_tome, tome_blocks

    started = time.perf_counter()
    notes: list[str] = []
    base, shipped = load_model(arch), TESTBEDS[arch].path
    ase_path, ase_kind = resolve_ase_weights(arch, args, notes)
    shipped_sha, ase_sha = file_sha256(shipped), file_sha256(ase_path)
    ase_model = base if ase_sha == shipped_sha else load_model(arch, ase_path)
    rows = build_rows(arch, base, args, ase_model is not base)
    seeds = list(range(args.seed, args.seed + args.seeds))
    sampler = args.sampler_config
    weights = {"shipped": {"path": display_path(shipped), "sha256": shipped_sha,
                           "kind": "shipped testbed weights (no fine-tune)"},
               "ase": {"path": display_path(ase_path), "sha256": ase_sha, "kind": ase_kind}}
    settings = {
        "arch": arch, "model_name": getattr(base, "model_name", arch), "depth": base.exit_depth,
        "tome_depth": len(tome_blocks(base, "all")), "n": args.n, "seeds": seeds,
        "sampler": sampler.to_dict(), "batch_size": args.batch_size, "data": "mnist",
        "fid": "FID-MNIST (digit-classifier features)", "weights": weights,
        "latency": {"mode": "per-call", "repeats": args.latency_repeats,
                    "batch_size": args.batch_size, "threads": torch.get_num_threads()},
    }
    old = ctx.previous or {}
    record: dict[str, Any] = {
        "command": ctx.command, "machine": machine_info(), "settings": settings, "notes": notes,
        "rows": rows, "cells": dict(old.get("cells", {})), "latency": old.get("latency"),
    }
    for row in rows:  # what determines a row's samples
        row["cell_key"] = short_hash({
            "row": {"method": row["method"], "schedule": row.get("schedule"),
                    "tome": row.get("tome")},
            "weights": weights[row["weights"]]["sha256"], "n": args.n, "seeds": seeds,
            "sampler": sampler.to_dict(), "batch_size": args.batch_size, "data": "mnist"})
    latency_key = short_hash({"rows": [timing_signature(r) for r in rows],
                              **settings["latency"], "sampler": sampler.to_dict()})
    todo = [r for r in rows if record["cells"].get(r["name"], {}).get("key") != r["cell_key"]]
    # Cells of rows no longer in the table are dropped so the JSON mirrors the report.
    record["cells"] = {r["name"]: record["cells"][r["name"]] for r in rows
                       if r not in todo and r["name"] in record["cells"]}
    ctx.checkpoint(record)

    twins: dict[str, torch.nn.Module] = {}
    for row in rows:
        if row["method"] == "ToMe":
            twins[row["name"]] = twin(base)
            apply_tome(twins[row["name"]], ToMeConfig(**row["tome"]))
    cost = profile_components(base, batch_size=args.batch_size, repeats=3) if todo else None

    def weight(row: dict[str, Any]) -> float:  # sampling cost in full-model calls (ToMe: ~1)
        share = 1.0 if row["method"] == "ToMe" else 1.0 - cost.acceleration(
            ExitSchedule.from_dict(row["schedule"]), sampler.model_times())
        return share * len(seeds) * sampler.steps

    with progress_bar(counts=False) as bar:
        task = bar.add_task(f"{arch} FID rows", total=sum(weight(r) for r in todo))
        for row in todo:
            model = (twins[row["name"]] if row["method"] == "ToMe"
                     else ase_model if row["weights"] == "ase" else base)
            t0 = time.perf_counter()
            schedule = (None if row["method"] == "ToMe"
                        else ExitSchedule.from_dict(row["schedule"]))
            result = measure_schedule(model, schedule, sampler=sampler, n=args.n, seeds=seeds,
                                      batch_size=args.batch_size, cost_model=cost, keep_images=0)
            cell = record["cells"][row["name"]] = {
                "key": row["cell_key"], "fid_mean": result.mean("fid"),
                "fid_std": result.std("fid"), "per_seed": [m["fid"] for m in result.metrics],
                "seconds": time.perf_counter() - t0, "date": machine_info()["date"]}
            ctx.checkpoint(record)
            bar.update(task, advance=weight(row))
            bar.console.print(f"{arch} {row['name']:>20s}: FID {fid_text(cell)} "
                              f"({cell['seconds']:.0f} s)", highlight=False)
    # Latency last, after the sampling, so it runs on the same (hopefully idle) machine.
    if (record["latency"] or {}).get("key") != latency_key:
        record["latency"] = {"key": latency_key, **settings["latency"],
                             **measure_latency(base, twins, rows, args)}
        ctx.checkpoint(record)
    record["wall_time_min"] = (time.perf_counter() - started) / 60
    return record


# ###################################################################### matching and verdict
# A finished cell holds every row's FID and measured acceleration (the runner reports no other).
def matches(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Each ToMe row with the ASE preset of nearest measured acceleration, and the FID gap."""
    cells, lat = record["cells"], record["latency"]["rows"]
    ase = {r["name"]: lat[r["name"]]["acceleration"] for r in record["rows"]
           if r["method"] == "ASE"}
    out = []
    for name in [r["name"] for r in record["rows"] if r["method"] == "ToMe"]:
        accel = lat[name]["acceleration"]
        near = min(ase, key=lambda n: abs(ase[n] - accel))
        gap = cells[name]["fid_mean"] - cells[near]["fid_mean"]
        stds = [cells[n]["fid_std"] for n in (name, near) if cells[n]["fid_std"] is not None]
        out.append({"tome": name, "ase": near, "tome_accel": accel, "ase_accel": ase[near],
                    "fid_gap": gap, "beyond_std": abs(gap) > max(stds) if stds else None})
    return out


def verdict(record: dict[str, Any], pairs: list[dict[str, Any]]) -> str:
    """One paragraph computed from the numbers."""
    ase_better = [p for p in pairs if p["fid_gap"] > 0]
    tome_better = [p for p in pairs if p["fid_gap"] < 0]
    has_std = any(p["beyond_std"] is not None for p in pairs)

    def beyond(won: list[dict[str, Any]]) -> str:
        n = sum(bool(p["beyond_std"]) for p in won)
        return f" ({n} beyond the seed std)" if has_std else ""

    as_fast = sum(p["ase_accel"] >= p["tome_accel"] for p in pairs)
    tome_acc = [p["tome_accel"] for p in pairs]
    lat = record["latency"]["rows"]
    ase_acc = [lat[r["name"]]["acceleration"] for r in record["rows"] if r["method"] == "ASE"]
    slower = sum(a < 0 for a in tome_acc)
    text = (f"At matched acceleration (nearest ASE preset), ASE has the lower FID for "
            f"{len(ase_better)} of {len(pairs)} ToMe configurations{beyond(ase_better)} and "
            f"ToMe for {len(tome_better)}{beyond(tome_better)}; the matched ASE preset is at "
            f"least as fast in {as_fast} of {len(pairs)}. "
            f"ToMe's measured acceleration spans {pct(min(tome_acc))} to {pct(max(tome_acc))} "
            f"({slower} of {len(tome_acc)} configurations slower than the full model); the ASE "
            f"presets span {pct(min(ase_acc))} to {pct(max(ase_acc))}.")
    if slower == len(tome_acc):
        text += (" No ToMe configuration is faster than the full model here, so each is matched "
                 "with the ASE preset of lowest measured acceleration; the acceleration gaps "
                 "decide.")
    if not has_std:
        text += " With one seed there is no seed std to judge the gaps against."
    best, cells = max(pairs, key=lambda p: p["tome_accel"]), record["cells"]
    return text + (f" The fastest ToMe configuration, {best['tome']} "
                   f"({pct(best['tome_accel'])}, FID {fid_text(cells[best['tome']])}), "
                   f"is matched with {best['ase']} ({pct(best['ase_accel'])}, FID "
                   f"{fid_text(cells[best['ase']])}).")


# ###################################################################### report
def rows_table(record: dict[str, Any]) -> str:
    """Every row: its method, config, schedule or merged blocks, accelerations, latency, FID."""
    import pandas as pd

    full = record["rows"][0]["name"]
    table = []
    for row in record["rows"]:
        lr = record["latency"]["rows"][row["name"]]
        accel = "–" if row["name"] == full else pct(lr["acceleration"], lr["acceleration_se"])
        ms = f"{lr['latency_per_call_s'] * 1e3:.1f}" + (
            f" ± {lr['latency_per_call_se'] * 1e3:.1f}" if lr["latency_per_call_se"] else "")
        weights = " (ASE weights)" if row["weights"] == "ase" and row["method"] == "full" else ""
        table.append([f"{row['method']}{weights}", row["config"], row["detail"],
                      pct(row["flop_acceleration"]), accel, ms,
                      fid_text(record["cells"][row["name"]])])
    columns = ["method", "config", "exit schedule / merged blocks", "FLOP-ideal accel.",
               "measured accel.", "latency / call (ms)", "FID"]
    return markdown_table(pd.DataFrame(table, columns=columns), align=["left"] * 3 + ["right"] * 4)


def matches_table(record: dict[str, Any], pairs: list[dict[str, Any]]) -> str:
    """Each ToMe row next to its nearest ASE preset: accelerations, FIDs and the gaps."""
    import pandas as pd

    cells = record["cells"]
    table = [[p["tome"], pct(p["tome_accel"]), fid_text(cells[p["tome"]]),
              p["ase"], pct(p["ase_accel"]), fid_text(cells[p["ase"]]),
              f"{(p['ase_accel'] - p['tome_accel']) * 100:+.1f} pp", f"{p['fid_gap']:+.2f}",
              {None: "–", True: "yes", False: "no"}[p["beyond_std"]]] for p in pairs]
    columns = ["ToMe", "accel.", "FID", "nearest ASE", "accel.", "FID",
               "accel. gap (ASE − ToMe)", "FID gap (ToMe − ASE)", "gap > seed std"]
    return markdown_table(pd.DataFrame(table, columns=columns),
                          align=["left", "right", "right", "left", "right", "right", "right",
                                 "right", "left"])


def arch_section(record: dict[str, Any]) -> str:
    """One model's section: its run, the rows table, the matched pairs and the verdict, notes."""
    from ase_search.samplers import SamplerConfig

    s, m, lat = record["settings"], record["machine"], record["latency"]
    smp = SamplerConfig.from_dict(s["sampler"])
    w = s["weights"]
    pairs = matches(record)
    lines = [
        f"## {s['model_name']} ({s['arch']}: {s['depth']} exitable blocks, {s['tome_depth']} "
        "blocks ToMe counts)", "",
        f"Command: `{rerun_command(record['command'])}`; {m['date']}; {machine_text(m)}; "
        f"{record['wall_time_min']:.1f} min.", "",
        f"Sampler {smp.name} {smp.steps} steps (eta {smp.eta:g}); FID over seeds {s['seeds']}, "
        f"N = {s['n']} per seed, batch {s['batch_size']}. Weights: full and ToMe rows "
        f"`{w['shipped']['path']}` ({w['shipped']['kind']}, sha256 "
        f"{w['shipped']['sha256'][:12]}); ASE rows `{w['ase']['path']}` ({w['ase']['kind']}, "
        f"sha256 {w['ase']['sha256'][:12]}).", "",
        f"Latency: {lat['mode']} mode, batch {lat['batch_size']}, {lat['threads']} thread(s), "
        f"one warm-up then {lat['repeats']} interleaved rounds, {lat['seconds']:.0f} s, load "
        f"average (1 min) {lat['load_before']:.2f} before and {lat['load_after']:.2f} after.", "",
        rows_table(record), "", "### Matched acceleration", "", matches_table(record, pairs), "",
        "**Verdict.** " + verdict(record, pairs),
    ]
    if record["notes"]:
        lines += ["", *[f"- {n}" for n in record["notes"]]]
    return "\n".join(lines) + "\n"


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    """The report: an introduction, then one section per model (in testbed order)."""
    from ase_search.testbed import TESTBEDS

    lines = [
        "# ToMe vs ASE at matched acceleration (Appendix B.3, Tables 5-8 on the testbed)", "",
        f"Written by `benchmarks/tome_vs_ase.py` from `{json_name}`; each "
        "model's command, machine, date, seeds, N, sampler and weights are under its heading.", "",
        "Rows: the full model; ASE = the paper's early-exit presets D1..D6 (Table 2, rescaled to "
        "the testbed depth); ToMe = token merging (bipartite soft matching, stride 2) in the "
        "self-attention of the blocks its schedule picks, at the paper's merge ratios 0.2 .. 0.6 "
        "(`attn-ratio-2` .. `-6`). ToMe schedules: `F<k>`/`R<k>` the first/last k blocks, "
        "`B<k>` k/2 from each end, `all` every block; DiT's are Tables 5-6's (B2-B8, all; "
        "R2-R10 of DiT-XL/2's 28 blocks) rescaled to 12 blocks, U-ViT's Tables 7-8's (R2-R5, all "
        "of U-ViT-S/4's 13 blocks, as many as U-ViT-T has). Neither method is retrained for "
        "these rows (the paper also reports ToMe without retraining).", "",
        "Columns: **FLOP-ideal accel.** = share of the network's FLOPs skipped (ToMe: matching "
        "included), for reference; **measured accel.** = `1 - latency / latency(full)` of wall "
        "clock on this CPU, every row timed in one interleaved run (± bootstrap standard error "
        "over rounds); the block cost model is not used, since ToMe's cost is outside it; "
        "**latency / call** = mean over the sampler's calls of the median call time; **FID** = "
        "FID-MNIST (digit-classifier features, not comparable with the paper's Inception FIDs), "
        "mean ± std over seeds of common random numbers. **Matched acceleration** pairs each "
        "ToMe row with the ASE preset of nearest measured acceleration; a gap counts as beyond "
        "the seed std when it exceeds the larger std of the two rows.", "",
    ]
    sections = [arch_section(cells[a]) for a in TESTBEDS if a in cells]
    return Report("\n".join(lines + sections))


BENCHMARK = Benchmark(name="tome_vs_ase", doc=__doc__, params=Params,
                      keys=lambda params: list(params.arch), cell=run_arch, report=report,
                      version=2)


if __name__ == "__main__":
    run(BENCHMARK)
