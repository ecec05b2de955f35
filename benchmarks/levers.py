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
model at DDIM-``--reference-steps``. The verdict (:mod:`ase_search.verdict`) per architecture: the
headline speedup at matched FID within ``--window`` x the reference FID, each lever's best
speedup, and how much of the FID an exit costs each lever gives back. Run from the repository
root:

    python -m benchmarks.levers --threads 1

One cell of ``reports/levers.json`` per configuration (``dit/ddim-10/full``,
``dit/dpm-solver-10/full``, ``dit/ddim-14/D3/reuse2``) plus one cost model per architecture
(``dit/cost-model``); a cell is measured again when the weights change; a configuration whose
calls all run what an earlier one's run is not measured twice. Another lever is one more
``--levers`` name and one more case in :func:`lever_schedule`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import statistics
import sys
import time
from dataclasses import field
from typing import Any

from benchmarks._common import (
    TESTBED_TITLES,
    beyond_steps,
    check_testbeds,
    display_path,
    fid_cell,
    file_sha256,
    machine_text,
    testbed_report,
)
from benchmarks._runner import Benchmark, CellContext, Report, markdown_table, option, run
from benchmarks.exit_heads import summary as exit_heads_summary

SAMPLER = "ddim"  # the levers' sampler, and the reference's
# The steps-only solvers' names in labels (``full, DPM-Solver++-10``); the keys of
# ase_search.samplers.SAMPLERS otherwise.
SOLVER_TITLES = {"ddim": "DDIM", "dpm-solver": "DPM-Solver++"}
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
    batch_size: int = field(default=250, metadata=option("sampling batch"))
    latency_batch: int = field(default=256, metadata=option("batch the cost model is profiled at"))

    def __post_init__(self) -> None:
        check_testbeds(self.archs)
        for name in ("steps_only", "exit_steps"):
            values = getattr(self, name)
            if not values or min(values) < 1 or len(set(values)) != len(values):
                raise ValueError(f"--{name.replace('_', '-')} must be distinct step counts >= 1, "
                                 f"got {list(values)}")
        if self.reference_steps not in self.steps_only:
            raise ValueError(f"--reference-steps {self.reference_steps} must be one of "
                             f"--steps-only {list(self.steps_only)}")
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
        if not self.window >= 1:
            raise ValueError(f"--window must be >= 1, got {self.window}")
        if self.n < 2 or self.seeds < 1 or self.batch_size < 1 or self.latency_batch < 1:
            raise ValueError("--n must be >= 2; --seeds, --batch-size and --latency-batch >= 1")


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
    """What each call computes: ``"full"`` (a refresh, or every block) or (count, reuse?)."""
    from ase_search.measure import call_plan

    return tuple("full" if c.refresh or c.count == schedule.depth else (c.count, c.reuse)
                 for c in call_plan(schedule, sampler))


@functools.cache
def exit_depth(arch: str) -> int:
    return load(arch).exit_depth


@functools.cache
def weights_sha256(arch: str) -> str:
    from ase_search.testbed import TESTBEDS

    return file_sha256(TESTBEDS[arch].path)


def weights_identity(params: Params, key: str) -> dict[str, Any]:
    """A configuration's FIDs depend on the weights; the cost model does not."""
    arch, _, rest = key.partition("/")
    return {} if rest == COST else {"weights_sha256": weights_sha256(arch)}


