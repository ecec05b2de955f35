"""``ase-search snr``: the SNR of the score target across diffusion time (paper Figure 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ase_search.cli._app import SeedOpt, app, console, console_err, use_threads


@app.command("snr")
def snr_cmd(
    dataset: Annotated[str, typer.Option(
        "--dataset", "-d", help="mnist, a folder of images, or a latents file.")] = "mnist",
    n_xt: Annotated[int, typer.Option("--n-xt", help="Draws of x_t per timestep.")] = 64,
    n_x0: Annotated[int, typer.Option(
        "--n-x0", help="Data points forming the empirical distribution (a seeded subset).")] = 5000,
    timesteps: Annotated[int, typer.Option(
        "--timesteps", help="Timesteps evaluated, spread evenly over [0, T - 1].")] = 50,
    seed: SeedOpt = 0,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Path prefix of the .html, .png and .md reports.")
    ] = Path("reports/snr"),
    resolution: Annotated[int | None, typer.Option(
        "--resolution", help="Image side (default 28 for mnist; required otherwise).")] = None,
    channels: Annotated[int | None, typer.Option(
        "--channels", help="Image channels (default 1 for mnist; required otherwise).")] = None,
) -> None:
    """SNR of the conditional score over the data's exact posterior, per timestep (Figure 1)."""
    import time

    import torch

    from ase_search.data import build_dataset
    from ase_search.diffusion import GaussianDiffusion
    from ase_search.evaluate import machine_info
    from ase_search.snr import default_timesteps, score_snr, snr_summary, write_snr_report

    for name, value in (("--n-xt", n_xt), ("--n-x0", n_x0)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    is_mnist = dataset.lower() == "mnist"
    if not is_mnist and (resolution is None or channels is None):
        raise ValueError(f"--resolution and --channels are required for dataset {dataset!r} "
                         "(only mnist has defaults)")
    diffusion = GaussianDiffusion()
    steps = default_timesteps(timesteps, diffusion.num_timesteps)
    data = build_dataset(dataset, resolution=resolution or 28, channels=channels or 1)
    if n_x0 > len(data):
        raise ValueError(f"--n-x0 is {n_x0} but dataset {dataset!r} holds {len(data)} points; "
                         f"use --n-x0 <= {len(data)}")
    generator = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(data), generator=generator)[:n_x0].sort().values
    images = torch.stack([data[int(i)][0] for i in subset])  # (n_x0, C, H, W)

    command = (f"ase-search snr --dataset {dataset} --n-xt {n_xt} --n-x0 {n_x0} "
               f"--timesteps {timesteps} --seed {seed} --out {out}")
    if not is_mnist:
        command += f" --resolution {resolution} --channels {channels}"
    use_threads()
    console_err.print(f"score SNR on {dataset}: {n_x0} points, {len(steps)} timesteps, "
                      f"{n_xt} draws each ...")
    t0 = time.perf_counter()
    frame = score_snr(images, diffusion, steps, n_xt=n_xt, generator=generator)
    seconds = time.perf_counter() - t0
    paths = write_snr_report(frame, out, command=command, seed=seed, dataset=dataset,
                             machine=machine_info(), seconds=seconds)
    console.print(snr_summary(frame), highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in paths), highlight=False)
