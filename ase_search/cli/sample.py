"""``ase-search sample``: draw samples with an exit schedule and save a grid."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from ase_search.tome import ToMeConfig

ScheduleOpt = Annotated[str, typer.Option(
    "--schedule", "-s", help="Preset (full, D1..D6, Dn-data-easy) or a schedule JSON file.")]
CheckpointOpt = Annotated[Path | None, typer.Option(
    "--checkpoint", "-c", help="Model checkpoint (default: the shipped testbed model).")]
CfgOpt = Annotated[float, typer.Option("--cfg-scale", help="Classifier-free guidance scale.")]
# Token merging (the paper's ToMe baseline, Appendix B.3); shared with `ase-search eval`.
TomeRatioOpt = Annotated[float, typer.Option(
    "--tome-ratio", help="ToMe baseline: share of image tokens merged in self-attention "
                         "(e.g. 0.5); 0 turns ToMe off.")]
TomeScheduleOpt = Annotated[str | None, typer.Option(
    "--tome-schedule", help="Blocks that merge: all, F<k> (first k), R<k> (last k), B<k> "
                            "(k/2 from each end). Default all; needs --tome-ratio.")]


def tome_config(ratio: float, schedule: str | None) -> ToMeConfig | None:
    """The ToMe settings of ``--tome-ratio``/``--tome-schedule``; ``None`` when ToMe is off."""
    if ratio == 0:
        if schedule is not None:
            raise ValueError(f"--tome-schedule {schedule} needs --tome-ratio > 0 (e.g. 0.5)")
        return None
    from ase_search.tome import ToMeConfig

    with tome_option_errors():
        return ToMeConfig(ratio=ratio, schedule=schedule or "all")


@contextmanager
def tome_option_errors() -> Iterator[None]:
    """Re-raise ToMe's ValueErrors under the option names the user typed."""
    try:
        yield
    except ValueError as err:
        message = str(err)
        # ToMeConfig and tome_blocks start their messages with the field name.
        if message.startswith(("ratio", "schedule")):
            message = f"--tome-{message}"
        raise ValueError(message) from None


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
    tome_ratio: TomeRatioOpt = 0.0,
    tome_schedule: TomeScheduleOpt = None,
) -> None:
    """Sample with an exit schedule and save the images as a PNG grid."""
    import time

    from ase_search.report import save_grid
    from ase_search.samplers import SamplerConfig, sample
    from ase_search.schedule import resolve_schedule
    from ase_search.testbed import load_model

    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {out}")
    tome_cfg = tome_config(tome_ratio, tome_schedule)  # bad options fail before loading
    config = SamplerConfig(name=sampler, steps=steps, cfg_scale=cfg_scale)
    device = pick_device(device)
    model = load_model(arch, checkpoint).to(device)
    plan = resolve_schedule(schedule, arch, model.exit_depth)
    tome = None
    if tome_cfg is not None:
        from ase_search.tome import apply_tome

        with tome_option_errors():
            tome = apply_tome(model, tome_cfg)
    t0 = time.perf_counter()
    result = sample(model, sampler=config, schedule=plan, n=n, batch_size=batch_size, seed=seed,
                    device=device, progress=True)
    seconds = time.perf_counter() - t0
    save_grid(result.images, out)
    full = model.exit_depth * result.model_calls
    console.print(f"{n} samples, {plan.name} with {sampler}-{steps}: "
                  f"{result.block_evals}/{full} block evaluations per sample "
                  f"({1 - result.block_evals / full:.1%} skipped), {seconds:.1f} s -> {out}")
    if tome is not None:
        console.print(f"{tome.config.describe()}: tokens merged in the self-attention of blocks "
                      f"{tome.blocks}")
