from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest

from ase_search.data import load_mnist, mnist_split
from ase_search.metrics.extractor import (
    DEFAULT_WEIGHTS,
    EXTRACTOR_NAME,
    MNISTFeatureExtractor,
    _outliers,
    _predict,
    _random_shift,
    calibrate_classifier,
    classifier_confidence,
    evaluate_classifier,
    fit_temperature,
    load_classifier,
    register_mnist_extractor,
    split_checksum,
    train_extractor,
)
from ase_search.metrics.fid import MetricsError


@pytest.fixture(scope="module")
def shipped():
    return load_classifier()


@pytest.fixture(scope="module")
def held_out():
    images, labels = load_mnist()
    _, test_idx = mnist_split()
    return images[test_idx], labels[test_idx]


def test_shipped_weights_file_is_small_and_loads_weights_only():
    assert DEFAULT_WEIGHTS.is_file()
    assert DEFAULT_WEIGHTS.stat().st_size < 1_000_000
    checkpoint = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"state_dict", "meta"}
    for key in ("accuracy", "seed", "epochs", "date", "split_sha1", "wall_time_s"):
        assert key in checkpoint["meta"]


def test_shipped_weights_reach_96_percent_on_held_out_digits(shipped, held_out):
    model, meta = shipped
    images, labels = held_out
    # The weights were evaluated on exactly this held-out split...
    assert meta["split_sha1"] == split_checksum(mnist_split()[1])
    accuracy = evaluate_classifier(model, images, labels)
    assert accuracy >= 0.96
    assert meta["noise_confidence"] < 0.3
    # ...and the recorded accuracy is the one they really have.
    assert accuracy == pytest.approx(meta["accuracy"], abs=1e-3)


def test_classifier_confidence_high_on_digits_low_on_noise(shipped, held_out):
    model, _ = shipped
    images, labels = held_out
    probs = classifier_confidence(images[:300], model=model)
    assert probs.shape == (300, 10)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(300))
    assert (probs.argmax(dim=1) == labels[:300]).float().mean() >= 0.95
    noise = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    noise_top1 = classifier_confidence(noise, model=model).max(dim=1).values.mean()
    assert probs.max(dim=1).values.mean() > 0.8 > noise_top1
    # float images in [-1, 1] and 3-channel copies are accepted and mean the same thing
    as_float = images[:5].float() / 127.5 - 1.0
    torch.testing.assert_close(classifier_confidence(as_float, model=model), probs[:5])
    torch.testing.assert_close(classifier_confidence(images[:5].expand(-1, 3, -1, -1), model=model), probs[:5])


@pytest.mark.parametrize("true_temperature", [0.3, 1.0, 4.0])
def test_fit_temperature_recovers_the_temperature_that_generated_the_labels(true_temperature):
    generator = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(40_000, 10, generator=generator, dtype=torch.float64)  # (N, 10)
    labels = torch.multinomial((logits / true_temperature).softmax(dim=1), 1, generator=generator)[:, 0]
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.04)
    # and it is the NLL minimiser: nudging it either way costs likelihood
    nll = lambda t: F.cross_entropy(logits / t, labels).item()  # noqa: E731
    assert nll(fitted) < min(nll(fitted * 1.05), nll(fitted / 1.05))
    with pytest.raises(ValueError, match="logits must be"):
        fit_temperature(logits[0], labels[:1])


