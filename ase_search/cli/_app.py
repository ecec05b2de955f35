"""Shared pieces of the CLI: the app, consoles, option aliases and error reporting."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

# The sampler registry imports neither torch nor diffusers, so --help stays fast.
from ase_search.samplers import SAMPLER_NAMES

if TYPE_CHECKING:
    from ase_search.runtime import ThreadBudget
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule
    from ase_search.tome import ToMeConfig

app = typer.Typer(
    name="ase-search",
    help="Early-exit diffusion transformers (ASE) and automatic exit-schedule search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()  # results (stdout)
console_err = Console(stderr=True)  # progress and errors (stderr)

# Errors a user can act on. Library errors subclass ValueError; a missing file is an OSError.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)


# The thread budget of the running command, settled by the app's --threads option. One value
# per invocation, like the consoles above; commands cannot see the app callback's context.
_thread_budget: ThreadBudget | None = None


@app.callback()
def _app_options(
    threads: Annotated[int | None, typer.Option(
        "--threads", help="Threads for torch and BLAS (default: $ASE_SEARCH_THREADS, else the "
                          "CPUs this process may use that other processes leave idle).",
        show_default=False)] = None,
) -> None:
    """Early-exit diffusion transformers (ASE) and automatic exit-schedule search."""
    global _thread_budget
    import os

    from ase_search.runtime import THREADS_ENV, thread_budget

    # A budget given by --threads or $ASE_SEARCH_THREADS is settled (and checked) here; the
    # automatic one samples the CPUs for a quarter second, so only commands that compute take
    # it, in `use_threads()` (a `--help` or `pareto` stays instant). Importing torch would slow
    # every `--help` too: commands put the budget in force once their inputs are checked.
    _thread_budget = (thread_budget(threads)
                      if threads is not None or os.environ.get(THREADS_ENV, "").strip() else None)


def use_threads(threads: int | None = None) -> None:
    """Put the command's thread budget in force (torch and BLAS) and say it on stderr.

    Commands call this after checking their inputs and before the heavy work, so a bad input
    still gets one error line. The budget is the one the app's ``--threads`` option settled (see
    :func:`ase_search.runtime.thread_budget`); outside the app it is made here.

    Args:
        threads: the command's own ``--threads`` (``pretrain``, ``finetune`` and ``bench`` had
            one before the app did); when given it wins.
    """
    from ase_search.runtime import apply_threads, thread_budget

    budget = (thread_budget(threads) if threads is not None
              else _thread_budget or thread_budget())
    # Say what torch really runs with, not what was asked for.
    budget = replace(budget, threads=apply_threads(budget.threads))
    console_err.print(budget.describe(), highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one red error line on stderr and exit non-zero."""
    message = " ".join(message.split())  # wrapped library messages become one line
    console_err.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


# Option aliases, defined once and shared by every command.
ArchOpt = Annotated[str, typer.Option("--arch", "-a", help="Backbone family: dit or uvit.")]
SamplerOpt = Annotated[
    str, typer.Option("--sampler", help=f"{', '.join(SAMPLER_NAMES[:-1])} or {SAMPLER_NAMES[-1]}.")
]
StepsOpt = Annotated[int, typer.Option("--steps", help="Number of sampling steps.")]
TimestepSpacingOpt = Annotated[str | None, typer.Option(
    "--timestep-spacing", show_default=False,
    help="Timesteps a discrete sampler calls the model at: linspace = the official DiT/ASE "
         "respacing create_diffusion(str(N)), what the paper used; leading = ADM's ddimN, this "
         "project's default for DDIM. Default: the sampler's own (ddim leading, ddpm and "
         "dpm-solver linspace; euler-maruyama has continuous times and takes none).")]
TimestepsOpt = Annotated[Path | None, typer.Option(
    "--timesteps", show_default=False,
    help="A timesteps JSON from `ase-search timesteps` (searched timesteps): its sampler, step "
         "count and timesteps replace --sampler, --steps and --timestep-spacing.")]
