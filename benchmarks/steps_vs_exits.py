"""Do exit schedules beat simply taking fewer sampling steps? (reports/steps_vs_exits.md)

Issue #15's question on a testbed (``--arch``: DiT-T, the default, or U-ViT-T), measured on the
one-shot weights of its reference study (``studies/reference/<arch>-one-shot-<key12>
.safetensors``; ``python -m tools.reference_study --arch <arch> --weights-only`` rebuilds them).
Two families of configurations, all with DDIM and the same sample seeds (common random numbers, so
every comparison is paired seed by seed):

* steps-only: the full model at DDIM with ``--steps-only`` steps (4 ... 20);
* exits: the paper's presets ``--presets`` and searched schedules ``--trials`` (schedules of
  earlier reference studies, kept by value in :data:`SEARCHED`; DiT's trial 22 of the 2026-11-26
  fixed-sampler study, ``--trials 22``) at DDIM with ``--exit-steps`` steps.

FID-MNIST over ``--seeds`` seeds of ``--n`` samples (:func:`ase_search.measure.measure_schedule`).
Latency is predicted by one cost model profiled once per run (batch ``--latency-batch``): the sum
over the sampler's calls of the cost of a call at that call's block count, reported relative to
the full model at DDIM-``--reference-steps`` and in seconds per sample. The verdict
(:mod:`ase_search.verdict`): each exit point's speedup at matched FID over the steps-only points,
the headline within ``--window`` x the reference FID, the hypervolume of the joint front against
the steps-only one, and the FID cost of each exit level at each step count. Run from the
repository root:

    python -m benchmarks.steps_vs_exits --threads 1 --trials 22
    python -m benchmarks.steps_vs_exits --threads 1 --arch uvit

One cell of ``reports/steps_vs_exits.json`` (DiT; ``reports/steps_vs_exits-<arch>.json`` for
another testbed) per configuration (``ddim-10/full``, ``ddim-14/D3``, ``ddim-7/trial22``) plus one
for the cost model (``cost-model``); a cell is measured again when the weights change.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import sys
import time
from dataclasses import field
from pathlib import Path
from typing import Any

from benchmarks._common import (
    TESTBED_TITLES,
    beyond_steps,
    check_testbeds,
    display_path,
    fid_cell,
    file_sha256,
    machine_text,
    reference_one_shot_weights,
    testbed_report,
)
from benchmarks._runner import Benchmark, CellContext, Report, markdown_table, option, run

SAMPLER = "ddim"
COST_KEY = "cost-model"


@dataclasses.dataclass(frozen=True)
class Params:
    """Which configurations, measured how."""

    # Not part of a cell's identity: each testbed has its own cache file (testbed_report), and
    # its cells already depend on its weights' digest.
    arch: str = field(default="dit", metadata=option(
        "the testbed: dit (DiT-T) or uvit (U-ViT-T)", identity=False))
    steps_only: tuple[int, ...] = field(default=(4, 5, 6, 7, 8, 10, 14, 20), metadata=option(
        "DDIM step counts of the full model", identity=False))
    exit_steps: tuple[int, ...] = field(default=(7, 10, 14, 20), metadata=option(
        "DDIM step counts of the exit schedules", identity=False))
    presets: tuple[str, ...] = field(default=("D1", "D3", "D4", "D6"), metadata=option(
        "the paper's presets measured", identity=False))
    trials: tuple[int, ...] = field(default=(), metadata=option(
        "searched schedules measured (SEARCHED's numbers for --arch: dit 22, trial 22 of the "
        "2026-11-26 reference study)", identity=False, parse=int))
    reference_steps: int = field(default=20, metadata=option(
        "the reference configuration: the full model at DDIM with this many steps",
        identity=False))
    window: float = field(default=1.25, metadata=option(
        "the headline counts points with FID <= window x the reference's", identity=False))
    n: int = field(default=500, metadata=option("samples per seed"))
    seeds: int = field(default=5, metadata=option("sample seeds 0..S-1 (common random numbers)"))
    batch_size: int = field(default=250, metadata=option("sampling batch"))
    latency_batch: int = field(default=256, metadata=option("batch the cost model is profiled at"))
    weights: str = field(default="one-shot", metadata=option(
        "'one-shot' (the reference study's one-shot weights) or a weights file",
        identity=False))

    def __post_init__(self) -> None:
        check_testbeds((self.arch,))
        for name in ("steps_only", "exit_steps"):
            values = getattr(self, name)
            if not values or min(values) < 1 or len(set(values)) != len(values):
                raise ValueError(f"--{name.replace('_', '-')} must be distinct step counts >= 1, "
                                 f"got {list(values)}")
        if self.reference_steps not in self.steps_only:
            raise ValueError(f"--reference-steps {self.reference_steps} must be one of "
                             f"--steps-only {list(self.steps_only)}")
        from ase_search.schedule import preset_names

        bad = [p for p in self.presets if p not in preset_names(self.arch) or p == "full"]
        if bad:
            raise ValueError(f"--presets {bad}: choose from "
                             f"{[p for p in preset_names(self.arch) if p != 'full']}")
        known = sorted(SEARCHED.get(self.arch, {}))
        bad_trials = [t for t in self.trials if t not in known]
        if bad_trials:
            raise ValueError(f"--trials {bad_trials}: no searched {self.arch} schedule has that "
                             f"number; known: {known}")
        if not self.window >= 1:
            raise ValueError(f"--window must be >= 1, got {self.window}")
        if self.n < 2 or self.seeds < 1 or self.batch_size < 1 or self.latency_batch < 1:
            raise ValueError("--n must be >= 2; --seeds, --batch-size and --latency-batch >= 1")
        if self.weights == "one-shot":
            reference_one_shot_weights(self.arch)  # a ValueError that says how to rebuild them
        elif not Path(self.weights).is_file():
            raise ValueError(f"--weights {self.weights} is not a file; pass 'one-shot' or a "
                             f"weights file")

    @property
    def exit_names(self) -> list[str]:
        return [*self.presets, *(f"trial{t}" for t in self.trials)]

    @property
    def title(self) -> str:
        """The testbed's name in reports: ``DiT-T``, ``U-ViT-T``."""
        return TESTBED_TITLES[self.arch]


