"""What the benchmarks share besides the runner: digests, JSON files, table cells, the verdict.

The benchmarks run as ``python -m benchmarks.<name>`` from the repository root, through
:mod:`benchmarks._runner`. Everything here is light to import (torch and rich are imported inside
the functions that need them), so a benchmark's ``--help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ase_search.files import atomic_write_text as write_text  # atomic, 0644 under umask 022
from ase_search.verdict import (
    WINDOW,
    Comparison,
    Configuration,
    Judgement,
    Latency,
    Verdict,
    compare,
    judge,
    predicted_error,
)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_STUDIES = ROOT / "studies" / "reference"

# The testbeds' names in reports, by architecture (ase_search.testbed.TESTBEDS' keys).
TESTBED_TITLES: dict[str, str] = {"dit": "DiT-T", "uvit": "U-ViT-T"}

# Short sampler names the scripts accept besides ase_search.samplers.SAMPLER_NAMES.
SAMPLER_ALIASES: dict[str, str] = {"dpm": "dpm-solver", "em": "euler-maruyama"}


# ###################################################################### names and digests
def sampler_name(name: str) -> str:
    """The sampler's registry name: ``dpm`` -> ``dpm-solver``, ``em`` -> ``euler-maruyama``."""
    return SAMPLER_ALIASES.get(name, name)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks), e.g. to name the weights a run used."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def short_hash(value: Any) -> str:
    """12 hex digits of the sha256 of ``value`` as canonical JSON (sorted keys): a cache key.

    Values JSON cannot encode (paths, say) are hashed as their ``str``.
    """
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def display_path(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it, else absolute."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def check_testbeds(archs: tuple[str, ...]) -> None:
    """Raise a ValueError naming the first of ``archs`` that is not a shipped testbed."""
    from ase_search.testbed import TESTBEDS

    unknown = [a for a in archs if a not in TESTBEDS]
    if unknown:
        raise ValueError(f"--arch {unknown[0]!r} is not a testbed; choose from {list(TESTBEDS)}")


def reference_one_shot_weights(arch: str, studies_dir: Path = REFERENCE_STUDIES) -> Path:
    """The one-shot weights that the reference study ``<studies_dir>/<arch>.db`` recorded.

    Found through :func:`ase_search.finetune.recorded_weights` (``<study>-one-shot-<key12>
    .safetensors`` next to the study, checked against its key).

    Raises:
        ValueError: there is no such study, it records no weights, or the file is missing (the
            message says how to rebuild it) or is not the one recorded.
    """
    from ase_search.finetune import recorded_weights
    from ase_search.pareto import open_study

    path = studies_dir / f"{arch}.db"
    if not path.is_file():
        raise ValueError(f"there is no reference study at {display_path(path)}")
    study = open_study(path)  # not its companions (its points, its screen)
    record = study.user_attrs.get("weights")
    if not record:
        raise ValueError(f"the study {display_path(path)} records no one-shot weights")
    return recorded_weights(record, path.parent, arch=arch)


# ###################################################################### files
def write_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    """Write ``data`` as indented JSON with :func:`write_text`; non-JSON values become ``str``."""
    write_text(path, json.dumps(data, indent=1, sort_keys=sort_keys, default=str) + "\n")


def load_json(path: Path, version: int | None = None) -> dict[str, Any] | None:
    """The JSON object at ``path``, or ``None`` when there is none to resume from.

    ``None`` when the file is absent, is not valid JSON, or (with ``version``) its ``"version"``
    differs; the last two are said on stderr, since the run then starts afresh and overwrites it.
    """
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError:
        print(f"{path} is not valid JSON; starting afresh", file=sys.stderr)
        return None
    if version is not None and (not isinstance(stored, dict) or stored.get("version") != version):
        print(f"{path} was written by another version of this script; starting afresh",
              file=sys.stderr)
        return None
    return stored


# ###################################################################### report text
def machine_text(machine: Mapping[str, Any]) -> str:
    """The machine of :func:`ase_search.evaluate.machine_info` in a report's words."""
    m = machine
    return (f"{m['cpu']} ({m['logical_cores']} logical cores, {m['cores_usable']} usable, GPU "
            f"{m['gpu'] or 'none'}), torch {m['torch']} with {m['torch_threads']} thread(s), "
            f"Python {m['python']}")


def rerun_command(command: str) -> str:
    """A command recorded in a cached cell, as it runs today: the module form of the script, and
    without ``--latency per-call`` (the one latency mode left, so the option went, 2026-12-01)."""
    import re

    command = re.sub(r"python benchmarks/(\w+)\.py", r"python -m benchmarks.\1", command)
    return command.replace(" --latency per-call", "")


def pct(value: float | None, se: float | None = None) -> str:
    """``12.3%`` (``± 0.4%`` with a standard error ``se`` that is not 0 or NaN); ``–`` for a
    missing value."""
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.1%}" + (f" ± {se:.1%}" if se and not math.isnan(se) else "")


