"""The one runner every benchmark goes through: command line, per-cell JSON cache, resume, report.

A benchmark is a :class:`Benchmark`: a frozen dataclass of parameters (each field with a default
becomes a ``--field-name`` option), the cells those parameters ask for (``keys``), a function that
computes one cell (``cell``) and one that turns the cached cells into the report (``report``). The
runner does the rest:

- the command line: the parameters' options plus ``--threads``, ``--out``, ``--only``,
  ``--fresh`` and ``--rebuild``; a parameter dataclass's ``ValueError`` becomes one usage line;
- the cache, ``--out``'s ``.json`` twin ``{"version": V, "cells": {key: cell}, "params": {key:
  identity}, "partial": {key: cell}}``, rewritten atomically after every cell, so an interrupted
  run resumes cell by cell. A cached cell is reused when it was computed with the same identity
  (the parameters whose field is not marked ``identity=False``); otherwise it is computed again,
  and the cell function sees the old value (``ctx.previous``) to reuse what still holds. A cell
  that saves its progress with ``ctx.checkpoint`` resumes from it;
- the report: ``--out`` (markdown) and, when the report has figures, its ``.html`` twin (plotly,
  inlined, opens offline), rewritten after each cell and printed on stdout at the end.
  ``--rebuild`` only rewrites them from the cache.

Run a benchmark from the repository root as ``python -m benchmarks.<name>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, check_testbeds, load_json, write_json, write_text

REPORTS = ROOT / "reports"


def option(help: str = "", *, identity: bool = True, choices: Sequence[Any] | None = None,
           parse: Callable[[str], Any] | None = None, repeat: bool = False) -> dict[str, Any]:
    """Field metadata for a parameter: ``field(default=..., metadata=option("what it is"))``.

    Args:
        help: the option's help text.
        identity: whether the parameter changes what a cell measures; ``False`` for parameters
            that only pick cells (``--arch``) or annotate them (``--note``), so changing them
            reuses the cached cells.
        choices: the values the option accepts.
        parse: turns one command-line word into the value (default: the default's type).
        repeat: for a tuple parameter, whether the option may be given several times, each
            adding its values (``--schedule A --schedule B`` is ``--schedule A B``); otherwise
            the last occurrence wins, as argparse has it.
    """
    return {"help": help, "identity": identity, "choices": choices, "parse": parse,
            "repeat": repeat}


@dataclasses.dataclass(frozen=True)
class TestbedParams:
    """The parameters a benchmark that samples the testbed models starts from: the models
    (``--arch``, both by default; it picks cells, so it is not part of their identity) and the
    samples per seed (``--n``). A subclass's ``__post_init__`` calls this one first."""

    arch: tuple[str, ...] = dataclasses.field(default=("dit", "uvit"),
                                              metadata=option("testbed models", identity=False))
    n: int = dataclasses.field(default=500, metadata=option("samples per seed"))

    def __post_init__(self) -> None:
        check_testbeds(self.arch)


class _Extend(argparse.Action):
    """``nargs="+"`` that a repeated option extends; the first occurrence replaces the default."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        current = getattr(namespace, self.dest)
        setattr(namespace, self.dest,
                list(values) if current is self.default else [*current, *values])


@dataclasses.dataclass(frozen=True)
class CellContext:
    """What a cell function gets besides its parameters and key.

    Attributes:
        command: the command line that reproduces this run (``python -m benchmarks.x ...``).
        previous: the cell's cached value from an interrupted run (see :meth:`checkpoint`) or
            from other parameters, for the cell to reuse what still holds; ``None`` with
            ``--fresh`` or when there is none.
        checkpoint: saves a cell's unfinished value, handed back as ``previous`` on resume.
        cells: the finished cells (computed earlier in this run or cached), for a cell that
            builds on another one (read them by key; the runner computes keys in order).
    """

    command: str
    previous: dict[str, Any] | None
    checkpoint: Callable[[dict[str, Any]], None]
    cells: Mapping[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Report:
    """A benchmark's report: markdown and, optionally, plotly figures for the ``.html`` twin."""

    markdown: str
    figures: Sequence[Any] = ()
    title: str = ""
    html_intro: str = ""


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One benchmark: its parameters, its cells and its report.

    Attributes:
        name: the module's name under ``benchmarks`` and the report's stem (``reports/<name>.md``).
        doc: the module's docstring; its first line is the ``--help`` description.
        params: a frozen dataclass whose fields all have defaults; its ``__post_init__`` raises
            ``ValueError`` for bad values.
        keys: the cells the parameters ask for, in order.
        cell: computes one cell, a JSON-able dict.
        report: the report from every cached cell (in cache order), the parameters and the
            cache file's name.
        version: the cache layout; a cache of another version is started afresh.
        cell_identity: what a cell's value depends on besides the parameters, e.g. the digest
            of the weights it measures (``{"weights_sha256": ...}``); merged into the cell's
            identity, so a cell is computed again when it changes. ``None``: nothing else.
        out: the default ``--out`` for given parameters; ``None``: ``reports/<name>.md``.
    """

    name: str
    doc: str
    params: type
    keys: Callable[[Any], list[str]]
    cell: Callable[[Any, str, CellContext], dict[str, Any]]
    report: Callable[[dict[str, dict[str, Any]], Any, str], Report | str]
    version: int = 1
    cell_identity: Callable[[Any, str], Mapping[str, Any]] | None = None
    out: Callable[[Any], Path] | None = None

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.params):
            raise ValueError(f"{self.name}: params must be a dataclass, got {self.params!r}")
        missing = [f.name for f in dataclasses.fields(self.params)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{self.name}: every parameter needs a default; {missing} have none")


# ###################################################################### the command line
def _parser(bench: Benchmark) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{bench.name}",
                                     description=bench.doc.strip().splitlines()[0])
    for f in dataclasses.fields(bench.params):
        meta = {**option(), **f.metadata}
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"default": default, "help": meta["help"] or None,
                                  "dest": f.name}
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", **kwargs)
            continue
        if isinstance(default, tuple):
            kwargs["nargs"] = "+"
            if meta["repeat"]:
                kwargs["action"] = _Extend
            kind = meta["parse"] or (type(default[0]) if default else str)
        else:
            kind = meta["parse"] or (str if default is None else type(default))
        parser.add_argument(flag, type=kind, choices=meta["choices"], **kwargs)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown report; its .json twin caches the cells (default: "
                             + ("set by the other options" if bench.out else
                                f"reports/{bench.name}.md") + ")")
    parser.add_argument("--only", default=None,
                        help="compute only the cells whose key matches one of these "
                             "comma-separated glob patterns")
    parser.add_argument("--fresh", action="store_true",
                        help="compute the asked-for cells again, ignoring what is cached for them")
    parser.add_argument("--rebuild", action="store_true",
                        help="only rewrite the report from the cache, computing nothing")
    return parser


def parse(bench: Benchmark, argv: Sequence[str] | None) -> tuple[Any, argparse.Namespace]:
    """The benchmark's parameters and the runner's options from ``argv``; bad values exit 2."""
    parser = _parser(bench)
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(bench.params)}
    for f in dataclasses.fields(bench.params):
        if isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    try:
        params = bench.params(**values)
    except ValueError as err:
        parser.error(str(err))
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.out is None:
        args.out = bench.out(params) if bench.out else REPORTS / f"{bench.name}.md"
    return params, args


def identity(params: Any) -> dict[str, Any]:
    """The parameters that change what a cell measures, as JSON-able values."""
    out = {}
    for f in dataclasses.fields(params):
        if f.metadata.get("identity", True):
            value = getattr(params, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else (
                str(value) if isinstance(value, Path) else value)
    return out


def command_line(bench: Benchmark, argv: Sequence[str] | None) -> str:
    """The command that reproduces this run, e.g. ``python -m benchmarks.latency --steps 10``."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", "-m", f"benchmarks.{bench.name}", *args])