def weights_path(params: Params) -> Path:
    """The weights every configuration is measured on."""
    if params.weights == "one-shot":
        return reference_one_shot_weights(params.arch)
    return Path(params.weights)


def keys(params: Params) -> list[str]:
    return [COST_KEY,
            *(f"ddim-{k}/full" for k in params.steps_only),
            *(f"ddim-{k}/{name}" for name in params.exit_names for k in params.exit_steps)]


@functools.cache
def weights_sha256(path: Path) -> str:
    return file_sha256(path)


def weights_identity(params: Params, key: str) -> dict[str, Any]:
    """A configuration's FIDs depend on the weights; the cost model does not."""
    if key == COST_KEY:
        return {}
    return {"weights_sha256": weights_sha256(weights_path(params))}


@functools.cache
def load(arch: str, path: Path) -> Any:
    """The ``arch`` model on ``path``, loaded once per run."""
    from ase_search.testbed import load_model

    return load_model(arch, path)


# Searched schedules of earlier reference studies, per testbed, by the number their cells carry
# (``trial22``): the studies were re-run (issue #15's joint search), so their trial numbers now
# name other schedules. Each is (boundaries, blocks) on the testbed's exitable depth.
SEARCHED: dict[str, dict[int, tuple[tuple[float, ...], tuple[int, ...]]]] = {
    "dit": {
        # trial 22 of the 2026-11-26 fixed-sampler DiT reference study (the best at 30%+
        # acceleration), on DiT-T's 12 blocks
        22: ((0.0, 0.4, 0.5, 0.6, 0.9, 1.0), (12, 10, 8, 3, 1)),
    },
}


def trial_schedule(arch: str, number: int, depth: int) -> Any:
    """Searched schedule ``number`` of ``arch`` (a key of :data:`SEARCHED`)."""
    from ase_search.schedule import ExitSchedule

    known = SEARCHED.get(arch, {})
    if number not in known:
        raise ValueError(f"no searched {arch} schedule {number}; known: {sorted(known)}")
    boundaries, blocks = known[number]
    return ExitSchedule(arch, depth, boundaries, blocks, f"trial{number}")


def schedule_for(name: str, arch: str, depth: int) -> Any:
    from ase_search.schedule import preset

    if name.startswith("trial"):
        return trial_schedule(arch, int(name.removeprefix("trial")), depth)
    return preset(name, arch, depth)


