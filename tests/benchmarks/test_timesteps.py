"""benchmarks/timesteps.py: the report's verdict column follows the one rule."""

from __future__ import annotations

from benchmarks.timesteps import _verdicts


def _cell(kind, steps, fids):
    return {"arch": "dit", "kind": kind, "steps": steps, "fids": fids,
            "seeds": list(range(1, len(fids) + 1)), "timesteps": list(range(steps, 0, -1))}


def test_a_searched_count_matching_a_longer_uniform_one_gets_the_call_ratio():
    wiggle = [1.0, 1.03, 0.97, 1.01, 0.99, 1.02, 0.98, 1.0]
    cells = {f"dit/uniform-{k}": _cell("uniform", k, [f * w for w in wiggle])
             for k, f in ((5, 6.0), (6, 5.5), (7, 5.0), (8, 4.9), (10, 4.8))}
    # searched 5 steps: uniform 7's FID on every seed (no better, no worse)
    cells["dit/searched-5"] = _cell("searched", 5, [5.0 * w for w in wiggle])
    (row,) = _verdicts(cells, "dit", "searched")
    assert row[0] == "5" and row[-1] == "1.40x (matches uniform ddim-7)"
    # no better than uniform at its own count: 1.00x
    cells["dit/searched-5"] = _cell("searched", 5, [6.0 * w for w in wiggle])
    assert _verdicts(cells, "dit", "searched")[0][-1] == "1.00x (matches uniform ddim-5)"