def test_shipped_temperature_is_calibrated_on_digits_it_was_not_fitted_on(shipped, held_out):
    model, meta = shipped
    images, labels = held_out
    # the recorded temperature is what calibrate_classifier fits (first half of the held-out split)
    refit = calibrate_classifier(load_classifier()[0])
    assert meta["temperature"] == pytest.approx(refit["temperature"], rel=1e-3)
    assert model.temperature == meta["temperature"]
    # on the second half (unseen by the fit) calibrated confidence tracks accuracy: real digits
    # pass the testbed's ">= 0.9" bar about as often as they are classified correctly
    check = slice(len(labels) // 2, None)
    probs = classifier_confidence(images[check], model=model)
    top1, predicted = probs.max(dim=1)
    accuracy = (predicted == labels[check]).double().mean().item()
    assert (top1 >= 0.9).double().mean().item() >= 0.9
    assert top1.double().mean().item() == pytest.approx(accuracy, abs=0.03)
    # uncalibrated (T = 1) label smoothing caps the confidence near 0.91: most digits would fail
    raw_top1 = _predict(model, images[check]).softmax(dim=1).max(dim=1).values
    assert (raw_top1 >= 0.9).double().mean().item() < 0.9


def test_torch_fidelity_extractor_returns_classifier_features(shipped, held_out):
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import create_feature_extractor

    model, _ = shipped
    images, _ = held_out
    register_mnist_extractor()
    register_mnist_extractor()  # idempotent
    assert FEATURE_EXTRACTORS_REGISTRY[EXTRACTOR_NAME] is MNISTFeatureExtractor
    fe = create_feature_extractor(EXTRACTOR_NAME, ["128", "logits"], cuda=False, verbose=False)
    feats, logits = fe(images[:16])
    with torch.no_grad():
        x = images[:16].float() / 127.5 - 1.0
        torch.testing.assert_close(feats, model.features(x))
        torch.testing.assert_close(logits, model(x))
    assert feats.shape == (16, 128)
    with pytest.raises(MetricsError, match="uint8"):
        fe(images[:2].float())


def test_random_shift_is_a_translation_with_black_padding():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 28, 28, generator=g) * 2 - 1
    out = _random_shift(x, 2, g)
    assert out.shape == x.shape
    shifts_seen = set()
    for i in range(32):
        # Independent reference: pad with -1, then try every crop offset.
        padded = F.pad(x[i], (2, 2, 2, 2), value=-1.0)
        matches = [
            (dy, dx) for dy in range(5) for dx in range(5) if torch.equal(padded[:, dy : dy + 28, dx : dx + 28], out[i])
        ]
        assert len(matches) == 1
        shifts_seen.add(matches[0])
    assert len(shifts_seen) > 5


def test_outliers_are_non_digits_of_four_kinds():
    g = torch.Generator().manual_seed(0)
    images, _ = load_mnist()
    x = images[:8].float() / 127.5 - 1.0
    out = _outliers(x, g)
    assert out.shape == x.shape and out.min() >= -1.0 and out.max() <= 1.0
    # kinds cycle uniform, blobs, constant, shuffled
    for i in (2, 6):
        assert torch.all(out[i] == out[i].flatten()[0])
    for i in (3, 7):
        torch.testing.assert_close(out[i].flatten().sort().values, x[i].flatten().sort().values)
        assert not torch.equal(out[i], x[i])
    # uniform noise is rough, blobs are smooth: compare neighbouring-pixel differences
    roughness = (out[:, :, :, 1:] - out[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    assert roughness[0] > 3 * roughness[1] and roughness[4] > 3 * roughness[5]


def test_train_extractor_one_epoch_saves_loadable_weights(tmp_path):
    out = tmp_path / "clf.pt"
    # outlier exposure off to halve the cost; its effect is checked on the shipped weights
    meta = train_extractor(epochs=1, seed=3, out_path=out, progress=False, outlier_weight=0.0)
    model, saved_meta = load_classifier(out)
    assert saved_meta == meta
    assert meta["epochs"] == 1 and meta["seed"] == 3 and meta["n_train"] == 4000 and meta["n_test"] == 1000
    images, labels = load_mnist()
    _, test_idx = mnist_split()
    assert evaluate_classifier(model, images[test_idx], labels[test_idx]) == pytest.approx(meta["accuracy"])
    assert meta["accuracy"] > 0.8  # one epoch already learns digits; chance is 0.1
    with pytest.raises(ValueError, match="epochs"):
        train_extractor(epochs=0, out_path=None)


def test_load_classifier_errors(tmp_path):
    with pytest.raises(MetricsError, match="not found"):
        load_classifier(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(MetricsError, match="not a digit classifier checkpoint"):
        load_classifier(bad)
