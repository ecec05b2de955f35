"""``ase-search sample``: draw samples with an exit schedule and save a grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ase_search.cli.diffusers import DiffusersOpt
from ase_search.cli._app import (
    DEFAULT_STEPS,
    ArchOpt,
    BatchOpt,
    CfgOpt,
    CheckpointOpt,
    DeviceOpt,
    SamplerOpt,
    ScheduleOpt,
    SeedOpt,
    StepsOpt,
    TimestepSpacingOpt,
    TimestepsOpt,
    TomeRatioOpt,
    TomeScheduleOpt,
    app,
    console,
    pick_device,
    sampler_config,
    schedule_weights,
    use_threads,
    tome_config,
    tome_option_errors,
    warn_untuned_exits,
)

@app.command("sample")
def sample_cmd(
    arch: ArchOpt = "dit",
    schedule: ScheduleOpt = "full",
    sampler: SamplerOpt = "ddim",
    steps: StepsOpt = DEFAULT_STEPS,
    timestep_spacing: TimestepSpacingOpt = None,
    timesteps: TimestepsOpt = None,
    n: Annotated[int, typer.Option("--n", help="Number of samples.")] = 16,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG grid to write.")] = Path(
        "samples.png"),
    checkpoint: CheckpointOpt = None,
    cfg_scale: CfgOpt = 1.0,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "auto",
    tome_ratio: TomeRatioOpt = 0.0,
    tome_schedule: TomeScheduleOpt = None,
    diffusers: DiffusersOpt = None,
) -> None:
    """Sample with an exit schedule and save the images as a PNG grid."""
    if diffusers is not None:
        from ase_search.cli.diffusers import refuse_options, sample_diffusers_cmd

        refuse_options({"--checkpoint": checkpoint is not None,
                        "--timestep-spacing": timestep_spacing is not None,
                        "--tome-ratio": tome_ratio != 0, "--arch": arch != "dit"})
        config = sampler_config(sampler, steps, timesteps=timesteps)  # a --timesteps file's
        return sample_diffusers_cmd(diffusers, schedule=schedule, sampler=config.name,
                                    steps=config.steps, n=n, out=out, cfg_scale=cfg_scale,
                                    seed=seed, batch_size=batch_size, device=device,
                                    timesteps=config.timesteps)
    import time

    from ase_search.measure import check_finite_samples
    from ase_search.files import check_writable
    from ase_search.images import save_grid
    from ase_search.samplers import sample
    from ase_search.schedule import resolve_schedule
    from ase_search.testbed import load_model

    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {out}")
    check_writable(out)  # before loading and sampling
    tome_cfg = tome_config(tome_ratio, tome_schedule)  # bad options fail before loading
    config = sampler_config(sampler, steps, cfg_scale=cfg_scale,
                            timestep_spacing=timestep_spacing, timesteps=timesteps)
    device = pick_device(device)
    weights = schedule_weights(schedule, checkpoint)
    model = load_model(arch, weights).to(device)
    plan = resolve_schedule(schedule, arch, model.exit_depth)
    warn_untuned_exits(plan, arch, weights)
    tome = None
    if tome_cfg is not None:
        from ase_search.tome import apply_tome

        with tome_option_errors():
            tome = apply_tome(model, tome_cfg)
    use_threads()
    t0 = time.perf_counter()
    result = sample(model, sampler=config, schedule=plan, n=n, batch_size=batch_size, seed=seed,
                    device=device, progress=True)
    seconds = time.perf_counter() - t0
    check_finite_samples(result.images)  # a grid of NaN would be written as noise
    save_grid(result.images, out)
    full = model.exit_depth * result.model_calls
    console.print(f"{n} samples, {plan.name} with {config.describe()}: "
                  f"{result.block_evals}/{full} block evaluations per sample "
                  f"({1 - result.block_evals / full:.1%} skipped), {seconds:.1f} s -> {out}")
    if tome is not None:
        console.print(f"{tome.config.describe()}: tokens merged in the self-attention of blocks "
                      f"{tome.blocks}")
