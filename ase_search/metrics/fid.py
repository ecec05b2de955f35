"""FID (and optionally KID, precision/recall) of generated images against a reference data set.

All metrics go through torch-fidelity. Generated images are handed over as a uint8 ``Dataset``
(torch-fidelity's generator wrapper cannot feed class labels to a class-conditional model), and the
reference data set's features and statistics are cached on disk with torch-fidelity's own cache
(atomic writes) under a name built from the data set key, resolution, channels and the extractor
weights' hash, so a search extracts reference features once.

Two feature extractors:

- ``"mnist-classifier"``: the 128-d penultimate layer of the shipped digit classifier
  (``ase_search.metrics.extractor``), giving "FID-MNIST" for the 28x28 testbed.
- ``"inception-v3-compat"``: torch-fidelity's TF-compatible Inception-v3 (the standard FID). Its
  weights cannot be downloaded at run time, so ``FIDConfig.fid_weights`` must name a local copy
  of ``weights-inception-2015-12-05-6726825d.pth``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ase_search.metrics.extractor import MetricsError

__all__ = [
    "DEFAULT_FEATURE_LAYER",
    "EXTRACTORS",
    "FEATURE_LAYERS",
    "INCEPTION_WEIGHTS_NAME",
    "INCEPTION_WEIGHTS_URL",
    "FIDConfig",
    "MetricsError",
    "compute_fid",
    "default_cache_dir",
    "frechet_distance",
    "extractor_weights",
]

EXTRACTORS = ("mnist-classifier", "inception-v3-compat")
# Feature layers each extractor provides (its get_provided_features_list(), checked by a test) and
# the one FID uses by default.
FEATURE_LAYERS = {
    "mnist-classifier": ("128", "logits"),
    "inception-v3-compat": ("64", "192", "768", "2048", "logits_unbiased", "logits"),
}
DEFAULT_FEATURE_LAYER = {"mnist-classifier": "128", "inception-v3-compat": "2048"}
INCEPTION_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_NAME}"

# torch-fidelity's result keys -> ours.
_RESULT_KEYS = {
    "frechet_inception_distance": "fid",
    "kernel_inception_distance_mean": "kid_mean",
    "kernel_inception_distance_std": "kid_std",
    "precision": "precision",
    "recall": "recall",
}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ase-search/fid`` (``~/.cache/ase-search/fid`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ase-search" / "fid"


@dataclass(frozen=True)
class FIDConfig:
    """How FID is measured.

    Args:
        extractor: ``"mnist-classifier"`` (FID-MNIST, shipped weights) or ``"inception-v3-compat"``
            (standard FID; needs ``fid_weights``).
        fid_weights: local weights file of the extractor. Required for Inception-v3
            (``weights-inception-2015-12-05-6726825d.pth``); for the digit classifier ``None``
            means the shipped weights.
        kid: also compute KID (``kid_mean``, ``kid_std``).
        prc: also compute precision and recall (k-NN manifolds, k = 3).
        cache_dir: where reference features/statistics are cached; ``None`` for
            ``default_cache_dir()``.
        batch_size: images per feature-extractor batch.
        progress: let torch-fidelity print progress to stderr.
        feature_layer: extractor layer the metrics use; ``None`` for the standard one (``"2048"``
            for Inception-v3, ``"128"`` for the digit classifier). Other layers give numbers that
            are not comparable with published FIDs.
    """

    extractor: str = "mnist-classifier"
    fid_weights: str | None = None
    kid: bool = False
    prc: bool = False
    cache_dir: str | None = None
    batch_size: int = 200
    progress: bool = False
    feature_layer: str | None = None

    def __post_init__(self) -> None:
        if self.extractor not in EXTRACTORS:
            raise MetricsError(f"extractor must be one of {EXTRACTORS}, got {self.extractor!r}")
        if self.feature_layer is not None and self.feature_layer not in FEATURE_LAYERS[self.extractor]:
            raise MetricsError(
                f"feature_layer must be one of {FEATURE_LAYERS[self.extractor]} for {self.extractor}, "
                f"got {self.feature_layer!r}"
            )
        # Paths are stored as str so the config stays JSON-serialisable.
        for name in ("fid_weights", "cache_dir"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (str, os.PathLike)) or not str(value):
                    raise MetricsError(f"{name} must be a path or None, got {value!r}")
                object.__setattr__(self, name, str(value))
        if self.extractor == "inception-v3-compat" and self.fid_weights is None:
            raise MetricsError(_missing_inception_message("fid_weights is None"))
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise MetricsError(f"batch_size must be a positive int, got {self.batch_size!r}")


def _missing_inception_message(problem: str) -> str:
    return (
        f"the inception-v3-compat extractor needs torch-fidelity's Inception-v3 weights file "
        f"{INCEPTION_WEIGHTS_NAME} and nothing may be downloaded at run time ({problem}). "
        f"Download it once from the torch-fidelity GitHub releases ({INCEPTION_WEIGHTS_URL}) and pass its "
        f"local path as FIDConfig(fid_weights=PATH); pytorch-fid's pt_inception-2015-12-05-6726825d.pth is a "
        f"separate conversion and is only accepted if it loads. For MNIST use extractor='mnist-classifier'"
    )


def _file_hash(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:10]


def extractor_weights(config: FIDConfig) -> Path:
    """The weights file the extractor will load, checked to exist and to be the right kind."""
    if config.extractor == "mnist-classifier":
        from ase_search.metrics.extractor import DEFAULT_WEIGHTS, load_classifier

        path = Path(config.fid_weights).expanduser() if config.fid_weights is not None else DEFAULT_WEIGHTS
        load_classifier(path)  # raises MetricsError naming the file if it is missing or wrong
        return path
    path = Path(config.fid_weights).expanduser()
    if not path.is_file():
        raise MetricsError(_missing_inception_message(f"fid_weights={config.fid_weights!r} does not exist"))
    # Check the file before torch-fidelity unpickles it (it loads with weights_only=False).
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MetricsError(_missing_inception_message(f"fid_weights={config.fid_weights!r} is unreadable: {e}")) from e
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    last_block = "Mixed_7c.branch_pool.conv.weight"
    if not isinstance(fc, torch.Tensor) or tuple(fc.shape) != (1008, 2048) or last_block not in state:
        raise MetricsError(
            _missing_inception_message(f"fid_weights={config.fid_weights!r} is not an Inception-v3 FID state dict")
        )
    return path


################################################################################
#                                 Datasets                                     #
################################################################################


class _UInt8Images(Dataset):
    """Generated uint8 images ``(N, C, H, W)`` as the image-only Dataset torch-fidelity wants."""

    def __init__(self, images: torch.Tensor, *, rgb: bool) -> None:
        self.images = images
        self.rgb = rgb

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.images[i]  # (C, H, W) uint8
        return x.expand(3, -1, -1) if self.rgb and x.shape[0] == 1 else x


class _ReferenceImages(Dataset):
    """A data set spec's images as uint8 ``(C, R, R)``, without labels."""

    def __init__(self, spec: str, *, resolution: int, channels: int, rgb: bool) -> None:
        from ase_search.data import LatentsDataset, build_dataset

        self.dataset = build_dataset(spec, resolution=resolution, channels=channels)
        if isinstance(self.dataset, LatentsDataset):
            raise MetricsError(
                f"reference {spec!r} holds latents; FID needs images: pass 'mnist' or a folder of images"
            )
        self.rgb = rgb

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        if hasattr(self.dataset, "load_uint8"):
            x = self.dataset.load_uint8(i)  # (C, R, R) uint8, straight from the file
        else:
            x, _ = self.dataset[i]  # (C, R, R) in [-1, 1]
            x = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return x.expand(3, -1, -1) if self.rgb and x.shape[0] == 1 else x


