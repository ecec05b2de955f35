"""Sample-quality bar of the shipped testbed models per sampler (reports/quality.md, .json).

Issue #4's bar: the digit classifier (temperature-calibrated, see README "FID on the testbed")
gives at least 90% of 1,000 samples a top-1 probability >= 0.9. This script measures that share
and FID-MNIST for the full model of each shipped testbed under several samplers, over sample seeds
0..S-1 (1,000 samples each, :func:`ase_search.measure.measure_sample_quality`), so the bar is
judged on a mean, not on one lucky seed. DDIM-20 is the search's sampler; DDPM-250 (ancestral,
with the learned variance) is the DiT paper's protocol for sample quality. Run from the
repository root:

    python -m benchmarks.quality --arch dit uvit --samplers ddim:20 ddpm:250 --seeds 5

One cell of ``reports/quality.json`` per model and sampler (``dit/ddim:20``), recomputed when
``--seeds`` or the model's weights change.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import field
from typing import Any

from ase_search.measure import QUALITY_N
from benchmarks._common import ROOT, file_sha256, machine_text, parse_samplers
from benchmarks._runner import Benchmark, CellContext, markdown_table, option, run

ARCHS = ("dit", "uvit")
BAR = 0.90


@dataclasses.dataclass(frozen=True)
class Params:
    """Which models and samplers, over how many sample seeds."""

    arch: tuple[str, ...] = field(default=ARCHS, metadata=option("testbed models",
                                                                 identity=False, choices=ARCHS))
    samplers: tuple[str, ...] = field(default=("ddim:20", "ddpm:250"), metadata=option(
        "NAME:STEPS, e.g. ddim:20 ddim:50 ddpm:250", identity=False))
    seeds: int = field(default=5, metadata=option("sample seeds 0..S-1"))

    def __post_init__(self) -> None:
        if len(parse_samplers(self.samplers)) != len(self.samplers):
            raise ValueError("--samplers entries are NAME:STEPS, e.g. ddim:20 ddpm:250")
        if self.seeds < 1:
            raise ValueError("--seeds must be >= 1")


def keys(params: Params) -> list[str]:
    return [f"{arch}/{spec}" for arch in params.arch for spec in params.samplers]


def weights_identity(params: Params, key: str) -> dict[str, Any]:
    """The digest of the shipped weights a cell measures."""
    from ase_search.testbed import TESTBEDS

    return {"weights_sha256": file_sha256(TESTBEDS[key.partition("/")[0]].path)}


def measure(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """One model under one sampler: the confident share and FID-MNIST per sample seed."""
    import sys

    from ase_search.evaluate import machine_info
    from ase_search.measure import measure_sample_quality
    from ase_search.testbed import TESTBEDS, load_model

    arch, _, spec = key.partition("/")
    weights = TESTBEDS[arch].path
    quality = measure_sample_quality(load_model(arch), sampler=parse_samplers((spec,))[0],
                                     seeds=range(params.seeds), n=QUALITY_N)
    print(f"{key}: confident {quality.confident:.1%}, FID {quality.fid:.2f}", file=sys.stderr,
          flush=True)
    return {"arch": arch, "sampler": spec, "model": TESTBEDS[arch].model_name,
            "weights": str(weights.relative_to(ROOT)), "weights_sha256": file_sha256(weights),
            "command": ctx.command, "machine": machine_info(),
            "fid": quality.fid, "fids": list(quality.fids),
            "confident": quality.confident, "confidents": list(quality.confidents)}


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> str:
    """One section per model: its weights, its runs and a row per sampler."""
    import pandas as pd

    lines = ["# Sample-quality bar of the testbed models", "",
             f"Written by `benchmarks/quality.py` from `{json_name}`. Full model, {QUALITY_N:,} "
             "samples per sample seed; **confident** = share the calibrated digit classifier "
             f"reads with top-1 >= 0.9 (issue #4's bar: {BAR:.0%}; 98.4% of real held-out digits "
             "pass it), mean over seeds with the per-seed values; FID-MNIST likewise.", ""]
    for arch in ARCHS:
        mine = [c for c in cells.values() if c["arch"] == arch]
        if not mine:
            continue
        runs = list(dict.fromkeys(
            f"`{c['command']}` on {machine_text(c['machine'])}" for c in mine))
        first = mine[0]
        lines += [f"## {arch}: {first['model']}", "",
                  f"Weights `{first['weights']}` (sha256 {first['weights_sha256'][:12]}); "
                  + "; ".join(runs) + ".", ""]
        rows = [[c["sampler"], f"{c['confident']:.1%}",
                 " / ".join(f"{v:.1%}" for v in c["confidents"]),
                 "yes" if c["confident"] >= BAR else "no",
                 f"{c['fid']:.2f} (sd "
                 f"{statistics.stdev(c['fids']) if len(c['fids']) > 1 else 0.0:.2f})"]
                for c in mine]
        lines += [markdown_table(
            pd.DataFrame(rows, columns=["sampler", "confident (mean)", "per seed",
                                        "meets the bar", "FID-MNIST (mean)"]),
            align=["left", "right", "left", "center", "right"]), ""]
    return "\n".join(lines)


BENCHMARK = Benchmark(name="quality", doc=__doc__, params=Params, keys=keys, cell=measure,
                      report=report, cell_identity=weights_identity)


if __name__ == "__main__":
    run(BENCHMARK)
