"""The model registry: every entry builds, honours the shared model contract and rebuilds from config."""

from __future__ import annotations

import json

import pytest
import torch

from ase_search.models import ARCHS, MODELS, create_model


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_honours_the_contract(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
        clone = type(model)(**model.config)
    assert model.model_name == name
    assert model.arch in ARCHS and isinstance(model, ARCHS[model.arch])
    assert json.loads(json.dumps(model.config)) == model.config
    assert {k: tuple(v.shape) for k, v in clone.state_dict().items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }
    assert isinstance(model.exit_depth, int) and model.exit_depth >= 1
    assert isinstance(model.learn_sigma, bool) and isinstance(model.num_labels, int)
    assert model.null_class is None or model.null_class == model.num_labels
    assert model.in_channels >= 1 and model.input_size >= 1


@pytest.mark.parametrize("name", ["DiT-test", "U-ViT-test"])
def test_forward_contract_shapes(name: str) -> None:
    model = create_model(name).eval()
    x = torch.randn(3, model.in_channels, model.input_size, model.input_size)
    out = model(x, torch.tensor([0, 500, 999]), torch.tensor([0, 1, model.null_class]), n_blocks=1)
    c_out = 2 * model.in_channels if model.learn_sigma else model.in_channels
    assert out.shape == (3, c_out, model.input_size, model.input_size)


def test_create_model_overrides_and_errors() -> None:
    model = create_model("DiT-test", depth=2, num_classes=3)
    assert (model.exit_depth, model.num_labels, model.config["depth"]) == (2, 3, 2)
    with pytest.raises(ValueError, match="unknown model name 'DiT-Z'"):
        create_model("DiT-Z")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['img_size'\]"):
        create_model("DiT-test", img_size=32)
