"""Every computing command picks its torch threads, says it on stderr, and obeys --threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ENTRY = [sys.executable, "-c", "from ase_search.cli import main; main()"]


def test_threads_option_is_applied_and_said(tmp_path):
    # A subprocess: the line must report what torch really runs with in a fresh process.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ASE_SEARCH_THREADS": "1"}
    out = subprocess.run([*ENTRY, "--threads", "2", "sample", "--n", "1", "--steps", "1",
                          "--batch-size", "1", "-o", str(tmp_path / "g.png")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    # --threads wins over ASE_SEARCH_THREADS and the OMP_NUM_THREADS cap of the automatic choice.
    assert "torch threads: 2 (" in out.stderr and "set by --threads" in out.stderr
    assert (tmp_path / "g.png").is_file()


def test_env_var_and_bad_values(tmp_path, cli, monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("ASE_SEARCH_THREADS", "3")
        code, _, err = cli(["sample", "--n", "1", "--steps", "1", "--batch-size", "1",
                            "-o", str(tmp_path / "g.png")])
        assert code == 0, err
        assert "torch threads: 3 (" in err and "set by ASE_SEARCH_THREADS" in err
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv("ASE_SEARCH_THREADS", "none")
    # --threads wins, so with it the bad environment variable is never read.
    for argv, message in ((["--threads", "0"], "error: --threads must be a whole number"),
                          ([], "error: ASE_SEARCH_THREADS must be a whole number")):
        code, _, err = cli([*argv, "sample", "--n", "1", "-o", str(tmp_path / "h.png")])
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "h.png").exists()


def test_help_does_not_import_torch():
    code = ("import sys; from ase_search.cli import main\n"
            "try:\n    main(['--threads', '1', 'sample', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported for --help'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent, timeout=60)
    assert out.returncode == 0, out.stderr
