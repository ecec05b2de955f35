"""DiT: official sizes, exits against a hand-written reference, per-sample exits, CFG and labels."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ase_search.models import DiT, create_model
from ase_search.models.dit import DiT_models


def tiny_dit(**overrides: object) -> DiT:
    """DiT-test in float64 with random weights (at init adaLN-Zero makes every block the identity).

    float64 keeps comparisons against the reference and between batch shapes tight.
    """
    torch.manual_seed(0)
    model = create_model("DiT-test", **overrides)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.double().eval()


def inputs(model: DiT, n: int = 4, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size = (n, model.in_channels, model.input_size, model.input_size)
    x = torch.randn(size, generator=gen, dtype=model.pos_embed.dtype)
    t = torch.rand(n, generator=gen) * 999
    y = torch.randint(0, model.num_labels, (n,), generator=gen)
    return x, t, y


# --- a plain re-derivation of the DiT math from the paper / official code, independent of dit.py ---


def ref_timestep(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    # The official embedding is float32 whatever the model dtype, frequencies from a float32 exp
    # (one ulp of a frequency moves cos(999 * f) by ~1e-4, so the spec's rounding is kept).
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1).double()


def ref_attention(attn: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    B, L, D = x.shape
    H = attn.num_heads
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).split(D, dim=-1)
    heads = []
    for h in range(H):
        sl = slice(h * D // H, (h + 1) * D // H)
        w = (q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(D // H)).softmax(-1)
        heads.append(w @ v[..., sl])
    return F.linear(torch.cat(heads, -1), attn.proj.weight, attn.proj.bias)


def ref_block(block: torch.nn.Module, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    mod = F.linear(F.silu(c), block.adaLN_modulation[1].weight, block.adaLN_modulation[1].bias)
    s1, sc1, g1, s2, sc2, g2 = mod.chunk(6, dim=1)
    ln = lambda z: F.layer_norm(z, z.shape[-1:], eps=1e-6)  # noqa: E731
    h = ln(x) * (1 + sc1[:, None]) + s1[:, None]
    x = x + g1[:, None] * ref_attention(block.attn, h)
    h = ln(x) * (1 + sc2[:, None]) + s2[:, None]
    mlp = block.mlp
    h = F.gelu(F.linear(h, mlp.fc1.weight, mlp.fc1.bias), approximate="tanh")
    h = F.linear(h, mlp.fc2.weight, mlp.fc2.bias)
    return x + g2[:, None] * h


def ref_dit(model: DiT, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Embed, run the first k blocks, then the final layer: the ASE exit of Figure 2 (left)."""
    p, C = model.patch_size, model.out_channels
    tokens = F.conv2d(x, model.x_embedder.proj.weight, model.x_embedder.proj.bias, stride=p)
    tokens = tokens.flatten(2).transpose(1, 2) + model.pos_embed
    te = model.t_embedder.mlp
    c = F.linear(F.silu(F.linear(ref_timestep(t), te[0].weight, te[0].bias)), te[2].weight, te[2].bias)
    c = c + model.y_embedder.embedding_table.weight[y]
    for i in range(k):
        tokens = ref_block(model.blocks[i], tokens, c)
    fl = model.final_layer
    shift, scale = F.linear(F.silu(c), fl.adaLN_modulation[1].weight, fl.adaLN_modulation[1].bias).chunk(2, dim=1)
    h = F.layer_norm(tokens, tokens.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
    h = F.linear(h, fl.linear.weight, fl.linear.bias)  # (N, T, p * p * C)
    g = model.input_size // p
    h = h.reshape(-1, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (N, C, g, p, g, p)
    return h.reshape(-1, C, g * p, g * p)


# --- sizes ---


def test_dit_xl2_has_official_parameter_count() -> None:
    # 675,129,632 parameters (pos_embed included) and 292 tensors: the count the official train.py
    # prints for DiT-XL/2 at 256x256 (input_size 32).
    with torch.device("meta"):
        model = create_model("DiT-XL/2")
    assert sum(p.numel() for p in model.parameters()) == 675_129_632
    assert len(model.state_dict()) == 292


@pytest.mark.parametrize(
    "name, millions", [("DiT-S/2", 33), ("DiT-B/2", 130), ("DiT-L/2", 458), ("DiT-XL/2", 675)]
)
def test_dit_sizes_match_paper_table(name: str, millions: int) -> None:
    # DiT paper, Table 4: parameter counts in millions.
    with torch.device("meta"):
        model = create_model(name)
    # The paper counts trainable parameters (the frozen sin-cos pos_embed excluded).
    assert round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6) == millions


def test_registry_has_official_grid() -> None:
    expected = {f"DiT-{s}/{p}" for s in ("XL", "L", "B", "S") for p in (2, 4, 8)}
    assert expected | {"DiT-T", "DiT-test"} == set(DiT_models)


def test_dit_t_testbed_shape() -> None:
    model = create_model("DiT-T")
    assert (model.input_size, model.patch_size, model.in_channels, model.exit_depth) == (28, 7, 1, 12)
    assert model.x_embedder.num_patches == 16
    assert (model.num_labels, model.null_class, model.learn_sigma, model.out_channels) == (10, 10, True, 2)
    assert model.y_embedder.embedding_table.num_embeddings == 11
    assert model.pos_embed.requires_grad is False and "pos_embed" in model.state_dict()
    assert json.loads(json.dumps(model.config)) == model.config


def test_adaln_zero_init_outputs_zero() -> None:
    model = create_model("DiT-test").eval()
    x, t, y = inputs(model)
    assert torch.count_nonzero(model(x, t, y)) == 0


# --- exits ---


def test_full_exit_equals_full_forward_exactly() -> None:
    model = tiny_dit()
    x, t, y = inputs(model)
    full = model(x, t, y)
    assert torch.equal(model(x, t, y, n_blocks=model.exit_depth), full)
    assert torch.equal(model(x, t, y, n_blocks=torch.full((4,), model.exit_depth)), full)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_exit_matches_reference(k: int) -> None:
    model = tiny_dit()
    x, t, y = inputs(model)
    out = model(x, t, y, n_blocks=k)
    torch.testing.assert_close(out, ref_dit(model, x, t, y, k), atol=1e-9, rtol=1e-9)
    if k < model.exit_depth:
        assert not torch.allclose(out, model(x, t, y), atol=1e-2)


def test_exit_equals_module_composition_exactly() -> None:
    model = tiny_dit()
    x, t, y = inputs(model)
    with torch.no_grad():
        c = model.t_embedder(t) + model.y_embedder(y, False)
        h = model.x_embedder(x) + model.pos_embed
        for block in model.blocks[:2]:
            h = block(h, c)
        expected = model.unpatchify(model.final_layer(h, c))
        assert torch.equal(model(x, t, y, n_blocks=2), expected)


@pytest.mark.parametrize("k", [1, 2, 4, None])
def test_parts_compose_to_forward_exactly(k: int | None) -> None:
    """embed, exit_blocks and head, put together by hand, are forward bit for bit."""
    model = tiny_dit()
    x, t, y = inputs(model)
    with torch.no_grad():
        h, c = model.embed(x, t, y)
        assert h.shape == (4, 16, 32) and c.shape == (4, 32)
        assert list(model.exit_blocks) == list(model.blocks) == model.transformer_blocks
        for block in model.exit_blocks[: model.exit_depth if k is None else k]:
            h = block(h, c)
        assert torch.equal(model.head(h, c), model(x, t, y, n_blocks=k))
    assert (model.grid_size, model.extras) == (4, 0)


def test_per_sample_exits_equal_running_each_sample_alone() -> None:
    model = tiny_dit()
    x, t, y = inputs(model)
    n = torch.tensor([1, 4, 2, 3])
    weights = torch.randn(4, model.out_channels, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    xb = x.clone().requires_grad_(True)
    out = model(xb, t, y, n_blocks=n)
    (out * weights).sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    xs = x.clone().requires_grad_(True)
    singles = []
    for i in range(4):
        o = model(xs[i : i + 1], t[i : i + 1], y[i : i + 1], n_blocks=int(n[i]))
        (o * weights[i : i + 1]).sum().backward()
        singles.append(o.detach())
    torch.testing.assert_close(out.detach(), torch.cat(singles), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(xb.grad, xs.grad, atol=1e-10, rtol=1e-10)
    for key, p in model.named_parameters():
        if key in grads:
            torch.testing.assert_close(grads[key], p.grad, atol=1e-10, rtol=1e-10, msg=key)
        else:
            assert p.grad is None or torch.count_nonzero(p.grad) == 0
    # The last block only ran for sample 1: its gradient comes from that sample alone.
    assert "blocks.3.attn.qkv.weight" in grads


def test_mixed_batch_runs_each_block_only_on_its_samples() -> None:
    model = tiny_dit()
    x, t, y = inputs(model)
    seen: list[int] = []
    hooks = [b.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[0])) for b in model.blocks]
    model(x, t, y, n_blocks=torch.tensor([1, 4, 2, 1]))
    for h in hooks:
        h.remove()
    assert seen == [4, 2, 1, 1]  # block i runs on the samples with n_blocks > i


@pytest.mark.parametrize("bad", [0, 5, torch.tensor([1, 2]), torch.tensor([1.0, 2.0, 3.0, 4.0])])
def test_bad_n_blocks_raise(bad: object) -> None:
    model = tiny_dit()
    with pytest.raises(ValueError, match="n_blocks"):
        model(*inputs(model), n_blocks=bad)


# --- inputs, labels, guidance ---


def test_timestep_may_be_float_or_long() -> None:
    model = tiny_dit()
    x, _, y = inputs(model)
    t = torch.tensor([0, 10, 500, 999])
    assert torch.equal(model(x, t, y), model(x, t.float(), y))


def test_bad_inputs_raise_value_error() -> None:
    model = tiny_dit()
    x, t, y = inputs(model)
    with pytest.raises(ValueError, match="x must have shape"):
        model(x[:, :1], t, y)
    with pytest.raises(ValueError, match="t must have shape"):
        model(x, t[:2], y)
    with pytest.raises(ValueError, match="y must hold labels"):
        model(x, t, torch.tensor([0, 1, 2, 6]))
    with pytest.raises(ValueError, match="integer class labels"):
        model(x, t, y.float())
    with pytest.raises(ValueError, match="patch_size"):
        DiT(input_size=9, patch_size=2)
    with pytest.raises(ValueError, match="class_dropout_prob"):
        DiT(class_dropout_prob=1.5)


def test_y_none_is_the_null_label() -> None:
    model = tiny_dit()
    x, t, _ = inputs(model)
    null = torch.full((4,), model.null_class)
    assert torch.equal(model(x, t), model(x, t, null))
    no_null = tiny_dit(class_dropout_prob=0.0)
    assert no_null.null_class is None and no_null.y_embedder.embedding_table.num_embeddings == 5
    with pytest.raises(ValueError, match="y is required"):
        no_null(x, t)


def test_training_label_dropout_uses_null_row() -> None:
    model = tiny_dit(class_dropout_prob=1.0)
    x, t, y = inputs(model)
    expected = model(x, t, torch.full((4,), model.null_class))
    model.train()
    assert torch.equal(model(x, t, y), expected)
    model.eval()
    assert not torch.allclose(model(x, t, y), expected)


def test_forward_with_cfg_matches_separate_passes() -> None:
    model = tiny_dit()
    x, t, y = inputs(model)
    half = x[:2]
    t2 = torch.cat([t[:2], t[:2]])
    y2 = torch.cat([y[:2], torch.full((2,), model.null_class)])
    out = model.forward_with_cfg(torch.cat([half, x[2:]]), t2, y2, cfg_scale=4.0, n_blocks=3)
    cond = model(half, t[:2], y[:2], n_blocks=3)
    uncond = model(half, t[:2], torch.full((2,), model.null_class), n_blocks=3)
    C = model.in_channels
    guided = uncond[:, :C] + 4.0 * (cond[:, :C] - uncond[:, :C])
    torch.testing.assert_close(out[:2, :C], guided, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out[2:, :C], guided, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out[:2, C:], cond[:, C:], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out[2:, C:], uncond[:, C:], atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError, match="even batch"):
        model.forward_with_cfg(x[:3], t[:3], y[:3], 2.0)


@pytest.mark.parametrize("cfg_channels", [None, 3])
def test_forward_with_cfg_guides_cfg_channels(cfg_channels: int | None) -> None:
    """Default: guidance on all in_channels; cfg_channels=3: the official DiT, which guides 3 of the
    4 latent channels and passes the 4th through from each half, as the variance channels."""
    model = tiny_dit(in_channels=4, cfg_channels=cfg_channels)
    x, t, y = inputs(model)
    null = torch.full((2,), model.null_class)
    out = model.forward_with_cfg(x, torch.cat([t[:2], t[:2]]), torch.cat([y[:2], null]), 2.5, n_blocks=3)
    cond = model(x[:2], t[:2], y[:2], n_blocks=3)  # (2, 8, 8, 8)
    uncond = model(x[:2], t[:2], null, n_blocks=3)
    g = 4 if cfg_channels is None else 3  # guided channels
    for ch in range(model.out_channels):
        guided = uncond[:, ch] + 2.5 * (cond[:, ch] - uncond[:, ch])
        first, second = (guided, guided) if ch < g else (cond[:, ch], uncond[:, ch])
        torch.testing.assert_close(out[:2, ch], first, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(out[2:, ch], second, atol=1e-10, rtol=1e-10)
    # Channel 3 is an eps channel: the two modes differ there and only there.
    other = tiny_dit(in_channels=4, cfg_channels=3 if cfg_channels is None else None)
    out_other = other.forward_with_cfg(x, torch.cat([t[:2], t[:2]]), torch.cat([y[:2], null]), 2.5,
                                       n_blocks=3)
    differs = [not torch.equal(out[:, ch], out_other[:, ch]) for ch in range(model.out_channels)]
    assert differs == [False, False, False, True] + [False] * 4


def test_cfg_channels_is_validated_and_recorded_only_when_set() -> None:
    for bad in (0, 3, True, 1.0):
        with pytest.raises(ValueError, match="cfg_channels"):
            create_model("DiT-test", cfg_channels=bad)  # DiT-test has 2 in_channels
    assert "cfg_channels" not in create_model("DiT-test").config
    model = create_model("DiT-test", cfg_channels=1)
    assert model.config["cfg_channels"] == 1 and type(model)(**model.config).cfg_channels == 1


def test_config_rebuilds_the_model() -> None:
    model = tiny_dit()
    clone = type(model)(**model.config).double()
    clone.load_state_dict(model.state_dict())
    clone.eval()
    x, t, y = inputs(model)
    assert torch.equal(clone(x, t, y, n_blocks=2), model(x, t, y, n_blocks=2))
