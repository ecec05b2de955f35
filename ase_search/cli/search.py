"""``ase-search run``: search exit schedules (Optuna study, Ray Tune workers)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ase_search.cli._app import (
    ArchOpt, SamplerOpt, SeedOpt, StepsOpt, TimestepSpacingOpt, app, console, console_err,
    use_threads)
from ase_search.cli.diffusers import DiffusersOpt, fid_extractor

# SearchConfig fields whose flag is not the field's name with dashes (see _flag).
_FLAGS = {"finetune_full_share": "--full-share", "finetune_distill": "--distill"}


def _flag(field: str) -> str:
    """The ``run`` option that sets SearchConfig field ``field``."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


@app.command("run")
def run_cmd(
    arch: ArchOpt = "dit",
    budget: Annotated[int, typer.Option(
        help="Finished trials the study should hold (re-running continues up to it).")] = 40,
    space: Annotated[Path | None, typer.Option(
        help="Search-space YAML (default: search_spaces/<arch>.yaml).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        help="Model checkpoint (default: the shipped testbed model).")] = None,
    data: Annotated[str, typer.Option(
        help="Fine-tuning data and, without --fid-data, the FID reference: mnist, an image "
             "folder or a latents file.")] = "mnist",
    fid_data: Annotated[str | None, typer.Option(
        help="FID reference when it is not --data: mnist or a folder of images (for a latent "
             "model: images at the decoded resolution); or self, data-free: the starting "
             "model's own samples at the reference configuration (also a paired distance).")] = None,
    vae: Annotated[Path | None, typer.Option(
        help="Latent models (DiT-XL/2): local diffusers AutoencoderKL folder that decodes each "
             "trial's samples before FID.")] = None,
    sampler: SamplerOpt = "ddim",
    steps: StepsOpt = 20,
    timestep_spacing: TimestepSpacingOpt = None,
    n_samples: Annotated[int, typer.Option(help="Samples per trial for FID.")] = 500,
    finetune: Annotated[str | None, typer.Option(
        help="one-shot (once for the space), per-trial (Algorithm 1 each) or none (default: "
             "one-shot; none with --diffusers).")] = None,
    finetune_steps: Annotated[int, typer.Option(
        help="Steps of that fine-tune (per-trial: each trial's; lower it there).")] = 2400,
    finetune_lr: Annotated[float, typer.Option(
        help="Its learning rate (the paper's 2e-5 is for long DiT-XL/2 fine-tunes).")] = 3e-4,
    finetune_ema: Annotated[float, typer.Option(help="EMA decay of its teacher.")] = 0.99,
    full_share: Annotated[float, typer.Option(
        help="One-shot: share of samples trained with the most blocks allowed.")] = 0.5,
    distill: Annotated[bool, typer.Option(
        help="Fine-tune onto the starting model's full-depth prediction, not the noise.")] = False,
    storage: Annotated[str | None, typer.Option(
        help="Study storage: a .db path, a .journal path (several drivers on one machine) or "
             "an Optuna URL, e.g. postgresql+psycopg://... (several machines) "
             "(default studies/<arch>.db).")] = None,
    study_name: Annotated[str | None, typer.Option(help="Default: the arch.")] = None,
    search_algorithm: Annotated[str, typer.Option(
        help="The search algorithm (Optuna sampler): gp (default, best for small budgets), "
             "tpe, nsga2, random.")] = "gp",
    max_concurrent: Annotated[int | None, typer.Option(help="Trials at once.")] = None,
    gpus_per_trial: Annotated[float | None, typer.Option(
        help="GPUs per trial (default 1 if the cluster has GPUs, else 0).")] = None,
    ray_address: Annotated[str | None, typer.Option(
        help="Join this Ray cluster (default: start a local one).")] = None,
    fid_weights: Annotated[str | None, typer.Option(
        help="Local Inception weights for FID on real data.")] = None,
    kid: Annotated[bool, typer.Option(help="Also compute KID.")] = False,
    seed: SeedOpt = 0,
    confirm: Annotated[int, typer.Option(
        help="After the trials, measure the steps-only ladder and the joint front's levers on "
             "this many fresh seeds (as `ase-search confirm`), so `pareto` gives a verdict; "
             "0: do not.")] = 0,
    diffusers: DiffusersOpt = None,
    configs: Annotated[Path | None, typer.Option(
        help="Measure this YAML list of configurations (sampler, steps, schedule, reuse) into "
             "the study instead of searching; --budget is not used. `confirm` and `pareto` "
             "judge them like trials.")] = None,
    screen: Annotated[int, typer.Option(
        help="First measure this many candidates by a data-free objective (paired error "
             "against the full model's samples from the same noise) and spend the FID budget "
             "on the best of them; 0: off.")] = 0,
    screen_n: Annotated[int, typer.Option(help="Samples per screened candidate.")] = 64,
    screen_audit: Annotated[int, typer.Option(
        help="Dropped candidates, drawn at random, measured with FID too (does the screen drop "
             "points FID would keep?).")] = 0,
) -> None:
    """Search sampler, step count and exit schedule together (FID vs latency).

    A joint space (a `sampling:` section, as the shipped spaces have) searches the sampler and
    its step count with the schedule, and --sampler/--steps are not used; a space without one
    searches schedules at --sampler/--steps. Every study also measures the full model at a
    ladder of step counts (the steps-only baseline), once, so `pareto` can say whether exits
    beat simply taking fewer steps. With --diffusers a local DiTTransformer2DModel folder is
    searched training-free through the exit-schedule hooks and diffusers schedulers.
    """
    import optuna

    from ase_search.search import SearchConfig, SearchError, run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar says what matters

    reference = fid_data if fid_data is not None else data
    extractor = fid_extractor(reference, diffusers)
    if reference == "self" and diffusers is None and checkpoint is not None:
        extractor = "inception-v3-compat"  # another model's own samples (the testbeds': MNIST)
    if finetune is None:  # a diffusers model has no fine-tune yet: searched training-free
        finetune = "none" if diffusers is not None else "one-shot"
    try:  # SearchError names SearchConfig fields: say them the way the user typed them
        config = SearchConfig(
            arch=arch, budget=budget, space=str(space) if space else None,
            checkpoint=str(checkpoint) if checkpoint else None, data=data, sampler=sampler,
            steps=steps, n_samples=n_samples, finetune=finetune, finetune_steps=finetune_steps,
            finetune_lr=finetune_lr, finetune_ema=finetune_ema, finetune_full_share=full_share,
            finetune_distill=distill,
            storage=storage, study_name=study_name, search_algorithm=search_algorithm,
            max_concurrent=max_concurrent, gpus_per_trial=gpus_per_trial,
            ray_address=ray_address, fid_extractor=extractor, fid_weights=fid_weights, kid=kid,
            seed=seed, vae=None if vae is None else str(vae), fid_data=fid_data,
            timestep_spacing=timestep_spacing, confirm=confirm,
            diffusers=None if diffusers is None else str(diffusers),
            configs=None if configs is None else str(configs),
            screen=screen, screen_n=screen_n, screen_audit=screen_audit,
        )
        if config.vae is not None:
            from ase_search.vae import load_vae

            load_vae(config.vae)  # a VAE the trials cannot load fails here, not in every trial
        use_threads()  # the driver's one-shot fine-tune and cost-model profile
        summary = run_search(config, log=lambda m: console_err.print(m, highlight=False))
    except SearchError as err:
        raise err.renamed({field: _flag(field) for field in err.fields}) from None
    split = ", ".join(f"{name.replace('_', ' ')} {seconds / 60:.1f}"
                      for name, seconds in summary.setup_time.items() if seconds >= 1.0)
    console.print(
        f"study {summary.study_name!r} in {summary.storage}: {summary.complete} finished trials "
        f"({summary.new_trials} new, {summary.failed} failed) in {summary.wall_time / 60:.1f} min"
        + (f" (of which, in min: {split})" if split else "")
        + f". Next: ase-search pareto {summary.storage}"
    )

