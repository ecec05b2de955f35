"""What the benchmarks share besides the runner: digests, JSON files, progress bars, table cells.

The benchmarks run as ``python -m benchmarks.<name>`` from the repository root, through
:mod:`benchmarks._runner`. Everything here is light to import (torch and rich are imported inside
the functions that need them), so a benchmark's ``--help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ase_search.files import atomic_write_text as write_text  # atomic, 0644 under umask 022

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


def fid_cell(p: Any) -> str:
    """A :class:`~ase_search.verdict.PairedPoint`'s FID as ``mean ± sd`` over its seeds."""
    sd = statistics.stdev(p.fids) if len(p.fids) > 1 else None
    return f"{p.fid:.2f}" + ("" if sd is None else f" ± {sd:.2f}")


# ###################################################################### beyond fewer steps
@dataclasses.dataclass(frozen=True)
class Beyond:
    """A configuration with a lower mean FID than every steps-only one, and faster than the best
    of them (``best``). Fewer steps never reach its FID, so the matched-FID headline
    (:func:`ase_search.verdict.paired_headline`) cannot count it; its speedup at matched FID is
    at least ``best.latency / point.latency``. (:class:`ase_search.fronts.Beyond` is the same
    judgement on a study's points.)

    Attributes:
        point: the configuration, a :class:`~ase_search.verdict.PairedPoint`.
        best: the steps-only configuration of lowest mean FID (then lowest latency).
    """

    point: Any
    best: Any

    @property
    def lower_bound(self) -> float:
        return self.best.latency / self.point.latency

    def text(self) -> str:
        """The finding in a report's words, with the per-seed FID ratio to ``best``."""
        from ase_search.verdict import SeedRatio

        p, best = self.point, self.best
        return (f"{p.label} reaches FID {fid_cell(p)}, below every steps-only configuration's "
                f"(the best, {best.label}, has {fid_cell(best)}; per seed "
                f"{SeedRatio.of(p.fids, best.fids).text()}x it), at latency {p.latency:.3f}: a "
                f"speedup at matched FID of **at least {self.lower_bound:.2f}x** (a lower bound: "
                "fewer steps never reach its FID)")


def beyond_steps(points: Sequence[Any], steps_only: Sequence[Any]) -> list[Beyond]:
    """The ``points`` (PairedPoints) better in mean FID than every one of ``steps_only`` and
    faster than the best of them, fastest first (the largest lower bound first)."""
    if not steps_only:
        return []
    best = min(steps_only, key=lambda q: (q.fid, q.latency))
    return [Beyond(p, best) for p in sorted(points, key=lambda p: (p.latency, p.fid))
            if p.fid < best.fid and p.latency < best.latency]
