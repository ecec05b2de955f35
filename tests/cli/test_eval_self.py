"""``ase-search eval --fid-data self`` on a native model: data-free, against the same model's
full-depth samples at the same sampler."""

from __future__ import annotations

import json

import pytest


def test_eval_against_the_full_models_own_samples(cli, tmp_path) -> None:
    import torch

    from ase_search.measure import SELF_REFERENCE_SEED, fid_images
    from ase_search.metrics.fid import compute_fid
    from ase_search.samplers import SamplerConfig, sample
    from ase_search.testbed import load_model

    out = {}
    for name in ("full", "D4"):
        code, _, err = cli(["eval", "--schedule", name, "--fid-data", "self", "--n", "16",
                            "--steps", "2", "--json", str(tmp_path / f"{name}.json"),
                            "--grid", str(tmp_path / f"{name}.png")])
        assert code == 0, err
        out[name] = json.loads((tmp_path / f"{name}.json").read_text())["per_seed"][0]
    assert out["full"]["paired_rmse"] == 0.0  # the full model against itself, seed by seed
    assert out["D4"]["paired_rmse"] > 0.0
    model = load_model("dit")
    with torch.no_grad():
        draws = {s: sample(model, sampler=SamplerConfig("ddim", 2), n=16, seed=s).images
                 for s in (0, SELF_REFERENCE_SEED)}
    want = compute_fid(fid_images(draws[0], None),
                       reference=fid_images(draws[SELF_REFERENCE_SEED], None))["fid"]
    assert out["full"]["fid"] == pytest.approx(want, rel=1e-6)
