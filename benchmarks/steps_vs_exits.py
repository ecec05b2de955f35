"""Do exit schedules beat simply taking fewer sampling steps? (reports/steps_vs_exits.md)

Issue #15's question on a testbed (``--arch``: DiT-T, the default, or U-ViT-T), measured on the
one-shot weights of its reference study (``studies/reference/<arch>-one-shot-<key12>
.safetensors``; ``python -m tools.reference_study --arch <arch> --weights-only`` rebuilds them).
Two families of configurations, all with DDIM and the same sample seeds (common random numbers, so
every comparison is paired seed by seed):

* the fine-tuned model's full depth at DDIM with ``--steps-only`` steps (4 ... 20);
* exits: the paper's presets ``--presets`` and searched schedules ``--trials`` (schedules of
  earlier reference studies, kept by value in :data:`SEARCHED`; DiT's trial 22 of the 2026-11-26
  fixed-sampler study, ``--trials 22``) at DDIM with ``--exit-steps`` steps.

FID-MNIST over ``--seeds`` seeds of ``--n`` samples (:func:`ase_search.measure.measure_schedule`).
Latency is predicted by one cost model profiled once per run (batch ``--latency-batch``): the sum
over the sampler's calls of the cost of a call at that call's block count, reported relative to
the full model at DDIM-``--reference-steps`` and in seconds per sample. The verdict
(:func:`ase_search.verdict.judge`, through :func:`benchmarks._common.judge_cells`) judges the
exits against the steps-only ladder of the **starting** weights, the shipped testbed a user who
does not exit samples with (DDIM and DPM-Solver++, ``reports/levers.json``: same seeds and
samples), never against the fine-tuned model's own full depth; the tables add the FID cost of
each exit level at each step count on the same weights. Run from the repository root:

    python -m benchmarks.steps_vs_exits --threads 1 --trials 22
    python -m benchmarks.steps_vs_exits --threads 1 --arch uvit

One cell of ``reports/steps_vs_exits.json`` (DiT; ``reports/steps_vs_exits-<arch>.json`` for
another testbed) per configuration (``ddim-10/full``, ``ddim-14/D3``, ``ddim-7/trial22``) plus one
for the cost model (``cost-model``); a cell is measured again when the weights change.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from dataclasses import field
from pathlib import Path
from typing import Any

from benchmarks._common import (
    TESTBED_TITLES,
    Judged,
    StartingLadder,
    check_ladder_params,
    check_testbeds,
    configuration,
    display_path,
    front_figure,
    judge_cells,
    load_testbed,
    ratio_text,
    reference_one_shot_weights,
    relative_latency,
    starting_ladder,
    testbed_report,
    verdict_note,
    provenance,
    weights_sha256,
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
        check_ladder_params(self)
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


def weights_identity(params: Params, key: str) -> dict[str, Any]:
    """A configuration's FIDs depend on the weights; the cost model does not."""
    if key == COST_KEY:
        return {}
    return {"weights_sha256": weights_sha256(weights_path(params))}


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
    model = load_testbed(params.arch, path)
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
    """``D1, DDIM-7``; the fine-tuned model at full depth: ``full (fine-tuned), DDIM-10``."""
    name = "full (fine-tuned)" if cell["name"] == "full" else cell["name"]
    return f"{name}, DDIM-{cell['steps']}"


def configurations(cells: dict[str, dict[str, Any]], reference_steps: int = 20) -> list[Any]:
    """Every configuration of a cache of this layout as the rule's Configuration, latency
    relative to the same weights' full model at DDIM-``reference_steps`` (its own cost model)."""
    cost = cells[COST_KEY]["cost_model"]
    return [configuration(label(c), c, relative_latency(cost, c, reference_steps))
            for c in cells.values() if "fids" in c]


