"""Search efficiency (reports/search_efficiency.md, .html, .json): default sampler vs TPE vs random.

Each algorithm runs ``--repeats`` studies of ``--budget`` finished trials on the testbed with the
one-shot fine-tuned model; a study's sampler is seeded with its repeat index. The measurement is
the search's own (:func:`ase_search.search.evaluate_schedule`: sampling with common random numbers,
FID, cost-model latency), over the same space, with the same seed schedules enqueued first. The
report gives the hypervolume after each trial (mean and spread per algorithm, one reference point
for every run), the trials each run needs to reach 95% of the best final hypervolume, and whether
the default sampler reaches random search's budget hypervolume in at most half the trials.

Optuna runs in this process, not through Ray Tune: Ray is only the search's executor and would
add its start-up and scheduling to every one of the studies. Evaluations are memoised by schedule
(common random numbers make them deterministic; the script checks this once), persisted after
each new one, so the studies share them and an interrupted benchmark resumes. Run from the
repository root:

    python -m benchmarks.search_efficiency --arch dit --budget 40 --repeats 3 \
        --algos gp tpe random --n 500 --threads 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ase_search.pareto import hypervolume
from ase_search.schedule import ExitSchedule
from ase_search.search import SAMPLER_ALGOS, SearchConfig
from benchmarks._common import (
    ROOT,
    file_sha256,
    load_json,
    machine_text,
    progress_bar,
    short_hash,
    start_run,
    write_json,
    write_text,
)

DEFAULT_ALGO = SearchConfig().sampler_algo  # what `ase-search run` uses without --sampler-algo
FRACTION_OF_BEST = 0.95
REFERENCES = {"full": "2 x the FID of the full schedule, {full:.4g}, measured as above with the "
                      "same weights",
              "presets": "1.1 x the worst seed's FID, {worst:.4g} ({worst_name}): the box the "
                         "paper's presets span"}
CACHE_VERSION = 1
COLOURS = {"gp": "#d62728", "tpe": "#1f77b4", "random": "#7f7f7f", "nsga2": "#2ca02c"}


# ###################################################################### pure helpers
def schedule_key(schedule: ExitSchedule) -> str:
    """Memo key of a schedule: arch, depth, edges and blocks after merging equal neighbours, so
    parameter vectors that decode to the same schedule share one evaluation."""
    s = schedule.merged()
    return json.dumps([s.arch, s.depth, [round(b, 9) for b in s.boundaries], list(s.blocks)])


def hypervolume_curve(points: Sequence[Sequence[float]],
                      reference_point: Sequence[float]) -> list[float]:
    """Hypervolume of the first ``k`` points for ``k = 1 .. len(points)`` (never decreases)."""
    return [hypervolume(points[: k + 1], reference_point) for k in range(len(points))]


def trials_to_reach(curve: Sequence[float], target: float) -> int | None:
    """The first trial count ``k`` (1-based) whose hypervolume is at least ``target``, or ``None``.

    A relative slack of 1e-12 absorbs summation-order differences between equal fronts.
    """
    slack = 1e-12 * max(abs(target), 1.0)
    return next((k + 1 for k, hv in enumerate(curve) if hv >= target - slack), None)


@dataclass(frozen=True)
class CurveStats:
    """Per-trial-count statistics of several runs' hypervolume curves (all of equal length)."""

    mean: list[float]
    std: list[float]  # sample standard deviation; 0 for a single run
    low: list[float]
    high: list[float]


def curve_stats(curves: Sequence[Sequence[float]]) -> CurveStats:
    """Mean, sample std, min and max over runs at each trial count."""
    if not curves or len({len(c) for c in curves}) != 1:
        raise ValueError(f"curves must be a non-empty list of equal-length curves, got lengths "
                         f"{[len(c) for c in curves]}")
    columns = list(zip(*curves))
    return CurveStats(
        mean=[statistics.fmean(c) for c in columns],
        std=[statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns],
        low=[min(c) for c in columns],
        high=[max(c) for c in columns],
    )


def shared_prefix(sequences: Sequence[Sequence[Any]]) -> int:
    """Length of the longest common prefix of ``sequences``."""
    n = 0
    for items in zip(*sequences):
        if any(x != items[0] for x in items[1:]):
            break
        n += 1
    return n


