"""The model registry: ``MODELS`` maps each registry name to its factory, ``ARCHS`` each
architecture to its class. Adding a size is one line in its model file."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from ase_search.models.dit import DiT, DiT_models
from ase_search.models.uvit import UViT, UViT_models

__all__ = ["ARCHS", "MODELS", "create_model"]

ARCHS: dict[str, type[nn.Module]] = {"dit": DiT, "uvit": UViT}
MODELS: dict[str, Callable[..., nn.Module]] = {**DiT_models, **UViT_models}


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model, optionally overriding constructor arguments.

    Args:
        name: a key of :data:`MODELS` (e.g. ``"DiT-XL/2"``, ``"U-ViT-T"``).
        **overrides: constructor keyword arguments replacing the registry's (e.g. ``input_size=64``).

    Returns:
        The model, with ``model.model_name = name`` so checkpoints record it.

    Raises:
        ValueError: unknown name or unknown constructor argument.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; choose one of {list(MODELS)}")
    factory = MODELS[name]
    cls = getattr(factory, "func", None)
    if isinstance(cls, type):
        accepted = inspect.signature(cls).parameters
        unknown = sorted(set(overrides) - set(accepted))
        if unknown:
            raise ValueError(f"unknown argument(s) {unknown} for {name}; accepted: {list(accepted)}")
    model = factory(**overrides)
    model.model_name = name
    return model
