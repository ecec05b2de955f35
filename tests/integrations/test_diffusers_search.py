"""``ase-search run --diffusers``: a training-free joint search of a diffusers DiT through the
exit-schedule hooks, with the real engine (Ray Tune workers, an Optuna sqlite study, the CLI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ase_search.integrations.diffusers import (
    export_dit,
    load_scheduler,
    load_transformer,
    sample_diffusers,
    transformer_fingerprint,
)
from ase_search.record import point_records

pytestmark = pytest.mark.usefixtures("one_thread")
ASE = str(Path(sys.executable).with_name("ase-search"))
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ASE_SEARCH_THREADS": "1",
       "PATH": "/usr/bin:/bin"}
REFERENCE = ("ddim", 4)

SPACE = """\
version: 1
description: two intervals, joint over DDIM and DPM-Solver++ at 2-4 steps
arch: dit
depth: 4
intervals: 2
edges: uniform
blocks: {min: 1, max: null}
monotone: true
seeds: [full]
sampling:
  samplers: [ddim, dpm-solver]
  steps: {min: 2, max: 4}
  steps_only: [2, 4]
  reference: {sampler: %s, steps: %d}
""" % REFERENCE


def _tiny_dit():
    """A random 4-block DiT on 28x28 grey images (what the FID classifier reads)."""
    from ase_search.models.dit import DiT

    torch.manual_seed(0)
    model = DiT(input_size=28, patch_size=7, in_channels=1, hidden_size=32, depth=4, num_heads=2,
                num_classes=10, class_dropout_prob=0.1, learn_sigma=True)
    with torch.no_grad():  # adaLN-Zero starts every block as the identity: make them all count
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("diffusers") / "tiny"
    export_dit(_tiny_dit(), out, source="test")
    return out


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ASE, *args], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=600)


def _one_error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _calls(name: str, steps: int) -> list[int]:
    """The model-call timesteps, by the formulas (T = 1000): DDIM leading ``i * (T // k)``,
    DPM-Solver++ ``round(linspace(0, T - 1, k + 1))`` descending without its 0."""
    if name == "ddim":
        return [i * (1000 // steps) for i in reversed(range(steps))]
    return [round(999 * i / steps) for i in range(steps, 0, -1)]


def _count(schedule: dict, timestep: int) -> int:
    t, edges = timestep / 1000, schedule["boundaries"]
    for i, blocks in enumerate(schedule["blocks"]):
        if edges[i] <= t < edges[i + 1] or (i == len(schedule["blocks"]) - 1 and t <= 1):
            return blocks
    raise AssertionError(t)


@pytest.fixture(scope="module")
def study(folder, tmp_path_factory):
    import optuna

    work = tmp_path_factory.mktemp("study")
    (work / "space.yaml").write_text(SPACE)
    run = _cli("run", "--diffusers", str(folder), "--space", "space.yaml", "--budget", "2",
               "--n-samples", "16", "--fid-data", "self",
               "--storage", "d.db", "--study-name", "d", cwd=work)
    assert run.returncode == 0, run.stderr[-3000:]
    return work, optuna.load_study(study_name="d", storage=f"sqlite:///{work / 'd.db'}")


def test_search_runs_training_free_through_the_hooks(study):
    work, s = study
    from optuna.trial import TrialState

    complete = s.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 2
    assert s.user_attrs["config"]["finetune"] == "none"  # --diffusers: no fine-tune by default
    assert s.user_attrs["identity"]["diffusers_fingerprint"]
    assert (work / "d-grids").is_dir() and (work / "d-self").is_dir()


def test_latency_and_block_counts_follow_the_scheduler_calls(study):
    """Every measured point's latency is the cost model's sum over the diffusers scheduler's
    calls at each call's block count, counted here from the formulas, not the library."""
    _, s = study
    cost = s.user_attrs["cost_model"]
    points = [t.user_attrs for t in s.trials if "latency" in t.user_attrs]
    points += [v for k, v in point_records(s).items() if k.startswith("steps_only:")]
    assert len(points) == 2 + 4
    for p in points:
        calls = _calls(p["sampler"]["name"], p["sampler"]["steps"])
        counts = [_count(p["schedule"], s_) for s_ in calls]
        assert p["block_evals"] == sum(counts)
        expected = sum(cost["fixed"] + c * cost["block"] for c in counts)
        assert p["latency"] == pytest.approx(expected, rel=1e-9)
        assert p["fid"] >= 0 and p["paired_rmse"] >= 0


def test_self_reference_is_the_full_model_at_the_reference_configuration(study, folder):
    """Against the self reference, the full model at the reference configuration has paired
    distance 0 and the FID between two of its own draws (recomputed here from samples drawn
    here); fewer steps have both above 0."""
    from ase_search.measure import fid_images
    from ase_search.metrics.fid import compute_fid
    from ase_search.measure import SELF_REFERENCE_SEED

    work, s = study
    attrs = point_records(s)
    ref = attrs[f"steps_only:{REFERENCE[0]}-{REFERENCE[1]}/full"]
    transformer, scheduler = load_transformer(folder), load_scheduler(folder, "ddim")
    draws = {seed: sample_diffusers(transformer, scheduler, n=16, steps=REFERENCE[1], seed=seed,
                                    batch_size=16).images for seed in (0, SELF_REFERENCE_SEED)}
    floor = compute_fid(fid_images(draws[0], None),
                        reference=fid_images(draws[SELF_REFERENCE_SEED], None))["fid"]
    assert ref["paired_rmse"] == 0.0 and floor > 0
    assert ref["fid"] == pytest.approx(floor, rel=1e-6)
    assert ref["acceleration"] == pytest.approx(0.0)
    fewer = attrs["steps_only:ddim-2/full"]
    assert fewer["paired_rmse"] > 0 and fewer["fid"] > 0
    assert fewer["acceleration"] == pytest.approx(1 - fewer["latency"] / ref["latency"])
    cached = {int(p.stem.rpartition("seed")[2]): p for p in (work / "d-self").glob("*.pt")}
    assert set(cached) == {0, SELF_REFERENCE_SEED}
    for seed, path in cached.items():
        torch.testing.assert_close(torch.load(path, weights_only=True), draws[seed],
                                   rtol=0, atol=0)


def test_resume_with_other_weights_in_the_folder_is_refused(study, folder, tmp_path, cli,
                                                           monkeypatch):
    """The study records what the folder holds: new weights under the same path are caught."""
    import shutil

    import optuna
    from safetensors.torch import load_file, save_file

    work, s = study
    before = len(s.trials)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert transformer_fingerprint(copy) == transformer_fingerprint(folder)  # a copy is a copy
    moved = tmp_path / "study"  # the study as it is, so the test's own stays untouched
    shutil.copytree(work, moved)
    weights = folder / "diffusion_pytorch_model.safetensors"
    original = weights.read_bytes()
    try:
        state = load_file(weights)
        name = next(iter(state))
        state[name] = state[name] + 1.0
        save_file(state, weights)
        assert transformer_fingerprint(folder) != transformer_fingerprint(copy)
        monkeypatch.chdir(moved)  # the CLI in-process: refused before Ray starts
        code, _, err = cli(["run", "--diffusers", str(folder), "--space", "space.yaml",
                            "--budget", "4", "--n-samples", "16", "--fid-data", "self",
                            "--storage", "d.db", "--study-name", "d"])
    finally:
        weights.write_bytes(original)
    line = _one_error_line(code, err)
    assert "other settings" in line and "diffusers_fingerprint" in line
    assert "'diffusers':" not in line  # the path is the same; only what it holds changed
    stored = optuna.load_study(study_name="d", storage=f"sqlite:///{moved / 'd.db'}")
    assert len(stored.trials) == before


@pytest.mark.parametrize("args, words", [
    (["--diffusers", "no-such-folder"], ["--diffusers", "not a folder"]),
    (["--fid-data", "self", "--vae", "no-such-vae"], ["--fid-data", "latent models"]),
])
def test_bad_diffusers_runs_are_one_line(tmp_path, cli, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    line = _one_error_line(*cli(["run", *args, "--storage", "x.db"])[::2])
    for word in words:
        assert word in line, line
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("settings, field, words", [
    ({"finetune": "one-shot"}, "finetune", ["training-free"]),
    ({"arch": "uvit"}, "arch", ["use arch dit"]),
    ({"sampler": "euler-maruyama"}, "sampler", ["ddim, ddpm, dpm-solver"]),
    ({"checkpoint": "x.pt"}, "checkpoint", ["one of them"]),
])
def test_settings_a_diffusers_search_cannot_take(folder, settings, field, words):
    """Each refusal names its field (the CLI says it as the flag, as for every SearchError)."""
    from ase_search.search import SearchConfig, SearchError

    with pytest.raises(SearchError) as err:
        SearchConfig(diffusers=str(folder), **{"finetune": "none", **settings})
    assert err.value.fields == (field,)
    assert str(err.value).startswith(field)
    for word in words:
        assert word in str(err.value)


def test_pareto_judges_a_self_referenced_study(study, cli):
    """The verdict's quality window needs the reference's FID above 0: the noise floor is. The
    study holds the search's one seed, so pareto says what the verdict still needs."""
    import re

    work, _ = study
    code, out, err = cli(["pareto", str(work / "d.db"), "--no-report"])
    assert code == 0, err
    text = " ".join(out.split())
    assert "steps-only" in text and "no verdict yet" in text and "fresh seeds" in text
    reference = re.search(r"reference: full model \(starting weights\), \S+: FID ([0-9.]+)", text)
    assert reference is not None and float(reference.group(1)) > 0


def test_self_fid_reads_mnist_features_only_for_mnist_shaped_models(folder, tmp_path):
    """The testbed's 1 x 28 x 28 samples go through the MNIST classifier; an RGB model's own
    samples through Inception (which needs --fid-weights)."""
    import json

    from ase_search.cli.diffusers import fid_extractor

    assert fid_extractor("self", folder) == "mnist-classifier"
    rgb = tmp_path / "rgb" / "transformer"
    rgb.mkdir(parents=True)
    config = json.loads((folder / "config.json").read_text())
    (rgb / "config.json").write_text(json.dumps({**config, "in_channels": 3}))
    assert fid_extractor("self", rgb.parent) == "inception-v3-compat"
    assert fid_extractor("mnist", rgb.parent) == "mnist-classifier"
