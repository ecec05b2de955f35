"""``ase-search export-diffusers``, and ``sample``/``eval`` on diffusers models (``--diffusers DIR``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ase_search.cli._app import (
    ArchOpt,
    CheckpointOpt,
    app,
    console,
    console_err,
    pick_device,
    use_threads,
)

DiffusersOpt = Annotated[Path | None, typer.Option(
    "--diffusers", help="Run a local diffusers transformer folder (or a pipeline folder with "
                        "transformer/) through the exit-schedule hooks and its diffusers "
                        "scheduler; nothing is downloaded.")]

# The sampler options the diffusers path has: the scheduler of the folder, as DDIM or DDPM.
DIFFUSERS_SAMPLERS = ("ddim", "ddpm")


@app.command("export-diffusers")
def export_diffusers_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder to write.")],
    arch: ArchOpt = "dit",
    checkpoint: CheckpointOpt = None,
) -> None:
    """Write the DiT testbed (or a DiT checkpoint) as a diffusers DiTTransformer2DModel folder."""
    from ase_search.integrations.diffusers import export_dit
    from ase_search.testbed import load_model

    if arch != "dit":
        raise ValueError(f"--arch {arch}: only DiT converts to a diffusers model "
                         f"(DiTTransformer2DModel); U-ViT has no diffusers class")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"-o {out} already exists and is not empty; give a new folder")
    model = load_model(arch, checkpoint)
    source = str(checkpoint) if checkpoint is not None else "the shipped dit testbed"
    export_dit(model, out, source=source)
    console.print(f"wrote {out}: DiTTransformer2DModel.from_pretrained({str(out)!r}) and "
                  f"DDIMScheduler.from_pretrained({str(out)!r}); "
                  f"ase_search.integrations.diffusers.load_transformer also restores official "
                  f"DiT's timestep and position tables", highlight=False, soft_wrap=True)


def fid_extractor(reference: str, folder: Path | None) -> str:
    """The FID extractor for ``reference``: the MNIST classifier for ``mnist``, and for ``self``
    when the ``--diffusers`` model makes 1 x 28 x 28 images (the testbed); Inception-v3 (which
    needs ``--fid-weights``) for image folders and other models' own samples."""
    import json

    if reference == "self" and folder is not None:
        for config in (folder / "config.json", folder / "transformer" / "config.json"):
            if config.is_file():
                c = json.loads(config.read_text())
                grey_28 = (c.get("in_channels"), c.get("sample_size")) == (1, 28)
                return "mnist-classifier" if grey_28 else "inception-v3-compat"
    return "mnist-classifier" if reference in ("mnist", "self") else "inception-v3-compat"


def check_fid_weights(extractor: str, fid_weights: str | None) -> None:
    """One line naming ``--fid-weights`` when the extractor's weights are missing or wrong,
    before anything is loaded or sampled."""
    from ase_search.metrics.fid import FIDConfig, MetricsError, extractor_weights

    try:
        extractor_weights(FIDConfig(extractor=extractor, fid_weights=fid_weights))
    except MetricsError as err:
        # The loader's own error can span lines (torch.load's); the first one says what is wrong.
        raise MetricsError(f"--fid-weights: {str(err).splitlines()[0]}") from None


def _load(folder: Path, schedule: str, sampler: str,
          explicit: bool = False) -> tuple[Any, Any, Any]:
    """The transformer, scheduler and resolved schedule of a ``--diffusers`` run (``explicit``:
    it takes explicit timesteps)."""
    from ase_search.integrations.diffusers import exit_blocks, load_scheduler, load_transformer
    from ase_search.schedule import resolve_schedule

    if sampler not in DIFFUSERS_SAMPLERS:
        raise ValueError(f"--sampler {sampler}: with --diffusers the folder's scheduler runs as "
                         f"{' or '.join(DIFFUSERS_SAMPLERS)}")
    if not folder.exists():
        raise FileNotFoundError(f"--diffusers {folder} does not exist")
    transformer = load_transformer(folder)
    if type(transformer).__name__ != "DiTTransformer2DModel":
        raise ValueError(f"--diffusers {folder} holds a {type(transformer).__name__}; sample and "
                         f"eval run class-conditional DiTTransformer2DModel folders (use "
                         f"apply_exit_schedule in your own pipeline for the others)")
    scheduler = load_scheduler(folder, sampler, explicit=explicit)
    depth = len(exit_blocks(transformer))
    return transformer, scheduler, resolve_schedule(schedule, "dit", depth)


def refuse_options(given: dict[str, bool]) -> None:
    """One line naming the first option the ``--diffusers`` path does not take."""
    for flag, set_ in given.items():
        if set_:
            raise ValueError(f"{flag} does not apply with --diffusers; drop it")


