"""U-ViT: official sizes, ASE decoder exits against a plain re-implementation, per-sample exits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ase_search.models import UViT, create_model
from ase_search.models.uvit import UViT_models


def tiny_uvit(**overrides: object) -> UViT:
    """U-ViT-test in float64 with random weights (tight comparisons across batch shapes)."""
    torch.manual_seed(0)
    model = create_model("U-ViT-test", **overrides)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.double().eval()


def inputs(model: UViT, n: int = 4, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model.in_channels, model.input_size, model.input_size, generator=gen, dtype=torch.float64)
    t = torch.rand(n, generator=gen) * 999
    y = torch.randint(0, model.num_labels, (n,), generator=gen) if model.num_labels else None
    return x, t, y


# --- a plain U-ViT (baofff/U-ViT libs/uvit.py semantics + ASE Section 2.2), independent of uvit.py ---


def ref_time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)  # float32 spec
    args = t[:, None].float() * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1).double()


def ref_block_body(blk: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    B, L, D = x.shape
    H = blk.attn.num_heads
    h = F.layer_norm(x, (D,), blk.norm1.weight, blk.norm1.bias)
    q, k, v = F.linear(h, blk.attn.qkv.weight, blk.attn.qkv.bias).split(D, dim=-1)
    heads = []
    for i in range(H):
        sl = slice(i * D // H, (i + 1) * D // H)
        heads.append((q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(D // H)).softmax(-1) @ v[..., sl])
    x = x + F.linear(torch.cat(heads, -1), blk.attn.proj.weight, blk.attn.proj.bias)
    h = F.layer_norm(x, (D,), blk.norm2.weight, blk.norm2.bias)
    h = F.linear(F.gelu(F.linear(h, blk.mlp.fc1.weight, blk.mlp.fc1.bias)), blk.mlp.fc2.weight, blk.mlp.fc2.bias)
    return x + h


def ref_uvit(model: UViT, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, k: int) -> torch.Tensor:
    """Encoder and mid block whole; decoder block j whole if j < k, else only its skip_linear."""
    p, C, D = model.patch_size, model.in_channels, model.embed_dim
    patches = F.conv2d(x, model.patch_embed.proj.weight, model.patch_embed.proj.bias, stride=p)
    patches = patches.flatten(2).transpose(1, 2)
    time = ref_time_features(t, D)
    if model.config["mlp_time_embed"]:
        te = model.time_embed
        time = F.linear(F.silu(F.linear(time, te[0].weight, te[0].bias)), te[2].weight, te[2].bias)
    tokens = [time[:, None], patches]
    if y is not None:
        tokens.insert(0, model.label_emb.weight[y][:, None])  # order: label, time, patches
    h = torch.cat(tokens, dim=1) + model.pos_embed
    encoder_outputs = []
    for blk in model.in_blocks:
        h = ref_block_body(blk, h)
        encoder_outputs.append(h)
    h = ref_block_body(model.mid_block, h)
    for j, blk in enumerate(model.out_blocks):
        skip = encoder_outputs[len(encoder_outputs) - 1 - j]  # mirrored: last encoder -> first decoder
        h = F.linear(torch.cat([h, skip], -1), blk.skip_linear.weight, blk.skip_linear.bias)
        if j < k:
            h = ref_block_body(blk, h)
    h = F.layer_norm(h, (D,), model.norm.weight, model.norm.bias)
    h = F.linear(h, model.decoder_pred.weight, model.decoder_pred.bias)[:, len(tokens) - 1 :]
    g = model.input_size // p
    img = h.reshape(-1, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(-1, C, g * p, g * p)
    return F.conv2d(img, model.final_layer.weight, model.final_layer.bias, padding=1)


# --- sizes and labels ---


def uvit_s4_closed_form() -> int:
    """U-ViT-S/4 on CelebA 64 counted by hand: 13 blocks of width 512, 6 with skip_linear."""
    D, C, p, L = 512, 3, 4, (64 // 4) ** 2
    block = 2 * 2 * D + 3 * D * D + (D * D + D) + (D * 4 * D + 4 * D) + (4 * D * D + D)
    skip_linear = 2 * D * D + D
    head = 2 * D + (D * p * p * C + p * p * C) + (C * C * 9 + C)
    return (C * p * p * D + D) + (1 + L) * D + 13 * block + 6 * skip_linear + head


def test_uvit_s4_parameter_count() -> None:
    with torch.device("meta"):
        model = create_model("U-ViT-S/4")
    n = sum(p.numel() for p in model.parameters())
    assert n == uvit_s4_closed_form() == 44_292_228
    assert (len(model.in_blocks), len(model.out_blocks), model.exit_depth) == (6, 6, 6)


@pytest.mark.parametrize(
    "name, millions", [("U-ViT-S/4", 44), ("U-ViT-S/2", 44), ("U-ViT-M/4", 131), ("U-ViT-L/4", 287)]
)
def test_uvit_sizes_match_paper(name: str, millions: int) -> None:
    # U-ViT paper, Tables 1-2: CIFAR-10 / CelebA U-ViT-S 44M, ImageNet 64 U-ViT-M/4 131M, U-ViT-L/4 287M.
    with torch.device("meta"):
        model = create_model(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == millions


def test_registry_attributes() -> None:
    assert {"U-ViT-S/4", "U-ViT-S/2", "U-ViT-T", "U-ViT-test"} <= set(UViT_models)
    with torch.device("meta"):
        celeba = create_model("U-ViT-S/4")
    assert (celeba.num_labels, celeba.null_class, celeba.label_emb, celeba.extras) == (0, None, None, 1)
    testbed = create_model("U-ViT-T")
    assert (testbed.input_size, testbed.in_channels, testbed.exit_depth) == (28, 1, 6)
    assert (testbed.num_labels, testbed.null_class, testbed.label_emb.num_embeddings) == (10, 10, 11)
    assert testbed.learn_sigma is False and testbed.patch_embed.num_patches == 16
    with torch.device("meta"):
        imagenet64 = create_model("U-ViT-M/4")
    assert (imagenet64.num_labels, imagenet64.null_class) == (1000, None)


# --- exits ---


def test_full_exit_equals_full_forward_exactly() -> None:
    model = tiny_uvit()
    x, t, y = inputs(model)
    full = model(x, t, y)
    assert torch.equal(model(x, t, y, n_blocks=model.exit_depth), full)
    assert torch.equal(model(x, t, y, n_blocks=torch.full((4,), model.exit_depth)), full)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("conditional", [True, False])
def test_exit_matches_plain_reference(k: int, conditional: bool) -> None:
    model = tiny_uvit() if conditional else tiny_uvit(num_classes=-1, class_dropout_prob=0.0)
    x, t, y = inputs(model)
    out = model(x, t, y, n_blocks=k)
    torch.testing.assert_close(out, ref_uvit(model, x, t, y, k), atol=1e-9, rtol=1e-9)


def test_dropped_decoder_block_applies_only_skip_linear() -> None:
    model = tiny_uvit()
    x, t, y = inputs(model)
    base = model(x, t, y, n_blocks=1)
    dropped, kept = model.out_blocks[2], model.out_blocks[0]
    with torch.no_grad():
        for module in (dropped.norm1, dropped.attn, dropped.norm2, dropped.mlp):
            for p in module.parameters():
                p.add_(1.0)
    assert torch.equal(model(x, t, y, n_blocks=1), base)  # attention/MLP of a dropped block unused
    assert not torch.allclose(model(x, t, y, n_blocks=3), model(x, t, y, n_blocks=1))
    # Random (not constant) perturbations: a constant added to every weight shifts all features of a
    # token equally, which the LayerNorm after the last block removes.
    gen = torch.Generator().manual_seed(7)
    delta = torch.randn(dropped.skip_linear.weight.shape, generator=gen, dtype=torch.float64) * 0.5
    with torch.no_grad():
        dropped.skip_linear.weight.add_(delta)
    assert not torch.allclose(model(x, t, y, n_blocks=1), base)  # its skip_linear still runs
    with torch.no_grad():
        dropped.skip_linear.weight.sub_(delta)
        kept.attn.proj.weight.add_(torch.randn(kept.attn.proj.weight.shape, generator=gen, dtype=torch.float64))
    assert not torch.allclose(model(x, t, y, n_blocks=1), base)  # the kept block runs whole


def test_per_sample_exits_equal_running_each_sample_alone() -> None:
    model = tiny_uvit()
    x, t, y = inputs(model)
    n = torch.tensor([1, 3, 2, 1])
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
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
    assert grads.keys() == {k for k, p in model.named_parameters() if p.grad is not None}
    for key, p in model.named_parameters():
        if key in grads:
            torch.testing.assert_close(grads[key], p.grad, atol=1e-10, rtol=1e-10, msg=key)
    assert "out_blocks.2.attn.qkv.weight" in grads  # sample 1 ran the last decoder block


def test_mixed_batch_runs_attention_only_on_active_samples() -> None:
    model = tiny_uvit()
    x, t, y = inputs(model)
    body_rows: list[int] = []
    skip_rows: list[int] = []
    hooks = []
    for blk in model.out_blocks:
        hooks.append(blk.attn.register_forward_hook(lambda m, a, o: body_rows.append(a[0].shape[0])))
        hooks.append(blk.skip_linear.register_forward_hook(lambda m, a, o: skip_rows.append(a[0].shape[0])))
    model(x, t, y, n_blocks=torch.tensor([1, 3, 2, 1]))
    for h in hooks:
        h.remove()
    assert body_rows == [4, 2, 1]  # decoder block j runs whole on the samples with n_blocks > j
    assert skip_rows == [4, 4, 4]  # every sample applies every skip_linear


def test_dropped_block_without_skip_is_identity() -> None:
    model = tiny_uvit(skip=False)
    assert all(blk.skip_linear is None for blk in model.out_blocks)
    x, t, y = inputs(model)
    with torch.no_grad():
        h = model(x, t, y, n_blocks=1)
        for p in model.out_blocks[1].parameters():
            p.add_(1.0)
        assert torch.equal(model(x, t, y, n_blocks=1), h)


# --- labels, inputs, guidance ---


def test_labels() -> None:
    model = tiny_uvit()
    x, t, y = inputs(model)
    assert torch.equal(model(x, t), model(x, t, torch.full((4,), model.null_class)))
    with pytest.raises(ValueError, match="y must hold labels"):
        model(x, t, torch.tensor([0, 1, 2, 6]))
    uncond = tiny_uvit(num_classes=-1, class_dropout_prob=0.0)
    with pytest.raises(ValueError, match="unconditional"):
        uncond(x, t, y)
    with pytest.raises(ValueError, match="null label"):
        UViT(num_classes=-1, class_dropout_prob=0.1)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        UViT(num_classes=1)


def test_training_label_dropout_uses_null_label() -> None:
    model = tiny_uvit(class_dropout_prob=1.0)
    x, t, y = inputs(model)
    expected = model(x, t, torch.full((4,), model.null_class))
    model.train()
    assert torch.equal(model(x, t, y), expected)


def test_bad_inputs_and_n_blocks_raise() -> None:
    model = tiny_uvit()
    x, t, y = inputs(model)
    with pytest.raises(ValueError, match="x must have shape"):
        model(x[:, :, :4, :4], t, y)
    with pytest.raises(ValueError, match=r"n_blocks must lie in \[1, 3\]"):
        model(x, t, y, n_blocks=4)
    with pytest.raises(ValueError, match="n_blocks"):
        model(x, t, y, n_blocks=torch.tensor([1, 2, 0, 1]))


@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3, None])
def test_parts_compose_to_forward_exactly(k: int | None, conditional: bool) -> None:
    """embed, encode, the exit blocks (dropped ones keep skip_linear) and head, put together by
    hand, are forward bit for bit."""
    model = tiny_uvit() if conditional else tiny_uvit(num_classes=-1, class_dropout_prob=0.0)
    x, t, y = inputs(model)
    with torch.no_grad():
        h = model.embed(x, t, y)
        assert h.shape == (4, model.extras + 16, 32) and model.extras == (2 if conditional else 1)
        h, skips = model.encode(h)
        assert len(skips) == len(model.exit_blocks) == model.exit_depth == 3
        assert list(model.exit_blocks) == list(model.out_blocks)
        for j, blk in enumerate(model.exit_blocks):
            skip = skips.pop()
            h = blk(h, skip) if k is None or j < k else blk.fuse(h, skip)
        assert torch.equal(model.head(h), model(x, t, y, n_blocks=k))
    assert model.transformer_blocks == [*model.in_blocks, model.mid_block, *model.out_blocks]
    assert model.grid_size == 4 and model.cfg_channels is None


def test_forward_with_cfg_matches_separate_passes() -> None:
    model = tiny_uvit()
    x, t, y = inputs(model)
    null = torch.full((2,), model.null_class)
    out = model.forward_with_cfg(x, torch.cat([t[:2], t[:2]]), torch.cat([y[:2], null]), 3.0, n_blocks=2)
    cond = model(x[:2], t[:2], y[:2], n_blocks=2)
    uncond = model(x[:2], t[:2], null, n_blocks=2)
    guided = uncond + 3.0 * (cond - uncond)
    torch.testing.assert_close(out, torch.cat([guided, guided]), atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError, match="null label"):
        tiny_uvit(num_classes=-1, class_dropout_prob=0.0).forward_with_cfg(x, t, None, 2.0)


def test_use_checkpoint_gives_same_gradients() -> None:
    model, ckpt = tiny_uvit(), tiny_uvit(use_checkpoint=True)
    x, t, y = inputs(model)
    for m in (model, ckpt):
        m(x, t, y, n_blocks=torch.tensor([1, 3, 2, 1])).square().sum().backward()
    for (k, a), b in zip(model.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10, msg=k)
