"""benchmarks._runner: the command line, the per-cell cache (resume, identity, --fresh,
--rebuild) and the report, driven through a throwaway benchmark defined here."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest

from benchmarks._runner import Benchmark, CellContext, Report, markdown_table, option, run

CALLS: list[tuple[str, Any]] = []  # (key, ctx.previous) of every cell computed


@dataclasses.dataclass(frozen=True)
class Params:
    names: tuple[str, ...] = field(default=("a", "b"), metadata=option(identity=False))
    scale: int = 2
    fail_at: str = field(default="", metadata=option(identity=False))

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"--scale must be >= 1, got {self.scale}")


def cell(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    CALLS.append((key, ctx.previous))
    value = {"value": len(key) * params.scale, "steps": []}
    for step in range(3):
        if (ctx.previous or {}).get("steps", [])[step:step + 1]:
            value["steps"].append(ctx.previous["steps"][step])  # resumed, not recomputed
            continue
        if params.fail_at == f"{key}:{step}":
            raise RuntimeError("killed")
        value["steps"].append(step * params.scale)
        ctx.checkpoint(value)
    return value


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    import pandas as pd

    table = pd.DataFrame([[k, str(c["value"])] for k, c in cells.items()],
                         columns=["key", "value"])
    return Report(f"# toy from {json_name}\n\n" + markdown_table(table, align=["left", "right"]))


TOY = Benchmark(name="toy", doc="A toy benchmark.\n", params=Params,
                keys=lambda p: list(p.names), cell=cell, report=report)


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()


def _cache(out: Path) -> dict[str, Any]:
    return json.loads(out.with_suffix(".json").read_text())


def test_a_cached_cell_is_not_recomputed_and_rebuild_computes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "toy.md"
    run(TOY, ["--out", str(out)])
    assert [k for k, _ in CALLS] == ["a", "b"]
    assert _cache(out)["cells"] == {"a": {"value": 2, "steps": [0, 2, 4]},
                                    "b": {"value": 2, "steps": [0, 2, 4]}}
    first = out.read_text()
    assert first.splitlines()[0] == "# toy from toy.json" and "| a     |       2 |" in first

    CALLS.clear()
    run(TOY, ["--out", str(out), "--names", "a", "b", "cc"])  # only the new cell
    assert [k for k, _ in CALLS] == ["cc"]
    CALLS.clear()
    out.unlink()
    run(TOY, ["--out", str(out), "--rebuild", "--scale", "5"])
    assert CALLS == []
    assert "| cc    |       4 |" in out.read_text()


def test_other_identity_recomputes_with_the_old_value_at_hand(tmp_path: Path) -> None:
    out = tmp_path / "toy.md"
    run(TOY, ["--out", str(out), "--names", "a"])
    CALLS.clear()
    run(TOY, ["--out", str(out), "--names", "a", "--scale", "3"])
    assert CALLS == [("a", {"value": 2, "steps": [0, 2, 4]})]
    CALLS.clear()
    run(TOY, ["--out", str(out), "--names", "a", "--scale", "3", "--fresh"])
    assert CALLS == [("a", None)]
    CALLS.clear()
    run(TOY, ["--out", str(out), "--names", "a", "--scale", "3", "--only", "b*"])
    assert CALLS == []


def test_an_interrupted_cell_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "toy.md"
    with pytest.raises(RuntimeError, match="killed"):
        run(TOY, ["--out", str(out), "--fail-at", "b:2"])
    stored = _cache(out)
    assert stored["cells"] == {"a": {"value": 2, "steps": [0, 2, 4]}}  # a finished, b did not
    assert stored["partial"] == {"b": {"value": 2, "steps": [0, 2]}}
    CALLS.clear()
    run(TOY, ["--out", str(out)])
    assert CALLS == [("b", {"value": 2, "steps": [0, 2]})]
    stored = _cache(out)
    assert stored["cells"]["b"] == {"value": 2, "steps": [0, 2, 4]} and "partial" not in stored


def test_bad_parameters_and_an_empty_rebuild_are_one_line(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "toy.md"
    with pytest.raises(SystemExit) as exit_info:
        run(TOY, ["--out", str(out), "--scale", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "error: --scale must be >= 1, got 0")
    with pytest.raises(SystemExit, match="holds no cells"):
        run(TOY, ["--out", str(out), "--rebuild"])
    assert CALLS == [] and not out.exists()


def test_figures_go_to_an_offline_html_twin(tmp_path: Path) -> None:
    import plotly.graph_objects as go

    def with_figure(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
        figure = go.Figure(go.Bar(x=list(cells), y=[c["value"] for c in cells.values()]))
        return Report("# toy\n", figures=[figure, figure], title="Toy <figures>")

    out = tmp_path / "toy.md"
    run(dataclasses.replace(TOY, report=with_figure), ["--out", str(out), "--names", "a"])
    page = out.with_suffix(".html").read_text()
    assert "<title>Toy &lt;figures&gt;</title>" in page
    assert page.count("plotly.js v") == 1  # the bundle inlined once, for the first figure
    assert "<script src=" not in page  # nothing fetched when opened
    assert page.count("Plotly.newPlot(") == 2


def test_a_cell_identity_beyond_the_parameters_recomputes_when_it_changes(tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"one")
    digest = lambda params, key: {"weights": weights.read_bytes().decode()}  # noqa: E731
    bench = dataclasses.replace(TOY, cell_identity=digest)
    out = tmp_path / "toy.md"
    run(bench, ["--out", str(out), "--names", "a"])
    assert _cache(out)["params"]["a"] == {"scale": 2, "weights": "one"}
    CALLS.clear()
    run(bench, ["--out", str(out), "--names", "a"])
    assert CALLS == []
    weights.write_bytes(b"two")
    run(bench, ["--out", str(out), "--names", "a"])
    assert CALLS == [("a", {"value": 2, "steps": [0, 2, 4]})]
    assert _cache(out)["params"]["a"] == {"scale": 2, "weights": "two"}


def test_a_benchmark_may_choose_its_default_report_from_the_parameters(tmp_path: Path) -> None:
    bench = dataclasses.replace(TOY, out=lambda params: tmp_path / f"toy-{params.scale}.md")
    run(bench, ["--names", "a", "--scale", "3"])
    assert _cache(tmp_path / "toy-3.md")["cells"] == {"a": {"value": 3, "steps": [0, 3, 6]}}
    other = tmp_path / "elsewhere.md"
    run(bench, ["--names", "a", "--scale", "3", "--out", str(other)])  # --out still wins
    assert other.is_file() and not (tmp_path / "toy-2.md").exists()


def test_a_repeatable_option_adds_each_occurrence_and_keeps_its_default_when_absent() -> None:
    from benchmarks._runner import parse

    @dataclasses.dataclass(frozen=True)
    class Repeated:
        schedule: tuple[str, ...] = field(default=("D1",), metadata=option(repeat=True))
        names: tuple[str, ...] = ("a",)

    bench = dataclasses.replace(TOY, params=Repeated)
    params, _ = parse(bench, ["--schedule", "A", "--schedule", "B", "C"])
    assert params.schedule == ("A", "B", "C")
    assert parse(bench, [])[0].schedule == ("D1",)
    # An option without repeat=True keeps argparse's rule: the last occurrence wins.
    assert parse(bench, ["--names", "x", "--names", "y"])[0].names == ("y",)


def test_a_cell_reads_the_cells_before_it(tmp_path: Path) -> None:
    def chained(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
        return {"value": len(key) + sum(c["value"] for k, c in ctx.cells.items() if k < key)}

    out = tmp_path / "toy.md"
    bench = dataclasses.replace(TOY, cell=chained)
    run(bench, ["--out", str(out), "--names", "a", "bb"])
    assert _cache(out)["cells"] == {"a": {"value": 1}, "bb": {"value": 3}}
    run(bench, ["--out", str(out), "--names", "a", "bb", "ccc", "--only", "ccc"])  # "a" cached
    assert _cache(out)["cells"]["ccc"] == {"value": 3 + 1 + 3}
