"""Do exits (or reuse, or any lever) beat simply taking fewer steps? The one rule that says so.

A user who wants faster sampling can take fewer steps instead of exiting early, so a lever is
worth something only where it reaches a quality that the full model, at any sampler and step
count of the **steps-only ladder**, needs more time for. Every "beats", "beyond", "at least" and
"helps" that ase-search prints (``pareto``, the HTML report, ``confirm``, ``export`` and every
benchmark report) comes from :func:`judge`, on FIDs measured per seed with common random numbers:

1. **c beats q** (:func:`compare`): with ``d_s = ln FID(c, s) - ln FID(q, s)`` over the shared
   seeds, the one-sided paired t upper bound on the mean of ``d`` (level ``alpha``) is below 0
   and, with 6 seeds or fewer, every seed agrees in sign; with 7 or more the exact one-sided
   Wilcoxon signed-rank test decides (p < ``alpha``). One seed never beats anything.
2. **The match** ``q*`` is the cheapest steps-only configuration that c does not beat: every
   cheaper one is beaten, so the full model needs at least ``latency(q*)`` to reach c's quality.
   The speedup is ``latency(q*) / latency(c)``, discounted by both latencies' uncertainty
   (:class:`Latency`: a measured latency's round spread, or the cost model's validated error for
   that lever, larger where it was never validated).
3. A point that beats **every** steps-only configuration gets no speedup number: it is *beyond
   the measured ladder*, reported with its paired FID ratio and 95% interval against the
   cheapest steps-only configuration at or above its latency; the ladder needs more steps.
   A point cheaper than the whole ladder that beats none of it is *below the ladder*: fewer steps
   than were measured might match it, so it gets no number either.
4. **"helps"** only when the discounted speedup is above 1. The headline is the largest
   discounted speedup among the levers' points in the quality window (FID <= ``window`` x the
   reference's); picked among K candidates on the same seeds, each candidate is tested at
   ``alpha / K`` (Bonferroni), so the headline's false-claim rate stays at most ``alpha``.
   Seeds added after an earlier verdict on some of them make another *look* at the same data
   (judging 1-8, then 1-16 because 1-8 said no, is two tries at one claim). The L-th look spends
   half of what the one before it did: each candidate is tested at ``alpha / (K 2^(L-1))``, so
   however often a study's seeds are extended, all its looks together claim falsely at most
   ``2 alpha`` (``alpha`` for the first look, as without extensions), and a null point cannot be
   confirmed by measuring seeds until one look happens to pass.

5. **c covers q** (:func:`cover`): c is cheaper than q at the pessimistic ends of both
   latencies' uncertainty, and q does not beat c by rule 1 (at an unadjusted ``alpha``, so q
   has every chance to show it is better). A cache that every candidate of a search fails to
   cover is one the search's front does not dominate.

Every compared configuration must hold FIDs for the same seeds, and none of them may be a seed
the search selected on (``selection_seeds``): a verdict never mixes seed counts, and never judges
on the seed a point was picked on.

Everything here is arithmetic on numbers; nothing is measured.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = [
    "ALPHA",
    "LATENCY_ERROR",
    "WINDOW",
    "Comparison",
    "Configuration",
    "Cover",
    "HypervolumeComparison",
    "Judgement",
    "Latency",
    "Point",
    "Verdict",
    "compare",
    "compare_hypervolumes",
    "cover",
    "hypervolume",
    "judge",
    "judge_point",
    "non_dominated",
    "predicted_error",
    "resolvable_difference",
]

ALPHA = 0.05  # one-sided level of every "beats"
WINDOW = 1.25  # the headline counts points with FID <= WINDOW x the reference configuration's

# The cost model's relative error per lever, as validated by benchmarks/latency.py
# (reports/latency.md: skipping blocks predicted within 5% of the wall clock) and larger where
# it was never validated: DPM-Solver++ measured 4-10% above DDIM at equal calls, block reuse
# and forecasting add memory traffic and element-wise work the cost model does not time.
LATENCY_ERROR = {"full": 0.05, "skip": 0.05, "solver": 0.10, "reuse": 0.15, "forecast": 0.20}


def _check_number(name: str, value: float, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return value


def predicted_error(levers: Iterable[str]) -> float:
    """The cost model's relative error for a configuration using ``levers`` (keys of
    :data:`LATENCY_ERROR`): the largest of theirs.

    Raises:
        ValueError: an unknown lever.
    """
    errors = [0.0]
    for lever in levers:
        if lever not in LATENCY_ERROR:
            raise ValueError(f"unknown lever {lever!r}; known: {sorted(LATENCY_ERROR)}")
        errors.append(LATENCY_ERROR[lever])
    return max(errors)


# ###################################################################### configurations
@dataclass(frozen=True)
class Latency:
    """A latency with its relative uncertainty.

    Args:
        value: the latency (> 0), in the unit every compared configuration uses.
        error: relative half-width (0 <= error < 1): the true latency is taken to lie in
            ``value * (1 -+ error)``.
        source: ``"measured"`` (the error is the rounds' spread) or ``"predicted"`` (the cost
            model's validated error for the configuration's levers, :func:`predicted_error`).
    """

    value: float
    error: float = 0.0
    source: str = "predicted"

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _check_number("latency", self.value, positive=True))
        error = _check_number("latency error", self.error, positive=False)
        if error >= 1:
            raise ValueError(f"latency error is relative and must be < 1, got {error}")
        object.__setattr__(self, "error", error)
        if self.source not in ("measured", "predicted"):
            raise ValueError(f"latency source must be 'measured' or 'predicted', got "
                             f"{self.source!r}")


@dataclass(frozen=True)
class Configuration:
    """A configuration measured on seeds with common random numbers.

    Args:
        label: what it is, e.g. ``"ddim-10, D3"``.
        fids: FID per seed, in the order of ``seeds``.
        seeds: the sample seeds (every compared configuration holds the same ones).
        latency: its :class:`Latency` (a number is taken as predicted with no error).
    """

    label: str
    fids: tuple[float, ...]
    seeds: tuple[int, ...]
    latency: Latency

    def __post_init__(self) -> None:
        fids = tuple(_check_number(f"{self.label}: fid", f, positive=True) for f in self.fids)
        seeds = tuple(int(s) for s in self.seeds)
        if not fids:
            raise ValueError(f"{self.label}: fids must hold one FID per seed, got none")
        if len(fids) != len(seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"{self.label}: {len(fids)} FIDs for seeds {list(seeds)}; give one "
                             f"FID per distinct seed")
        object.__setattr__(self, "fids", fids)
        object.__setattr__(self, "seeds", seeds)
        if not isinstance(self.latency, Latency):
            object.__setattr__(self, "latency", Latency(self.latency))

    @property
    def fid(self) -> float:
        """Mean FID over the seeds."""
        return statistics.fmean(self.fids)

    @property
    def fid_sd(self) -> float | None:
        return statistics.stdev(self.fids) if len(self.fids) > 1 else None

    def fid_text(self) -> str:
        """``4.13 ± 0.75`` (mean ± sd over seeds)."""
        sd = self.fid_sd
        return f"{self.fid:.2f}" + ("" if sd is None else f" ± {sd:.2f}")


# ###################################################################### the paired test
@functools.lru_cache(maxsize=256)
def _t_quantile(p: float, df: int) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(df, p))


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on their shared seeds: does ``a`` have a lower FID than ``b``?

    Attributes:
        a: the label of the configuration judged.
        b: the label of the one it is compared with.
        log_ratios: ``ln FID(a, s) - ln FID(b, s)`` per seed.
        alpha: the one-sided level the test ran at.
        upper: the one-sided ``1 - alpha`` upper bound on the mean log ratio (t), ``inf`` for
            one seed.
        p: the one-sided p-value of the test that decided (t for n <= 6, exact Wilcoxon above).
        test: ``"t+sign"`` (n <= 6) or ``"wilcoxon"`` (n >= 7).
        beats: whether ``a`` beats ``b`` by the rule.
    """

    a: str
    b: str
    log_ratios: tuple[float, ...]
    alpha: float
    upper: float
    p: float
    test: str
    beats: bool

    @property
    def n(self) -> int:
        return len(self.log_ratios)

    @property
    def ratio(self) -> float:
        """The geometric-mean FID ratio ``a / b`` over seeds."""
        return math.exp(statistics.fmean(self.log_ratios))

    @property
    def interval(self) -> tuple[float, float]:
        """Two-sided 95% t interval on the FID ratio (``(0, inf)`` for one seed)."""
        n = self.n
        if n < 2:
            return (0.0, math.inf)
        mean = statistics.fmean(self.log_ratios)
        half = _t_quantile(0.975, n - 1) * statistics.stdev(self.log_ratios) / math.sqrt(n)
        return (math.exp(mean - half), math.exp(mean + half))

    def text(self) -> str:
        """``FID ratio 0.93 (95% 0.88-0.98, 5 seeds)``."""
        lo, hi = self.interval
        return (f"FID ratio {self.ratio:.2f} (95% {lo:.2f}-{hi:.2f}, {self.n} seed"
                f"{'s' if self.n != 1 else ''})")


