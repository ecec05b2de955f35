"""``ase-search timesteps``: search the timesteps of a few-step sampler (issue #25)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ase_search.cli._app import (
    ArchOpt,
    CfgOpt,
    CheckpointOpt,
    DeviceOpt,
    app,
    console,
    console_err,
    pick_device,
    use_threads,
)


def parse_steps(text: str) -> list[int]:
    """``"5"`` or ``"3-10"``.

    Raises:
        ValueError: anything else.
    """
    low, dash, high = text.strip().partition("-")
    try:
        lo, hi = int(low), int(high) if dash else int(low)
    except ValueError:
        raise ValueError(f"--steps takes a step count or a range such as 3-10, got {text!r}"
                         ) from None
    if lo < 1 or hi < lo:
        raise ValueError(f"--steps: {text!r} is not a range of step counts >= 1")
    return list(range(lo, hi + 1))


@app.command("timesteps")
def timesteps_cmd(
    steps: Annotated[str, typer.Option(
        "--steps", help="Step count to search, or a range such as 3-10.")] = "5",
    sampler: Annotated[str, typer.Option(
        "--sampler", help="ddim or dpm-solver (DPM-Solver++ 2M, searched with its own "
                          "multistep update).")] = "ddim",
    arch: ArchOpt = "dit",
    checkpoint: CheckpointOpt = None,
    objective: Annotated[str, typer.Option(
        "--objective", help="teacher: distance to a many-step run (dynamic programming, "
                            "minutes); fid: FID on two selection seeds (Optuna TPE, one FID "
                            "per trial; pixel-space models).")] = "teacher",
    grid: Annotated[int, typer.Option(
        "--grid", help="Candidate timesteps (and the teacher's DDIM steps).")] = 100,
    trials: Annotated[int, typer.Option(
        "--trials", help="FID measurements per step count (--objective fid).")] = 60,
    fid_data: Annotated[str, typer.Option(
        "--fid-data", help="FID reference (--objective fid): mnist or a folder of images.")
    ] = "mnist",
    n: Annotated[int | None, typer.Option(
        "--n", help="Calibration samples (default 64), or samples per selection seed with "
                    "--objective fid (default 500).")] = None,
    seed: Annotated[int, typer.Option(
        "--seed", help="Calibration seed, or the first of two selection seeds (keep them "
                       "apart from evaluation seeds).")] = 10_000,
    cfg_scale: CfgOpt = 1.0,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="JSON to write; with a range of steps, <stem>-<N>.json each.")
    ] = Path("timesteps.json"),
    device: DeviceOpt = "auto",
) -> None:
    """Search the DDIM (or DPM-Solver++) timesteps whose N-step sample stays closest to a many-step one
    (dynamic programming on the model's teacher trajectory, GITS) or that give the lowest FID
    (--objective fid), and write them as JSON for `sample`/`eval --timesteps FILE`."""
    from ase_search.files import check_writable
    from ase_search.testbed import load_model
    from ase_search.timesteps import OBJECTIVES, fid_timesteps, save_timesteps, search_timesteps

    counts = parse_steps(steps)
    if out.suffix.lower() != ".json":
        raise ValueError(f"--out must be a .json file, got {out}")
    paths = {k: out if len(counts) == 1 else out.with_name(f"{out.stem}-{k}.json")
             for k in counts}
    for path in paths.values():
        check_writable(path)
    if grid < max(counts) or grid < 2:
        raise ValueError(f"--grid {grid} must be at least the step count ({max(counts)}) and 2")
    if objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if n is None:
        n = 500 if objective == "fid" else 64
    if n < (2 if objective == "fid" else 1):
        raise ValueError(f"--n must be >= {2 if objective == 'fid' else 1}, got {n}")
    if objective == "fid" and (min(counts) < 2 or trials < 2):
        raise ValueError("--objective fid searches step counts >= 2 with --trials >= 2")
    if sampler not in ("ddim", "dpm-solver"):
        raise ValueError(f"--sampler must be ddim or dpm-solver, got {sampler!r}")
    use_threads()
    model = load_model(arch, checkpoint)

    def say(line: str) -> None:
        console_err.print(line, highlight=False)

    if objective == "fid":
        from ase_search.measure import check_fid_reference

        check_fid_reference(model, fid_data, None)
        found = fid_timesteps(model, counts, sampler=sampler, trials=trials, n=n,
                              seeds=(seed, seed + 1), reference=fid_data, cfg_scale=cfg_scale,
                              device=pick_device(device), progress=say)
    else:
        found = search_timesteps(model, counts, sampler=sampler, grid=grid, n=n, seed=seed,
                                 cfg_scale=cfg_scale, device=pick_device(device), progress=say)
    measure = "FID" if objective == "fid" else "distance to the teacher"
    for k, result in found.items():
        save_timesteps(paths[k], result, arch=arch,
                       checkpoint=None if checkpoint is None else str(checkpoint))
        console.print(f"{sampler}-{k}: {list(result.timesteps)} -> {paths[k]} ({measure} "
                      f"{result.cost:.3g}; uniform {result.uniform_cost:.3g})")
    console.print(f"Next: ase-search eval --timesteps {paths[counts[0]]} --n 500 --seeds 5")
