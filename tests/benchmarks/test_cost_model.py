"""benchmarks/cost_model: the per-lever median errors of its report, by hand."""

from __future__ import annotations

from benchmarks.cost_model import Params, report

MACHINE = {"cpu": "x", "logical_cores": 2, "cores_usable": 2, "gpu": None, "torch": "t",
           "torch_threads": 1, "python": "3", "date": "today"}


def test_the_report_gives_each_levers_median_error_against_the_timed_runs() -> None:
    rows = [{"configuration": "ddim-10/full", "levers": ["full"], "stored": 0.5, "today": 0.5,
             "timed": 0.5},
            {"configuration": "a", "levers": ["full", "forecast"], "stored": 0.8, "today": 0.9,
             "timed": 1.0},
            {"configuration": "b", "levers": ["full", "forecast"], "stored": 0.6, "today": 0.95,
             "timed": 1.0},
            {"configuration": "c", "levers": ["full", "forecast"], "stored": 0.7, "today": 1.0,
             "timed": 1.0}]
    text = report({"s": {"rows": rows, "command": "cmd", "machine": MACHINE}}, Params(),
                  "x.json").markdown
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]]
             for line in text.splitlines() if line.startswith("| f")}
    assert lines["full"] == ["1", "+0.0%", "+0.0%"]
    # forecast: errors -20%, -40%, -30% (median -30%) and -10%, -5%, 0% (median -5%)
    assert lines["forecast"] == ["3", "-30.0%", "-5.0%"]
