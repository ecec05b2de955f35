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


def test_a_point_better_than_every_step_count_gets_a_lower_bound() -> None:
    from ase_search.verdict import PairedPoint

    from benchmarks._common import beyond_steps

    steps = [PairedPoint("full, DDIM-20", (4.0, 6.0), 1.0),
             PairedPoint("full, DDIM-10", (5.0, 7.0), 0.5)]
    exits = [PairedPoint("D1, DDIM-7", (3.0, 5.4), 0.25),  # mean 4.2 < 5.0: beyond, 1 / 0.25
             PairedPoint("D1, DDIM-20", (3.0, 5.0), 1.2),  # better, but slower than DDIM-20
             PairedPoint("D4, DDIM-7", (5.0, 6.0), 0.2),  # 5.5: DDIM-10 matches it
             PairedPoint("D1, DDIM-10", (3.6, 5.0), 0.4)]  # 4.3: beyond, 1 / 0.4
    found = beyond_steps(exits, steps)
    assert [(b.point.label, b.best.label, b.lower_bound) for b in found] == [
        ("D1, DDIM-7", "full, DDIM-20", 4.0), ("D1, DDIM-10", "full, DDIM-20", 2.5)]
    # Per seed 3.0 / 4.0 and 5.4 / 6.0: 0.75 and 0.90.
    assert found[0].text().startswith("D1, DDIM-7 reaches FID 4.20 ± 1.70, below every "
                                      "steps-only configuration's (the best, full, DDIM-20, "
                                      "has 5.00 ± 1.41; per seed 0.82 ± 0.11x it)")
    assert "**at least 4.00x**" in found[0].text()
    assert beyond_steps(exits, []) == []
