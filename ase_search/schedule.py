"""Time-dependent exit schedules (ASE, Section 2.2 and Appendix A.2).

An exit schedule cuts diffusion time ``t`` in ``[0, 1]`` (``t = 0`` is data, ``t = 1`` is noise)
into intervals and assigns each interval the number of *exitable* blocks the network runs there.
For DiT every block is exitable and blocks are dropped from the end; for U-ViT only the decoder
(``out_blocks``) is exitable and a dropped decoder block still applies its ``skip_linear``.

Interval ``k`` is ``[boundaries[k], boundaries[k + 1])``; the last interval also contains
``t = 1``. A discrete timestep index ``i`` of a ``T``-step training process maps to ``t = i / T``,
the binning used by the official ASE code.

Block reuse (issue #16). Each interval also has a *mode* and a refresh *period* ``r >= 1``:

* ``skip`` (the paper's, and every preset's): the blocks past the interval's count are not run and
  add nothing.
* ``reuse``: the blocks past the count are not run either, but add the residual they added at the
  interval's last *refresh* call. The calls a sampling run makes in the interval are numbered from
  the first one (a run of consecutive calls: leaving the interval and entering it again starts the
  numbering again); call ``j`` is a refresh when ``j % r == 0``. A refresh runs every block, so its
  output is the full model's, and stores the residual per sample (and per guidance branch, whose
  doubled batch is one batch to the model). Entering an interval starts with an empty cache (a
  residual past count ``k`` is only valid for count ``k``), so the first call of every reuse
  interval is a refresh; ``r = 1`` is the full model.

  The residual, per architecture (``ase_search/models``):

  * DiT: the hidden state after all blocks minus the hidden state after block ``count``; a reuse
    call runs the first ``count`` blocks and adds it.
  * U-ViT: per decoder block past the count, what its attention and MLP added at the refresh
    (``body(z) - z`` with ``z`` its ``skip_linear`` output). A reuse call runs the first ``count``
    decoder blocks whole; each later one applies its ``skip_linear`` to the current state and the
    current step's encoder skip, exactly as a dropped block does, and adds its stored residual.
    Stored per block rather than as one end-to-end difference because the end-to-end one would need
    the exit path's ``skip_linear`` layers run next to the full decoder at each refresh, so a refresh
    would cost more than a full call; per block, a refresh costs exactly one full call.

* ``forecast`` (order ``p`` = 1 or 2, issue #24): as ``reuse``, but a call between refreshes adds
  the residual *extrapolated* to its own time from the last ``p + 1`` refreshes of the interval's
  run (Newton's divided differences in ``t``, so uneven timestep spacings work; exact when the
  residual is a polynomial of degree ``p`` in ``t``). Before ``p + 1`` refreshes are held it uses
  as many as there are, so order 0, and ``reuse``, add the last refresh's residual as it is.
  TaylorSeer's forecast, with the same refresh pattern, is order 1 here.

``granularity`` (one for the schedule): what a ``reuse`` or ``forecast`` interval keeps.
``blocks`` (the default) keeps the residual of the blocks past the count, as above. ``modules``
(DiT only) keeps, for every block past the count, its attention output and its MLP output
*before* the adaLN gates, as TaylorSeer and FORA do: a cached call runs those blocks' modulation
from the current step's conditioning and adds the gated forecasts, so the gates follow the
current timestep (U-ViT blocks have no gates, so ``blocks`` is already per block there).

``ranges`` (per interval, with ``modules`` only): which blocks a ``reuse``/``forecast`` interval
caches, :func:`cached_blocks`. ``rear`` (the default): the blocks past the count, as above.
``front``: the first ``depth - count`` blocks, so the last ``count`` run (Delta-DiT caches the rear
blocks early in sampling and the front blocks late). ``alternate``: ``depth - count`` blocks spread
evenly, the last block among them (every other block at half the depth, as an L2C-like layer
pattern). Either way a cached call runs ``count`` blocks.

``warmup`` (``w >= 0``, one number for the schedule): the first ``w`` calls of each ``reuse`` or
``forecast`` interval's run are refreshes too, and the calls after them are numbered from the
warm-up's end (call ``j`` refreshes when ``j < w`` or ``(j - w) % r == 0``): a forecast then starts
from several full calls, as TaylorSeer's does.

A refresh call counts as a full-depth call everywhere (block evaluations, the cost model), and the
sampler follows the same plan: :func:`ase_search.callplan.call_plan` is where calls become counts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase_search.files import atomic_write_text

__all__ = [
    "ARCHS",
    "REFERENCE_DEPTH",
    "MODES",
    "PEERS",
    "SCHEMA_VERSION",
    "ExitSchedule",
    "FORECAST_ORDERS",
    "GRANULARITIES",
    "RANGES",
    "ScheduleError",
    "preset",
    "preset_names",
    "cached_blocks",
    "scale_blocks",
]

# Version 2 added the per-interval ``modes`` and ``periods``; version-1 files load as all ``skip``.
# Version 3 added ``forecast`` intervals (``orders``) and ``warmup``; a schedule without them is
# still written as version 2, so older readers keep reading it.
SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MODES = ("skip", "reuse", "forecast")
FORECAST_ORDERS = (1, 2)
GRANULARITIES = ("blocks", "modules")
RANGES = ("rear", "front", "alternate")  # which blocks a reuse/forecast interval caches
ARCHS = ("dit", "uvit")
# Exitable depth the paper's presets were written for: DiT-XL/2 has 28 blocks, U-ViT-S/4 (CelebA 64)
# has 6 decoder blocks.
REFERENCE_DEPTH = {"dit": 28, "uvit": 6}

_FIVE = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_TEN = tuple(round(0.1 * k, 10) for k in range(11))

# Table 2 of the paper, number for number, at the reference depth. D6-DiT uses ten 0.1-wide
# intervals ("28 | 24, 22 | 20, 18 | 12, 10 | 8, 6"; the first 0.2-wide interval keeps 28 twice).
_TABLE_2: dict[str, dict[str, tuple[tuple[float, ...], tuple[int, ...]]]] = {
    "dit": {
        "D1": (_FIVE, (28, 26, 24, 22, 20)),
        "D3": (_FIVE, (28, 25, 22, 19, 16)),
        "D4": (_FIVE, (28, 24, 20, 16, 12)),
        "D6": (_TEN, (28, 28, 24, 22, 20, 18, 12, 10, 8, 6)),
    },
    "uvit": {
        "D1": (_FIVE, (6, 5, 4, 3, 2)),
        "D2": (_FIVE, (6, 5, 3, 2, 1)),
        "D3": (_FIVE, (6, 4, 3, 2, 1)),
        "D4": (_FIVE, (5, 4, 2, 2, 1)),
        "D5": (_FIVE, (5, 4, 2, 1, 1)),
        "D6": (_FIVE, (5, 3, 2, 1, 1)),
    },
}
DATA_EASY_SUFFIX = "-data-easy"

# The training-free caches the field ships, at their published settings, in this schedule format
# (issue #24). TaylorSeer: full computation every N calls after warm-up calls, forecast at order 1
# or 2 (diffusers' TaylorSeer hook is checked against this format in tests/integrations); FORA:
# reuse, every N calls. Both cache every block but the first (this format's counts start at 1),
# per module on DiT (granularity "modules": each block's attention and MLP outputs before the adaLN
# gates, as they keep them; U-ViT: per block). Delta-DiT (Chen et al. 2024): half the blocks
# cached, every 2 calls, the rear ones early in sampling (t >= 0.5) and the front ones late; an
# L2C-like pattern (Ma et al. 2024 learn which layers to cache): every other block, every 2 calls.
# These two address block ranges, so they are DiT's (ranges need per-module caching).
@dataclass(frozen=True)
class _Peer:
    mode: str
    period: int
    order: int = 0
    warmup: int = 0
    ranges: tuple[str, ...] = ("rear",)  # per interval; two: [0, 0.5) then [0.5, 1]
    half: bool = False  # cache half the blocks (else every block but the first)


PEERS: dict[str, _Peer] = {
    "taylorseer-4": _Peer("forecast", 4, 1, 2),
    "taylorseer-2": _Peer("forecast", 2, 1, 2),
    "taylorseer-4-o2": _Peer("forecast", 4, 2, 2),
    "taylorseer-2-o2": _Peer("forecast", 2, 2, 2),
    "fora-2": _Peer("reuse", 2),
    "fora-3": _Peer("reuse", 3),
    "delta-dit": _Peer("reuse", 2, ranges=("front", "rear"), half=True),
    "l2c-alternate": _Peer("reuse", 2, ranges=("alternate",), half=True),
}


def cached_blocks(range_: str, count: int, depth: int) -> tuple[int, ...]:
    """The blocks (0-based, ascending) a cached call of interval range ``range_`` does not run,
    ``depth - count`` of them (:data:`RANGES`): past the count (``rear``), before the last
    ``count`` (``front``), or spread evenly with the last block among them (``alternate``)."""
    m = depth - count
    if range_ == "rear":
        return tuple(range(count, depth))
    if range_ == "front":
        return tuple(range(m))
    if range_ == "alternate":
        return tuple(sorted(depth - 1 - (j * depth) // m for j in range(m)))
    raise ScheduleError(f"range {range_!r} is not a block range; use one of {list(RANGES)}")


class ScheduleError(ValueError):
    """A schedule (or schedule file) is malformed; the message names the field and the fix."""


@dataclass(frozen=True)
class ExitSchedule:
    """A time-dependent exit schedule.

    Args:
        arch: ``"dit"`` or ``"uvit"``.
        depth: number of exitable blocks of the model (DiT: all blocks; U-ViT: decoder blocks).
        boundaries: ``K + 1`` strictly increasing interval edges from ``0.0`` to ``1.0``.
        blocks: ``K`` block counts in ``[1, depth]``, one per interval.
        name: a label for tables and reports.
        metadata: free-form provenance (study, trial, metrics, ...), kept through JSON.
        modes: per interval, ``"skip"`` or ``"reuse"`` (see the module docstring); empty means all
            ``"skip"``.
        periods: per interval, the refresh period ``r >= 1`` of a ``reuse`` or ``forecast``
            interval (``skip`` intervals must have 1); empty means all 1.
        orders: per interval, the forecast order (1 or 2) of a ``forecast`` interval, 0 for the
            others; empty means 1 for ``forecast`` intervals and 0 elsewhere.
        warmup: calls at the start of each ``reuse``/``forecast`` interval's run that refresh.
        granularity: what a ``reuse``/``forecast`` interval keeps: ``"blocks"`` (the residual
            past the count) or ``"modules"`` (DiT: each later block's attention and MLP outputs
            before the adaLN gates).
        ranges: per interval, which blocks a ``reuse``/``forecast`` interval caches
            (:data:`RANGES`, :func:`cached_blocks`; other than ``"rear"`` with ``"modules"``
            only); empty means all ``"rear"``.
    """

    arch: str
    depth: int
    boundaries: tuple[float, ...]
    blocks: tuple[int, ...]
    name: str = "custom"
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    modes: tuple[str, ...] = field(default=(), kw_only=True)
    periods: tuple[int, ...] = field(default=(), kw_only=True)
    orders: tuple[int, ...] = field(default=(), kw_only=True)
    warmup: int = field(default=0, kw_only=True)
    granularity: str = field(default="blocks", kw_only=True)
    ranges: tuple[str, ...] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "boundaries", tuple(float(b) for b in self.boundaries))
        if any(isinstance(n, bool) or int(n) != n for n in self.blocks):
            raise ScheduleError(f"blocks must be integers, got {list(self.blocks)}")
        object.__setattr__(self, "blocks", tuple(int(n) for n in self.blocks))
        if self.arch not in ARCHS:
            raise ScheduleError(f"arch must be one of {list(ARCHS)}, got {self.arch!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ScheduleError(f"depth must be a positive integer, got {self.depth!r}")
        b = self.boundaries
        if len(b) < 2:
            raise ScheduleError("boundaries must hold at least two edges, 0.0 and 1.0")
        if any(not math.isfinite(x) for x in b):
            raise ScheduleError(f"boundaries must be finite numbers, got {list(b)}")
        if b[0] != 0.0 or b[-1] != 1.0:
            raise ScheduleError(
                f"boundaries must start at 0.0 and end at 1.0 so the intervals cover [0, 1] "
                f"without gaps, got {b[0]} ... {b[-1]}"
            )
        for lo, hi in zip(b, b[1:]):
            if not lo < hi:
                raise ScheduleError(
                    f"boundaries must be strictly increasing (no overlaps or empty intervals): "
                    f"{lo} is followed by {hi}"
                )
        if len(self.blocks) != len(b) - 1:
            raise ScheduleError(
                f"blocks needs one count per interval: {len(b) - 1} intervals but "
                f"{len(self.blocks)} counts"
            )
        for k, n in enumerate(self.blocks):
            if not 1 <= n <= self.depth:
                raise ScheduleError(
                    f"blocks[{k}] = {n} is outside [1, depth={self.depth}] for interval "
                    f"[{b[k]}, {b[k + 1]})"
                )
        self._check_reuse()

    def _check_reuse(self) -> None:
        """Fill the default modes, periods and orders, then validate them (the message names the
        field)."""
        K = len(self.blocks)
        for key in ("modes", "periods", "orders"):
            if isinstance(getattr(self, key), (str, bytes)):
                raise ScheduleError(f"{key} must be a list with one entry per interval, got "
                                    f"{getattr(self, key)!r}")
        modes = tuple(self.modes) if self.modes else ("skip",) * K
        periods = tuple(self.periods) if self.periods else (1,) * K
        orders = (tuple(self.orders) if self.orders else
                  tuple(1 if m == "forecast" else 0 for m in modes))
        for key, values in (("modes", modes), ("periods", periods), ("orders", orders)):
            if len(values) != K:
                raise ScheduleError(
                    f"{key} needs one entry per interval: {K} intervals but {len(values)} {key}")
        for k, mode in enumerate(modes):
            if mode not in MODES:
                raise ScheduleError(f"modes[{k}] = {mode!r} is not a mode; use one of {list(MODES)}")
        for k, r in enumerate(periods):
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise ScheduleError(f"periods[{k}] = {r!r} must be an integer >= 1 (the refresh "
                                    f"period of a reuse interval)")
            if modes[k] == "skip" and r != 1:
                raise ScheduleError(f"periods[{k}] = {r} but interval {k} is a skip interval; a "
                                    f"period > 1 needs modes[{k}] = 'reuse' or 'forecast'")
        for k, p in enumerate(orders):
            allowed = FORECAST_ORDERS if modes[k] == "forecast" else (0,)
            if isinstance(p, bool) or p not in allowed:
                raise ScheduleError(f"orders[{k}] = {p!r} but interval {k} is a {modes[k]} "
                                    f"interval; its order must be "
                                    f"{' or '.join(map(str, allowed))}")
        w = self.warmup
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ScheduleError(f"warmup = {w!r} must be an integer >= 0 (refreshing calls at "
                                f"the start of each reuse or forecast interval)")
        if self.granularity not in GRANULARITIES:
            raise ScheduleError(f"granularity = {self.granularity!r}; use one of "
                                f"{list(GRANULARITIES)}")
        if self.granularity == "modules" and self.arch != "dit":
            raise ScheduleError("granularity 'modules' is for DiT (its blocks gate attention and "
                                "MLP by the timestep); U-ViT's 'blocks' already keeps each block's "
                                "own residual")
        if isinstance(self.ranges, (str, bytes)):
            raise ScheduleError(f"ranges must be a list with one entry per interval, got "
                                f"{self.ranges!r}")
        ranges = tuple(self.ranges) if self.ranges else ("rear",) * K
        if len(ranges) != K:
            raise ScheduleError(f"ranges needs one entry per interval: {K} intervals but "
                                f"{len(ranges)} ranges")
        for k, r in enumerate(ranges):
            if r not in RANGES:
                raise ScheduleError(f"ranges[{k}] = {r!r} is not a block range; use one of "
                                    f"{list(RANGES)}")
            if r != "rear" and (modes[k] == "skip" or self.granularity != "modules"):
                raise ScheduleError(f"ranges[{k}] = {r!r} caches blocks other than the rear "
                                    f"ones, which needs a reuse or forecast interval and "
                                    f"granularity 'modules' (DiT)")
        object.__setattr__(self, "modes", modes)
        object.__setattr__(self, "periods", periods)
        object.__setattr__(self, "orders", tuple(int(p) for p in orders))
        object.__setattr__(self, "ranges", ranges)

    # ------------------------------------------------------------------ queries
    @property
    def num_intervals(self) -> int:
        return len(self.blocks)

    @property
    def is_full(self) -> bool:
        """Whether every interval runs all ``depth`` blocks (no early exit anywhere)."""
        return all(k == self.depth for k in self.blocks)

    @property
    def reuses(self) -> bool:
        """Whether some interval adds a kept residual (``reuse`` or ``forecast``; else every call
        runs exactly its count)."""
        return any(m != "skip" for m in self.modes)

    def interval_of(self, t: float) -> int:
        """Index of the interval holding ``t`` (``t = 1`` belongs to the last one)."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must lie in [0, 1], got {t}")
        for k in range(self.num_intervals - 1, -1, -1):
            if t >= self.boundaries[k]:
                return k
        return 0  # unreachable: boundaries[0] == 0.0

    def blocks_at(self, t: float) -> int:
        """Number of exitable blocks to run at continuous time ``t`` in ``[0, 1]``."""
        return self.blocks[self.interval_of(t)]

    def blocks_at_index(self, timestep: int, num_train_timesteps: int = 1000) -> int:
        """Number of blocks at discrete timestep ``timestep`` of a ``T``-step process (t = i / T)."""
        if not 0 <= timestep < num_train_timesteps:
            raise ValueError(
                f"timestep must lie in [0, {num_train_timesteps}), got {timestep}"
            )
        return self.blocks_at(timestep / num_train_timesteps)

    def blocks_for(self, t: Any) -> Any:
        """Vectorised :meth:`blocks_at` for a tensor of continuous times; returns a LongTensor."""
        import torch

        edges = torch.tensor(self.boundaries[1:-1], dtype=torch.float64, device=t.device)
        counts = torch.tensor(self.blocks, dtype=torch.long, device=t.device)
        return counts[torch.bucketize(t.to(torch.float64), edges, right=True)]

    # --------------------------------------------------------------- transforms
    def mirrored(self) -> ExitSchedule:
        """The "Data-Easy" mirror (Appendix A.1): the same counts with t reflected to 1 - t."""
        boundaries = tuple(round(1.0 - b, 12) for b in reversed(self.boundaries))
        name = (
            self.name[: -len(DATA_EASY_SUFFIX)]
            if self.name.endswith(DATA_EASY_SUFFIX)
            else self.name + DATA_EASY_SUFFIX
        )
        return ExitSchedule(self.arch, self.depth, boundaries, tuple(reversed(self.blocks)), name,
                            modes=tuple(reversed(self.modes)),
                            periods=tuple(reversed(self.periods)),
                            orders=tuple(reversed(self.orders)), warmup=self.warmup,
                            granularity=self.granularity, ranges=tuple(reversed(self.ranges)))

    def merged(self) -> ExitSchedule:
        """An equivalent schedule with adjacent equal-count ``skip`` intervals merged.

        ``reuse`` and ``forecast`` intervals are never merged: entering one restarts its refresh
        numbering, so two adjacent ones do not run like one.
        """
        bounds, counts, modes, periods, orders = [self.boundaries[0]], [], [], [], []
        ranges: list[str] = []
        for k, (n, mode, r, p, g) in enumerate(zip(self.blocks, self.modes, self.periods,
                                                    self.orders, self.ranges)):
            if counts and counts[-1] == n and mode == modes[-1] == "skip":
                bounds[-1] = self.boundaries[k + 1]
            else:
                counts.append(n)
                modes.append(mode)
                periods.append(r)
                orders.append(p)
                ranges.append(g)
                bounds.append(self.boundaries[k + 1])
        return ExitSchedule(self.arch, self.depth, tuple(bounds), tuple(counts), self.name,
                            dict(self.metadata), modes=tuple(modes), periods=tuple(periods),
                            orders=tuple(orders), warmup=self.warmup,
                            granularity=self.granularity, ranges=tuple(ranges))

    def with_metadata(self, **metadata: Any) -> ExitSchedule:
        return dataclasses.replace(self, metadata={**self.metadata, **metadata})

    def with_reuse(self, period: int, name: str | None = None) -> ExitSchedule:
        """The same counts with every exiting interval (count < depth) in ``reuse`` mode at
        refresh period ``period``; full-depth intervals stay ``skip`` (they skip nothing)."""
        modes = tuple("reuse" if n < self.depth else "skip" for n in self.blocks)
        periods = tuple(period if m == "reuse" else 1 for m in modes)
        return dataclasses.replace(self, name=name or f"{self.name}-reuse{period}",
                                   metadata=dict(self.metadata), modes=modes, periods=periods,
                                   orders=(), warmup=0, granularity="blocks", ranges=())

    def with_forecast(self, period: int, order: int = 1, warmup: int = 0,
                      name: str | None = None, granularity: str = "blocks") -> ExitSchedule:
        """The same counts with every exiting interval (count < depth) in ``forecast`` mode of
        ``order`` at refresh period ``period``, with ``warmup`` refreshing calls first, keeping
        ``granularity``."""
        modes = tuple("forecast" if n < self.depth else "skip" for n in self.blocks)
        return dataclasses.replace(
            self, name=name or f"{self.name}-forecast{order}p{period}",
            metadata=dict(self.metadata), modes=modes,
            periods=tuple(period if m == "forecast" else 1 for m in modes),
            orders=tuple(order if m == "forecast" else 0 for m in modes),
            warmup=warmup if "forecast" in modes else 0,
            granularity=granularity if "forecast" in modes else "blocks", ranges=())

    @property
    def forecasts(self) -> bool:
        """Whether the schedule needs format version 3 (a ``forecast`` interval, a warm-up,
        per-module caching or block ranges)."""
        return "forecast" in self.modes or self.warmup > 0 or self.granularity != "blocks"

    # ---------------------------------------------------------------- JSON I/O
    def to_dict(self) -> dict[str, Any]:
        """The JSON object; version 2 (no ``orders``, ``warmup``) unless the schedule forecasts
        or warms up, so files without forecasting stay readable by older versions."""
        out = {
            "version": SCHEMA_VERSION if self.forecasts else 2,
            "name": self.name,
            "arch": self.arch,
            "depth": self.depth,
            "boundaries": list(self.boundaries),
            "blocks": list(self.blocks),
            "modes": list(self.modes),
            "periods": list(self.periods),
        }
        if self.forecasts:
            out |= {"orders": list(self.orders), "warmup": self.warmup,
                    "granularity": self.granularity}
            if any(r != "rear" for r in self.ranges):  # files without ranges stay as they were
                out["ranges"] = list(self.ranges)
        return out | {"metadata": self.metadata}

    @classmethod
    def from_dict(cls, data: Any) -> ExitSchedule:
        if not isinstance(data, dict):
            raise ScheduleError(f"a schedule must be a JSON object, got {type(data).__name__}")
        version = data.get("version")
        if isinstance(version, bool) or version not in READABLE_VERSIONS:
            raise ScheduleError(
                f"version: unknown schedule version {version!r}; this ase-search reads "
                f"versions {', '.join(map(str, READABLE_VERSIONS))}"
            )
        missing = [k for k in ("arch", "depth", "boundaries", "blocks") if k not in data]
        if missing:
            raise ScheduleError(f"missing field(s): {', '.join(missing)}")
        known = {"version", "name", "arch", "depth", "boundaries", "blocks", "metadata"}
        if version >= 2:  # version 1 had no reuse: its intervals all skip
            known |= {"modes", "periods"}
        if version >= 3:  # version 2 had no forecast
            known |= {"orders", "warmup", "granularity", "ranges"}
        unknown = set(data) - known
        if unknown:
            raise ScheduleError(f"unknown field(s) for version {version}: "
                                f"{', '.join(sorted(unknown))}")
        for key in ("boundaries", "blocks", "modes", "periods", "orders", "ranges"):
            if key in data and not isinstance(data[key], list):
                raise ScheduleError(f"{key} must be a list, got {type(data[key]).__name__}")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                   for x in data["boundaries"]):
            raise ScheduleError("boundaries must be a list of numbers")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in data["blocks"]):
            raise ScheduleError("blocks must be a list of integers")
        metadata = data.get("metadata", {})
        if not isinstance(metadata, dict):
            raise ScheduleError("metadata must be a JSON object")
        name = data.get("name", "custom")
        if not isinstance(name, str):
            raise ScheduleError("name must be a string")
        return cls(
            arch=data["arch"],
            depth=data["depth"],
            boundaries=tuple(data["boundaries"]),
            blocks=tuple(data["blocks"]),
            name=name,
            metadata=metadata,
            modes=tuple(data.get("modes", ())),
            periods=tuple(data.get("periods", ())),
            orders=tuple(data.get("orders", ())),
            warmup=data.get("warmup", 0),
            granularity=data.get("granularity", "blocks"),
            ranges=tuple(data.get("ranges", ())),
        )

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """Serialise to JSON; with ``path``, also write it atomically."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> ExitSchedule:
        """Load from a JSON string or a path to a JSON file."""
        if isinstance(source, os.PathLike) or not str(source).lstrip().startswith(("{", "[")):
            path = Path(source)
            if not path.is_file():
                raise ScheduleError(f"schedule file not found: {path}")
            text, where = path.read_text(), str(path)
        else:
            text, where = str(source), "schedule JSON"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ScheduleError(
                f"{where} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
            ) from None
        except RecursionError:
            # json recurses once per nesting level; a hostile file must not crash the reader.
            raise ScheduleError(f"{where} is not a valid schedule JSON: nested too deeply (a "
                                f"schedule is one flat object)") from None
        try:
            return cls.from_dict(data)
        except ScheduleError as err:
            raise ScheduleError(f"{where}: {err}") from None

    # -------------------------------------------------------------- displaying
    def describe(self) -> str:
        words = {"skip": "", "reuse": " reuse/{r}", "forecast": " forecast{p}/{r}"}
        parts = [
            f"[{lo:g},{hi:g}):{n}" + words[mode].format(r=r, p=p)
            + ("" if g == "rear" else f" {g}")
            for lo, hi, n, mode, r, p, g in zip(self.boundaries, self.boundaries[1:], self.blocks,
                                                self.modes, self.periods, self.orders,
                                                self.ranges)
        ]
        return (" ".join(parts) + (f" warmup {self.warmup}" if self.warmup else "")
                + (f" per {self.granularity}" if self.granularity != "blocks" else ""))


def scale_blocks(n: int, depth: int, reference_depth: int) -> int:
    """Rescale a block count written for ``reference_depth`` to a model of ``depth`` blocks.

    Rounding rule: keep the same *fraction* of blocks, rounding half up, and never fewer than one
    block: ``max(1, floor(n * depth / reference_depth + 0.5))``. A full count stays full.
    """
    return max(1, min(depth, math.floor(n * depth / reference_depth + 0.5)))


def preset_names(arch: str, *, data_easy: bool = True, peers: bool = False) -> list[str]:
    """Names of the presets for ``arch``: ``full``, the paper's D-n, their Data-Easy mirrors and
    with ``peers``, the peers' caches at their settings (:data:`PEERS`)."""
    if arch not in ARCHS:
        raise ScheduleError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
    names = ["full", *_TABLE_2[arch]]
    if data_easy:
        names += [n + DATA_EASY_SUFFIX for n in _TABLE_2[arch]]
    return names + ([n for n, p in PEERS.items() if arch == "dit" or p.ranges == ("rear",)]
                    if peers else [])


