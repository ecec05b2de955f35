"""``ase-search ARGS`` run in the test's process through the console script's own entry point.

A Python and torch start-up per case cost the suite minutes; cases that need a process of their
own (Ctrl-C, the umask) start one. Anything ``main`` lets escape fails the test, as a traceback
would. What a command changes in its process, besides its torch threads (which tests read after
it), is put back: the environment, the working folder, the SIGINT handler and the program name
click prints.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_cli(args: list[str | Path], *, cwd: Path | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """What ``subprocess.run(["ase-search", *args], capture_output=True, text=True)`` returns."""
    from ase_search.cli import main

    argv = [str(a) for a in args]
    out, err, code = io.StringIO(), io.StringIO(), 0
    saved = signal.getsignal(signal.SIGINT), os.getcwd(), dict(os.environ), sys.argv
    os.environ.update(env or {})
    sys.argv = ["ase-search", *argv]
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        handler, here, environ, sys.argv = saved
        signal.signal(signal.SIGINT, handler)
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environ)
    return subprocess.CompletedProcess(["ase-search", *argv], code, out.getvalue(),
                                       err.getvalue())