def _check_paired(a: Configuration, b: Configuration) -> None:
    if a.seeds != b.seeds:
        raise ValueError(f"a paired comparison needs the same seeds on both sides: {a.label} has "
                         f"{list(a.seeds)}, {b.label} has {list(b.seeds)}")


def compare(a: Configuration, b: Configuration, alpha: float = ALPHA) -> Comparison:
    """Whether ``a``'s FID is below ``b``'s beyond the seed noise (the rule in the module doc).

    Raises:
        ValueError: the two do not hold the same seeds, or ``alpha`` is not in (0, 0.5].
    """
    from scipy.special import stdtr

    if not 0 < alpha <= 0.5:
        raise ValueError(f"alpha must be in (0, 0.5], got {alpha}")
    _check_paired(a, b)
    d = tuple(math.log(x) - math.log(y) for x, y in zip(a.fids, b.fids))
    n = len(d)
    if n < 2:
        return Comparison(a.label, b.label, d, alpha, math.inf, 1.0, "t+sign", False)
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    se = sd / math.sqrt(n)
    if se > 0:
        upper = mean + _t_quantile(1 - alpha, n - 1) * se
        p_t = float(stdtr(n - 1, mean / se))
    else:  # every seed gives the same ratio: the bound is the ratio itself
        upper = mean
        p_t = 0.0 if mean < 0 else 1.0
    if n <= 6:
        agree = all(x < 0 for x in d)
        return Comparison(a.label, b.label, d, alpha, upper, p_t, "t+sign",
                          agree and upper < 0)
    p = _signed_rank_p(d)
    return Comparison(a.label, b.label, d, alpha, upper, p, "wilcoxon", p < alpha)


