"""The shipped testbed models: small, loadable weights-only, the registry's shapes, a model card."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ase_search.models import CheckpointError, create_model
from ase_search.testbed import TESTBEDS, load_model


@pytest.mark.parametrize("arch", sorted(TESTBEDS))
def test_shipped_testbed_loads_with_the_registry_shapes(arch: str) -> None:
    testbed = TESTBEDS[arch]
    assert testbed.path.stat().st_size < 10 * 2**20  # "each well under 10 MB"
    model = load_model(arch)
    reference = create_model(testbed.model_name)  # the registry entry the card names
    assert model.arch == arch and not model.training
    shipped = model.state_dict()
    assert {k: v.shape for k, v in shipped.items()} == {
        k: v.shape for k, v in reference.state_dict().items()}
    assert all(torch.isfinite(v.float()).all() for v in shipped.values())
    card = testbed.path.with_suffix(".md").read_text()
    for field in ("Steps done", "FID-MNIST", "Trained by", testbed.path.name):
        assert field in card
    assert testbed.space.is_file()
    # in a checkout the packaged space is the top-level search_spaces/ YAML itself, not a copy
    top_level = Path(__file__).resolve().parents[1] / "search_spaces" / f"{arch}.yaml"
    assert testbed.space.resolve() == top_level.resolve()


def test_load_model_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="arch must be one of"):
        load_model("unet")
    with pytest.raises(CheckpointError):
        load_model("dit", tmp_path / "missing.safetensors")
    # a U-ViT checkpoint is refused for --arch dit, naming the right one
    with pytest.raises(CheckpointError, match="pass --arch uvit"):
        load_model("dit", TESTBEDS["uvit"].path)
