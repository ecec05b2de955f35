"""Searched against uniform DDIM timesteps on the testbeds (reports/timesteps.md, .json).

For each testbed and few-step count N, the full model samples with DDIM at its uniform timesteps
(leading, the project's default) and at the timesteps ``ase-search timesteps`` searches
(:mod:`ase_search.timesteps`: by the teacher distance, calibration seed 10000, and at the
``--fid-steps`` counts also by FID, ``--objective fid``, on selection seeds 10000-10001; both
apart from the measured seeds), on the same fresh seeds (500 samples each, FID-MNIST). The searched configuration at N steps is then judged
against the uniform ladder by the project's one rule (:func:`ase_search.verdict.judge_point`): the
cheapest uniform step count it does not beat is its match, and the speedup is the ratio of model
calls (the same network at every call; the sampler's own work is the same per call). Run from the
repository root:

    python -m benchmarks.timesteps --arch dit uvit --steps 3 4 5 6 8 10 --seeds 5

One cell per testbed, timesteps and step count (``dit/searched-5``, ``dit/fid-5``,
``dit/uniform-7``). With ``--diffusers``, the DiT testbed exported to diffusers samples the
searched counts again through the diffusers path (``sample_diffusers`` with the stock
scheduler, and at searched timesteps through ``timesteps=``): ``dit/fid-5@diffusers``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import statistics
from dataclasses import field
from typing import Any

from benchmarks._common import file_sha256, machine_text
from benchmarks._runner import (
    REPORTS,
    Benchmark,
    CellContext,
    Report,
    markdown_table,
    option,
    run,
)

ARCHS = ("dit", "uvit")
SOLVERS = ("ddim", "dpm-solver")
_NAMES = {"ddim": "DDIM", "dpm-solver": "DPM-Solver++"}
CALIBRATION_SEED = 10_000
N_SAMPLES = 500


@dataclasses.dataclass(frozen=True)
class Params:
    """Which testbeds and step counts, over which fresh seeds."""

    arch: tuple[str, ...] = field(default=ARCHS, metadata=option(
        "testbed models", identity=False, choices=ARCHS))
    steps: tuple[int, ...] = field(default=(3, 4, 5, 6, 8, 10), metadata=option(
        "searched step counts (the uniform ladder runs 3-12, 14, 20)", identity=False))
    seeds: int = field(default=5, metadata=option("fresh seeds 1..S"))
    grid: int = field(default=100, metadata=option("candidate timesteps of the search"))
    solvers: tuple[str, ...] = field(default=("ddim",), metadata=option(
        "samplers whose timesteps are compared", identity=False, choices=SOLVERS))
    fid_steps: tuple[int, ...] = field(default=(), metadata=option(
        "step counts whose timesteps are searched by FID too", identity=False, parse=int))
    trials: int = field(default=60, metadata=option(
        "FID measurements of that search (in the identity of its cells alone)", identity=False))
    diffusers: bool = field(default=False, metadata=option(
        "also sample DiT's searched counts, uniform and searched, through the diffusers path",
        identity=False))

    def __post_init__(self) -> None:
        if self.seeds < 2 or any(not 1 <= k <= 12 for k in self.steps):
            raise ValueError("--seeds must be >= 2 and --steps in [1, 12]")
        if any(not 2 <= k <= 12 for k in self.fid_steps) or self.trials < 2:
            raise ValueError("--fid-steps must lie in [2, 12] and --trials be >= 2")


LADDER = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 20)
DIFFUSERS = "@diffusers"  # a cell key's suffix: sampled through the diffusers path


def keys(params: Params) -> list[str]:
    """``dit/uniform-7`` (DDIM), ``dit/dpm-solver/searched-5`` (DPM-Solver++),
    ``dit/fid-5@diffusers`` (after the native cell it takes its timesteps from)."""
    native = [f"{arch}/{'' if solver == 'ddim' else solver + '/'}{kind}-{k}"
              for arch in params.arch for solver in params.solvers
              for kind, counts in (("uniform", LADDER), ("searched", params.steps),
                                   ("fid", params.fid_steps)) for k in counts]
    return native + [f"dit/{'' if solver == 'ddim' else solver + '/'}{kind}-{k}{DIFFUSERS}"
                     for solver in params.solvers
                     for kind, counts in (("uniform", sorted({*params.steps, *params.fid_steps})),
                                          ("searched", params.steps), ("fid", params.fid_steps))
                     for k in counts if params.diffusers and "dit" in params.arch]


def _parse(key: str) -> tuple[str, str, str, int]:
    """``(arch, solver, kind, steps)`` of a cell key."""
    arch, _, config = key.removesuffix(DIFFUSERS).partition("/")
    solver, _, config = config.rpartition("/")
    kind, _, count = config.partition("-")
    return arch, solver or "ddim", kind, int(count)


def weights_identity(params: Params, key: str) -> dict[str, Any]:
    from ase_search.testbed import TESTBEDS

    arch, _, kind, _ = _parse(key)
    return {"weights_sha256": file_sha256(TESTBEDS[arch].path),
            **({"trials": params.trials} if kind == "fid" else {})}


def measure(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """One testbed at N steps of a solver, uniform or searched: FID-MNIST per fresh seed."""
    import sys

    from ase_search.evaluate import machine_info
    from ase_search.measure import measure_schedule
    from ase_search.samplers import SamplerConfig
    from ase_search.testbed import load_model
    from ase_search.timesteps import fid_timesteps, search_timesteps

    if key.endswith(DIFFUSERS):
        return _through_diffusers(ctx.cells[key.removesuffix(DIFFUSERS)], ctx)
    arch, solver, kind, steps = _parse(key)
    model = load_model(arch)
    extra: dict[str, Any] = {}
    if kind in ("searched", "fid"):
        found = (search_timesteps(model, steps, sampler=solver, grid=params.grid,
                                  seed=CALIBRATION_SEED)
                 if kind == "searched" else
                 fid_timesteps(model, steps, sampler=solver, trials=params.trials, n=N_SAMPLES,
                               seeds=(CALIBRATION_SEED, CALIBRATION_SEED + 1),
                               progress=lambda line: print(line, file=sys.stderr, flush=True))
                 )[steps]
        sampler = found.sampler_config()
        extra = {"timesteps": list(found.timesteps), "cost": found.cost,
                 "uniform_cost": found.uniform_cost}
    else:
        sampler = SamplerConfig(solver, steps)
        extra = {"timesteps": [int(s) for s in sampler.model_times()]}
    m = measure_schedule(model, None, sampler=sampler, n=N_SAMPLES,
                         seeds=range(1, params.seeds + 1))
    fids = [row["fid"] for row in m.metrics]
    print(f"{key}: FID {statistics.fmean(fids):.2f} {extra['timesteps']}", file=sys.stderr,
          flush=True)
    return {"arch": arch, "solver": solver, "kind": kind, "steps": steps, "fids": fids,
            "seeds": list(range(1, params.seeds + 1)), "command": ctx.command,
            "machine": machine_info(), **extra}


@functools.cache
def _exported_dit() -> Any:
    """The DiT testbed exported to diffusers, once per run."""
    import tempfile
    from pathlib import Path

    from ase_search.integrations.diffusers import export_dit
    from ase_search.testbed import load_model

    folder = Path(tempfile.mkdtemp(prefix="ase-timesteps-")) / "dit"
    export_dit(load_model("dit"), folder, source="the shipped dit testbed")
    return folder


def _through_diffusers(native: dict[str, Any], ctx: CellContext) -> dict[str, Any]:
    """``native``'s configuration sampled by the DiT testbed exported to diffusers: the stock
    scheduler for uniform timesteps, ``timesteps=`` (``load_scheduler(explicit=True)``) for
    searched ones, on the same seeds."""
    import sys

    from ase_search.evaluate import machine_info
    from ase_search.integrations.diffusers import (
        load_scheduler,
        load_transformer,
        measure_diffusers,
    )

    folder = _exported_dit()
    uniform = native["kind"] == "uniform"
    m = measure_diffusers(load_transformer(folder),
                          load_scheduler(folder, _solver(native), explicit=not uniform), None,
                          steps=native["steps"], n=N_SAMPLES, seeds=native["seeds"],
                          reference="mnist", timesteps=None if uniform else native["timesteps"])
    fids = [row["fid"] for row in m.metrics]
    print(f"{native['arch']}/{_solver(native)}/{native['kind']}-{native['steps']}{DIFFUSERS}: "
          f"FID {statistics.fmean(fids):.2f}", file=sys.stderr, flush=True)
    return {"arch": native["arch"], "solver": _solver(native), "kind": native["kind"],
            "steps": native["steps"], "seeds": native["seeds"],
            "timesteps": native["timesteps"], "path": "diffusers", "fids": fids,
            "native_fids": native["fids"], "command": ctx.command, "machine": machine_info()}


def _solver(cell: dict[str, Any]) -> str:
    return cell.get("solver", "ddim")  # cells from before DPM-Solver++ was compared: DDIM


def _verdicts(cells: dict[str, dict[str, Any]], arch: str, kind: str,
              solver: str = "ddim") -> list[list[str]]:
    from ase_search.verdict import Configuration, Latency, judge_point

    def config(c: dict[str, Any]) -> Configuration:
        # latency in model calls: the same network at every call (no lever, error 0)
        return Configuration(f"{_solver(c)}-{c['steps']} {c['kind']}", tuple(c["fids"]),
                             tuple(c["seeds"]), Latency(float(c["steps"]), 0.0, "measured"))

    def word(c: dict[str, Any], ladder: list[Configuration]) -> str:
        j = judge_point(config(c), ladder)
        return (f"{j.discounted:.2f}x (matches uniform {j.match.label.split()[0]})"
                if j.discounted is not None else f"{j.status} the ladder")

    every = [c for c in cells.values() if c["arch"] == arch and c["kind"] == "uniform"]
    mine = [c for c in cells.values() if c["arch"] == arch and _solver(c) == solver]
    ladder = [config(c) for c in mine if c["kind"] == "uniform"]
    rows = []
    for c in sorted((c for c in mine if c["kind"] == kind), key=lambda c: c["steps"]):
        uniform = next((u for u in mine if u["kind"] == "uniform" and u["steps"] == c["steps"]),
                       None)
        rows.append([str(c["steps"]), ", ".join(map(str, c["timesteps"])),
                     f"{statistics.fmean(c['fids']):.2f}",
                     "" if uniform is None else f"{statistics.fmean(uniform['fids']):.2f}",
                     word(c, [config(u) for u in every]), word(c, ladder)])
    return rows


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    import pandas as pd

    through = [c for c in cells.values() if c.get("path") == "diffusers"]
    cells = {k: c for k, c in cells.items() if c.get("path") != "diffusers"}

    solvers = [v for v in SOLVERS if any(_solver(c) == v for c in cells.values())]
    lines = [f"# Searched against uniform {' and '.join(map(_NAMES.get, solvers))} timesteps",
             "", f"Written by `benchmarks/timesteps.py` from `{json_name}`. Full model, "
             f"{' and '.join(map(_NAMES.get, solvers))}, "
             f"{N_SAMPLES} samples per fresh seed (FID-MNIST, mean over seeds). Searched: "
             f"`ase-search timesteps` (dynamic programming on the model's DDIM-"
             f"{params.grid} teacher trajectory with each solver's own update, calibration seed "
             f"{CALIBRATION_SEED}). The last two "
             "columns are the verdict rule's word (`ase_search/verdict.py`): the cheapest uniform "
             "step count the searched configuration does not beat on the paired seeds, and the "
             "ratio of model calls; against the uniform ladders of every solver measured on the "
             "testbed (what a user could run instead), and against its own solver's alone."
             + (f" Searched by FID (`--objective fid`): {params.trials} trials of Optuna's TPE, "
                f"each the mean FID of {N_SAMPLES} samples on selection seeds "
                f"{CALIBRATION_SEED} and {CALIBRATION_SEED + 1}, the uniform spacing and the "
                "teacher programme's timesteps first."
                if any(c["kind"] == "fid" for c in cells.values()) else ""), ""]
    for arch, solver in itertools.product(ARCHS, SOLVERS):
        mine = [c for c in cells.values() if c["arch"] == arch and _solver(c) == solver]
        if not mine:
            continue
        runs = list(dict.fromkeys(f"`{c['command']}` on {machine_text(c['machine'])}"
                                  for c in mine))
        title = arch if solver == "ddim" else f"{arch}, {_NAMES[solver]}"
        lines += [f"## {title}", "", "; ".join(runs) + ".", ""]
        for kind, title in (("searched", ""), ("fid", "Searched by FID (`--objective fid`):")):
            rows = _verdicts(cells, arch, kind, solver)
            if rows:
                lines += ([title, ""] if title else []) + [markdown_table(pd.DataFrame(
                    rows, columns=["steps", "searched timesteps", "FID searched", "FID uniform",
                                   "vs every solver's uniform ladder",
                                   "vs its solver's uniform ladder"]),
                    align=["right", "left", "right", "right", "left", "left"]), ""]
        ladder = sorted((c for c in mine if c["kind"] == "uniform"), key=lambda c: c["steps"])
        lines += ["Uniform ladder: " + ", ".join(
            f"{c['steps']}: {statistics.fmean(c['fids']):.2f}" for c in ladder), ""]
    if through:
        lines += ["## Through the diffusers path", "", "The DiT testbed exported to "
                  "`DiTTransformer2DModel`, sampled by `sample_diffusers` (DiTPipeline's loop "
                  "without a VAE) with the stock scheduler at uniform timesteps and with "
                  "`load_scheduler(..., explicit=True)` plus `timesteps=` at searched ones (what "
                  "a user's pipeline takes in two lines), on the same seeds. "
                  "`DDIMScheduler` takes no `timesteps=`, so DDIM there runs as DPM-Solver++ at "
                  "order 1 (DDIM's update), which does not clip the predicted x0 as native DDIM "
                  "(and `DDIMScheduler`) does on a pixel-space model: the searched DDIM rows' "
                  "differences are the clip's; the others agree to float rounding; "
                  + "; ".join(dict.fromkeys(f"`{c['command']}`" for c in through)) + ".", "",
                  markdown_table(pd.DataFrame([[
                      f"{_NAMES[_solver(c)]}-{c['steps']}", c["kind"],
                      ", ".join(map(str, c["timesteps"])),
                      f"{statistics.fmean(c['fids']):.2f}",
                      f"{statistics.fmean(c['native_fids']):.2f}",
                      f"{max(abs(a - b) for a, b in zip(c['fids'], c['native_fids'])):.2g}"]
                      for c in sorted(through, key=lambda c: (_solver(c), c["steps"],
                                                              c["kind"]))],
                      columns=["sampler", "timesteps", "model times", "FID diffusers",
                               "FID native", "largest per-seed difference"]),
                      align=["left", "left", "left", "right", "right", "right"]), ""]
    for arch in ARCHS:
        rows = _sample_grid(cells, arch)
        if rows:
            lines += [f"Samples, {arch} ([{arch}-samples]({json_name.rsplit('.', 1)[0]}-{arch}"
                      f"-samples.png), seed 1, 16 each), top to bottom: " + "; ".join(rows)
                      + ". A search that minimises FID-MNIST may favour what the digit "
                      "classifier's features prefer; to the eye the searched rows' strokes are "
                      "at most slightly bolder, the digits the same.", ""]
    return Report("\n".join(lines))


def _sample_grid(cells: dict[str, dict[str, Any]], arch: str) -> list[str]:
    """Draw the testbed's samples at each solver's uniform and FID-searched timesteps (the
    cells' 5-step ones) next to uniform DDIM-20, and write them as one PNG; the row labels."""
    import torch

    from ase_search.images import save_grid
    from ase_search.samplers import SamplerConfig, sample
    from ase_search.testbed import load_model

    found = {_solver(c): c for c in cells.values()
             if c["arch"] == arch and c["kind"] == "fid" and c["steps"] == 5}
    if not found:
        return []
    rows = {"uniform DDIM-20": SamplerConfig("ddim", 20)}
    for solver, c in found.items():
        rows[f"uniform {_NAMES[solver]}-5"] = SamplerConfig(solver, 5)
        rows[f"FID-searched {_NAMES[solver]}-5"] = SamplerConfig(
            solver, 5, timesteps=tuple(c["timesteps"]))
    model = load_model(arch)
    with torch.no_grad():
        images = [sample(model, sampler=c, n=16, seed=1).images for c in rows.values()]
    save_grid(torch.cat(images), REPORTS / f"timesteps-{arch}-samples.png", nrow=16)
    return list(rows)


BENCHMARK = Benchmark(name="timesteps", doc=__doc__, params=Params, keys=keys, cell=measure,
                      report=report, cell_identity=weights_identity)


if __name__ == "__main__":
    run(BENCHMARK)