def fid_text(cell: Mapping[str, Any] | None, missing: str = "–") -> str:
    """``mean ± std`` of a cached FID cell (``fid_mean``, ``fid_std``); ``missing`` for no cell."""
    if cell is None:
        return missing
    std = cell["fid_std"]
    return f"{cell['fid_mean']:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def section_head(arch: str, cells: Sequence[Mapping[str, Any]],
                 at: Mapping[str, Any]) -> tuple[str, str]:
    """A model's heading, and the commands that made its ``cells`` on ``at``'s machine and date."""
    from ase_search.testbed import TESTBEDS

    commands = " then ".join(f"`{c}`" for c in dict.fromkeys(c["command"] for c in cells))
    return (f"## {arch}: {TESTBEDS[arch].model_name}",
            f"{commands} on {machine_text(at['machine'])}, {at['date']}")


def report_by_arch(cells: Mapping[str, Mapping[str, Any]], title: str, intro: str,
                   section: Callable[[str, list[Any]], str]) -> str:
    """``title`` and ``intro``, then ``section`` of each model's cells (in cache order)."""
    archs = dict.fromkeys(c["arch"] for c in cells.values())
    sections = [section(a, [c for c in cells.values() if c["arch"] == a]) for a in archs]
    return "\n".join([f"# {title}", "", intro, "", *sections])


# ###################################################################### the verdict
# Every "beats", "beyond", "at least" and "helps" in a benchmark's report comes from
# ase_search.verdict.judge through judge_cells, in the words of Verdict.lines and Judgement.text.
SOLVER_TITLES: dict[str, str] = {"ddim": "DDIM", "dpm-solver": "DPM-Solver++", "ddpm": "DDPM"}


def provenance(cells: Mapping[str, Mapping[str, Any]], minutes: float | None = None) -> list[str]:
    """A report's Command, Machine, Date and Seeds lines from its cached cells (each records its
    command and machine; the first configuration its seeds and samples), with the minutes of
    sampling and FID when given."""
    runs = list(dict.fromkeys(f"`{c['command']}`" for c in cells.values()))
    dates = sorted(c["machine"]["date"] for c in cells.values())
    first = next(c for c in cells.values() if "fids" in c)
    return [f"- Command: {'; '.join(runs)}",
            f"- Machine: {machine_text(first['machine'])}",
            f"- Date: {dates[0]} to {dates[-1]}"
            + ("" if minutes is None else f"; {minutes:.1f} min of sampling and FID"),
            f"- Seeds: {', '.join(map(str, first['seeds']))} (common random numbers: the same "
            f"labels and noise for every configuration), {first['n']} samples each; FID-MNIST"]


@functools.cache
def weights_sha256(path: Path) -> str:
    """:func:`file_sha256`, once per file and run."""
    return file_sha256(path)


def sampler_of(cell: Mapping[str, Any]) -> str:
    """A cached cell's sampler name (``cell["sampler"]`` is a dict, or a name)."""
    sampler = cell.get("sampler", "ddim")
    return sampler["name"] if isinstance(sampler, Mapping) else sampler


def levers_of(sampler: str, schedule: Mapping[str, Any] | None) -> list[str]:
    """The levers a configuration uses (keys of :data:`ase_search.verdict.LATENCY_ERROR`): the
    full model (``full``), DPM-Solver++ (``solver``), blocks skipped (``skip``), block reuse
    (``reuse``)."""
    levers = ["full"]
    if sampler.startswith("dpm"):
        levers.append("solver")
    if schedule:
        modes = schedule.get("modes") or ["skip"] * len(schedule["blocks"])
        if "reuse" in modes:
            levers.append("reuse")
        if any(n < schedule["depth"] and m != "reuse" for n, m in zip(schedule["blocks"], modes)):
            levers.append("skip")
    return levers


