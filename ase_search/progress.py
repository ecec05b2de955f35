"""The one progress bar of ase-search: rich on stderr, so stdout stays for results."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["progress_bar"]


def progress_bar(*, note: str | None = None, counts: bool = True,
                 enabled: bool = True) -> Progress:
    """A rich progress bar on stderr with an ETA.

    Columns: the task's description, the bar, done/total (``counts``) or a percentage, ``note``
    (a format string over the task, e.g. ``"loss {task.fields[loss]:.4f}"``; add the task with
    those fields), elapsed time and the time remaining.

    Args:
        note: the optional text column.
        counts: show done/total rather than a percentage.
        enabled: ``False`` gives a bar that draws nothing (``--no-progress``, tests).
    """
    from rich import progress as rp
    from rich.console import Console

    share = rp.MofNCompleteColumn() if counts else rp.TextColumn("{task.percentage:>3.0f}%")
    columns = [rp.TextColumn("[bold]{task.description}"), rp.BarColumn(), share]
    if note is not None:
        columns.append(rp.TextColumn(note))
    columns += [rp.TimeElapsedColumn(), rp.TextColumn("ETA"), rp.TimeRemainingColumn()]
    return rp.Progress(*columns, console=Console(stderr=True), disable=not enabled)