def preset(name: str, arch: str, depth: int | None = None) -> ExitSchedule:
    """A preset schedule: ``"full"``, Table 2's ``"D1"``..``"D6"`` or ``"<Dn>-data-easy"``.

    Args:
        name: preset name (see :func:`preset_names`).
        arch: ``"dit"`` or ``"uvit"``.
        depth: exitable depth of the target model; defaults to the paper's (28 for DiT, 6 for
            U-ViT). Other depths are scaled with :func:`scale_blocks`.
    """
    if arch not in ARCHS:
        raise ScheduleError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
    ref = REFERENCE_DEPTH[arch]
    depth = ref if depth is None else depth
    if name == "full":
        return ExitSchedule(arch, depth, (0.0, 1.0), (depth,), "full")
    if name in preset_names(arch, data_easy=False, peers=True) and name in PEERS and depth > 1:
        p = PEERS[name]
        K = len(p.ranges)
        return ExitSchedule(arch, depth, (0.0, 1.0) if K == 1 else (0.0, 0.5, 1.0),
                            (max(1, depth // 2) if p.half else 1,) * K, name, modes=(p.mode,) * K,
                            periods=(p.period,) * K, orders=(p.order,) * K, warmup=p.warmup,
                            granularity="modules" if arch == "dit" else "blocks",
                            ranges=p.ranges)
    base = name[: -len(DATA_EASY_SUFFIX)] if name.endswith(DATA_EASY_SUFFIX) else name
    if base not in _TABLE_2[arch]:
        raise ScheduleError(
            f"unknown preset {name!r} for {arch}; choose from {preset_names(arch, peers=True)}"
        )
    boundaries, counts = _TABLE_2[arch][base]
    blocks = tuple(scale_blocks(n, depth, ref) for n in counts)
    schedule = ExitSchedule(arch, depth, boundaries, blocks, base)
    return schedule.mirrored() if name != base else schedule


def resolve_schedule(spec: str, arch: str, depth: int) -> ExitSchedule:
    """A preset name or a path to a schedule JSON, checked against the model it will drive."""
    if spec in preset_names(arch, peers=True) or not (spec.endswith(".json")
                                                       or Path(spec).exists()):
        return preset(spec, arch, depth)
    schedule = ExitSchedule.from_json(Path(spec))
    if schedule.arch != arch:
        raise ScheduleError(
            f"{spec} is a {schedule.arch} schedule but the model is {arch}; export a schedule "
            f"for {arch}"
        )
    if schedule.depth != depth:
        raise ScheduleError(
            f"{spec} was written for {schedule.depth} exitable blocks but the model has {depth}"
        )
    return schedule

