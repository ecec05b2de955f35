"""benchmarks/levers: its cells, its levers and a tiny run through the real runner."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.levers import Params, arch_section, arch_verdict, keys, lever_schedule

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
                      "seeds": list(range(len(values))), "block_acceleration": 0.0}
    return cells


F20 = [4.0, 4.2, 4.4, 4.6, 4.8]


def times(factor: float) -> list[float]:
    """``factor`` x the full model's DDIM-20 FIDs on every seed (a paired log ratio with no
    spread: the rule's test is decided by its sign)."""
    return [factor * f for f in F20]


def test_levers_are_judged_against_ddim_and_dpm_solver() -> None:
    p = Params(archs=("dit",), steps_only=(5, 10, 20), exit_steps=(10,), presets=("D1",),
               levers=("skip", "reuse2"), window=1.5)  # FID <= 1.5 x 4.4 = 6.6 in the window
    fids = {"dit/ddim-20/full": times(1.0), "dit/ddim-10/full": times(1.25),
            "dit/ddim-5/full": times(2.0),
            "dit/ddim-10/D1/skip": times(1.1), "dit/ddim-10/D1/reuse2": times(1.3)}
    judged, ladder, points = arch_verdict(_cells(fids), "dit", p)
    # D1 on 12 blocks is 12, 11, 10, 9, 9 over the fifths of t, two DDIM-10 calls in each: 102
    # blocks, latency 102 / 240 = 0.425. It beats DDIM-10 (1.1 < 1.25) and DDIM-5, not DDIM-20:
    # 1 / 0.425 x 0.95 / 1.05 (5% error each, skip and the full model) = 2.13x.
    assert judged.word("D1 skip, DDIM-10") == "2.13x vs full, DDIM-20, helps"
    # reuse2 refreshes every other call (111 blocks, 0.4625, 15% error): 1.3 beats DDIM-5 only,
    # so DDIM-10 (0.5) is its match: 0.5 / 0.4625 x 0.95 / 1.15 = 0.89x.
    assert judged.word("D1 reuse2, DDIM-10") == "0.89x vs full, DDIM-10"
    assert judged.verdict.headline.point.label == "D1 skip, DDIM-10"
    # DPM-Solver++-10 (1.05, latency 0.5, 10% error) is not beaten by D1 skip and is cheaper
    # than DDIM-20: 0.5 / 0.425 x 0.90 / 1.05 = 1.01x (tested at alpha 0.05 / 2, two candidates).
    fids["dit/dpm-solver-10/full"] = times(1.05)
    lines, verdict = arch_section(_cells(fids), "dit", p, [])
    assert verdict[0].startswith("**headline** (DiT-T, skip and block reuse on the base weights): "
                                 "skip and block reuse help, 1.01x faster than fewer steps")
    assert "full, DPM-Solver++-10" in verdict[0]
    assert ("Steps-only front: full, DDIM-5 (8.80, 0.25), full, DPM-Solver++-10 (4.62, 0.50), "
            "full, DDIM-20 (4.40, 1.00).") in lines


def test_exits_of_the_fine_tuned_weights_are_judged_against_the_base_weights_ladder(
        tmp_path: Path, monkeypatch) -> None:
    import benchmarks._common as common
    from benchmarks.steps_vs_exits import cache_verdict

    monkeypatch.setattr(common, "ROOT", tmp_path)
    (tmp_path / "reports").mkdir()
    base = _cells({"dit/ddim-20/full": times(1.0), "dit/ddim-10/full": times(1.25)})
    for c in base.values():  # the weights' file is not there: no digest to check
        c.update(weights="none.safetensors", weights_sha256="0" * 64)
    (tmp_path / "reports" / "levers.json").write_text(json.dumps({"cells": base}))
    # The fine-tuned model's own full depth is far better (0.5): judged against it, nothing would
    # beat anything; the rule judges against the starting weights' ladder instead.
    shot = {k.removeprefix("dit/"): c for k, c in _cells({
        "dit/ddim-20/full": times(0.5), "dit/ddim-7/D1/skip": times(1.1)}).items()}
    path = tmp_path / "reports" / "steps_vs_exits.json"
    path.write_text(json.dumps({"cells": shot}))
    text = "\n".join(cache_verdict(path, "dit", 1.25, "DiT-T, one-shot"))
    # DDIM-7 calls at t = 0, 0.142, ..., 0.852: D1 runs 12, 12, 11, 10, 10, 9, 9 blocks, 73 of
    # DDIM-20's 240. It beats DDIM-10 and not DDIM-20: 240 / 73 x 0.95 / 1.05 = 2.97x.
    assert text.startswith("**headline** (DiT-T, one-shot, `reports/steps_vs_exits.md`): exits "
                           "help, 2.97x faster than fewer steps at matched FID")
    assert "the cheapest steps-only configuration it does not beat: full, DDIM-20" in text


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
    assert "**headline** (DiT-T, skip and block reuse on the base weights)" in text
    assert "D1 reuse2, DDIM-10" in text
    assert "full, DPM-Solver++-3" in text
    cells = json.loads(out.with_suffix(".json").read_text())["cells"]
    assert cells["dit/dpm-solver-3/full"]["sampler"]["name"] == "dpm-solver"
    assert cells["dit/dpm-solver-3/full"]["blocks_per_call"] == [12, 12, 12]
    # D1 on 12 blocks is 12, 11, 10, 9, 9 over the fifths of t; DDIM-10 calls twice in each,
    # noise first: a refresh (all 12 blocks), then a reuse call at the count.
    assert cells["dit/ddim-10/D1/reuse2"]["blocks_per_call"] == [12, 9, 12, 9, 12, 10, 12, 11,
                                                                  12, 12]
    assert out.with_suffix(".html").is_file()
