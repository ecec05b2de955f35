"""benchmarks/_common's verdict helper: cached cells to the rule's configurations, and the rule's
verdict on them, against figures worked out by hand."""

from __future__ import annotations


import pytest

from benchmarks._common import (
    configuration,
    judge_cells,
    levers_of,
    ratio_text,
)

F20 = [4.0, 4.2, 4.4, 4.6, 4.8]  # the full model at DDIM-20, seeds 0-4: mean 4.4


def cell(factor: float, sampler: str = "ddim", schedule: dict | None = None,
         seeds: tuple[int, ...] = (0, 1, 2, 3, 4)) -> dict:
    """A cell whose FID is ``factor`` x F20 on every seed: its log ratio to DDIM-20 is the same on
    every seed, so the rule's paired test is decided by the sign of ln(factor) alone."""
    return {"sampler": {"name": sampler, "steps": 10}, "schedule": schedule,
            "fids": [factor * F20[s] for s in seeds], "seeds": list(seeds)}


SKIP = {"arch": "dit", "depth": 12, "boundaries": [0, 0.5, 1], "blocks": [12, 6]}
REUSE = {**SKIP, "modes": ["skip", "reuse"], "periods": [1, 2]}


def test_latency_error_follows_the_levers() -> None:
    assert levers_of("ddim", None) == ["full"]
    assert levers_of("dpm-solver", None) == ["full", "solver"]
    assert levers_of("ddim", SKIP) == ["full", "skip"]
    assert levers_of("ddim", REUSE) == ["full", "reuse"]
    # the validated errors (ase_search.verdict.LATENCY_ERROR): 5% full and skip, 10% DPM-Solver++,
    # 15% block reuse
    assert configuration("a", cell(1.0), 0.5).latency.error == 0.05
    assert configuration("a", cell(1.0, "dpm-solver"), 0.5).latency.error == 0.10
    assert configuration("a", cell(1.0, schedule=SKIP), 0.5).latency.error == 0.05
    assert configuration("a", cell(1.0, schedule=REUSE), 0.5).latency.error == 0.15
    # measured: the rounds' range over the fastest, (2.2 - 2.0) / 2.0
    lat = configuration("a", cell(1.0, schedule=REUSE), 0.5, [2.1, 2.0, 2.2]).latency
    assert lat.source == "measured" and lat.error == pytest.approx(0.10)


def test_a_point_is_matched_with_the_cheapest_configuration_it_does_not_beat() -> None:
    ref = configuration("full, DDIM-20", cell(1.0), 1.0)
    ddim10 = configuration("full, DDIM-10", cell(1.25), 0.5)
    point = configuration("D1, DDIM-10", cell(1.1, schedule=SKIP), 0.4)
    judged = judge_cells([point], [ref, ddim10], ref, lever="exits")
    # 1.1 < 1.25 on every seed: it beats DDIM-10, not DDIM-20 (1.1 > 1). Match DDIM-20:
    # 1 / 0.4 = 2.5x, discounted by 5% on both sides: 2.5 x 0.95 / 1.05 = 2.26x.
    assert judged.word("D1, DDIM-10") == "2.26x vs full, DDIM-20, helps"
    head = judged.markdown("DiT-T")[0]
    assert head.startswith("**headline** (DiT-T): exits help, 2.26x faster than fewer steps")
    # DPM-Solver++ at 10 steps (1.05 x F20, latency 0.5, 10% error) is not beaten (1.1 > 1.05)
    # and is cheaper than DDIM-20. The cheapest of the ladder, it would leave the point (at 0.4)
    # below the ladder; DDIM-5 (2 x F20, 0.25), which the point beats, puts it inside:
    # 0.5 / 0.4 x 0.90 / 1.05 = 1.07x.
    dpm10 = configuration("full, DPM-Solver++-10", cell(1.05, "dpm-solver"), 0.5)
    judged = judge_cells([point], [ref, ddim10, dpm10], ref, lever="exits")
    assert judged.word("D1, DDIM-10") == "below the ladder"
    ddim5 = configuration("full, DDIM-5", cell(2.0), 0.25)
    judged = judge_cells([point], [ref, ddim10, dpm10, ddim5], ref, lever="exits")
    assert judged.word("D1, DDIM-10") == "1.07x vs full, DPM-Solver++-10, helps"
    # a point slower than its match does not help: 0.5 / 0.6 x 0.90 / 1.05 = 0.71x
    slow = configuration("D1, DDIM-14", cell(1.1, schedule=SKIP), 0.6)
    judged = judge_cells([slow], [ref, ddim10, dpm10], ref, lever="exits")
    assert judged.word("D1, DDIM-14") == "0.71x vs full, DPM-Solver++-10"
    assert judged.markdown("DiT-T")[0].startswith(
        "**headline** (DiT-T): no resolvable speedup: exits do not beat fewer steps")


