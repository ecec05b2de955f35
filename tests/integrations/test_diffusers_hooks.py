"""Exit-schedule hooks on tiny random diffusers transformers of all four supported classes."""

from __future__ import annotations

import pytest
import torch

from ase_search.integrations.diffusers import (
    apply_exit_schedule,
    exit_blocks,
    exit_schedule_state,
    remove_exit_schedule,
)
from ase_search.schedule import ExitSchedule

pytestmark = pytest.mark.usefixtures("one_thread")


def _dit():
    from diffusers import DiTTransformer2DModel

    model = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=2,
                                  out_channels=4, num_layers=4, sample_size=8, patch_size=2,
                                  num_embeds_ada_norm=5, norm_eps=1e-6)

    def inputs(timestep):
        g = torch.Generator().manual_seed(0)
        return dict(hidden_states=torch.randn(2, 2, 8, 8, generator=g),
                    timestep=torch.full((2,), timestep), class_labels=torch.tensor([1, 5]))

    return model, inputs, 1000.0


def _pixart():
    from diffusers import PixArtTransformer2DModel

    model = PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                     out_channels=8, num_layers=3, cross_attention_dim=16,
                                     caption_channels=16, sample_size=8, patch_size=2,
                                     norm_type="ada_norm_single", num_embeds_ada_norm=1000)

    def inputs(timestep):
        g = torch.Generator().manual_seed(0)
        return dict(hidden_states=torch.randn(2, 4, 8, 8, generator=g),
                    encoder_hidden_states=torch.randn(2, 5, 16, generator=g),
                    timestep=torch.full((2,), timestep),
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None})

    return model, inputs, 1000.0


def _sd3():
    from diffusers import SD3Transformer2DModel

    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=3,
                                  attention_head_dim=8, num_attention_heads=2,
                                  joint_attention_dim=16, caption_projection_dim=16,
                                  pooled_projection_dim=16, out_channels=4, pos_embed_max_size=16)

    def inputs(timestep):
        g = torch.Generator().manual_seed(0)
        return dict(hidden_states=torch.randn(2, 4, 8, 8, generator=g),
                    encoder_hidden_states=torch.randn(2, 5, 16, generator=g),
                    pooled_projections=torch.randn(2, 16, generator=g),
                    timestep=torch.full((2,), timestep))  # sigma * 1000, as the SD3 pipeline

    return model, inputs, 1000.0


def _flux():
    from diffusers import FluxTransformer2DModel

    model = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=2, num_single_layers=3,
                                   attention_head_dim=8, num_attention_heads=2,
                                   joint_attention_dim=16, pooled_projection_dim=16,
                                   axes_dims_rope=(2, 2, 4))

    def inputs(timestep):
        g = torch.Generator().manual_seed(0)
        return dict(hidden_states=torch.randn(2, 16, 4, generator=g),
                    encoder_hidden_states=torch.randn(2, 5, 16, generator=g),
                    pooled_projections=torch.randn(2, 16, generator=g),
                    timestep=torch.full((2,), timestep),  # sigma, as the FLUX pipeline passes it
                    img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(5, 3))

    return model, inputs, 1.0


MODELS = {"dit": (_dit, 4), "pixart": (_pixart, 3), "sd3": (_sd3, 3), "flux": (_flux, 5)}


@pytest.fixture(params=list(MODELS), scope="module")
def case(request):
    make, depth = MODELS[request.param]
    torch.manual_seed(0)
    model, inputs, scale = make()
    # Random weights everywhere, so that every block (adaLN-Zero starts as the identity) changes
    # its input and a skipped block shows in the output.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return request.param, model.eval(), inputs, scale, depth


def _run(model, kwargs):
    with torch.no_grad():
        return model(**kwargs, return_dict=False)[0]


def _schedule(depth: int) -> ExitSchedule:
    # 1 block near data, the full depth in the middle, 2 near noise: every interval differs.
    return ExitSchedule("dit", depth, (0.0, 0.3, 0.7, 1.0), (1, depth, 2), "test")


def test_exitable_depth(case):
    name, model, _, _, depth = case
    assert len(exit_blocks(model)) == depth


