"""benchmarks/levers: its cells, its levers and a tiny run through the real runner."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.levers import Params, arch_section, keys, lever_schedule, one_shot_summary

ROOT = Path(__file__).resolve().parents[2]


def test_keys_name_arch_steps_preset_and_lever() -> None:
    p = Params(archs=("dit",), steps_only=(5, 20), exit_steps=(10,), presets=("D1",),
               levers=("skip", "reuse3"))
    assert keys(p) == ["dit/cost-model", "dit/ddim-5/full", "dit/ddim-20/full",
                       "dit/dpm-solver-5/full", "dit/dpm-solver-20/full",
                       "dit/ddim-10/D1/skip", "dit/ddim-10/D1/reuse3"]
    p = dataclasses.replace(p, steps_only_solvers=("ddim",))
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
                                 {"presets": ("D2",)}, {"reference_steps": 9},
                                 {"steps_only_solvers": ("dpm-solver",)},
                                 {"steps_only_solvers": ("ddim", "dpm")},
                                 {"steps_only_solvers": ("ddim", "ddim")}])
def test_bad_parameters_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        Params(**bad)


def _cells(fids: dict[str, list[float]]) -> dict[str, dict]:
    """Cells of the DiT testbed with the given FIDs and a cost model in which a call costs its
    block count (12 blocks, nothing else): latency relative to DDIM-20 is blocks / 240."""
    cost = {"arch": "dit", "depth": 12, "fixed": 0.0, "block": 1.0, "dropped": 0.0,
            "batch_size": 1, "device": "cpu", "components": {}, "conditions": {}}
    cells = {"dit/cost-model": {"cost_model": cost}}
    for key, values in fids.items():
        _, run, name, *lever = key.split("/")
        solver, _, steps = run.rpartition("-")
        schedule = (lever_schedule(name, lever[0], "dit", 12) if lever else
                    lever_schedule("full", "skip", "dit", 12))
        cells[key] = {"arch": "dit", "name": name, "lever": lever[0] if lever else "full",
                      "steps": int(steps), "sampler": {"name": solver, "steps": int(steps)},
                      "schedule": schedule.to_dict(), "fids": values,
                      "block_acceleration": 0.0}
    return cells


def test_dpm_solver_points_join_the_steps_only_front() -> None:
    fids = {"dit/ddim-20/full": [4.0, 4.2], "dit/ddim-10/full": [5.0, 5.2],
            "dit/ddim-10/D1/skip": [4.6, 4.8]}
    # D1 on 12 blocks is 12, 11, 10, 9, 9 over the fifths of t, two DDIM-10 calls in each: 102
    # blocks, latency 102 / 240 = 0.425. Against DDIM alone its match (FID 4.7) is DDIM-20:
    # 1 / 0.425 = 2.35x.
    p = Params(archs=("dit",), steps_only=(10, 20), exit_steps=(10,), presets=("D1",),
               levers=("skip",))
    _, head = arch_section(_cells(fids), "dit", p, [])
    assert "is **2.35x**, by D1 skip, DDIM-10" in head and "against full, DDIM-20" in head
    # DPM-Solver++ at 10 steps (FID 4.3, latency 0.5) beats DDIM-10 and becomes the match:
    # 0.5 / 0.425 = 1.18x.
    lines, head = arch_section(_cells({**fids, "dit/dpm-solver-10/full": [4.2, 4.4]}), "dit",
                               p, [])
    assert "is **1.18x**, by D1 skip, DDIM-10" in head
    assert "against full, DPM-Solver++-10 (FID 4.30" in head
    assert ("Steps-only front: full, DPM-Solver++-10 (4.30, 0.50), full, DDIM-20 (4.10, 1.00)."
            in lines)


def test_one_shot_exits_are_judged_against_the_base_weights_front(tmp_path: Path,
                                                                   monkeypatch) -> None:
    import benchmarks._common as common

    base = _cells({"dit/ddim-20/full": [4.0, 4.2], "dit/ddim-10/full": [5.0, 5.2],
                   "dit/dpm-solver-10/full": [4.2, 4.4]})
    p = Params(archs=("dit",), steps_only=(10, 20), exit_steps=(7,), presets=("D1",),
               levers=("skip",))
    monkeypatch.setattr(common, "ROOT", tmp_path)  # reports/steps_vs_exits.json under tmp_path
    assert one_shot_summary(base, "dit", p) is None
    shot = {k.removeprefix("dit/"): c for k, c in _cells({
        "dit/ddim-20/full": [6.0, 6.0], "dit/ddim-7/D1/skip": [4.6, 4.8]}).items()}
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "steps_vs_exits.json").write_text(json.dumps({"cells": shot}))
    text = one_shot_summary(base, "dit", p)
    # DDIM-7 calls at t = 0, 0.142, ..., 0.852: D1 runs 12, 12, 11, 10, 10, 9, 9 blocks, 73 of
    # DDIM-20's 240. Its FID 4.7 is matched by DPM-Solver++-10 (4.3 at 0.5): 0.5 / (73 / 240).
    assert "D1, DDIM-7 at 4.70 ± 0.14, latency 0.304" in text
    assert ("is 1.64x, by D1, DDIM-7 (FID 4.70 ± 0.14) against full, DPM-Solver++-10 (FID "
            "4.30 ± 0.14)") in text


def test_tiny_run_writes_the_headline(tmp_path: Path) -> None:
    out = tmp_path / "levers.md"
    args = [sys.executable, "-m", "benchmarks.levers", "--threads", "1", "--archs", "dit",
            "--n", "8", "--seeds", "1", "--batch-size", "8", "--latency-batch", "4",
            "--steps-only", "3", "--exit-steps", "10", "--reference-steps", "3",
            "--steps-only-solvers", "ddim", "dpm-solver", "--presets", "D1", "--levers", "skip",
            "reuse2", "--out", str(out)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                               "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "**headline** (DiT-T, base weights)" in text and "D1 reuse2, DDIM-10" in text
    assert "full, DPM-Solver++-3" in text
    cells = json.loads(out.with_suffix(".json").read_text())["cells"]
    assert cells["dit/dpm-solver-3/full"]["sampler"]["name"] == "dpm-solver"
    assert cells["dit/dpm-solver-3/full"]["blocks_per_call"] == [12, 12, 12]
    # D1 on 12 blocks is 12, 11, 10, 9, 9 over the fifths of t; DDIM-10 calls twice in each,
    # noise first: a refresh (all 12 blocks), then a reuse call at the count.
    assert cells["dit/ddim-10/D1/reuse2"]["blocks_per_call"] == [12, 9, 12, 9, 12, 10, 12, 11,
                                                                  12, 12]
    assert out.with_suffix(".html").is_file()
