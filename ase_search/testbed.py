"""The embedded testbed: small DiT and U-ViT models trained by this project on the MNIST digits.

``ase-search`` commands default to these so that everything runs offline on a fresh machine. The
weights ship inside the package (``ase_search/assets/testbed/``) with a model card each; real
checkpoints (DiT-XL/2, U-ViT-S/4, ...) load from local paths with ``--checkpoint``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

__all__ = ["TESTBEDS", "Testbed", "load_model"]

ASSETS = Path(__file__).resolve().parent / "assets" / "testbed"


@dataclass(frozen=True)
class Testbed:
    """A shipped testbed model: registry name, weight file, default data and search space."""

    arch: str
    model_name: str
    weights: str
    dataset: str = "mnist"

    @property
    def path(self) -> Path:
        return ASSETS / self.weights

    @property
    def space(self) -> Path:
        return Path(__file__).resolve().parents[1] / "search_spaces" / f"{self.arch}.yaml"


TESTBEDS: dict[str, Testbed] = {
    "dit": Testbed("dit", "DiT-T", "dit-t.safetensors"),
    "uvit": Testbed("uvit", "U-ViT-T", "uvit-t.safetensors"),
}


def load_model(arch: str, checkpoint: str | Path | None = None, *, ema: bool = True) -> nn.Module:
    """Load ``checkpoint`` (a local path), or the shipped testbed model of ``arch``, in eval mode."""
    from ase_search.models import CheckpointError, load_checkpoint

    if arch not in TESTBEDS:
        raise ValueError(f"arch must be one of {list(TESTBEDS)}, got {arch!r}")
    if checkpoint is None:
        testbed = TESTBEDS[arch]
        if not testbed.path.is_file():
            raise CheckpointError(
                f"the {arch} testbed weights ({testbed.path.name}) are not in this checkout; "
                f"train them with `ase-search pretrain --arch {arch}` and "
                f"`ase-search export-weights`, or pass --checkpoint PATH"
            )
        checkpoint = testbed.path
    model, _ = load_checkpoint(checkpoint, ema=ema)
    if model.arch != arch:
        raise CheckpointError(f"{checkpoint} holds a {model.arch} model, not {arch}; "
                              f"pass --arch {model.arch}")
    return model.eval()
