"""The reference studies (studies/reference/<arch>.db): made, summarised, their weights rebuilt.

Runs ``ase-search run --arch ARCH --budget 40`` with defaults (a joint search of sampler, step
count and exit schedule, with its steps-only baseline) into the study (default
``studies/reference/<arch>.db``), times it, confirms it on 8 fresh seeds (``ase-search
confirm``), and writes ``reports/search-<arch>.md`` (and its ``.html``): the three fronts, the verdict against
fewer steps, and what the run cost. The studies' one-shot weights are git-ignored;
``--weights-only`` fine-tunes them again from the settings the study stored, and with
``--exit-heads`` makes the exit-heads variant of them (the same recipe on the starting model with
exit heads, :func:`ase_search.models.add_exit_heads`; the study keeps its record of the weights it
was measured with). Run from the repository root:

    python -m tools.reference_study --arch dit --budget 40
    python -m tools.reference_study --arch dit --weights-only [--exit-heads]

``--diffusers`` makes the training-free diffusers study instead (issue #17): the testbed exported
with ``ase-search export-diffusers`` to ``studies/reference/dit-diffusers/`` (git-ignored; the
export is byte for byte the same each time) and searched through the exit-schedule hooks in
``search_spaces/dit-reuse.yaml`` into ``studies/reference/dit-diffusers.db``
(``reports/search-dit-diffusers.md``).
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

from ase_search.pareto import StudyError, complete_trials, open_study, seed_report
from ase_search.report import write_report
from benchmarks._common import ROOT, display_path, write_text


def summarise(storage: Path, wall: float | None, command: str,
              confirm: tuple[float, str] | None = None) -> str:
    """``reports/search-<arch>.md``: the three fronts, the verdict, what the run cost.

    Args:
        storage: the study.
        wall: the run's wall time in seconds (``None``: not run now).
        command: the run's command line.
        confirm: the confirmation's wall time and command, when it ran.
    """
    from ase_search.evaluate import machine_info
    from ase_search.fronts import fronts_table, study_verdict, verdict_lines

    from benchmarks._common import machine_text

    study = open_study(storage)
    trials = complete_trials(study)
    verdict = study_verdict(study)
    arch = study.user_attrs.get("arch", "?")
    last = study.user_attrs.get("last_run", {})
    # Summarised later (--summarise-only): the times the study recorded.
    wall = wall if wall is not None else last.get("wall_time")
    recorded = study.user_attrs.get("last_confirm")
    if confirm is None and isinstance(recorded, dict):
        confirm = (recorded["wall_time"], f"ase-search confirm {display_path(storage)} --seeds "
                                          f"{recorded['seeds']}")
    path = " (diffusers path)" if study.user_attrs.get("config", {}).get("diffusers") else ""
    lines = [f"# Joint search on the {arch} testbed{path}: sampler x steps x exit schedule", "",
             "Written by `python -m tools.reference_study` (issue #15) from "
             f"`{display_path(storage)}`; the interactive report is the `.html` of the same "
             "name.", "",
             f"- Command: `{command}`" + (f", then `{confirm[1]}`" if confirm else ""),
             f"- Machine: {machine_text(machine_info())}; load while it ran: "
             f"{_load_text(study)}",
             f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"]
    if wall is not None:
        split = ", ".join(f"{k.replace('_', ' ')} {v / 60:.1f} min"
                          for k, v in last.get("setup", {}).items() if v >= 1.0)
        lines.append(f"- Wall time of the run: **{wall / 60:.1f} min** for {len(trials)} "
                     f"finished trials, the steps-only baseline included (target: <= 20 min)"
                     + (f"; of which {split}" if split else ""))
    if confirm is not None:
        lines.append(f"- Wall time of the confirmation: {confirm[0] / 60:.1f} min")
    splits = [t.user_attrs.get("time_split", {}) for t in trials]
    if splits:  # whatever the trials timed: load, finetune, sampling, fid; measure (diffusers)
        names = dict.fromkeys(k for s in splits for k in s)
        lines.append("- Per trial (median): " + ", ".join(
            f"{k} {statistics.median(s.get(k, 0.0) for s in splits):.1f} s" for k in names))
    lines += ["", "## Verdict", ""] + [f"- {line}" for line in verdict_lines(verdict)]
    lines += _looks(study)
    table = fronts_table(verdict)
    shown = table[table.steps_only_front | table.exits_front | table.joint_front]
    rows = []
    for r in shown.itertuples(index=False):
        sd = "" if r.fid_sd is None or r.fid_sd != r.fid_sd else f" ± {r.fid_sd:.2f}"
        marks = "".join(m for m, on in (("S", r.steps_only_front), ("E", r.exits_front),
                                         ("J", r.joint_front)) if on)
        matched = r.vs_fewer_steps if isinstance(r.vs_fewer_steps, str) else ""
        rows.append(f"| {r.configuration} | {r.fid:.2f}{sd} | {r.ms_per_sample:.2f} | "
                    f"{r.speedup:.2f}x | {marks} | {matched} |")
    lines += ["", "## The three fronts", "",
              "S: steps-only front (the full model, i.e. the starting checkpoint without any "
              "fine-tune, at each sampler and step count), E: exits at the reference sampler "
              "(what a fixed-sampler search finds), J: joint front. "
              + ("Exit configurations run the same starting weights (no fine-tune). "
                 if study.user_attrs.get("config", {}).get("finetune") == "none" else
                 "Exit configurations run the study's one-shot weights. ") +
              "Latency is predicted by the study's cost model (the sum of each call's cost); "
              "speedup is over the reference configuration; the last column is the verdict "
              "rule's word on a lever's point in the quality window (its discounted speedup over "
              "the cheapest steps-only configuration it does not beat, on the fresh seeds, with "
              "measured latency where the confirmation timed the runs). FID is the mean (± sd) "
              "over the fresh confirmation seeds where confirmed, else the search's one seed.",
              "",
              "| configuration | FID-MNIST | ms / sample | speedup | fronts | vs fewer steps |",
              "| --- | ---: | ---: | ---: | :---: | ---: |", *rows]
    seeds = seed_report(study)
    if seeds:
        lines += ["", "## The paper's presets at the reference configuration", "",
                  "| preset | FID (1 seed) | acceleration | on the trials' front |",
                  "| --- | ---: | ---: | :---: |"]
        lines += [f"| {s.name} | {s.fid:.2f} | {s.acceleration:.1%} | "
                  f"{'yes' if s.on_front else 'no'} |" for s in seeds]
    lines += ["", "Why exits lose on this testbed, exit level by exit level and step count by "
              "step count: `reports/steps_vs_exits.md`; the levers that make skipped blocks "
              "cheaper (block reuse, exit heads): `reports/levers.md`, `reports/exit_heads.md`."]
    return "\n".join(lines) + "\n"


def _looks(study: Any) -> list[str]:
    """Each verdict ``confirm`` gave as the seeds grew (at the level the rule gave it then), and
    the seeds the last look added, judged alone: an independent replication."""
    from ase_search.fronts import study_verdict
    from ase_search.record import VERDICT_LOOKS

    looks = [list(look) for look in study.user_attrs.get(VERDICT_LOOKS) or []]
    if len(looks) < 2:
        return []
    lines = ["", "## Every look at the seeds, and the replication", "",
             "Each time `confirm` measured more fresh seeds, the verdict was a new look at the "
             "same claim; the rule tests the L-th look at alpha / 2^(L-1) (`ase_search/verdict.py`"
             "). The last look's new seeds, judged alone, are an independent replication.", ""]

    def headline(seeds: list[int], looks_then: int) -> str:
        verdict = study_verdict(study, seeds=seeds, looks=looks_then).verdict
        return next(line for line in verdict.lines(_lever(study)) if line.startswith("headline"))

    for i, look in enumerate(looks, start=1):
        lines.append(f"- look {i}, {_seeds(look)}: {headline(look, i)}")
    fresh = sorted(set(looks[-1]) - {s for look in looks[:-1] for s in look})
    if len(fresh) >= 2:
        verdict = study_verdict(study, seeds=fresh)
        lines.append(f"- replication, {_seeds(fresh)} alone (look {verdict.verdict.looks}: they "
                     f"are in look {len(looks)}): "
                     + next(line for line in verdict.verdict.lines(_lever(study))
                            if line.startswith("headline")))
    return lines


def _seeds(seeds: list[int]) -> str:
    return (f"seeds {seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1))
            else "seeds " + ", ".join(map(str, seeds)))


def _lever(study: Any) -> str:
    from ase_search.fronts import lever_word, study_fronts

    return lever_word(study_fronts(study))


def _load_text(study: Any) -> str:
    conditions = study.user_attrs.get("cost_model", {}).get("conditions", {})
    load = conditions.get("load_before")
    return "unknown" if not load else f"1-min load average {load[0]:.2f} when profiled"


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
    parser.add_argument("--report-name", default=None,
                        help="Report file stem under reports/ (default search-<arch>).")
    parser.add_argument("--confirm", type=int, default=8,
                        help="Then `ase-search confirm --seeds N` (0: do not).")
    parser.add_argument("--diffusers", action="store_true",
                        help="The training-free study of the testbed in diffusers form "
                             "(studies/reference/<arch>-diffusers.db), through the hooks.")
    parser.add_argument("extra", nargs="*", help="More `ase-search run` options (after --).")
    args = parser.parse_args()
    stem = f"{args.arch}-diffusers" if args.diffusers else args.arch
    storage = args.storage or ROOT / "studies" / "reference" / f"{stem}.db"
    if args.summarise_only:  # the command as the study was run, not today's defaults
        args.budget = int(open_study(storage).user_attrs.get("config", {}).get("budget",
                                                                               args.budget))
    ase = str(Path(sys.executable).with_name("ase-search"))
    cmd = [ase, "run", "--arch", args.arch, "--budget", str(args.budget), "--storage",
           str(storage)]
    if args.diffusers:
        folder = ROOT / "studies" / "reference" / stem
        if not folder.exists():
            subprocess.run([ase, "export-diffusers", "--arch", args.arch, "-o", str(folder)],
                           check=True)
        # The space as a path from the repository root, as the study's identity records it.
        cmd += ["--diffusers", display_path(folder),
                "--space", f"search_spaces/{args.arch}-reuse.yaml"]
    cmd += args.extra
    shown = [display_path(Path(c)) if c.startswith(str(ROOT)) else c for c in cmd[1:]]
    command = " ".join(shlex.quote(c) for c in ["ase-search", *shown])
    if args.weights_only:
        try:
            print(rebuild_one_shot_weights(storage, exit_heads=args.exit_heads))
        except StudyError as err:
            raise SystemExit(f"error: {err}") from None
        return
    wall = confirm = None
    if not args.summarise_only:
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        if args.confirm:
            confirm_cmd = [cmd[0], "confirm", str(storage), "--seeds", str(args.confirm)]
            t0 = time.perf_counter()
            subprocess.run(confirm_cmd, check=True)
            confirm = (time.perf_counter() - t0, f"ase-search confirm {display_path(storage)} "
                                                 f"--seeds {args.confirm}")
    text = summarise(storage, wall, command, confirm)
    name = args.report_name or f"search-{stem}"
    write_text(ROOT / "reports" / f"{name}.md", text)
    write_report(open_study(storage), ROOT / "reports" / f"{name}.html")
    print(text)


if __name__ == "__main__":
    main()
