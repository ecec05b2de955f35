"""Token merging (ToMe baseline): config, schedules, matching, model patching and the CLI."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ase_search.cli import main
from ase_search.models import create_model, save_checkpoint
from ase_search.tome import (
    ToMeConfig,
    apply_tome,
    bipartite_soft_matching,
    merge_partition,
    remove_tome,
    tome_blocks,
    tome_flop_acceleration,
)

torch.set_num_threads(1)


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """DiT starts as the identity (adaLN-Zero); random weights make every block matter."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def dit() -> torch.nn.Module:
    torch.manual_seed(0)
    return _perturb(create_model("DiT-T", hidden_size=32, num_heads=2))  # 12 blocks, 4x4 tokens


@pytest.fixture(scope="module")
def uvit() -> torch.nn.Module:
    torch.manual_seed(0)
    return _perturb(create_model("U-ViT-T", embed_dim=32, num_heads=2))  # 6 + 1 + 6 blocks


def _inputs(n: int = 3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g)
    t = torch.tensor([10.0, 400.0, 900.0, 650.0][:n])
    y = torch.tensor([1, 5, 9, 0][:n])
    return x, t, y


def _blocks(model):
    return list(model.blocks) if model.arch == "dit" else [*model.in_blocks, model.mid_block,
                                                            *model.out_blocks]


def _record_qkv_tokens(model) -> tuple[list[list[int]], list]:
    """Per block, the token count its attention's qkv projection sees (one entry per call)."""
    seen: list[list[int]] = [[] for _ in _blocks(model)]
    hooks = [block.attn.qkv.register_forward_pre_hook(
        lambda m, args, i=i: seen[i].append(args[0].shape[1]))
        for i, block in enumerate(_blocks(model))]
    return seen, hooks


# ----------------------------------------------------------------------------------- config
@pytest.mark.parametrize("kwargs, field", [
    (dict(ratio=-0.1), "ratio"),
    (dict(ratio=0.8), "ratio"),  # a stride-2 grid can merge at most 3/4 of its tokens
    (dict(ratio=True), "ratio"),
    (dict(ratio="0.5"), "ratio"),
    (dict(ratio=0.5, schedule="X3"), "schedule"),
    (dict(ratio=0.5, schedule="B3"), "schedule"),
    (dict(ratio=0.5, schedule="F0"), "schedule"),
    (dict(ratio=0.5, schedule="R"), "schedule"),
    (dict(ratio=0.5, schedule=4), "schedule"),
    (dict(ratio=0.5, seed=-1), "seed"),
    (dict(ratio=0.5, seed=1.5), "seed"),
    (dict(ratio=0.5, stride=1), "stride"),
])
def test_bad_config_names_the_field(kwargs, field) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        ToMeConfig(**kwargs)


def test_config_is_frozen_and_canonical() -> None:
    config = ToMeConfig(ratio=0.5, schedule="b4")
    assert config.schedule == "B4" and ToMeConfig(0.3, "ALL").schedule == "all"
    assert ToMeConfig(**config.to_dict()) == config
    assert config.describe() == "ToMe-0.5-B4"
    assert ToMeConfig(0.75).ratio == 0.75 and ToMeConfig(0.8, stride=3).stride == 3
    with pytest.raises(AttributeError):
        config.ratio = 0.1  # type: ignore[misc]
    # floor(ratio * N) as tomesd, without float surprises: 0.29 * 100 is 28.999999999999996.
    assert ToMeConfig(0.29).num_merged(100) == 29 and ToMeConfig(0.5).num_merged(15) == 7


# -------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("schedule, dit_blocks, uvit_blocks", [
    ("F3", [0, 1, 2], [0, 1, 2]),
    ("R4", [8, 9, 10, 11], [9, 10, 11, 12]),
    ("B2", [0, 11], [0, 12]),
    ("B6", [0, 1, 2, 9, 10, 11], [0, 1, 2, 10, 11, 12]),
    ("F7", [0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6]),  # U-ViT index 6 is the mid block
    ("all", list(range(12)), list(range(13))),
])
def test_schedules_pick_blocks(schedule, dit_blocks, uvit_blocks, dit, uvit) -> None:
    assert tome_blocks(dit, schedule) == dit_blocks
    assert tome_blocks(uvit, schedule) == uvit_blocks
    assert tome_blocks(uvit, "R1") == [12] and _blocks(uvit)[12] is uvit.out_blocks[-1]
    assert _blocks(uvit)[6] is uvit.mid_block


