"""The cost model against timed whole runs (reports/cost_model.md).

A study's trials are ranked by the cost model's predicted latency; ``confirm`` times the whole
sampling runs of its confirmed configurations in one interleaved session. This profiles the
testbed's components again with today's cost model (its terms for a cached call's gates and
forecasts included) and compares, per configuration of a timed reference study, the latency
relative to the reference configuration as predicted by the study's stored cost model, by
today's, and as timed.

    python -m benchmarks.cost_model --threads 2

One cell per study (``dit-forecast``): the profile and the per-configuration ratios. Run it on an
idle machine: the profile times components at the study's batch.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import field
from typing import Any

from benchmarks._common import REFERENCE_STUDIES, machine_text
from benchmarks._runner import Benchmark, CellContext, Report, markdown_table, option, run


@dataclasses.dataclass(frozen=True)
class Params:
    """Which timed studies."""

    studies: tuple[str, ...] = field(default=("dit-forecast", "dit-reuse", "dit", "uvit"), metadata=option(
        "reference studies (studies/reference/<name>.db) whose whole runs were timed",
        identity=False))


def keys(params: Params) -> list[str]:
    return list(params.studies)


def measure(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    import optuna

    from ase_search.evaluate import machine_info
    from ase_search.fronts import study_fronts
    from ase_search.metrics.latency import CostModel, profile_components
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import ExitSchedule
    from ase_search.testbed import load_model

    study = optuna.load_study(study_name=None,
                              storage=f"sqlite:///{REFERENCE_STUDIES / f'{key}.db'}")
    stored = CostModel.from_dict(study.user_attrs["cost_model"])
    timed = study.user_attrs["measured_latency"]["configs"]
    fronts = study_fronts(study)
    ref = fronts.reference
    today = profile_components(load_model(stored.arch), batch_size=stored.batch_size)
    points = {p.key: p for p in fronts.points}
    rows = []
    for k, run_ in timed.items():
        p = points.get(k)
        if p is None:
            continue
        schedule = (None if p.trial is None
                    else ExitSchedule.from_dict(study.trials[p.trial].user_attrs["schedule"]))
        sampler, ref_sampler = (SamplerConfig.from_dict(p.sampler),
                                SamplerConfig.from_dict(ref.sampler))

        def relative(cost: Any) -> float:
            return cost.latency(schedule, sampler) / cost.latency(None, ref_sampler)

        rows.append({"configuration": k, "levers": list(p.levers), "stored": relative(stored),
                     "today": relative(today),
                     "timed": run_["seconds"] / timed[ref.key]["seconds"]})
    return {"rows": rows, "profile": today.to_dict(), "command": ctx.command,
            "machine": machine_info()}


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    import pandas as pd

    out = ["# The cost model against timed whole runs", "",
           f"Written by `benchmarks/cost_model.py` from `{json_name}`: per configuration of a "
           f"timed reference study, its latency relative to the reference configuration as the "
           f"study's stored cost model predicted it, as today's cost model (profiled again, "
           f"with a cached call's gates and forecasts) predicts it, and as `confirm` timed it "
           f"(whole runs, interleaved rounds).", ""]
    for key, cell in cells.items():
        out += [f"## {key}", "", f"- `{cell['command']}` on {machine_text(cell['machine'])}, "
                f"{cell['machine']['date']}", ""]
        errors: dict[str, dict[str, list[float]]] = {}
        rows = []
        for r in cell["rows"]:
            lever = "+".join(x for x in r["levers"] if x != "full") or "full"
            for model in ("stored", "today"):
                errors.setdefault(lever, {}).setdefault(model, []).append(
                    r[model] / r["timed"] - 1)
            rows.append({"configuration": r["configuration"], "stored": f"{r['stored']:.3f}",
                         "today": f"{r['today']:.3f}", "timed": f"{r['timed']:.3f}"})
        summary = [{"levers": lever, "configurations": len(e["stored"]),
                    "stored model, median error": f"{statistics.median(e['stored']):+.1%}",
                    "today's model, median error": f"{statistics.median(e['today']):+.1%}"}
                   for lever, e in errors.items()]
        out += [markdown_table(pd.DataFrame(summary)), "", markdown_table(pd.DataFrame(rows)),
                ""]
    return Report("\n".join(out))


BENCHMARK = Benchmark(name="cost_model", doc=__doc__, params=Params, keys=keys, cell=measure,
                      report=report)

if __name__ == "__main__":
    run(BENCHMARK)
