"""``ase-search schedules`` and ``ase-search schedule show``: inspect exit schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ase_search.cli._app import ArchOpt, SamplerOpt, StepsOpt, app, console

schedule_app = typer.Typer(help="Inspect a schedule file.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


def _schedule_table(schedules, sampler: str, steps: int, title: str):
    from rich.table import Table

    from ase_search.callplan import block_acceleration, blocks_per_call
    from ase_search.samplers import SamplerConfig

    config = SamplerConfig(name=sampler, steps=steps)
    table = Table(title=title)
    table.add_column("schedule")
    table.add_column("blocks per interval of t (data -> noise)")
    table.add_column("mean blocks", justify="right")
    table.add_column(f"block accel. {sampler}-{steps}", justify="right")
    for s in schedules:
        calls = blocks_per_call(s, config)
        table.add_row(s.name, s.describe(), f"{sum(calls) / len(calls):.2f}",
                      f"{block_acceleration(s, config):.2%}")
    return table


@app.command("schedules")
def schedules_cmd(
    arch: ArchOpt = "dit",
    depth: Annotated[
        int | None, typer.Option(help="Exitable depth (default: the paper's 28 / 6).")
    ] = None,
    sampler: SamplerOpt = "ddim",
    steps: StepsOpt = 50,
    data_easy: Annotated[bool, typer.Option(help="Also list the Data-Easy mirrors.")] = False,
) -> None:
    """The preset schedules (the paper's Table 2, and the peers' caches at their settings), with
    their block acceleration."""
    from ase_search.schedule import preset, preset_names

    names = preset_names(arch, data_easy=data_easy, peers=True)
    schedules = [preset(n, arch, depth) for n in names]
    title = f"{arch} presets (exitable depth {schedules[0].depth})"
    console.print(_schedule_table(schedules, sampler, steps, title))


@schedule_app.command("show")
def schedule_show(
    file: Annotated[Path, typer.Argument(help="A schedule JSON file.")],
    sampler: SamplerOpt = "ddim",
    steps: StepsOpt = 50,
) -> None:
    """Validate a schedule file and print it."""
    import json

    from ase_search.schedule import ExitSchedule

    schedule = ExitSchedule.from_json(file)
    console.print(_schedule_table([schedule], sampler, steps, f"{file} ({schedule.arch}, "
                                  f"depth {schedule.depth})"))
    if schedule.metadata:
        console.print_json(json.dumps(schedule.metadata))
