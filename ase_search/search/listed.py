"""A fixed list of configurations, measured into an ordinary study (``run --configs FILE``).

A benchmark's grid is not a search: every configuration on the list is measured, on the study's
weights and seed, and stored as a COMPLETE trial with ``kind: listed`` and its ``label``, so
``confirm``, ``pareto`` and the verdict treat them like searched trials (beside the steps-only
ladder, which every study measures). The file is YAML; each entry is a product over its listed
values::

    configurations:
      - sampler: ddim              # a name or a list of names
        steps: [7, 10, 14, 20]     # a count or a list
        schedule: [D1, D3, D4]     # presets (ase-search schedules) or schedule JSON files,
                                   # relative to this file
        reuse: [null, 2, 3]        # optional: block reuse at this refresh period in every
                                   # exiting interval (null: skip the blocks)
        timestep_spacing: linspace # optional

Configurations that run the same blocks at every call (:func:`~ase_search.record.config_identity`)
are measured once, under the first one's label.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase_search.search.config import SearchError

__all__ = ["LISTED", "Listed", "load_listed"]

LISTED = "listed"  # the ``kind`` user attribute of a listed configuration's trial
_FIELDS = ("sampler", "steps", "schedule", "reuse", "timestep_spacing")


@dataclass(frozen=True)
class Listed:
    """One configuration of the list: its label (``"ddim-10, D3 reuse2"``), sampler and
    schedule."""

    label: str
    sampler: Any  # SamplerConfig
    schedule: Any  # ExitSchedule


def _values(entry: dict[str, Any], key: str, default: Any) -> list[Any]:
    value = entry.get(key, default)
    return list(value) if isinstance(value, list) else [value]


def load_listed(path: str | Path, *, arch: str, depth: int) -> tuple[Listed, ...]:
    """The configurations of list file ``path`` for a model of ``arch`` with ``depth`` exitable
    blocks, without repeats.

    Raises:
        SearchError: the file is missing or malformed (one line naming the entry and field).
    """
    import yaml

    from ase_search.record import config_identity
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule, ScheduleError, preset

    file = Path(path).expanduser()

    def refuse(problem: str) -> SearchError:
        return SearchError(f"configs {file}: {problem}", fields=("configs",))

    try:
        data = yaml.safe_load(file.read_text())
    except OSError as err:
        raise refuse(f"cannot be read ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise refuse(f"is not valid YAML ({str(err).splitlines()[0]})") from None
    entries = data.get("configurations") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise refuse("needs a non-empty list under 'configurations:'")
    out: list[Listed] = []
    seen: set[tuple] = set()
    for i, entry in enumerate(entries, start=1):
        where = f"configuration {i}"
        if not isinstance(entry, dict):
            raise refuse(f"{where} must be a mapping of {', '.join(_FIELDS)}")
        unknown = sorted(set(entry) - set(_FIELDS))
        if unknown:
            raise refuse(f"{where} has unknown field(s) {', '.join(unknown)}; known: "
                         f"{', '.join(_FIELDS)}")
        for name in ("sampler", "steps", "schedule"):
            if name not in entry:
                raise refuse(f"{where} needs {name}")
        for sampler_name, steps, name, reuse in itertools.product(
                _values(entry, "sampler", None), _values(entry, "steps", None),
                _values(entry, "schedule", None), _values(entry, "reuse", None)):
            try:
                sampler = SamplerConfig(name=sampler_name, steps=steps,
                                        timestep_spacing=entry.get("timestep_spacing"))
            except (TypeError, ValueError) as err:
                raise refuse(f"{where}: {err}") from None
            if reuse is not None and (isinstance(reuse, bool) or not isinstance(reuse, int)
                                      or reuse < 1):
                raise refuse(f"{where}: reuse must be null or a refresh period >= 1, got "
                             f"{reuse!r}")
            try:
                if not isinstance(name, str):
                    raise ScheduleError(f"schedule must be a preset name or a JSON file, got "
                                        f"{name!r}")
                json_file = file.parent / name
                schedule = (ExitSchedule.from_json(json_file) if name.endswith(".json")
                            else preset(name, arch, depth))
                if schedule.arch != arch or schedule.depth != depth:
                    raise ScheduleError(f"{name} is for {schedule.arch} with depth "
                                        f"{schedule.depth}, the model is {arch} with depth "
                                        f"{depth}")
            except (OSError, ScheduleError) as err:
                raise refuse(f"{where}: {err}") from None
            if reuse is not None:
                schedule = schedule.with_reuse(reuse)
            label = f"{sampler.describe()}, {Path(name).stem}" + (
                f" reuse{reuse}" if reuse is not None else "")
            identity = config_identity(sampler.to_dict(), schedule.to_dict())
            if identity not in seen:
                seen.add(identity)
                out.append(Listed(label, sampler, schedule))
    return tuple(out)
