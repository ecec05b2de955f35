"""Levers that make skipped blocks cheap in quality, against fewer steps (reports/levers.md).

Issue #16's question on the DiT and U-ViT testbeds: an exit schedule only pays when a skipped
block costs little quality. Each *lever* is one way to run the blocks a schedule skips:

* ``skip``: the paper's; a skipped block adds nothing;
* ``reuse<r>``: block reuse with refresh period ``r`` in every exiting interval (training-free:
  see :mod:`ase_search.schedule`); a refresh call runs every block and is costed as a full call.

Block reuse needs no training, so it is measured on the testbed's base weights (``ase_search.
testbed``, no fine-tune) against the steps-only front on the same base weights, which is what a
user would do instead. All configurations use the same sample seeds (common random numbers, so
every comparison is paired seed by seed):

* steps-only: the full model with each of ``--steps-only-solvers`` (DDIM and DPM-Solver++ 2M, the
  samplers of issue #15's search spaces, ``search_spaces/<arch>.yaml``) at ``--steps-only`` steps
  (4 ... 20); their joint front is the steps-only front every lever is matched against;
* levers: the paper's presets ``--presets`` with each of ``--levers`` at DDIM with
  ``--exit-steps`` steps.

FID-MNIST over ``--seeds`` seeds of ``--n`` samples (:func:`ase_search.measure.measure_schedule`).
Latency is predicted by one cost model per architecture, profiled once (batch
``--latency-batch``): the sum over the sampler's calls of the cost of a call at its block count
(:func:`ase_search.measure.blocks_per_call`, a refresh counted at full depth), relative to the full
model at DDIM-``--reference-steps``. The verdict per architecture is
:func:`ase_search.verdict.judge`'s (through :func:`benchmarks._common.judge_cells`) on the
levers' points within ``--window`` x the reference FID against that ladder, with the exits of
``benchmarks.steps_vs_exits`` (one-shot weights) and ``benchmarks.exit_heads`` judged against the
same ladder; the tables add how much of the FID an exit costs each lever gives back. Run from the
repository root:

    python -m benchmarks.levers --threads 1

One cell of ``reports/levers.json`` per configuration (``dit/ddim-10/full``,
``dit/dpm-solver-10/full``, ``dit/ddim-14/D3/reuse2``) plus one cost model per architecture
(``dit/cost-model``); a cell is measured again when the weights change; a configuration whose
calls all run what an earlier one's run is not measured twice. Another lever is one more
``--levers`` name and one more case in :func:`lever_schedule`.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import sys
import time
from dataclasses import field
from typing import Any

from benchmarks import steps_vs_exits
from benchmarks._common import (
    SOLVER_TITLES,
    TESTBED_TITLES,
    Judged,
    check_ladder_params,
    check_testbeds,
    configuration,
    display_path,
    front_figure,
    front_text,
    judge_cells,
    ladder_from_cells,
    ladder_label,
    load_testbed,
    provenance,
    ratio_text,
    relative_latency,
    testbed_report,
    verdict_note,
    weights_sha256,
)
from benchmarks._runner import Benchmark, CellContext, Report, markdown_table, option, run

SAMPLER = "ddim"  # the levers' sampler, and the reference's
COST = "cost-model"
LEVER = re.compile(r"skip|reuse([1-9][0-9]*)")


@dataclasses.dataclass(frozen=True)
class Params:
    """Which configurations, measured how."""

    archs: tuple[str, ...] = field(default=("dit", "uvit"), metadata=option(
        "testbeds measured", identity=False))
    steps_only: tuple[int, ...] = field(default=(4, 5, 6, 7, 8, 10, 14, 20), metadata=option(
        "step counts of the full model, with each of --steps-only-solvers", identity=False))
    steps_only_solvers: tuple[str, ...] = field(default=("ddim", "dpm-solver"), metadata=option(
        "samplers of the steps-only front (ase_search.samplers names; ddim, the reference's, "
        "among them)", identity=False))
    exit_steps: tuple[int, ...] = field(default=(7, 10, 14, 20), metadata=option(
        "DDIM step counts of the presets with each lever", identity=False))
    presets: tuple[str, ...] = field(default=("D1", "D3", "D4"), metadata=option(
        "the paper's presets measured", identity=False))
    levers: tuple[str, ...] = field(default=("skip", "reuse2", "reuse3"), metadata=option(
        "how skipped blocks run: skip, or reuse<r> (block reuse, refresh period r)",
        identity=False))
    reference_steps: int = field(default=20, metadata=option(
        "the reference configuration: the full model at DDIM with this many steps",
        identity=False))
    window: float = field(default=1.25, metadata=option(
        "the headline counts points with FID <= window x the reference's", identity=False))
    n: int = field(default=500, metadata=option("samples per seed"))
    seeds: int = field(default=5, metadata=option("sample seeds 0..S-1 (common random numbers)"))
    first_seed: int = field(default=0, metadata=option(
        "the first sample seed (a replication on other seeds: --first-seed 5 --out ...)",
        identity=False))
    batch_size: int = field(default=250, metadata=option("sampling batch"))
    latency_batch: int = field(default=256, metadata=option("batch the cost model is profiled at"))

    def __post_init__(self) -> None:
        check_testbeds(self.archs)
        check_ladder_params(self)
        from ase_search.samplers import SAMPLER_NAMES
        from ase_search.schedule import preset_names

        solvers = self.steps_only_solvers
        if (any(s not in SAMPLER_NAMES for s in solvers) or len(set(solvers)) != len(solvers)
                or SAMPLER not in solvers):
            raise ValueError(f"--steps-only-solvers must be distinct names of "
                             f"{list(SAMPLER_NAMES)} including {SAMPLER} (the reference's), got "
                             f"{list(solvers)}")

        for arch in self.archs:
            bad = [p for p in self.presets if p not in preset_names(arch) or p == "full"]
            if bad:
                raise ValueError(f"--presets {bad} are not {arch} presets; choose from "
                                 f"{[p for p in preset_names(arch) if p != 'full']}")
        bad = [lv for lv in self.levers if not LEVER.fullmatch(lv)]
        if bad or len(set(self.levers)) != len(self.levers):
            raise ValueError(f"--levers must be distinct names 'skip' or 'reuse<r>' (r >= 1), "
                             f"got {list(self.levers)}")


def keys(params: Params) -> list[str]:
    """The cells, less any configuration whose every call runs what an earlier one at the same
    steps runs (e.g. ``reuse3`` with at most two calls per interval is ``reuse2``): its samples
    would be the same bit for bit."""
    from ase_search.samplers import SamplerConfig

    out = []
    for arch in params.archs:
        depth = exit_depth(arch)
        out += [f"{arch}/{COST}", *(f"{arch}/{solver}-{k}/full"
                                    for solver in params.steps_only_solvers
                                    for k in params.steps_only)]
        seen = {(k, ("full",) * k) for k in params.steps_only}
        for name in params.presets:
            for lever in params.levers:
                for k in params.exit_steps:
                    calls = plan_signature(lever_schedule(name, lever, arch, depth),
                                           SamplerConfig(SAMPLER, k))
                    if (k, calls) not in seen:
                        seen.add((k, calls))
                        out.append(f"{arch}/ddim-{k}/{name}/{lever}")
    return out


def plan_signature(schedule: Any, sampler: Any) -> tuple[Any, ...]:
    """What each call computes: ``"full"`` (a refresh, or every block) or (count, reuse?), as
    :func:`ase_search.record.config_identity` has it."""
    from ase_search.record import config_identity

    return config_identity(sampler.to_dict(), schedule.to_dict())[-1]


def exit_depth(arch: str) -> int:
    return load_testbed(arch).exit_depth


def base_sha256(arch: str) -> str:
    from ase_search.testbed import TESTBEDS

    return weights_sha256(TESTBEDS[arch].path)


def weights_identity(params: Params, key: str) -> dict[str, Any]:
    """A configuration's FIDs depend on the weights; the cost model does not."""
    arch, _, rest = key.partition("/")
    seeds = {"first_seed": params.first_seed} if params.first_seed else {}  # caches before it: 0
    return {} if rest == COST else {"weights_sha256": base_sha256(arch), **seeds}


