"""Classifier-free guidance in ``sample``: it guides the channels the model's ``cfg_channels`` names."""

from __future__ import annotations

import torch

from ase_search.models import create_model
from ase_search.samplers import SamplerConfig, sample


def _latent_dit(cfg_channels: int | None) -> torch.nn.Module:
    """A 4-channel (latent, so never clipped) DiT-test with random weights, the same for any
    ``cfg_channels``."""
    torch.manual_seed(0)
    model = create_model("DiT-test", in_channels=4, cfg_channels=cfg_channels)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def test_official_guidance_leaves_the_fourth_channel_conditional() -> None:
    """One DDIM step acts on each channel alone, so in the sample channels 0-2 follow the guided
    eps and channel 3 the conditional eps when cfg_channels=3 (the official DiT), while the
    default guides channel 3 too."""
    labels = torch.tensor([0, 3, 4])

    def draw(cfg_channels: int | None, cfg_scale: float) -> torch.Tensor:
        return sample(_latent_dit(cfg_channels), sampler=SamplerConfig("ddim", 1, cfg_scale=cfg_scale),
                      n=3, seed=5, labels=labels).images  # (3, 4, 8, 8)

    official, all_channels, conditional = draw(3, 4.0), draw(None, 4.0), draw(None, 1.0)
    torch.testing.assert_close(official[:, :3], all_channels[:, :3], atol=1e-6, rtol=0)
    torch.testing.assert_close(official[:, 3], conditional[:, 3], atol=1e-6, rtol=0)
    assert (all_channels[:, 3] - conditional[:, 3]).abs().max() > 1e-3  # guidance moved it
    assert (official[:, :3] - conditional[:, :3]).abs().max() > 1e-3
