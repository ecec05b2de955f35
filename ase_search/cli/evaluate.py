"""``ase-search eval`` (FID over seeds) and ``ase-search bench`` (measured vs predicted latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ase_search.cli.diffusers import DiffusersOpt, check_fid_weights
from ase_search.cli._app import (
    DEFAULT_STEPS,
    ArchOpt,
    BatchOpt,
    CfgOpt,
    CheckpointOpt,
    DeviceOpt,
    SamplerOpt,
    ScheduleOpt,
    StepsOpt,
    TimestepSpacingOpt,
    TimestepsOpt,
    TomeRatioOpt,
    TomeScheduleOpt,
    app,
    console,
    console_err,
    pick_device,
    sampler_config,
    schedule_weights,
    tome_config,
    tome_option_errors,
    warn_untuned_exits,
    use_threads,
)


def _pct(x: float) -> str:
    return f"{x:.1%}"


@app.command("eval")
def eval_cmd(
    arch: ArchOpt = "dit",
    checkpoint: CheckpointOpt = None,
    schedule: ScheduleOpt = "full",
    sampler: SamplerOpt = "ddim",
    steps: StepsOpt = DEFAULT_STEPS,
    timestep_spacing: TimestepSpacingOpt = None,
    timesteps: TimestepsOpt = None,
    n: Annotated[int, typer.Option("--n", help="Samples per seed.")] = 2000,
    seeds: Annotated[int, typer.Option(
        "--seeds", help="Number of seeds (seed, seed+1, ...); FID is mean +- std over them.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="First seed (common random numbers).")] = 0,
    data: Annotated[str, typer.Option(
        "--data", "--fid-data", help="FID reference: mnist (digit-classifier FID) or a folder of "
                       "images (Inception-v3 FID, needs --fid-weights); with --vae, images at the "
                       "decoded resolution; with --diffusers also self (the full model's own "
                       "samples from the same seeds).")] = "mnist",
    vae: Annotated[Path | None, typer.Option(
        "--vae", help="Latent models (DiT-XL/2): local diffusers AutoencoderKL folder that "
                      "decodes the samples to images before FID.")] = None,
    fid_weights: Annotated[Path | None, typer.Option(
        "--fid-weights", help="Extractor weights: Inception-v3 FID weights file, or another "
                              "digit-classifier file for mnist.")] = None,
    kid: Annotated[bool, typer.Option("--kid", help="Also compute KID.")] = False,
    cfg_scale: CfgOpt = 1.0,
    grid: Annotated[Path | None, typer.Option(
        "--grid", help="Sample grid PNG (first seed); default eval-<schedule>.png.")] = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Write the result as JSON.")] = None,
    batch_size: BatchOpt = 256,
    device: DeviceOpt = "auto",
    tome_ratio: TomeRatioOpt = 0.0,
    tome_schedule: TomeScheduleOpt = None,
    diffusers: DiffusersOpt = None,
) -> None:
    """FID of an exit schedule over seeds, with its block, cost-model and FLOP accelerations."""
    if diffusers is not None:
        from ase_search.cli.diffusers import eval_diffusers_cmd, refuse_options

        refuse_options({"--checkpoint": checkpoint is not None, "--vae": vae is not None,
                        "--timestep-spacing": timestep_spacing is not None, "--kid": kid,
                        "--tome-ratio": tome_ratio != 0, "--arch": arch != "dit"})
        config = sampler_config(sampler, steps, timesteps=timesteps)  # a --timesteps file's
        return eval_diffusers_cmd(diffusers, schedule=schedule, sampler=config.name,
                                  steps=config.steps, n=n, seeds=seeds, seed=seed, data=data,
                                  fid_weights=fid_weights, cfg_scale=cfg_scale, grid=grid,
                                  json_out=json_out, batch_size=batch_size, device=device,
                                  timesteps=config.timesteps)
    if data == "self" and vae is not None:
        raise ValueError("--fid-data self (the full model's own samples) is not built for latent "
                         "models yet; pass a folder of images")
    import json

    from rich.table import Table

    from ase_search.evaluate import evaluate
    from ase_search.files import atomic_write_text, check_writable
    from ase_search.measure import check_fid_reference
    from ase_search.metrics.fid import FIDConfig
    from ase_search.images import save_grid
    from ase_search.schedule import resolve_schedule
    from ase_search.testbed import load_model
    from ase_search.vae import check_vae_folder, load_vae

    for name, path in (("--grid", grid), ("--json", json_out)):
        suffix = ".png" if name == "--grid" else ".json"
        if path is not None and path.suffix.lower() != suffix:
            raise ValueError(f"{name} must be a {suffix} file, got {path}")
        if path is not None:
            check_writable(path)  # before minutes of sampling
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1 (the number of seeds), got {seeds}")
    tome_cfg = tome_config(tome_ratio, tome_schedule)  # bad options fail before loading
    if vae is not None:
        check_vae_folder(vae)  # cheap: no diffusers import for a wrong path
    if data.lower() not in ("mnist", "self") and not Path(data).expanduser().exists():
        # before the extractor's weights, which a wrong --data would otherwise be blamed on
        raise FileNotFoundError(f"--data {data} does not exist; give mnist or a folder of "
                                f"reference images")
    if fid_weights is not None and not fid_weights.is_file():
        raise FileNotFoundError(f"--fid-weights {fid_weights} does not exist")
    config = sampler_config(sampler, steps, cfg_scale=cfg_scale,
                            timestep_spacing=timestep_spacing, timesteps=timesteps)
    # self: the testbeds' own samples are digits (another checkpoint's, Inception's business)
    extractor = ("mnist-classifier" if data == "mnist" or (data == "self" and checkpoint is None)
                 else "inception-v3-compat")
    fid_config = FIDConfig(extractor=extractor, kid=kid,
                           fid_weights=None if fid_weights is None else str(fid_weights))
    check_fid_weights(extractor, fid_config.fid_weights)  # before loading and sampling anything
    device = pick_device(device)
    decoder = None if vae is None else load_vae(vae, device=device)
    weights = schedule_weights(schedule, checkpoint)
    model = load_model(arch, weights)
    plan = resolve_schedule(schedule, arch, model.exit_depth)
    reference: Any = data
    if data == "self":  # data-free: the same model's full-depth samples at this sampler
        from ase_search.measure import SELF_REFERENCE_SEED, SelfReference
        from ase_search.samplers import sample

        model.to(device)

        def draw(s: int) -> Any:
            return sample(model, sampler=config, n=n, batch_size=batch_size, seed=s,
                          device=device).images

        reference = SelfReference(paired=draw, distribution=draw(SELF_REFERENCE_SEED))
    else:
        check_fid_reference(model, data, decoder)  # e.g. latents without --vae: one error line
    warn_untuned_exits(plan, arch, weights)
    tome = tome_summary = None
    if tome_cfg is not None:
        from ase_search.tome import apply_tome, tome_flop_acceleration

        with tome_option_errors():
            # The accelerations evaluate() reports compare the ToMe model with itself; this is
            # ToMe's own saving over the unmerged model.
            saving = tome_flop_acceleration(model, tome_cfg)
            tome = apply_tome(model, tome_cfg)
        tome_summary = {**tome.to_dict(), "flop_acceleration": saving}
    use_threads()
    result = evaluate(model, plan, sampler=config, n=n, seeds=range(seed, seed + seeds),
                      data=reference, fid_config=fid_config, batch_size=batch_size, device=device,
                      progress=True, decoder=decoder)

    grid = grid if grid is not None else Path(f"eval-{plan.name}.png")
    save_grid(result.images, grid)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps({**result.to_dict(), "grid": str(grid),
                                                "tome": tome_summary}, indent=2) + "\n")

    table = Table(title=f"{arch} {plan.name}, {config.describe()}, n={n} x {seeds} seed(s)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    labels = {"fid": f"FID ({extractor})" + (" vs the full model" if data == "self" else ""),
              "paired_rmse": "paired RMSE vs the full model (pixels in [0, 1])",
              "kid_mean": "KID", "precision": "precision", "recall": "recall"}
    for key, label in labels.items():
        if key in result.metric_names:
            std = result.std(key)
            table.add_row(label, f"{result.mean(key):.4g}"
                          + ("" if std is None else f" ± {std:.2g}"))
    if seeds > 1:
        table.add_row("FID per seed", ", ".join(f"{m['fid']:.4g}" for m in result.metrics))
    table.add_row("schedule", plan.describe())
    table.add_row("block evaluations / sample",
                  f"{result.block_evals} of {result.depth * result.model_calls}")
    table.add_row("acceleration (blocks)", _pct(result.block_acceleration))
    table.add_row("acceleration (cost model)", _pct(result.predicted_acceleration))
    table.add_row("acceleration (FLOPs)", _pct(result.flop_acceleration))
    if tome is not None:
        table.add_row("ToMe", f"{tome.config.describe()}, blocks {tome.blocks}")
        table.add_row("acceleration (ToMe FLOPs, full model)",
                      _pct(tome_summary["flop_acceleration"]))
    table.add_row("grid", str(grid))
    console.print(table)
    console_err.print(f"sampling and FID took {sum(result.seconds.values()):.1f} s")


@app.command("bench")
def bench_cmd(
    arch: ArchOpt = "dit",
    schedules: Annotated[str, typer.Option(
        "--schedules", help="Comma-separated presets or schedule JSON files.")] =
        "full,D1,D3,D4,D6",
    checkpoint: CheckpointOpt = None,
    model_name: Annotated[str | None, typer.Option(
        "--model", "-m", help="Registry size with random weights (e.g. DiT-T), instead of a "
                              "checkpoint; weights do not change latency.")] = None,
    sampler: SamplerOpt = "ddim",
    steps: StepsOpt = DEFAULT_STEPS,
    timestep_spacing: TimestepSpacingOpt = None,
    batch_size: BatchOpt = 256,
    repeats: Annotated[int, typer.Option(
        "--repeats", help="Timed interleaved rounds (median), after one warm-up round.")] = 5,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="torch CPU threads (default: the app's --threads).")] = None,
    markdown: Annotated[Path | None, typer.Option(
        "--markdown", help="Write the table as a markdown report section.")] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Measured wall-clock acceleration of schedules next to the block, FLOP and cost-model ones."""
    import math

    from rich import box
    from rich.table import Table

    from ase_search.evaluate import benchmark_latency, latency_markdown
    from ase_search.files import atomic_write_text
    from ase_search.models import create_model
    from ase_search.schedule import resolve_schedule
    from ase_search.testbed import load_model

    if checkpoint is not None and model_name is not None:
        raise ValueError("pass either --checkpoint or --model, not both")
    if markdown is not None and markdown.suffix.lower() != ".md":
        raise ValueError(f"--markdown must be a .md file, got {markdown}")
    names = [s.strip() for s in schedules.split(",") if s.strip()]
    if not names:
        raise ValueError("--schedules is empty; give e.g. full,D1,D4")
    config = sampler_config(sampler, steps, timestep_spacing=timestep_spacing)
    if model_name is not None:
        model = create_model(model_name)
        if model.arch != arch:
            raise ValueError(f"--model {model_name} is a {model.arch} model; pass --arch "
                             f"{model.arch}")
    else:
        model = load_model(arch, checkpoint)
    plans = {name: resolve_schedule(name, arch, model.exit_depth) for name in names}
    device = pick_device(device)
    use_threads(threads)
    console_err.print(f"timing {len(plans)} schedule(s) x {repeats + 1} rounds of "
                      f"{len(config.model_times())} calls at batch {batch_size} on {device}...")
    df = benchmark_latency(model, plans, sampler=config, batch_size=batch_size, repeats=repeats,
                           device=device)

    title = (f"{df.attrs['model']}: {config.describe()}, batch {batch_size}, {device}, "
             f"{df.attrs['threads']} thread(s)")
    table = Table(title=title, box=box.SIMPLE_HEAD,
                  caption="acceleration = share skipped of: exitable blocks (blocks), FLOPs of "
                          "every layer (FLOPs), cost-model time (model), wall clock (measured); "
                          "ratio = measured / FLOPs")
    for column in ("schedule", "blocks", "blocks", "FLOPs", "model", "measured", "ratio",
                   "s/run"):
        table.add_column(column, justify="left" if column == "schedule" else "right")
    for r in df.itertuples(index=False):
        ratio = "–" if math.isnan(r.measured_over_flop) else f"{r.measured_over_flop:.3f}"
        table.add_row(r.schedule, r.blocks, _pct(r.block_acceleration),
                      _pct(r.flop_acceleration), _pct(r.predicted_acceleration),
                      _pct(r.measured_acceleration)
                      + ("" if not r.measured_acceleration_se > 0
                         else f" ±{r.measured_acceleration_se * 100:.1f}"),
                      ratio, f"{r.measured_s:.3f}")
    console.print(table)
    if markdown is not None:
        atomic_write_text(markdown, latency_markdown(df, title=df.attrs["model"]))
        console_err.print(f"wrote {markdown}")
