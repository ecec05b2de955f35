"""``ase-search pareto`` and ``ase-search export``: read a search study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ase_search.cli._app import app, console, console_err

StudyArg = Annotated[str, typer.Argument(
    help="The study: a .db (SQLite) or .journal file, or an Optuna storage URL.")]
StudyNameOpt = Annotated[str | None, typer.Option(
    "--study-name", help="Which study, when the storage holds several.")]


def _stem(storage: str, study_name: str) -> str:
    """File stem for default output names: the study file's, else the study's name."""
    if "://" not in storage:
        return Path(storage).stem
    import sqlalchemy.engine

    database = sqlalchemy.engine.make_url(storage).database
    return Path(database).stem if database else study_name


@app.command("pareto")
def pareto_cmd(
    study: StudyArg,
    study_name: StudyNameOpt = None,
    report: Annotated[Path | None, typer.Option(
        "--report", help="HTML report to write (default <study stem>-pareto.html beside the "
                         "study file; the current folder for a server database).")
    ] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip the HTML report.")] = False,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write the table as CSV.")] = None,
    grids: Annotated[bool, typer.Option(help="Embed the front's sample grids in the report.")
                     ] = True,
    seeds: Annotated[str | None, typer.Option(
        "--seeds", help="Judge on these fresh seeds only, e.g. 9-16 (an independent "
                        "replication of a verdict on 1-8: `confirm --seeds 16` measures them).")
    ] = None,
) -> None:
    """Print the Pareto front (FID vs latency) of a search and write an offline HTML report."""
    import math

    from rich.table import Table

    from ase_search.fronts import fronts_table, study_verdict, verdict_lines
    from ase_search.pareto import (
        complete_trials,
        pareto_table,
        open_study,
        seed_report,
        study_dir,
    )
    from ase_search.files import atomic_write, check_writable
    from ase_search.report import write_report

    if report is not None and no_report:
        raise ValueError("--report and --no-report contradict each other; drop one")
    judged = None if seeds is None else parse_seeds(seeds)
    if csv is not None and csv.suffix.lower() != ".csv":
        raise ValueError(f"--csv must be a .csv file, got {csv}")
    for path in (report, csv):
        if path is not None:
            check_writable(path)
    opened = open_study(study, study_name)
    table = pareto_table(opened)

    n_complete = len(complete_trials(opened))
    out = Table(title=f"{opened.study_name}: Pareto front of {n_complete} complete trials "
                      f"(FID and latency minimised)")
    for name, justify in (("trial", "right"), ("sampler", "left"), ("blocks per interval", "left"),
                          ("FID", "right"), ("acceleration", "right"), ("latency s", "right"),
                          ("preset", "left"), ("front", "center")):
        out.add_column(name, justify=justify)
    for row in table.itertuples(index=False):
        acc = "" if math.isnan(row.acceleration) else f"{row.acceleration:.2%}"
        preset = f"* {row.preset}" if row.preset else ""
        style = None if row.on_front else "dim"
        out.add_row(str(row.trial), row.sampler, row.schedule, f"{row.fid:.4g}", acc,
                    f"{row.latency:.4g}",
                    preset, "yes" if row.on_front else "no", style=style)
    console.print(out)
    for s in seed_report(opened):
        if s.on_front:
            console.print(f"seed {s.name} (trial {s.trial}) is on the front")
        else:
            by = ", ".join(str(n) for n in s.dominated_by)
            console.print(f"seed {s.name} (trial {s.trial}) is dominated by trial(s) {by}")
    from ase_search.search.screen import screen_line, screen_summary

    screened = screen_summary(opened)
    if screened is not None:
        console.print(screen_line(screened), highlight=False, soft_wrap=True)
    verdict = study_verdict(opened, seeds=judged)
    ref = verdict.fronts.reference
    edge = math.inf if ref is None else verdict.window * ref.fid
    console.print(_fronts_rich(fronts_table(verdict), edge))
    for line in verdict_lines(verdict):
        console.print(f"[bold]verdict:[/bold] {line}", highlight=False, soft_wrap=True)

    if csv is not None:
        atomic_write(csv, lambda tmp: table.to_csv(tmp, index=False))
        console.print(f"table -> {csv}")
    if not no_report:
        # Beside the study, so each study keeps its own report (not one reports/ per checkout).
        path = report or ((study_dir(opened) or Path.cwd())
                          / f"{_stem(study, opened.study_name)}-pareto.html")
        console_err.print(f"writing report {path} ...")
        write_report(opened, path, grids=grids, seeds=judged)
        console.print(f"report -> {path}")


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"9-16"``, ``"9,10,12"`` or a mix, as sorted distinct seeds.

    Raises:
        ValueError: anything else, or a range that runs backwards.
    """
    seeds: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            lo, hi = int(low), int(high) if dash else int(low)
        except ValueError:
            raise ValueError(f"--seeds takes seeds and ranges such as 9-16 or 9,10,12; got "
                             f"{text!r}") from None
        if lo < 0 or hi < lo:
            raise ValueError(f"--seeds: {part.strip()!r} is not a range of seeds >= 0")
        seeds.update(range(lo, hi + 1))
    if len(seeds) < 2:
        raise ValueError(f"--seeds needs at least two seeds (a paired spread needs two); got "
                         f"{text!r}")
    return tuple(sorted(seeds))


