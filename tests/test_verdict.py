"""The verdict of exits against fewer steps, checked against brute force on hand-made points.

The brute force enumerates every (judged point, steps-only point) pair; the points sit on small
integer grids so that ties in FID and in latency are common.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from ase_search.verdict import (
    PairedPoint,
    Point,
    SeedRatio,
    compare_hypervolumes,
    headline,
    matched_point,
    non_dominated,
    paired_headline,
    paired_speedup,
    speedup_at_matched_fid,
)


# ###################################################################### brute force
def brute_speedup(p: tuple, steps: list[tuple]) -> float | None:
    """Every pair (p, s) with s's FID no worse: the smallest s latency / p latency."""
    ratios = [s[2] / p[2] for s in steps if s[1] <= p[1]]
    return min(ratios) if ratios else None


def brute_headline(joint: list[tuple], steps: list[tuple], ref: float, window: float
                   ) -> float | None:
    speedups = [brute_speedup(p, steps) for p in joint if p[1] <= window * ref]
    speedups = [s for s in speedups if s is not None]
    return max(speedups) if speedups else None


def brute_area(points: list[tuple], ref: tuple[int, int]) -> int:
    """Unit cells [x, x+1) x [y, y+1) below ``ref`` dominated by a point (integer coordinates)."""
    return sum(1 for x in range(ref[0]) for y in range(ref[1])
               if any(p[1] <= x and p[2] <= y for p in points))


def random_points(rng: random.Random, prefix: str, k: int) -> list[tuple]:
    return [(f"{prefix}{i}", rng.randint(1, 8), rng.randint(1, 8)) for i in range(k)]


STEPS = [("ddim-5", 9.0, 0.25), ("ddim-10", 8.0, 0.5), ("ddim-20", 7.5, 1.0),
         ("ddim-7", 9.0, 0.35)]  # ddim-7 ties ddim-5's FID at a higher cost


# ###################################################################### speedup at matched FID
def test_speedup_matches_brute_force_on_every_pair():
    rng = random.Random(0)
    for _ in range(300):
        steps = random_points(rng, "s", rng.randint(1, 6))
        for p in random_points(rng, "p", 6):
            got = speedup_at_matched_fid(p, steps)
            want = brute_speedup(p, steps)
            assert (got is None) == (want is None)
            if want is not None:
                assert got == pytest.approx(want)


def test_speedup_hand_made_points():
    # FID 9.0: the cheapest steps-only point that good is DDIM-5 (0.25); the equally good
    # DDIM-7 costs more, so it is not the match.
    assert matched_point(("D1/ddim-7", 9.0, 0.3), STEPS).label == "ddim-5"
    assert speedup_at_matched_fid(("D1/ddim-7", 9.0, 0.3), STEPS) == pytest.approx(0.25 / 0.3)
    # An FID tie counts as a match (no worse).
    assert speedup_at_matched_fid(("x", 8.0, 0.4), STEPS) == pytest.approx(0.5 / 0.4)
    # Better than every steps-only point: no match.
    assert speedup_at_matched_fid(("x", 7.4, 0.1), STEPS) is None
    assert matched_point(("x", 7.4, 0.1), STEPS) is None
    # A steps-only point against its own baseline: speedup 1.
    assert speedup_at_matched_fid(STEPS[1], STEPS) == 1.0


def test_latency_tie_takes_the_better_fid():
    steps = [("a", 5.0, 1.0), ("b", 4.0, 1.0)]
    assert matched_point(("x", 6.0, 2.0), steps).label == "b"
    assert speedup_at_matched_fid(("x", 6.0, 2.0), steps) == 0.5


# ###################################################################### headline
def test_headline_matches_brute_force():
    rng = random.Random(1)
    for _ in range(300):
        steps = random_points(rng, "s", rng.randint(1, 5))
        joint = random_points(rng, "j", rng.randint(1, 6)) + steps
        ref = rng.randint(1, 6)
        window = rng.choice([1.0, 1.25, 2.0])
        got = headline(joint, steps, ref, window)
        want = brute_headline(joint, steps, ref, window)
        assert (got is None) == (want is None)
        if want is not None:
            assert got.speedup == pytest.approx(want)
            assert got.point.fid <= window * ref
            assert got.matched.fid <= got.point.fid
            assert got.speedup == pytest.approx(got.matched.latency / got.point.latency)


