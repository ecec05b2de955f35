"""``ase-search pretrain``, ``finetune`` and ``export-weights``: training commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ase_search.cli._app import ArchOpt, DeviceOpt, SeedOpt, app, console, console_err, pick_device
from ase_search.cli._app import use_threads

DataOpt = Annotated[str, typer.Option("--dataset", "--data",
                                      help="mnist (embedded), an image folder or a latents file.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run directory (last.pt lives here).")]
ThreadsOpt = Annotated[int, typer.Option(
    "--threads", help="CPU threads for torch (0: the app's --threads).")]


def _dataset_for(model, spec: str):
    from ase_search.data import build_dataset

    return build_dataset(spec, resolution=model.input_size, channels=model.in_channels)


@app.command("pretrain")
def pretrain_cmd(
    arch: ArchOpt = "dit",
    model_name: Annotated[str | None, typer.Option(
        "--model", help="Registry name (default: the testbed size of --arch).")] = None,
    dataset: DataOpt = "mnist",
    steps: Annotated[int, typer.Option(help="Total optimiser steps.")] = 40_000,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 128,
    lr: Annotated[float, typer.Option(
        help="AdamW learning rate (at 3e-4 the testbeds plateaued near loss 0.05).")] = 1e-3,
    warmup: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 1000,
    decay_steps: Annotated[int, typer.Option(
        help="Decay the lr linearly to 0 over the last N steps (0: constant to the end).")] = 0,
    ema_decay: Annotated[float, typer.Option(
        help="EMA decay (0.9995 lagged the raw weights badly at 6k steps on the testbed).")] = 0.999,
    seed: SeedOpt = 0,
    out: OutOpt = Path("runs/pretrain"),
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt if present.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 500,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
) -> None:
    """Train a diffusion backbone from scratch (AdamW, EMA, hybrid loss, label dropout)."""
    import torch

    from ase_search.models import create_model
    from ase_search.testbed import TESTBEDS
    from ase_search.training import TrainConfig, train

    if arch not in TESTBEDS:
        raise ValueError(f"--arch must be one of {list(TESTBEDS)}, got {arch!r}")
    torch.manual_seed(seed)
    model = create_model(model_name or TESTBEDS[arch].model_name)
    if model.arch != arch:
        raise ValueError(f"--model {model_name} is a {model.arch} model but --arch is {arch}")
    data = _dataset_for(model, dataset)
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup,
                         decay_steps=decay_steps, ema_decay=ema_decay, seed=seed,
                         checkpoint_every=checkpoint_every)
    use_threads(threads or None)
    result = train(model, data, config, out_dir=out, resume=resume, device=pick_device(device),
                   checkpoint_extra={"dataset": dataset, "command": "pretrain"})
    console_err.print(f"done: {result.step} steps, {result.wall_time / 60:.1f} min of training; "
                      f"checkpoint {out / 'last.pt'}")


@app.command("finetune")
def finetune_cmd(
    arch: ArchOpt = "dit",
    schedule: Annotated[str | None, typer.Option(
        help="Preset name (D1..D6, ...) or schedule JSON: Algorithm 1 for that schedule.")] = None,
    space: Annotated[Path | None, typer.Option(
        help="Search-space YAML: one-shot fine-tune for every schedule in it.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        help="Model to fine-tune (default: the shipped testbed model).")] = None,
    dataset: DataOpt = "mnist",
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 500,
    batch_size: Annotated[int, typer.Option(help="Batch size (paper: 64 DiT, 128 U-ViT).")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate (paper: 2e-5 for DiT).")] = 2e-5,
    lr_schedule: Annotated[str | None, typer.Option(
        help="constant or cosine (default: the paper's, constant for DiT and cosine for U-ViT; "
             "cosine with --space).")] = None,
    ema: Annotated[float, typer.Option(help="EMA rate alpha of the teacher.")] = 0.999,
    gamma: Annotated[float, typer.Option(help="Strength of lambda(t).")] = 2.0,
    cycles: Annotated[int, typer.Option(help="Epochs C with lambda(t) before it resets to 1.")] = 1,
    full_share: Annotated[float, typer.Option(
        help="With --space: share of samples trained at the largest block count allowed.")] = 0.5,
    distill: Annotated[bool, typer.Option(
        help="Regress onto the starting model's full-depth prediction instead of the noise "
             "(not the paper's recipe; on --resume pass the same --checkpoint).")] = False,
    exit_heads: Annotated[bool, typer.Option(
        help="Give the model one output head per exit depth, each a copy of its final layer, "
             "and train head k on the samples that exit after k blocks (a checkpoint that has "
             "them keeps them; on --resume pass it again).")] = False,
    seed: SeedOpt = 0,
    out: OutOpt = Path("runs/finetune"),
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt if present.")] = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
) -> None:
    """Fine-tune for an exit schedule (Algorithm 1) or, with --space, one-shot for a whole space."""

    from ase_search.finetune import FinetuneConfig, finetune, finetune_one_shot
    from ase_search.models import add_exit_heads
    from ase_search.schedule import resolve_schedule
    from ase_search.space import load_space
    from ase_search.testbed import load_model

    if (schedule is None) == (space is None):
        raise ValueError("pass exactly one of --schedule (Algorithm 1) or --space (one-shot)")
    config = FinetuneConfig(steps=steps, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
                            ema_decay=ema, gamma=gamma, cycles=cycles, seed=seed,
                            full_share=full_share, distill=distill)
    model = load_model(arch, checkpoint)
    if exit_heads and not model.config.get("exit_heads"):
        model = add_exit_heads(model)
    model = model.train()
    data = _dataset_for(model, dataset)
    common = dict(out_dir=out, resume=resume, device=pick_device(device))
    use_threads(threads or None)
    if space is not None:
        result = finetune_one_shot(model, data, load_space(space, depth=model.exit_depth),
                                   config, **common)
    else:
        plan = resolve_schedule(schedule, arch, model.exit_depth)
        result = finetune(model, data, plan, config, **common)
    console_err.print(f"done: {result.step} steps; checkpoint {out / 'last.pt'}")


@app.command("export-weights")
def export_weights_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A training checkpoint (last.pt).")],
    out: Annotated[Path, typer.Argument(help="Destination .safetensors file.")],
    half: Annotated[bool, typer.Option(help="Store float16 weights (half the size).")] = True,
    ema: Annotated[bool, typer.Option(help="Export the EMA weights (else the raw ones).")] = True,
    model_name: Annotated[str | None, typer.Option(
        "--model", help="Registry name (e.g. DiT-XL/2) of a bare state dict, such as official "
                        "weights, which carry no config.")] = None,
) -> None:
    """Write a checkpoint's weights (with config and metadata) as a compact safetensors file."""
    from ase_search.models.checkpoint import export_weights

    path = export_weights(checkpoint, out, half=half, ema=ema, model_name=model_name)
    console.print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
