"""Do exit heads close the gap between exits and fewer steps? (reports/exit_heads.md)

Issue #16's exit-heads lever on a testbed (``--arch``: DiT-T, the default, or U-ViT-T). The
paper's models read every exit through the one shared output head; with exit heads
(``exit_heads=True``, :func:`ase_search.models.add_exit_heads`) each exit depth gets its own head
(DiT: its final layer; U-ViT: its norm, ``decoder_pred`` and final conv), started as a copy of the
shared one and trained by the one-shot fine-tune on the samples that exit there. The weights are
the reference study's one-shot recipe (same settings, seed and data as
``studies/reference/<arch>-one-shot-<key12>.safetensors``) on the testbed with exit heads,
``studies/reference/<arch>-exit-heads-one-shot-<key12>.safetensors``, made by ``python -m
tools.reference_study --arch <arch> --weights-only --exit-heads``.

On those weights this measures the configurations of :mod:`benchmarks.steps_vs_exits` (its
parameters, cells, verdict and tables: the full model at fewer DDIM steps and the paper's presets
at ``--exit-steps`` steps, no searched trial by default; same seeds, samples and cost model),
then compares them with the same configurations without exit heads (``--baseline``, that
benchmark's cache for ``--arch`` on the reference one-shot weights): each exit's FID over the full
model's at the same steps, with and without heads, and how much of the gap the heads close. Run
from the repository root:

    python -m benchmarks.exit_heads --threads 1
    python -m benchmarks.exit_heads --threads 1 --arch uvit --presets D1 D3 D4

One cell of ``reports/exit_heads.json`` (DiT; ``reports/exit_heads-<arch>.json`` for another
testbed) per configuration, as in ``reports/steps_vs_exits.json``.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import field
from pathlib import Path
from typing import Any

from benchmarks import steps_vs_exits
from benchmarks._common import (
    REFERENCE_STUDIES,
    TESTBED_TITLES,
    check_testbeds,
    display_path,
    fid_cell,
    testbed_report,
)
from benchmarks._runner import Benchmark, Report, markdown_table, option, run

EXIT_HEADS = "exit-heads"
# What an exit head is on each testbed, for the report (see the models' ``exit_heads``).
HEADS_TEXT = {
    "dit": "DiT-T with one final layer per exit depth 1..11 (each adaLN + linear, the cost of "
           "the shared final layer",
    "uvit": "U-ViT-T with one output head per decoder exit depth 1..5 (each norm, decoder_pred "
            "and final conv, the cost of the shared head",
}


def exit_heads_weights(arch: str) -> Path:
    """The reference study's one-shot recipe on the ``arch`` testbed with exit heads (a
    ValueError that says how to make them when they are missing)."""
    from tools.reference_study import exit_heads_weights as find

    return find(REFERENCE_STUDIES / f"{arch}.db")


@dataclasses.dataclass(frozen=True)
class Params(steps_vs_exits.Params):
    """steps_vs_exits' configurations, on the exit-heads weights, against its cache."""

    # The presets only: a trial number names another schedule once the reference study is rerun
    # (it was, as a joint study, after reports/steps_vs_exits.json measured its trial 22).
    trials: tuple[int, ...] = field(default=(), metadata=option(
        "searched schedules measured (steps_vs_exits.SEARCHED's numbers for --arch)",
        identity=False, parse=int))
    weights: str = field(default=EXIT_HEADS, metadata=option(
        f"'{EXIT_HEADS}' (the reference study's one-shot recipe on the testbed with exit heads) "
        "or a weights file", identity=False))
    baseline: str = field(default="", metadata=option(
        "the same configurations without exit heads (a steps_vs_exits cache; default: "
        "steps_vs_exits' cache for --arch)", identity=False))

    def __post_init__(self) -> None:
        check_testbeds((self.arch,))
        if self.weights == EXIT_HEADS:
            # Resolved here, once, so that steps_vs_exits' cells measure the file.
            object.__setattr__(self, "weights", str(exit_heads_weights(self.arch)))
        if not self.baseline:
            object.__setattr__(self, "baseline", str(
                testbed_report("steps_vs_exits", self.arch).with_suffix(".json")))
        super().__post_init__()
        if not Path(self.baseline).is_file():
            raise ValueError(f"--baseline {self.baseline} is not a file; run `python -m "
                             f"benchmarks.steps_vs_exits` first or pass its .json")


