"""The ``ase-search`` command line.

Each command group lives in its own module and registers itself on :data:`app`. Commands are thin:
they parse options, import the library lazily (so ``--help`` stays instant) and call one library
function. Errors a user can fix (:class:`ValueError` and its subclasses, missing files) become one
red line on stderr and exit code 2; results go to stdout, progress to stderr.
"""

from __future__ import annotations

import sys

import typer

from ase_search.cli import _app
from ase_search.cli._app import app

# Importing the command modules registers their commands on `app`.
from ase_search.cli import schedules as _schedules  # noqa: E402,F401
from ase_search.cli import sample as _sample  # noqa: E402,F401
from ase_search.cli import study as _study  # noqa: E402,F401
from ase_search.cli import search as _search  # noqa: E402,F401
from ase_search.cli import train as _train  # noqa: E402,F401
from ase_search.cli import evaluate as _evaluate  # noqa: E402,F401
from ase_search.cli import snr as _snr  # noqa: E402,F401

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning user errors into one clear line."""
    try:
        app(args=argv, standalone_mode=False)
    except _app.USER_ERRORS as err:
        _app.fail(str(err))
    except typer.Abort:
        _app.console_err.print("[red]Aborted.[/red]")
        sys.exit(130)
    except typer.Exit as err:  # raised by commands that finish early
        sys.exit(err.exit_code)
    except SystemExit:
        raise
    except Exception as err:  # click usage errors keep click's own formatting
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise
