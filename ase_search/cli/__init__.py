"""The ``ase-search`` command line.

Each command group lives in its own module and registers itself on :data:`app`. Commands are thin:
they parse options, import the library lazily (so ``--help`` stays instant) and call one library
function. Errors a user can fix (:class:`ValueError` and its subclasses, missing files) become one
red line on stderr and exit code 2; results go to stdout, progress to stderr.
"""

from __future__ import annotations

import sys
from typing import NoReturn

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
from ase_search.cli import diffusers as _diffusers  # noqa: E402,F401
from ase_search.cli import timesteps as _timesteps  # noqa: E402,F401

__all__ = ["app", "main"]


def _click_exception() -> type[Exception]:
    """click's ``ClickException`` as typer raises it (typer vendors its own copy of click)."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _os_error_line(err: OSError) -> str:
    """One line for an operating-system error: the path and the OS's reason."""
    if err.strerror and err.filename is not None and type(err).__str__ is OSError.__str__:
        return f"{err.filename}: {err.strerror}"
    return str(err)


def _interrupted() -> NoReturn:
    # 130 = 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C, so that
    # `ase-search run ... && ase-search pareto ...` stops too.
    _app.console_err.print("[red]interrupted[/red]", highlight=False)
    sys.exit(130)


def _answer_interrupts() -> None:
    """Take SIGINT (Ctrl-C, ``kill -INT``) even when it was inherited as ignored.

    A non-interactive shell starts its background jobs (``cmd &``, a CI runner's, a test
    harness's) with SIGINT ignored, and Python then leaves it ignored: such a run went on for
    minutes after SIGINT, whatever the load, which looked like a slow machine. Every command here
    saves its state as it goes, so an interrupt is always safe to answer.
    """
    import signal
    import threading

    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning user errors into one clear line.

    Exit codes: 0 success, 2 an error the user can fix (bad option, bad input file, unwritable
    output, diverged training), 130 interrupted (Ctrl-C).
    """
    _answer_interrupts()
    try:
        # Without standalone mode typer returns the exit code instead of calling sys.exit; it
        # turns Ctrl-C inside a command into 130.
        code = app(args=argv, standalone_mode=False)
    except KeyboardInterrupt:  # outside the command (e.g. while importing)
        _interrupted()
    except OSError as err:  # missing or unwritable files: the path and the OS's reason
        _app.fail(_os_error_line(err))
    except FloatingPointError as err:
        # An ArithmeticError, not a ValueError: training or sampling produced NaN/inf. The
        # library's messages say that it diverged, where, and what to lower.
        _app.fail(str(err))
    except _app.USER_ERRORS as err:
        _app.fail(str(err))
    except typer.Abort:
        _interrupted()
    except typer.Exit as err:  # raised by commands that finish early
        sys.exit(err.exit_code)
    except SystemExit:
        raise
    except _click_exception() as err:  # usage errors keep click's own message, exit 2
        err.show()
        sys.exit(err.exit_code)
    if code == 130:
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)