def comparison(cells: dict[str, dict[str, Any]], params: Params) -> list[str]:
    """The section comparing each configuration with its twin without exit heads."""
    import pandas as pd

    from ase_search.verdict import PairedPoint, SeedRatio, non_dominated, paired_speedup

    base = json.loads(Path(params.baseline).read_text())["cells"]
    heads_pts, _ = steps_vs_exits.points(cells, params)
    base_pts, _ = steps_vs_exits.points(
        {k: c for k, c in base.items() if k == steps_vs_exits.COST_KEY or "fids" in c}, params)
    heads_by, base_by = {p.label: p for p in heads_pts}, {p.label: p for p in base_pts}
    first = next(c for k, c in base.items() if k != steps_vs_exits.COST_KEY)
    lines = [
        "## With and without exit heads", "",
        f"Without heads: `{display_path(Path(params.baseline))}` (weights "
        f"`{first['weights']}`, sha256 {first['weights_sha256'][:12]}, the same seeds and "
        "samples). **FID / full**: the exit's FID over the full model's at the same DDIM steps "
        "on the same weights, paired per seed (mean ± sd); **gap closed**: the share of the "
        "excess over 1 without heads that the heads remove; **vs the no-heads front**: the "
        "speedup at matched FID against the steps-only configurations without heads (latencies "
        "relative to each run's own full DDIM-20, from its own cost model).", ""]
    base_steps = [p for p in base_pts if p.label.startswith("full,")]
    rows = []
    for name in params.exit_names:
        for k in params.exit_steps:
            lab, full = f"{name}, DDIM-{k}", f"full, DDIM-{k}"
            if not all(x in d for x in (lab, full) for d in (heads_by, base_by)):
                continue
            h, b = heads_by[lab], base_by[lab]
            rh = SeedRatio.of(h.fids, heads_by[full].fids)
            rb = SeedRatio.of(b.fids, base_by[full].fids)
            closed = (rb.mean - rh.mean) / (rb.mean - 1) if rb.mean > 1 else None
            s = paired_speedup(PairedPoint(h.label, h.fids, h.latency), base_steps)
            rows.append([lab, fid_cell(b), fid_cell(h),
                         rb.text(), rh.text(), "–" if closed is None else f"{closed:.0%}",
                         SeedRatio.of(h.fids, b.fids).text(),
                         "no match" if s is None else f"{s.speedup:.2f}x vs {s.matched.label}"])
    for k in params.steps_only:
        full = f"full, DDIM-{k}"
        if full in heads_by and full in base_by:
            rows.append([full, fid_cell(base_by[full]),
                         fid_cell(heads_by[full]), "", "", "",
                         SeedRatio.of(heads_by[full].fids, base_by[full].fids).text(), ""])
    lines += [markdown_table(pd.DataFrame(rows, columns=[
        "configuration", "FID, no heads", "FID, heads", "FID / full, no heads",
        "FID / full, heads", "gap closed", "heads / no heads", "vs the no-heads front"]),
        align=["left", "right", "right", "right", "right", "right", "right", "left"]), ""]
    closed = {r[0]: float(r[5].rstrip("%")) / 100 for r in rows if r[5] not in ("", "–")}
    if closed:
        d1 = [v for lab, v in closed.items() if lab.startswith("D1,")]
        lines += [
            "Gap closed by the heads, mean over the exit configurations: "
            + (f"D1 {statistics.fmean(d1):.0%}, " if d1 else "")
            + f"all {statistics.fmean(closed.values()):.0%} (0%: heads as good as none; 100%: "
            "the exit's FID equals the full model's at the same steps).", ""]
        change = {lab: SeedRatio.of(heads_by[lab].fids, base_by[lab].fids).mean - 1
                  for lab in heads_by if lab in base_by}
        exits = [v for lab, v in change.items() if not lab.startswith("full,")]
        full = [v for lab, v in change.items() if lab.startswith("full,")]
        if exits and full:
            lines += [
                f"With heads the exits' FID changes by {min(exits):+.0%} to {max(exits):+.0%} and "
                f"the full model's by {min(full):+.0%} to {max(full):+.0%} (paired means): "
                + ("the heads close part of the gap to the full model at equal steps."
                   if statistics.fmean(closed.values()) > 0 else
                   "the heads weights help the full model (whose final layer now trains on "
                   "full-depth samples only) more than the exits, so the gap to the steps-only "
                   "front does not close."), ""]
    heads_only = [dataclasses.replace(p, label=f"{p.label} (heads weights)") for p in heads_pts]
    both = non_dominated([*base_steps, *heads_only])
    lines += [
        "Joint front of the full model without heads at fewer steps, and every configuration on "
        "the heads weights: " + ", ".join(
            f"{p.label} ({p.fid:.2f}, {p.latency:.2f})" for p in both) + ".", ""]
    return lines


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    inner = steps_vs_exits.report(cells, params, json_name)
    body = inner.markdown.splitlines()
    if len(body) < 4 or steps_vs_exits.COST_KEY not in cells:
        return Report("# Exit heads against fewer steps\n\nNo configuration measured yet.\n")
    verdict = body.index("## Verdict") if "## Verdict" in body else len(body)
    head = [
        f"# Exit heads against fewer steps on the {params.title} testbed", "",
        f"Written by `benchmarks/exit_heads.py` from `{json_name}` (issue #16, exit heads): the "
        "configurations, verdict and tables of `benchmarks/steps_vs_exits.py` on the exit-heads "
        "weights, then a comparison with the same configurations without heads.", "",
        f"- Exit heads: {HEADS_TEXT[params.arch]}, so the cost model is unchanged), started as "
        "copies of the shared one, then the reference study's one-shot fine-tune (its settings, "
        "seed and data); made by `python -m tools.reference_study --arch "
        f"{params.arch} --weights-only --exit-heads`",
        *body[4:verdict]]
    rest = body[verdict:]
    lines = head + comparison(cells, params) + rest
    return Report("\n".join(lines) + "\n", figures=inner.figures,
                  title=f"Exit heads against fewer steps on the {params.title} testbed",
                  html_intro=inner.html_intro)