################################################################################
#                                  Metrics                                     #
################################################################################


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``, via torch-fidelity (which
    takes the trace of the square root from the eigenvalues of ``sigma1 @ sigma2``).

    Args:
        mu1: mean ``(D,)``.
        sigma1: covariance ``(D, D)``.
        mu2: mean ``(D,)``.
        sigma2: covariance ``(D, D)``.

    Returns:
        The distance (FID when the statistics are of extractor features).
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    mu1, mu2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise MetricsError(
            f"frechet_distance needs mu1, mu2 of shape (D,) and sigma1, sigma2 of shape (D, D); got "
            f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}"
        )
    stats1, stats2 = {"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2}
    return fid_statistics_to_metric(stats1, stats2, verbose=False)[KEY_METRIC_FID]


def compute_fid(images: torch.Tensor, *, reference: str | torch.Tensor,
                config: FIDConfig | None = None) -> dict[str, float]:
    """FID of generated images against a reference data set (plus KID, precision/recall on request).

    Reference features and statistics are cached under ``config.cache_dir`` per (data set key,
    resolution, channels, extractor and its weights), so repeated calls only extract features of
    ``images``. Runs on CUDA when available.

    Args:
        images: generated images, uint8 ``(N, C, H, W)`` with ``C`` 1 or 3 and ``H == W``; N >= 2.
        reference: data set spec (``"mnist"`` or a folder of images), built at ``H`` x ``H`` with
            ``C`` channels, or a second uint8 image tensor shaped like ``images`` (e.g. the full
            model's samples; its features are not cached). 1-channel images are repeated to RGB
            for Inception-v3 only.
        config: metric settings; ``None`` for ``FIDConfig()`` (FID-MNIST).

    Returns:
        ``{"fid": ...}`` plus ``"kid_mean"``, ``"kid_std"`` if ``config.kid`` and ``"precision"``,
        ``"recall"`` if ``config.prc``.

    Raises:
        MetricsError: bad images, a latents reference, or missing/unreadable extractor weights.
        DataError: the reference spec names no usable data.
    """
    import torch_fidelity

    from ase_search.data import dataset_key
    from ase_search.metrics.extractor import register_mnist_extractor

    config = FIDConfig() if config is None else config
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise MetricsError(
            "images must be a uint8 tensor (N, C, H, W) in [0, 255]; convert samples x in [-1, 1] with "
            "((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)"
        )
    n, c, h, w = images.shape
    if c not in (1, 3) or h != w or n < 2:
        raise MetricsError(f"images must be (N >= 2, 1 or 3, H, H), got {tuple(images.shape)}")
    weights = extractor_weights(config)
    register_mnist_extractor()
    rgb = config.extractor == "inception-v3-compat"
    layer = config.feature_layer or DEFAULT_FEATURE_LAYER[config.extractor]
    if isinstance(reference, torch.Tensor):
        if reference.dtype != torch.uint8 or reference.shape[1:] != images.shape[1:]:
            raise MetricsError(f"a reference tensor must be uint8 shaped like the images "
                               f"(N, {c}, {h}, {w}), got {reference.dtype} {tuple(reference.shape)}")
        reference_images: Dataset = _UInt8Images(reference.cpu(), rgb=rgb)
        cache_name = None
    else:
        reference_images = _ReferenceImages(reference, resolution=h, channels=c, rgb=rgb)
        cache_name = f"{dataset_key(reference, h)}-c{c}-w{_file_hash(weights)}"
    kwargs: dict[str, Any] = dict(
        input1=_UInt8Images(images.cpu(), rgb=rgb),
        input2=reference_images,
        input2_cache_name=cache_name,
        cache=cache_name is not None,
        cache_root=str(Path(config.cache_dir) if config.cache_dir is not None else default_cache_dir()),
        feature_extractor=config.extractor,
        feature_extractor_weights_path=str(weights),
        fid=True,
        kid=config.kid,
        prc=config.prc,
        feature_layer_fid=layer,
        feature_layer_kid=layer,
        feature_layer_prc=layer,
        kid_subset_size=min(1000, n, len(reference_images)),
        cuda=torch.cuda.is_available(),
        batch_size=config.batch_size,
        # No loader worker processes, and precision/recall in batches rather than as full N x M
        # distance matrices (50k x 50k floats would be 10 GB).
        save_cpu_ram=True,
        verbose=config.progress,
        datasets_download=False,
    )
    try:
        metrics = torch_fidelity.calculate_metrics(**kwargs)
    except RuntimeError as e:
        if rgb and "state_dict" in str(e):  # strict load of a same-shaped but different network
            raise MetricsError(_missing_inception_message(f"{weights} does not match the network: {e}")) from e
        raise
    out = {ours: float(metrics[theirs]) for theirs, ours in _RESULT_KEYS.items() if theirs in metrics}
    # A squared distance: the matrix square root's rounding can leave one of two identical
    # feature sets at -1e-5 instead of 0.
    out["fid"] = max(0.0, out["fid"])
    return out
