"""Levers against fewer steps, measured as list studies (reports/levers.md).

Issues #15 and #16's question on the DiT and U-ViT testbeds: does any way of running the blocks
an exit schedule skips beat simply taking fewer steps? Each *variant* is one list of
configurations (``benchmarks/lists/``) measured into an ordinary study per testbed by ``ase-search
run --configs`` (:func:`ase_search.search.run_search`):

* ``base``: the paper's presets D1, D3 and D4 at DDIM 7-20, skipping their blocks (``skip``) or
  reusing the skipped blocks' residual (block reuse at refresh period 2 or 3), on the testbed's
  base weights (block reuse is training-free: no fine-tune);
* ``one-shot``: the presets D1, D3, D4 and D6 skipping, at DDIM 7-20, on the one-shot weights of
  the shipped space (``search_spaces/<arch>.yaml``; the reference studies' weights, shipped);
* ``exit-heads``: the same on one-shot weights whose model has one output head per exit depth
  (:func:`ase_search.models.add_exit_heads`), trained by that fine-tune;
* ``peers``: the caching peers' schedules at their published settings (TaylorSeer, FORA, and on
  DiT Delta-DiT and an L2C-like pattern; :data:`ase_search.schedule.PEERS`) at DDIM-20 and
  DPM-Solver++ 5-20, training-free on the base weights (U-ViT: ``levers-peers-uvit.yaml``, the
  peers that address whole blocks, on its decoder blocks).

Every study measures its steps-only ladder (the full model on the base weights, DDIM and
DPM-Solver++ at the space's step counts), and ``--seeds`` fresh seeds of every configuration
(``confirm``, common random numbers; the study's own seed is never judged); the verdict is the
study's (:func:`ase_search.fronts.study_verdict`, the one rule) with the cost model's latency.
Run from the repository root:

    python -m benchmarks.levers --threads 1 [--only 'dit/*']

One cell per testbed and variant (``dit/base``): the study's verdict and table. The studies,
``studies/benchmarks/levers-<arch>-<variant>.db``, hold every measurement (``ase-search pareto``
reads them); an interrupted cell resumes where its study stopped.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import field
from pathlib import Path
from typing import Any

from benchmarks._common import (ROOT, TESTBED_TITLES, check_testbeds, display_path, machine_text,
                               weights_sha256, write_text)
from benchmarks._runner import Benchmark, CellContext, Report, markdown_table, option, run

LISTS = Path(__file__).resolve().parent / "lists"
STUDIES = ROOT / "studies" / "benchmarks"
# variant -> (list, fine-tune, exit heads, what it measures)
VARIANTS: dict[str, tuple[str, str, bool, str]] = {
    "base": ("levers-base.yaml", "none", False, "skip and block reuse on the base weights"),
    "one-shot": ("levers-exits.yaml", "one-shot", False, "exits on the one-shot weights"),
    "exit-heads": ("levers-exits.yaml", "one-shot", True, "exits on the exit-heads weights"),
    "peers": ("levers-peers.yaml", "none", False, "the caching peers at their settings"),
}
# a testbed's own list where the variant's does not suit it
ARCH_LISTS = {("uvit", "peers"): "levers-peers-uvit.yaml"}


@dataclasses.dataclass(frozen=True)
class Params:
    """Which studies, measured how."""

    archs: tuple[str, ...] = field(default=("dit", "uvit"), metadata=option(
        "testbeds measured", identity=False))
    variants: tuple[str, ...] = field(default=tuple(VARIANTS), metadata=option(
        "lists measured (base, one-shot, exit-heads, peers)", identity=False))
    n: int = field(default=500, metadata=option("samples per seed"))
    seeds: int = field(default=5, metadata=option("fresh seeds every configuration is "
                                                  "confirmed on"))
    batch_size: int = field(default=250, metadata=option("sampling batch"))
    latency_batch: int = field(default=256, metadata=option("batch the cost model is profiled at"))
    studies: Path = field(default=STUDIES, metadata=option(
        "the folder of the list studies", identity=False, parse=Path))

    def __post_init__(self) -> None:
        check_testbeds(self.archs)
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(f"--variants must name some of {list(VARIANTS)}, got "
                             f"{list(self.variants)}")
        if self.seeds < 2:
            raise ValueError(f"--seeds must be >= 2, got {self.seeds}")


def keys(params: Params) -> list[str]:
    return [f"{arch}/{variant}" for arch in params.archs for variant in params.variants]


def search_config(params: Params, key: str) -> Any:
    """The list study of cell ``key`` (its space written beside it for exit heads)."""
    import yaml

    from ase_search.search import SearchConfig
    from ase_search.testbed import TESTBEDS

    arch, variant = key.split("/")
    listed, finetune, heads, _ = VARIANTS[variant]
    listed = ARCH_LISTS.get((arch, variant), listed)
    space = TESTBEDS[arch].space
    if heads:
        data = yaml.safe_load(Path(space).read_text())
        space = params.studies / f"levers-{arch}-{variant}-space.yaml"
        params.studies.mkdir(parents=True, exist_ok=True)
        write_text(space, yaml.safe_dump({**data, "levers": {"exit_heads": True}},
                                         sort_keys=False))
    return SearchConfig(arch=arch, space=str(space), configs=str(LISTS / listed),
                        finetune=finetune, n_samples=params.n, batch_size=params.batch_size,
                        latency_batch=params.latency_batch, confirm=params.seeds, grid=0,
                        storage=str(params.studies / f"levers-{arch}-{variant}.db"))


def measure(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """One cell: run (or resume) its list study, then read its verdict."""
    import optuna

    from ase_search.evaluate import machine_info
    from ase_search.fronts import fronts_table, study_verdict, verdict_lines
    from ase_search.search import run_search

    config = search_config(params, key)
    started = time.perf_counter()
    run_search(config)
    study = optuna.load_study(study_name=config.resolved_study_name,
                              storage=f"sqlite:///{config.storage}")
    verdict = study_verdict(study)
    table = fronts_table(verdict)
    weights = Path(config.storage).parent / study.user_attrs["weights"]["path"]
    return {"study": display_path(Path(config.storage)), "verdict": verdict_lines(verdict),
            "table": table.astype(object).where(table.notna(), None).to_dict("records"),
            "seeds": list(verdict.seeds), "n": params.n, "weights": display_path(weights),
            "weights_sha256": weights_sha256(weights.resolve()),
            "minutes": (time.perf_counter() - started) / 60, "command": ctx.command,
            "machine": machine_info()}


def _row(r: dict[str, Any]) -> dict[str, Any]:
    fid = f"{r['fid']:.2f}" + (f" ± {r['fid_sd']:.2f}" if r["fid_sd"] is not None else "")
    fronts = "".join(c for c, k in (("S", "steps_only_front"), ("J", "joint_front")) if r[k])
    return {"configuration": r["configuration"], "FID": fid,
            "ms/sample": f"{r['ms_per_sample']:.2f}", "speedup": f"{r['speedup']:.2f}x",
            "fronts": fronts, "vs fewer steps": r["vs_fewer_steps"] or ""}


def _by_lever(table: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The levers' rows by lever: ``skip``, ``reuse<r>`` or a peer's preset."""
    from ase_search.schedule import PEERS

    levers: dict[str, list[dict[str, Any]]] = {}
    for r in table:
        if r["kind"] == "exit":
            last = r["configuration"].rsplit(" ", 1)[-1]
            levers.setdefault(last if last.startswith("reuse") or last in PEERS else "skip",
                              []).append(r)
    return levers