# ###################################################################### the cache
class Cache:
    """The cells of one benchmark, stored as JSON and rewritten atomically after each change."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        stored = load_json(path, version)
        self.data: dict[str, Any] = stored or {"version": version, "cells": {}, "params": {}}
        self.data.setdefault("params", {})

    @property
    def cells(self) -> dict[str, dict[str, Any]]:
        return self.data["cells"]

    def is_current(self, key: str, ident: Mapping[str, Any]) -> bool:
        """Whether ``key`` is cached, finished, with the identity ``ident``."""
        return key in self.cells and self.data["params"].get(key) == dict(ident)

    def previous(self, key: str) -> dict[str, Any] | None:
        return self.data.get("partial", {}).get(key, self.cells.get(key))

    def checkpoint(self, key: str, value: dict[str, Any]) -> None:
        self.data.setdefault("partial", {})[key] = value
        self.save()

    def put(self, key: str, value: dict[str, Any], ident: Mapping[str, Any]) -> None:
        self.cells[key] = value
        self.data["params"][key] = dict(ident)
        partial = self.data.get("partial", {})
        partial.pop(key, None)
        if not partial:
            self.data.pop("partial", None)
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)


# ###################################################################### the report
def figures_html(figures: Sequence[Any], *, title: str, intro: str = "") -> str:
    """One offline HTML page holding plotly ``figures``; plotly.js is inlined once, first."""
    import html

    divs = [fig.to_html(full_html=False, include_plotlyjs=(k == 0),
                        config={"displaylogo": False}) for k, fig in enumerate(figures)]
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
            f"{html.escape(title)}</title></head>\n<body style=\"font-family: sans-serif; "
            f"max-width: 1100px; margin: auto\">\n<h1>{html.escape(title)}</h1>\n{intro}\n"
            + "\n".join(divs) + "\n</body></html>\n")


def markdown_table(df: Any, *, index: bool = False, align: Sequence[str] | None = None) -> str:
    """``df`` as a markdown table (pandas ``to_markdown``); ``align`` per column (left/right).

    Cells are written as they are (no number parsing): reports format their figures themselves.
    """
    kwargs: dict[str, Any] = {"index": index, "disable_numparse": True}
    if align is not None:
        kwargs["colalign"] = list(align)
    return df.to_markdown(**kwargs)


def write_report(bench: Benchmark, cache: Cache, params: Any, out: Path) -> str:
    """Rewrite ``out`` (and its ``.html`` twin when there are figures) from the cached cells."""
    if not cache.cells:
        raise SystemExit(f"nothing to report: {cache.path} holds no cells; run without --rebuild")
    report = bench.report(dict(cache.cells), params, cache.path.name)
    if isinstance(report, str):
        report = Report(report)
    write_text(out, report.markdown)
    if report.figures:
        write_text(out.with_suffix(".html"), figures_html(report.figures, title=report.title,
                                                          intro=report.html_intro))
    return report.markdown


# ###################################################################### the run
def run(bench: Benchmark, argv: Sequence[str] | None = None) -> Cache:
    """Parse ``argv``, compute the cells not cached, write the report; return the cache."""
    params, args = parse(bench, argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    command = command_line(bench, argv)
    cache = Cache(args.out.with_suffix(".json"), bench.version)
    ident = identity(params)
    keys = [] if args.rebuild else bench.keys(params)
    if args.only:
        patterns = args.only.split(",")
        keys = [k for k in keys if any(fnmatch.fnmatchcase(k, p) for p in patterns)]
    for key in keys:
        key_ident = ident if bench.cell_identity is None else {
            **ident, **bench.cell_identity(params, key)}
        if not args.fresh and cache.is_current(key, key_ident):
            print(f"{bench.name}: {key} cached", file=sys.stderr)
            continue
        ctx = CellContext(command=command, previous=None if args.fresh else cache.previous(key),
                          checkpoint=lambda value, key=key: cache.checkpoint(key, value),
                          cells=cache.cells)
        cache.put(key, bench.cell(params, key, ctx), key_ident)
        write_report(bench, cache, params, args.out)  # after each cell, so a crash keeps it
    text = write_report(bench, cache, params, args.out)
    print(text)
    print(f"wrote {args.out} and {cache.path}", file=sys.stderr)
    return cache