def configuration(label: str, cell: Mapping[str, Any], latency: float,
                  rounds: Sequence[float] = ()) -> Configuration:
    """A cached cell (``fids`` per ``seeds``) as the rule's configuration. Its latency error is
    the measured rounds' spread (their range over the fastest) when ``rounds`` holds two or more,
    else the cost model's validated error for the cell's levers
    (:func:`ase_search.verdict.predicted_error`)."""
    if len(rounds) > 1:
        spread = min((max(rounds) - min(rounds)) / min(rounds), 0.99)
        lat = Latency(latency, spread, "measured")
    else:
        lat = Latency(latency, predicted_error(levers_of(sampler_of(cell), cell.get("schedule"))))
    fids = tuple(cell["fids"])
    return Configuration(label, fids, tuple(cell.get("seeds", range(len(fids)))), lat)


def on_seeds(c: Configuration, seeds: Sequence[int]) -> Configuration:
    """``c`` with its FIDs on ``seeds`` only (each of them one it holds)."""
    fid = dict(zip(c.seeds, c.fids))
    return dataclasses.replace(c, fids=tuple(fid[s] for s in seeds), seeds=tuple(seeds))


def _seeds_text(seeds: Sequence[int]) -> str:
    return ", ".join(map(str, seeds))


@dataclasses.dataclass(frozen=True)
class Judged:
    """A :class:`~ase_search.verdict.Verdict` with the words a report needs.

    Attributes:
        verdict: the rule's verdict.
        lever: what the candidates are, plural (``"exits"``), for :meth:`Verdict.lines`.
        notes: which seeds were left out, and why.
    """

    verdict: Verdict
    lever: str
    notes: tuple[str, ...] = ()

    def judgement(self, label: str) -> Judgement | None:
        return next((j for j in self.verdict.judgements if j.point.label == label), None)

    def word(self, label: str) -> str:
        """The rule's word on the candidate ``label`` for a table cell: its discounted speedup
        at matched FID and match, ``beyond the ladder``, ``below the ladder``, ``outside the
        window``; empty for a configuration that is not a candidate."""
        j = self.judgement(label)
        if j is None:
            return ("outside the window" if any(p.label == label for p in self.verdict.outside)
                    else "")
        if j.discounted is None:
            return f"{j.status} the ladder"
        return f"{j.discounted:.2f}x vs {j.match.label}" + (", helps" if j.helps else "")

    def against(self, label: str) -> str:
        """The candidate's paired FID ratio to its match (beyond: to the ladder's configuration
        at or above its latency), ``FID ratio 0.93 (95% 0.88-0.98, 5 seeds)``."""
        j = self.judgement(label)
        return "" if j is None or j.against is None else j.against.text()

    def markdown(self, title: str) -> list[str]:
        """The verdict as a report paragraph: its headline, then its other lines as bullets."""
        v = self.verdict
        lines = v.lines(self.lever)
        head = next(line for line in lines if line.startswith("headline: "))
        if not v.judgements and v.outside:  # how far the nearest one is
            near = min(v.outside, key=lambda p: (p.fid, p.latency.value))
            lines.append(f"the lowest FID outside the window: {near.label}, {near.fid_text()} "
                         f"({near.fid / v.reference.fid:.2f}x the reference's; the window ends "
                         f"at {v.window * v.reference.fid:.2f})")
        return ([f"**headline** ({title}): {head.removeprefix('headline: ')}", ""]
                + [f"- {line}" for line in lines if line is not head]
                + [f"- {note}" for note in self.notes] + [""])