def _stops_paying(table: list[dict[str, Any]]) -> list[str]:
    """Per lever and sampler, the rule's word at each step count (where it would pay, if it
    does): the discounted speedup at matched FID in the quality window, else the FID."""
    import pandas as pd

    rows: dict[tuple[str, str], dict[int, str]] = {}
    for lever, rs in _by_lever(table).items():
        for r in rs:
            sampler, _, steps = r["configuration"].split(",", 1)[0].rpartition("-")
            word = r["vs_fewer_steps"] or f"FID {r['fid']:.2f}, outside"
            rows.setdefault((lever, sampler), {})[int(steps)] = word
    counts = sorted({k for words in rows.values() for k in words})
    frame = pd.DataFrame([[lever, sampler, *(words.get(k, "") for k in counts)]
                          for (lever, sampler), words in rows.items()],
                         columns=["lever", "sampler", *(f"{k} steps" for k in counts)])
    pays = [f"{lever} at {sampler}-{k}" for (lever, sampler), words in rows.items()
            for k, w in words.items()
            if w == "beyond the ladder" or (w.endswith("x") and float(w[:-1]) > 1)]
    return ["Where each lever stops paying: the rule's word on each lever at each step count "
            "(the discounted speedup at matched FID for a point in the quality window, else its "
            "FID). " + ("It pays at " + ", ".join(pays) + "." if pays else
                        "**It pays at no step count measured**: there is no step count below "
                        "which it stops paying, because it pays at none."), "",
            markdown_table(frame), ""]


