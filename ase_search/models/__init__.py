"""Diffusion backbones with ASE early exits, their registry and checkpoints.

Every model is called as ``model(x, t, y=None, n_blocks=None)`` and exposes ``arch``, ``exit_depth``,
``in_channels``, ``input_size``, ``learn_sigma``, ``num_labels``, ``null_class`` and ``config``
(``type(model)(**model.config)`` rebuilds it). ``MODELS`` maps registry names to factories; the
CLI offers ``choices=list(MODELS)``. :func:`add_exit_heads` gives trained weights one output head
per exit depth (``exit_heads=True`` in the config), each starting as the shared head.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ase_search.models.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    load_state_dict_file,
    save_checkpoint,
)
from ase_search.models.dit import DiT
from ase_search.models.registry import ARCHS, MODELS, create_model
from ase_search.models.uvit import UViT

__all__ = [
    "ARCHS",
    "FORMAT",
    "MODELS",
    "CheckpointError",
    "DiT",
    "UViT",
    "add_exit_heads",
    "create_model",
    "load_checkpoint",
    "load_state_dict_file",
    "save_checkpoint",
]

def add_exit_heads(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with exit heads, each started as a copy of its shared output head.

    Until the heads are trained the copy computes exactly what ``model`` computes, at every exit
    (see ``exit_heads`` of :class:`DiT` and :class:`UViT`); fine-tuning then trains head ``k`` on
    the samples that exit after ``k`` blocks. A head costs what the shared head costs, so cost
    models and FLOP counts do not change.

    Args:
        model: an ase-search DiT or U-ViT without exit heads (left untouched).

    Returns:
        The new model, on ``model``'s device and dtype, in its training mode, with its
        ``model_name``.

    Raises:
        ValueError: ``model`` has exit heads already.
    """
    if model.config.get("exit_heads"):
        raise ValueError("the model has exit heads already")
    reference = next(model.parameters())
    with torch.device("meta"):  # no memory and no random init: every weight is assigned below
        heads = type(model)(**{**model.config, "exit_heads": True})
    state = {k: v.clone() for k, v in model.state_dict().items()}  # shares no memory with it
    for name, value in heads.state_dict().items():
        if name.startswith("exit_heads."):
            state[name] = torch.empty_like(value, device=reference.device, dtype=reference.dtype)
    heads.load_state_dict(state, strict=True, assign=True)
    heads.init_exit_heads()
    heads.train(model.training)
    heads.model_name = getattr(model, "model_name", None)
    return heads
