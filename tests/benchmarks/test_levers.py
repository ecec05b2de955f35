"""benchmarks/levers: its cells, its levers and a tiny run through the real runner."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.levers import Params, keys, lever_schedule

ROOT = Path(__file__).resolve().parents[2]


def test_keys_name_arch_steps_preset_and_lever() -> None:
    p = Params(archs=("dit",), steps_only=(5, 20), exit_steps=(10,), presets=("D1",),
               levers=("skip", "reuse3"))
    assert keys(p) == ["dit/cost-model", "dit/ddim-5/full", "dit/ddim-20/full",
                       "dit/ddim-10/D1/skip", "dit/ddim-10/D1/reuse3"]
    # DDIM-10 makes two calls per fifth of t: reuse3 runs what reuse2 runs (refresh, reuse), so
    # it is not measured twice; at DDIM-20 (four calls) they differ.
    p = dataclasses.replace(p, exit_steps=(10, 20), levers=("reuse2", "reuse3"))
    assert keys(p)[3:] == ["dit/ddim-10/D1/reuse2", "dit/ddim-20/D1/reuse2",
                           "dit/ddim-20/D1/reuse3"]


def test_levers_are_the_preset_with_its_blocks_run_another_way() -> None:
    skip = lever_schedule("D3", "skip", "dit", 12)
    reuse = lever_schedule("D3", "reuse3", "dit", 12)
    assert skip.modes == ("skip",) * 5 and skip.blocks == (12, 11, 9, 8, 7)
    assert reuse.blocks == skip.blocks and reuse.boundaries == skip.boundaries
    assert reuse.modes == ("skip",) + ("reuse",) * 4 and reuse.periods == (1, 3, 3, 3, 3)


@pytest.mark.parametrize("bad", [{"levers": ("skip", "cache")}, {"levers": ("reuse0",)},
                                 {"levers": ("skip", "skip")}, {"archs": ("unet",)},
                                 {"presets": ("D2",)}, {"reference_steps": 9}])
def test_bad_parameters_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        Params(**bad)


def test_tiny_run_writes_the_headline(tmp_path: Path) -> None:
    out = tmp_path / "levers.md"
    args = [sys.executable, "-m", "benchmarks.levers", "--threads", "1", "--archs", "dit",
            "--n", "8", "--seeds", "1", "--batch-size", "8", "--latency-batch", "4",
            "--steps-only", "3", "--exit-steps", "10", "--reference-steps", "3",
            "--presets", "D1", "--levers", "skip", "reuse2", "--out", str(out)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                               "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "**headline** (DiT-T, base weights)" in text and "D1 reuse2, DDIM-10" in text
    cells = json.loads(out.with_suffix(".json").read_text())["cells"]
    # D1 on 12 blocks is 12, 11, 10, 9, 9 over the fifths of t; DDIM-10 calls twice in each,
    # noise first: a refresh (all 12 blocks), then a reuse call at the count.
    assert cells["dit/ddim-10/D1/reuse2"]["blocks_per_call"] == [12, 9, 12, 9, 12, 10, 12, 11,
                                                                  12, 12]
    assert out.with_suffix(".html").is_file()
