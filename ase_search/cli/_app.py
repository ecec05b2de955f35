"""Shared pieces of the CLI: the app, consoles, option aliases and error reporting."""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console

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


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one red error line on stderr and exit non-zero."""
    message = " ".join(message.split())  # wrapped library messages become one line
    console_err.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


# Option aliases, defined once and shared by every command.
ArchOpt = Annotated[str, typer.Option("--arch", "-a", help="Backbone family: dit or uvit.")]
SamplerOpt = Annotated[
    str, typer.Option("--sampler", help="ddpm, ddim, dpm-solver or euler-maruyama.")
]
StepsOpt = Annotated[int, typer.Option("--steps", help="Number of sampling steps.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (common random numbers).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N; auto picks.")]


def pick_device(device: str) -> str:
    """Resolve ``auto`` to ``cuda`` when a GPU is present, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
