"""The offline HTML report of a search study."""

from __future__ import annotations

import base64
import importlib.metadata
import re

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

from ase_search.pareto import complete_trials, hypervolume_history, pareto_front
from ase_search.report import default_reference_point, write_report
from ase_search.schedule import ExitSchedule

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _add(study, number_hint, fid, latency, *, seed=None, grid=None, fail=False):
    blocks = (12, 10, 8, 6, number_hint % 5 + 1)
    schedule = ExitSchedule("dit", 12, (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), blocks)
    attrs = {"schedule": schedule.to_dict(), "fid": fid, "latency": latency,
             "acceleration": 1 - latency / 2.0}
    if seed:
        attrs["preset"] = seed
    if grid:
        attrs["grid"] = grid
    if fail:
        attrs["fail_reason"] = "sampling diverged"
    study.add_trial(create_trial(
        state=TrialState.FAIL if fail else TrialState.COMPLETE,
        values=None if fail else [fid, latency],
        params={"blocks_4": blocks[4]}, distributions={"blocks_4": IntDistribution(1, 12)},
        user_attrs=attrs))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("study")


@pytest.fixture(scope="module")
def study(folder):
    """A sqlite study whose front is trials 0, 2, 3, 5 (3 has no grid, 5's grid is missing)."""
    tmp_path = folder
    png = tmp_path / "grids" / "t2.png"
    png.parent.mkdir()
    Image.new("L", (6, 6), color=200).save(png)
    absolute = tmp_path / "elsewhere.png"
    Image.new("L", (5, 5), color=10).save(absolute)
    s = optuna.create_study(directions=["minimize", "minimize"], study_name="dit",
                            storage="sqlite:///" + str(tmp_path / "dit.db"))
    s.set_metric_names(["fid", "latency"])
    s.set_user_attr("arch", "dit")
    s.set_user_attr("config", {"sampler": "ddim", "steps": 20, "finetune": "one-shot"})
    s.set_user_attr("full_latency", 2.0)
    s.set_user_attr("full_fid", 3.5)
    _add(s, 0, 3.5, 2.0, seed="full", grid=str(absolute))  # 0 front
    _add(s, 1, 9.0, 1.5, seed="D4")  # 1 dominated by 2 and 3
    _add(s, 2, 6.0, 1.2, grid="grids/t2.png")  # 2 front, grid relative to the study folder
    _add(s, 3, 8.0, 0.9)  # 3 front
    _add(s, 4, 0.0, 0.0, fail=True)  # 4 failed
    _add(s, 5, 12.0, 0.5, grid="grids/gone.png")  # 5 front, grid file missing
    _add(s, 6, 13.0, 1.9)  # 6 dominated
    # The steps-only baseline: the full model at DDIM-20 (the reference), -10 and -5.
    for steps, fid, latency in ((20, 3.5, 2.0), (10, 5.0, 1.0), (5, 9.0, 0.5)):
        s.set_user_attr(f"steps_only:ddim-{steps}/full", {
            "fid": fid, "latency": latency, "sampler": {"name": "ddim", "steps": steps,
                                                        "eta": 0.0, "cfg_scale": 1.0}})
    return s


def test_report_is_self_contained_and_complete(study, folder, tmp_path):
    out = write_report(study, tmp_path / "reports" / "dit-pareto.html")
    text = out.read_text()
    assert out.name == "dit-pareto.html" and text.startswith("<!DOCTYPE html>")
    assert text.count("plotly.js v") == 1  # the bundle is inlined once, shared by all figures
    assert re.search(r"<script[^>]*\bsrc\s*=", text) is None  # nothing loaded from anywhere
    assert re.search(r"<link[^>]*href\s*=\s*[\"']https?:", text) is None
    assert text.count('class="plotly-graph-div"') == 3  # scatter, hypervolume, heatmap
    # The Pareto table: front trials and the dominated seed with its dominator.
    rows = dict(re.findall(r'<tr class="[^"]*"><td class="trial">(\d+)</td>(.*?)</tr>', text))
    assert set(rows) == {"0", "1", "2", "3", "5"}
    assert '<td class="dominated_by">2, 3</td>' in rows["1"] and ">D4<" in rows["1"]
    assert "dominated by trials 2, 3" in text
    # The verdict against the steps-only baseline; heatmap rows are labelled by trial number.
    assert "Verdict: levers against fewer steps" in text
    assert "no verdict yet" in text and "fresh seeds" in text  # one seed judges nothing
    for label in ("#0 full (0%)", "#2 (40%)", "#3 (55%)", "#5 (75%)"):
        assert label in text
    # Grids: both existing PNGs embedded (absolute and study-relative), the missing one reported.
    for png in (folder / "grids" / "t2.png", folder / "elsewhere.png"):
        assert base64.b64encode(png.read_bytes()).decode() in text
    assert "sample grid not found" in text and "gone.png" in text
    assert "sampling diverged" in text  # failed-trial reasons are summarised
    assert not list(out.parent.glob(".*"))  # atomic write left no temporary file
    footer = re.search(r"<footer>(.*?)</footer>", text).group(1)
    assert footer == f"written by ase-search {importlib.metadata.version('ase-search')}"


