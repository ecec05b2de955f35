"""benchmarks/steps_vs_exits: its testbed option (--arch) and a tiny U-ViT run through the real
runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._runner import parse
from benchmarks.steps_vs_exits import BENCHMARK, Params, keys

ROOT = Path(__file__).resolve().parents[2]
UVIT = ROOT / "ase_search" / "assets" / "testbed" / "uvit-t.safetensors"


@pytest.mark.parametrize("bad", [{"arch": "unet"}, {"arch": "uvit", "trials": (22,)},
                                 {"trials": (23,)}, {"arch": "uvit", "presets": ("D7",)}])
def test_bad_parameters_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        Params(**{"weights": str(UVIT), **bad})


def test_dit_keeps_its_report_and_another_testbed_gets_its_own() -> None:
    # The testbed is not part of a cell's identity (the DiT cells cached before --arch existed
    # stay valid): each testbed has its own cache instead.
    params, args = parse(BENCHMARK, ["--weights", str(UVIT)])
    assert params.arch == "dit" and args.out == ROOT / "reports" / "steps_vs_exits.md"
    params, args = parse(BENCHMARK, ["--arch", "uvit", "--weights", str(UVIT)])
    assert args.out == ROOT / "reports" / "steps_vs_exits-uvit.md"
    params, args = parse(BENCHMARK, ["--trials", "22", "--weights", str(UVIT)])
    assert params.trials == (22,) and keys(params)[-1] == "ddim-20/trial22"


def test_tiny_uvit_run(tmp_path: Path) -> None:
    out = tmp_path / "sve.md"
    args = [sys.executable, "-m", "benchmarks.steps_vs_exits", "--threads", "1", "--arch",
            "uvit", "--weights", str(UVIT), "--n", "8", "--seeds", "1", "--batch-size", "8",
            "--latency-batch", "4", "--steps-only", "2", "--exit-steps", "2",
            "--reference-steps", "2", "--presets", "D4", "--out", str(out)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                               "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert out.read_text().startswith("# Exits against fewer steps on the U-ViT-T testbed")
    cells = json.loads(out.with_suffix(".json").read_text())["cells"]
    # Table 2's U-ViT D4 runs 5, 4, 2, 2, 1 of the 6 decoder blocks over the fifths of t (data
    # first); DDIM-2 calls at t = 0.5, then 0.0: 2 blocks, then 5.
    assert cells["ddim-2/D4"]["schedule"]["arch"] == "uvit"
    assert cells["ddim-2/D4"]["blocks_per_call"] == [2, 5]
    assert cells["cost-model"]["cost_model"]["arch"] == "uvit"


def test_the_report_judges_exits_against_the_starting_weights_not_its_own(
        tmp_path: Path, monkeypatch) -> None:
    import benchmarks._common as common
    from benchmarks.steps_vs_exits import report

    from .test_levers import _cells, times

    monkeypatch.setattr(common, "ROOT", tmp_path)
    (tmp_path / "reports").mkdir()
    machine = {"machine": {"date": "2026-11-30 10:59 UTC", "cpu": "cpu", "logical_cores": 2,
                           "cores_usable": 2, "gpu": None, "torch": "2", "torch_threads": 1,
                           "python": "3.11"}, "command": "python -m benchmarks.steps_vs_exits"}
    shot = {k.removeprefix("dit/"): {**c, **machine, "n": 500, "weights": "shot.safetensors",
                                     "weights_sha256": "1" * 64, "weights_kind": "one-shot",
                                     "seconds": {"sampling": 60.0, "fid": 0.0}}
            for k, c in _cells({"dit/ddim-20/full": times(0.5),
                                "dit/ddim-7/D1/skip": times(1.1)}).items()}
    shot["cost-model"] = {**shot["cost-model"], **machine}
    params = Params(weights=str(UVIT))
    text = report(shot, params, "sve.json").markdown
    assert "No verdict yet: the steps-only ladder of the starting weights is not in" in text
    base = _cells({"dit/ddim-20/full": times(1.0), "dit/ddim-10/full": times(1.25)})
    for c in base.values():
        c.update(weights="none.safetensors", weights_sha256="0" * 64)
    (tmp_path / "reports" / "levers.json").write_text(json.dumps({"cells": base}))
    text = report(shot, params, "sve.json").markdown
    # D1 at DDIM-7 (73 of 240 blocks) against the starting ladder: 240 / 73 x 0.95 / 1.05 = 2.97x;
    # against the fine-tuned model's own full depth (0.5) it would beat nothing
    assert ("**headline** (DiT-T, exits on the one-shot weights): exits help, 2.97x faster than "
            "fewer steps") in text
    assert "| D1, DDIM-7 " in text and "2.97x vs full, DDIM-20, helps" in text
    assert "| full (fine-tuned), DDIM-20 | fine-tuned |" in text
    assert "- Verdict: re-judged on 2026-12-07 with the paired rule of `ase_search/verdict.py`" in text