def _fronts_rich(table: Any, edge: float) -> Any:
    """The three fronts as a rich table (front members only: S steps-only, E exits at the
    reference sampler, J joint); no speedup is printed for a point whose FID is past the quality
    window's ``edge`` (a 50x at FID 480 is an artifact of the ladder's end, not a result)."""
    import math

    from rich.table import Table

    out = Table(title="Three fronts (S: steps-only, E: exits at the reference sampler, J: joint); "
                      "latency predicted")
    for name in ("configuration", "FID", "ms/sample", "speedup", "fronts", "vs fewer steps"):
        out.add_column(name, justify="left" if name in ("configuration", "fronts") else "right")
    for row in table.itertuples(index=False):
        marks = "".join(m for m, on in (("S", row.steps_only_front), ("E", row.exits_front),
                                         ("J", row.joint_front)) if on)
        if not marks:
            continue
        sd = "" if row.fid_sd is None or math.isnan(row.fid_sd) else f" ± {row.fid_sd:.2f}"
        # the rule's word; none outside the window (pandas may hold a missing one as NaN)
        matched = row.vs_fewer_steps if isinstance(row.vs_fewer_steps, str) else ""
        out.add_row(row.configuration, f"{row.fid:.3g}{sd}", f"{row.ms_per_sample:.2f}",
                    f"{row.speedup:.2f}x" if row.fid <= edge else "", marks, matched)
    return out


@app.command("confirm")
def confirm_cmd(
    study: StudyArg,
    seeds: Annotated[int, typer.Option(
        help="Fresh seeds to measure each configuration on (the ones after the study's seed, "
             "which the search selected on; common random numbers). 8 resolve a 5% FID "
             "difference between configurations on the same weights.")] = 8,
    study_name: StudyNameOpt = None,
    max_concurrent: Annotated[int | None, typer.Option(help="Configurations at once.")] = None,
    timesteps: Annotated[list[Path] | None, typer.Option(
        "--timesteps", help="An `ase-search timesteps` JSON whose timesteps join the steps-only "
                            "ladder (the full model there); repeat for several.")] = None,
) -> None:
    """Measure the whole steps-only ladder and the levers on the joint front on fresh seeds, so
    that `pareto`, the report and `export` can judge them by the paired rule."""
    from ase_search.cli._app import use_threads
    from ase_search.search import confirm_study

    use_threads()
    summary = confirm_study(study, study_name=study_name, seeds=seeds,
                            max_concurrent=max_concurrent, timesteps=timesteps or (),
                            log=lambda m: console_err.print(m, highlight=False))
    console.print(f"confirmed {summary} configuration(s) on {seeds} fresh seeds")
    from ase_search.fronts import study_verdict, verdict_lines
    from ase_search.pareto import open_study

    for line in verdict_lines(study_verdict(open_study(study, study_name))):
        console.print(f"[bold]verdict:[/bold] {line}", highlight=False, soft_wrap=True)
    console.print(f"Next: ase-search pareto {study} (fronts and the HTML report)")


@app.command("export")
def export_cmd(
    study: StudyArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Schedule JSON file to write.")],
    trial: Annotated[int | None, typer.Option("--trial", help="Export this trial number.")
                     ] = None,
    max_fid: Annotated[float | None, typer.Option(
        "--max-fid", help="The fastest configuration of the joint front (an exit schedule, or "
        "the full model at fewer steps) with FID <= this.")] = None,
    min_acceleration: Annotated[float | None, typer.Option(
        "--min-acceleration", help="The best-FID configuration of the joint front at least "
        "this much faster than the reference configuration (a fraction: 0.3 = 30% faster).")
    ] = None,
    study_name: StudyNameOpt = None,
) -> None:
    """Export a configuration's exit schedule (with its sampler, steps and provenance) as a
    schedule JSON file. FIDs are the confirmation seeds' means where `confirm` measured them."""
    from ase_search.files import check_writable
    from ase_search.fronts import export_point, select_point, study_points
    from ase_search.pareto import export_schedule, open_study, select_trial

    given = [flag for flag, v in (("--trial", trial), ("--max-fid", max_fid),
                                  ("--min-acceleration", min_acceleration)) if v is not None]
    if len(given) != 1:
        raise ValueError("choose the configuration with exactly one of --trial, --max-fid, "
                         f"--min-acceleration (got {', '.join(given) or 'none'})")
    if out.suffix.lower() != ".json":
        raise ValueError(f"--out must be a .json file, got {out}")
    check_writable(out)
    opened = open_study(study, study_name)
    if trial is not None:
        chosen = select_trial(opened, trial=trial)
        # the trial as a study point, so the export carries the verdict's word on it (a trial
        # that repeats another's configuration is exported as it is)
        point = next((p for p in study_points(opened) if p.trial == chosen.number), None)
        schedule = (export_point(opened, point, out) if point is not None
                    else export_schedule(opened, chosen, out))
        what = f"trial {trial} ({schedule.name})"
    else:
        point = select_point(opened, max_fid=max_fid, min_acceleration=min_acceleration)
        schedule = export_point(opened, point, out)
        what = point.label
    meta = schedule.metadata
    acc, confirmed = meta.get("acceleration"), meta.get("confirmed")
    fid = (f"FID {confirmed['fid_mean']:.4g} over {len(confirmed['fids'])} seeds" if confirmed
           else f"FID {meta['fid']:.4g}")
    console.print(f"{what}: {fid}, "
                  + (f"acceleration {acc:.2%}, " if acc is not None else "")
                  + f"sample with --sampler {meta['sampler']} --steps {meta['steps']} -> {out}")
    judged = meta.get("verdict") or {}
    if judged.get("text"):
        console.print(f"verdict: {judged['text']}", highlight=False, soft_wrap=True)
    elif judged:
        console.print(f"verdict: {judged['status']} ({judged['why']})", highlight=False,
                      soft_wrap=True)
