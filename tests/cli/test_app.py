"""The CLI frame: fast --help (no heavy imports), schedule commands, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ase_search.schedule import preset

ASE = str(Path(sys.executable).with_name("ase-search"))


def test_help_imports_no_heavy_library() -> None:
    code = ("import sys, ase_search.cli; "
            "heavy = [m for m in ('torch', 'ray', 'optuna', 'diffusers', 'torch_fidelity', 'pandas')"
            " if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_schedules_table_lists_table_2() -> None:
    out = subprocess.run([ASE, "schedules", "--arch", "uvit", "--sampler", "ddpm", "--steps",
                          "250"], capture_output=True, text=True, check=True).stdout
    for name in ["full", "D1", "D2", "D3", "D4", "D5", "D6"]:
        assert name in out
    # D6-U-ViT keeps 5,3,2,1,1 of 6 decoder blocks: mean 2.4 over DDPM-250's uniform steps
    assert "2.40" in out


def test_schedule_show_and_bad_file(tmp_path) -> None:
    path = tmp_path / "s.json"
    preset("D4", "dit").to_json(path)
    out = subprocess.run([ASE, "schedule", "show", str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and "D4" in out.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**preset("D4", "dit").to_dict(), "blocks": [28, 24, 20, 16]}))
    out = subprocess.run([ASE, "schedule", "show", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "one count per interval" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2