def test_headline_window_is_inclusive_and_excludes_worse_quality():
    ref = 8.0
    steps = [("full/ddim-20", 8.0, 1.0), ("full/ddim-5", 12.0, 0.25)]
    at_edge = ("exit-a", 10.0, 0.5)   # exactly 1.25 x 8: inside; matched with DDIM-20 -> 2.0
    outside = ("exit-b", 10.5, 0.05)  # just outside: its speedup of 20 is ignored
    joint = [at_edge, outside, *steps]
    top = headline(joint, steps, ref)
    assert top.point.label == "exit-a" and top.speedup == pytest.approx(2.0)
    assert top.matched.label == "full/ddim-20"
    # With a wider window the cheap, worse point counts; DDIM-5 (12) is worse than it, so its
    # match is DDIM-20: 1.0 / 0.05.
    wide = headline(joint, steps, ref, window=1.5)
    assert wide.point.label == "exit-b" and wide.speedup == pytest.approx(20.0)
    # Nothing in the window: no headline.
    assert headline([outside], steps, ref, window=1.0) is None


def test_headline_without_exits_is_one():
    """The joint front holding only steps-only points: nothing beats fewer steps."""
    top = headline(STEPS, STEPS, reference_fid=7.5)
    assert top.speedup == 1.0


def test_headline_tie_takes_the_lower_fid():
    steps = [("s", 4.0, 2.0)]
    joint = [("b", 5.0, 1.0), ("a", 4.0, 1.0)]  # both matched with s: speedup 2
    assert headline(joint, steps, 5.0).point.label == "a"


@pytest.mark.parametrize("bad", [dict(reference_fid=0.0), dict(reference_fid=math.nan),
                                 dict(reference_fid=5.0, window=0.9)])
def test_headline_refuses_bad_reference_or_window(bad):
    with pytest.raises(ValueError, match="reference_fid|window"):
        headline(STEPS, STEPS, **bad)


def test_points_refuse_bad_values():
    with pytest.raises(ValueError, match="x: latency"):
        Point("x", 1.0, 0.0)
    with pytest.raises(ValueError, match="x: fid"):
        Point("x", math.nan, 1.0)
    with pytest.raises(ValueError, match="x: fid"):
        PairedPoint("x", (), 1.0)


# ###################################################################### fronts, hypervolume
def test_non_dominated_matches_brute_force():
    rng = random.Random(2)
    for _ in range(200):
        pts = random_points(rng, "p", rng.randint(1, 8))
        want = {p[0] for p in pts if not any(
            q[1] <= p[1] and q[2] <= p[2] and (q[1] < p[1] or q[2] < p[2]) for q in pts)}
        front = non_dominated(pts)
        assert {p[0] for p in front} == want
        assert all(p in pts for p in front)  # returned as given


def test_non_dominated_keeps_paired_points_judged_on_the_mean():
    a = PairedPoint("a", (4.0, 6.0), 1.0)  # mean 5
    b = PairedPoint("b", (5.5, 5.5), 1.0)  # mean 5.5: dominated by a on the mean
    c = PairedPoint("c", (9.0, 9.0), 0.5)
    assert non_dominated([b, c, a]) == [c, a]


def test_hypervolume_comparison_matches_counted_cells():
    rng = random.Random(3)
    ref = (9, 9)
    for _ in range(100):
        steps = random_points(rng, "s", rng.randint(1, 5))
        joint = steps + random_points(rng, "j", rng.randint(0, 4))
        hv = compare_hypervolumes(joint, steps, ref)
        assert hv.front == pytest.approx(brute_area(joint, ref))
        assert hv.baseline == pytest.approx(brute_area(steps, ref))
        assert hv.ratio >= 1.0 and hv.gain >= 0.0  # the joint set contains the baseline


def test_hypervolume_hand_made():
    hv = compare_hypervolumes([("a", 1, 2), ("b", 2, 1)], [("a", 1, 2)], (3, 3))
    assert (hv.front, hv.baseline) == (3.0, 2.0)
    assert hv.ratio == 1.5 and hv.gain == 1.0
    empty = compare_hypervolumes([("a", 1, 2)], [("z", 5, 5)], (3, 3))
    assert empty.baseline == 0.0 and math.isnan(empty.ratio)
    with pytest.raises(ValueError, match="reference_point"):
        compare_hypervolumes([], [], (1.0,))


