"""benchmarks/exit_heads: its comparison with the same configurations without heads, against
figures worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.exit_heads import Params, comparison

ROOT = Path(__file__).resolve().parents[2]
UVIT = ROOT / "ase_search" / "assets" / "testbed" / "uvit-t.safetensors"


def _cells(fids: dict[str, list[float]]) -> dict[str, dict]:
    cells = {"cost-model": {"cost_model": {}}}
    for key, values in fids.items():
        steps, name = key.split("/")
        cells[key] = {"name": name, "steps": int(steps.removeprefix("ddim-")), "fids": values,
                      "weights": "w.safetensors", "weights_sha256": "0" * 64}
    return cells


def test_the_gap_closed_is_read_off_paired_ratios(tmp_path: Path) -> None:
    heads = _cells({"ddim-7/full": [5.0, 5.0], "ddim-7/D1": [5.5, 5.5],  # 1.10 x full
                    "ddim-7/D4": [6.0, 6.0]})  # 1.20
    base = _cells({"ddim-7/full": [4.0, 4.0], "ddim-7/D1": [5.2, 5.2],  # 1.30 x full
                   "ddim-7/D4": [4.0, 4.0]})  # 1.00: nothing to close
    path = tmp_path / "base.json"
    path.write_text(json.dumps({"cells": base}))
    text = "\n".join(comparison(heads, Params(arch="uvit", weights=str(UVIT),
                                              baseline=str(path))))
    lines = text.splitlines()
    # D1: (1.30 - 1.10) / (1.30 - 1) = 67% of the gap closed; D1 with heads over without:
    # 5.5 / 5.2 = 1.06; the full model 5.0 / 4.0 = 1.25
    d1 = next(line for line in lines if line.startswith("| D1, DDIM-7"))
    assert [c.strip() for c in d1.strip("|").split("|")] == [
        "D1, DDIM-7", "5.20 ± 0.00", "5.50 ± 0.00", "1.30 (1.30-1.30)", "1.10 (1.10-1.10)",
        "67%", "1.06 (1.06-1.06)"]
    d4 = next(line for line in lines if line.startswith("| D4, DDIM-7"))
    assert [c.strip() for c in d4.strip("|").split("|")][5] == "–"
    full = next(line for line in lines if line.startswith("| full (fine-tuned), DDIM-7"))
    assert "1.25 (1.25-1.25)" in full
    assert "all 67%" in text and "D1 67%" in text