def lever_schedule(name: str, lever: str, arch: str, depth: int) -> Any:
    """Preset ``name`` run with ``lever``."""
    from ase_search.schedule import preset

    schedule = preset(name, arch, depth)
    match = LEVER.fullmatch(lever)
    assert match is not None  # checked in Params
    return schedule if lever == "skip" else schedule.with_reuse(int(match.group(1)))


def measure(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """One cell: an architecture's cost model, or one configuration's FIDs over the seeds."""
    from ase_search.evaluate import machine_info
    from ase_search.callplan import blocks_per_call
    from ase_search.measure import measure_schedule
    from ase_search.metrics.latency import CostModel, profile_components
    from ase_search.samplers import SamplerConfig
    from ase_search.testbed import TESTBEDS

    arch, _, rest = key.partition("/")
    model = load_testbed(arch)
    if rest == COST:
        t0 = time.perf_counter()
        cost = profile_components(model, batch_size=params.latency_batch)
        return {"cost_model": cost.to_dict(), "seconds": time.perf_counter() - t0,
                "command": ctx.command, "machine": machine_info()}
    sampler_text, _, config = rest.partition("/")
    name, _, lever = config.partition("/")
    solver, _, steps_text = sampler_text.rpartition("-")  # "dpm-solver-10"
    steps = int(steps_text)
    sampler = SamplerConfig(solver, steps)
    schedule = None if name == "full" else lever_schedule(name, lever, arch, model.exit_depth)
    cost = CostModel.from_dict(ctx.cells[f"{arch}/{COST}"]["cost_model"])
    t0 = time.perf_counter()
    m = measure_schedule(model, schedule, sampler=sampler, n=params.n,
                         seeds=range(params.first_seed, params.first_seed + params.seeds),
                         batch_size=params.batch_size, cost_model=cost, keep_images=0)
    fids = [x["fid"] for x in m.metrics]
    print(f"{key}: FID {statistics.fmean(fids):.2f} "
          f"({' '.join(f'{f:.2f}' for f in fids)}), {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)
    return {"arch": arch, "name": name, "lever": lever or "full", "steps": steps,
            "sampler": sampler.to_dict(), "schedule": m.schedule.to_dict(),
            "blocks_per_call": blocks_per_call(m.schedule, sampler.model_times()),
            "fids": fids, "seeds": list(m.seeds), "n": params.n,
            "block_acceleration": m.block_acceleration, "seconds": m.seconds,
            "weights": display_path(TESTBEDS[arch].path), "weights_sha256": base_sha256(arch),
            "command": ctx.command, "machine": machine_info()}


# ###################################################################### the report
LEVERS = "skip and block reuse"  # the candidates' name in the verdict's words


def label(cell: dict[str, Any]) -> str:
    """``full, DDIM-10``, ``full, DPM-Solver++-10``, ``D1 reuse2, DDIM-10``."""
    if cell["name"] == "full":
        return ladder_label(cell)
    return f"{cell['name']} {cell['lever']}, {SOLVER_TITLES[SAMPLER]}-{cell['steps']}"


def arch_verdict(cells: dict[str, dict[str, Any]], arch: str,
                 params: Params) -> tuple[Judged, list[Any], list[Any]] | None:
    """The ``arch`` levers' points judged against its steps-only ladder, with the ladder and the
    points; ``None`` until the cost model and the reference configuration are cached."""
    found = ladder_from_cells(cells, arch, params.reference_steps)
    if found is None:
        return None
    ladder, ref = found
    cost = cells[f"{arch}/{COST}"]["cost_model"]
    points = [configuration(label(c), c, relative_latency(cost, c, params.reference_steps))
              for k, c in cells.items()
              if k.startswith(f"{arch}/") and "fids" in c and c["name"] != "full"]
    judged = judge_cells(points, ladder, ref, lever=LEVERS, window=params.window)
    return judged, ladder, points


def arch_section(cells: dict[str, dict[str, Any]], arch: str, params: Params,
                 figs: list[Any]) -> tuple[list[str], list[str] | None]:
    """The markdown of one architecture and its verdict paragraph (``None`` if not judged)."""
    import pandas as pd

    from ase_search.verdict import non_dominated

    title = TESTBED_TITLES[arch]
    lines = [f"## {title}", ""]
    found = arch_verdict(cells, arch, params)
    if found is None:
        return lines + [f"The cost model or the reference configuration (full, DDIM-"
                        f"{params.reference_steps}) is not measured yet.", ""], None
    judged, ladder, points = found
    verdict = judged.markdown(f"{title}, {LEVERS} on the base weights")
    ref = judged.verdict.reference
    configs = {label(c): c for k, c in cells.items() if k.startswith(f"{arch}/") and "fids" in c}
    by_label = {p.label: p for p in [*ladder, *points]}

    # ---------------------------------------------------------------- each lever
    rows = []
    for lever in dict.fromkeys(configs[p.label]["lever"] for p in points):
        mine = [p for p in points if configs[p.label]["lever"] == lever]
        judged_mine = [j for j in judged.verdict.judgements if j.point in mine]
        lowest = min(mine, key=lambda p: (p.fid, p.latency.value))
        rows.append([lever, f"{len(judged_mine)} of {len(mine)}",
                     "–" if not judged_mine else
                     f"{judged_mine[0].point.label}: {judged.word(judged_mine[0].point.label)}",
                     f"{lowest.label}: {lowest.fid:.2f} ({lowest.fid / ref.fid:.2f}x), latency "
                     f"{lowest.latency.value:.3f}"])
    lines += [
        "### Each lever", "",
        f"**in the window**: the lever's configurations with FID <= {params.window:g} x the "
        f"reference's ({params.window * ref.fid:.2f}), the rule's candidates; **its best by the "
        "rule**: the first of them in the verdict's order (largest discounted speedup at matched "
        "FID; those beyond or below the ladder, which get no number, last); **lowest FID**: the "
        "lever's best quality (x the reference).", "",
        markdown_table(pd.DataFrame(rows, columns=[
            "lever", "in the window", "its best by the rule", "lowest FID"]),
            align=["left", "right", "left", "left"]), ""]

    # ---------------------------------------------------------------- what reuse gives back
    full_at = {c["steps"]: c for c in configs.values()
               if c["name"] == "full" and c["sampler"]["name"] == SAMPLER}
    exit_cells = [c for c in configs.values() if c["name"] != "full"]
    levers = list(dict.fromkeys(c["lever"] for c in exit_cells))
    back_rows = []
    # From the cells, not the parameters: a report covers every run that filled the cache.
    for name in dict.fromkeys(c["name"] for c in exit_cells):
        for k in sorted({c["steps"] for c in exit_cells if c["name"] == name}):
            if k not in full_at:
                continue
            full = by_label[label(full_at[k])]
            skip = by_label.get(f"{name} skip, DDIM-{k}")
            row = [f"{name}, DDIM-{k}"]
            for lever in levers:
                p = by_label.get(f"{name} {lever}, DDIM-{k}")
                if p is None:
                    row.append("–")
                    continue
                text = (f"{ratio_text(p.fids, full.fids)} @ "
                        f"{p.latency.value / full.latency.value:.2f}")
                gap = None if skip is None else skip.fid - full.fid
                if lever != "skip" and gap and gap > 0:
                    text += f" ({(skip.fid - p.fid) / gap:.0%} back)"
                row.append(text)
            back_rows.append(row)
    if back_rows:
        lines += [
            "### What each lever costs against the full model at the same steps", "",
            "FID(lever) / FID(full) at the same DDIM steps, paired per seed (geometric mean, 95% "
            "interval), @ its latency over the full model's at those steps; (x% back): the share "
            "of skip's FID excess over the full model that the lever removes; –: not measured, "
            "or the same calls as a lever to its left (at most two calls per interval, reuse3 is "
            "reuse2).", "",
            markdown_table(pd.DataFrame(back_rows, columns=["preset, steps", *levers]),
                           align=["left", *("right" for _ in levers)]), ""]

    # ---------------------------------------------------------------- every configuration
    steps_front = non_dominated(ladder)
    joint = non_dominated([*ladder, *points])
    on = {"steps": {p.label for p in steps_front}, "joint": {p.label for p in joint}}
    rows = [[p.label, p.fid_text(), f"{p.latency.value:.3f}",
             f"{configs[p.label]['block_acceleration']:.1%}",
             "yes" if p.label in on["steps"] else "", "yes" if p.label in on["joint"] else "",
             judged.word(p.label), judged.against(p.label)]
            for p in sorted([*ladder, *points], key=lambda p: (p.latency.value, p.fid))]
    lines += [
        "### Every configuration", "",
        "Sorted by latency. FID: mean ± sd over seeds; **block share skipped**: exitable-block "
        "evaluations not run (a reuse refresh runs them all); **vs fewer steps**: the rule's "
        "judgement of a lever's configuration in the quality window (`ase_search.verdict`: the "
        "discounted speedup at matched FID and the cheapest steps-only configuration it does not "
        "beat; beyond / below the ladder); **paired FID ratio**: against that configuration.", "",
        markdown_table(pd.DataFrame(rows, columns=[
            "configuration", "FID-MNIST", "relative latency", "block share skipped",
            "steps-only front", "joint front", "vs fewer steps", "paired FID ratio"]),
            align=["left", "right", "right", "right", "center", "center", "left", "left"]), "",
        front_text("Steps-only front", steps_front), "", front_text("Joint front", joint), ""]
    groups: dict[str, list[Any]] = {}
    for p in ladder:  # one line per solver
        groups.setdefault(p.label.rsplit("-", 1)[0] + " (steps only)", []).append(p)
    for p in points:
        groups.setdefault(p.label.split(",")[0], []).append(p)
    figs.append(front_figure(
        groups, joint, ref.fid, params.window,
        f"{arch}: FID-MNIST (log) against predicted latency, base weights",
        f"predicted latency / full model at DDIM-{params.reference_steps}"))
    return lines, verdict


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    configs = [c for k, c in cells.items() if "fids" in c]
    if not configs:
        return Report("# Levers against fewer steps\n\nNo configuration measured yet.\n")
    first = configs[0]
    minutes = sum(c["seconds"]["sampling"] + c["seconds"]["fid"] for c in configs) / 60
    costs = {k.split("/")[0]: c["cost_model"] for k, c in cells.items() if k.endswith(COST)}
    solvers = list(dict.fromkeys(SOLVER_TITLES.get(c["sampler"]["name"], c["sampler"]["name"])
                                 for c in configs if c["name"] == "full"))
    lines = [
        "# Levers against fewer steps: skip and block reuse on the testbeds",
        "",
        f"Written by `benchmarks/levers.py` from `{json_name}` (issue #16).",
        "",
        *provenance(cells, minutes),
        "- Weights: the testbeds' base weights (no fine-tune; block reuse is training-free), "
        + "; ".join(f"`{c['weights']}` (sha256 {c['weights_sha256'][:12]})"
                    for c in {c["arch"]: c for c in configs}.values()),
        "- Latency: one cost model per architecture, profiled once ("
        + "; ".join(f"{a}: batch {c['batch_size']}, {c['device']}, "
                    f"{c['conditions'].get('threads')} thread(s), a full call "
                    f"{c['fixed'] + c['depth'] * c['block']:.3f} s" for a, c in costs.items())
        + "): the sum over the sampler's calls of the cost at each call's block count, a reuse "
        f"refresh at full depth; relative to the full model at DDIM-{params.reference_steps}",
        f"- Steps-only ladder: the full model with {' and '.join(solvers)} at each measured step "
        "count (what issue #15's search spaces offer instead of exits: `search_spaces/<arch>."
        "yaml`, `sampling:`); every lever, and the exits of the fine-tuned weights below, is "
        "judged against it",
        "- Levers: `skip` (the paper's exits) and `reuse<r>` (block reuse with refresh period r "
        "in every exiting interval of the preset; see `ase_search/schedule.py`), at DDIM",
        verdict_note(),
        "",
        "## Verdict",
        "",
    ]
    sections, figs, heads = [], [], []
    archs = list(dict.fromkeys(k.split("/")[0] for k in cells))  # every arch in the cache
    for arch in archs:
        section, verdict = arch_section(cells, arch, params, figs)
        sections += section
        if verdict is not None:
            lines += verdict
            heads.append(verdict[0])
        title = TESTBED_TITLES[arch]
        for bench, weights in (("steps_vs_exits", "one-shot"), ("exit_heads", "exit-heads")):
            other = steps_vs_exits.cache_verdict(
                testbed_report(bench, arch).with_suffix(".json"), arch, params.window,
                f"{title}, exits on the {weights} weights")
            if other:
                lines += other
    lines += sections
    return Report("\n".join(lines), figures=figs,
                  title="Levers against fewer steps on the testbeds",
                  html_intro="".join(f"<p>{line.replace('**', '')}</p>" for line in heads))


BENCHMARK = Benchmark(name="levers", doc=__doc__, params=Params, keys=keys, cell=measure,
                      report=report, cell_identity=weights_identity)


def main(argv: list[str] | None = None) -> None:
    run(BENCHMARK, argv)


if __name__ == "__main__":
    main()
