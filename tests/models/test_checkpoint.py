"""Checkpoints: round trips, official key layouts, refusal of pickled objects, key mismatch reports."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ase_search.models import CheckpointError, create_model, load_checkpoint, save_checkpoint
from ase_search.models.checkpoint import export_weights, load_state_dict_file
from ase_search.models.layers import MAX_PARAMETERS

# Official parameter names, typed in from facebookresearch/DiT models.py and baofff/U-ViT
# libs/uvit.py (timm Attention/Mlp inside the blocks), with their shapes as functions of the config.
DIT_OFFICIAL = {
    "x_embedder.proj.weight": lambda d: (d.D, d.C, d.p, d.p),
    "x_embedder.proj.bias": lambda d: (d.D,),
    "t_embedder.mlp.0.weight": lambda d: (d.D, 256),
    "t_embedder.mlp.0.bias": lambda d: (d.D,),
    "t_embedder.mlp.2.weight": lambda d: (d.D, d.D),
    "t_embedder.mlp.2.bias": lambda d: (d.D,),
    "y_embedder.embedding_table.weight": lambda d: (d.K + 1, d.D),  # + the CFG null row
    "pos_embed": lambda d: (1, d.T, d.D),
    "blocks.{i}.attn.qkv.weight": lambda d: (3 * d.D, d.D),
    "blocks.{i}.attn.qkv.bias": lambda d: (3 * d.D,),
    "blocks.{i}.attn.proj.weight": lambda d: (d.D, d.D),
    "blocks.{i}.attn.proj.bias": lambda d: (d.D,),
    "blocks.{i}.mlp.fc1.weight": lambda d: (4 * d.D, d.D),
    "blocks.{i}.mlp.fc1.bias": lambda d: (4 * d.D,),
    "blocks.{i}.mlp.fc2.weight": lambda d: (d.D, 4 * d.D),
    "blocks.{i}.mlp.fc2.bias": lambda d: (d.D,),
    "blocks.{i}.adaLN_modulation.1.weight": lambda d: (6 * d.D, d.D),
    "blocks.{i}.adaLN_modulation.1.bias": lambda d: (6 * d.D,),
    "final_layer.linear.weight": lambda d: (d.p * d.p * 2 * d.C, d.D),  # learn_sigma: 2C outputs
    "final_layer.linear.bias": lambda d: (d.p * d.p * 2 * d.C,),
    "final_layer.adaLN_modulation.1.weight": lambda d: (2 * d.D, d.D),
    "final_layer.adaLN_modulation.1.bias": lambda d: (2 * d.D,),
}
_UVIT_BLOCK = {
    "norm1.weight": lambda d: (d.D,),
    "norm1.bias": lambda d: (d.D,),
    "attn.qkv.weight": lambda d: (3 * d.D, d.D),
    "attn.proj.weight": lambda d: (d.D, d.D),
    "attn.proj.bias": lambda d: (d.D,),
    "norm2.weight": lambda d: (d.D,),
    "norm2.bias": lambda d: (d.D,),
    "mlp.fc1.weight": lambda d: (d.M, d.D),
    "mlp.fc1.bias": lambda d: (d.M,),
    "mlp.fc2.weight": lambda d: (d.D, d.M),
    "mlp.fc2.bias": lambda d: (d.D,),
}
UVIT_OFFICIAL = {
    "patch_embed.proj.weight": lambda d: (d.D, d.C, d.p, d.p),
    "patch_embed.proj.bias": lambda d: (d.D,),
    "time_embed.0.weight": lambda d: (4 * d.D, d.D),  # only with mlp_time_embed
    "time_embed.0.bias": lambda d: (4 * d.D,),
    "time_embed.2.weight": lambda d: (d.D, 4 * d.D),
    "time_embed.2.bias": lambda d: (d.D,),
    "label_emb.weight": lambda d: (d.K, d.D),  # only when num_classes > 0 (K counts the null label)
    "pos_embed": lambda d: (1, d.E + d.T, d.D),  # E extra tokens: [label,] time
    **{f"in_blocks.{{i}}.{k}": v for k, v in _UVIT_BLOCK.items()},
    **{f"mid_block.{k}": v for k, v in _UVIT_BLOCK.items()},
    **{f"out_blocks.{{i}}.{k}": v for k, v in _UVIT_BLOCK.items()},
    "out_blocks.{i}.skip_linear.weight": lambda d: (d.D, 2 * d.D),
    "out_blocks.{i}.skip_linear.bias": lambda d: (d.D,),
    "norm.weight": lambda d: (d.D,),
    "norm.bias": lambda d: (d.D,),
    "decoder_pred.weight": lambda d: (d.p * d.p * d.C, d.D),
    "decoder_pred.bias": lambda d: (d.p * d.p * d.C,),
    "final_layer.weight": lambda d: (d.C, d.C, 3, 3),
    "final_layer.bias": lambda d: (d.C,),
}


def official_shapes(patterns: dict, depth: int, skip: tuple[str, ...] = (), **dims: int) -> dict:
    d = SimpleNamespace(**dims)
    shapes = {}
    for pattern, shape in patterns.items():
        if pattern.startswith(skip):
            continue
        for i in range(depth) if "{i}" in pattern else [None]:
            shapes[pattern.format(i=i)] = shape(d)
    return shapes


def dit_test_shapes() -> dict[str, tuple[int, ...]]:
    # DiT-test: input 8 (16 tokens), patch 2, C 2, D 32, depth 4, 5 classes, learn_sigma.
    return official_shapes(DIT_OFFICIAL, 4, D=32, C=2, p=2, K=5, T=16)


def uvit_test_shapes() -> dict[str, tuple[int, ...]]:
    # U-ViT-test: img 8, patch 2, C 2, D 32, 3+1+3 blocks, mlp_ratio 2, qkv_bias, mlp_time_embed, 6 labels.
    shapes = official_shapes(UVIT_OFFICIAL, 3, D=32, C=2, p=2, K=6, E=2, T=16, M=64)
    for prefix in [f"in_blocks.{i}" for i in range(3)] + ["mid_block"] + [f"out_blocks.{i}" for i in range(3)]:
        shapes[f"{prefix}.attn.qkv.bias"] = (96,)  # qkv_bias=True in this config
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


# --- official layouts ---


def test_dit_xl2_state_dict_has_official_keys() -> None:
    with torch.device("meta"):
        model = create_model("DiT-XL/2")
    expected = official_shapes(DIT_OFFICIAL, 28, D=1152, C=4, p=2, K=1000, T=256)
    assert len(expected) == 292
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


def test_uvit_s4_state_dict_has_official_keys() -> None:
    with torch.device("meta"):
        model = create_model("U-ViT-S/4")
    expected = official_shapes(UVIT_OFFICIAL, 6, skip=("time_embed", "label_emb"), D=512, C=3, p=4, E=1, T=256, M=2048)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected


@pytest.mark.parametrize("name, shapes", [("DiT-test", dit_test_shapes), ("U-ViT-test", uvit_test_shapes)])
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_bare_official_state_dict_loads_strictly(tmp_path: Path, name: str, shapes, suffix: str) -> None:
    state = random_state(shapes())
    path = tmp_path / f"official{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    model, meta = load_checkpoint(path, model_name=name)
    assert meta["source"] == "state_dict" and meta["weights"] == "model" and meta["model_name"] == name
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert all(p.device.type == "cpu" for p in model.parameters())
    x = torch.randn(2, model.in_channels, model.input_size, model.input_size)
    model(x, torch.tensor([3, 700]), torch.tensor([0, 1])).sum().backward()  # usable and trainable
    if name == "DiT-test":
        assert model.pos_embed.requires_grad is False and model.blocks[0].attn.qkv.weight.grad is not None


def test_official_training_dict_prefers_ema(tmp_path: Path) -> None:
    raw, ema = random_state(dit_test_shapes(), 0), random_state(dit_test_shapes(), 1)
    path = tmp_path / "0010000.pt"
    torch.save({"model": raw, "ema": ema, "opt": {"state": {}, "param_groups": []}}, path)
    model, meta = load_checkpoint(path, model_name="DiT-test")
    assert meta["source"] == "official-train" and meta["weights"] == "ema"
    assert torch.equal(model.pos_embed, ema["pos_embed"])
    model, meta = load_checkpoint(path, model_name="DiT-test", ema=False)
    assert meta["weights"] == "model" and torch.equal(model.pos_embed, raw["pos_embed"])


def test_official_dit_weights_guide_three_channels_as_the_official_code(tmp_path: Path) -> None:
    """A 4-channel (latent) DiT from an official layout gets cfg_channels=3 (the official
    forward_with_cfg), which its config keeps; every other model guides all its channels."""
    dit4 = random_state(official_shapes(DIT_OFFICIAL, 4, D=32, C=4, p=2, K=5, T=16))
    torch.save(dit4, tmp_path / "bare.pt")
    torch.save({"model": dit4, "ema": dit4}, tmp_path / "train.pt")
    torch.save(random_state(dit_test_shapes()), tmp_path / "dit2.pt")
    torch.save(random_state(uvit_test_shapes()), tmp_path / "uvit.pt")
    four = {"in_channels": 4}
    for name in ("bare.pt", "train.pt"):
        model, meta = load_checkpoint(tmp_path / name, model_name="DiT-test", model_kwargs=four)
        assert model.cfg_channels == 3 and meta["config"]["cfg_channels"] == 3
    model, _ = load_checkpoint(tmp_path / "bare.pt", model_name="DiT-test",
                               model_kwargs={**four, "cfg_channels": None})
    assert model.cfg_channels is None  # an explicit override wins
    # Saved again (as export-weights does), the config carries it.
    model, _ = load_checkpoint(tmp_path / "bare.pt", model_name="DiT-test", model_kwargs=four)
    save_checkpoint(tmp_path / "converted.safetensors", model)
    assert load_checkpoint(tmp_path / "converted.safetensors")[0].cfg_channels == 3
    model, _ = load_checkpoint(tmp_path / "dit2.pt", model_name="DiT-test")
    assert model.cfg_channels is None  # the official code builds only 4-channel latent DiTs
    model, _ = load_checkpoint(tmp_path / "uvit.pt", model_name="U-ViT-test")
    assert model.cfg_channels is None
    # An ase-search checkpoint keeps whatever its config says (absent: all channels).
    save_checkpoint(tmp_path / "own.pt", create_model("DiT-test", in_channels=4))
    assert load_checkpoint(tmp_path / "own.pt")[0].cfg_channels is None


def test_bare_state_dict_needs_model_name(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    state = random_state(dit_test_shapes())
    torch.save(state, path)
    # The advice names what the commands accept (they take no model name): a conversion.
    with pytest.raises(CheckpointError, match="ase-search export-weights .* --model NAME"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="unknown model_name"):
        load_checkpoint(path, model_name="DiT-Z")
    # Following the advice gives a checkpoint that loads without a name, with the same weights.
    out = export_weights(path, tmp_path / "w.safetensors", half=False, model_name="DiT-test")
    model, meta = load_checkpoint(out)
    assert model.model_name == "DiT-test"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"depth": 1_000_000}, "depth must be at most 1024"),
        ({"hidden_size": 4_000_000, "num_heads": 1}, "describes about .* parameters, more than the 1e"),
        ({"input_size": 2**20, "patch_size": 1}, "parameters, more than"),
        ({"mlp_ratio": 1e30}, "parameters, more than"),
    ],
)
def test_oversized_config_is_refused_before_building(tmp_path: Path, override, message) -> None:
    path = tmp_path / "huge.safetensors"
    save_checkpoint(path, create_model("DiT-test"))
    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    metadata["config"] = json.dumps({**json.loads(metadata["config"]), **override})
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=f"cannot build a dit model: .*{message}"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["DiT-XL/2", "U-ViT-L/4"])
def test_largest_registry_models_are_within_the_size_limits(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) < MAX_PARAMETERS


# --- ase-search round trips ---


def _trained(name: str) -> torch.nn.Module:
    model = create_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", ["DiT-test", "U-ViT-test"])
def test_pt_round_trip_with_ema_optimizer_and_extra(tmp_path: Path, name: str) -> None:
    model = _trained(name)
    ema = {k: v + 1 for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(2, model.in_channels, model.input_size, model.input_size)
    model(x, torch.tensor([1, 2]), torch.tensor([0, 1])).sum().backward()
    opt.step()
    extra = {"step": 7, "schedule": {"blocks": [4, 3], "boundaries": [0.0, 0.5, 1.0]}}
    path = save_checkpoint(
        tmp_path / "sub" / "ckpt.pt", model, ema_state=ema, optimizer_state=opt.state_dict(), extra=extra
    )
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "ase-search/1" and raw["model_name"] == name and raw["config"] == model.config

    loaded, meta = load_checkpoint(path)
    assert type(loaded) is type(model) and loaded.config == model.config and loaded.model_name == name
    assert meta["weights"] == "ema" and meta["step"] == 7 and meta["schedule"] == extra["schedule"]
    assert meta["source"] == "ase-search" and meta["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in ema.items())
    plain, meta = load_checkpoint(path, ema=False)
    assert meta["weights"] == "model"
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in model.state_dict().items())
    opt2 = torch.optim.AdamW(plain.parameters(), lr=1e-3)
    opt2.load_state_dict(meta["optimizer"])  # the optimizer state resumes


def test_safetensors_round_trip(tmp_path: Path) -> None:
    model = _trained("U-ViT-test")
    ema = {k: v * 2 for k, v in model.state_dict().items()}
    path = save_checkpoint(tmp_path / "m.safetensors", model, ema_state=ema, extra={"step": 3, "note": "x"})
    loaded, meta = load_checkpoint(path)
    assert loaded.config == model.config and meta["step"] == 3 and meta["note"] == "x"
    assert meta["weights"] == "ema" and all(torch.equal(loaded.state_dict()[k], v) for k, v in ema.items())
    plain, _ = load_checkpoint(path, ema=False)
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in model.state_dict().items())
    no_ema = save_checkpoint(tmp_path / "n.safetensors", model)
    _, meta = load_checkpoint(no_ema)
    assert meta["weights"] == "model"
    with pytest.raises(ValueError, match="optimizer_state cannot be stored"):
        save_checkpoint(tmp_path / "o.safetensors", model, optimizer_state={"state": {}})


# --- refusals and errors ---


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dit.pt"
    torch.save({"model": random_state(dit_test_shapes()), "args": argparse.Namespace(model="DiT-test")}, path)
    with pytest.raises(CheckpointError, match=r"refuses to unpickle.*argparse\.Namespace|argparse\.Namespace.*refuses"):
        load_checkpoint(path, model_name="DiT-test")
    whole = tmp_path / "module.pt"
    torch.save(create_model("DiT-test"), whole)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(whole, model_name="DiT-test")


def test_wrong_keys_are_listed(tmp_path: Path) -> None:
    state = random_state(dit_test_shapes())
    state["blocks.0.attn.in_proj.weight"] = state.pop("blocks.0.attn.qkv.weight")
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, model_name="DiT-test")
    msg = str(err.value)
    assert "1 missing key(s): blocks.0.attn.qkv.weight" in msg
    assert "1 unexpected key(s): blocks.0.attn.in_proj.weight" in msg

    many = {k: v for k, v in random_state(dit_test_shapes()).items() if not k.startswith("blocks.")}
    torch.save(many, path)
    with pytest.raises(CheckpointError, match=r"40 missing key\(s\): blocks\.0\.attn\.qkv\.weight, .*\(30 more\)"):
        load_checkpoint(path, model_name="DiT-test")


def test_shape_mismatch_is_listed(tmp_path: Path) -> None:
    path = tmp_path / "dit.pt"
    torch.save(random_state(dit_test_shapes()), path)
    mismatch = r"shape mismatch.*pos_embed \(checkpoint \(1, 16, 32\) vs model \(1, 64, 32\)\)"
    with pytest.raises(CheckpointError, match=mismatch):
        load_checkpoint(path, model_name="DiT-test", model_kwargs={"input_size": 16})
    model, _ = load_checkpoint(path, model_name="DiT-test", model_kwargs={"input_size": 8})
    assert model.input_size == 8


def test_missing_unreadable_and_misnamed_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not read"):
        load_checkpoint(bad, model_name="DiT-test")
    other = tmp_path / "w.bin"
    other.write_bytes(b"")
    with pytest.raises(CheckpointError, match="must end in one of"):
        load_state_dict_file(other)
    lst = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(CheckpointError, match="must hold a dict"):
        load_checkpoint(lst, model_name="DiT-test")


def test_save_validates_its_arguments(tmp_path: Path) -> None:
    model = create_model("DiT-test")
    with pytest.raises(ValueError, match="reserved keys"):
        save_checkpoint(tmp_path / "a.pt", model, extra={"model": 1})
    with pytest.raises(ValueError, match=r"extra\['args'\] is a Namespace"):
        save_checkpoint(tmp_path / "a.pt", model, extra={"args": argparse.Namespace()})
    with pytest.raises(ValueError, match="ema_state keys must match"):
        save_checkpoint(tmp_path / "a.pt", model, ema_state={"pos_embed": model.pos_embed})
    with pytest.raises(ValueError, match="path must end in"):
        save_checkpoint(tmp_path / "a.ckpt", model)
    with pytest.raises(ValueError, match="ase-search model"):
        save_checkpoint(tmp_path / "a.pt", torch.nn.Linear(2, 2))
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary files


def test_model_name_must_agree(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", create_model("DiT-test"))
    with pytest.raises(CheckpointError, match="holds a 'DiT-test' model, not 'DiT-T'"):
        load_checkpoint(path, model_name="DiT-T")