def measure(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """One cell: the cost model, or one configuration's FIDs over the seeds."""
    from ase_search.evaluate import machine_info
    from ase_search.measure import blocks_per_call, measure_schedule
    from ase_search.metrics.latency import profile_components
    from ase_search.samplers import SamplerConfig

    path = weights_path(params)
    model = load(params.arch, path)
    if key == COST_KEY:
        t0 = time.perf_counter()
        cost = profile_components(model, batch_size=params.latency_batch)
        return {"cost_model": cost.to_dict(), "seconds": time.perf_counter() - t0,
                "command": ctx.command, "machine": machine_info()}
    steps_text, _, name = key.partition("/")
    steps = int(steps_text.removeprefix("ddim-"))
    sampler = SamplerConfig(SAMPLER, steps)
    schedule = None if name == "full" else schedule_for(name, params.arch, model.exit_depth)
    from ase_search.metrics.latency import CostModel

    cost = CostModel.from_dict(ctx.cells[COST_KEY]["cost_model"])
    t0 = time.perf_counter()
    m = measure_schedule(model, schedule, sampler=sampler, n=params.n,
                         seeds=range(params.seeds), batch_size=params.batch_size,
                         cost_model=cost, keep_images=0)
    fids = [x["fid"] for x in m.metrics]
    print(f"{key}: FID {statistics.fmean(fids):.2f} "
          f"({' '.join(f'{f:.2f}' for f in fids)}), {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)
    return {"name": name, "steps": steps, "sampler": sampler.to_dict(),
            "schedule": m.schedule.to_dict(), "blocks_per_call": blocks_per_call(
                m.schedule, sampler.model_times()),
            "fids": fids, "seeds": list(m.seeds), "n": params.n,
            "block_acceleration": m.block_acceleration, "seconds": m.seconds,
            "weights": display_path(path), "weights_sha256": weights_sha256(path),
            "weights_kind": ("the reference study's one-shot weights"
                             if params.weights == "one-shot" else "weights given with --weights"),
            "command": ctx.command, "machine": machine_info()}


# ###################################################################### the report
def label(cell: dict[str, Any]) -> str:
    return f"{cell['name']}, DDIM-{cell['steps']}"


def points(cells: dict[str, dict[str, Any]], params: Params) -> tuple[Any, dict[str, Any]]:
    """Every measured configuration as a PairedPoint with its latency relative to the reference;
    and the cost model's seconds per sample of each (by label)."""
    from ase_search.metrics.latency import CostModel
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule
    from ase_search.verdict import PairedPoint

    cost = CostModel.from_dict(cells[COST_KEY]["cost_model"])
    ref = cost.latency(None, SamplerConfig(SAMPLER, params.reference_steps).model_times())
    out, per_sample = [], {}
    for key, c in cells.items():
        if key == COST_KEY:
            continue
        seconds = cost.latency(ExitSchedule.from_dict(c["schedule"]),
                               SamplerConfig.from_dict(c["sampler"]).model_times())
        out.append(PairedPoint(label(c), tuple(c["fids"]), seconds / ref))
        per_sample[label(c)] = seconds / cost.batch_size
    return out, per_sample


def figures(steps: list[Any], exits: dict[str, list[Any]], joint: list[Any],
            ref_fid: float, window: float) -> list[Any]:
    """FID (log axis) against relative latency: steps-only, each exit schedule across its step
    counts, the joint front; then the FID cost of each exit level against steps."""
    import plotly.graph_objects as go

    def sd(p: Any) -> float:
        return statistics.stdev(p.fids) if len(p.fids) > 1 else 0.0

    fig = go.Figure()
    for name, pts in [("full (steps only)", steps), *exits.items()]:
        pts = sorted(pts, key=lambda p: p.latency)
        fig.add_trace(go.Scatter(
            x=[p.latency for p in pts], y=[p.fid for p in pts], mode="lines+markers", name=name,
            error_y=dict(type="data", array=[sd(p) for p in pts], visible=True),
            text=[p.label for p in pts], hovertemplate="%{text}<br>latency %{x:.3f}<br>"
                                                       "FID %{y:.2f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[p.latency for p in joint], y=[p.fid for p in joint],
                             mode="lines", line=dict(shape="hv", dash="dot", color="black"),
                             name="joint front"))
    fig.add_hline(y=window * ref_fid, line_dash="dash", line_color="grey",
                  annotation_text=f"{window:g} x reference FID (headline window)")
    fig.update_layout(title="FID-MNIST (log) against predicted latency, relative to full DDIM-20",
                      xaxis_title="predicted latency / full model at DDIM-20",
                      yaxis_title="FID-MNIST (mean over seeds, ± sd)", yaxis_type="log",
                      height=600)
    return [fig]


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    import pandas as pd

    from ase_search.verdict import (
        SeedRatio,
        compare_hypervolumes,
        non_dominated,
        paired_headline,
        paired_speedup,
    )

    if COST_KEY not in cells or len(cells) == 1:
        return Report("# Exits against fewer steps\n\nNo configuration measured yet.\n")
    pts, per_sample = points(cells, params)
    configs = {k: c for k, c in cells.items() if k != COST_KEY}
    by_label = {p.label: p for p in pts}
    steps = sorted((p for p in pts if p.label.startswith("full,")), key=lambda p: p.latency)
    exit_pts = [p for p in pts if not p.label.startswith("full,")]
    exits: dict[str, list[Any]] = {}
    for c in configs.values():
        if c["name"] != "full":
            exits.setdefault(c["name"], []).append(by_label[label(c)])
    ref_label = f"full, DDIM-{params.reference_steps}"
    steps_front = non_dominated(steps)
    joint_front = non_dominated(pts)
    joint_labels = {p.label for p in joint_front}
    steps_labels = {p.label for p in steps_front}

    first = next(iter(configs.values()))
    cost_cell = cells[COST_KEY]
    cost = cost_cell["cost_model"]
    full_call = cost["fixed"] + cost["depth"] * cost["block"]
    runs = list(dict.fromkeys(f"`{c['command']}`" for c in cells.values()))
    dates = sorted(c["machine"]["date"] for c in cells.values())
    sampling = sum(c["seconds"]["sampling"] + c["seconds"]["fid"] for c in configs.values())
    lines = [
        f"# Exits against fewer steps on the {params.title} testbed",
        "",
        f"Written by `benchmarks/steps_vs_exits.py` from `{json_name}` (issue #15).",
        "",
        f"- Command: {'; '.join(runs)}",
        f"- Machine: {machine_text(first['machine'])}",
        f"- Date: {dates[0]} to {dates[-1]}; {sampling / 60:.1f} min of sampling and FID",
        f"- Seeds: {', '.join(map(str, first['seeds']))} (common random numbers: the same labels "
        f"and noise for every configuration), {first['n']} samples each; FID-MNIST",
        f"- Weights: `{first['weights']}` (sha256 {first['weights_sha256'][:12]}), "
        f"{first['weights_kind']}, shared by every configuration",
        f"- Latency: predicted by one cost model profiled once "
        f"(batch {cost['batch_size']}, {cost['device']}, "
        f"{cost['conditions'].get('threads')} thread(s); a full call {full_call:.3f} s, one "
        f"block {cost['block']:.4f} s, the always-run parts {cost['fixed']:.4f} s): the sum over "
        "the sampler's calls of the cost at each call's block count, relative to the full model "
        f"at DDIM-{params.reference_steps} and in seconds per sample",
        "",
    ]
    if ref_label not in by_label:
        lines += [f"The reference configuration ({ref_label}) is not measured yet.", ""]
        return Report("\n".join(lines))
    ref = by_label[ref_label]

    # ---------------------------------------------------------------- the verdict first
    top = paired_headline(joint_front, steps, ref.fid, params.window)
    exit_speedups = {p.label: paired_speedup(p, steps) for p in exit_pts}
    in_window = [(p, s) for p in exit_pts if p.fid <= params.window * ref.fid
                 for s in [exit_speedups[p.label]] if s is not None]
    best_exit = max(in_window, key=lambda ps: (ps[1].speedup, -ps[0].fid), default=None)
    hv_ref = (params.window * ref.fid, 1.0)
    hv = compare_hypervolumes(joint_front, steps_front, hv_ref)
    lines += ["## Verdict", ""]
    if top is None:
        head = (f"**headline**: no configuration within {params.window:g}x the reference FID "
                f"({params.window * ref.fid:.2f}) has a steps-only match.")
    else:
        exit_on_top = not top.point.label.startswith("full,")
        head = (f"**headline**: the largest speedup at matched FID within FID <= "
                f"{params.window:g} x the reference ({ref_label}, FID {ref.fid:.2f}) is "
                f"**{top.speedup:.2f}x**, by {top.point.label} (FID {fid_cell(top.point)}, "
                f"latency {top.point.latency:.3f}) against {top.matched.label} (FID "
                f"{fid_cell(top.matched)}, latency {top.matched.latency:.3f})"
                + ("" if exit_on_top else
                   ": a steps-only configuration, matched with itself; no exit configuration "
                   "beats fewer steps") + " (target of issue #15: 1.25x).")
    # An exit better in FID than every steps-only configuration has no match, so the matched
    # headline cannot count it; its speedup has a lower bound instead.
    beyond = beyond_steps(exit_pts, steps)
    if beyond:
        head = (f"**headline**: {beyond[0].text()} (target of issue #15: 1.25x)."
                + ("" if top is None or top.point.label.startswith("full,") else
                   f" Among the configurations fewer steps can match, the largest speedup is "
                   f"{top.speedup:.2f}x ({top.point.label} against {top.matched.label})."))
    lines += [head, ""]
    if best_exit is not None:
        p, s = best_exit
        lines += [
            ("Of the exit configurations fewer steps can match, the best in that window is "
             if beyond else "The best exit configuration in that window is ")
            + f"{p.label}: FID {fid_cell(p)} at "
            f"latency {p.latency:.3f}, **{s.speedup:.2f}x** against {s.matched.label} (FID "
            f"{fid_cell(s.matched)}, latency {s.matched.latency:.3f}); per seed its FID is "
            f"{s.ratio.text()} x the match's "
            f"({'beyond' if s.ratio.exceeds_noise() else 'within'} the seed noise, 2 standard "
            "errors).", ""]
    elif exit_pts and min(p.fid for p in exit_pts) > params.window * ref.fid:
        p = min(exit_pts, key=lambda p: (p.fid, p.latency))
        lines += [
            f"No exit configuration reaches FID <= {params.window * ref.fid:.2f}; the best is "
            f"{p.label} at FID {fid_cell(p)} ({p.fid / ref.fid:.2f}x the reference) and latency "
            f"{p.latency:.3f}.", ""]
    helps = bool(beyond) or (top is not None and not top.point.label.startswith("full,")
                             and top.speedup > 1)
    lines += [
        f"Hypervolume (FID x relative latency, up to ({hv_ref[0]:.2f}, 1.0), i.e. inside the "
        f"headline's quality window and faster than the reference): joint front {hv.front:.3f}, "
        f"steps-only front {hv.baseline:.3f} (ratio {hv.ratio:.3f}).", "",
        ("**Exits help on this testbed**: " if helps else
         "**Exits do not help on this testbed**: ")
        + (("an exit configuration reaches a FID no step count reaches, faster than the best "
            "steps-only configuration." if beyond else
            "an exit configuration is on the joint front and faster than every steps-only "
            "configuration of its quality.") if helps else
           "at every quality in the window the full model with fewer DDIM steps is at least as "
           "fast as every exit configuration measured; the joint front's useful part is the "
           "steps-only front.")
        + ("" if helps or not any(exit_speedups.values()) else
           " Outside the window too, every exit configuration's speedup at matched FID is at "
           f"most {max(v.speedup for v in exit_speedups.values() if v):.2f}x."), ""]

    # ---------------------------------------------------------------- every configuration
    rows = []
    for p in sorted(pts, key=lambda p: (p.latency, p.fid)):
        s = exit_speedups.get(p.label)
        rows.append([
            p.label, fid_cell(p), f"{p.latency:.3f}", f"{per_sample[p.label] * 1e3:.2f}",
            "yes" if p.label in steps_labels else "",
            "yes" if p.label in joint_labels else "",
            "" if p.label.startswith("full,") else (
                "no match" if s is None else f"{s.speedup:.2f}x vs {s.matched.label}"),
            "" if s is None else s.ratio.text(),
            "" if s is None else " / ".join("–" if v is None else f"{v:.2f}"
                                            for v in s.per_seed_speedups),
        ])
    lines += [
        "## Every configuration", "",
        "Sorted by latency. FID: mean ± sd over seeds. **speedup at matched FID**: the latency of "
        "the cheapest steps-only configuration whose mean FID is no worse, over the point's "
        "(above 1: faster than fewer steps at that quality); **FID / match**: per seed, the "
        "point's FID over the match's, mean ± sd (paired); **per seed**: the match made on each "
        "seed's FIDs alone.", "",
        markdown_table(pd.DataFrame(rows, columns=[
            "configuration", "FID-MNIST", "relative latency", "ms / sample",
            "steps-only front", "joint front", "speedup at matched FID", "FID / match",
            "per-seed speedups"]),
            align=["left", "right", "right", "right", "center", "center", "left", "right",
                   "left"]), ""]
    lines += ["Steps-only front: " + ", ".join(
        f"{p.label} ({p.fid:.2f}, {p.latency:.2f})" for p in steps_front) + ".", "",
        "Joint front: " + ", ".join(
        f"{p.label} ({p.fid:.2f}, {p.latency:.2f})" for p in joint_front) + ".", ""]

    # ---------------------------------------------------------------- why
    full_at = {c["steps"]: by_label[label(c)] for c in configs.values() if c["name"] == "full"}
    why_rows = []
    for name, pts_ in exits.items():
        at = {int(p.label.rsplit("DDIM-", 1)[1]): p for p in pts_}
        shares = [configs[f"ddim-{k}/{name}"]["block_acceleration"] for k in at]
        row = [name, f"{min(shares):.1%}" + ("" if max(shares) - min(shares) < 5e-4
                                             else f" to {max(shares):.1%}")]
        for k in params.exit_steps:
            if k in at and k in full_at:
                r = SeedRatio.of(at[k].fids, full_at[k].fids)
                row.append(r.text())
            else:
                row.append("–")
        why_rows.append(row)
    lines += [
        "## Why: the FID cost of each exit level at each step count", "",
        "FID(exit, DDIM-k) / FID(full, DDIM-k), paired per seed (mean ± sd over seeds), on the "
        "same weights. An exit schedule can beat fewer steps only where this ratio is "
        "smaller than what the steps it saves would cost the full model "
        "(the steps-only rows above).", "",
        markdown_table(pd.DataFrame(why_rows, columns=[
            "schedule", "block acceleration", *(f"DDIM-{k}" for k in params.exit_steps)]),
            align=["left", "right", *("right" for _ in params.exit_steps)]), ""]
    steps_cost = [f"DDIM-{k}: {SeedRatio.of(full_at[k].fids, ref.fids).text()}"
                  for k in sorted(full_at)]
    lines += ["For comparison, the full model's FID over the reference's (paired): "
              + "; ".join(steps_cost) + ".", ""]
    ratios = [(SeedRatio.of(p.fids, full_at[int(p.label.rsplit("DDIM-", 1)[1])].fids), p)
              for p in exit_pts if int(p.label.rsplit("DDIM-", 1)[1]) in full_at]
    if ratios:
        r, p = min(ratios, key=lambda rp: rp[0].mean)
        cheap = min((q for q in steps if SeedRatio.of(q.fids, ref.fids).mean <= r.mean),
                    key=lambda q: q.latency, default=None)
        lines += [
            f"The cheapest exit in FID is {p.label}: {r.text()}x the full model's FID at the same "
            f"steps, for {1 - p.latency / full_at[int(p.label.rsplit('DDIM-', 1)[1])].latency:.0%}"
            " less latency. " + (
                f"No step count brings the full model's FID to {r.mean:.2f}x the reference's "
                "or below." if cheap is None else
                f"Fewer steps cost the full model less: {cheap.label} is "
                f"{SeedRatio.of(cheap.fids, ref.fids).text()}x the reference's FID for "
                f"{1 - cheap.latency:.0%} less latency."), ""]
    figs = figures(steps, exits, joint_front, ref.fid, params.window)
    return Report("\n".join(lines), figures=figs,
                  title=f"Exits against fewer steps on the {params.title} testbed",
                  html_intro=f"<p>{head.replace('**', '')}</p>")


BENCHMARK = Benchmark(name="steps_vs_exits", doc=__doc__, params=Params, keys=keys, cell=measure,
                      report=report, cell_identity=weights_identity,
                      out=lambda params: testbed_report("steps_vs_exits", params.arch))


def main(argv: list[str] | None = None) -> None:
    run(BENCHMARK, argv)


if __name__ == "__main__":
    main()
