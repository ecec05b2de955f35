"""``ase-search timesteps`` and ``--timesteps FILE`` through the console entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("solver", ["ddim", "dpm-solver"])
def test_searched_timesteps_sample_the_same_images_through_the_cli_and_python(tiny, tmp_path,
                                                                             cli, solver):
    from ase_search.images import save_grid
    from ase_search.samplers import SamplerConfig, sample
    from ase_search.testbed import load_model

    out = tmp_path / "ts.json"
    code, text, err = cli(["timesteps", "--checkpoint", str(tiny / "tiny.pt"), "--steps", "3",
                           "--grid", "8", "--n", "4", "--sampler", solver, "-o", str(out)])
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["sampler"] == solver and data["steps"] == 3 and data["cost"] <= data[
        "uniform_cost"] * (1 + 1e-6)
    assert f"{solver}-3: [" in text
    grid = tmp_path / "cli.png"
    code, text, err = cli(["sample", "--checkpoint", str(tiny / "tiny.pt"), "--timesteps", str(out),
                           "--n", "4", "-o", str(grid)])
    assert code == 0, err
    assert f"{solver}-3 at {','.join(map(str, data['timesteps']))}" in " ".join(text.split())
    model = load_model("dit", tiny / "tiny.pt")
    images = sample(model, sampler=SamplerConfig(solver, 3, timesteps=tuple(data["timesteps"])),
                    n=4, seed=0).images
    save_grid(images, tmp_path / "python.png")
    assert (tmp_path / "python.png").read_bytes() == grid.read_bytes()


def test_fid_searched_timesteps_are_the_best_measured_and_sample_as_measured(tiny, tmp_path,
                                                                           cli):
    """``--objective fid``: the file holds the trial of lowest FID on the selection seeds, never
    worse than the uniform spacing (the first trial), and its FID is what ``measure_schedule``
    gives those timesteps on those seeds."""
    from ase_search.measure import measure_schedule
    from ase_search.samplers import SamplerConfig
    from ase_search.testbed import load_model

    out = tmp_path / "ts.json"
    code, text, err = cli(["timesteps", "--checkpoint", str(tiny / "tiny.pt"), "--steps", "3",
                           "--objective", "fid", "--trials", "4", "--n", "16", "--seed", "7",
                           "-o", str(out)])
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["objective"] == "fid" and data["calibration"] == {"n": 16, "seed": 7}
    assert data["cost"] <= data["uniform_cost"]
    assert err.count("ddim-3 trial ") >= 2  # a line per measured trial
    model = load_model("dit", tiny / "tiny.pt")
    fids = []
    for ts in (data["timesteps"], [int(v) for v in SamplerConfig("ddim", 3).model_times()]):
        m = measure_schedule(model, None, sampler=SamplerConfig("ddim", 3, timesteps=tuple(ts)),
                             n=16, seeds=(7, 8), keep_images=0)
        fids.append(float(np.mean([row["fid"] for row in m.metrics])))
    assert fids == pytest.approx([data["cost"], data["uniform_cost"]], rel=1e-9)


@pytest.mark.parametrize("argv, message", [
    (["timesteps", "--steps", "5-3"], "is not a range"),
    (["timesteps", "--steps", "x"], "--steps takes a step count"),
    (["timesteps", "--steps", "5", "--grid", "3"], "--grid 3 must be at least"),
    (["timesteps", "-o", "ts.yaml"], "--out must be a .json"),
    (["timesteps", "--sampler", "ddpm"], "--sampler must be ddim or dpm-solver"),
    (["timesteps", "--objective", "lpips"], "--objective must be one of teacher, fid"),
    (["timesteps", "--objective", "fid", "--steps", "1"], "step counts >= 2"),
    (["timesteps", "--objective", "fid", "--fid-data", "nowhere"], "nowhere"),
    (["sample", "--timesteps", "missing.json"], "timesteps file not found"),
    (["sample", "--timesteps", "{bad}", "-o", "x.png"], "not an ase-search timesteps file"),
    (["sample", "--timesteps", "{good}", "--timestep-spacing", "linspace"], "contradict"),
])
def test_bad_timesteps_input_is_one_red_line(argv, message, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{}")
    (tmp_path / "good.json").write_text(json.dumps(
        {"format": "ase-search timesteps", "sampler": "ddim", "timesteps": [999, 500, 0]}))
    code, _, err = cli([a.format(bad="bad.json", good="good.json") for a in argv])
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "x.png").exists()
