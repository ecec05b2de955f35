"""``ase-search sample``: draw samples with an exit schedule and save a grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ase_search.cli._app import (
    ArchOpt,
    DeviceOpt,
    SamplerOpt,
    SeedOpt,
    StepsOpt,
    app,
    console,
    pick_device,
)

ScheduleOpt = Annotated[str, typer.Option(
    "--schedule", "-s", help="Preset (full, D1..D6, Dn-data-easy) or a schedule JSON file.")]
CheckpointOpt = Annotated[Path | None, typer.Option(
    "--checkpoint", "-c", help="Model checkpoint (default: the shipped testbed model).")]
CfgOpt = Annotated[float, typer.Option("--cfg-scale", help="Classifier-free guidance scale.")]


@app.command("sample")
def sample_cmd(
    arch: ArchOpt = "dit",
    schedule: ScheduleOpt = "full",
    sampler: SamplerOpt = "ddim",
    steps: StepsOpt = 50,
    n: Annotated[int, typer.Option("--n", help="Number of samples.")] = 16,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG grid to write.")] = Path(
        "samples.png"),
    checkpoint: CheckpointOpt = None,
    cfg_scale: CfgOpt = 1.0,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option(help="Samples per model call.")] = 256,
    device: DeviceOpt = "auto",
) -> None:
    """Sample with an exit schedule and save the images as a PNG grid."""
    import time

    from ase_search.report import save_grid
    from ase_search.samplers import SamplerConfig, sample
    from ase_search.schedule import resolve_schedule
    from ase_search.testbed import load_model

    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {out}")
    config = SamplerConfig(name=sampler, steps=steps, cfg_scale=cfg_scale)
    device = pick_device(device)
    model = load_model(arch, checkpoint).to(device)
    plan = resolve_schedule(schedule, arch, model.exit_depth)
    t0 = time.perf_counter()
    result = sample(model, sampler=config, schedule=plan, n=n, batch_size=batch_size, seed=seed,
                    device=device, progress=True)
    seconds = time.perf_counter() - t0
    save_grid(result.images, out)
    full = model.exit_depth * result.model_calls
    console.print(f"{n} samples, {plan.name} with {sampler}-{steps}: "
                  f"{result.block_evals}/{full} block evaluations per sample "
                  f"({1 - result.block_evals / full:.1%} skipped), {seconds:.1f} s -> {out}")