# ###################################################################### paired seeds
def test_seed_ratio():
    r = SeedRatio.of([9.0, 10.0, 11.0], [10.0, 10.0, 10.0])
    assert r.per_seed == (0.9, 1.0, 1.1)
    assert r.mean == pytest.approx(1.0) and r.sd == pytest.approx(0.1)
    assert not r.exceeds_noise()
    consistent = SeedRatio.of([9.0, 9.1, 8.9], [10.0, 10.0, 10.0])
    assert consistent.exceeds_noise() and consistent.text() == "0.90 ± 0.01"
    one = SeedRatio.of([9.0], [10.0])
    assert one.sd is None and not one.exceeds_noise() and one.text() == "0.90"
    with pytest.raises(ValueError, match="same seeds"):
        SeedRatio.of([1.0, 2.0], [1.0])


def test_paired_speedup_matches_brute_force_per_seed():
    rng = random.Random(4)
    for _ in range(200):
        n_seeds = rng.randint(1, 4)
        steps = [PairedPoint(f"s{i}", tuple(rng.randint(1, 8) for _ in range(n_seeds)),
                             rng.randint(1, 8)) for i in range(rng.randint(1, 5))]
        p = PairedPoint("p", tuple(rng.randint(1, 8) for _ in range(n_seeds)), rng.randint(1, 8))
        got = paired_speedup(p, steps)
        mean_steps = [(q.label, sum(q.fids) / n_seeds, q.latency) for q in steps]
        want = brute_speedup(("p", sum(p.fids) / n_seeds, p.latency), mean_steps)
        assert (got is None) == (want is None)
        if got is None:
            continue
        assert got.speedup == pytest.approx(want)
        assert got.ratio.per_seed == pytest.approx(
            [a / b for a, b in zip(p.fids, got.matched.fids)])
        for s in range(n_seeds):
            seed_want = brute_speedup(("p", p.fids[s], p.latency),
                                      [(q.label, q.fids[s], q.latency) for q in steps])
            seed_got = got.per_seed_speedups[s]
            assert (seed_got is None) == (seed_want is None)
            if seed_want is not None:
                assert seed_got == pytest.approx(seed_want)


def test_paired_headline_and_its_spread():
    steps = [PairedPoint("full/ddim-20", (7.0, 8.0, 7.5), 1.0),
             PairedPoint("full/ddim-10", (7.2, 8.1, 7.7), 0.5),
             PairedPoint("full/ddim-5", (9.0, 9.6, 9.3), 0.25)]
    # Mean 7.7: DDIM-10 (7.667) is the cheapest no worse on the mean.
    exit_point = PairedPoint("D1/ddim-10", (7.2, 8.0, 7.9), 0.4)
    top = paired_headline([exit_point, *steps], steps, reference_fid=7.5)
    assert top.point.label == "D1/ddim-10" and top.matched.label == "full/ddim-10"
    assert top.speedup == pytest.approx(0.5 / 0.4)
    assert top.ratio.per_seed == pytest.approx([7.2 / 7.2, 8.0 / 8.1, 7.9 / 7.7])
    # Seed by seed: DDIM-10 ties at seed 0, only DDIM-20 is as good at seed 1, DDIM-10 at seed 2.
    assert top.per_seed_speedups == pytest.approx([0.5 / 0.4, 1.0 / 0.4, 0.5 / 0.4])
    # Out of the window (1.25 x 5): nothing.
    assert paired_headline([exit_point, *steps], steps, reference_fid=5.0) is None


def test_paired_points_need_the_same_seeds_and_distinct_labels():
    steps = [PairedPoint("s", (1.0, 2.0), 1.0)]
    with pytest.raises(ValueError, match="same seeds"):
        paired_speedup(PairedPoint("p", (1.0,), 1.0), steps)
    with pytest.raises(ValueError, match="distinct labels"):
        paired_speedup(PairedPoint("p", (1.0, 2.0), 1.0), steps * 2)


def test_every_pair_enumerated_on_a_fixed_grid():
    """All 4 x 4 FID/latency combinations of a point against a fixed baseline."""
    steps = [("a", 2, 4), ("b", 3, 2), ("c", 4, 1)]
    for fid, lat in itertools.product([1, 2, 3, 4], [1, 2, 3, 4]):
        assert speedup_at_matched_fid(("p", fid, lat), steps) == brute_speedup(
            ("p", fid, lat), steps)