def summary(window: float, path: Path | None = None, baseline: Path | None = None, *,
            arch: str = "dit") -> str | None:
    """One paragraph on the exit-heads lever on ``arch`` for reports/levers.md, from this
    benchmark's cache and steps_vs_exits' (by default the testbed's ``reports/exit_heads*.json``
    and ``reports/steps_vs_exits*.json``; ``None`` until both hold the reference and D1)."""
    from ase_search.verdict import SeedRatio

    path = path or testbed_report("exit_heads", arch).with_suffix(".json")
    baseline = baseline or testbed_report("steps_vs_exits", arch).with_suffix(".json")
    if not (path.is_file() and baseline.is_file()):
        return None
    heads = json.loads(path.read_text())["cells"]
    base = json.loads(baseline.read_text())["cells"]
    ref = heads.get("ddim-20/full")
    d1 = sorted((c["steps"], c, base[k]) for k, c in heads.items()
                if k.endswith("/D1") and k in base and f"ddim-{c['steps']}/full" in heads)
    if ref is None or not d1:
        return None

    def ratios(cells: dict[str, Any], which: int) -> str:
        values = [SeedRatio.of(row[which]["fids"], cells[f"ddim-{row[0]}/full"]["fids"]).mean
                  for row in d1]
        return f"{min(values):.2f}-{max(values):.2f}"

    ref_fid = statistics.fmean(ref["fids"])
    exits = {steps_vs_exits.label(c): statistics.fmean(c["fids"]) for k, c in heads.items()
             if "fids" in c and not k.endswith("/full")}
    best = min(exits, key=exits.get)
    inside = sorted(k for k, v in exits.items() if v <= window * ref_fid)
    return (f"Exit heads ({TESTBED_TITLES[arch]}, `{display_path(path.with_suffix('.md'))}`: the "
            f"reference one-shot recipe with one output head per exit depth, same seeds and "
            f"samples): D1 at equal DDIM steps costs "
            f"{ratios(heads, 1)}x the full model's FID on the same weights, against "
            f"{ratios(base, 2)}x without heads; the best exit configuration is {best} at "
            f"{exits[best]:.2f} ({exits[best] / ref_fid:.2f}x the reference, full DDIM-20 at "
            f"{ref_fid:.2f}); "
            + (f"within {window:g}x the reference FID: {', '.join(inside)} (speedups at matched "
               f"FID in `{display_path(path.with_suffix('.md'))}`)." if inside else
               f"none comes within {window:g}x the reference FID."))


BENCHMARK = Benchmark(name="exit_heads", doc=__doc__, params=Params, keys=steps_vs_exits.keys,
                      cell=steps_vs_exits.measure, report=report,
                      cell_identity=steps_vs_exits.weights_identity,
                      out=lambda params: testbed_report("exit_heads", params.arch))


def main(argv: list[str] | None = None) -> None:
    run(BENCHMARK, argv)


if __name__ == "__main__":
    main()
