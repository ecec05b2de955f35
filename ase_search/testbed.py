"""The embedded testbed: small DiT and U-ViT models trained by this project on the MNIST digits.

``ase-search`` commands default to these so that everything runs offline on a fresh machine. The
weights ship inside the package (``ase_search/assets/testbed/``) with a model card each, and so do
the default search spaces (``ase_search/search_spaces/``); real checkpoints (DiT-XL/2, U-ViT-S/4,
...) load from local paths with ``--checkpoint``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

__all__ = ["SPACES", "TESTBEDS", "Testbed", "load_model"]

PACKAGE = Path(__file__).resolve().parent
ASSETS = PACKAGE / "assets" / "testbed"
# In git ase_search/search_spaces is a symlink to the top-level search_spaces/ that users and the
# README read; a wheel (or sdist) holds copies of the YAMLs, so one lookup serves a checkout, an
# editable install and an installed wheel.
SPACES = PACKAGE / "search_spaces"


@dataclass(frozen=True)
class Testbed:
    """A shipped testbed model: registry name, weight file, default data and search space.

    Attributes:
        arch: architecture (``dit`` or ``uvit``), also the name of its default space's YAML.
        model_name: the model registry entry the weights fit (``create_model(model_name)``).
        weights: file name under ``ase_search/assets/testbed/``.
        dataset: the data it was trained on.
    """

    arch: str
    model_name: str
    weights: str
    dataset: str = "mnist"

    @property
    def path(self) -> Path:
        """The shipped weight file (its model card is the same path with ``.md``)."""
        return ASSETS / self.weights

    @property
    def space(self) -> Path:
        """The default search-space YAML for this architecture."""
        return SPACES / f"{self.arch}.yaml"


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
                f"the {arch} testbed weights ({testbed.path}) are missing; "
                f"train them with `ase-search pretrain --arch {arch}` and "
                f"`ase-search export-weights`, or pass --checkpoint PATH"
            )
        checkpoint = testbed.path
    model, _ = load_checkpoint(checkpoint, ema=ema)
    if model.arch != arch:
        raise CheckpointError(f"{checkpoint} holds a {model.arch} model, not {arch}; "
                              f"pass --arch {model.arch}")
    return model.eval()
