"""Block reuse in DiT and U-ViT against plain loops that run the blocks and cache residuals by hand.

The references run each sample alone through the model's parts (``embed``, the blocks, ``head``)
and keep the residuals in a dict, following the rules of :mod:`ase_search.schedule`: DiT stores the
hidden state after all blocks minus the one after the sample's count; U-ViT stores, for each decoder
block past the count, what its attention and MLP added after its ``skip_linear``.
"""

from __future__ import annotations

import pytest
import torch

from ase_search.models import create_model
from ase_search.models.layers import BlockReuse, guided_eps

pytestmark = pytest.mark.usefixtures("one_thread")

# A trajectory of calls: (refresh?) per call; every call gets new inputs, as sampling steps do.
PLAN = (True, False, False, True, False)


def tiny(name: str) -> torch.nn.Module:
    """A test-size model in float64 with random weights (at init DiT's blocks are identities)."""
    torch.manual_seed(0)
    model = create_model(name)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.double().eval()


def step_inputs(model: torch.nn.Module, n: int, call: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(100 + call)
    x = torch.randn(n, model.in_channels, model.input_size, model.input_size, generator=gen,
                    dtype=torch.float64)
    t = torch.full((n,), 900.0 - 150 * call)
    y = torch.randint(0, model.num_labels, (n,), generator=gen)
    return x, t, y


# ------------------------------------------------------------------ hand-written references
def hand_dit(model, x, t, y, counts, cache: dict, refresh: bool) -> torch.Tensor:
    outs = []
    for j in range(len(x)):
        h, c = model.embed(x[j:j + 1], t[j:j + 1], y[j:j + 1])
        k = counts[j]
        if refresh:
            for i, block in enumerate(model.blocks):
                h = block(h, c)
                if i + 1 == k:
                    after_count = h
            cache[j] = h - after_count
        else:
            for block in model.blocks[:k]:
                h = block(h, c)
            h = h + cache[j]
        outs.append(model.head(h, c))
    return torch.cat(outs)


def hand_uvit(model, x, t, y, counts, cache: dict, refresh: bool) -> torch.Tensor:
    outs = []
    for j in range(len(x)):
        h, skips = model.encode(model.embed(x[j:j + 1], t[j:j + 1], y[j:j + 1]))
        for i, blk in enumerate(model.out_blocks):
            z = blk.skip_linear(torch.cat([h, skips.pop()], dim=-1))
            if i < counts[j]:
                h = blk.body(z)
            elif refresh:
                h = blk.body(z)
                cache[j, i] = h - z
            else:
                h = z + cache[j, i]  # the dropped block's skip_linear, plus what its body added
        outs.append(model.head(h))
    return torch.cat(outs)


HAND = {"DiT-test": hand_dit, "U-ViT-test": hand_uvit}


def hand_guided(model, hand, x, t, y, counts, cache, refresh, scale) -> torch.Tensor:
    """Guidance over the doubled batch by hand: one cache holds both branches."""
    out = hand(model, x, t, y, counts, cache, refresh)  # (2B, C_out, H, W)
    C, B = model.in_channels, len(x) // 2
    cond, uncond = out[:B, :C], out[B:, :C]
    g = uncond + scale * (cond - uncond)
    return torch.cat([torch.cat([g, g]), out[:, C:]], dim=1)


# ------------------------------------------------------------------ equivalences
@pytest.mark.parametrize("name", list(HAND))
@pytest.mark.parametrize("mixed", [False, True], ids=["one-count", "mixed-counts"])
@pytest.mark.parametrize("guided", [False, True], ids=["unguided", "guided"])
def test_reuse_matches_the_hand_written_cache(name: str, mixed: bool, guided: bool) -> None:
    model = tiny(name)
    depth = model.exit_depth
    n = 4
    counts = [1, depth, 2, 1] if mixed else [2] * n
    if guided:  # the doubled batch: conditional half, then the null label
        counts = counts + counts
    n_blocks = torch.tensor(counts) if mixed else counts[0]
    reuse, cache = BlockReuse(), {}
    for call, refresh in enumerate(PLAN):
        x, t, y = step_inputs(model, n, call)
        if guided:
            x, t = torch.cat([x, x]), torch.cat([t, t])
            y = torch.cat([y, torch.full_like(y, model.null_class)])
        reuse.refresh = refresh
        if guided:
            got = guided_eps(model, x, t, y, 4.0, n_blocks=n_blocks, reuse=reuse)
            want = hand_guided(model, HAND[name], x, t, y, counts, cache, refresh, 4.0)
        else:
            got = model(x, t, y, n_blocks=n_blocks, reuse=reuse)
            want = HAND[name](model, x, t, y, counts, cache, refresh)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        if not refresh:  # reusing is not skipping: the residual changes the output
            skipped = (guided_eps(model, x, t, y, 4.0, n_blocks=n_blocks) if guided
                       else model(x, t, y, n_blocks=n_blocks))
            assert not torch.allclose(got, skipped)


@pytest.mark.parametrize("name", list(HAND))
def test_refresh_every_call_is_the_full_model_exactly(name: str) -> None:
    model = tiny(name)
    reuse = BlockReuse()
    for call in range(3):
        x, t, y = step_inputs(model, 3, call)
        reuse.refresh = True
        got = model(x, t, y, n_blocks=1, reuse=reuse)
        assert torch.equal(got, model(x, t, y))


@pytest.mark.parametrize("name", list(HAND))
def test_a_reuse_call_needs_a_refresh_at_its_counts(name: str) -> None:
    model = tiny(name)
    x, t, y = step_inputs(model, 2, 0)
    reuse = BlockReuse()
    reuse.refresh = False
    with pytest.raises(ValueError, match="needs a refresh call first"):
        model(x, t, y, n_blocks=1, reuse=reuse)
    reuse.refresh = True
    model(x, t, y, n_blocks=1, reuse=reuse)
    reuse.refresh = False
    with pytest.raises(ValueError, match="stored for other block counts"):
        model(x, t, y, n_blocks=2, reuse=reuse)
    with pytest.raises(ValueError, match="stored for other block counts"):
        model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y]), n_blocks=1, reuse=reuse)
