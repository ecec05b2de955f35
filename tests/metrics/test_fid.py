from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from ase_search.data import DataError, load_mnist
from ase_search.metrics.extractor import MNISTFeatureExtractor, load_classifier
from ase_search.metrics.fid import (
    INCEPTION_WEIGHTS_NAME,
    FIDConfig,
    MetricsError,
    compute_fid,
    frechet_distance,
)


def _scipy_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """Independent FID: numpy statistics and scipy's matrix square root."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _classifier_features(images: torch.Tensor) -> np.ndarray:
    model, _ = load_classifier()
    with torch.no_grad():
        return model.features(images.float() / 127.5 - 1.0).double().numpy()  # (N, 128)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fid_cache"))


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_frechet_distance_matches_scipy_on_random_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(loc=0.5, size=(300, 16)) @ rng.normal(size=(16, 16))
    ours = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert ours == pytest.approx(_scipy_fid(a, b), rel=1e-6)


def test_frechet_distance_matches_scipy_on_classifier_features(mnist):
    images, labels = mnist
    f1 = _classifier_features(images[labels < 5])
    f2 = _classifier_features(images[labels >= 5])
    ours = frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert ours > 1.0
    assert ours == pytest.approx(_scipy_fid(f1, f2), rel=1e-6)
    with pytest.raises(MetricsError, match="shape"):
        frechet_distance(f1.mean(0), np.eye(3), f2.mean(0), np.eye(3))


def test_compute_fid_agrees_with_independent_computation(mnist, cache_dir):
    images, labels = mnist
    generated = images[::7][:400]  # every class, not the whole reference
    got = compute_fid(generated, reference="mnist", config=FIDConfig(cache_dir=cache_dir))
    expected = _scipy_fid(_classifier_features(generated), _classifier_features(images))
    assert got["fid"] == pytest.approx(expected, rel=1e-4)
    assert set(got) == {"fid"}


def test_fid_of_mnist_against_itself_is_zero_and_noise_is_far(mnist, cache_dir):
    images, _ = mnist
    config = FIDConfig(cache_dir=cache_dir)
    assert abs(compute_fid(images, reference="mnist", config=config)["fid"]) < 1e-3
    noise = torch.randint(0, 256, (500, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    noise_fid = compute_fid(noise, reference="mnist", config=config)["fid"]
    subset_fid = compute_fid(images[::10], reference="mnist", config=config)["fid"]
    assert noise_fid > 100 and noise_fid > 20 * subset_fid


def test_kid_and_precision_recall(mnist, cache_dir):
    images, _ = mnist
    noise = torch.randint(0, 256, (200, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    config = FIDConfig(cache_dir=cache_dir, kid=True, prc=True)
    real = compute_fid(images[::25], reference="mnist", config=config)
    fake = compute_fid(noise, reference="mnist", config=config)
    assert set(real) == {"fid", "kid_mean", "kid_std", "precision", "recall"}
    assert real["kid_mean"] < fake["kid_mean"]
    assert real["precision"] > 0.9 and fake["precision"] < 0.1


def test_reference_features_are_cached(mnist, tmp_path, monkeypatch):
    images, _ = mnist
    seen = []
    forward = MNISTFeatureExtractor.forward

    def counting_forward(self, x):
        seen.append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(MNISTFeatureExtractor, "forward", counting_forward)
    config = FIDConfig(cache_dir=str(tmp_path))
    first = compute_fid(images[:300], reference="mnist", config=config)
    assert sum(seen) == 300 + 5000
    cached = sorted(tmp_path.iterdir())
    assert cached and all(p.name.startswith("mnist5k-r28-c1-") for p in cached)
    mtimes = [p.stat().st_mtime_ns for p in cached]
    seen.clear()
    second = compute_fid(images[:300], reference="mnist", config=config)
    assert sum(seen) == 300  # only the generated images went through the extractor
    assert second == first
    assert [p.stat().st_mtime_ns for p in sorted(tmp_path.iterdir())] == mtimes
    # a different resolution is a different reference
    seen.clear()
    images32 = torch.nn.functional.interpolate(images[:300].float(), size=32).to(torch.uint8)
    compute_fid(images32, reference="mnist", config=config)
    assert sum(seen) == 300 + 5000


def test_inception_without_weights_gives_clear_error(tmp_path, mnist):
    with pytest.raises(MetricsError, match=INCEPTION_WEIGHTS_NAME):
        FIDConfig(extractor="inception-v3-compat")
    images, _ = mnist
    missing = FIDConfig(extractor="inception-v3-compat", fid_weights=str(tmp_path / "nope.pth"), cache_dir=str(tmp_path))
    with pytest.raises(MetricsError, match=rf"{INCEPTION_WEIGHTS_NAME}.*fid_weights=PATH"):
        compute_fid(images[:4], reference="mnist", config=missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"definitely not weights")
    with pytest.raises(MetricsError, match="unreadable"):
        compute_fid(images[:4], reference="mnist", config=FIDConfig(extractor="inception-v3-compat", fid_weights=garbage))
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(10, 128)}, wrong)
    with pytest.raises(MetricsError, match="not an Inception-v3 FID state dict"):
        compute_fid(images[:4], reference="mnist", config=FIDConfig(extractor="inception-v3-compat", fid_weights=wrong))


def test_inception_path_runs_offline_with_local_weights(tmp_path, monkeypatch):
    """Random weights with the right layout stand in for the real file: checks plumbing, not values."""
    import torchvision

    import torch_fidelity.feature_extractor_inceptionv3 as inception

    def no_download(*args, **kwargs):
        raise AssertionError("torch-fidelity tried to download weights")

    monkeypatch.setattr(inception, "load_state_dict_from_url", no_download)
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    weights = tmp_path / INCEPTION_WEIGHTS_NAME
    torch.save(net.state_dict(), weights)
    folder = tmp_path / "ref"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    config = FIDConfig(extractor="inception-v3-compat", fid_weights=str(weights), cache_dir=str(tmp_path / "cache"))
    gray = torch.from_numpy(np.stack([np.asarray(Image.open(folder / f"{i}.png")) for i in range(3)]))[:, None]
    # 1-channel images are repeated to RGB for Inception; identical sets are at distance ~0
    assert abs(compute_fid(gray, reference=str(folder), config=config)["fid"]) < 1e-3
    shifted = torch.roll(gray, 5, dims=-1)
    assert compute_fid(shifted, reference=str(folder), config=config)["fid"] > 0


def test_bad_inputs():
    with pytest.raises(MetricsError, match="uint8"):
        compute_fid(torch.rand(4, 1, 28, 28), reference="mnist")
    with pytest.raises(MetricsError, match=r"\(N >= 2"):
        compute_fid(torch.zeros(4, 2, 28, 28, dtype=torch.uint8), reference="mnist")
    with pytest.raises(MetricsError, match="extractor"):
        FIDConfig(extractor="vgg16")
    with pytest.raises(MetricsError, match="batch_size"):
        FIDConfig(batch_size=0)
    assert issubclass(MetricsError, ValueError)


def test_reference_must_be_images(tmp_path):
    latents = tmp_path / "lat.pt"
    torch.save({"latents": torch.randn(4, 1, 28, 28)}, latents)
    images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(MetricsError, match="latents"):
        compute_fid(images, reference=str(latents), config=FIDConfig(cache_dir=str(tmp_path)))
    with pytest.raises(DataError):
        compute_fid(images, reference=str(tmp_path / "missing"), config=FIDConfig(cache_dir=str(tmp_path)))


def test_config_paths_are_stored_as_str(tmp_path):
    config = FIDConfig(cache_dir=tmp_path, fid_weights=tmp_path / "w.pt")
    assert config.cache_dir == str(tmp_path) and config.fid_weights == str(tmp_path / "w.pt")
