"""Shared layers: embeddings against closed forms, patches against the conv, attention against math."""

from __future__ import annotations

import math

import pytest
import torch

from ase_search.models.layers import (
    Attention,
    PatchEmbed,
    get_2d_sincos_pos_embed,
    patchify,
    resolve_n_blocks,
    timestep_embedding,
    unpatchify,
)


@pytest.mark.parametrize("dim", [6, 7])
def test_timestep_embedding_matches_closed_form(dim: int) -> None:
    t = torch.tensor([0.0, 3.0, 250.5, 999.0])
    emb = timestep_embedding(t, dim)
    half = dim // 2
    assert emb.shape == (4, dim)
    for n, tn in enumerate(t.tolist()):
        for j in range(half):
            freq = math.exp(-math.log(10000) * j / half)
            assert emb[n, j].item() == pytest.approx(math.cos(tn * freq), abs=1e-4)
            assert emb[n, half + j].item() == pytest.approx(math.sin(tn * freq), abs=1e-4)
        if dim % 2:
            assert emb[n, -1].item() == 0.0


def test_timestep_embedding_float_and_long_agree() -> None:
    assert torch.equal(timestep_embedding(torch.tensor([5, 17]), 8), timestep_embedding(torch.tensor([5.0, 17.0]), 8))


def test_2d_sincos_pos_embed_closed_form() -> None:
    # Token r * G + c: [sin(c w), cos(c w), sin(r w), cos(r w)], w_j = 10000 ** (-j / (D / 4)).
    D, G = 16, 3
    emb = get_2d_sincos_pos_embed(D, G)
    assert emb.shape == (G * G, D) and emb.dtype == torch.float32
    q = D // 4
    for r in range(G):
        for c in range(G):
            row = emb[r * G + c]
            for j in range(q):
                w = 10000 ** (-j / q)
                expected = [math.sin(c * w), math.cos(c * w), math.sin(r * w), math.cos(r * w)]
                got = [row[j], row[q + j], row[2 * q + j], row[3 * q + j]]
                for e, g in zip(expected, got):
                    assert g.item() == pytest.approx(e, abs=1e-6)


def test_2d_sincos_rejects_width_not_divisible_by_4() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        get_2d_sincos_pos_embed(6, 2)


def test_patchify_matches_conv_patch_embed_and_unpatchify_inverts() -> None:
    torch.manual_seed(0)
    N, C, H, p, D = 2, 3, 8, 4, 5
    imgs = torch.randn(N, C, H, H)
    tokens = patchify(imgs, p)  # (N, T, p * p * C) with (p1, p2, C) order
    assert tokens.shape == (N, (H // p) ** 2, p * p * C)
    assert torch.equal(unpatchify(tokens, p, C), imgs)
    # A linear map on (p1, p2, C)-ordered patches is the conv with the weight permuted to (D, C, p1, p2).
    embed = PatchEmbed(H, p, C, D)
    w_lin = embed.proj.weight.permute(0, 2, 3, 1).reshape(D, -1)  # (D, p1 * p2 * C)
    expected = tokens @ w_lin.T + embed.proj.bias
    torch.testing.assert_close(embed(imgs), expected, atol=1e-5, rtol=1e-5)
    # Token order is row-major over the patch grid: token 1 is the patch at row 0, column 1.
    assert torch.equal(tokens[0, 1, :C], imgs[0, :, 0, p])


def test_attention_matches_explicit_softmax() -> None:
    torch.manual_seed(0)
    B, L, D, H = 2, 5, 8, 2
    attn = Attention(D, num_heads=H, qkv_bias=True)
    x = torch.randn(B, L, D)
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias  # (B, L, 3D): q | k | v, each head-major
    q, k, v = qkv.split(D, dim=-1)
    outs = []
    for h in range(H):
        sl = slice(h * D // H, (h + 1) * D // H)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(D // H)
        outs.append(scores.softmax(-1) @ v[..., sl])
    expected = torch.cat(outs, dim=-1) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_resolve_n_blocks() -> None:
    dev = torch.device("cpu")
    assert (resolve_n_blocks(None, 3, 6, dev).full, resolve_n_blocks(None, 3, 6, dev).total) == (6, 6)
    assert resolve_n_blocks(4, 3, 6, dev).per_sample is None
    plan = resolve_n_blocks(torch.tensor([2, 5, 3]), 3, 6, dev)
    assert (plan.full, plan.total) == (2, 5)
    assert plan.rows(1) is None
    assert plan.rows(2).tolist() == [1, 2]
    assert plan.rows(4).tolist() == [1]
    same = resolve_n_blocks(torch.tensor([3, 3]), 2, 6, dev)
    assert (same.full, same.total, same.per_sample) == (3, 3, None)


@pytest.mark.parametrize(
    "bad, match",
    [
        (0, r"\[1, 6\]"),
        (7, r"\[1, 6\]"),
        (True, "n_blocks must be None"),
        (2.0, "n_blocks must be None"),
        (torch.tensor([1.0, 2.0, 3.0]), "integer tensor"),
        (torch.tensor([1, 2]), r"\(3,\) tensor"),
        (torch.tensor([1, 0, 3]), r"\[1, 6\]"),
        (torch.tensor([1, 7, 3]), r"\[1, 6\]"),
    ],
)
def test_resolve_n_blocks_rejects_bad_values(bad: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_n_blocks(bad, 3, 6, torch.device("cpu"))