def test_report_figures_show_the_library_numbers(study, tmp_path):
    from ase_search.fronts import study_verdict
    from ase_search.report import _fronts_figure, _hypervolume_figure, _schedule_heatmap

    ref = default_reference_point(study)
    assert ref == pytest.approx((2 * 3.5, 2.0))  # twice the full model's FID, its latency
    trials, front = complete_trials(study), pareto_front(study)
    hv = _hypervolume_figure(study, trials, ref).data[0]
    assert list(hv.x) == [0, 1, 2, 3, 5, 6]
    assert list(hv.y) == hypervolume_history(study, ref)
    # Three fronts against speedup over DDIM-20 (latency 2.0), FID on a log axis. Steps-only:
    # (3.5, 2.0), (5, 1.0), (9, 0.5). Exits at the reference sampler: trials 0, 2, 3. Joint:
    # both DDIM-20 points (equal values), DDIM-10, trial 3 (8, 0.9) and DDIM-5.
    figure = _fronts_figure(study_verdict(study))
    scatter = {trace.name: trace for trace in figure.data}
    steps = scatter["steps-only front"]
    assert list(steps.x) == pytest.approx([1.0, 2.0, 4.0]) and list(steps.y) == [3.5, 5.0, 9.0]
    exits = scatter["exits-only front (reference sampler)"]
    # (trial 5 runs trial 0's schedule: one configuration is one point, the first measured)
    assert sorted(exits.x) == pytest.approx([1.0, 1.0, 2 / 1.2, 2 / 0.9])
    assert sorted(exits.y) == [3.5, 3.5, 6.0, 8.0]
    joint = scatter["joint front"]
    assert sorted(joint.x) == pytest.approx([1.0, 1.0, 2.0, 2 / 0.9, 4.0])
    assert sorted(joint.y) == [3.5, 3.5, 5.0, 8.0, 9.0]
    assert joint.line.shape == "vh" and figure.layout.yaxis.type == "log"
    # The first view zooms on the quality window; a button shows the full range.
    import math

    assert figure.layout.yaxis.range[1] == pytest.approx(math.log10(1.25 * 3.5 * 1.6))
    buttons = {b.label: b for b in figure.layout.updatemenus[0].buttons}
    assert buttons["full range"].args[0]["yaxis.range"][1] == pytest.approx(math.log10(9 * 1.1))
    # the speedup axis zooms too: to the fastest point below 1.6x the window's edge (DDIM-10, 2x
    # at FID 5), not to DDIM-5's 4x at FID 9
    assert figure.layout.xaxis.range[1] == pytest.approx(2.0 * 1.1)
    assert buttons["full range"].args[0]["xaxis.range"][1] == pytest.approx(4.0 * 1.05)
    # Heatmap: one row per front trial by acceleration, value = blocks at each t bin's centre.
    heat = _schedule_heatmap(study, front).data[0]
    assert list(heat.y) == ["#0 full (0%)", "#2 (40%)", "#3 (55%)", "#5 (75%)"]
    assert len(heat.x) == 100
    row5 = [12] * 20 + [10] * 20 + [8] * 20 + [6] * 20 + [1] * 20  # trial 5: 5 % 5 + 1 = 1
    assert list(heat.z[3]) == row5
    text = write_report(study, tmp_path / "r.html", grids=False).read_text()
    assert "<img " not in text and "Sample grids" not in text  # grids=False


def test_report_names_versions_and_the_load_the_cost_model_was_profiled_under(tmp_path):
    s = optuna.create_study(directions=["minimize", "minimize"], study_name="v")
    s.set_user_attr("ase_search_version", "0.0.9")
    s.set_user_attr("cost_model", {"conditions": {
        "load_before": [1.5, 1.0, 0.5], "load_after": [0.75, 0.9, 0.5], "cpus": 2,
        "threads": 1, "rounds": 5, "repeats": 5}})
    text = write_report(s, tmp_path / "v.html").read_text()
    installed = importlib.metadata.version("ase-search")
    assert (f"<footer>written by ase-search {installed}; study made with ase-search 0.0.9"
            "</footer>") in text
    assert ("<dt>cost model profiled under</dt><dd>load 1.50 before, 0.75 after (1 min); "
            "2 CPUs, 1 torch thread(s); fastest of 5 rounds</dd>") in text


def test_report_of_an_empty_study_and_bad_path(tmp_path):
    empty = optuna.create_study(directions=["minimize", "minimize"], study_name="empty")
    assert pareto_front(empty) == []
    text = write_report(empty, tmp_path / "e.html").read_text()
    assert "No COMPLETE trial yet" in text
    with pytest.raises(ValueError, match="html"):
        write_report(empty, tmp_path / "e.pdf")


def test_reference_point_without_a_full_model_lies_beyond_the_worst_trial():
    s = optuna.create_study(directions=["minimize", "minimize"])
    assert default_reference_point(s) == (1.0, 1.0)
    _add(s, 0, 9.0, 1.5, seed="D4")
    _add(s, 1, 20.0, 0.5)
    assert default_reference_point(s) == pytest.approx((20.0 * 1.1, 1.5 * 1.1))
    # a finished full-depth trial ties it to the full model
    schedule = ExitSchedule("dit", 12, (0.0, 1.0), (12,))
    s.add_trial(create_trial(values=[4.0, 2.5], params={}, distributions={},
                             user_attrs={"schedule": schedule.to_dict(), "fid": 4.0, "latency": 2.5}))
    assert default_reference_point(s) == pytest.approx((8.0, 2.5))