def test_full_schedule_is_bit_for_bit(case):
    name, model, inputs, scale, depth = case
    kwargs = inputs(0.5 * scale)
    plain = _run(model, kwargs)
    state = apply_exit_schedule(model, ExitSchedule("dit", depth, (0.0, 1.0), (depth,), "full"))
    try:
        hooked = _run(model, kwargs)
    finally:
        remove_exit_schedule(model)
    assert torch.equal(plain, hooked)
    assert state.block_evals == depth and [c.evaluated for c in state.calls] == [depth]


def test_block_evaluations_follow_the_schedule(case):
    name, model, inputs, scale, depth = case
    schedule = _schedule(depth)
    state = apply_exit_schedule(model, schedule)
    # Off the edges 0.3 and 0.7: FLUX takes float32 sigmas, and float32(0.7) < 0.7.
    times = [0.0, 0.1, 0.35, 0.69, 0.71, 0.95, 1.0]
    try:
        outs = {t: _run(model, inputs(t * scale)) for t in times}
    finally:
        remove_exit_schedule(model)
    assert [c.t for c in state.calls] == pytest.approx(times)
    # Independent reference: the counts written in _schedule, by interval.
    expected = [1, 1, depth, depth, 2, 2, 2]
    assert [c.evaluated for c in state.calls] == expected
    assert [c.blocks for c in state.calls] == expected
    assert state.block_evals == sum(expected)
    # A skipped block changes the output: 1 block differs from the full model.
    assert not torch.equal(outs[0.0], _run(model, inputs(0.0)))


def test_truncated_blocks_equal_a_shorter_model(case):
    """Skipping blocks past the count equals the model with its block lists cut to the count."""
    name, model, inputs, scale, depth = case
    import copy

    short = copy.deepcopy(model)
    stacks = {"dit": ["transformer_blocks"], "pixart": ["transformer_blocks"],
              "sd3": ["transformer_blocks"],
              "flux": ["transformer_blocks", "single_transformer_blocks"]}[name]
    keep = 2  # the schedule's count near noise
    for stack in stacks:
        blocks = getattr(short, stack)
        setattr(short, stack, torch.nn.ModuleList(list(blocks)[:keep]))
        keep = max(0, keep - len(blocks))
    kwargs = inputs(0.9 * scale)
    apply_exit_schedule(model, _schedule(depth))
    try:
        hooked = _run(model, kwargs)
    finally:
        remove_exit_schedule(model)
    assert torch.equal(hooked, _run(short, kwargs))


def test_remove_restores_the_model(case):
    name, model, inputs, scale, depth = case
    kwargs = inputs(0.05 * scale)
    plain = _run(model, kwargs)
    forwards = [b.forward for b in exit_blocks(model)]
    apply_exit_schedule(model, _schedule(depth))
    assert not torch.equal(_run(model, kwargs), plain)
    remove_exit_schedule(model)
    assert exit_schedule_state(model) is None
    assert torch.equal(_run(model, kwargs), plain)
    assert [b.forward for b in exit_blocks(model)] == forwards
    # applying again works after removal
    apply_exit_schedule(model, _schedule(depth))
    remove_exit_schedule(model)


def test_depth_mismatch_names_both_depths(case):
    name, model, _, _, depth = case
    wrong = ExitSchedule("dit", depth + 3, (0.0, 1.0), (depth + 3,), "wrong")
    with pytest.raises(ValueError) as err:
        apply_exit_schedule(model, wrong)
    message = str(err.value)
    assert f"depth {depth + 3}" in message and f"has {depth} exitable blocks" in message
    assert "\n" not in message
    assert exit_schedule_state(model) is None


def test_applying_twice_is_refused(case):
    name, model, _, _, depth = case
    apply_exit_schedule(model, _schedule(depth))
    try:
        with pytest.raises(ValueError, match="already has an exit schedule"):
            apply_exit_schedule(model, _schedule(depth))
    finally:
        remove_exit_schedule(model)


def test_cfg_batch_and_mixed_timesteps():
    model, inputs, _ = _dit()
    model.eval()
    kwargs = inputs(100)
    # A CFG batch: both halves share the timestep, so one count serves the call.
    kwargs["timestep"] = torch.tensor([100, 100])
    state = apply_exit_schedule(model, _schedule(4))
    try:
        _run(model, kwargs)
        assert [c.evaluated for c in state.calls] == [1]
        kwargs["timestep"] = torch.tensor([100, 900])
        with pytest.raises(ValueError, match="one timestep per call"):
            _run(model, kwargs)
        kwargs["timestep"] = torch.tensor([2000, 2000])
        with pytest.raises(ValueError, match="outside"):
            _run(model, kwargs)
        assert state.active is None  # a failed call leaves no count behind
    finally:
        remove_exit_schedule(model)


