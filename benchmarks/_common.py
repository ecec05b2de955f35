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
from collections.abc import Mapping, Sequence
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


def check_ladder_params(params: Any) -> None:
    """The checks levers and steps_vs_exits share: ``steps_only`` and ``exit_steps`` distinct step
    counts >= 1, ``reference_steps`` among ``steps_only``, ``window`` >= 1, the sample counts."""
    for name in ("steps_only", "exit_steps"):
        values = getattr(params, name)
        if not values or min(values) < 1 or len(set(values)) != len(values):
            raise ValueError(f"--{name.replace('_', '-')} must be distinct step counts >= 1, got "
                             f"{list(values)}")
    if params.reference_steps not in params.steps_only:
        raise ValueError(f"--reference-steps {params.reference_steps} must be one of "
                         f"--steps-only {list(params.steps_only)}")
    if not params.window >= 1:
        raise ValueError(f"--window must be >= 1, got {params.window}")
    if params.n < 2 or min(params.seeds, params.batch_size, params.latency_batch) < 1:
        raise ValueError("--n must be >= 2; --seeds, --batch-size and --latency-batch >= 1")


def testbed_report(name: str, arch: str) -> Path:
    """Benchmark ``name``'s report on the ``arch`` testbed: ``reports/<name>.md`` for DiT (the
    first testbed measured, whose reports keep their names), ``reports/<name>-<arch>.md`` else;
    its ``.json`` twin is the cache."""
    return ROOT / "reports" / (f"{name}.md" if arch == "dit" else f"{name}-{arch}.md")


def reference_one_shot_weights(arch: str, studies_dir: Path = REFERENCE_STUDIES) -> Path:
    """The one-shot weights that the reference study ``<studies_dir>/<arch>.db`` recorded.

    Found through :func:`ase_search.finetune.resolve_weights` (``<study>-one-shot-<key12>
    .safetensors`` next to the study, checked against its key).

    Raises:
        ValueError: there is no such study, it records no weights, or the file is missing (the
            message says how to rebuild it) or is not the one recorded.
    """
    import optuna

    from ase_search.finetune import resolve_weights

    path = studies_dir / f"{arch}.db"
    if not path.is_file():
        raise ValueError(f"there is no reference study at {display_path(path)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{path}")
    record = study.user_attrs.get("weights")
    if not record:
        raise ValueError(f"the study {display_path(path)} records no one-shot weights")
    return resolve_weights(record, path.parent, arch=arch)


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


def pct(value: float | None, se: float | None = None) -> str:
    """``12.3%`` (``± 0.4%`` with a standard error ``se`` that is not 0 or NaN); ``–`` for a
    missing value."""
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.1%}" + (f" ± {se:.1%}" if se and not math.isnan(se) else "")


def fid_text(cell: Mapping[str, Any] | None) -> str:
    """``mean ± std`` of a cached FID cell (``fid_mean``, ``fid_std``); ``–`` for no cell."""
    if cell is None:
        return "–"
    std = cell["fid_std"]
    return f"{cell['fid_mean']:.2f}" + (f" ± {std:.2f}" if std is not None else "")


# ###################################################################### the verdict
# Every "beats", "beyond", "at least" and "helps" in a benchmark's report comes from
# ase_search.verdict.judge through judge_cells, in the words of Verdict.lines and Judgement.text.
VERDICT_DATE = "2026-12-07"  # the verdicts of the cached cells were re-judged by the paired rule
SOLVER_TITLES: dict[str, str] = {"ddim": "DDIM", "dpm-solver": "DPM-Solver++", "ddpm": "DDPM"}


def verdict_note() -> str:
    """The report line saying which rule judged the cached cells, and when."""
    return (f"- Verdict: re-judged on {VERDICT_DATE} with the paired rule of "
            "`ase_search/verdict.py`, from the cached cells (nothing re-measured)")


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


def relative_latency(cost: Mapping[str, Any], cell: Mapping[str, Any],
                     reference_steps: int = 20) -> float:
    """The cost model's (``CostModel.to_dict``) latency of a cell's sampler and schedule over the
    full model's at DDIM-``reference_steps``."""
    from ase_search.metrics.latency import CostModel
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule

    model = CostModel.from_dict(dict(cost))
    schedule = cell.get("schedule")
    seconds = model.latency(None if schedule is None else ExitSchedule.from_dict(schedule),
                            SamplerConfig.from_dict(cell["sampler"]).model_times())
    return seconds / model.latency(None, SamplerConfig("ddim", reference_steps).model_times())


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