def test_schedule_beyond_the_model_raises(dit, uvit) -> None:
    with pytest.raises(ValueError, match="^schedule 'R13'.*12"):
        tome_blocks(dit, "R13")
    assert tome_blocks(uvit, "R13") == list(range(13))
    with pytest.raises(ValueError, match="^schedule 'B14'"):
        apply_tome(uvit, ToMeConfig(0.5, "B14"))
    with pytest.raises(ValueError, match="config must be a ToMeConfig"):
        apply_tome(dit, {"ratio": 0.5})
    with pytest.raises(ValueError, match="DiT or U-ViT"):
        tome_blocks(torch.nn.Linear(2, 2), "all")


# -------------------------------------------------------------------------------- matching
def test_partition_one_destination_per_cell() -> None:
    for seed in range(5):
        src, dst = merge_partition(4, 4, 2, torch.Generator().manual_seed(seed))
        assert sorted(src.tolist() + dst.tolist()) == list(range(16))
        cells = sorted(((i // 4) // 2, (i % 4) // 2) for i in dst.tolist())
        assert cells == [(0, 0), (0, 1), (1, 0), (1, 1)]
    top_left = merge_partition(4, 4, 2)[1].tolist()
    assert top_left == [0, 2, 8, 10]
    draws = {tuple(merge_partition(4, 4, 2, torch.Generator().manual_seed(s))[1].tolist())
             for s in range(10)}
    assert len(draws) > 1  # the seed matters
    again = merge_partition(4, 4, 2, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(again, merge_partition(
        4, 4, 2, torch.Generator().manual_seed(3))))
    # 5x5 with stride 2: 4 full cells; the last row and column are all sources.
    src, dst = merge_partition(5, 5, 2)
    assert dst.tolist() == [0, 2, 10, 12] and len(src) == 21
    with pytest.raises(ValueError, match="smaller stride"):
        merge_partition(1, 4, 2)


def test_duplicate_tokens_merge_and_unmerge_exactly() -> None:
    """A grid whose 2x2 cells hold four copies of one token loses nothing by merging."""
    g = torch.Generator().manual_seed(0)
    # Dyadic values, so the mean of identical copies is exact in float32.
    cell = torch.randint(-64, 64, (2, 2, 2, 8), generator=g).float() / 8  # (B, cells_h, cells_w, C)
    x = cell.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2).reshape(2, 16, 8)  # (B, 16, C)
    src, dst = merge_partition(4, 4, 2, torch.Generator().manual_seed(7))
    for r in (12, 8, 1):
        tm = bipartite_soft_matching(x, src, dst, r)
        merged = tm.merge(x)  # (B, 16 - r, C)
        assert merged.shape == (2, 16 - r, 8)
        assert torch.equal(merged[:, -4:], x[:, dst])  # destinations unchanged by their copies
        assert torch.equal(tm.unmerge(merged), x)
    # Every source found the destination of its own cell.
    tm = bipartite_soft_matching(x, src, dst, 12)
    cell_of = lambda i: ((i // 4) // 2, (i % 4) // 2)  # noqa: E731
    for b in range(2):
        for row, target in zip(tm.merged[b].tolist(), tm.targets[b].tolist()):
            assert cell_of(src[row].item()) == cell_of(dst[target].item())


def _reference_attention(attn, x, extras, src_idx, dst_idx, r):
    """ToMe attention by hand, one sample at a time with Python loops (an independent reference).

    ``attn`` must be unpatched: attention is permutation-equivariant, so the merged tokens' order
    does not matter here.
    """
    out = torch.empty_like(x)
    src_idx, dst_idx = src_idx.tolist(), dst_idx.tolist()
    for b in range(x.shape[0]):
        image = x[b, extras:]  # (N, C)
        best = []
        for j, s in enumerate(src_idx):
            sims = [F.cosine_similarity(image[s], image[d], dim=0).item() for d in dst_idx]
            k = max(range(len(dst_idx)), key=lambda k: sims[k])  # first maximum
            best.append((sims[k], j, k))
        ranked = sorted(best, key=lambda item: -item[0])  # Python's sort is stable
        groups = {k: [dst_idx[k]] for k in range(len(dst_idx))}
        owner = {d: ("dst", k) for k, d in enumerate(dst_idx)}
        kept = []
        for rank, (_, j, k) in enumerate(ranked):
            if rank < r:
                groups[k].append(src_idx[j])
                owner[src_idx[j]] = ("dst", k)
            else:
                owner[src_idx[j]] = ("kept", len(kept))
                kept.append(src_idx[j])
        tokens = [x[b, i] for i in range(extras)] + [image[s] for s in kept] + [
            torch.stack([image[i] for i in groups[k]]).mean(0) for k in range(len(dst_idx))]
        y = attn(torch.stack(tokens)[None])[0]  # (extras + N - r, C)
        for i in range(extras):
            out[b, i] = y[i]
        for i in range(image.shape[0]):
            place, k = owner[i]
            out[b, extras + i] = y[extras + k] if place == "kept" else y[extras + len(kept) + k]
    return out


@pytest.mark.parametrize("arch", ["dit", "uvit"])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_patched_attention_matches_reference(arch, ratio, dit, uvit) -> None:
    model = dit if arch == "dit" else uvit
    extras = getattr(model, "extras", 0)
    block = 3
    attn = _blocks(model)[block].attn
    x = torch.randn(2, extras + 16, 32, generator=torch.Generator().manual_seed(2))
    config = ToMeConfig(ratio, "all", seed=5)
    handle = apply_tome(model, config)
    with torch.no_grad():
        got = attn(x)
    handle.remove()
    src, dst = merge_partition(4, 4, 2, torch.Generator().manual_seed(5 + block))
    with torch.no_grad():
        want = _reference_attention(attn, x, extras, src, dst, int(16 * ratio))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------- models
@pytest.mark.parametrize("arch", ["dit", "uvit"])
def test_ratio_zero_and_remove_are_exact(arch, dit, uvit) -> None:
    model = dit if arch == "dit" else uvit
    x, t, y = _inputs()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        base = model(x, t, y)
        with apply_tome(model, ToMeConfig(0.5, "all")) as handle:
            assert handle.active and not torch.allclose(model(x, t, y), base, atol=1e-4)
        assert not handle.active and torch.equal(model(x, t, y), base)
        apply_tome(model, ToMeConfig(0.0, "all"))
        assert torch.equal(model(x, t, y), base)
        apply_tome(model, ToMeConfig(0.5, "all"))  # replaces the first patch
        merged = model(x, t, y)
        assert torch.equal(model(x, t, y), merged)  # deterministic
        assert not torch.allclose(merged, base, atol=1e-4)
        assert remove_tome(model) and not remove_tome(model)
        assert torch.equal(model(x, t, y), base)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not any(block.attn._forward_hooks or block.attn._forward_pre_hooks
                   for block in _blocks(model))


@pytest.mark.parametrize("arch, schedule", [("dit", "B4"), ("uvit", "R4")])
def test_attention_runs_on_fewer_tokens(arch, schedule, dit, uvit) -> None:
    model = dit if arch == "dit" else uvit
    extras = getattr(model, "extras", 0)
    x, t, y = _inputs()
    seen, hooks = _record_qkv_tokens(model)
    handle = apply_tome(model, ToMeConfig(0.5, schedule))
    try:
        with torch.no_grad():
            out = model(x, t, y)
    finally:
        handle.remove()
        for hook in hooks:
            hook.remove()
    chosen = tome_blocks(model, schedule)
    assert handle.blocks == chosen and out.shape == (3, model.out_channels, 28, 28)
    for i, counts in enumerate(seen):
        assert counts == [extras + (8 if i in chosen else 16)], (i, counts)


def test_uvit_extras_are_never_merged(uvit) -> None:
    """The label and time tokens enter every patched attention as they are, in front."""
    x, t, y = _inputs()
    blocks = _blocks(uvit)
    attn_in: dict[int, torch.Tensor] = {}
    qkv_in: dict[int, torch.Tensor] = {}
    hooks = []
    for i, block in enumerate(blocks):
        # Registered before apply_tome, so this pre-hook sees the unmerged input.
        hooks.append(block.attn.register_forward_pre_hook(
            lambda m, args, i=i: attn_in.__setitem__(i, args[0].clone())))
        hooks.append(block.attn.qkv.register_forward_pre_hook(
            lambda m, args, i=i: qkv_in.__setitem__(i, args[0].clone())))
    handle = apply_tome(uvit, ToMeConfig(0.75, "all"))
    try:
        with torch.no_grad():
            uvit(x, t, y)
    finally:
        handle.remove()
        for hook in hooks:
            hook.remove()
    assert uvit.extras == 2
    for i in range(len(blocks)):
        assert qkv_in[i].shape[1] == 2 + 4  # 12 of 16 image tokens merged away
        assert torch.equal(qkv_in[i][:, :2], attn_in[i][:, :2])


def test_samples_do_not_depend_on_their_batch(dit) -> None:
    x, t, y = _inputs(4)
    with torch.no_grad(), apply_tome(dit, ToMeConfig(0.5, "R6")):
        batch = dit(x, t, y)
        alone = torch.cat([dit(x[i:i + 1], t[i:i + 1], y[i:i + 1]) for i in range(4)])
        exits = dit(x, t, y, n_blocks=torch.tensor([12, 7, 9, 12]))
        exit_alone = dit(x[1:2], t[1:2], y[1:2], n_blocks=7)
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(exits[1:2], exit_alone, rtol=1e-5, atol=1e-6)


def test_flop_saving_matches_closed_form(dit, uvit) -> None:
    """FLOPs saved = attention on fewer tokens minus the matching's similarity matmul."""
    from ase_search.metrics.latency import model_flops

    for model in (dit, uvit):
        e, D, N = getattr(model, "extras", 0), 32, 16
        config = ToMeConfig(0.5, "B4")
        r, n_src, n_dst = 8, 12, 4
        L, M = e + N, e + N - r
        # qkv (3 D^2) and proj (D^2) per token, 2 FLOPs per multiply-add; q k^T and a v: 4 L^2 D.
        attention = lambda n: 2 * n * 4 * D * D + 4 * n * n * D  # noqa: E731
        saved = 4 * (attention(L) - attention(M) - 2 * n_src * n_dst * D)
        want = saved / model_flops(model)
        assert tome_flop_acceleration(model, config) == pytest.approx(want, rel=1e-9)
        assert tome_flop_acceleration(model, ToMeConfig(0.0, "all")) == 0.0
        handle = apply_tome(model, config)
        with pytest.raises(ValueError, match="already carries ToMe"):
            tome_flop_acceleration(model, config)
        handle.remove()


# ------------------------------------------------------------------------------------- CLI
def test_cli_sample_with_tome(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "dit.pt", create_model("DiT-T", hidden_size=32, depth=4,
                                                             num_heads=2))
    common = ["sample", "--arch", "dit", "-c", str(path), "--steps", "2", "--n", "2",
              "--device", "cpu"]

    def run(argv):
        try:
            main(argv)
            code = 0
        except SystemExit as err:
            code = err.code
        return (code, *capsys.readouterr())

    out_png = tmp_path / "tome.png"
    code, out, err = run([*common, "--out", str(out_png), "--tome-ratio", "0.5",
                          "--tome-schedule", "B2"])
    assert code == 0, err
    assert out_png.read_bytes().startswith(b"\x89PNG")
    assert "ToMe-0.5-B2" in out and "[0, 3]" in out
    for extra, message in [
        (["--tome-schedule", "R2"], "--tome-schedule R2 needs --tome-ratio"),
        (["--tome-ratio", "0.9"], "--tome-ratio must lie in"),
        (["--tome-ratio", "0.5", "--tome-schedule", "R5"], "--tome-schedule 'R5' merges in 5"),
    ]:
        code, _, err = run([*common, "--out", str(tmp_path / "bad.png"), *extra])
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "bad.png").exists()


def test_cli_eval_with_tome_records_it(tmp_path, capsys, monkeypatch) -> None:
    import json

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # never the user's cache
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "uvit.pt", create_model("U-ViT-T", embed_dim=32, depth=4,
                                                              num_heads=2))
    out_json = tmp_path / "eval.json"
    try:
        main(["eval", "--arch", "uvit", "-c", str(path), "--steps", "2", "--n", "4",
              "--batch-size", "4", "--device", "cpu", "--grid", str(tmp_path / "grid.png"),
              "--json", str(out_json), "--tome-ratio", "0.5", "--tome-schedule", "R2"])
    except SystemExit as err:
        assert err.code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    tome = json.loads(out_json.read_text())["tome"]
    # U-ViT with depth 4: 2 + 1 + 2 blocks, so R2 is the two decoder blocks.
    assert tome["blocks"] == [3, 4] and tome["ratio"] == 0.5 and tome["schedule"] == "R2"
    assert 0 < tome["flop_acceleration"] < 1
    assert "ToMe-0.5-R2" in out and f"{tome['flop_acceleration']:.1%}" in out