def test_block_reuse_refreshes_and_reuses(case):
    """A reuse call on the refresh call's own inputs gives the full model's output back."""
    name, model, inputs, scale, depth = case
    schedule = _schedule(depth).with_reuse(2)  # 1 and 2 blocks reuse every other call
    kwargs = inputs(0.9 * scale)
    full = _run(model, kwargs)
    state = apply_exit_schedule(model, schedule)
    try:
        outs = [_run(model, kwargs) for _ in range(3)]
        near_data = _run(model, inputs(0.1 * scale))
    finally:
        remove_exit_schedule(model)
    # Independent reference: refresh at run indices 0 and 2 (period 2) at full depth, reuse at 1.
    assert [(c.evaluated, c.refresh) for c in state.calls] == [
        (depth, True), (2, False), (depth, True), (depth, True)]
    assert torch.equal(outs[0], full) and torch.equal(outs[2], full)
    # 2 blocks + (after all - after 2) on the same inputs: the full output up to rounding.
    torch.testing.assert_close(outs[1], full, rtol=1e-5, atol=1e-5)
    # Entering another interval refreshes: the full model's output.
    assert torch.equal(near_data, _run(model, inputs(0.1 * scale)))


def test_a_users_own_loop_gets_the_images_of_fresh_hooks():
    """A user's own 9-step DDIM loop under a one-interval reuse schedule (half the blocks, period
    2), image after image and then a batch of another size, gives what fresh hooks give on the
    same noise: no image starts from the previous one's residual (issue #23's measurement)."""
    from diffusers import DDIMScheduler

    model, _, _ = _dit()
    model.eval()  # no label dropout: the loop is deterministic
    schedule = ExitSchedule("dit", 4, (0.0, 1.0), (2,)).with_reuse(2)
    g = torch.Generator().manual_seed(1)
    noises = [torch.randn(2, 2, 8, 8, generator=g), torch.randn(2, 2, 8, 8, generator=g),
              torch.randn(3, 2, 8, 8, generator=g)]

    def loop(x: torch.Tensor) -> torch.Tensor:
        scheduler = DDIMScheduler(num_train_timesteps=1000)
        scheduler.set_timesteps(9)
        labels = torch.arange(x.shape[0]) % 5
        for t in scheduler.timesteps:
            with torch.no_grad():
                out = model(hidden_states=x, timestep=t.expand(x.shape[0]),
                            class_labels=labels).sample
            x = scheduler.step(out[:, :2], t, x).prev_sample  # the first half: the noise
        return x

    state = apply_exit_schedule(model, schedule)
    try:
        in_one_go = [loop(z) for z in noises]
    finally:
        remove_exit_schedule(model)
    fresh = []
    for z in noises:
        apply_exit_schedule(model, schedule)
        try:
            fresh.append(loop(z))
        finally:
            remove_exit_schedule(model)
    for a, b in zip(in_one_go, fresh):
        assert torch.equal(a, b)
    # every image's first call refreshes (period 2: calls 0, 2, 4, 6, 8 of each image)
    assert [c.refresh for c in state.calls] == [j % 2 == 0 for j in range(9)] * 3


def test_pipelines_reset_the_hooks_through_diffusers_stateful_protocol():
    from diffusers.hooks import HookRegistry

    model, inputs, scale = _dit()
    state = apply_exit_schedule(model, ExitSchedule("dit", 4, (0.0, 1.0), (2,)).with_reuse(2))
    try:
        _run(model, inputs(0.9 * scale))
        assert len(state.history) == 1  # the refresh kept its residual
        HookRegistry.check_if_exists_or_initialize(model).reset_stateful_hooks()
        assert state.history == [] and state.last_t is None
        _run(model, inputs(0.8 * scale))  # after a reset the next call refreshes
        assert state.calls[-1].refresh
    finally:
        remove_exit_schedule(model)
