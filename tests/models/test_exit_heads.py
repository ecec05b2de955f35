"""Exit heads (``exit_heads=True``): one output head per exit depth, started as the shared head.

References: the model without heads (heads switched on for trained weights compute what it
computed), a hand-written loop over one sample at a time that runs the blocks and picks the head
module ``exit_heads[str(k)]`` by name, and state dicts compared key by key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ase_search.models import CheckpointError, add_exit_heads, create_model, load_checkpoint, save_checkpoint
from ase_search.models.layers import unpatchify

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["DiT-test", "U-ViT-test"]


def trained(name: str, seed: int = 0) -> nn.Module:
    """A tiny float64 model with every weight non-zero (as after training: adaLN-Zero and the
    zero-initialised output layer would make every head compute zeros)."""
    torch.manual_seed(seed)
    model = create_model(name, class_dropout_prob=0.1).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def perturb_heads(model: nn.Module, seed: int = 1) -> None:
    """Make every exit head differ from the shared head and from each other."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.exit_heads.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def inputs(model: nn.Module, n: int = 6, seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model.in_channels, model.input_size, model.input_size, generator=gen,
                    dtype=torch.float64)
    t = torch.randint(0, 1000, (n,), generator=gen)
    y = torch.randint(0, model.num_labels, (n,), generator=gen)
    return x, t, y


def reference(model: nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
              k: int) -> torch.Tensor:
    """One sample batch through ``k`` exitable blocks and head ``k``, written out by hand."""
    full = k == model.exit_depth
    if model.arch == "dit":
        h, c = model.embed(x, t, y)
        for block in model.blocks[:k]:
            h = block(h, c)
        layer = model.final_layer if full else model.exit_heads[str(k)]
        shift, scale = layer.adaLN_modulation(c).chunk(2, dim=1)
        h = layer.norm_final(h) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
        return unpatchify(layer.linear(h), model.patch_size, model.out_channels)
    h, skips = model.encode(model.embed(x, t, y))
    for i, blk in enumerate(model.out_blocks):
        h = blk(h, skips.pop()) if i < k else blk.fuse(h, skips.pop())
    parts = model if full else model.exit_heads[str(k)]
    h = parts.decoder_pred(parts.norm(h))[:, model.extras:]
    return parts.final_layer(unpatchify(h, model.patch_size, model.in_chans))


@pytest.mark.parametrize("name", NAMES)
def test_heads_have_one_per_exit_depth_below_the_full_one(name: str) -> None:
    model = add_exit_heads(trained(name))
    assert sorted(model.exit_heads, key=int) == [str(k) for k in range(1, model.exit_depth)]
    assert model.config["exit_heads"] is True
    assert "exit_heads" not in create_model(name).config  # other models' configs stay as they were
    rebuilt = type(model)(**model.config)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize("name", NAMES)
def test_added_heads_compute_what_the_model_without_them_computes(name: str) -> None:
    model = trained(name)
    heads = add_exit_heads(model)
    x, t, y = inputs(model)
    with torch.no_grad():
        for k in [None, *range(1, model.exit_depth + 1)]:  # one count per batch: bit for bit
            assert torch.equal(heads(x, t, y, n_blocks=k), model(x, t, y, n_blocks=k)), k
        # A mixed batch runs each head on its own samples: equal up to the rounding of a
        # smaller matrix product.
        n = torch.tensor([1, 2, model.exit_depth, 1, model.exit_depth - 1, 2])
        torch.testing.assert_close(heads(x, t, y, n_blocks=n), model(x, t, y, n_blocks=n),
                                   rtol=1e-12, atol=1e-12)
    for key, value in model.state_dict().items():  # the starting weights are carried over
        assert torch.equal(heads.state_dict()[key], value), key
    assert not model.config.get("exit_heads")  # the source model is untouched ...
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # ... and shares no weights with the copy, which may be trained
        for p in heads.parameters():
            p.add_(1.0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(ValueError, match="exit heads already"):
        add_exit_heads(heads)


@pytest.mark.parametrize("name", NAMES)
def test_mixed_counts_apply_each_samples_own_head(name: str) -> None:
    model = add_exit_heads(trained(name))
    perturb_heads(model)
    x, t, y = inputs(model)
    n = torch.tensor([1, model.exit_depth, 2, 1, model.exit_depth - 1, model.exit_depth])
    with torch.no_grad():
        out = model(x, t, y, n_blocks=n)
        expected = torch.cat([reference(model, x[i:i + 1], t[i:i + 1], y[i:i + 1], int(n[i]))
                              for i in range(len(n))])
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
        # The heads differ, so picking the wrong one would show.
        other = reference(model, x[:1], t[:1], y[:1], 2)
        assert not torch.allclose(out[:1], other)


@pytest.mark.parametrize("name", NAMES)
def test_a_head_gets_gradient_only_from_the_samples_that_exit_there(name: str) -> None:
    model = add_exit_heads(trained(name))  # eval mode: no random label dropout between passes
    perturb_heads(model)
    x, t, y = inputs(model, n=4)
    n = torch.tensor([1, 2, 1, 2])  # nothing exits at 3 .. exit_depth
    model(x, t, y, n_blocks=n).square().sum().backward()

    def grad_norm(module: nn.Module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    assert grad_norm(model.exit_heads["1"]) > 0 and grad_norm(model.exit_heads["2"]) > 0
    for k in range(3, model.exit_depth):
        assert grad_norm(model.exit_heads[str(k)]) == 0
    shared = model.final_layer if model.arch == "dit" else nn.ModuleList(
        [model.norm, model.decoder_pred])
    assert grad_norm(shared) == 0

    # Head 1's gradient is the one of samples 0 and 2 run alone.
    grads = [p.grad.clone() for p in model.exit_heads["1"].parameters()]
    model.zero_grad()
    rows = torch.tensor([0, 2])
    model(x[rows], t[rows], y[rows], n_blocks=1).square().sum().backward()
    for got, want in zip(grads, (p.grad for p in model.exit_heads["1"].parameters())):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_reused_blocks_are_read_by_the_full_depths_head(name: str) -> None:
    """With block reuse the state past the count stands for the full depth's: the shared head
    reads it, whatever the exit heads hold."""
    from ase_search.models.layers import BlockReuse

    plain = trained(name)
    heads = add_exit_heads(plain)
    perturb_heads(heads)
    n = torch.tensor([1, 2, 1, 2, 1, 2])
    caches = BlockReuse(), BlockReuse()
    with torch.no_grad():
        for call, refresh in enumerate([True, False, False]):
            x, t, y = inputs(plain, seed=call)
            outs = []
            for model, cache in zip((plain, heads), caches):
                cache.refresh = refresh
                outs.append(model(x, t, y, n_blocks=n, reuse=cache))
            assert torch.equal(*outs), call
        # Without reuse the same counts go through the (perturbed) exit heads.
        assert not torch.allclose(heads(x, t, y, n_blocks=n), plain(x, t, y, n_blocks=n))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("name", NAMES)
def test_heads_are_saved_and_loaded_with_the_weights(tmp_path: Path, name: str, suffix: str) -> None:
    model = add_exit_heads(trained(name)).float()
    perturb_heads(model)
    path = save_checkpoint(tmp_path / f"heads{suffix}", model)
    loaded, meta = load_checkpoint(path)
    assert meta["config"]["exit_heads"] is True and loaded.exit_heads is not None
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x, t, y = inputs(model)
    n = torch.tensor([1, 2, model.exit_depth, 1, 2, 1])
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x.float(), t, y, n_blocks=n),
                           model.eval()(x.float(), t, y, n_blocks=n))


