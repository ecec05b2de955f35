"""Tensors to pictures: uint8 images and PNG sample grids.

A low layer: the measuring code, the VAE and the trials save grids without importing the study
report. torch is imported inside the functions, so importing this module is instant.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["save_grid", "to_uint8"]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) floats in [-1, 1] -> uint8 in [0, 255] (rounded, clamped)."""
    import torch

    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int | None = None,
              scale: int = 2) -> Path:
    """Save (N, C, H, W) images in [-1, 1] as one PNG grid (upscaled ``scale`` x, nearest)."""
    import torch
    from torchvision.utils import make_grid, save_image

    from ase_search.files import atomic_write

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"sample grids are written as PNG; got {path.name!r}, use a .png path")
    nrow = nrow or max(1, math.ceil(math.sqrt(images.shape[0])))
    x = (images.clamp(-1, 1) + 1) / 2  # (N, C, H, W) in [0, 1]
    if scale > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=1.0)
    return atomic_write(path, lambda tmp: save_image(grid, tmp, format="png"))