@functools.lru_cache(maxsize=64)
def _signed_rank_counts(n: int) -> tuple[int, ...]:
    """How many of the ``2**n`` sign patterns give each rank sum ``W+ = 0 .. n(n+1)/2``."""
    counts = [1] + [0] * (n * (n + 1) // 2)
    for rank in range(1, n + 1):  # add rank `rank` to the positive set or not
        for w in range(len(counts) - 1, rank - 1, -1):
            counts[w] += counts[w - rank]
    return tuple(counts)


def _signed_rank_p(d: Sequence[float]) -> float:
    """Exact one-sided Wilcoxon signed-rank p-value that ``d`` is centred below 0: ``P(W+ <=
    observed)`` over the ``2**n`` equally likely sign patterns of the null. Zeros are dropped
    (Wilcoxon's convention); tied magnitudes make the exact table invalid, so scipy's
    tie-corrected test decides then."""
    nonzero = [x for x in d if x != 0]
    if not nonzero:
        return 1.0
    magnitudes = sorted(abs(x) for x in nonzero)
    if len(set(magnitudes)) < len(magnitudes):
        from scipy.stats import wilcoxon

        return float(wilcoxon(nonzero, alternative="less").pvalue)
    rank = {m: k + 1 for k, m in enumerate(magnitudes)}
    w_plus = sum(rank[abs(x)] for x in nonzero if x > 0)
    counts = _signed_rank_counts(len(nonzero))
    return sum(counts[: w_plus + 1]) / 2 ** len(nonzero)


def resolvable_difference(sd: float, n: int, alpha: float = ALPHA) -> float:
    """The smallest relative FID improvement the rule can resolve with ``n`` seeds when the
    per-seed log ratios scatter by ``sd``: ``1 - exp(-t_{1-alpha, n-1} sd / sqrt(n))`` (the mean
    log ratio at which the t bound reaches 0; the sign and Wilcoxon parts ask for about as much).
    ``1.0`` (nothing resolvable) for fewer than 2 seeds."""
    if n < 2:
        return 1.0
    return 1.0 - math.exp(-_t_quantile(1 - alpha, n - 1) * sd / math.sqrt(n))


# ###################################################################### one point
@dataclass(frozen=True)
class Judgement:
    """One configuration judged against the steps-only ladder.

    Attributes:
        point: the configuration.
        status: ``"matched"`` (``match`` is the cheapest steps-only configuration it does not
            beat), ``"beyond"`` (it beats the whole ladder) or ``"below"`` (cheaper than the
            whole ladder and beats none of it).
        match: ``q*`` when matched.
        speedup: ``latency(q*) / latency(point)`` when matched.
        discounted: the speedup at the pessimistic ends of both latencies' uncertainty:
            ``latency(q*) (1 - e_q) / (latency(point) (1 + e_p))``.
        against: beyond: the comparison with the cheapest steps-only configuration at or above
            its latency (the ladder's slowest if none is); matched: the comparison with ``q*``.
        comparisons: its comparison with every steps-only configuration, cheapest first.
    """

    point: Configuration
    status: str
    match: Configuration | None
    speedup: float | None
    discounted: float | None
    against: Comparison | None
    comparisons: tuple[Comparison, ...]

    @property
    def helps(self) -> bool:
        """Whether the rule says the point is faster than fewer steps at its quality."""
        return self.discounted is not None and self.discounted > 1.0

    def text(self) -> str:
        """The judgement in one sentence."""
        p = self.point
        if self.status == "beyond":
            return (f"{p.label} (FID {p.fid_text()}) beats every steps-only configuration: "
                    f"beyond the measured ladder, {self.against.text()} against "
                    f"{self.against.b}; measure more steps to put a number on it")
        if self.status == "below":
            return (f"{p.label} (FID {p.fid_text()}) is cheaper than every steps-only "
                    f"configuration and beats none: below the measured ladder, no speedup "
                    f"established; measure fewer steps")
        assert self.match is not None and self.discounted is not None
        verb = "helps" if self.helps else "does not beat fewer steps"
        return (f"{p.label} (FID {p.fid_text()}) {verb}: {self.discounted:.2f}x at matched FID "
                f"(the cheapest steps-only configuration it does not beat: {self.match.label}, "
                f"FID {self.match.fid_text()}; {self.speedup:.2f}x before the latencies' "
                f"uncertainty)")


def _sorted_ladder(ladder: Sequence[Configuration]) -> list[Configuration]:
    return sorted(ladder, key=lambda q: (q.latency.value, q.fid, q.label))


def judge_point(point: Configuration, ladder: Sequence[Configuration],
                alpha: float = ALPHA) -> Judgement:
    """Judge ``point`` against the steps-only ``ladder`` (rules 1-3 of the module doc).

    Raises:
        ValueError: an empty ladder, or seeds that differ between ``point`` and the ladder.
    """
    if not ladder:
        raise ValueError("the steps-only ladder is empty: measure the full model at some step "
                         "counts first")
    ordered = _sorted_ladder(ladder)
    comparisons = tuple(compare(point, q, alpha) for q in ordered)
    lat = point.latency
    unbeaten = [(q, c) for q, c in zip(ordered, comparisons) if not c.beats]
    if not unbeaten:
        at_or_above = [(q, c) for q, c in zip(ordered, comparisons)
                       if q.latency.value >= lat.value]
        _, against = at_or_above[0] if at_or_above else (ordered[-1], comparisons[-1])
        return Judgement(point, "beyond", None, None, None, against, comparisons)
    match, against = unbeaten[0]
    if match is ordered[0] and lat.value < match.latency.value:
        return Judgement(point, "below", None, None, None, against, comparisons)
    speedup = match.latency.value / lat.value
    discounted = speedup * (1 - match.latency.error) / (1 + lat.error)
    return Judgement(point, "matched", match, speedup, discounted, against, comparisons)


# ###################################################################### the verdict
@dataclass(frozen=True)
class Verdict:
    """The levers' points judged against the steps-only ladder (rule 4 of the module doc).

    Attributes:
        reference: the reference configuration (the full model at the reference sampler).
        window: the quality window, a factor on the reference's mean FID.
        alpha: the family level; each of the K candidates is tested at ``alpha / (K 2^(L-1))``
            at the L-th look.
        target: the speedup the headline is held against (e.g. 1.25).
        judgements: every judged point (the candidates: levers' points in the window), by
            discounted speedup, best first (points without a number last).
        outside: the levers' points outside the window (not judged; no speedup is printed).
        resolvable: the smallest relative FID improvement the candidates' tests could resolve
            at the seed noise seen (the pooled sd of their log ratios against their matches).
        seeds: the seeds every configuration was measured on.
        looks: L, the verdicts made so far on growing sets of these seeds (this one included).
    """

    reference: Configuration
    window: float
    alpha: float
    target: float
    judgements: tuple[Judgement, ...]
    outside: tuple[Configuration, ...]
    resolvable: float
    seeds: tuple[int, ...]
    ladder: tuple[Configuration, ...] = field(default=())
    looks: int = 1

    @property
    def candidates(self) -> int:
        return len(self.judgements)

    @property
    def alpha_each(self) -> float:
        return self.alpha / (max(1, self.candidates) * 2 ** (self.looks - 1))

    @property
    def headline(self) -> Judgement | None:
        """The point with the largest discounted speedup that helps, ``None`` when none does."""
        helping = [j for j in self.judgements if j.helps]
        return helping[0] if helping else None

    @property
    def beyond(self) -> tuple[Judgement, ...]:
        return tuple(j for j in self.judgements if j.status == "beyond")

    @property
    def helps(self) -> bool:
        return self.headline is not None

    @property
    def meets_target(self) -> bool:
        top = self.headline
        return top is not None and top.discounted is not None and top.discounted >= self.target

    def lines(self, lever: str = "exits") -> list[str]:
        """The verdict in words; every claim in it comes from the rule."""
        ref = self.reference
        n = len(self.seeds)
        lines = [f"judged on {n} seed{'s' if n != 1 else ''} ({_seed_text(self.seeds)}), none "
                 f"of them a seed the search selected on; {self.candidates} candidate"
                 f"{'s' if self.candidates != 1 else ''} in the quality window (FID <= "
                 f"{self.window:g} x the reference's {ref.fid:.2f}), each tested at one-sided "
                 f"alpha {self.alpha_each:.3g} ({self.alpha:g} / {max(1, self.candidates)}"
                 + (f" / 2^{self.looks - 1}, look {self.looks} at these seeds"
                    if self.looks > 1 else "") + ")"]
        top = self.headline
        if top is not None:
            target = ("meets" if self.meets_target else "misses") + f" the {self.target:g}x target"
            lines.append(f"headline: {lever} help, {top.discounted:.2f}x faster than fewer steps "
                         f"at matched FID ({target}): {top.text()}")
        elif self.beyond:
            lines.append(f"headline: no speedup number; {self.beyond[0].text()}")
        elif self.judgements:
            best = self.judgements[0]
            lines.append(f"headline: no resolvable speedup: {lever} do not beat fewer steps "
                         f"within the quality window (best: {best.text()})")
        else:
            lines.append(f"headline: no resolvable speedup: none of the judged {lever} lies in "
                         f"the quality window")
        for j in self.beyond:
            if top is None and j is self.beyond[0]:
                continue
            lines.append(j.text())
        lines.append(f"smallest FID difference these seeds resolve: {self.resolvable:.1%} "
                     f"(pooled per-seed sd of the log FID ratios, {n} seeds)")
        return lines


def _seed_text(seeds: Sequence[int]) -> str:
    s = list(seeds)
    if len(s) > 2 and s == list(range(s[0], s[0] + len(s))):
        return f"seeds {s[0]}-{s[-1]}"
    return "seeds " + ", ".join(map(str, s))


def judge(points: Sequence[Configuration], ladder: Sequence[Configuration],
          reference: Configuration, *, window: float = WINDOW, alpha: float = ALPHA,
          target: float = 1.25, selection_seeds: Iterable[int] = (), looks: int = 1) -> Verdict:
    """Judge the levers' ``points`` against the steps-only ``ladder``.

    Args:
        points: the levers' configurations (exits, reuse, ...; not the full model).
        ladder: the full model at every sampler and step count measured.
        reference: the full model at the reference configuration (it may be in ``ladder``).
        window: the quality window, a factor >= 1 on the reference's mean FID.
        alpha: the one-sided level of the whole verdict.
        target: the speedup the headline is held against.
        selection_seeds: the seeds the search selected on; none may be among the judged ones.
        looks: the verdicts made on sets of these seeds so far, this one included (earlier
            verdicts on fewer of them count: each look is another try at the claim, tested at
            half the level of the one before).

    Raises:
        ValueError: configurations on different seeds, a judged seed the search selected on, an
            empty ladder, a window below 1, fewer than one look.
    """
    if isinstance(looks, bool) or not isinstance(looks, int) or looks < 1:
        raise ValueError(f"looks must be an integer >= 1, got {looks!r}")
    window = _check_number("window", window, positive=True)
    if window < 1:
        raise ValueError(f"window must be >= 1 (a share of FID above the reference's allowed), "
                         f"got {window}")
    everything = [reference, *ladder, *points]
    seeds = reference.seeds
    for c in everything:
        _check_paired(c, reference)
    picked = sorted(set(seeds) & {int(s) for s in selection_seeds})
    if picked:
        raise ValueError(f"seeds {picked} are ones the search selected on; judge on fresh seeds "
                         f"(ase-search confirm measures them)")
    labels = [c.label for c in ladder]
    if len(set(labels)) != len(labels):
        raise ValueError(f"steps-only configurations need distinct labels, got {labels}")
    edge = window * reference.fid
    inside = [p for p in points if p.fid <= edge]
    outside = tuple(p for p in points if p.fid > edge)
    each = alpha / (max(1, len(inside)) * 2 ** (looks - 1))
    judgements = [judge_point(p, ladder, each) for p in inside]
    judgements.sort(key=lambda j: (j.discounted is None, -(j.discounted or 0.0), j.point.fid,
                                   j.point.label))
    spreads = [c.log_ratios for j in judgements for c in (j.against,) if c is not None
               and c.n > 1]
    if spreads:
        pooled = math.sqrt(statistics.fmean(statistics.variance(d) for d in spreads))
    else:  # no candidate: the ladder's neighbours say how noisy the seeds are
        ordered = _sorted_ladder(ladder)
        pairs = [compare(a, b, alpha).log_ratios for a, b in zip(ordered, ordered[1:])]
        pooled = (math.sqrt(statistics.fmean(statistics.variance(d) for d in pairs))
                  if pairs and len(seeds) > 1 else 0.0)
    return Verdict(reference, window, alpha, target, tuple(judgements), outside,
                   resolvable_difference(pooled, len(seeds), each), tuple(seeds), tuple(ladder),
                   looks)


# ###################################################################### cover
@dataclass(frozen=True)
class Cover:
    """Whether some configuration covers ``point``: at no more latency, with a FID ``point``
    does not beat (rule 1, at ``alpha``: an unadjusted level, so a covered point had every chance
    to show it is better).

    Attributes:
        point: the configuration to be covered (a cache's, say).
        by: the covering configuration with the lowest mean FID, ``None`` when none covers.
        comparison: ``point`` against ``by`` (rule 1), ``None`` when none covers.
        beats: ``by`` beats ``point`` (rule 1), not only ties it.
    """

    point: Configuration
    by: Configuration | None
    comparison: Comparison | None
    beats: bool

    def text(self) -> str:
        """The cover in one phrase: ``covered by X (FID ratio ..., X beats it)``."""
        if self.by is None or self.comparison is None:
            return "not covered"
        return (f"covered by {self.by.label} ({self.comparison.text()} of it against that"
                + (f"; {self.by.label} beats it)" if self.beats else ")"))


def cover(point: Configuration, candidates: Sequence[Configuration],
          alpha: float = ALPHA) -> Cover:
    """The candidate with the lowest mean FID that covers ``point``: its latency at the
    pessimistic end of its uncertainty is no more than ``point``'s at the optimistic end
    (``latency(c) (1 + e_c) <= latency(point) (1 - e_p)``), and ``point`` does not beat it.

    Raises:
        ValueError: a candidate on other seeds than ``point``.
    """
    for c in candidates:
        _check_paired(point, c)
    top = point.latency.value * (1 - point.latency.error)
    for c in sorted(candidates, key=lambda c: (c.fid, c.latency.value, c.label)):
        if c is point or c.latency.value * (1 + c.latency.error) > top:
            continue
        against = compare(point, c, alpha)
        if not against.beats:
            return Cover(point, c, against, compare(c, point, alpha).beats)
    return Cover(point, None, None, False)


# ###################################################################### fronts
@dataclass(frozen=True)
class Point:
    """One configuration on a single number: its label, FID and latency (both minimised); for
    drawing fronts, never for claims (those need :class:`Configuration` and :func:`judge`).
    """

    label: str
    fid: float
    latency: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "fid", _check_number(f"{self.label}: fid", self.fid,
                                                      positive=False))
        object.__setattr__(self, "latency", _check_number(f"{self.label}: latency",
                                                          self.latency, positive=True))