def _levers_table(table: list[dict[str, Any]]) -> list[str]:
    """Per lever (skip, reuse<r>, a peer's preset): its configurations in the quality window
    (the rule's candidates) and its lowest FID."""
    import pandas as pd

    levers = _by_lever(table)
    rows = []
    for lever, rs in levers.items():
        best = min(rs, key=lambda r: r["fid"])
        window = sum(r["vs_fewer_steps"] is not None for r in rs)
        rows.append({"lever": lever, "in the window": f"{window} of {len(rs)}",
                     "lowest FID": f"{best['configuration']}: {best['fid']:.2f}, "
                                   f"{best['speedup']:.2f}x the reference's speed"})
    return ["Each lever: its configurations in the quality window and its lowest FID:", "",
            markdown_table(pd.DataFrame(rows)), ""]


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    import pandas as pd

    out = ["# Levers against fewer steps: list studies on the testbeds", "",
           f"Written by `benchmarks/levers.py` from `{json_name}` (issues #15, #16, #23, #24): "
           f"each testbed and variant is a list study (`ase-search run --configs "
           f"benchmarks/lists/...`), its steps-only ladder measured beside it, every "
           f"configuration confirmed on fresh seeds and judged by the one rule "
           f"(`ase_search/verdict.py`) with the cost model's latency or whole runs timed (each "
           f"section says which), relative to the full model at DDIM-20.", ""]
    for key, cell in cells.items():
        out.append(f"- `{key}`: `{cell['command']}` on {machine_text(cell['machine'])}, "
                   f"{cell['machine']['date']}, {cell['minutes']:.0f} min in its last run; judged on seeds "
                   f"{', '.join(map(str, cell['seeds']))}, {cell['n']} samples each, FID-MNIST")
    out.append("")
    for key, cell in cells.items():
        arch, variant = key.split("/")
        out += [f"## {TESTBED_TITLES[arch]}, {VARIANTS[variant][3]}", "",
                f"Study `{cell['study']}` (`ase-search pareto {cell['study']}`); weights "
                f"`{cell['weights']}` (sha256 {str(cell['weights_sha256'])[:12]}).", ""]
        out += [f"- {line}" for line in cell["verdict"]] + [""]
        out += _levers_table(cell["table"]) + _stops_paying(cell["table"])
        rows = [_row(r) for r in cell["table"]
                if r["kind"] == "steps-only" or r["vs_fewer_steps"] is not None
                or r["joint_front"]]
        out += ["Every steps-only configuration, and the levers' points in the quality window "
                "or on the joint front (S: steps-only front, J: joint front):", "",
                markdown_table(pd.DataFrame(rows)), ""]
    out += ["## Reading it", "",
            "The ladders of `dit/peers` and `uvit/base` hold the full model at FID-searched "
            "5-step timesteps (`ase-search confirm --timesteps studies/reference/timesteps/"
            "<arch>-*-5-fid.json`; calibration seed 10000, never judged): what a user of "
            "`ase-search timesteps` does instead of a lever (the other studies' ladders do not: "
            "a lever that loses to them loses to those too). A lever pays at a step count only "
            "where its table above says so.", "",
            "The studies' fresh seeds (1-5) overlap seeds 0-4, which the retired levers script "
            "judged: a claim first seen there is not replicated here. Judge other seeds alone "
            "for that: `ase-search confirm STUDY --seeds 13`, then `ase-search pareto STUDY "
            "--seeds 6-13`."]
    return Report("\n".join(out), title="Levers against fewer steps")


BENCHMARK = Benchmark(name="levers", doc=__doc__, params=Params, keys=keys, cell=measure,
                      report=report, version=2)


def main(argv: list[str] | None = None) -> None:
    run(BENCHMARK, argv)


if __name__ == "__main__":
    main()
