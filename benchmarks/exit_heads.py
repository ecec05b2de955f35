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
judged, as there, against the starting weights' steps-only ladder; then compares them with the
same configurations without exit heads (``--baseline``, that benchmark's cache for ``--arch`` on
the reference one-shot weights): each exit's FID over the full model's at the same steps, with and
without heads, and how much of the gap the heads close. Run from the repository root:

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
    check_testbeds,
    display_path,
    paired_ratio,
    ratio_text,
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
    """The section comparing each configuration with its twin without exit heads: FIDs and
    paired ratios (descriptive; the verdict judges the exits against the starting weights'
    ladder)."""
    import pandas as pd

    base = json.loads(Path(params.baseline).read_text())["cells"]
    heads = {steps_vs_exits.label(c): c for c in cells.values() if "fids" in c}
    plain = {steps_vs_exits.label(c): c for c in base.values() if "fids" in c}
    first = next(iter(plain.values()))
    lines = [
        "## With and without exit heads", "",
        f"Without heads: `{display_path(Path(params.baseline))}` (weights "
        f"`{first['weights']}`, sha256 {first['weights_sha256'][:12]}, the same seeds and "
        "samples). **FID / full**: the exit's FID over the fine-tuned model's at full depth at "
        "the same DDIM steps on the same weights, paired per seed (geometric mean, 95% "
        "interval); **gap closed**: the share of that ratio's excess over 1 without heads that "
        "the heads remove; **heads / no heads**: the same configuration's FID with heads over "
        "without.", ""]
    rows, closed = [], {}
    shared = sorted((lab for lab in heads if lab in plain),
                    key=lambda lab: (lab.startswith("full"), lab.split(",")[0],
                                     heads[lab]["steps"]))
    for lab in shared:
        h, b = heads[lab], plain[lab]
        full = f"full (fine-tuned), DDIM-{h['steps']}"
        row = [lab, fid(b), fid(h), "", "", "", ratio_text(h["fids"], b["fids"])]
        if not lab.startswith("full") and full in heads and full in plain:
            rh = paired_ratio(h["fids"], heads[full]["fids"]).ratio
            rb = paired_ratio(b["fids"], plain[full]["fids"]).ratio
            row[3:6] = [ratio_text(b["fids"], plain[full]["fids"]),
                        ratio_text(h["fids"], heads[full]["fids"]), "–"]
            if rb > 1:
                closed[lab] = (rb - rh) / (rb - 1)
                row[5] = f"{closed[lab]:.0%}"
        rows.append(row)
    lines += [markdown_table(pd.DataFrame(rows, columns=[
        "configuration", "FID, no heads", "FID, heads", "FID / full, no heads",
        "FID / full, heads", "gap closed", "heads / no heads"]),
        align=["left", "right", "right", "right", "right", "right", "right"]), ""]
    if closed:
        d1 = [v for lab, v in closed.items() if lab.startswith("D1,")]
        lines += [
            "Gap closed by the heads, mean over the exit configurations whose FID / full exceeds "
            "1 without heads: " + (f"D1 {statistics.fmean(d1):.0%}, " if d1 else "")
            + f"all {statistics.fmean(closed.values()):.0%} (0%: as without heads; 100%: the "
            "exit's FID equals the full model's at the same steps).", ""]
    return lines


def fid(cell: dict[str, Any]) -> str:
    sd = statistics.stdev(cell["fids"]) if len(cell["fids"]) > 1 else None
    return f"{statistics.fmean(cell['fids']):.2f}" + ("" if sd is None else f" ± {sd:.2f}")


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    inner = steps_vs_exits.report(cells, params, json_name, weights_name="the exit-heads weights")
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
    lines = [*head, *body[verdict:], "", *comparison(cells, params)]
    return Report("\n".join(lines) + "\n", figures=inner.figures,
                  title=f"Exit heads against fewer steps on the {params.title} testbed",
                  html_intro=inner.html_intro)


BENCHMARK = Benchmark(name="exit_heads", doc=__doc__, params=Params, keys=steps_vs_exits.keys,
                      cell=steps_vs_exits.measure, report=report,
                      cell_identity=steps_vs_exits.weights_identity,
                      out=lambda params: testbed_report("exit_heads", params.arch))


def main(argv: list[str] | None = None) -> None:
    run(BENCHMARK, argv)


if __name__ == "__main__":
    main()
