"""benchmarks/diffusers: the two verdicts (diffusers' caches; ase-search's exit schedules, without
the seed the study selected on) on measured latencies, against figures worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.diffusers import Params, verdicts

F20 = [4.0, 4.2, 4.4, 4.6, 4.8]


def _cell(group: str, name: str, fids: list[float], fastest: float, slowest: float,
          sampler: str = "ddim", steps: int = 20) -> dict:
    return {"group": group, "name": name, "sampler": sampler, "steps": steps, "fids": fids,
            "seeds": [0, 1, 2, 3, 4], "what": "trial 3", "schedule": None,
            "latency": {"fastest_s": fastest, "rounds_cpu_s": [fastest, slowest, fastest]}}


def test_caches_and_searched_configurations_are_judged_apart(tmp_path: Path) -> None:
    configs = {
        # the ladder: 10% latency spread at DDIM-20 and DDIM-10, none at DDIM-5
        "full/ddim-20": _cell("full", "ddim-20", F20, 1.0, 1.1),
        "full/ddim-10": _cell("full", "ddim-10", [1.25 * f for f in F20], 0.5, 0.55, steps=10),
        "full/ddim-5": _cell("full", "ddim-5", [2.0 * f for f in F20], 0.25, 0.25, steps=5),
        # 1.1 x DDIM-20 on every seed at 0.4 (10% spread): it beats DDIM-10 and DDIM-5, not
        # DDIM-20; 1 / 0.4 x 0.9 / 1.1 = 2.05x
        "cache/taylorseer-4": _cell("cache", "taylorseer-4", [1.1 * f for f in F20], 0.4, 0.44),
        # picked on seed 0 (0.5 x there), 1.3 x on seeds 1-4, at 0.3 with no spread: on seeds 1-4
        # it beats DDIM-5 only, so DDIM-10 is its match: 0.5 / 0.3 x 0.9 / 1.0 = 1.50x
        "searched/ddim-20/x": _cell("searched", "ddim-20/x",
                                    [0.5 * F20[0], *(1.3 * f for f in F20[1:])], 0.3, 0.3),
        "ase/D1": _cell("ase", "D1", [300.0] * 5, 0.9, 0.9),
    }
    params = Params(study=str(tmp_path / "none.db"), window=1.5)
    pts, (caches, ours) = verdicts(configs, params)
    assert caches.verdict.seeds == (0, 1, 2, 3, 4) and caches.notes == ()
    assert caches.word("taylorseer-4, DDIM-20") == "2.05x vs full, DDIM-20, helps"
    assert pts["cache/taylorseer-4"].latency.error == pytest.approx(0.1)
    assert ours.verdict.seeds == (1, 2, 3, 4)
    assert ours.notes == ("seed 0 left out of every compared configuration: the search selected "
                          "its configurations on it",)
    label = "searched trial 3, DDIM-20 (x)"
    assert ours.word(label) == "1.50x vs full, DDIM-10, helps"
    assert ours.judgement(label).point.fid == pytest.approx(1.3 * 4.5)  # seeds 1-4 only
    assert ours.word("ase D1, DDIM-20") == "outside the window"
    assert ours.markdown("ours")[0].startswith("**headline** (ours): ase-search's exit schedules "
                                               "help, 1.50x faster than fewer steps")
