"""benchmarks.search_efficiency: its hypervolume bookkeeping, and one tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from ase_search.schedule import ExitSchedule
from benchmarks import search_efficiency as bench
from benchmarks._runner import run


def test_hypervolume_curve_never_decreases_and_ignores_points_outside() -> None:
    ref = (10.0, 10.0)
    points = [(12.0, 1.0), (5.0, 5.0), (6.0, 6.0), (2.0, 8.0), (5.0, 5.0)]
    assert bench.hypervolume_curve(points, ref) == [0.0, 25.0, 25.0, 25.0 + 3 * 2, 31.0]


def test_trials_to_reach_and_curve_stats() -> None:
    assert bench.trials_to_reach([0.0, 1.0, 3.0, 3.0], 3.0) == 3
    assert bench.trials_to_reach([0.0, 1.0], 3.0) is None
    stats = bench.curve_stats([[0.0, 2.0], [2.0, 4.0]])
    assert (stats["mean"], stats["low"], stats["high"]) == ([1.0, 3.0], [0.0, 2.0], [2.0, 4.0])
    with pytest.raises(ValueError, match="equal-length"):
        bench.curve_stats([[1.0], [1.0, 2.0]])
    assert bench.shared_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2


def test_schedule_key_merges_equal_neighbours() -> None:
    split = ExitSchedule("dit", 4, (0.0, 0.5, 1.0), (3, 3))
    whole = ExitSchedule("dit", 4, (0.0, 1.0), (3,))
    assert bench.schedule_key(split) == bench.schedule_key(whole)
    assert bench.schedule_key(whole) != bench.schedule_key(ExitSchedule("dit", 4, (0.0, 1.0),
                                                                        (2,)))


def _run(points: list[tuple[float, float]]) -> dict:
    return {"trials": [{"state": "COMPLETE", "fid": f, "latency": lat, "schedule_key": str(k)}
                       for k, (f, lat) in enumerate(points)]}


def test_verdict_flags_a_random_search_that_never_beats_the_seeds() -> None:
    seeds = [(4.0, 10.0), (6.0, 8.0)]  # both runs open with the same two seed trials
    ref = (10.0, 10.0)
    flat = {"gp-r0": _run(seeds + [(3.0, 5.0)]), "random-r0": _run(seeds + [(9.0, 9.0)])}
    result = bench.analyse(flat, ["gp", "random"], 1, 3, ref, n_seeds=2)
    seeds_hv = 4 * 2  # (10 - 6) x (10 - 8): the seed at latency 10 adds nothing
    assert result["verdict"]["seeds_only"] == seeds_hv
    assert result["verdict"]["random_mean_final"] == seeds_hv
    assert result["verdict"]["trivial"]
    better = {"gp-r0": flat["gp-r0"], "random-r0": _run(seeds + [(5.0, 6.0)])}
    verdict = bench.analyse(better, ["gp", "random"], 1, 3, ref, n_seeds=2)["verdict"]
    assert verdict["random_mean_final"] == (10 - 5) * (10 - 6)  # its box holds the seeds'
    assert not verdict["trivial"]


@pytest.mark.slow
def test_tiny_end_to_end_run_resumes_from_the_cache(tmp_path) -> None:
    import torch

    from ase_search.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("DiT-T", hidden_size=32, depth=4, num_heads=2)
    with torch.no_grad():  # adaLN-Zero starts at exactly zero output: make exits matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(tmp_path / "tiny.pt", model)
    (tmp_path / "space.yaml").write_text(
        "version: 1\narch: dit\ndepth: 4\nintervals: 5\nedges: uniform\n"
        "blocks: {min: 1, max: null}\nmonotone: true\nseeds: [full, D4]\n")
    out = tmp_path / "reports" / "search_efficiency.md"
    argv = ["--checkpoint", str(tmp_path / "tiny.pt"), "--space", str(tmp_path / "space.yaml"),
            "--budget", "12", "--repeats", "1", "--algos", "gp", "random", "--n", "16",
            "--steps", "2", "--batch-size", "16", "--latency-batch", "4",
            "--finetune-steps", "0", "--threads", "1", "--no-progress",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    params = bench.Params(budget=12, repeats=1, algos=("gp", "random"))
    first = bench.analysis(run(bench.BENCHMARK, argv).cells, params)
    data = json.loads(out.with_suffix(".json").read_text())["cells"]
    for key in params.study_keys():
        done = [t for t in data[key]["trials"] if t["state"] == "COMPLETE"]
        assert len(done) == 12 and [t["seed"] for t in done[:2]] == ["full", "D4"]
    curves = first["result"]["curves"]
    assert all(len(c) == 12 and c == sorted(c) for c in curves.values())
    html = out.with_suffix(".html").read_text()
    assert html.count("plotly.js v") == 1  # offline: plotly.js inlined once, shared
    assert html.count('class="plotly-graph-div"') == 2
    assert "Verdict" in out.read_text()
    # Every cell again: every schedule comes from the memo, and the studies replay alike.
    second = run(bench.BENCHMARK, [*argv, "--fresh"]).cells
    assert sum(second[key]["new_evaluations"] for key in params.study_keys()) == 0
    assert bench.analysis(second, params)["result"]["curves"] == first["result"]["curves"]
