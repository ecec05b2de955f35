"""Fixtures shared by the test files."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def cli(capsys) -> Callable[[list[str]], tuple[int, str, str]]:
    """Run ``ase-search`` in-process (with main()'s error handling); return (code, out, err)."""
    from ase_search.cli import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        code = 0
        try:
            main(argv)
        except SystemExit as err:
            code = err.code
        out, err = capsys.readouterr()
        return code, out, err

    return run