def sample_diffusers_cmd(folder: Path, *, schedule: str, sampler: str, steps: int, n: int,
                         out: Path, cfg_scale: float, seed: int, batch_size: int,
                         device: str, timesteps: tuple[int, ...] | None = None) -> None:
    """``ase-search sample --diffusers DIR`` (``timesteps``: a ``--timesteps`` file's)."""
    import time

    from ase_search.files import check_writable
    from ase_search.integrations.diffusers import applied_exit_schedule, sample_diffusers
    from ase_search.measure import check_finite_samples
    from ase_search.images import save_grid

    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {out}")
    check_writable(out)
    transformer, scheduler, plan = _load(folder, schedule, sampler, timesteps is not None)
    device = pick_device(device)
    transformer.to(device)
    use_threads()
    with applied_exit_schedule(transformer, plan):
        t0 = time.perf_counter()
        result = sample_diffusers(transformer, scheduler, n=n, steps=steps, seed=seed,
                                  cfg_scale=cfg_scale, batch_size=batch_size, device=device,
                                  timesteps=timesteps)
    seconds = time.perf_counter() - t0
    check_finite_samples(result.images)
    save_grid(result.images, out)
    full = plan.depth * result.model_calls
    console.print(f"{n} samples, {plan.name} on {folder} with diffusers {type(scheduler).__name__}"
                  f"-{steps}: {result.block_evals}/{full} block evaluations per sample "
                  f"({1 - result.block_evals / full:.1%} skipped), {seconds:.1f} s -> {out}",
                  highlight=False, soft_wrap=True)


def eval_diffusers_cmd(folder: Path, *, schedule: str, sampler: str, steps: int, n: int,
                       seeds: int, seed: int, data: str, fid_weights: Path | None,
                       cfg_scale: float, grid: Path | None, json_out: Path | None,
                       batch_size: int, device: str,
                       timesteps: tuple[int, ...] | None = None) -> None:
    """``ase-search eval --diffusers DIR``: FID (against ``--fid-data self``, the full model's own
    samples, or a data set) over seeds, with the paired per-image distance for ``self``
    (``timesteps``: a ``--timesteps`` file's)."""
    import json

    from rich.table import Table

    from ase_search.files import atomic_write_text, check_writable
    from ase_search.integrations.diffusers import measure_diffusers
    from ase_search.metrics.fid import FIDConfig
    from ase_search.images import save_grid

    for name, path, suffix in (("--grid", grid, ".png"), ("--json", json_out, ".json")):
        if path is not None and path.suffix.lower() != suffix:
            raise ValueError(f"{name} must be a {suffix} file, got {path}")
        if path is not None:
            check_writable(path)
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1 (the number of seeds), got {seeds}")
    if data not in ("self", "mnist") and not Path(data).expanduser().exists():
        raise FileNotFoundError(f"--fid-data {data} does not exist; give self, mnist or a "
                                f"folder of reference images")
    extractor = fid_extractor(data, folder)
    fid_config = FIDConfig(extractor=extractor,
                           fid_weights=None if fid_weights is None else str(fid_weights))
    check_fid_weights(extractor, fid_config.fid_weights)
    transformer, scheduler, plan = _load(folder, schedule, sampler, timesteps is not None)
    device = pick_device(device)
    transformer.to(device)
    use_threads()
    result = measure_diffusers(transformer, scheduler, None if plan.is_full else plan,
                               steps=steps, n=n, seeds=range(seed, seed + seeds), reference=data,
                               cfg_scale=cfg_scale, fid_config=fid_config, batch_size=batch_size,
                               device=device, timesteps=timesteps)
    grid = grid if grid is not None else Path(f"eval-{plan.name}.png")
    save_grid(result.images, grid)
    summary = {
        "diffusers": str(folder), "schedule": plan.to_dict(), "sampler": sampler, "steps": steps,
        **({} if timesteps is None else {"timesteps": list(timesteps)}),
        "n": n, "seeds": list(range(seed, seed + seeds)), "fid_data": data,
        "metrics": result.metrics, "block_evals": result.block_evals,
        "full_block_evals": result.full_block_evals,
        "block_acceleration": result.block_acceleration, "grid": str(grid),
    }
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(summary, indent=2) + "\n")
    table = Table(title=f"{folder} {plan.name}, diffusers {type(scheduler).__name__}-{steps}, "
                        f"n={n} x {seeds} seed(s)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    keys = ["fid", "paired_rmse"] if data == "self" else ["fid"]
    labels = {"fid": f"FID ({extractor}) vs {'the full model' if data == 'self' else data}",
              "paired_rmse": "paired RMSE vs the full model (pixels in [0, 1])"}
    for key in keys:
        std = result.std(key)
        table.add_row(labels[key], f"{result.mean(key):.4g}" + ("" if std is None else f" ± {std:.2g}"))
    table.add_row("schedule", plan.describe())
    table.add_row("block evaluations / sample", f"{result.block_evals} of {result.full_block_evals}")
    table.add_row("acceleration (blocks)", f"{result.block_acceleration:.1%}")
    table.add_row("grid", str(grid))
    console.print(table)
    console_err.print(f"samples from {folder} through the exit-schedule hooks", highlight=False)