# DDIM-20, the search's sampler: sample and eval default to what the search measured.
DEFAULT_STEPS = 20
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (common random numbers).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N; auto picks.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Samples per model call.")]
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


# SamplerConfig fields whose option is not the field's name (their messages start with the field).
_SAMPLER_FLAGS = {"name": "--sampler", "steps": "--steps", "cfg_scale": "--cfg-scale",
                  "timestep_spacing": "--timestep-spacing"}


def sampler_config(sampler: str, steps: int, *, cfg_scale: float = 1.0,
                   timestep_spacing: str | None = None,
                   timesteps: Path | None = None) -> SamplerConfig:
    """The :class:`~ase_search.samplers.SamplerConfig` of the sampling options; its errors name
    the options the user typed (``--timestep-spacing``, not ``timestep_spacing``). A
    ``--timesteps`` file gives the sampler, its step count and its timesteps."""
    from ase_search.samplers import SamplerConfig

    if timesteps is not None:
        from ase_search.timesteps import load_timesteps

        if timestep_spacing is not None:
            raise ValueError("--timesteps and --timestep-spacing contradict each other; drop one")
        name, explicit = load_timesteps(timesteps)
        try:
            return SamplerConfig(name=name, steps=len(explicit), cfg_scale=cfg_scale,
                                 timesteps=explicit)
        except ValueError as err:
            raise ValueError(f"{timesteps}: {err}") from None
    try:
        return SamplerConfig(name=sampler, steps=steps, cfg_scale=cfg_scale,
                             timestep_spacing=timestep_spacing)
    except ValueError as err:
        message = str(err)
        field = next((f for f in _SAMPLER_FLAGS if message.startswith(f + " ")), None)
        if field is None:
            raise
        raise ValueError(_SAMPLER_FLAGS[field] + message[len(field):]) from None


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


def pick_device(device: str) -> str:
    """Resolve ``auto`` to ``cuda`` when a GPU is present, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def schedule_weights(schedule: str, checkpoint: Path | None) -> Path | None:
    """The weights to run ``schedule`` with: ``--checkpoint`` when given, else the weights an
    exported schedule was measured with (its ``metadata["weights"]``, relative to the schedule
    file), else ``None`` (the default model).

    Raises:
        ValueError: the recorded weights are missing (the message says how to rebuild them) or
            are not the ones recorded.
    """
    if checkpoint is not None or not schedule.lower().endswith(".json"):
        return checkpoint
    from ase_search.finetune import recorded_weights
    from ase_search.schedule import ExitSchedule

    loaded = ExitSchedule.from_json(schedule)
    record = loaded.metadata.get("weights")
    if not record:
        return None
    weights = recorded_weights(record, Path(schedule).parent, arch=loaded.arch)
    console_err.print(f"using {weights}: the weights the search measured this schedule with "
                      f"(--checkpoint overrides)", highlight=False, soft_wrap=True)
    return weights


def warn_untuned_exits(schedule: ExitSchedule, arch: str, weights: Path | None) -> None:
    """Warn when an early-exit schedule runs on the shipped testbed model (``weights`` None),
    which was never fine-tuned for exits: its samples are far worse than the full model's.
    Intervals that reuse blocks need no fine-tune (block reuse is training-free)."""
    if weights is not None or all(k == schedule.depth or mode == "reuse"
                                  for k, mode in zip(schedule.blocks, schedule.modes)):
        return
    console_err.print(
        f"[yellow]warning:[/yellow] {schedule.name} exits early, but the shipped {arch} testbed "
        f"is not fine-tuned for early exits, so expect a much worse FID; fine-tune it "
        f"(`ase-search finetune --arch {arch} --schedule {schedule.name}`) or pass the one-shot "
        f"weights of a search (--checkpoint studies/<study>-one-shot.safetensors)",
        highlight=False, soft_wrap=True)