P = TypeVar("P")


def _as_point(p: object) -> Point:
    if isinstance(p, Point):
        return p
    if isinstance(p, Configuration):
        return Point(p.label, p.fid, p.latency.value)
    label, fid, latency = p  # type: ignore[misc]
    return Point(label, fid, latency)


def _dominates(a: Point, b: Point) -> bool:
    return a.fid <= b.fid and a.latency <= b.latency and (a.fid < b.fid or a.latency < b.latency)


def non_dominated(points: Iterable[P]) -> list[P]:
    """The points no other point dominates (no worse in FID and latency, better in one), sorted
    by latency then FID, as given (a :class:`Configuration` is placed at its mean FID). Points
    with identical values do not dominate each other; all are kept."""
    given = list(points)
    pts = [_as_point(p) for p in given]
    front = [(q, g) for q, g in zip(pts, given) if not any(_dominates(o, q) for o in pts)]
    return [g for _, g in sorted(front, key=lambda qg: (qg[0].latency, qg[0].fid, qg[0].label))]


def hypervolume(points: Sequence[Sequence[float]], reference_point: Sequence[float]) -> float:
    """Exact 2-D hypervolume (area dominated by ``points`` and bounded by ``reference_point``),
    both objectives minimised. Points not strictly better than the reference in both add nothing.

    Raises:
        ValueError: ``reference_point`` is not two finite numbers.
    """
    ref = [float(x) for x in reference_point]
    if len(ref) != 2 or not all(math.isfinite(x) for x in ref):
        raise ValueError(f"reference_point must be two finite numbers (fid, latency), got "
                         f"{reference_point!r}")
    r0, r1 = ref
    inside = sorted((float(p[0]), float(p[1])) for p in points if p[0] < r0 and p[1] < r1)
    area, low = 0.0, r1
    # Sweep left to right: between consecutive x-coordinates the dominated height is r1 minus the
    # lowest second value seen so far.
    for k, (x, y) in enumerate(inside):
        low = min(low, y)
        x_next = inside[k + 1][0] if k + 1 < len(inside) else r0
        area += (x_next - x) * (r1 - low)
    return area


@dataclass(frozen=True)
class HypervolumeComparison:
    """Hypervolumes (area dominated up to a reference point) of a front and of a baseline: a
    picture of the fronts, not a claim (claims come from :func:`judge`).

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


def compare_hypervolumes(front: Iterable[object], baseline: Iterable[object],
                         reference_point: Sequence[float]) -> HypervolumeComparison:
    """Hypervolume of ``front`` against ``baseline``'s, both bounded by ``reference_point``."""
    coords = [[(p.fid, p.latency) for p in map(_as_point, pts)] for pts in (front, baseline)]
    ref = (float(reference_point[0]), float(reference_point[1]))
    return HypervolumeComparison(hypervolume(coords[0], ref), hypervolume(coords[1], ref), ref)