@functools.cache
def load(arch: str) -> Any:
    """The testbed's base weights, loaded once per run."""
    from ase_search.testbed import load_model

    return load_model(arch)


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
    from ase_search.measure import blocks_per_call, measure_schedule
    from ase_search.metrics.latency import CostModel, profile_components
    from ase_search.samplers import SamplerConfig
    from ase_search.testbed import TESTBEDS

    arch, _, rest = key.partition("/")
    model = load(arch)
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
                         seeds=range(params.seeds), batch_size=params.batch_size,
                         cost_model=cost, keep_images=0)
    fids = [x["fid"] for x in m.metrics]
    print(f"{key}: FID {statistics.fmean(fids):.2f} "
          f"({' '.join(f'{f:.2f}' for f in fids)}), {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)
    return {"arch": arch, "name": name, "lever": lever or "full", "steps": steps,
            "sampler": sampler.to_dict(), "schedule": m.schedule.to_dict(),
            "blocks_per_call": blocks_per_call(m.schedule, sampler.model_times()),
            "fids": fids, "seeds": list(m.seeds), "n": params.n,
            "block_acceleration": m.block_acceleration, "seconds": m.seconds,
            "weights": display_path(TESTBEDS[arch].path), "weights_sha256": weights_sha256(arch),
            "command": ctx.command, "machine": machine_info()}


# ###################################################################### the report
def label(cell: dict[str, Any]) -> str:
    """``full, DDIM-10``, ``full, DPM-Solver++-10``, ``D1 reuse2, DDIM-10``."""
    solver = cell["sampler"]["name"]
    run = f"{SOLVER_TITLES.get(solver, solver)}-{cell['steps']}"
    if cell["name"] == "full":
        return f"full, {run}"
    return f"{cell['name']} {cell['lever']}, {run}"


def solver_of(p: Any) -> str:
    """The sampler part of a point's label: ``full, DPM-Solver++-10`` -> ``DPM-Solver++``."""
    return p.label.split(", ", 1)[1].rsplit("-", 1)[0]


def points(cells: dict[str, dict[str, Any]], arch: str, params: Params) -> list[Any]:
    """The architecture's configurations as PairedPoints, latency relative to the reference."""
    from ase_search.metrics.latency import CostModel
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule
    from ase_search.verdict import PairedPoint

    cost = CostModel.from_dict(cells[f"{arch}/{COST}"]["cost_model"])
    ref = cost.latency(None, SamplerConfig(SAMPLER, params.reference_steps).model_times())
    out = []
    for key, c in cells.items():
        if key.startswith(f"{arch}/") and not key.endswith(COST):
            seconds = cost.latency(ExitSchedule.from_dict(c["schedule"]),
                                   SamplerConfig.from_dict(c["sampler"]).model_times())
            out.append(PairedPoint(label(c), tuple(c["fids"]), seconds / ref))
    return out


def one_shot_summary(cells: dict[str, dict[str, Any]], arch: str,
                     params: Params) -> str | None:
    """The exits on the ``arch`` reference study's one-shot weights (``benchmarks.
    steps_vs_exits``' cache, issue #15, the same seeds and samples) against the steps-only front
    of the base weights here: what fine-tuning for exits buys against simply taking fewer steps.
    ``None`` until both hold their reference configuration."""
    from ase_search.metrics.latency import CostModel
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule
    from ase_search.verdict import PairedPoint, paired_speedup

    path = testbed_report("steps_vs_exits", arch).with_suffix(".json")
    if not path.is_file() or f"{arch}/{COST}" not in cells:
        return None
    shot = json.loads(path.read_text())["cells"]
    ref_key = f"{SAMPLER}-{params.reference_steps}/full"
    steps = [p for p in points(cells, arch, params) if p.label.startswith("full,")]
    base_ref = next((p for p in steps if p.label == f"full, DDIM-{params.reference_steps}"),
                    None)
    if "cost-model" not in shot or ref_key not in shot or base_ref is None:
        return None
    cost = CostModel.from_dict(shot["cost-model"]["cost_model"])
    unit = cost.latency(None, SamplerConfig(SAMPLER, params.reference_steps).model_times())
    exits = [PairedPoint(f"{c['name']}, DDIM-{c['steps']}", tuple(c["fids"]),
                         cost.latency(ExitSchedule.from_dict(c["schedule"]),
                                      SamplerConfig.from_dict(c["sampler"]).model_times()) / unit)
             for c in shot.values() if "fids" in c and c["name"] != "full"
             and len(c["fids"]) == len(base_ref.fids)]
    full = ", ".join(f"DDIM-{k} {statistics.fmean(shot[f'ddim-{k}/full']['fids']):.2f}"
                     for k in (5, 7, 10, 14, 20) if f"ddim-{k}/full" in shot)
    text = (f"On the one-shot fine-tuned {TESTBED_TITLES[arch]} weights "
            f"(`{display_path(path.with_suffix('.md'))}`, same seeds and samples) the full "
            f"model's FID-MNIST is {full}")
    if not exits:
        return text + "; no exit configuration is measured there yet."
    best = min(exits, key=lambda p: (p.fid, p.latency))
    limit = params.window * base_ref.fid
    text += (f"; its best exit configuration is {best.label} at {fid_cell(best)}, latency "
             f"{best.latency:.3f} ({best.fid / base_ref.fid:.2f}x the base weights' reference). "
             "Against the base weights' steps-only front above (what a user who does not exit "
             "samples with): ")
    beyond = beyond_steps(exits, steps)
    if beyond:
        return text + beyond[0].text() + "."
    matched = [(p, s) for p in exits if p.fid <= limit
               for s in [paired_speedup(p, steps)] if s is not None]
    if not matched:
        return text + f"no one-shot exit configuration comes within {params.window:g}x its FID."
    p, s = max(matched, key=lambda ps: (ps[1].speedup, -ps[0].fid))
    return text + (f"the largest speedup at matched FID of a one-shot exit configuration within "
                   f"{params.window:g}x its FID is {s.speedup:.2f}x, by {p.label} (FID "
                   f"{fid_cell(p)}) against {s.matched.label} (FID {fid_cell(s.matched)}).")


def figure(arch: str, pts: list[Any], steps: list[Any], joint: list[Any], ref_fid: float,
           window: float) -> Any:
    import plotly.graph_objects as go

    def sd(p: Any) -> float:
        return statistics.stdev(p.fids) if len(p.fids) > 1 else 0.0

    groups: dict[str, list[Any]] = {}
    for p in steps:  # one line per solver
        groups.setdefault(f"full, {solver_of(p)} (steps only)", []).append(p)
    for p in pts:
        if not p.label.startswith("full,"):
            groups.setdefault(p.label.split(",")[0], []).append(p)
    fig = go.Figure()
    for name, group in groups.items():
        group = sorted(group, key=lambda p: p.latency)
        fig.add_trace(go.Scatter(
            x=[p.latency for p in group], y=[p.fid for p in group], mode="lines+markers",
            name=name, error_y=dict(type="data", array=[sd(p) for p in group], visible=True),
            text=[p.label for p in group],
            hovertemplate="%{text}<br>latency %{x:.3f}<br>FID %{y:.2f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[p.latency for p in joint], y=[p.fid for p in joint],
                             mode="lines", line=dict(shape="hv", dash="dot", color="black"),
                             name="joint front"))
    fig.add_hline(y=window * ref_fid, line_dash="dash", line_color="grey",
                  annotation_text=f"{window:g} x reference FID (headline window)")
    fig.update_layout(title=f"{arch}: FID-MNIST (log) against predicted latency, base weights",
                      xaxis_title="predicted latency / full model at DDIM-20",
                      yaxis_title="FID-MNIST (mean over seeds, ± sd)", yaxis_type="log",
                      height=600)
    return fig


def arch_section(cells: dict[str, dict[str, Any]], arch: str, params: Params,
                 figs: list[Any]) -> tuple[list[str], str | None]:
    """The markdown of one architecture and its headline line (``None`` if not measurable)."""
    import pandas as pd

    from ase_search.verdict import SeedRatio, non_dominated, paired_headline, paired_speedup

    title = TESTBED_TITLES[arch]
    lines = [f"## {title}", ""]
    if f"{arch}/{COST}" not in cells:
        return lines + ["Not measured yet.", ""], None
    pts = points(cells, arch, params)
    by_label = {p.label: p for p in pts}
    ref_label = f"full, DDIM-{params.reference_steps}"
    if ref_label not in by_label:
        return lines + [f"The reference configuration ({ref_label}) is not measured yet.", ""], None
    ref = by_label[ref_label]
    configs = {label(c): c for k, c in cells.items()
               if k.startswith(f"{arch}/") and not k.endswith(COST)}
    steps = sorted((p for p in pts if p.label.startswith("full,")), key=lambda p: p.latency)
    lever_pts = [p for p in pts if not p.label.startswith("full,")]
    joint = non_dominated(pts)
    steps_front, joint_labels = non_dominated(steps), {p.label for p in joint}
    speedups = {p.label: paired_speedup(p, steps) for p in lever_pts}
    limit = params.window * ref.fid

    top = paired_headline(joint, steps, ref.fid, params.window)
    if top is None:
        head = (f"**headline** ({title}, base weights): no configuration within "
                f"{params.window:g}x the reference FID ({limit:.2f}) has a steps-only match.")
    else:
        lever_on_top = not top.point.label.startswith("full,")
        head = (f"**headline** ({title}, base weights): the largest speedup at matched FID within "
                f"FID <= {params.window:g} x the reference ({ref_label}, FID {ref.fid:.2f}) is "
                f"**{top.speedup:.2f}x**, by {top.point.label} (FID {fid_cell(top.point)}, "
                f"latency {top.point.latency:.3f}) against {top.matched.label} (FID "
                f"{fid_cell(top.matched)}, latency {top.matched.latency:.3f})"
                + ("" if lever_on_top else
                   ": a steps-only configuration, matched with itself; no lever beats fewer "
                   "steps") + f" (target of issue #16: {params.window:g}x).")
    # A lever point better in FID than every steps-only configuration has no match, so the
    # matched headline cannot count it; against the best steps-only one its speedup is a lower
    # bound (fewer steps never reach its FID at any latency).
    best_steps = min(steps, key=lambda q: (q.fid, q.latency))
    beyond = beyond_steps(lever_pts, steps)
    if beyond:
        head = (f"**headline** ({title}, base weights): {beyond[0].text()} (target of issue "
                f"#16: {params.window:g}x)."
                + ("" if top is None or top.point.label.startswith("full,") else
                   f" Among the configurations fewer steps can match, the largest speedup is "
                   f"{top.speedup:.2f}x ({top.point.label} against {top.matched.label})."))
    lines += [head, ""]

    # ---------------------------------------------------------------- each lever's best
    rows, best_of = [], {}
    for lever in dict.fromkeys(configs[p.label]["lever"] for p in lever_pts):
        mine = [p for p in lever_pts if configs[p.label]["lever"] == lever]
        # (point, speedup, exact?): an unmatched point's speedup is the lower bound above.
        inside = [(p, speedups[p.label].speedup, True) for p in mine
                  if p.fid <= limit and speedups[p.label] is not None]
        inside += [(p, best_steps.latency / p.latency, False) for p in mine
                   if speedups[p.label] is None and p.fid <= limit]
        best_in = max(inside, key=lambda ps: (ps[1], -ps[0].fid), default=None)
        matched = [(p, speedups[p.label]) for p in mine if speedups[p.label] is not None]
        best_any = max(matched, key=lambda ps: (ps[1].speedup, -ps[0].fid), default=None)
        closest = min(mine, key=lambda p: (p.fid, p.latency))
        best_of[lever] = best_in
        rows.append([
            lever,
            "–" if best_in is None else
            f"{'' if best_in[2] else '>= '}{best_in[1]:.2f}x: {best_in[0].label} "
            f"(FID {best_in[0].fid:.2f})",
            "–" if best_in is None else (
                "none" if best_in[1] >= params.window else f"{params.window / best_in[1]:.2f}x"),
            "–" if best_any is None else
            f"{best_any[1].speedup:.2f}x: {best_any[0].label} (FID {best_any[0].fid:.2f})",
            f"{closest.label}: {closest.fid:.2f} ({closest.fid / ref.fid:.2f}x), latency "
            f"{closest.latency:.3f}",
        ])
    lines += [
        "### Each lever's best", "",
        f"**in the window**: the largest speedup at matched FID among the lever's configurations "
        f"with FID <= {limit:.2f} (>=: a configuration better than every steps-only one, against "
        f"the best of them); **gap left**: how far that is from the {params.window:g}x "
        f"target; **anywhere**: the largest speedup at matched FID at any FID; **lowest FID**: "
        f"the lever's best quality (x the reference).", "",
        markdown_table(pd.DataFrame(rows, columns=[
            "lever", "in the window", "gap left", "anywhere", "lowest FID"]),
            align=["left", "left", "right", "left", "left"]), ""]
    if not beyond:  # the target missed: say how close each lever came
        head += " Each lever's best speedup at matched FID in the window: " + "; ".join(
            f"{lever} " + ("none in the window" if b is None else
                           f"{b[1]:.2f}x ({b[0].label}), {params.window / b[1]:.2f}x short")
            for lever, b in best_of.items()) + "."

    # ---------------------------------------------------------------- what reuse gives back
    full_at = {c["steps"]: by_label[k] for k, c in configs.items()
               if c["name"] == "full" and c["sampler"]["name"] == SAMPLER}
    levers = list(dict.fromkeys(c["lever"] for c in configs.values() if c["name"] != "full"))
    back_rows = []
    # From the cells, not the parameters: a report covers every run that filled the cache.
    exit_cells = [c for c in configs.values() if c["name"] != "full"]
    for name in dict.fromkeys(c["name"] for c in exit_cells):
        for k in sorted({c["steps"] for c in exit_cells if c["name"] == name}):
            skip = by_label.get(f"{name} skip, DDIM-{k}")
            if k not in full_at:
                continue
            row = [f"{name}, DDIM-{k}"]
            for lever in levers:
                p = by_label.get(f"{name} {lever}, DDIM-{k}")
                if p is None:
                    row.append("–")
                    continue
                ratio = SeedRatio.of(p.fids, full_at[k].fids)
                text = f"{ratio.text()} @ {p.latency / full_at[k].latency:.2f}"
                gap = None if skip is None else skip.fid - full_at[k].fid
                if lever != "skip" and gap and gap > 0:
                    text += f" ({(skip.fid - p.fid) / gap:.0%} back)"
                row.append(text)
            back_rows.append(row)
    if back_rows:
        lines += [
            "### What each lever costs against the full model at the same steps", "",
            "FID(lever) / FID(full) at the same DDIM steps, paired per seed (mean ± sd), @ its "
            "latency over the full model's at those steps; (x% back): the share of skip's FID "
            "excess over the full model that the lever removes; –: not measured, or the same "
            "calls as a lever to its left (at most two calls per interval, reuse3 is reuse2).",
            "",
            markdown_table(pd.DataFrame(back_rows, columns=[
                "preset, steps", *levers]), align=["left", *("right" for _ in levers)]), ""]

    # ---------------------------------------------------------------- every configuration
    rows = []
    for p in sorted(pts, key=lambda p: (p.latency, p.fid)):
        s = speedups.get(p.label)
        rows.append([
            p.label, fid_cell(p), f"{p.latency:.3f}",
            f"{configs[p.label]['block_acceleration']:.1%}",
            "yes" if p.label in {q.label for q in steps_front} else "",
            "yes" if p.label in joint_labels else "",
            "" if p.label.startswith("full,") else (
                "no match" if s is None else f"{s.speedup:.2f}x vs {s.matched.label}"),
            "" if s is None else s.ratio.text(),
        ])
    lines += [
        "### Every configuration", "",
        "Sorted by latency. FID: mean ± sd over seeds; **block share skipped**: exitable-block "
        "evaluations not run (a reuse refresh runs them all); **speedup at matched FID**: the "
        "latency of the cheapest steps-only configuration whose mean FID is no worse, over the "
        "point's; **FID / match**: per seed, paired.", "",
        markdown_table(pd.DataFrame(rows, columns=[
            "configuration", "FID-MNIST", "relative latency", "block share skipped",
            "steps-only front", "joint front", "speedup at matched FID", "FID / match"]),
            align=["left", "right", "right", "right", "center", "center", "left", "right"]), ""]
    lines += ["Steps-only front: " + ", ".join(
        f"{p.label} ({p.fid:.2f}, {p.latency:.2f})" for p in steps_front) + ".", "",
        "Joint front: " + ", ".join(
        f"{p.label} ({p.fid:.2f}, {p.latency:.2f})" for p in joint) + ".", ""]
    figs.append(figure(arch, pts, steps, joint, ref.fid, params.window))
    return lines, head


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    configs = [c for k, c in cells.items() if not k.endswith(COST)]
    if not configs:
        return Report("# Levers against fewer steps\n\nNo configuration measured yet.\n")
    first = configs[0]
    runs = list(dict.fromkeys(f"`{c['command']}`" for c in cells.values()))
    dates = sorted(c["machine"]["date"] for c in cells.values())
    minutes = sum(c["seconds"]["sampling"] + c["seconds"]["fid"] for c in configs) / 60
    costs = {k.split("/")[0]: c["cost_model"] for k, c in cells.items() if k.endswith(COST)}
    solvers = list(dict.fromkeys(SOLVER_TITLES.get(c["sampler"]["name"], c["sampler"]["name"])
                                 for c in configs if c["name"] == "full"))
    lines = [
        "# Levers against fewer steps: skip and block reuse on the testbeds",
        "",
        f"Written by `benchmarks/levers.py` from `{json_name}` (issue #16).",
        "",
        f"- Command: {'; '.join(runs)}",
        f"- Machine: {machine_text(first['machine'])}",
        f"- Date: {dates[0]} to {dates[-1]}; {minutes:.1f} min of sampling and FID",
        f"- Seeds: {', '.join(map(str, first['seeds']))} (common random numbers: the same labels "
        f"and noise for every configuration), {first['n']} samples each; FID-MNIST",
        "- Weights: the testbeds' base weights (no fine-tune; block reuse is training-free), "
        + "; ".join(f"`{c['weights']}` (sha256 {c['weights_sha256'][:12]})"
                    for c in {c["arch"]: c for c in configs}.values()),
        "- Latency: one cost model per architecture, profiled once ("
        + "; ".join(f"{a}: batch {c['batch_size']}, {c['device']}, "
                    f"{c['conditions'].get('threads')} thread(s), a full call "
                    f"{c['fixed'] + c['depth'] * c['block']:.3f} s" for a, c in costs.items())
        + "): the sum over the sampler's calls of the cost at each call's block count, a reuse "
        f"refresh at full depth; relative to the full model at DDIM-{params.reference_steps}",
        f"- Steps-only front: the full model with {' and '.join(solvers)} at each measured step "
        + ("count, one front over them" if len(solvers) > 1 else "count")
        + " (what issue #15's search spaces offer instead of exits: `search_spaces/<arch>.yaml`,"
        " `sampling:`)",
        "- Levers: `skip` (the paper's exits) and `reuse<r>` (block reuse with refresh period r "
        "in every exiting interval of the preset; see `ase_search/schedule.py`), at DDIM",
        "",
        "## Verdict",
        "",
    ]
    sections, figs, verdicts = [], [], []
    archs = list(dict.fromkeys(k.split("/")[0] for k in cells))  # every arch in the cache
    for arch in archs:
        section, head = arch_section(cells, arch, params, figs)
        sections += section
        if head is not None:
            lines += [head, ""]
            verdicts.append(head)
    for arch in archs:
        shot = one_shot_summary(cells, arch, params)
        if shot:
            lines += [shot, ""]
    for arch in archs:  # the exit-heads lever, benchmarks/exit_heads.py
        heads = exit_heads_summary(params.window, arch=arch)
        if heads:
            lines += [heads, ""]
    lines += sections
    return Report("\n".join(lines), figures=figs,
                  title="Levers against fewer steps on the testbeds",
                  html_intro="".join(f"<p>{line.replace('**', '')}</p>" for line in verdicts))


BENCHMARK = Benchmark(name="levers", doc=__doc__, params=Params, keys=keys, cell=measure,
                      report=report, cell_identity=weights_identity)


def main(argv: list[str] | None = None) -> None:
    run(BENCHMARK, argv)


if __name__ == "__main__":
    main()
