"""Do exits help? Configurations judged against the steps-only baseline at matched FID.

A user who wants faster sampling can take fewer steps instead of exiting early, so an exit
configuration is worth something only where it beats every steps-only configuration (the full
model at some sampler and step count) of no worse quality. Points here are ``(label, fid,
latency)``, both objectives minimised, latency in any unit shared by all points (e.g. relative to
a reference configuration, the full model at DDIM-20).

* :func:`speedup_at_matched_fid`: the latency of the cheapest steps-only point whose FID is no
  worse than the point's, over the point's latency (``None`` when no steps-only point is that
  good). Above 1 the point is faster than fewer steps at its quality.
* :func:`headline`: the largest such speedup among the joint front's points whose FID is within
  ``window`` times the reference FID (at worse quality every speedup is cheap and says nothing).
* :func:`compare_hypervolumes`: the area a front dominates against the baseline's.
* Paired-seed versions (:class:`PairedPoint`, :func:`paired_speedup`, :func:`paired_headline`,
  :class:`SeedRatio`): with FIDs per seed measured with common random numbers, the match is made
  on the means and its spread is the per-seed ratio ``FID_point / FID_matched``, so a report can
  say whether the difference exceeds the seed noise.

Everything here is pure Python on numbers; nothing is measured.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar, Union

__all__ = [
    "Headline",
    "HypervolumeComparison",
    "PairedPoint",
    "PairedSpeedup",
    "Point",
    "SeedRatio",
    "compare_hypervolumes",
    "headline",
    "matched_point",
    "non_dominated",
    "paired_headline",
    "paired_speedup",
    "speedup_at_matched_fid",
]


def _check_number(name: str, value: float, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return value


# ###################################################################### points
@dataclass(frozen=True)
class Point:
    """One configuration: its label, FID and latency (both minimised).

    Args:
        label: what the configuration is, e.g. ``"ddim-10/D3"``.
        fid: its FID (>= 0).
        latency: its latency (> 0), in the unit every compared point uses.
    """

    label: str
    fid: float
    latency: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "fid", _check_number(f"{self.label}: fid", self.fid,
                                                      positive=False))
        object.__setattr__(self, "latency", _check_number(f"{self.label}: latency",
                                                          self.latency, positive=True))


# A point, its fields as a tuple ``(label, fid, latency)``, or a PairedPoint (at its mean FID).
PointLike = Union[Point, tuple[str, float, float], "PairedPoint"]


P = TypeVar("P")  # a PointLike, returned as given


def _as_point(p: PointLike) -> Point:
    if isinstance(p, Point):
        return p
    if isinstance(p, PairedPoint):
        return p.point
    label, fid, latency = p
    return Point(label, fid, latency)


def _dominates(a: Point, b: Point) -> bool:
    return a.fid <= b.fid and a.latency <= b.latency and (a.fid < b.fid or a.latency < b.latency)


def non_dominated(points: Iterable[P]) -> list[P]:
    """The points no other point dominates (no worse in FID and latency, better in one), sorted
    by latency then FID, as given (a :class:`PairedPoint` is judged at its mean FID and returned
    as itself). Points with identical values do not dominate each other; all are kept."""
    given = list(points)
    pts = [_as_point(p) for p in given]
    front = [(q, g) for q, g in zip(pts, given) if not any(_dominates(o, q) for o in pts)]
    return [g for _, g in sorted(front, key=lambda qg: (qg[0].latency, qg[0].fid, qg[0].label))]


# ###################################################################### speedup at matched FID
def matched_point(point: PointLike, steps_only: Iterable[PointLike]) -> Point | None:
    """The cheapest steps-only point whose FID is no worse (``<=``) than ``point``'s.

    Among equally cheap ones the lowest FID (then label) is taken. ``None`` when no steps-only
    point reaches ``point``'s FID.
    """
    p = _as_point(point)
    good = [q for q in map(_as_point, steps_only) if q.fid <= p.fid]
    if not good:
        return None
    return min(good, key=lambda q: (q.latency, q.fid, q.label))


def speedup_at_matched_fid(point: PointLike, steps_only: Iterable[PointLike]) -> float | None:
    """Latency of the cheapest steps-only point with FID no worse than ``point``'s, over
    ``point``'s latency; ``None`` when no steps-only point is that good.

    Above 1: ``point`` reaches its quality faster than any number of steps does; below 1: fewer
    steps alone are faster at that quality.
    """
    p = _as_point(point)
    match = matched_point(p, steps_only)
    return None if match is None else match.latency / p.latency


@dataclass(frozen=True)
class Headline:
    """The verdict's headline: the joint point with the largest speedup at matched FID.

    Attributes:
        point: the joint point.
        matched: the steps-only point it is matched with.
        speedup: ``matched.latency / point.latency``.
        reference_fid: the reference configuration's FID.
        window: points counted had ``fid <= window * reference_fid``.
    """

    point: Point
    matched: Point
    speedup: float
    reference_fid: float
    window: float


def _check_window(reference_fid: float, window: float) -> tuple[float, float]:
    reference_fid = _check_number("reference_fid", reference_fid, positive=True)
    window = _check_number("window", window, positive=True)
    if window < 1:
        raise ValueError(f"window must be >= 1 (a share of FID above the reference's allowed), "
                         f"got {window}")
    return reference_fid, window


def headline(joint_front: Iterable[PointLike], steps_only: Iterable[PointLike],
             reference_fid: float, window: float = 1.25) -> Headline | None:
    """The largest speedup at matched FID among joint points with ``fid <= window *
    reference_fid``.

    Args:
        joint_front: the points judged (the joint front: steps-only and exit configurations).
        steps_only: the steps-only baseline.
        reference_fid: the reference configuration's FID (full model, DDIM-20).
        window: the quality window, a factor >= 1 on ``reference_fid``.

    Returns:
        The :class:`Headline` (ties: the lower FID, then the label), or ``None`` when no joint
        point in the window has a steps-only match.
    """
    reference_fid, window = _check_window(reference_fid, window)
    baseline = [_as_point(q) for q in steps_only]
    best: Headline | None = None
    for p in map(_as_point, joint_front):
        if p.fid > window * reference_fid:
            continue
        match = matched_point(p, baseline)
        if match is None:
            continue
        cand = Headline(p, match, match.latency / p.latency, reference_fid, window)
        if best is None or (-cand.speedup, p.fid, p.label) < (-best.speedup, best.point.fid,
                                                               best.point.label):
            best = cand
    return best


# ###################################################################### hypervolume
@dataclass(frozen=True)
class HypervolumeComparison:
    """Hypervolumes (area dominated up to a reference point) of a front and of a baseline.

    Attributes:
        front: the front's hypervolume.
        baseline: the baseline's.
        reference_point: ``(fid, latency)`` bounding both.
    """

    front: float
    baseline: float
    reference_point: tuple[float, float]

    @property
    def ratio(self) -> float:
        """``front / baseline``: 1 when the front adds nothing; NaN when the baseline is 0."""
        return self.front / self.baseline if self.baseline > 0 else math.nan

    @property
    def gain(self) -> float:
        """``front - baseline``: the area only the front dominates when it contains the
        baseline."""
        return self.front - self.baseline


def compare_hypervolumes(front: Iterable[PointLike], baseline: Iterable[PointLike],
                         reference_point: Sequence[float]) -> HypervolumeComparison:
    """Hypervolume of ``front`` against ``baseline``'s, both bounded by ``reference_point``.

    Minimisation in ``(fid, latency)``; points not strictly better than the reference in both add
    nothing (:func:`ase_search.pareto.hypervolume`).

    Raises:
        ValueError: ``reference_point`` is not two finite numbers.
    """
    from ase_search.pareto import hypervolume

    if len(reference_point) != 2 or not all(
            isinstance(x, (int, float)) and math.isfinite(x) for x in reference_point):
        raise ValueError(f"reference_point must be two finite numbers (fid, latency), got "
                         f"{reference_point!r}")
    ref = (float(reference_point[0]), float(reference_point[1]))
    coords = [[(p.fid, p.latency) for p in map(_as_point, pts)] for pts in (front, baseline)]
    return HypervolumeComparison(hypervolume(coords[0], ref), hypervolume(coords[1], ref), ref)


# ###################################################################### paired seeds
@dataclass(frozen=True)
class SeedRatio:
    """Per-seed ratios ``a_s / b_s`` of two configurations measured with the same seeds.

    Common random numbers make the per-seed ratio far less noisy than the ratio of two means
    measured apart, so its spread says whether ``a`` and ``b`` really differ.

    Attributes:
        per_seed: ``a_s / b_s`` for each seed, in seed order.
    """

    per_seed: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.per_seed:
            raise ValueError("a SeedRatio needs at least one seed")
        object.__setattr__(self, "per_seed", tuple(
            _check_number("per-seed ratio", r, positive=False) for r in self.per_seed))

    @classmethod
    def of(cls, a: Sequence[float], b: Sequence[float]) -> SeedRatio:
        """The ratios ``a[s] / b[s]``.

        Raises:
            ValueError: ``a`` and ``b`` have different numbers of seeds, or a ``b`` is not > 0.
        """
        if len(a) != len(b) or not a:
            raise ValueError(f"paired FIDs need the same seeds on both sides, got {len(a)} and "
                             f"{len(b)} values")
        return cls(tuple(_check_number("fid", x, positive=False)
                         / _check_number("fid", y, positive=True) for x, y in zip(a, b)))

    @property
    def mean(self) -> float:
        return statistics.fmean(self.per_seed)

    @property
    def sd(self) -> float | None:
        """Sample standard deviation (``ddof = 1``); ``None`` for one seed."""
        return statistics.stdev(self.per_seed) if len(self.per_seed) > 1 else None

    @property
    def se(self) -> float | None:
        """Standard error of the mean ratio; ``None`` for one seed."""
        sd = self.sd
        return None if sd is None else sd / math.sqrt(len(self.per_seed))

    def exceeds_noise(self, z: float = 2.0) -> bool:
        """Whether the mean ratio differs from 1 by more than ``z`` standard errors (never with
        one seed, whose noise is unknown)."""
        se = self.se
        return se is not None and abs(self.mean - 1.0) > z * se

    def text(self) -> str:
        """``0.93 ± 0.04`` (mean ± sd over seeds; just the mean for one seed)."""
        sd = self.sd
        return f"{self.mean:.2f}" + ("" if sd is None else f" ± {sd:.2f}")


@dataclass(frozen=True)
class PairedPoint:
    """A configuration measured over seeds with common random numbers.

    Args:
        label: what the configuration is.
        fids: FID per seed, in the seed order every compared point shares.
        latency: its latency (> 0).
    """

    label: str
    fids: tuple[float, ...]
    latency: float

    def __post_init__(self) -> None:
        if not self.fids:
            raise ValueError(f"{self.label}: fids must hold one FID per seed, got none")
        object.__setattr__(self, "fids", tuple(
            _check_number(f"{self.label}: fid", f, positive=False) for f in self.fids))
        object.__setattr__(self, "latency", _check_number(f"{self.label}: latency",
                                                          self.latency, positive=True))

    @property
    def fid(self) -> float:
        """Mean FID over seeds."""
        return statistics.fmean(self.fids)

    @property
    def point(self) -> Point:
        """The point at the mean FID."""
        return Point(self.label, self.fid, self.latency)


@dataclass(frozen=True)
class PairedSpeedup:
    """Speedup at matched FID judged on mean FIDs, with its per-seed spread.

    Attributes:
        point: the configuration judged.
        matched: the cheapest steps-only configuration whose mean FID is no worse.
        speedup: ``matched.latency / point.latency``.
        ratio: per seed, ``FID_point / FID_matched``: at most 1 on the mean by construction;
            whether it is below 1 beyond the seed noise says whether the point is really better,
            or only as good.
        per_seed_speedups: the same match made on each seed's FIDs alone (``None`` where no
            steps-only configuration is that good at that seed): how much the speedup itself
            moves with the seed.
    """

    point: PairedPoint
    matched: PairedPoint
    speedup: float
    ratio: SeedRatio
    per_seed_speedups: tuple[float | None, ...]


def _check_seeds(points: Sequence[PairedPoint]) -> int:
    counts = {len(p.fids) for p in points}
    if len(counts) > 1:
        raise ValueError(f"paired points need FIDs for the same seeds; got "
                         f"{sorted(counts)} seeds across {[p.label for p in points]}")
    return counts.pop() if counts else 0


def paired_speedup(point: PairedPoint, steps_only: Sequence[PairedPoint]) -> PairedSpeedup | None:
    """:func:`speedup_at_matched_fid` on mean FIDs, with the per-seed spread of the match.

    Returns:
        ``None`` when no steps-only configuration's mean FID is no worse than ``point``'s.

    Raises:
        ValueError: the points do not all hold FIDs for the same number of seeds, or two
            steps-only configurations share a label.
    """
    seeds = _check_seeds([point, *steps_only])
    by_label = {q.label: q for q in steps_only}
    if len(by_label) != len(steps_only):
        raise ValueError("steps-only configurations need distinct labels, got "
                         f"{[q.label for q in steps_only]}")
    match = matched_point(point.point, [q.point for q in steps_only])
    if match is None:
        return None
    matched = by_label[match.label]
    per_seed = tuple(
        speedup_at_matched_fid(Point(point.label, point.fids[s], point.latency),
                               [Point(q.label, q.fids[s], q.latency) for q in steps_only])
        for s in range(seeds))
    return PairedSpeedup(point, matched, matched.latency / point.latency,
                         SeedRatio.of(point.fids, matched.fids), per_seed)


def paired_headline(joint_front: Sequence[PairedPoint], steps_only: Sequence[PairedPoint],
                    reference_fid: float, window: float = 1.25) -> PairedSpeedup | None:
    """:func:`headline` on mean FIDs, returned with the per-seed spread of its match.

    Returns:
        The :class:`PairedSpeedup` of the headline point, or ``None`` when no joint point in the
        window has a steps-only match.
    """
    top = headline([p.point for p in joint_front], [q.point for q in steps_only], reference_fid,
                   window)
    if top is None:
        return None
    chosen = next(p for p in joint_front if p.point == top.point)
    result = paired_speedup(chosen, steps_only)
    assert result is not None and result.speedup == top.speedup
    return result
