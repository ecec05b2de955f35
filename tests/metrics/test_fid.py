from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from ase_search.data import DataError, dataset_key, load_mnist, mnist_split
from ase_search.metrics.extractor import MNISTFeatureExtractor, load_classifier
from ase_search.metrics.fid import (
    DEFAULT_FEATURE_LAYER,
    FEATURE_LAYERS,
    INCEPTION_WEIGHTS_NAME,
    FIDConfig,
    MetricsError,
    compute_fid,
    frechet_distance,
)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    # On small shared CPU runners multi-threaded OpenBLAS busy-waits and gets 10-30x slower
    # (KID kernels, eigvals); one thread gives the same numbers quickly.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield
    torch.set_num_threads(threads)


def _scipy_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """Independent FID: numpy statistics and scipy's matrix square root."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # singular: some features are constant
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


@pytest.fixture(scope="module")
def half_mnist_features(mnist):
    return _classifier_features(mnist[0][::2])  # (2500, 128), computed outside torch-fidelity


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory, mnist):
    """300 held-out digits (30 per class) as PNG files: a small image-folder reference."""
    images, labels = mnist
    _, test_idx = mnist_split()
    folder = tmp_path_factory.mktemp("digits")
    chosen = test_idx[labels[test_idx].argsort(stable=True)].view(10, 100)[:, :30].flatten()  # (300,)
    for k, i in enumerate(chosen.tolist()):
        Image.fromarray(images[i, 0].numpy()).save(folder / f"{k:03d}.png")
    return str(folder), chosen


def test_frechet_distance_matches_scipy_on_random_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(loc=0.5, size=(300, 16)) @ rng.normal(size=(16, 16))
    ours = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert ours == pytest.approx(_scipy_fid(a, b), rel=1e-6)


def test_frechet_distance_matches_scipy_on_classifier_features(mnist, half_mnist_features):
    labels = mnist[1][::2].numpy()
    f1 = half_mnist_features[labels < 5]
    f2 = half_mnist_features[labels >= 5]
    ours = frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert ours > 1.0
    assert ours == pytest.approx(_scipy_fid(f1, f2), rel=1e-6)
    with pytest.raises(MetricsError, match="shape"):
        frechet_distance(f1.mean(0), np.eye(3), f2.mean(0), np.eye(3))


def test_compute_fid_agrees_with_independent_computation(mnist, digit_folder, tmp_path):
    images, _ = mnist
    folder, in_folder = digit_folder
    generated = images[1::7][:400]  # every class
    got = compute_fid(generated, reference=folder, config=FIDConfig(cache_dir=str(tmp_path)))
    # the PNGs hold exactly these uint8 digits, so the reference features can be computed directly
    expected = _scipy_fid(_classifier_features(generated), _classifier_features(images[in_folder]))
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


def test_kid_and_precision_recall(mnist, digit_folder, tmp_path):
    images, labels = mnist
    folder, in_folder = digit_folder
    taken = set(in_folder.tolist())
    others = torch.tensor([i for i in range(0, 5000, 7) if i not in taken][:300])  # real, not in the reference
    noise = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    config = FIDConfig(cache_dir=str(tmp_path), kid=True, prc=True)
    real = compute_fid(images[others], reference=folder, config=config)
    fake = compute_fid(noise, reference=folder, config=config)
    assert set(real) == {"fid", "kid_mean", "kid_std", "precision", "recall"}
    assert real["fid"] < fake["fid"] and real["kid_mean"] < fake["kid_mean"]
    assert real["precision"] > 0.5 and real["recall"] > 0.5
    assert fake["precision"] < 0.05 and fake["recall"] < 0.05


def test_reference_features_are_cached(mnist, digit_folder, tmp_path, monkeypatch):
    images, _ = mnist
    folder, _ = digit_folder
    seen = []
    forward = MNISTFeatureExtractor.forward

    def counting_forward(self, x):
        seen.append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(MNISTFeatureExtractor, "forward", counting_forward)
    config = FIDConfig(cache_dir=str(tmp_path))
    first = compute_fid(images[:100], reference=folder, config=config)
    assert sum(seen) == 100 + 300
    cached = sorted(tmp_path.iterdir())
    assert cached and all(p.name.startswith(dataset_key(folder, 28) + "-c1-") for p in cached)
    mtimes = [p.stat().st_mtime_ns for p in cached]
    seen.clear()
    second = compute_fid(images[:100], reference=folder, config=config)
    assert sum(seen) == 100  # only the generated images went through the extractor
    assert second == first
    assert [p.stat().st_mtime_ns for p in sorted(tmp_path.iterdir())] == mtimes
    # another resolution is another reference
    seen.clear()
    compute_fid(torch.nn.functional.interpolate(images[:100], size=32), reference=folder, config=config)
    assert sum(seen) == 100 + 300


def test_inception_without_weights_gives_clear_error(tmp_path, mnist):
    with pytest.raises(MetricsError, match=INCEPTION_WEIGHTS_NAME):
        FIDConfig(extractor="inception-v3-compat")
    images, _ = mnist
    missing = FIDConfig(extractor="inception-v3-compat", fid_weights=tmp_path / "nope.pth", cache_dir=tmp_path)
    with pytest.raises(MetricsError, match=rf"{INCEPTION_WEIGHTS_NAME}.*fid_weights=PATH"):
        compute_fid(images[:4], reference="mnist", config=missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"definitely not weights")
    with pytest.raises(MetricsError, match="unreadable"):
        compute_fid(images[:4], reference="mnist", config=FIDConfig("inception-v3-compat", fid_weights=garbage))
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
    gray = torch.from_numpy(rng.integers(0, 256, (2, 1, 16, 16), dtype=np.uint8))
    for i in range(2):
        Image.fromarray(gray[i, 0].numpy()).save(folder / f"{i}.png")
    # The 64-d stem features keep the test fast; the default 2048-d layer runs the same code path.
    config = FIDConfig(
        extractor="inception-v3-compat", fid_weights=str(weights), cache_dir=str(tmp_path / "cache"), feature_layer="64"
    )
    # 1-channel images are repeated to RGB for Inception; identical sets are at distance ~0
    assert abs(compute_fid(gray, reference=str(folder), config=config)["fid"]) < 1e-3


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


def test_feature_layers_match_torch_fidelity():
    from torch_fidelity import FeatureExtractorInceptionV3

    assert FEATURE_LAYERS["inception-v3-compat"] == FeatureExtractorInceptionV3.get_provided_features_list()
    assert FEATURE_LAYERS["mnist-classifier"] == MNISTFeatureExtractor.get_provided_features_list()
    for name, layer in DEFAULT_FEATURE_LAYER.items():
        assert layer in FEATURE_LAYERS[name]
    with pytest.raises(MetricsError, match="feature_layer"):
        FIDConfig(feature_layer="2048")


def test_config_paths_are_stored_as_str(tmp_path):
    config = FIDConfig(cache_dir=tmp_path, fid_weights=tmp_path / "w.pt")
    assert config.cache_dir == str(tmp_path) and config.fid_weights == str(tmp_path / "w.pt")
