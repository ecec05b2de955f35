"""benchmarks/exit_heads: the paragraph reports/levers.md takes from its cache, against figures
worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.exit_heads import summary


def _cache(path: Path, fids: dict[str, list[float]]) -> Path:
    cells = {"cost-model": {"cost_model": {}}}
    for key, values in fids.items():
        steps, name = key.split("/")
        cells[key] = {"name": name, "steps": int(steps.removeprefix("ddim-")), "fids": values}
    path.write_text(json.dumps({"version": 1, "cells": cells}))
    return path


def test_summary_gives_d1s_cost_with_and_without_heads(tmp_path: Path) -> None:
    heads = _cache(tmp_path / "heads.json", {
        "ddim-20/full": [4.0, 6.0], "ddim-7/full": [5.0, 5.0],
        "ddim-7/D1": [5.5, 6.0],  # per seed 1.1 and 1.2 of the full model: mean 1.15
        "ddim-20/D1": [4.8, 6.6],  # 1.2 and 1.1: 1.15 again
        "ddim-7/D4": [9.0, 9.0]})
    base = _cache(tmp_path / "base.json", {
        "ddim-20/full": [4.0, 6.0], "ddim-7/full": [5.0, 5.0],
        "ddim-7/D1": [7.0, 6.0],  # 1.4 and 1.2: 1.30
        "ddim-20/D1": [6.0, 9.0]})  # 1.5 and 1.5: 1.50
    text = summary(1.25, heads, base)
    assert "costs 1.15-1.15x the full model's FID on the same weights, against 1.30-1.50x" in text
    # Reference FID 5.0: the best exit is D1 at DDIM-20 (5.7, 1.14x), and only D4 is outside
    # 1.25 x 5.0.
    assert "the best exit configuration is D1, DDIM-20 at 5.70 (1.14x the reference" in text
    assert "within 1.25x the reference FID: D1, DDIM-20, D1, DDIM-7 (" in text
    assert "none comes within" in summary(1.1, heads, base)
    assert text.startswith("Exit heads (DiT-T, ")
    assert summary(1.25, heads, base, arch="uvit").startswith("Exit heads (U-ViT-T, ")


def test_summary_waits_for_both_caches(tmp_path: Path) -> None:
    base = _cache(tmp_path / "base.json", {"ddim-20/full": [4.0], "ddim-7/D1": [5.0],
                                           "ddim-7/full": [4.5]})
    assert summary(1.25, tmp_path / "missing.json", base) is None
    no_d1 = _cache(tmp_path / "heads.json", {"ddim-20/full": [4.0]})
    assert summary(1.25, no_d1, base) is None


def test_each_testbed_has_its_own_caches(tmp_path: Path, monkeypatch) -> None:
    # Without paths the summary reads the testbed's caches, reports/exit_heads-uvit.json and
    # reports/steps_vs_exits-uvit.json for U-ViT-T: here under a stand-in repository root.
    import benchmarks._common as common

    monkeypatch.setattr(common, "ROOT", tmp_path)
    (tmp_path / "reports").mkdir()
    fids = {"ddim-20/full": [4.0, 6.0], "ddim-7/full": [5.0, 5.0], "ddim-7/D1": [5.5, 6.0]}
    assert summary(1.25, arch="uvit") is None
    _cache(tmp_path / "reports" / "exit_heads-uvit.json", fids)
    _cache(tmp_path / "reports" / "steps_vs_exits-uvit.json", fids)
    assert summary(1.25, arch="dit") is None
    assert "(U-ViT-T, `reports/exit_heads-uvit.md`" in summary(1.25, arch="uvit")