# ###################################################################### the memoised objective
class TrialFailed(RuntimeError):
    """A schedule whose evaluation failed (recorded in the cache, so replays fail alike)."""


class MemoisedObjective:
    """:func:`ase_search.search.evaluate_schedule` behind a JSON cache keyed by schedule.

    The cache file is rewritten atomically after every new evaluation, so a killed benchmark
    loses at most the evaluation in flight.
    """

    def __init__(self, ctx: Any, path: Path, identity: dict[str, Any], threads: int) -> None:
        self.ctx, self.path, self.threads = ctx, path, threads
        stored = load_json(path) or {}
        if stored and stored.get("identity") != identity:
            raise ValueError(f"{path} was written with other settings; delete it or pass another "
                             f"--cache-dir")
        self.identity = identity
        self.entries: dict[str, dict[str, Any]] = stored.get("evaluations", {})
        self.hits = 0
        self.new = 0
        self.eval_seconds = 0.0  # spent on new evaluations by this process

    def measure(self, schedule: ExitSchedule) -> dict[str, Any]:
        """Evaluate without the cache (the search's own measurement)."""
        from threadpoolctl import threadpool_limits

        from ase_search.search import evaluate_schedule

        t0 = time.perf_counter()
        try:
            with threadpool_limits(limits=self.threads):  # as the search's workers do
                return evaluate_schedule(schedule, self.ctx, tag="bench")
        finally:
            self.eval_seconds += time.perf_counter() - t0

    def __call__(self, schedule: ExitSchedule) -> dict[str, Any]:
        key = schedule_key(schedule)
        entry = self.entries.get(key)
        if entry is None:
            try:
                entry = self.measure(schedule)
            except Exception as err:  # a FAILED trial in the search too
                entry = {"fail_reason": f"{type(err).__name__}: {err}"[:500]}
            self.entries[key] = entry
            self.new += 1
            write_json(self.path, {"version": CACHE_VERSION, "identity": self.identity,
                                   "evaluations": self.entries}, sort_keys=True)
        else:
            self.hits += 1
        if "fail_reason" in entry:
            raise TrialFailed(entry["fail_reason"])
        return entry


# ###################################################################### one study
def run_study(algo: str, repeat: int, space: Any, objective: MemoisedObjective, budget: int,
              on_trial: Callable[[], None]) -> dict[str, Any]:
    """One in-memory Optuna study (FID, latency minimised) of ``budget`` finished trials.

    Like ``ase-search run``: the space's seed schedules are enqueued first, parameters are drawn
    from the space's distributions, failed trials are told FAILED and do not count.
    """
    import optuna
    from optuna.trial import TrialState

    from ase_search.search import enqueue_seeds
    from ase_search.space import schedules_equivalent

    seeds = list(zip(space.seeds, space.seed_schedules()))
    with warnings.catch_warnings():  # GPSampler / multivariate TPE may warn "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(directions=["minimize", "minimize"],
                                    sampler=SAMPLER_ALGOS[algo](repeat))
    enqueue_seeds(study, space)

    def objective_fn(trial: optuna.Trial) -> tuple[float, float]:
        schedule = space.suggest(trial)
        seed = next((name for name, s in seeds if schedules_equivalent(s, schedule)), None)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("schedule_key", schedule_key(schedule))
        trial.set_user_attr("describe", schedule.describe())
        hits = objective.hits
        try:
            result = objective(schedule)
        except TrialFailed as err:  # told FAILED by Optuna (caught below), reason kept
            trial.set_user_attr("fail_reason", str(err))
            raise
        trial.set_user_attr("cached", objective.hits > hits)
        trial.set_user_attr("acceleration", result["acceleration"])
        return result["fid"], result["latency"]

    def complete() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    started, evals_before = time.perf_counter(), objective.eval_seconds
    stalled = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        while complete() < budget and stalled < 3:
            before = complete()
            study.optimize(objective_fn, n_trials=budget - before, catch=(Exception,),
                           callbacks=[lambda s, t: on_trial()])
            stalled = stalled + 1 if complete() == before else 0
    if complete() < budget:
        reasons = {t.user_attrs.get("fail_reason") or "see the log"
                   for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        raise RuntimeError(f"{algo} repeat {repeat} stopped at {complete()}/{budget} finished "
                           f"trials; trials keep failing ({'; '.join(sorted(map(str, reasons)))})")
    wall = time.perf_counter() - started
    trials = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, "params": t.params,
                               **{k: t.user_attrs.get(k) for k in
                                  ("seed", "schedule_key", "describe", "cached",
                                   "acceleration")}}
        if t.state == TrialState.COMPLETE:
            row["fid"], row["latency"] = t.values
        trials.append(row)
    return {"algo": algo, "repeat": repeat, "budget": budget, "trials": trials,
            "wall_time": wall, "sampler_time": wall - (objective.eval_seconds - evals_before),
            "completed": time.strftime("%Y-%m-%d %H:%M:%S")}


