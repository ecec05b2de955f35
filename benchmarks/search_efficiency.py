"""Search efficiency (reports/search_efficiency.md, .html, .json): default sampler vs TPE vs random.

Does the search's default sampler reach random search's budget hypervolume in at most half the
trials? Each algorithm runs ``--repeats`` in-process Optuna studies (study r's sampler seeded with
r) of ``--budget`` finished trials on the one-shot fine-tuned testbed, each trial the search's own
measurement (:func:`ase_search.search.evaluate_schedule`), the seed schedules enqueued first.
Evaluations are memoised by schedule in ``--cache-dir`` and shared by the studies. Cells:
``setup`` (weights, cost model, the full model, a determinism check) and ``<algo>-r<repeat>``.

    python -m benchmarks.search_efficiency --arch dit --budget 40 --repeats 3 \
        --algos gp tpe random --n 500 --threads 2
    python -m benchmarks.search_efficiency --reference presets  # the presets' box, its own report
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import html
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase_search.progress import progress_bar
from ase_search.schedule import ExitSchedule
from ase_search.search import SearchConfig
from ase_search.search.config import SEARCH_ALGORITHMS
from ase_search.verdict import hypervolume, non_dominated
from benchmarks._common import ROOT, file_sha256, load_json, machine_text, short_hash, write_json
from benchmarks._runner import REPORTS, Benchmark, CellContext, Report, markdown_table, option, run

# The search's defaults, read from the dataclass's fields (an instance would import torch).
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
DEFAULT_ALGO = _DEFAULTS["search_algorithm"]  # `ase-search run` without --search-algorithm
FRACTION_OF_BEST = 0.95
REFERENCES = {"full": "2 x the FID of the full schedule, {full:.4g}, measured as above with the "
                      "same weights",
              "presets": "1.1 x the worst seed's FID, {worst:.4g} ({worst_name}): the box the "
                         "paper's presets span"}
CACHE_VERSION = 1  # of the evaluation memo in --cache-dir
SETUP = "setup"  # the cell every study starts from
COLOURS = {"gp": "#d62728", "tpe": "#1f77b4", "random": "#7f7f7f", "nsga2": "#2ca02c"}


@dataclass(frozen=True)
class Params:
    """What the studies measure (the search's settings) and which studies run."""

    arch: str = field(default="dit", metadata=option("testbed model", choices=("dit", "uvit")))
    budget: int = field(default=_DEFAULTS["budget"], metadata=option("finished trials per study"))
    repeats: int = field(default=3, metadata=option("studies per algorithm", identity=False))
    algos: tuple[str, ...] = field(default=(DEFAULT_ALGO, "tpe", "random"), metadata=option(
        "samplers compared", identity=False, choices=tuple(SEARCH_ALGORITHMS)))
    n: int = field(default=_DEFAULTS["n_samples"], metadata=option("samples per trial"))
    sampler: str = _DEFAULTS["sampler"]
    steps: int = _DEFAULTS["steps"]
    seed: int = field(default=_DEFAULTS["seed"], metadata=option(
        "sampling noise of every trial and seed of the one-shot fine-tune"))
    batch_size: int = _DEFAULTS["batch_size"]
    latency_batch: int = _DEFAULTS["latency_batch"]
    finetune_steps: int = field(default=_DEFAULTS["finetune_steps"], metadata=option(
        "one-shot fine-tune steps (0: search the checkpoint as it is)"))
    one_shot_weights: str | None = field(default=None, metadata=option(
        "reuse these one-shot fine-tuned weights (e.g. the reference study's) instead of making "
        "them"))
    checkpoint: str | None = field(default=None, metadata=option(
        "default: the shipped testbed model"))
    space: str | None = field(default=None, metadata=option(
        "default: the testbed's search space"))
    reference: str = field(default="full", metadata=option(
        "hypervolume reference FID: 'full' = 2 x the full model's (the search's report), "
        "'presets' = 1.1 x the worst seed preset's (the box the paper's schedules span)",
        identity=False, choices=tuple(REFERENCES)))
    cache_dir: Path = field(default=ROOT / "studies" / "bench" / "search_efficiency",
                            metadata=option("where evaluations are memoised", identity=False))
    no_progress: bool = field(default=False, metadata=option("no progress bar", identity=False))

    def __post_init__(self) -> None:
        if self.budget < 2 or self.repeats < 1:
            raise ValueError("--budget must be >= 2 and --repeats >= 1")

    def study_keys(self) -> list[str]:
        return [_run_name(a, r) for a in dict.fromkeys(self.algos) for r in range(self.repeats)]


# ###################################################################### hypervolume bookkeeping
def schedule_key(schedule: ExitSchedule) -> str:
    """Memo key of a schedule, equal neighbours merged (so equal schedules share an evaluation)."""
    s = schedule.merged()
    return json.dumps([s.arch, s.depth, [round(b, 9) for b in s.boundaries], list(s.blocks)])


def hypervolume_curve(points: Sequence[Sequence[float]],
                      reference_point: Sequence[float]) -> list[float]:
    """Hypervolume of the first ``k`` points for ``k = 1 .. len(points)`` (never decreases)."""
    return [hypervolume(points[: k + 1], reference_point) for k in range(len(points))]


def trials_to_reach(curve: Sequence[float], target: float) -> int | None:
    """The first trial count ``k`` (1-based) whose hypervolume reaches ``target``, or ``None``."""
    slack = 1e-12 * max(abs(target), 1.0)  # summation-order differences between equal fronts
    return next((k + 1 for k, hv in enumerate(curve) if hv >= target - slack), None)


def curve_stats(curves: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """``mean``, sample ``std`` (0 for one run), ``low`` and ``high`` over runs per trial count."""
    if not curves or len({len(c) for c in curves}) != 1:
        raise ValueError(f"curves must be a non-empty list of equal-length curves, got lengths "
                         f"{[len(c) for c in curves]}")
    columns = list(zip(*curves))
    return {"mean": [statistics.fmean(c) for c in columns],
            "std": [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns],
            "low": [min(c) for c in columns], "high": [max(c) for c in columns]}


def shared_prefix(sequences: Sequence[Sequence[Any]]) -> int:
    """Length of the longest common prefix of ``sequences``."""
    for n, items in enumerate(zip(*sequences)):
        if any(x != items[0] for x in items):
            return n
    return min(map(len, sequences), default=0)


def finished(run: dict[str, Any], budget: int) -> list[dict[str, Any]]:
    """The run's first ``budget`` COMPLETE trials, in trial order."""
    return [t for t in run["trials"] if t["state"] == "COMPLETE"][:budget]


def analyse(runs: dict[str, dict[str, Any]], algos: Sequence[str], repeats: int, budget: int,
            reference_point: tuple[float, float], n_seeds: int = 0) -> dict[str, Any]:
    """Hypervolume curves, their statistics, trials to 95% of the best, and the target verdict.

    ``n_seeds``: the enqueued seed trials that open every study; the verdict also gives their
    hypervolume alone (when random search ends there, the target is met trivially).
    """
    curves = {name: hypervolume_curve([(t["fid"], t["latency"]) for t in finished(run, budget)],
                                      reference_point) for name, run in runs.items()}
    best_final = max(c[-1] for c in curves.values())
    target95 = FRACTION_OF_BEST * best_final
    per_algo: dict[str, Any] = {}
    for algo in algos:
        names = [_run_name(algo, r) for r in range(repeats)]
        reach = [trials_to_reach(curves[n], target95) for n in names]
        reached = [k for k in reach if k is not None]
        per_algo[algo] = {
            "runs": names, "stats": curve_stats([curves[n] for n in names]),
            "trials_to_95": reach, "trials_to_95_reached": len(reached),
            "trials_to_95_mean": statistics.fmean(reached) if reached else None,
            "distinct_schedules": [len({t["schedule_key"] for t in runs[n]["trials"]
                                        if t["state"] == "COMPLETE"}) for n in names],
        }
    verdict = None
    if DEFAULT_ALGO in per_algo and "random" in per_algo and DEFAULT_ALGO != "random":
        random_mean = per_algo["random"]["stats"]["mean"]
        at_mean = trials_to_reach(per_algo[DEFAULT_ALGO]["stats"]["mean"], random_mean[-1])
        seeds_only = random_mean[n_seeds - 1] if 0 < n_seeds <= budget else None
        verdict = {
            "random_mean_final": random_mean[-1], "seeds_only": seeds_only,
            "trivial": seeds_only is not None and random_mean[-1] <= seeds_only,
            "default_mean_curve_trials": at_mean,
            "default_per_run_trials": [trials_to_reach(curves[n], random_mean[-1])
                                       for n in per_algo[DEFAULT_ALGO]["runs"]],
            "limit": budget // 2, "met": at_mean is not None and at_mean <= budget // 2,
        }
    return {"reference_point": list(reference_point), "best_final": best_final,
            "target95": target95, "curves": curves, "per_algo": per_algo, "verdict": verdict}


def _run_name(algo: str, repeat: int) -> str:
    return f"{algo}-r{repeat}"


def _label(algo: str) -> str:
    return f"{algo} (default)" if algo == DEFAULT_ALGO else algo


def _fmt_trials(k: int | None, budget: int) -> str:
    return str(k) if k is not None else f"not reached (> {budget})"


# ###################################################################### the memoised studies
class TrialFailed(RuntimeError):
    """A schedule whose evaluation failed (recorded in the memo, so replays fail alike)."""


class MemoisedObjective:
    """:func:`ase_search.search.evaluate_schedule` behind a JSON memo keyed by schedule, rewritten
    atomically after every new evaluation."""

    def __init__(self, ctx: Any, path: Path, identity: dict[str, Any], threads: int) -> None:
        # ``path``'s folder is named by the digest of ``identity``: its entries are comparable.
        self.ctx, self.path, self.identity, self.threads = ctx, path, identity, threads
        self.entries: dict[str, dict[str, Any]] = (load_json(path) or {}).get("evaluations", {})
        self.hits = self.new = 0
        self.eval_seconds = 0.0  # spent on new evaluations by this process

    def measure(self, schedule: ExitSchedule) -> dict[str, Any]:
        """Evaluate without the memo, on the search workers' thread count."""
        from threadpoolctl import threadpool_limits

        from ase_search.search import evaluate_schedule

        t0 = time.perf_counter()
        try:
            with threadpool_limits(limits=self.threads):
                return evaluate_schedule(schedule, self.ctx)
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


def run_study(algo: str, repeat: int, space: Any, objective: MemoisedObjective, budget: int,
              on_trial: Callable[[], None]) -> dict[str, Any]:
    """One in-memory Optuna study (FID, latency minimised) of ``budget`` finished trials; as in
    ``ase-search run``, the seed schedules come first and failed trials do not count."""
    import optuna
    from optuna.trial import TrialState

    from ase_search.search.study import enqueue_seeds
    from ase_search.space import schedules_equivalent

    seeds = list(zip(space.seeds, space.seed_schedules()))

    def objective_fn(trial: optuna.Trial) -> tuple[float, float]:
        schedule = space.suggest(trial)
        trial.set_user_attr("seed", next(
            (name for name, s in seeds if schedules_equivalent(s, schedule)), None))
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
        trial.set_user_attr("eval_seconds", result.get("wall_time"))
        return result["fid"], result["latency"]

    def complete() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    started, evals_before = time.perf_counter(), objective.eval_seconds
    new_before, hits_before = objective.new, objective.hits
    stalled = 0
    with warnings.catch_warnings():  # GPSampler / multivariate TPE may warn "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(directions=["minimize", "minimize"],
                                    sampler=SEARCH_ALGORITHMS[algo](repeat))
        enqueue_seeds(study, space)
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
    attrs = ("seed", "schedule_key", "describe", "cached", "acceleration", "eval_seconds")
    trials = [{"number": t.number, "state": t.state.name, "params": t.params,
               **{k: t.user_attrs.get(k) for k in attrs},
               **(dict(zip(("fid", "latency"), t.values)) if t.values else {})}
              for t in study.get_trials(deepcopy=False)]
    return {"algo": algo, "repeat": repeat, "budget": budget, "trials": trials,
            "wall_time": wall, "sampler_time": wall - (objective.eval_seconds - evals_before),
            "new_evaluations": objective.new - new_before,
            "cache_hits": objective.hits - hits_before,
            "completed": time.strftime("%Y-%m-%d %H:%M:%S")}


# ###################################################################### the cells
@functools.cache
def setup(params: Params, threads: int) -> tuple[Any, MemoisedObjective, dict[str, Any]]:
    """The space, the memoised objective and the run's facts (once per process): the one-shot
    weights, made once as `ase-search run` does, and the cost model, profiled once per memo."""
    import optuna
    import torch

    from ase_search.finetune import one_shot_weights
    from ase_search.metrics.latency import CostModel, profile_components
    from ase_search.search import TrialContext, one_shot_config
    from ase_search.search.run import starting_weights
    from ase_search.space import load_space
    from ase_search.testbed import TESTBEDS, load_model

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = SearchConfig(arch=params.arch, budget=params.budget, space=params.space,
                          checkpoint=params.checkpoint, sampler=params.sampler,
                          steps=params.steps, n_samples=params.n,
                          finetune="one-shot" if params.finetune_steps else "none",
                          finetune_steps=params.finetune_steps, seed=params.seed,
                          batch_size=params.batch_size, latency_batch=params.latency_batch,
                          grid=0)
    model = load_model(params.arch, params.checkpoint)
    space_path = Path(params.space) if params.space else TESTBEDS[params.arch].space
    space = load_space(space_path, depth=model.exit_depth)
    base_path = starting_weights(config)
    cache = params.cache_dir.resolve()
    if params.one_shot_weights is not None:
        weights = Path(params.one_shot_weights).resolve()
        weights_note = f"one-shot fine-tuned weights reused from `{params.one_shot_weights}`"
    elif params.finetune_steps > 0:
        print(f"one-shot fine-tune ({config.finetune_steps} steps; cached) ...", file=sys.stderr)
        weights = one_shot_weights(model, space, one_shot_config(config), data=config.data,
                                   out_dir=cache / "weights", name=config.resolved_study_name,
                                   progress=not params.no_progress)
        weights_note = (f"one-shot fine-tuned over the space ({config.finetune_steps} steps, "
                        f"seed {config.seed}) from `{base_path.name}`")
        model = load_model(params.arch, params.checkpoint)  # the fine-tune trained it in place
    else:
        weights, weights_note = base_path, f"`{base_path.name}` as it is (no fine-tune)"
    # Everything that makes evaluations comparable names the memo's folder.
    identity = dict(config.identity())
    identity.update(weights=file_sha256(weights)[:16], space=space.to_dict(),
                    batch_size=params.batch_size, threads=threads, version=CACHE_VERSION)
    evals_dir = cache / f"evals-{params.arch}-{short_hash(identity)}"
    evals_dir.mkdir(parents=True, exist_ok=True)
    write_json(evals_dir / "identity.json", identity, sort_keys=True)
    cost_path = evals_dir / "cost_model.json"
    if not cost_path.is_file():
        print(f"profiling the cost model at batch {params.latency_batch} ...", file=sys.stderr)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        write_json(cost_path, profile_components(model, batch_size=params.latency_batch,
                                                 device=device).to_dict(), sort_keys=True)
    cost = CostModel.from_dict(load_json(cost_path))
    ctx = TrialContext(config=dataclasses.asdict(config), weights=str(weights),
                       space=space.to_dict(), cost_model=cost.to_dict(), cpus=threads)
    objective = MemoisedObjective(ctx, evals_dir / "evaluations.json", identity, threads)
    facts = {
        "threads": threads, "arch": params.arch,
        "model": TESTBEDS[params.arch].model_name if params.checkpoint is None
        else base_path.name,
        "space": str(space_path), "n_params": len(space.param_names()),
        "seeds": list(space.seeds), "weights": str(weights), "weights_note": weights_note,
        "sampler": f"{params.sampler}-{params.steps}", "n": params.n, "seed": params.seed,
        "fid_extractor": config.fid_extractor, "latency_batch": params.latency_batch,
        "full_latency": cost.latency(None, config.sampler_config.model_times()),
        "identity": identity, "cache_dir": str(evals_dir),
    }
    return space, objective, facts


def cell(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """``setup``: the full model's evaluation (it fixes the reference point), checked to be
    deterministic; else one study of ``--budget`` finished trials."""
    import torch

    from ase_search.evaluate import machine_info
    from ase_search.schedule import preset

    # The runner's --threads, as the search's workers get it.
    space, objective, facts = setup(params, torch.get_num_threads())
    if key != SETUP:
        algo, _, repeat = key.rpartition("-r")
        with progress_bar(note="{task.fields[note]}", enabled=not params.no_progress) as bar:
            task = bar.add_task(key, total=params.budget, note="")
            new, hits = objective.new, objective.hits
            return run_study(algo, int(repeat), space, objective, params.budget,
                             lambda: bar.update(task, advance=1, note=(
                                 f"{objective.new - new} evaluated, "
                                 f"{objective.hits - hits} cached")))
    full_schedule = preset("full", params.arch, space.depth)
    print("evaluating the full model (and once more for the determinism check) ...",
          file=sys.stderr)
    full = objective(full_schedule)
    det_path = Path(facts["cache_dir"]) / "determinism.json"
    determinism = load_json(det_path)
    if determinism is None:
        again = objective.measure(full_schedule)
        determinism = {"schedule": "full", "fid_first": full["fid"], "fid_second": again["fid"],
                       "exact": full["fid"] == again["fid"],
                       "abs_diff": abs(full["fid"] - again["fid"])}
        write_json(det_path, determinism, sort_keys=True)
    return {**facts, "command": ctx.command,
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine_info(),
            "full_fid": full["fid"], "determinism": determinism}


# ###################################################################### the report
def analysis(cells: dict[str, dict[str, Any]], params: Params) -> dict[str, Any] | None:
    """``meta`` (the setup cell and what the report says of the runs), ``result``
    (:func:`analyse`), ``runs`` and ``algos`` over the algorithms whose ``--repeats`` studies are
    all cached; ``None`` before any is."""
    facts = cells.get(SETUP)
    budget, repeats = params.budget, params.repeats
    algos = [a for a in dict.fromkeys(params.algos)
             if all(len(finished(cells.get(_run_name(a, r), {"trials": []}), budget)) >= budget
                    for r in range(repeats))]
    if facts is None or not algos:
        return None
    runs = {_run_name(a, r): cells[_run_name(a, r)] for a in algos for r in range(repeats)}
    trials = [t for run in runs.values() for t in run["trials"]]
    seed_trials = {t["seed"]: t["fid"] for t in trials
                   if t.get("seed") and t["state"] == "COMPLETE"}
    worst_name = max(seed_trials, key=seed_trials.get) if seed_trials else "full"
    worst = seed_trials.get(worst_name, facts["full_fid"])
    reference_fid = 2.0 * facts["full_fid"] if params.reference == "full" else 1.1 * worst
    result = analyse(runs, algos, repeats, budget, (reference_fid, facts["full_latency"]),
                     n_seeds=len(facts["seeds"]))
    keys = {name: [t["schedule_key"] for t in run["trials"]] for name, run in runs.items()}
    seconds = {t["schedule_key"]: t["eval_seconds"] for t in trials
               if t.get("eval_seconds") is not None}
    meta = {
        **facts, "reference": params.reference, "n_seeds": len(facts["seeds"]),
        "reference_note": REFERENCES[params.reference].format(
            full=facts["full_fid"], worst=worst, worst_name=worst_name),
        "shared_prefix": {str(r): shared_prefix([keys[_run_name(a, r)] for a in algos])
                          for r in range(repeats)} if len(algos) > 1 else {},
        "unique_evaluations": len({t["schedule_key"] for t in trials}),
        # A setup cell may carry the median alone, for studies whose trials lack their times.
        "median_eval_seconds": statistics.median(seconds.values()) if seconds
        else facts.get("median_eval_seconds", math.nan),
        "wall_time": sum(run["wall_time"] for run in runs.values()),
    }
    return {"meta": meta, "result": result, "runs": runs, "algos": algos}


def _range(stats: dict[str, list[float]], k: int = -1) -> str:
    """``min – max`` of the runs' hypervolumes after trial ``k`` (1-based; -1: the last)."""
    i = k - 1 if k > 0 else k
    return f"{stats['low'][i]:.4g} – {stats['high'][i]:.4g}"


def markdown(found: dict[str, Any], params: Params, json_name: str) -> str:
    import pandas as pd

    meta, result, runs, algos = found["meta"], found["result"], found["runs"], found["algos"]
    budget, repeats, per_algo = params.budget, params.repeats, result["per_algo"]
    ref, det = result["reference_point"], meta["determinism"]
    lines = [
        "# Search efficiency", "",
        f"Generated {meta['date']} by `{meta['command']}` on {machine_text(meta['machine'])}.", "",
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
        f"{sum(len(finished(r, budget)) for r in runs.values())} finished trials; "
        f"median {meta['median_eval_seconds']:.1f} s per evaluation",
        f"- determinism check ({det['schedule']} evaluated twice): "
        + ("FID identical bit for bit, so memoising is exact" if det["exact"] else
           f"FID differs by {det['abs_diff']:.3g} between two evaluations; the cache keeps the "
           f"first value of each schedule, so repeated schedules are not re-measured"),
    ]
    if meta["shared_prefix"]:
        lines.append("- trials identical across algorithms at the same repeat (seeds plus the "
                     "samplers' shared random start-up): "
                     + ", ".join(f"r{r}: first {n}" for r, n in meta["shared_prefix"].items()))
    lines += ["", "## Summary", "",
              f"Best final hypervolume over all runs: **{result['best_final']:.4g}**; "
              f"{FRACTION_OF_BEST:.0%} of it: {result['target95']:.4g}."
              + (" No finished trial lies inside the reference point, so every hypervolume is "
                 "zero and the comparison below says nothing." if result["best_final"] <= 0
                 else ""), ""]
    rows = []
    for algo in algos:
        a, s = per_algo[algo], per_algo[algo]["stats"]
        rows.append([
            _label(algo), f"{s['mean'][-1]:.4g} ± {s['std'][-1]:.3g}", _range(s),
            ", ".join(_fmt_trials(k, budget) for k in a["trials_to_95"]),
            f"{a['trials_to_95_mean']:.1f} ({a['trials_to_95_reached']}/{repeats})"
            if a["trials_to_95_mean"] is not None else f"— (0/{repeats})",
            ", ".join(map(str, a["distinct_schedules"])),
            f"{statistics.fmean(runs[n]['sampler_time'] / budget for n in a['runs']):.2f} s"])
    lines += [markdown_table(
        pd.DataFrame(rows, columns=["algorithm", f"HV at {budget} (mean ± std)", "min – max",
                                    f"trials to {FRACTION_OF_BEST:.0%} of best, per run",
                                    "mean (runs reaching)", "distinct schedules per run",
                                    "sampler overhead per trial"]),
        align=["left", "right", "right", "left", "right", "right", "right"]),
        "", f"A trial whose schedule its study already measured counts as a finished trial "
        f"and is told the earlier values, as `ase-search run` does (`duplicate_of`); "
        f"'distinct schedules' counts the measured ones among the {budget}.", "", "## Verdict", ""]
    verdict = result["verdict"]
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
                      + ", ".join(f"{_label(a)} ends at {per_algo[a]['stats']['mean'][-1]:.4g} "
                                  f"({_range(per_algo[a]['stats'])})" for a in algos) + ". "
                      + ("Compare the wider box of `--reference presets` "
                         "(`search_efficiency-presets.md`)." if meta["reference"] == "full"
                         else "")]
    for algo in algos:
        s = per_algo[algo]["stats"]
        table = pd.DataFrame([[str(k), f"{s['mean'][k - 1]:.4g}", f"{s['std'][k - 1]:.3g}",
                               *_range(s, k).split(" – ")]
                              for k in sorted({1, *range(5, budget + 1, 5), budget})],
                             columns=["trials", "mean", "std", "min", "max"])
        lines += ["", f"## {_label(algo)}: hypervolume against trials", "",
                  markdown_table(table, align=["right"] * 5)]
    lines += ["", f"Wall time of the {len(runs)} studies: {meta['wall_time'] / 60:.1f} min "
              f"together. Every trial: `{json_name}`; plots: "
              f"`{Path(json_name).with_suffix('.html').name}`.", ""]
    return "\n".join(lines)


def figures(found: dict[str, Any], params: Params) -> list[Any]:
    """Hypervolume against trials (each algorithm's mean and min-max band), and every run's final
    front."""
    import plotly.graph_objects as go
    from plotly.colors import hex_to_rgb

    meta, result, runs, algos = found["meta"], found["result"], found["runs"], found["algos"]
    budget, repeats = params.budget, params.repeats
    trials = list(range(1, budget + 1))
    hv = go.Figure()
    for algo in algos:
        s, colour = result["per_algo"][algo]["stats"], COLOURS.get(algo, "#9467bd")
        band = {"mode": "lines", "line_shape": "hv", "line": {"width": 0, "color": colour},
                "hoverinfo": "skip", "legendgroup": algo}
        hv.add_trace(go.Scatter(x=trials, y=s["low"], showlegend=False, **band))
        hv.add_trace(go.Scatter(x=trials, y=s["high"], fill="tonexty",
                                fillcolor=f"rgba{(*hex_to_rgb(colour), 0.18)}",
                                name=f"{_label(algo)} min–max", **band))
        hv.add_trace(go.Scatter(x=trials, y=s["mean"], mode="lines", line_shape="hv",
                                line={"color": colour, "width": 2.5}, legendgroup=algo,
                                name=f"{_label(algo)} mean of {repeats}"))
    hv.add_hline(y=result["target95"], line_dash="dot", line_color="#444",
                 annotation_text=f"{FRACTION_OF_BEST:.0%} of best final",
                 annotation_position="bottom right")
    if result["verdict"] is not None:
        hv.add_hline(y=result["verdict"]["random_mean_final"], line_dash="dash",
                     line_color=COLOURS["random"], annotation_text=f"random's mean at {budget}",
                     annotation_position="top left")
        hv.add_vline(x=result["verdict"]["limit"], line_dash="dash", line_color="#bbb")
    ref = result["reference_point"]
    hv.update_layout(xaxis_title="finished trials", yaxis_title="hypervolume (FID x s)",
                     title=f"Hypervolume against trials (reference point: FID {ref[0]:.4g}, "
                           f"latency {ref[1]:.4g} s)", template="plotly_white", height=480)

    symbols = ["circle", "square", "diamond", "triangle-up", "x", "star"]
    fronts, full = go.Figure(), meta["full_latency"]
    for algo, r in ((a, r) for a in algos for r in range(repeats)):
        colour = COLOURS.get(algo, "#9467bd")
        done = finished(runs[_run_name(algo, r)], budget)
        front = [done[i] for i, _, _ in non_dominated(
            (i, t["fid"], t["latency"]) for i, t in enumerate(done))]  # by latency, then FID
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
                         title=f"Final fronts: Pareto fronts after {budget} trials",
                         template="plotly_white", height=520)
    return [hv, fronts]


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    """Markdown summary and verdict, and the two figures for the HTML twin."""
    found = analysis(cells, params)
    if found is None:
        return Report(f"# Search efficiency\n\nNo algorithm's {params.repeats} studies are in "
                      f"`{json_name}` yet.\n")
    text = markdown(found, params, json_name)
    return Report(text, figures(found, params), title="ase-search: search efficiency",
                  html_intro=f'<pre style="white-space: pre-wrap; background: #f7f7f7; '
                             f'padding: 1em; font-size: 0.85em">{html.escape(text)}</pre>')


BENCHMARK = Benchmark(name="search_efficiency", doc=__doc__, params=Params,
                      keys=lambda params: [SETUP, *params.study_keys()], cell=cell, report=report,
                      out=lambda params: REPORTS / ("search_efficiency" + (
                          "" if params.reference == "full" else f"-{params.reference}") + ".md"))


if __name__ == "__main__":
    run(BENCHMARK)