def exits_verdict(cells: dict[str, dict[str, Any]], arch: str, window: float,
                  reference_steps: int = 20) -> tuple[Judged, StartingLadder] | None:
    """The exits of a cache of this layout judged against the ``arch`` starting weights' ladder
    (:func:`benchmarks._common.starting_ladder`); ``None`` while either is not cached."""
    start = starting_ladder(arch, reference_steps)
    if start is None or COST_KEY not in cells:
        return None
    exits = [c for c in configurations(cells, reference_steps)
             if not c.label.startswith("full (fine-tuned)")]
    return judge_cells(exits, start.ladder, start.reference, lever="exits", window=window), start


def cache_verdict(path: Path, arch: str, window: float, title: str) -> list[str] | None:
    """The verdict paragraph of the cache at ``path`` (this layout) against the starting
    weights' ladder, for reports/levers.md; ``None`` while either is not cached."""
    if not path.is_file():
        return None
    found = exits_verdict(json.loads(path.read_text())["cells"], arch, window)
    if found is None:
        return None
    return found[0].markdown(f"{title}, `{display_path(path.with_suffix('.md'))}`")


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str, *,
           weights_name: str = "the one-shot weights") -> Report:
    import pandas as pd

    from ase_search.verdict import compare_hypervolumes, non_dominated

    configs = {k: c for k, c in cells.items() if "fids" in c}
    if COST_KEY not in cells or not configs:
        return Report("# Exits against fewer steps\n\nNo configuration measured yet.\n")
    own = configurations(cells, params.reference_steps)
    by_label = {c.label: c for c in own}
    first = next(iter(configs.values()))
    cost = cells[COST_KEY]["cost_model"]
    full_call = cost["fixed"] + cost["depth"] * cost["block"]
    minutes = sum(c["seconds"]["sampling"] + c["seconds"]["fid"] for c in configs.values()) / 60
    lines = [
        f"# Exits against fewer steps on the {params.title} testbed", "",
        f"Written by `benchmarks/steps_vs_exits.py` from `{json_name}` (issue #15).", "",
        *provenance(cells, minutes),
        f"- Weights: `{first['weights']}` (sha256 {first['weights_sha256'][:12]}), "
        f"{first['weights_kind']}, shared by every configuration measured here",
        f"- Latency: predicted by one cost model profiled once "
        f"(batch {cost['batch_size']}, {cost['device']}, "
        f"{cost['conditions'].get('threads')} thread(s); a full call {full_call:.3f} s, one "
        f"block {cost['block']:.4f} s, the always-run parts {cost['fixed']:.4f} s): the sum over "
        "the sampler's calls of the cost at each call's block count, relative to the full model "
        f"at DDIM-{params.reference_steps}"]
    found = exits_verdict(cells, params.arch, params.window, params.reference_steps)
    judged, ladder = None, []
    if found is None:
        lines += [verdict_note(), "", "## Verdict", "",
                  f"No verdict yet: the steps-only ladder of the starting weights is not in "
                  f"`reports/levers.json`; `python -m benchmarks.levers --archs {params.arch}` "
                  f"measures it.", ""]
    exits = [c for c in own if not c.label.startswith("full (fine-tuned)")]
    if found is not None:
        judged, start = found
        ladder = list(start.ladder)
        lines += [f"- Steps-only ladder: {start.source}; the exits are judged against it, not "
                  f"against the fine-tuned model's own full depth", verdict_note(), "",
                  "## Verdict", "", *judged.markdown(f"{params.title}, exits on {weights_name}")]
        ref = start.reference
        joint = non_dominated([*ladder, *exits])
        hv = compare_hypervolumes(joint, non_dominated(ladder), (params.window * ref.fid, 1.0))
        lines += [f"Hypervolume up to (FID {params.window * ref.fid:.2f}, latency 1.0), a "
                  f"picture, not a claim: joint front of the ladder and the exits {hv.front:.3f}, "
                  f"the ladder's front {hv.baseline:.3f}.", ""]

    # ---------------------------------------------------------------- every configuration
    everything = [*ladder, *own]
    fronts = {"steps": {c.label for c in non_dominated(ladder)},
              "joint": {c.label for c in non_dominated([*ladder, *exits])}}
    starting = {c.label for c in ladder}
    rows = [[c.label, "starting" if c.label in starting else "fine-tuned", c.fid_text(),
             f"{c.latency.value:.3f}", "yes" if c.label in fronts["steps"] else "",
             "yes" if c.label in fronts["joint"] else "",
             "" if judged is None else judged.word(c.label),
             "" if judged is None else judged.against(c.label)]
            for c in sorted(everything, key=lambda c: (c.latency.value, c.fid))]
    lines += [
        "## Every configuration", "",
        "Sorted by latency (relative to each weights' own full DDIM-"
        f"{params.reference_steps}). FID: mean ± sd over seeds. **vs fewer steps**: the rule's "
        "judgement of an exit configuration in the quality window (`ase_search.verdict`: the "
        "discounted speedup at matched FID and the cheapest steps-only configuration it does not "
        "beat; beyond / below the ladder); **paired FID ratio**: against that configuration.", "",
        markdown_table(pd.DataFrame(rows, columns=[
            "configuration", "weights", "FID-MNIST", "relative latency", "steps-only front",
            "joint front", "vs fewer steps", "paired FID ratio"]),
            align=["left", "left", "right", "right", "center", "center", "left", "left"]), ""]

    # ---------------------------------------------------------------- why
    full_at = {c["steps"]: c for c in configs.values() if c["name"] == "full"}
    names = list(dict.fromkeys(c["name"] for c in configs.values() if c["name"] != "full"))
    steps = sorted({c["steps"] for c in configs.values() if c["name"] != "full"})
    why = []
    for name in names:
        at = {c["steps"]: c for c in configs.values() if c["name"] == name}
        shares = [c["block_acceleration"] for c in at.values()]
        why.append([name, f"{min(shares):.1%}" + ("" if max(shares) - min(shares) < 5e-4
                                                  else f" to {max(shares):.1%}"),
                    *(ratio_text(at[k]["fids"], full_at[k]["fids"])
                      if k in at and k in full_at else "–" for k in steps)])
    lines += [
        "## Why: the FID cost of each exit level at each step count", "",
        "FID(exit, DDIM-k) / FID(full, DDIM-k) on the same fine-tuned weights, paired per seed "
        "(geometric mean, 95% interval).", "",
        markdown_table(pd.DataFrame(why, columns=[
            "schedule", "block acceleration", *(f"DDIM-{k}" for k in steps)]),
            align=["left", "right", *("right" for _ in steps)]), ""]
    if params.reference_steps in full_at:
        ref_fids = full_at[params.reference_steps]["fids"]
        lines += [f"For comparison, the fine-tuned model's FID at full depth over its DDIM-"
                  f"{params.reference_steps}'s (paired): " + "; ".join(
                      f"DDIM-{k}: {ratio_text(full_at[k]['fids'], ref_fids)}"
                      for k in sorted(full_at) if k != params.reference_steps) + ".", ""]
    groups: dict[str, list[Any]] = {}
    for c in ladder:
        groups.setdefault(c.label.split(", ")[1].rsplit("-", 1)[0] + ", starting weights",
                          []).append(c)
    for c in own:
        groups.setdefault(c.label.split(", ")[0], []).append(c)
    own_ref = by_label.get(f"full (fine-tuned), DDIM-{params.reference_steps}", own[0])
    fig = front_figure(groups, non_dominated([*ladder, *exits]),
                       found[1].reference.fid if found else own_ref.fid, params.window,
                       "FID-MNIST (log) against predicted latency",
                       f"predicted latency / the weights' full model at DDIM-"
                       f"{params.reference_steps}")
    head = next((x for x in lines if x.startswith("**headline**")), "")
    return Report("\n".join(lines), figures=[fig],
                  title=f"Exits against fewer steps on the {params.title} testbed",
                  html_intro=f"<p>{head.replace('**', '')}</p>")


BENCHMARK = Benchmark(name="steps_vs_exits", doc=__doc__, params=Params, keys=keys, cell=measure,
                      report=report, cell_identity=weights_identity,
                      out=lambda params: testbed_report("steps_vs_exits", params.arch))


def main(argv: list[str] | None = None) -> None:
    run(BENCHMARK, argv)


if __name__ == "__main__":
    main()
