"""The reference studies (studies/reference/<arch>.db): made, summarised, their weights rebuilt.

Runs ``ase-search run --arch ARCH --budget 40`` with defaults into the study (default
``studies/reference/<arch>.db``), times it, and writes ``reports/search-<arch>.md`` (and its
``.html``): the per-trial time split (fine-tune, sampling, FID, Ray and driver overhead), and the
searched front against the seeds (the paper's presets): hypervolume of the front vs of the seeds
alone, and the best acceleration at an FID within 5% of the full model. The studies' one-shot
weights are git-ignored; ``--weights-only`` fine-tunes them again from the settings the study
stored, and with ``--exit-heads`` makes the exit-heads variant of them (the same recipe on the
starting model with exit heads, :func:`ase_search.models.add_exit_heads`; the study keeps its
record of the weights it was measured with). Run from the repository root:

    python -m tools.reference_study --arch dit --budget 40
    python -m tools.reference_study --arch dit --weights-only [--exit-heads]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ase_search.evaluate import machine_info
from ase_search.pareto import (
    StudyError,
    complete_trials,
    hypervolume,
    open_study,
    pareto_front,
    seed_report,
)
from ase_search.report import default_reference_point, write_report
from benchmarks._common import ROOT, display_path, write_text


def summarise(storage: Path, wall: float | None, command: str) -> str:
    study = open_study(storage)
    trials = complete_trials(study)
    front = pareto_front(study)
    seeds = [t for t in trials if t.user_attrs.get("seed")]
    ref = default_reference_point(study)
    hv_front = hypervolume([t.values for t in front], ref)
    hv_seeds = hypervolume([t.values for t in seeds], ref)
    full = next((t for t in seeds if t.user_attrs.get("seed") == "full"), None)
    lines = ["# Search benchmark", "",
             f"Generated {dt.date.today().isoformat()} by `{command}` on "
             f"{machine_info()['cpu']} ({machine_info()['logical_cores']} cores).", ""]
    if wall is not None:
        lines += [f"- wall time of the run: **{wall / 60:.1f} min** for {len(trials)} finished "
                  f"trials (target: <= 20 min)"]
    splits = [t.user_attrs.get("time_split", {}) for t in trials]
    if splits:
        parts = {k: statistics.median(s.get(k, 0.0) for s in splits)
                 for k in ("load", "finetune", "sampling", "fid")}
        worker = statistics.median(t.user_attrs.get("worker_time", 0.0) for t in trials)
        per_trial = statistics.median(
            (t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
        lines += [f"- per trial (median): loading weights {parts['load']:.1f} s, fine-tune "
                  f"{parts['finetune']:.1f} s, sampling "
                  f"{parts['sampling']:.1f} s, FID {parts['fid']:.1f} s, worker total "
                  f"{worker:.1f} s, start-to-finish {per_trial:.1f} s (the difference is Ray "
                  f"scheduling and worker start-up)"]
    lines += [f"- hypervolume (reference point FID {ref[0]:.2f}, latency {ref[1]:.3f} s): front "
              f"**{hv_front:.4g}** vs seeds alone {hv_seeds:.4g} "
              + (f"({hv_front / hv_seeds - 1:+.1%})" if hv_seeds else
                 "(no seed lies inside the reference box)" if hv_front else
                 "(no trial lies inside the reference box)")]
    if full is not None:
        limit = 1.05 * full.values[0]
        ok = [t for t in trials if t.values[0] <= limit]
        best = max(ok, key=lambda t: t.user_attrs.get("acceleration", 0.0))
        best_seed = max((t for t in ok if t.user_attrs.get("seed")),
                        key=lambda t: t.user_attrs.get("acceleration", 0.0))
        lines += [f"- best acceleration at FID <= 1.05 x full ({limit:.2f}): **"
                  f"{best.user_attrs['acceleration']:.1%}** (trial {best.number}, FID "
                  f"{best.values[0]:.2f}); best seed there: {best_seed.user_attrs['seed']} "
                  f"{best_seed.user_attrs['acceleration']:.1%}"]
    lines += ["", "| seed | FID | acceleration | on front | dominated by |",
              "| --- | ---: | ---: | :---: | --- |"]
    for s in seed_report(study):
        lines.append(f"| {s.name} | {s.fid:.2f} | {s.acceleration:.1%} | "
                     f"{'yes' if s.on_front else 'no'} | "
                     f"{', '.join(map(str, s.dominated_by)) or '—'} |")
    return "\n".join(lines) + "\n"


def one_shot_recipe(storage: Path, *, exit_heads: bool = False) -> dict[str, Any]:
    """What made the study's one-shot weights: the keyword arguments of
    :func:`ase_search.finetune.one_shot_weights` (``model``, ``space``, ``config``, ``data``,
    ``out_dir``, ``name``), read from the settings the study stored.

    With ``exit_heads`` the starting model gets exit heads (:func:`ase_search.models.
    add_exit_heads`) and the name ``<study>-exit-heads``.

    Raises:
        StudyError: the study stores no settings or was searched without a one-shot fine-tune.
    """
    from dataclasses import fields

    from ase_search.models import add_exit_heads
    from ase_search.search import SearchConfig, one_shot_config
    from ase_search.space import load_space
    from ase_search.testbed import TESTBEDS, load_model

    study = open_study(storage)
    stored = study.user_attrs.get("config")
    if stored is None:
        raise StudyError(f"{storage} holds no search settings (not made by `ase-search run`); "
                         f"there is nothing to rebuild")
    config = SearchConfig(**{f.name: stored[f.name] for f in fields(SearchConfig)
                             if f.name in stored})
    if config.finetune != "one-shot" or config.finetune_steps == 0:
        raise StudyError(f"{storage} was searched without a one-shot fine-tune (--finetune "
                         f"{config.finetune}, {config.finetune_steps} steps); there are no "
                         f"one-shot weights to rebuild")
    model = load_model(config.arch, config.checkpoint)
    space = load_space(Path(config.space) if config.space else TESTBEDS[config.arch].space,
                       depth=model.exit_depth)
    name = config.resolved_study_name
    if exit_heads:
        model, name = add_exit_heads(model), f"{name}-exit-heads"
    return {"model": model, "space": space, "config": one_shot_config(config),
            "data": config.data, "out_dir": storage.resolve().parent, "name": name}


def exit_heads_weights(storage: Path) -> Path:
    """The exit-heads variant of the study's one-shot weights, made by
    ``--weights-only --exit-heads``.

    Raises:
        ValueError: they are missing (the message says how to make them).
    """
    from ase_search.finetune import one_shot_key, one_shot_path

    recipe = one_shot_recipe(storage, exit_heads=True)
    key = one_shot_key(recipe["model"], recipe["space"], recipe["config"], recipe["data"])
    path = one_shot_path(recipe["out_dir"], recipe["name"], key)
    if not path.is_file():
        arch = recipe["model"].arch
        raise ValueError(f"the exit-heads weights {display_path(path)} are missing; make them "
                         f"with `python -m tools.reference_study --arch {arch} --weights-only "
                         f"--exit-heads` (8-20 minutes on one core)")
    return path


def rebuild_one_shot_weights(storage: Path, *, exit_heads: bool = False) -> Path:
    """The study's one-shot weights, fine-tuned again with its stored settings (same seed).

    A study made before weights were recorded relative to it (an absolute path string) gets the
    new record; one whose recorded key differs from the rebuilt weights' is refused: its trials
    were measured on other weights (the starting checkpoint or the space changed since).

    With ``exit_heads`` the starting model gets exit heads first; the weights are then
    ``<study>-exit-heads-one-shot-<key12>.safetensors`` next to the study, which they were not
    measured with, so its record stays as it is.
    """
    from ase_search.finetune import one_shot_weights, weights_record

    study = open_study(storage)
    recipe = one_shot_recipe(storage, exit_heads=exit_heads)
    path = one_shot_weights(**recipe, progress=True)
    folder = recipe["out_dir"]
    if exit_heads:
        return path
    record, recorded = weights_record(path, folder), study.user_attrs.get("weights")
    if isinstance(recorded, dict) and recorded != record:
        raise StudyError(f"{storage} was measured with the weights {recorded}, but its settings "
                         f"now give {record} (the starting checkpoint or the space changed); "
                         f"re-run the search in a new study")
    if recorded != record:
        study.set_user_attr("weights", record)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.reference_study",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="dit", choices=["dit", "uvit"])
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--storage", type=Path, default=None)
    parser.add_argument("--summarise-only", action="store_true",
                        help="Only write the report of an existing study.")
    parser.add_argument("--weights-only", action="store_true",
                        help="Only rebuild the study's one-shot fine-tuned weights (git-ignored, "
                             "so absent on a fresh clone) from the settings stored in it.")
    parser.add_argument("--exit-heads", action="store_true",
                        help="With --weights-only: the same fine-tune on the starting model with "
                             "exit heads (one output head per exit depth).")
    parser.add_argument("extra", nargs="*", help="More `ase-search run` options (after --).")
    args = parser.parse_args()
    storage = args.storage or ROOT / "studies" / "reference" / f"{args.arch}.db"
    cmd = [str(Path(sys.executable).with_name("ase-search")), "run", "--arch", args.arch,
           "--budget", str(args.budget), "--storage", str(storage), *args.extra]
    command = " ".join(shlex.quote(c) for c in ["ase-search", *cmd[1:]])
    if args.weights_only:
        try:
            print(rebuild_one_shot_weights(storage, exit_heads=args.exit_heads))
        except StudyError as err:
            raise SystemExit(f"error: {err}") from None
        return
    wall = None
    if not args.summarise_only:
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
    text = summarise(storage, wall, command)
    out = ROOT / "reports" / f"search-{args.arch}.md"
    write_text(out, text)
    write_report(open_study(storage), ROOT / "reports" / f"search-{args.arch}.html")
    print(text)


if __name__ == "__main__":
    main()