def finished_points(run: dict[str, Any], budget: int) -> list[tuple[float, float]]:
    """(FID, latency) of the run's first ``budget`` COMPLETE trials, in trial order."""
    done = [t for t in run["trials"] if t["state"] == "COMPLETE"]
    return [(t["fid"], t["latency"]) for t in done[:budget]]


# ###################################################################### analysis
def analyse(runs: dict[str, dict[str, Any]], algos: Sequence[str], repeats: int, budget: int,
            reference_point: tuple[float, float], n_seeds: int = 0) -> dict[str, Any]:
    """Hypervolume curves, their statistics, trials to 95% of the best, and the target verdict.

    ``n_seeds``: how many enqueued seed trials open every study; the verdict then also gives the
    hypervolume of the seeds alone (when random search ends there, the target is met trivially).
    """
    curves = {name: hypervolume_curve(finished_points(run, budget), reference_point)
              for name, run in runs.items()}
    best_final = max(c[-1] for c in curves.values())
    target95 = FRACTION_OF_BEST * best_final
    per_algo: dict[str, Any] = {}
    for algo in algos:
        names = [_run_name(algo, r) for r in range(repeats)]
        stats = curve_stats([curves[n] for n in names])
        reach = [trials_to_reach(curves[n], target95) for n in names]
        distinct = [len({t["schedule_key"] for t in runs[n]["trials"]
                         if t["state"] == "COMPLETE"}) for n in names]
        reached = [k for k in reach if k is not None]
        per_algo[algo] = {
            "runs": names,
            "stats": asdict(stats),
            "final": [curves[n][-1] for n in names],
            "trials_to_95": reach,
            "trials_to_95_mean": statistics.fmean(reached) if reached else None,
            "trials_to_95_reached": len(reached),
            "trials_to_95_mean_curve": trials_to_reach(stats.mean, target95),
            "distinct_schedules": distinct,
        }
    verdict = None
    if DEFAULT_ALGO in per_algo and "random" in per_algo and DEFAULT_ALGO != "random":
        random_final = per_algo["random"]["stats"]["mean"][-1]
        default = per_algo[DEFAULT_ALGO]
        at_mean = trials_to_reach(default["stats"]["mean"], random_final)
        seeds_only = (per_algo["random"]["stats"]["mean"][n_seeds - 1]
                      if 0 < n_seeds <= budget else None)
        verdict = {
            "random_mean_final": random_final,
            "seeds_only": seeds_only,
            "trivial": seeds_only is not None and random_final <= seeds_only,
            "default_mean_curve_trials": at_mean,
            "default_per_run_trials": [trials_to_reach(curves[n], random_final)
                                       for n in default["runs"]],
            "limit": budget // 2,
            "met": at_mean is not None and at_mean <= budget // 2,
        }
    return {"reference_point": list(reference_point), "best_final": best_final,
            "target95": target95, "curves": curves, "per_algo": per_algo, "verdict": verdict}


def _run_name(algo: str, repeat: int) -> str:
    return f"{algo}-r{repeat}"


def _label(algo: str) -> str:
    return f"{algo} (default)" if algo == DEFAULT_ALGO else algo


def _final_range(result: dict[str, Any], algo: str) -> str:
    """``mean (min – max)`` of an algorithm's final hypervolumes."""
    s = result["per_algo"][algo]["stats"]
    return f"{s['mean'][-1]:.4g} ({s['low'][-1]:.4g} – {s['high'][-1]:.4g})"


def _fmt_trials(k: int | None, budget: int) -> str:
    return str(k) if k is not None else f"not reached (> {budget})"