def ladder_from_cells(cells: Mapping[str, Mapping[str, Any]], arch: str,
                      reference_steps: int = 20) -> tuple[list[Configuration],
                                                           Configuration] | None:
    """The full model's configurations in cells of :mod:`benchmarks.levers`' layout
    (``<arch>/cost-model``, ``<arch>/<solver>-<k>/full``), latency relative to DDIM-
    ``reference_steps``, and that reference; ``None`` until both are cached."""
    cost = cells.get(f"{arch}/cost-model")
    if cost is None:
        return None
    ladder = [configuration(ladder_label(c), c, relative_latency(cost["cost_model"], c,
                                                                 reference_steps))
              for k, c in cells.items() if k.startswith(f"{arch}/") and k.endswith("/full")]
    ref = next((q for q in ladder if q.label == f"full, DDIM-{reference_steps}"), None)
    return None if ref is None else (ladder, ref)


@dataclasses.dataclass(frozen=True)
class StartingLadder:
    """The steps-only ladder of a testbed's starting weights (the shipped base weights, which a
    user who does not exit samples with): DDIM and DPM-Solver++ at every step count of
    ``reports/levers.json``.

    Attributes:
        ladder: the configurations, latency relative to the full model at DDIM-20 (its cost
            model's).
        reference: the full model at DDIM-20.
        source: where it comes from, for a report.
    """

    ladder: tuple[Configuration, ...]
    reference: Configuration
    source: str


def starting_ladder(arch: str, reference_steps: int = 20) -> StartingLadder | None:
    """The ``arch`` testbed's starting ladder from ``reports/levers.json``; ``None`` while that
    cache lacks it, or when it was measured on other weights than the shipped testbed's."""
    path = ROOT / "reports" / "levers.json"
    stored = load_json(path) if path.is_file() else None
    found = ladder_from_cells(stored["cells"], arch, reference_steps) if stored else None
    if found is None:
        return None
    cell = stored["cells"][f"{arch}/ddim-{reference_steps}/full"]
    weights = ROOT / cell["weights"]
    if weights.is_file() and weights_sha256(weights) != cell["weights_sha256"]:
        return None
    ladder, ref = found
    solvers = sorted({q.label.split(", ")[1].rsplit("-", 1)[0] for q in ladder})
    return StartingLadder(tuple(ladder), ref, (
        f"the full model on the starting weights `{cell['weights']}` (sha256 "
        f"{cell['weights_sha256'][:12]}) with {' and '.join(solvers)} at {len(ladder)} "
        f"sampler and step counts, from `{display_path(path)}` (same seeds and samples; latency "
        f"from its cost model, relative to its full DDIM-{reference_steps})"))


# ###################################################################### shared by the benchmarks
@functools.cache
def load_testbed(arch: str, path: Path | None = None) -> Any:
    """The ``arch`` testbed's model on the weights ``path`` (the shipped ones by default), loaded
    once per run."""
    from ase_search.testbed import load_model

    return load_model(arch, path)


def front_figure(groups: Mapping[str, Sequence[Configuration]], joint: Sequence[Configuration],
                 ref_fid: float, window: float, title: str, xaxis: str) -> Any:
    """FID (log axis, mean ± sd over seeds) against relative latency: a line per group, the
    joint front, the quality window's edge."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, pts in groups.items():
        pts = sorted(pts, key=lambda p: p.latency.value)
        fig.add_trace(go.Scatter(
            x=[p.latency.value for p in pts], y=[p.fid for p in pts], mode="lines+markers",
            name=name, error_y=dict(type="data", array=[p.fid_sd or 0.0 for p in pts],
                                    visible=True),
            text=[p.label for p in pts],
            hovertemplate="%{text}<br>latency %{x:.3f}<br>FID %{y:.2f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[p.latency.value for p in joint], y=[p.fid for p in joint],
                             mode="lines", line=dict(shape="hv", dash="dot", color="black"),
                             name="joint front"))
    fig.add_hline(y=window * ref_fid, line_dash="dash", line_color="grey",
                  annotation_text=f"{window:g} x reference FID (the quality window)")
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title="FID-MNIST (mean over seeds, "
                      "± sd)", yaxis_type="log", height=600)
    return fig


def front_text(name: str, configs: Sequence[Configuration]) -> str:
    """``Joint front: full, DDIM-5 (3.85, 0.25), ...`` (FID, relative latency)."""
    return f"{name}: " + ", ".join(f"{p.label} ({p.fid:.2f}, {p.latency.value:.2f})"
                                   for p in configs) + "."
