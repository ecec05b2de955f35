"""The VAE decoder of latent-space models, so FID sees images rather than latents.

DiT-XL/2 denoises ``4 x 32 x 32`` latents of the Stable Diffusion VAE (``sd-vae-ft-ema`` /
``sd-vae-ft-mse``): its samples must go through the VAE decoder before a feature extractor can
score them. :func:`load_vae` reads a diffusers ``AutoencoderKL`` from a local folder only (nothing
is downloaded at run time) and wraps it in a :class:`LatentDecoder`.

The latents a model sees are the VAE's posterior samples times ``scaling_factor`` (0.18215 for the
SD VAE, DiT's ``z * 0.18215``), so decoding divides by it first (and adds ``shift_factor`` back for
VAEs that have one), as diffusers' pipelines do.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

__all__ = ["LatentDecoder", "VAEError", "check_vae_folder", "load_vae"]

_CLASS_NAME = "AutoencoderKL"
_HOW_TO = (
    "pass a local diffusers-format AutoencoderKL folder (config.json and "
    "diffusion_pytorch_model.safetensors), e.g. made once on a machine with internet by "
    "AutoencoderKL.from_pretrained('stabilityai/sd-vae-ft-ema').save_pretrained(PATH)"
)


class VAEError(ValueError):
    """A VAE path that cannot be used, with a message saying how to fix it."""


def check_vae_folder(path: str | os.PathLike) -> Path:
    """The folder :func:`load_vae` would load, checked without loading any weights.

    Cheap (no diffusers import): configs validate with it up front. A folder holding the VAE in a
    ``vae/`` sub-folder (a whole diffusers pipeline) is accepted too.

    Args:
        path: a local folder.

    Returns:
        The absolute folder that holds the VAE's ``config.json``.

    Raises:
        VAEError: the path is missing, not a folder, or holds no ``AutoencoderKL`` config.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise VAEError(f"the VAE must be a path to a local folder, got {path!r}; {_HOW_TO}")
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise VAEError(f"VAE folder {str(path)!r} does not exist or is not a folder; {_HOW_TO}")
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise VAEError(f"VAE folder {str(path)!r} holds no config.json; {_HOW_TO}")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VAEError(f"could not read the VAE config {str(config_file)!r} ({err}); "
                       f"{_HOW_TO}") from None
    name = config.get("_class_name") if isinstance(config, dict) else None
    if name != _CLASS_NAME:
        raise VAEError(f"VAE folder {str(path)!r} holds a {name or 'non-diffusers'} config, not "
                       f"an {_CLASS_NAME}; {_HOW_TO}")
    return folder


class LatentDecoder:
    """A frozen ``AutoencoderKL`` that turns a latent model's samples into images.

    Args:
        vae: the autoencoder; it is put in eval mode and its parameters are frozen.
        path: where it was loaded from (recorded in results); ``None`` for an in-memory VAE.
        batch_size: latents per decoder call.

    Attributes:
        latent_channels: channels of the latents it decodes (4 for the SD VAE).
        out_channels: channels of the images it produces (3).
        scale_factor: spatial upsampling of the decoder, ``2 ** (len(block_out_channels) - 1)``
            (8 for the SD VAE: 32 x 32 latents decode to 256 x 256 images).
        scaling_factor: the latents' scale (``vae.config.scaling_factor``, 0.18215 for the SD VAE).
        shift_factor: the latents' shift (``vae.config.shift_factor``; 0 when the VAE has none).
    """

    def __init__(self, vae: AutoencoderKL, *, path: str | None = None,
                 batch_size: int = 32) -> None:
        config = getattr(vae, "config", None)
        if not isinstance(vae, torch.nn.Module) or not hasattr(vae, "decode") or config is None:
            raise VAEError(f"vae must be a diffusers AutoencoderKL, got {type(vae).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise VAEError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.vae = vae.eval().requires_grad_(False)
        self.path = path
        self.batch_size = batch_size
        self.latent_channels = int(config.latent_channels)
        self.out_channels = int(config.out_channels)
        self.scale_factor = 2 ** (len(config.block_out_channels) - 1)
        self.scaling_factor = float(config.scaling_factor)
        shift = getattr(config, "shift_factor", None)
        self.shift_factor = 0.0 if shift is None else float(shift)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def to(self, device: str | torch.device) -> LatentDecoder:
        """Move the VAE to ``device`` (in place) and return ``self``."""
        self.vae.to(device)
        return self

    def image_size(self, latent_size: int) -> int:
        """Side of the images that ``latent_size x latent_size`` latents decode to."""
        return latent_size * self.scale_factor

    def _check(self, latents: torch.Tensor) -> None:
        if not isinstance(latents, torch.Tensor) or latents.dim() != 4 \
                or latents.shape[1] != self.latent_channels or not latents.is_floating_point():
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents)
            raise VAEError(f"latents must be a float tensor (N, {self.latent_channels}, h, w) "
                           f"for this VAE, got {got}")

    @torch.no_grad()
    def _decode_batch(self, z: torch.Tensor) -> torch.Tensor:
        z = z.to(self.device, self.dtype) / self.scaling_factor + self.shift_factor  # (B, 4, h, w)
        images = self.vae.decode(z).sample  # (B, 3, 8h, 8w), roughly in [-1, 1]
        return images.float().clamp(-1.0, 1.0).cpu()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode latents as a latent model samples them (scaled by ``scaling_factor``).

        Runs in batches of ``batch_size`` on the VAE's device, without gradients.

        Args:
            latents: float ``(N, latent_channels, h, w)``.

        Returns:
            float32 images ``(N, out_channels, h * scale_factor, w * scale_factor)`` in
            ``[-1, 1]``, on the CPU.
        """
        self._check(latents)
        return torch.cat([self._decode_batch(z) for z in latents.split(self.batch_size)])

    def decode_uint8(self, latents: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` to uint8 ``[0, 255]`` batch by batch, a quarter of the float memory
        (50,000 images of 256 x 256 are 9.8 GB as uint8, 39 GB as float32)."""
        from ase_search.images import to_uint8

        self._check(latents)
        return torch.cat([to_uint8(self._decode_batch(z))  # (B, 3, 8h, 8w) uint8
                          for z in latents.split(self.batch_size)])

    def __repr__(self) -> str:
        return (f"LatentDecoder(path={self.path!r}, latent_channels={self.latent_channels}, "
                f"scale_factor={self.scale_factor}, scaling_factor={self.scaling_factor})")


def load_vae(path: str | os.PathLike, *, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, batch_size: int = 32) -> LatentDecoder:
    """Load a diffusers ``AutoencoderKL`` from a local folder, never from the network.

    Args:
        path: a folder saved by ``AutoencoderKL.save_pretrained`` (or a pipeline folder holding
            it in ``vae/``).
        device: where it decodes.
        dtype: its weights' dtype; float32 by default (the SD VAE overflows in float16).
        batch_size: latents per decoder call.

    Returns:
        A :class:`LatentDecoder`.

    Raises:
        VAEError: the folder is missing or holds no loadable ``AutoencoderKL``.
    """
    folder = check_vae_folder(path)
    from diffusers import AutoencoderKL

    try:
        vae = AutoencoderKL.from_pretrained(
            folder, local_files_only=True, torch_dtype=dtype,
            # diffusers warns on every load when it wants accelerate and cannot have it.
            low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None,
        )
    except Exception as err:  # missing or damaged weights, a config of another shape, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise VAEError(f"could not load the VAE from {str(path)!r} ({first}); {_HOW_TO}") from None
    return LatentDecoder(vae.to(device), path=str(folder), batch_size=batch_size)