def test_beyond_and_below_the_ladder_get_no_number() -> None:
    ref = configuration("full, DDIM-20", cell(1.0), 1.0)
    ddim10 = configuration("full, DDIM-10", cell(1.25), 0.5)
    # 0.8 x F20 beats both: beyond, against the cheapest one at or above its latency 0.4
    # (DDIM-10): ratio 0.8 / 1.25 = 0.64 on every seed
    best = configuration("D1, DDIM-7", cell(0.8, schedule=SKIP), 0.4)
    # 2 x F20 at 0.3 beats neither and is cheaper than the whole ladder: below it
    cheap = configuration("D4, DDIM-5", cell(2.0, schedule=SKIP), 0.3)
    judged = judge_cells([best, cheap], [ref, ddim10], ref, lever="exits", window=3.0)
    assert judged.word("D1, DDIM-7") == "beyond the ladder"
    assert judged.word("D4, DDIM-5") == "below the ladder"
    assert judged.against("D1, DDIM-7") == "FID ratio 0.64 (95% 0.64-0.64, 5 seeds)"
    assert judged.markdown("t")[0].startswith("**headline** (t): no speedup number; D1, DDIM-7")
    # outside the window (2 x 4.4 > 1.25 x 4.4): not judged at all
    judged = judge_cells([cheap], [ref, ddim10], ref, lever="exits")
    assert judged.word("D4, DDIM-5") == "outside the window"
    assert judged.verdict.candidates == 0
    assert ("- the lowest FID outside the window: D4, DDIM-5, 8.80 ± 0.63 (2.00x the "
            "reference's; the window ends at 5.50)") in judged.markdown("t")


def test_seeds_a_search_selected_on_and_seeds_not_shared_are_left_out() -> None:
    ref = configuration("full, DDIM-20", cell(1.0), 1.0)
    ddim10 = configuration("full, DDIM-10", cell(1.25), 0.5)
    # picked on seed 0, where it is far better (0.5); on seeds 1-4 it is 1.1 x F20
    fids = [0.5 * F20[0], *(1.1 * f for f in F20[1:])]
    picked = configuration("searched", {**cell(1.0), "fids": fids}, 0.4)
    judged = judge_cells([picked], [ref, ddim10], ref, lever="exits", selection_seeds=(0,))
    assert judged.verdict.seeds == (1, 2, 3, 4)
    assert judged.notes == ("seed 0 left out of every compared configuration: the search "
                            "selected its configurations on it",)
    # on seeds 1-4 alone it beats DDIM-10 and not DDIM-20: 2.26x as above, FID 1.1 x 4.5
    j = judged.judgement("searched")
    assert j.match.label == "full, DDIM-20" and j.point.fid == pytest.approx(4.95)
    # a configuration measured on seeds 0-2 only: everything is judged on those three
    short = configuration("D1, DDIM-10", cell(1.1, schedule=SKIP, seeds=(0, 1, 2)), 0.4)
    judged = judge_cells([short], [ref, ddim10], ref, lever="exits")
    assert judged.verdict.seeds == (0, 1, 2)
    assert judged.notes[0].startswith("the caches hold seeds 0, 1, 2, 3, 4, not every "
                                      "configuration all of them: judged on the 3 they share")


def test_ratio_text_is_the_paired_geometric_mean() -> None:
    # per seed 0.5 and 2.0: geometric mean 1.0
    assert ratio_text([1.0, 4.0], [2.0, 2.0]).startswith("1.00 (")
    assert ratio_text([3.0], [2.0]) == "1.50"