# ###################################################################### markdown report
def markdown(meta: dict[str, Any], result: dict[str, Any], runs: dict[str, dict[str, Any]],
             algos: Sequence[str], repeats: int, budget: int) -> str:
    ref = result["reference_point"]
    lines = [
        "# Search efficiency", "",
        f"Generated {meta['date']} by `{meta['command']}` on {machine_text(meta['machine'])}.",
        "",
        f"- testbed: {meta['arch']} ({meta['model']}), space `{meta['space']}` "
        f"({meta['n_params']} parameters; seeds {', '.join(meta['seeds']) or 'none'} enqueued "
        f"first in every study, as `ase-search run` does)",
        f"- model: {meta['weights_note']}",
        f"- measurement (the search's objective, `evaluate_schedule`): {meta['sampler']}, "
        f"N = {meta['n']} samples per trial, sampling seed {meta['seed']} for every trial "
        f"(common random numbers), FID-{meta['fid_extractor']}; latency from the cost model "
        f"profiled once at batch {meta['latency_batch']} "
        f"(full model {meta['full_latency']:.4g} s per batch)",
        f"- algorithms: {', '.join(_label(a) for a in algos)}; {repeats} "
        f"stud{'ies' if repeats > 1 else 'y'} each of {budget} finished trials; study r's "
        f"sampler seeded with r (r = 0..{repeats - 1})",
        f"- hypervolume reference point (one for every run; `--reference {meta['reference']}`): "
        f"FID {ref[0]:.4g} ({meta['reference_note']}), latency {ref[1]:.4g} s (the full "
        f"model's); points outside it add nothing",
        f"- Optuna ran in this process, not through Ray Tune (Ray is only the search's "
        f"executor; its start-up and scheduling would add minutes over {len(runs)} studies and "
        f"measure nothing about the samplers)",
        f"- evaluations memoised by schedule and shared by all studies: "
        f"{meta['unique_evaluations']} distinct schedules evaluated for "
        f"{sum(len(finished_points(r, budget)) for r in runs.values())} finished trials; "
        f"median {meta['median_eval_seconds']:.1f} s per evaluation",
        f"- determinism check ({meta['determinism']['schedule']} evaluated twice): "
        + ("FID identical bit for bit, so memoising is exact"
           if meta["determinism"]["exact"] else
           f"FID differs by {meta['determinism']['abs_diff']:.3g} between two evaluations; the "
           f"cache keeps the first value of each schedule, so repeated schedules are not "
           f"re-measured"),
    ]
    prefixes = meta.get("shared_prefix", {})
    if prefixes:
        lines.append("- trials identical across algorithms at the same repeat (seeds plus the "
                     "samplers' shared random start-up): "
                     + ", ".join(f"r{r}: first {n}" for r, n in prefixes.items()))
    lines += ["", "## Summary", "",
              f"Best final hypervolume over all runs: **{result['best_final']:.4g}**; "
              f"{FRACTION_OF_BEST:.0%} of it: {result['target95']:.4g}."
              + (" No finished trial lies inside the reference point, so every hypervolume is "
                 "zero and the comparison below says nothing." if result["best_final"] <= 0
                 else ""), "",
              f"| algorithm | HV at {budget} (mean ± std) | min – max | trials to "
              f"{FRACTION_OF_BEST:.0%} of best, per run | mean (runs reaching) | "
              f"distinct schedules per run | sampler overhead per trial |",
              "| --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for algo in algos:
        a = result["per_algo"][algo]
        s = a["stats"]
        per_run = ", ".join(_fmt_trials(k, budget) for k in a["trials_to_95"])
        mean95 = (f"{a['trials_to_95_mean']:.1f} ({a['trials_to_95_reached']}/{repeats})"
                  if a["trials_to_95_mean"] is not None else f"— (0/{repeats})")
        overhead = statistics.fmean(runs[n]["sampler_time"] / budget for n in a["runs"])
        lines.append(f"| {_label(algo)} | {s['mean'][-1]:.4g} ± {s['std'][-1]:.3g} | "
                     f"{s['low'][-1]:.4g} – {s['high'][-1]:.4g} | {per_run} | {mean95} | "
                     f"{', '.join(map(str, a['distinct_schedules']))} | {overhead:.2f} s |")
    lines += ["", f"A trial whose schedule its study already measured counts as a finished trial "
              f"and is told the earlier values, as `ase-search run` does (`duplicate_of`); "
              f"'distinct schedules' counts the measured ones among the {budget}."]
    verdict = result["verdict"]
    lines += ["", "## Verdict", ""]
    if verdict is None:
        lines.append(f"Not assessed: the target compares {DEFAULT_ALGO} (the default) with "
                     f"random; run both.")
    else:
        k = verdict["default_mean_curve_trials"]
        per_run = ", ".join(_fmt_trials(x, budget) for x in verdict["default_per_run_trials"])
        lines.append(
            f"Target: the default ({DEFAULT_ALGO}) reaches random search's budget-{budget} "
            f"hypervolume in at most {verdict['limit']} trials. Random's mean hypervolume at "
            f"{budget} trials is {verdict['random_mean_final']:.4g}; the default's mean curve "
            + (f"first reaches it at trial **{k}**" if k is not None else
               f"does **not reach it within {budget} trials**")
            + f" (per run: {per_run}). **Target {'met' if verdict['met'] else 'not met'}.**")
        if verdict.get("trivial"):
            lines += ["", f"This verdict says little: inside this reference box random search "
                      f"never improves on the {meta['n_seeds']} seed trials every study opens "
                      f"with (their hypervolume alone is {verdict['seeds_only']:.4g}), so any "
                      f"sampler 'reaches' it with the seeds. What separates the samplers is "
                      f"whether they get beyond the seeds at all: at {budget} trials "
                      + ", ".join(f"{_label(a)} ends at {_final_range(result, a)}"
                                  for a in algos) + ". "
                      + ("Compare the wider box of `--reference presets` "
                         "(`search_efficiency-presets.md`)." if meta["reference"] == "full"
                         else "")]
    checkpoints = sorted({1, *range(5, budget + 1, 5), budget})
    for algo in algos:
        s = result["per_algo"][algo]["stats"]
        lines += ["", f"## {_label(algo)}: hypervolume against trials", "",
                  "| trials | mean | std | min | max |", "| ---: | ---: | ---: | ---: | ---: |"]
        for k in checkpoints:
            lines.append(f"| {k} | {s['mean'][k - 1]:.4g} | {s['std'][k - 1]:.3g} | "
                         f"{s['low'][k - 1]:.4g} | {s['high'][k - 1]:.4g} |")
    lines += ["", f"Wall time of this invocation: {meta['wall_time'] / 60:.1f} min "
              f"({meta['new_evaluations']} new evaluations, {meta['cache_hits']} cache hits). "
              f"Curves, fronts and every trial: `{meta['json_name']}`; plots: "
              f"`{meta['html_name']}`.", ""]
    return "\n".join(lines)


# ###################################################################### HTML report
def html_report(meta: dict[str, Any], result: dict[str, Any], runs: dict[str, dict[str, Any]],
                algos: Sequence[str], repeats: int, budget: int, text: str) -> str:
    import plotly.graph_objects as go

    trials = list(range(1, budget + 1))
    hv = go.Figure()
    for algo in algos:
        s = result["per_algo"][algo]["stats"]
        colour = COLOURS.get(algo, "#9467bd")
        hv.add_trace(go.Scatter(x=trials, y=s["low"], mode="lines", line_shape="hv",
                                line={"width": 0, "color": colour}, hoverinfo="skip",
                                legendgroup=algo, showlegend=False))
        hv.add_trace(go.Scatter(x=trials, y=s["high"], mode="lines", line_shape="hv",
                                line={"width": 0, "color": colour}, fill="tonexty",
                                fillcolor=_rgba(colour, 0.18), hoverinfo="skip",
                                legendgroup=algo, name=f"{_label(algo)} min–max"))
        hv.add_trace(go.Scatter(x=trials, y=s["mean"], mode="lines", line_shape="hv",
                                line={"color": colour, "width": 2.5}, legendgroup=algo,
                                name=f"{_label(algo)} mean of {repeats}"))
    hv.add_hline(y=result["target95"], line_dash="dot", line_color="#444",
                 annotation_text=f"{FRACTION_OF_BEST:.0%} of best final",
                 annotation_position="bottom right")
    if result["verdict"] is not None:
        hv.add_hline(y=result["verdict"]["random_mean_final"], line_dash="dash",
                     line_color=COLOURS["random"],
                     annotation_text=f"random's mean at {budget}",
                     annotation_position="top left")
        hv.add_vline(x=result["verdict"]["limit"], line_dash="dash", line_color="#bbb")
    ref = result["reference_point"]
    hv.update_layout(xaxis_title="finished trials", yaxis_title="hypervolume (FID x s)",
                     title=f"reference point: FID {ref[0]:.4g}, latency {ref[1]:.4g} s",
                     template="plotly_white", height=480)

    symbols = ["circle", "square", "diamond", "triangle-up", "x", "star"]
    fronts = go.Figure()
    full = meta["full_latency"]
    for algo in algos:
        colour = COLOURS.get(algo, "#9467bd")
        for r in range(repeats):
            run = runs[_run_name(algo, r)]
            done = [t for t in run["trials"] if t["state"] == "COMPLETE"][:budget]
            front = [t for t in done if not any(
                o["fid"] <= t["fid"] and o["latency"] <= t["latency"]
                and (o["fid"], o["latency"]) != (t["fid"], t["latency"]) for o in done)]
            front.sort(key=lambda t: (t["latency"], t["fid"]))
            fronts.add_trace(go.Scatter(
                x=[1 - t["latency"] / full for t in front], y=[t["fid"] for t in front],
                mode="lines+markers", line_shape="vh", legendgroup=algo,
                name=f"{_label(algo)} r{r}", line={"color": colour, "width": 1},
                marker={"color": colour, "symbol": symbols[r % len(symbols)], "size": 8},
                hovertext=[f"{_label(algo)} r{r}, trial {t['number']}"
                           + (f" ({t['seed']})" if t.get("seed") else "")
                           + f"<br>FID {t['fid']:.4g}<br>acceleration "
                           f"{1 - t['latency'] / full:.1%}<br>{t['describe']}" for t in front],
                hoverinfo="text"))
    fronts.add_trace(go.Scatter(x=[0.0], y=[meta["full_fid"]], mode="markers+text",
                                text=["full"], textposition="top center", name="full model",
                                marker={"symbol": "star", "size": 14, "color": "#000"}))
    fronts.update_layout(xaxis_title="acceleration (1 - latency / full latency)",
                         yaxis_title="FID (lower is better)", xaxis_tickformat=".0%",
                         title=f"Pareto fronts after {budget} trials",
                         template="plotly_white", height=520)

    divs = [fig.to_html(full_html=False, include_plotlyjs=(k == 0),  # plotly.js inlined once
                        config={"displaylogo": False}) for k, fig in enumerate((hv, fronts))]
    title = "ase-search: search efficiency"
    body = (f"<h1>{html.escape(title)}</h1>\n<pre class=\"report\">{html.escape(text)}</pre>\n"
            f"<h2>Hypervolume against trials</h2>{divs[0]}\n<h2>Final fronts</h2>{divs[1]}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"{body}\n</body>\n</html>\n")


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[k:k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
pre.report { white-space: pre-wrap; background: #f7f7f7; padding: 1em; font-size: 0.85em; }
"""


# ###################################################################### driver
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = SearchConfig()
    parser.add_argument("--arch", default="dit", choices=["dit", "uvit"])
    parser.add_argument("--budget", type=int, default=defaults.budget,
                        help="finished trials per study")
    parser.add_argument("--repeats", type=int, default=3, help="studies per algorithm")
    parser.add_argument("--algos", nargs="+", default=[DEFAULT_ALGO, "tpe", "random"],
                        choices=list(SAMPLER_ALGOS))
    parser.add_argument("--n", type=int, default=defaults.n_samples, help="samples per trial")
    parser.add_argument("--sampler", default=defaults.sampler)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="sampling noise of every trial and seed of the one-shot fine-tune")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--latency-batch", type=int, default=defaults.latency_batch)
    parser.add_argument("--finetune-steps", type=int, default=defaults.finetune_steps,
                        help="one-shot fine-tune steps (0: search the checkpoint as it is)")
    parser.add_argument("--one-shot-weights", type=Path, default=None,
                        help="reuse these one-shot fine-tuned weights (e.g. "
                             "studies/reference/dit-one-shot.safetensors) instead of making them")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped testbed model")
    parser.add_argument("--space", default=None, help="default: search_spaces/<arch>.yaml")
    parser.add_argument("--reference", choices=list(REFERENCES), default="full",
                        help="hypervolume reference FID: 'full' = 2 x the full model's (the "
                             "search's report), 'presets' = 1.1 x the worst seed preset's (the "
                             "box the paper's schedules span); the report of 'presets' is "
                             "search_efficiency-presets.md")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path,
                        default=ROOT / "studies" / "bench" / "search_efficiency")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "reports")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.budget < 2 or args.repeats < 1:
        parser.error("--budget must be >= 2 and --repeats >= 1")
    algos = list(dict.fromkeys(args.algos))

    import optuna
    import torch

    from ase_search.evaluate import machine_info
    from ase_search.metrics.latency import CostModel, profile_components
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import preset
    from ase_search.finetune import one_shot_weights
    from ase_search.search import TrialContext, one_shot_config
    from ase_search.space import load_space
    from ase_search.testbed import TESTBEDS, load_model

    started = time.perf_counter()
    command = start_run(__file__, argv, args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = SearchConfig(arch=args.arch, budget=args.budget, space=args.space,
                          checkpoint=args.checkpoint, sampler=args.sampler, steps=args.steps,
                          n_samples=args.n, finetune="one-shot" if args.finetune_steps else "none",
                          finetune_steps=args.finetune_steps, seed=args.seed,
                          batch_size=args.batch_size, latency_batch=args.latency_batch, grid=0)
    model = load_model(args.arch, args.checkpoint)
    space_path = Path(args.space) if args.space else TESTBEDS[args.arch].space
    space = load_space(space_path, depth=model.exit_depth)
    sampler = SamplerConfig(name=args.sampler, steps=args.steps)
    base_path = Path(args.checkpoint).resolve() if args.checkpoint else TESTBEDS[args.arch].path
    cache = args.cache_dir.resolve()

    # 1. The weights every trial starts from: one-shot fine-tuned once, as `ase-search run` does.
    if args.one_shot_weights is not None:
        weights = args.one_shot_weights.resolve()
        weights_note = f"one-shot fine-tuned weights reused from `{args.one_shot_weights}`"
    elif args.finetune_steps > 0:
        print(f"one-shot fine-tune ({config.finetune_steps} steps; cached) ...", file=sys.stderr)
        # The file name carries the key of what made the weights, so one folder serves all.
        weights = one_shot_weights(model, space, one_shot_config(config), data=config.data,
                                   out_dir=cache / "weights", name=config.resolved_study_name,
                                   progress=not args.no_progress)
        model = load_model(args.arch, args.checkpoint)  # the fine-tune trained it in place
        weights_note = (f"one-shot fine-tuned over the space ({config.finetune_steps} steps, "
                        f"seed {config.seed}) from `{base_path.name}`")
    else:
        weights = base_path
        weights_note = f"`{base_path.name}` as it is (no fine-tune)"

    # 2. Everything that makes evaluations comparable names the cache folder.
    identity = dict(config.identity())
    identity.update(weights=file_sha256(weights)[:16], space=space.to_dict(),
                    batch_size=args.batch_size, threads=args.threads, version=CACHE_VERSION)
    evals_dir = cache / f"evals-{args.arch}-{short_hash(identity)}"
    evals_dir.mkdir(parents=True, exist_ok=True)
    write_json(evals_dir / "identity.json", identity, sort_keys=True)
    cost_path = evals_dir / "cost_model.json"
    if not cost_path.is_file():  # profiled once, so every run and resume compares alike
        print(f"profiling the cost model at batch {args.latency_batch} ...", file=sys.stderr)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        write_json(cost_path, profile_components(model, batch_size=args.latency_batch,
                                                 device=device).to_dict(), sort_keys=True)
    cost = CostModel.from_dict(load_json(cost_path))
    ctx = TrialContext(config=asdict(config), weights=str(weights), space=space.to_dict(),
                       cost_model=cost.to_dict(), grids_dir=str(evals_dir / "grids"),
                       cpus=args.threads)
    objective = MemoisedObjective(ctx, evals_dir / "evaluations.json", identity, args.threads)

    # 3. The full model fixes the reference point; evaluating it twice checks determinism.
    full_schedule = preset("full", args.arch, model.exit_depth)
    print("evaluating the full model (and once more for the determinism check) ...",
          file=sys.stderr)
    full = objective(full_schedule)
    det_path = evals_dir / "determinism.json"
    determinism = load_json(det_path)
    if determinism is None:
        again = objective.measure(full_schedule)
        determinism = {"schedule": "full", "fid_first": full["fid"], "fid_second": again["fid"],
                       "exact": full["fid"] == again["fid"],
                       "abs_diff": abs(full["fid"] - again["fid"])}
        write_json(det_path, determinism, sort_keys=True)
    full_latency = cost.latency(None, sampler.model_times())

    # 4. The studies; finished ones are kept (a prefix of a longer run is a shorter run).
    runs_path = evals_dir / "runs.json"
    saved: dict[str, dict[str, Any]] = load_json(runs_path) or {}
    runs: dict[str, dict[str, Any]] = {}
    total = len(algos) * args.repeats * args.budget
    with progress_bar(counts=True, note=True, enabled=not args.no_progress) as bar:
        task = bar.add_task("trials", total=total, note="")

        def note() -> str:
            return f"{objective.new} evaluated, {objective.hits} cached"

        for algo in algos:
            for r in range(args.repeats):
                name = _run_name(algo, r)
                run = saved.get(name)
                if run is not None and len(finished_points(run, args.budget)) >= args.budget:
                    runs[name] = run
                    bar.advance(task, args.budget)
                    continue
                bar.update(task, description=name, note=note())
                done_before = bar.tasks[0].completed
                run = run_study(algo, r, space, objective, args.budget,
                                lambda: bar.update(task, advance=1, note=note()))
                bar.update(task, completed=done_before + args.budget)
                saved[name] = runs[name] = run
                write_json(runs_path, saved, sort_keys=True)

    # 5. Analysis and reports.
    seed_trials = {t["seed"]: t["fid"] for run in runs.values() for t in run["trials"]
                   if t.get("seed") and t["state"] == "COMPLETE"}
    worst_name = max(seed_trials, key=seed_trials.get) if seed_trials else "full"
    worst = seed_trials.get(worst_name, full["fid"])
    reference_fid = 2.0 * full["fid"] if args.reference == "full" else 1.1 * worst
    reference_point = (reference_fid, full_latency)
    result = analyse(runs, algos, args.repeats, args.budget, reference_point,
                     n_seeds=len(space.seeds))
    keys = [[t["schedule_key"] for t in runs[_run_name(a, r)]["trials"]] for a in algos
            for r in range(args.repeats)]
    prefix = {str(r): shared_prefix([keys[i * args.repeats + r] for i in range(len(algos))])
              for r in range(args.repeats)} if len(algos) > 1 else {}
    evals = [e for e in objective.entries.values() if "fail_reason" not in e]
    out_dir = args.out_dir.resolve()
    stem = "search_efficiency" + ("" if args.reference == "full" else f"-{args.reference}")
    meta = {
        "command": command,
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(), "threads": args.threads,
        "arch": args.arch,
        "model": TESTBEDS[args.arch].model_name if args.checkpoint is None else base_path.name,
        "space": str(space_path), "n_params": len(space.param_names()),
        "seeds": list(space.seeds), "weights": str(weights), "weights_note": weights_note,
        "sampler": f"{args.sampler}-{args.steps}", "n": args.n, "seed": args.seed,
        "fid_extractor": config.fid_extractor, "latency_batch": args.latency_batch,
        "full_fid": full["fid"], "full_latency": full_latency,
        "reference": args.reference, "n_seeds": len(space.seeds),
        "reference_note": REFERENCES[args.reference].format(full=full["fid"], worst=worst,
                                                            worst_name=worst_name),
        "algos": algos, "default_algo": DEFAULT_ALGO, "repeats": args.repeats,
        "budget": args.budget, "identity": identity, "cache_dir": str(evals_dir),
        "determinism": determinism, "shared_prefix": prefix,
        "unique_evaluations": len(objective.entries),
        "median_eval_seconds": statistics.median(e["wall_time"] for e in evals) if evals
        else math.nan,
        "new_evaluations": objective.new, "cache_hits": objective.hits,
        "wall_time": time.perf_counter() - started,
        "json_name": f"{stem}.json", "html_name": f"{stem}.html",
    }
    text = markdown(meta, result, runs, algos, args.repeats, args.budget)
    write_text(out_dir / f"{stem}.md", text)
    write_text(out_dir / f"{stem}.html",
               html_report(meta, result, runs, algos, args.repeats, args.budget, text))
    write_json(out_dir / f"{stem}.json", {"meta": meta, "result": result, "runs": runs},
               sort_keys=True)
    print(text)
    return {"meta": meta, "result": result}


if __name__ == "__main__":
    main()
