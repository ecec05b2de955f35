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

__all__ = ["grid_png", "save_grid", "to_uint8"]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) floats in [-1, 1] -> uint8 in [0, 255] (rounded, clamped)."""
    import torch

    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def grid_png(images: torch.Tensor, *, nrow: int | None = None, scale: int = 2) -> bytes:
    """(N, C, H, W) images in [-1, 1] as the bytes of one PNG grid (upscaled ``scale`` x,
    nearest): what a trial on another node sends back for the driver to save."""
    import io

    import torch
    from torchvision.utils import make_grid, save_image

    nrow = nrow or max(1, math.ceil(math.sqrt(images.shape[0])))
    x = (images.clamp(-1, 1) + 1) / 2  # (N, C, H, W) in [0, 1]
    if scale > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    buffer = io.BytesIO()
    save_image(make_grid(x, nrow=nrow, padding=2, pad_value=1.0), buffer, format="png")
    return buffer.getvalue()


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int | None = None,
              scale: int = 2) -> Path:
    """Save (N, C, H, W) images in [-1, 1] as one PNG grid (see :func:`grid_png`)."""
    from ase_search.files import atomic_write

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"sample grids are written as PNG; got {path.name!r}, use a .png path")
    data = grid_png(images, nrow=nrow, scale=scale)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