def judge_cells(points: Sequence[Configuration], ladder: Sequence[Configuration],
                reference: Configuration, *, lever: str, window: float = WINDOW,
                selection_seeds: Sequence[int] = ()) -> Judged:
    """:func:`ase_search.verdict.judge` on the seeds every configuration holds, less the seeds a
    search selected ``points`` on (``selection_seeds``, dropped from every configuration);
    :attr:`Judged.notes` says what was left out."""
    everything = [reference, *ladder, *points]
    held = sorted(set().union(*(c.seeds for c in everything)))
    shared = set.intersection(*(set(c.seeds) for c in everything))
    selection = sorted(set(selection_seeds) & shared)
    seeds = [s for s in reference.seeds if s in shared and s not in selection]
    notes = []
    if len(shared) < len(held):
        notes.append(f"the caches hold seeds {_seeds_text(held)}, not every configuration all "
                     f"of them: judged on the {len(shared)} they share "
                     f"({_seeds_text(sorted(shared))})")
    if selection:
        notes.append(f"seed{'s' if len(selection) > 1 else ''} {_seeds_text(selection)} left "
                     f"out of every compared configuration: the search selected its "
                     f"configurations on {'them' if len(selection) > 1 else 'it'}")
    if not seeds:
        raise ValueError("no seed is held by every configuration and unused by the search")
    verdict = judge([on_seeds(p, seeds) for p in points], [on_seeds(q, seeds) for q in ladder],
                    on_seeds(reference, seeds), window=window, selection_seeds=selection)
    return Judged(verdict, lever, tuple(notes))


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """FIDs ``a`` against ``b`` on the same seeds, in the given order, by
    :func:`ase_search.verdict.compare` (its ``ratio``: the geometric mean of ``a / b``)."""
    seeds = tuple(range(len(a)))
    return compare(Configuration("a", tuple(a), seeds, Latency(1.0)),
                   Configuration("b", tuple(b), seeds, Latency(1.0)))


def ratio_text(a: Sequence[float], b: Sequence[float]) -> str:
    """:func:`paired_ratio` as a table cell: ``0.93 (0.88-0.98)`` (95% interval)."""
    c = paired_ratio(a, b)
    lo, hi = c.interval
    return f"{c.ratio:.2f}" + ("" if c.n < 2 else f" ({lo:.2f}-{hi:.2f})")


# ###################################################################### the starting ladder
def ladder_label(cell: Mapping[str, Any]) -> str:
    """A full-model configuration: ``full, DDIM-10``, ``full, DPM-Solver++-10``."""
    solver = sampler_of(cell)
    return f"full, {SOLVER_TITLES.get(solver, solver)}-{cell['steps']}"


# ###################################################################### shared by the benchmarks
BOOTSTRAP = 2000  # resamples of the rounds behind a measured latency's standard error


def parse_samplers(specs: Sequence[str], flag: str = "--samplers") -> list[Any]:
    """``("ddpm:50,100", "ddim:20")`` as SamplerConfigs, in the given order; a sampler may go by
    its short name (``dpm``). A ValueError names a bad entry."""
    from ase_search.samplers import SAMPLER_NAMES, SamplerConfig

    samplers = []
    for spec in specs:
        name, _, steps = spec.partition(":")
        try:
            samplers += [SamplerConfig(sampler_name(name), int(k)) for k in steps.split(",")]
        except ValueError:
            raise ValueError(f"{flag} entries look like ddim:10,20 with a sampler from "
                             f"{list(SAMPLER_NAMES)}; got {spec!r}") from None
    return samplers


def bootstrap_latencies(calls: Mapping[str, Sequence[Sequence[float]]],
                        baseline: str) -> dict[str, dict[str, Any]]:
    """Each row's latency from its timed calls (``calls[row][j][r]``: call ``j`` of a sampling
    run in round ``r``): the sum over its calls of the median over rounds (``seconds``), the
    acceleration ``1 - seconds / seconds(baseline)``, and their bootstrap standard errors over
    rounds (``None`` for one round), resampled jointly for every row since a round's calls ran
    side by side."""
    import numpy as np

    arrays = {name: np.asarray(c) for name, c in calls.items()}  # (calls, R)
    repeats = arrays[baseline].shape[1]
    picks = np.random.default_rng(0).integers(0, repeats, size=(BOOTSTRAP, repeats))
    point = {name: float(np.median(a, axis=1).sum()) for name, a in arrays.items()}
    boot = {name: np.median(a[:, picks], axis=2).sum(axis=0) for name, a in arrays.items()}  # (B,)

    def se(values: Any) -> float | None:
        return float(np.std(values, ddof=1)) if repeats > 1 else None

    return {name: {"seconds": point[name], "seconds_se": se(boot[name]),
                   "acceleration": 1.0 - point[name] / point[baseline],
                   "acceleration_se": se(1.0 - boot[name] / boot[baseline])} for name in arrays}


@functools.cache
def load_testbed(arch: str, path: Path | None = None) -> Any:
    """The ``arch`` testbed's model on the weights ``path`` (the shipped ones by default), loaded
    once per run."""
    from ase_search.testbed import load_model

    return load_model(arch, path)
