"""``ase-search timesteps`` and ``--timesteps FILE`` through the console entry point."""

from __future__ import annotations

import json

import pytest
import torch

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


@pytest.mark.parametrize("argv, message", [
    (["timesteps", "--steps", "5-3"], "is not a range"),
    (["timesteps", "--steps", "x"], "--steps takes a step count"),
    (["timesteps", "--steps", "5", "--grid", "3"], "--grid 3 must be at least"),
    (["timesteps", "-o", "ts.yaml"], "--out must be a .json"),
    (["timesteps", "--sampler", "ddpm"], "--sampler must be ddim or dpm-solver"),
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