def _rewrite(path: Path, out: Path, *, config: dict | None = None, drop: str | None = None) -> Path:
    """``path`` (an ase-search safetensors file) with its config edited or keys dropped."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    if config is not None:
        metadata["config"] = json.dumps(config)
    if drop is not None:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(drop)}
    save_file(tensors, str(out), metadata=metadata)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_head_keys_are_strict(tmp_path: Path, name: str) -> None:
    plain = trained(name).float()
    heads = add_exit_heads(plain)
    with_heads = save_checkpoint(tmp_path / "heads.safetensors", heads)

    # The config says exit heads, the weights lack them.
    missing = _rewrite(with_heads, tmp_path / "missing.safetensors", drop="model.exit_heads.")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(missing)
    message = str(err.value)
    assert "\n" not in message and "missing key(s)" in message
    assert "exit_heads.1." in message and "add_exit_heads" in message

    # Only one head is missing: listed alike.
    one = _rewrite(with_heads, tmp_path / "one.safetensors", drop="model.exit_heads.2.")
    with pytest.raises(CheckpointError, match=r"missing key\(s\): exit_heads\.2\."):
        load_checkpoint(one)

    # The weights have heads, the config does not.
    config = {k: v for k, v in heads.config.items() if k != "exit_heads"}
    unexpected = _rewrite(with_heads, tmp_path / "unexpected.safetensors", config=config)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(unexpected)
    message = str(err.value)
    assert "\n" not in message and "unexpected key(s)" in message and "exit_heads=True" in message


@pytest.mark.parametrize("name", NAMES)
def test_official_layout_loads_without_heads_and_heads_can_be_added(tmp_path: Path, name: str) -> None:
    plain = trained(name).float()
    path = tmp_path / "official.pth"
    torch.save(plain.state_dict(), path)  # a bare state dict with the official key names
    assert not any(k.startswith("exit_heads") for k in plain.state_dict())
    loaded, meta = load_checkpoint(path, model_name=name)
    assert meta["source"] == "state_dict" and loaded.exit_heads is None
    with pytest.raises(CheckpointError, match="add_exit_heads"):
        load_checkpoint(path, model_name=name, model_kwargs={"exit_heads": True})
    heads = add_exit_heads(loaded.eval())
    x, t, y = inputs(plain)
    with torch.no_grad():
        assert torch.equal(heads(x.float(), t, y, n_blocks=1), plain.eval()(x.float(), t, y, n_blocks=1))


def test_exit_heads_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="exit_heads must be true or false"):
        create_model("DiT-test", exit_heads="yes")
    with pytest.raises(ValueError, match="exit_heads must be true or false"):
        create_model("U-ViT-test", exit_heads=1)


def test_a_dit_with_heads_does_not_convert_to_diffusers() -> None:
    """DiTTransformer2DModel has one output layer: converting would drop the heads silently."""
    pytest.importorskip("diffusers")
    from ase_search.integrations.diffusers import dit_to_diffusers

    with pytest.raises(ValueError, match="exit heads"):
        dit_to_diffusers(add_exit_heads(trained("DiT-test")))
