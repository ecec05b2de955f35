"""A small digit classifier used as the feature extractor of "FID-MNIST".

Inception-v3 features say little about 28x28 digits and its weights cannot be fetched here, so the
MNIST testbed measures FID in the 128-d penultimate layer (before its ReLU) of a small CNN trained
on 4,000 of the embedded digits (``ase_search.data.mnist_split``) and checked on the 1,000 held-out
ones. The shipped weights live in ``ase_search/assets/mnist_classifier.pt``; rebuild them with
``python -m ase_search.metrics.extractor``.

The classifier is registered with torch-fidelity as the feature extractor ``"mnist-classifier"``;
it also gives ``classifier_confidence`` for checking that generated digits look like digits.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor


__all__ = [
    "MetricsError",
    "DEFAULT_WEIGHTS",
    "EXTRACTOR_NAME",
    "FEATURE_DIM",
    "DigitClassifier",
    "MNISTFeatureExtractor",
    "calibrate_classifier",
    "classifier_confidence",
    "evaluate_classifier",
    "fit_temperature",
    "load_classifier",
    "register_mnist_extractor",
    "split_checksum",
    "train_extractor",
]


class MetricsError(ValueError):
    """A metric cannot be computed as configured (missing weights, wrong images, ...)."""


EXTRACTOR_NAME = "mnist-classifier"
FEATURE_DIM = 128
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "mnist_classifier.pt"
_INPUT_SIZE = 28


################################################################################
#                                  Network                                     #
################################################################################


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class DigitClassifier(nn.Module):
    """A ~110k-parameter CNN for 28x28 gray digits.

    Two conv stages (28 -> 14 -> 7), a third conv pooled to 3x3, then a 128-d linear feature layer
    (the FID features, taken before its ReLU) and a linear classifier.

    Args:
        num_classes: number of digit classes.
        feature_dim: width of the penultimate (feature) layer.
    """

    def __init__(self, num_classes: int = 10, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.config = {"num_classes": num_classes, "feature_dim": feature_dim}
        self.body = nn.Sequential(
            _conv_bn(1, 16),
            _conv_bn(16, 16),
            nn.MaxPool2d(2),
            _conv_bn(16, 32),
            _conv_bn(32, 32),
            nn.MaxPool2d(2),
            _conv_bn(32, 64),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(64 * 3 * 3, feature_dim)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)
        # Softmax temperature from ``calibrate_classifier`` (kept in the checkpoint's metadata, not
        # its state dict, so the FID features never depend on it).
        self.temperature = 1.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """FID features of images ``x`` float ``(N, 1, 28, 28)`` in ``[-1, 1]``: ``(N, feature_dim)``.

        The penultimate layer *before* its ReLU. Outlier exposure teaches the net to switch every
        unit off for non-digits, so after the ReLU noise collapses onto the zero vector, where a
        few faint real digits also sit and k-NN precision then counts noise as realistic. Before
        the ReLU non-digits land in their own, far-away region.
        """
        h = self.body(x)  # (N, 64, 3, 3)
        return self.fc(h.flatten(1))  # (N, feature_dim)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)`` from ``features(x)``."""
        return self.head(self.dropout(F.relu(features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)`` of images ``x`` float ``(N, 1, 28, 28)`` in ``[-1, 1]``."""
        return self.classify(self.features(x))


def _prepare(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 1|3, H, W)`` (or float in ``[-1, 1]``) -> float ``(N, 1, 28, 28)`` in ``[-1, 1]``."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise MetricsError(f"images must be (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()
    if x.shape[1] == 3:
        x = x.mean(dim=1, keepdim=True)  # (N, 1, H, W): digits are gray
    if x.shape[-2:] != (_INPUT_SIZE, _INPUT_SIZE):
        x = F.interpolate(x, size=(_INPUT_SIZE, _INPUT_SIZE), mode="bilinear", antialias=True)
    return x  # (N, 1, 28, 28)


def load_classifier(path: str | os.PathLike | None = None) -> tuple[DigitClassifier, dict[str, Any]]:
    """Loads classifier weights written by ``train_extractor``.

    Args:
        path: weights file; ``None`` for the shipped ``DEFAULT_WEIGHTS``.

    Returns:
        ``(model, meta)``: the classifier in eval mode on CPU, and the metadata saved with it
        (held-out accuracy, seed, epochs, ...).

    Raises:
        MetricsError: if the file is missing or is not a classifier checkpoint.
    """
    path = Path(DEFAULT_WEIGHTS if path is None else path)
    if not path.is_file():
        raise MetricsError(
            f"digit classifier weights {str(path)!r} not found; pass fid_weights=None for the shipped weights "
            "or rebuild them with `python -m ase_search.metrics.extractor`"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        model = DigitClassifier(**checkpoint["meta"]["config"])
        model.load_state_dict(checkpoint["state_dict"])
    except Exception as e:  # a wrong file fails in many ways; all mean "not these weights"
        raise MetricsError(f"{str(path)!r} is not a digit classifier checkpoint written by train_extractor: {e}") from e
    model.requires_grad_(False)
    model.temperature = float(checkpoint["meta"].get("temperature", 1.0))
    return model.eval(), dict(checkpoint["meta"])


@torch.no_grad()
def _predict(model: DigitClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    device = next(model.parameters()).device
    logits = [model(_prepare(images[i : i + batch_size]).to(device)).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(logits)  # (N, num_classes)


def evaluate_classifier(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on uint8 images ``(N, 1, 28, 28)`` with labels ``(N,)``."""
    was_training = model.training
    model.eval()
    try:
        predictions = _predict(model, images).argmax(dim=1)  # (N,)
    finally:
        model.train(was_training)
    return (predictions == labels).sum().item() / len(labels)


def classifier_confidence(images: torch.Tensor, *, model: DigitClassifier | None = None) -> torch.Tensor:
    """Class probabilities the digit classifier gives each image.

    The logits are divided by the model's calibrated ``temperature`` (see ``calibrate_classifier``:
    label smoothing alone would cap the top-1 probability near 0.91), so ``probs.max(dim=1).values``
    is a calibrated top-1 confidence: 0.9 or more on most clean held-out digits, about 0.1 (chance
    level) on noise thanks to outlier exposure. ``probs.argmax(dim=1)`` is the predicted digit, e.g.
    to check class-conditional samples.

    Args:
        images: uint8 ``(N, 1 or 3, H, W)`` in ``[0, 255]`` or float in ``[-1, 1]``; resized to 28x28.
        model: a classifier; ``None`` loads the shipped weights.

    Returns:
        float ``(N, num_classes)`` softmax probabilities.
    """
    if model is None:
        model, _ = load_classifier()
    model.eval()
    return (_predict(model, images) / model.temperature).softmax(dim=1)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature scaling (Guo et al., 2017): the ``T > 0`` minimising the NLL of ``softmax(logits / T)``.

    The NLL is convex in ``1 / T``; a golden-section search over ``log T`` in ``[log 0.05, log 20]``
    finds its minimum to within 1e-4 relative.

    Args:
        logits: ``(N, C)`` uncalibrated logits of held-out examples.
        labels: ``(N,)`` their true classes.
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    logits, labels = logits.double(), labels.long()

    def nll(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), labels).item()

    lo, hi = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    f_a, f_b = nll(a), nll(b)
    while hi - lo > 1e-4:
        if f_a < f_b:  # minimum in [lo, b]
            hi, b, f_b = b, a, f_a
            a = hi - ratio * (hi - lo)
            f_a = nll(a)
        else:  # minimum in [a, hi]
            lo, a, f_a = a, b, f_b
            b = lo + ratio * (hi - lo)
            f_b = nll(b)
    return math.exp((lo + hi) / 2)


def calibrate_classifier(model: DigitClassifier, *, threshold: float = 0.9) -> dict[str, float]:
    """Fits ``model.temperature`` on half of the held-out digits and checks it on the other half.

    The held-out split of ``mnist_split`` is cut in two by position: temperature scaling is fitted
    on the first 500 digits; the second 500 measure the calibrated top-1 confidence. Sets
    ``model.temperature`` and returns ``temperature``, ``share_confident`` (share of the second half
    with calibrated top-1 >= ``threshold``), ``mean_confidence`` and ``accuracy`` on that half.
    """
    from ase_search.data import load_mnist, mnist_split

    images, labels = load_mnist()  # (5000, 1, 28, 28), (5000,)
    _, test_idx = mnist_split()
    fit_idx, check_idx = test_idx[: len(test_idx) // 2], test_idx[len(test_idx) // 2 :]
    model.eval()
    temperature = fit_temperature(_predict(model, images[fit_idx]), labels[fit_idx])
    model.temperature = temperature
    probs = classifier_confidence(images[check_idx], model=model)  # (500, 10)
    top1, predicted = probs.max(dim=1)
    return {
        "temperature": temperature,
        "share_confident": float((top1 >= threshold).double().mean()),
        "mean_confidence": float(top1.double().mean()),
        "accuracy": float((predicted == labels[check_idx]).double().mean()),
        "threshold": threshold,
        "n_check": len(check_idx),
    }


################################################################################
#                        torch-fidelity feature extractor                      #
################################################################################


class MNISTFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor over ``DigitClassifier``, registered as ``"mnist-classifier"``.

    Features: ``"128"`` (penultimate layer before its ReLU; FID, KID and precision/recall) and
    ``"logits"``.
    torch-fidelity passes its ``feature_extractor_weights_path`` kwarg through; ``None`` uses the
    shipped weights.

    Args:
        name: registry name (``"mnist-classifier"``).
        features_list: requested feature names, a subset of ``get_provided_features_list()``.
        feature_extractor_weights_path: classifier weights file or ``None``.
    """

    def __init__(
        self,
        name: str,
        features_list: list[str],
        feature_extractor_weights_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, features_list)
        self.classifier, self.meta = load_classifier(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return (str(FEATURE_DIM), "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": str(FEATURE_DIM), "kid": str(FEATURE_DIM), "prc": str(FEATURE_DIM)}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 1, _INPUT_SIZE, _INPUT_SIZE, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dtype != torch.uint8:
            raise MetricsError(f"the {EXTRACTOR_NAME} extractor expects uint8 images, got {x.dtype}")
        features = self.classifier.features(_prepare(x))  # (N, 128)
        out = {str(FEATURE_DIM): features, "logits": self.classifier.classify(features)}  # logits (N, 10)
        return tuple(out[name] for name in self.features_list)


def register_mnist_extractor() -> None:
    """Registers ``MNISTFeatureExtractor`` with torch-fidelity as ``"mnist-classifier"`` (idempotent)."""
    if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(EXTRACTOR_NAME, MNISTFeatureExtractor)


################################################################################
#                                  Training                                    #
################################################################################


def split_checksum(indices: torch.Tensor) -> str:
    """Short hash of a split's indices, stored with the weights to tie them to their held-out set."""
    return hashlib.sha1(indices.numpy().astype("<i8").tobytes()).hexdigest()[:16]


def _random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shifts each image of ``x`` (N, 1, H, W) by up to ``max_shift`` pixels, padding with background."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)  # (N, 1, H + 2s, W + 2s); -1 is black background
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)  # (N, 1, H, W)


def _outliers(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Non-digit images shaped like ``x`` (N, 1, H, W) in ``[-1, 1]``, for outlier exposure.

    A plain classifier is confidently wrong on noise (top-1 probability ~1), which would make
    ``classifier_confidence`` useless for spotting failed samples. Training it to be uncertain on
    these (Hendrycks et al., 2019, "Deep Anomaly Detection with Outlier Exposure") fixes that. Four
    kinds, one per quarter of the batch: uniform noise, smooth random blobs, constant images, and
    digits with their pixels shuffled (same ink, no shape).
    """
    n, _, h, w = x.shape
    kind = torch.arange(n) % 4  # (N,)
    uniform = torch.rand(x.shape, generator=generator) * 2 - 1  # (N, 1, H, W)
    coarse = torch.randn(n, 1, h // 4, w // 4, generator=generator)  # (N, 1, H/4, W/4)
    blobs = F.interpolate(coarse, size=(h, w), mode="bilinear").mul(2).tanh()  # (N, 1, H, W)
    constant = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1).expand_as(x)  # (N, 1, H, W)
    perm = torch.argsort(torch.rand(n, h * w, generator=generator), dim=1)  # (N, H*W)
    shuffled = x.flatten(1).gather(1, perm).view_as(x)  # (N, 1, H, W)
    choices = torch.stack([uniform, blobs, constant, shuffled])  # (4, N, 1, H, W)
    return choices[kind, torch.arange(n)]  # (N, 1, H, W)


@torch.no_grad()
def _noise_confidence(model: DigitClassifier, n: int = 1000, seed: int = 0) -> float:
    """Mean calibrated top-1 probability on uniform-noise images (low: the confidence is informative)."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n, 1, _INPUT_SIZE, _INPUT_SIZE), dtype=torch.uint8, generator=generator)
    return classifier_confidence(noise, model=model).max(dim=1).values.mean().item()


def train_extractor(
    *,
    epochs: int = 15,
    seed: int = 0,
    out_path: str | os.PathLike | None = DEFAULT_WEIGHTS,
    progress: bool = True,
    batch_size: int = 64,
    lr: float = 3e-3,
    max_shift: int = 2,
    outlier_weight: float = 0.5,
) -> dict[str, Any]:
    """Trains the digit classifier on the 4,000-digit split and evaluates it on the 1,000 held out.

    Adam with a one-cycle learning rate, label smoothing 0.1, random shifts of up to ``max_shift``
    pixels as augmentation, and outlier exposure (each batch also holds as many non-digit images,
    pushed towards the uniform prediction with weight ``outlier_weight``; see ``_outliers``). Runs
    on CPU with one thread.

    Args:
        epochs: passes over the 4,000 training digits.
        seed: seed of initialisation, shuffling and augmentation (the split itself is fixed).
        out_path: where to save ``{"state_dict", "meta"}`` (atomically); ``None`` to skip saving.
        progress: print one line per epoch to stderr.
        batch_size: training batch size.
        lr: peak learning rate.
        max_shift: largest random shift in pixels (0 disables augmentation).
        outlier_weight: weight of the outlier-exposure loss (0 disables it).

    Returns:
        The metadata saved with the weights: ``accuracy`` (held-out top-1), ``train_accuracy``,
        ``temperature`` and ``calibration`` (see ``calibrate_classifier``), ``noise_confidence``
        (mean calibrated top-1 probability on uniform noise), ``epochs``, ``seed``,
        ``wall_time_s``, ``n_params``, ``split_sha1``, ``date``, ``machine``...
    """
    from ase_search.data import load_mnist, mnist_split

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the extractor is tiny; more threads only contend on shared machines
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        images, labels = load_mnist()  # (5000, 1, 28, 28), (5000,)
        train_idx, test_idx = mnist_split()
        x_train = images[train_idx].float() / 127.5 - 1.0  # (4000, 1, 28, 28)
        y_train = labels[train_idx]
        model = DigitClassifier()
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        steps_per_epoch = -(-len(x_train) // batch_size)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(len(x_train), generator=generator)
            total_loss = 0.0
            for i in range(0, len(order), batch_size):
                batch = order[i : i + batch_size]
                x = x_train[batch]
                if max_shift > 0:
                    x = _random_shift(x, max_shift, generator)
                b = len(batch)
                if outlier_weight > 0:
                    x = torch.cat([x, _outliers(x, generator)])  # (2B, 1, 28, 28)
                logits = model(x)  # (B or 2B, 10)
                loss = F.cross_entropy(logits[:b], y_train[batch], label_smoothing=0.1)
                if outlier_weight > 0:
                    # cross-entropy to the uniform distribution over classes
                    loss = loss - outlier_weight * logits[b:].log_softmax(dim=1).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total_loss += loss.item() * len(batch)
            if progress:
                acc = evaluate_classifier(model, images[test_idx], labels[test_idx])
                print(
                    f"epoch {epoch + 1}/{epochs}  loss {total_loss / len(order):.4f}  held-out acc {acc:.4f}",
                    file=sys.stderr,
                )
        model.eval()
        calibration = calibrate_classifier(model)
        meta = {
            "config": model.config,
            "temperature": calibration["temperature"],
            "calibration": calibration,
            "accuracy": evaluate_classifier(model, images[test_idx], labels[test_idx]),
            "train_accuracy": evaluate_classifier(model, images[train_idx], labels[train_idx]),
            "n_train": len(train_idx),
            "n_test": len(test_idx),
            "split_sha1": split_checksum(test_idx),
            "epochs": epochs,
            "seed": seed,
            "batch_size": batch_size,
            "lr": lr,
            "max_shift": max_shift,
            "outlier_weight": outlier_weight,
            "noise_confidence": _noise_confidence(model),
            "n_params": sum(p.numel() for p in model.parameters()),
            "wall_time_s": round(time.perf_counter() - start, 1),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, 1 torch thread",
            "torch": str(torch.__version__),
        }
    finally:
        torch.set_num_threads(threads)
    if out_path is not None:
        _atomic_save({"state_dict": model.state_dict(), "meta": meta}, Path(out_path))
    return meta


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the weights ship with the package
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: list[str] | None = None) -> None:
    """``python -m ase_search.metrics.extractor``: retrain and save the digit classifier."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--calibrate-only", action="store_true",
                        help="keep the weights in --out (the FID features) and only refit the temperature")
    args = parser.parse_args(argv)
    if args.calibrate_only:
        model, meta = load_classifier(args.out)
        meta["calibration"] = calibrate_classifier(model)
        meta["temperature"] = meta["calibration"]["temperature"]
        meta["noise_confidence"] = _noise_confidence(model)
        _atomic_save({"state_dict": model.state_dict(), "meta": meta}, args.out)
    else:
        meta = train_extractor(epochs=args.epochs, seed=args.seed, out_path=args.out)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
