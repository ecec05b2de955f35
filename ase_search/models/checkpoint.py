"""Saving and loading model checkpoints without unpickling code.

A checkpoint written by :func:`save_checkpoint` is a plain dict (tensors, numbers, strings, lists and
dicts only) so that it loads with ``torch.load(..., weights_only=True)``::

    {"format": "ase-search/1", "model_name": "DiT-T" | None, "arch": "dit", "config": {...},
     "model": state_dict, "ema": state_dict | None, "optimizer": optimizer_state | None, **extra}

``.safetensors`` files hold the same thing as ``model.*``/``ema.*`` tensors plus JSON metadata (no
optimizer state). :func:`load_checkpoint` also reads official weights, which are bare state dicts
(``DiT-XL-2-256x256.pt``, U-ViT's ``nnet_ema.pth``) or ``{"model", "ema", ...}`` training dicts,
given the registry name of the architecture.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ase_search.files import atomic_write

from ase_search.models.registry import ARCHS, MODELS, create_model

__all__ = ["FORMAT", "CheckpointError", "load_checkpoint", "load_state_dict_file", "save_checkpoint"]

FORMAT = "ase-search/1"
_SUFFIXES = (".pt", ".pth", ".safetensors")
_RESERVED = ("format", "model_name", "arch", "config", "model", "ema", "optimizer")
_LIST_LIMIT = 10


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message says how to fix it."""


#################################################################################
#                                     Saving                                    #
#################################################################################


def _check_plain(value: Any, where: str) -> None:
    """Raise ``ValueError`` unless ``value`` holds only types ``torch.load(weights_only=True)`` reads."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise ValueError(f"{where}: keys must be str or int, got {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise ValueError(
        f"{where} is a {type(value).__name__}, which a checkpoint cannot hold without pickling code; "
        "convert it to plain data first (e.g. ExitSchedule.to_dict(), vars(namespace))"
    )


def _state_of(value: Mapping[str, torch.Tensor] | nn.Module, name: str) -> dict[str, torch.Tensor]:
    if isinstance(value, nn.Module):
        value = value.state_dict()
    if not isinstance(value, Mapping) or not all(isinstance(v, torch.Tensor) for v in value.values()):
        raise ValueError(f"{name} must be a state dict (str -> tensor) or an nn.Module")
    return {k: v.detach().cpu() for k, v in value.items()}


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    ema_state: Mapping[str, torch.Tensor] | nn.Module | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save a model (and optionally its EMA, optimizer state and metadata) atomically.

    Args:
        path: ``.pt``/``.pth`` (torch format) or ``.safetensors`` destination.
        model: an ase-search model (with ``arch`` and ``config``).
        ema_state: EMA weights, as a state dict or the EMA module; keys must match the model's.
        optimizer_state: ``optimizer.state_dict()`` (not storable in ``.safetensors``).
        extra: more top-level entries (schedule, step, metrics...), plain data only; with
            ``.safetensors`` they must be JSON-serialisable.

    Returns:
        The path written.

    Raises:
        ValueError: for an unsupported suffix, a model without ``arch``/``config``, EMA keys that do
            not match, reserved or non-plain ``extra`` entries.
    """
    path = Path(path)
    if path.suffix not in _SUFFIXES:
        raise ValueError(f"path must end in one of {', '.join(_SUFFIXES)}, got {str(path)!r}")
    arch, config = getattr(model, "arch", None), getattr(model, "config", None)
    if not isinstance(arch, str) or not isinstance(config, dict):
        raise ValueError("model must be an ase-search model with .arch and .config (see ase_search.models)")
    model_state = _state_of(model, "model")
    ema = None if ema_state is None else _state_of(ema_state, "ema_state")
    if ema is not None and ema.keys() != model_state.keys():
        diff = sorted(ema.keys() ^ model_state.keys())[:_LIST_LIMIT]
        raise ValueError(f"ema_state keys must match the model's state dict; differing keys: {diff}")
    extra = dict(extra or {})
    clash = [key for key in extra if key in _RESERVED]
    if clash:
        raise ValueError(f"extra must not use the reserved keys {clash}; rename them")
    _check_plain(extra, "extra")
    model_name = getattr(model, "model_name", None)

    if path.suffix == ".safetensors":
        if optimizer_state is not None:
            raise ValueError("optimizer_state cannot be stored in a .safetensors file; save to a .pt path")
        try:
            extra_json = json.dumps(extra)
        except TypeError as err:
            raise ValueError(f"extra must be JSON-serialisable for a .safetensors file: {err}") from None
        tensors = {f"model.{k}": v.contiguous() for k, v in model_state.items()}
        if ema is not None:
            tensors.update({f"ema.{k}": v.contiguous() for k, v in ema.items()})
        metadata = {
            "format": FORMAT,
            "model_name": json.dumps(model_name),
            "arch": arch,
            "config": json.dumps(config),
            "has_ema": json.dumps(ema is not None),
            "extra": extra_json,
        }
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        return path

    if optimizer_state is not None:
        _check_plain(optimizer_state, "optimizer_state")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "model_name": model_name,
        "arch": arch,
        "config": dict(config),
        "model": model_state,
        "ema": ema,
        "optimizer": None if optimizer_state is None else dict(optimizer_state),
        **extra,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


#################################################################################
#                                    Loading                                    #
#################################################################################


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"could not read {path} as a safetensors file: {err}") from None
    if metadata.get("format") != FORMAT:
        return tensors  # a bare state dict, e.g. converted official weights
    try:
        has_ema = json.loads(metadata["has_ema"])
        return {
            "format": FORMAT,
            "model_name": json.loads(metadata["model_name"]),
            "arch": metadata["arch"],
            "config": json.loads(metadata["config"]),
            "model": {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")},
            "ema": {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")} if has_ema else None,
            "optimizer": None,
            **json.loads(metadata["extra"]),
        }
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: malformed {FORMAT} safetensors metadata ({err})") from None


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint file into a dict without unpickling any code.

    ``.pt``/``.pth`` go through ``torch.load(map_location="cpu", weights_only=True)``; ``.safetensors``
    through safetensors (an ase-search file comes back in the torch layout, see the module docstring).

    Raises:
        CheckpointError: missing file, unsupported suffix, pickled objects, unreadable content.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix not in (".pt", ".pth"):
        raise CheckpointError(f"checkpoint must end in one of {', '.join(_SUFFIXES)}, got {str(path)!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None and "Unsupported global" not in str(err):
            raise CheckpointError(f"could not read {path} as a torch checkpoint: {str(err).splitlines()[0]}") from None
        what = found.group(1) if found else "a Python object"
        raise CheckpointError(
            f"{path} holds pickled Python objects ({what}); load_checkpoint refuses to unpickle them "
            "because unpickling can run arbitrary code. If you trust the file, re-save its weights as a "
            "plain state dict: in a trusted session load it with weights_only disabled, save only "
            "obj['ema'] (or obj['model'], or module.state_dict()) with torch.save to 'weights.pt', then "
            "convert 'weights.pt' with `ase-search export-weights weights.pt out.safetensors --model "
            "NAME` (in Python: load_checkpoint('weights.pt', model_name=NAME))"
        ) from None
    except Exception as err:  # a truncated zip, not a torch file at all, ...
        raise CheckpointError(f"could not read {path} as a torch checkpoint: {err}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} must hold a dict (a state dict or a checkpoint), got {type(obj).__name__}")
    return obj


def _is_state_dict(obj: Mapping[str, Any]) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _listing(keys: list[str], label: str) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    more = f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else ""
    return f"{len(keys)} {label}: {shown}{more}"


def _check_keys(path: Path, state: Mapping[str, Any], expected: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise ``CheckpointError`` listing missing, unexpected and mis-shaped keys, if any."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(getattr(state[k], 'shape', ()))} vs model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state
        and (not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != tuple(v.shape))
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"{path}: the {what} weights do not match the model"]
    if missing:
        parts.append(_listing(missing, "missing key(s)"))
    if unexpected:
        parts.append(_listing(unexpected, "unexpected key(s)"))
    if mismatched:
        parts.append(_listing(mismatched, "shape mismatch(es)"))
    if missing and not unexpected and all(k.startswith("exit_heads.") for k in missing):
        parts.append("the model has exit heads but these weights do not: load them without "
                     "exit_heads and add the heads with ase_search.models.add_exit_heads")
    elif unexpected and not missing and all(k.startswith("exit_heads.") for k in unexpected):
        parts.append("these weights have exit heads but the model does not: build it with "
                     "exit_heads=True (an ase-search checkpoint's config records it)")
    else:
        parts.append("check model_name / the model config, or convert the keys to the official "
                     "layout")
    raise CheckpointError("; ".join(parts))


def _build(arch: str | None, config: Any, model_name: str | None, model_kwargs: Mapping[str, Any]) -> nn.Module:
    """Build the architecture on the meta device (no memory, no init); weights are assigned later."""


    with torch.device("meta"):
        if config is not None:
            if arch not in ARCHS or not isinstance(config, dict):
                raise CheckpointError(f"checkpoint names an unknown arch {arch!r} or has no config dict")
            try:
                return ARCHS[arch](**{**config, **model_kwargs})
            except (TypeError, ValueError) as err:
                raise CheckpointError(f"checkpoint config cannot build a {arch} model: {err}") from None
        return create_model(model_name, **model_kwargs)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    ema: bool = True,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build a model from a checkpoint and load its weights strictly.

    Args:
        path: ``.pt``/``.pth``/``.safetensors`` file: an ase-search checkpoint, a bare state dict
            with the official key names, or an official ``{"model", "ema", ...}`` training dict.
        ema: load the EMA weights when the checkpoint has them (else the raw model weights).
        model_name: registry name of the architecture (e.g. ``"DiT-XL/2"``); required for bare or
            official files, which carry no config; must agree with an ase-search checkpoint's.
        model_kwargs: constructor overrides (e.g. ``{"input_size": 64}`` for DiT-XL-2-512x512.pt).

    Returns:
        ``(model, meta)``: the model on CPU (in training mode, as constructed), and every top-level
        entry but the weights plus ``path``, ``weights`` (``"ema"`` or ``"model"``) and
        ``source`` (``"ase-search"``, ``"state_dict"`` or ``"official-train"``).

    Raises:
        CheckpointError: missing or unreadable file, pickled objects, unknown layout, missing
            ``model_name``, or weights that do not match the model (keys listed).
    """
    path = Path(path)
    obj = load_state_dict_file(path)
    model_kwargs = dict(model_kwargs or {})
    if obj.get("format") is not None:
        if obj["format"] != FORMAT:
            raise CheckpointError(f"{path}: unsupported checkpoint format {obj['format']!r} (expected {FORMAT!r})")
        saved_name = obj.get("model_name")
        if model_name is not None and saved_name is not None and model_name != saved_name:
            raise CheckpointError(f"{path} holds a {saved_name!r} model, not {model_name!r}")
        source, arch, config = "ase-search", obj.get("arch"), obj.get("config")
        if config is None:
            raise CheckpointError(f"{path}: an {FORMAT} checkpoint must carry its model config")
    elif _is_state_dict(obj):
        source, arch, config = "state_dict", None, None
        obj = {"model": obj}
    elif isinstance(obj.get("model"), Mapping) or isinstance(obj.get("ema"), Mapping):
        source, arch, config = "official-train", None, None
    else:
        raise CheckpointError(
            f"{path}: unrecognised checkpoint layout (top-level keys {sorted(map(str, obj))[:_LIST_LIMIT]}); "
            "expected a state dict or a dict with 'model'/'ema' state dicts"
        )
    if config is None:

        if model_name is None:
            raise CheckpointError(
                f"{path} is a bare state dict without a config, so the model cannot be built from "
                f"it; convert it once with `ase-search export-weights {path} OUT.safetensors "
                f"--model NAME` and pass OUT.safetensors as --checkpoint (in Python: "
                f"load_checkpoint(path, model_name=NAME)); NAME is one of {list(MODELS)}"
            )
        if model_name not in MODELS:
            raise CheckpointError(f"unknown model_name {model_name!r}; choose one of {list(MODELS)}")

    if ema and obj.get("ema") is not None:
        weights = "ema"
    elif obj.get("model") is not None:
        weights = "model"
    else:
        raise CheckpointError(f"{path} holds no 'model' weights; load it with ema=True")
    state = obj[weights]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: '{weights}' must be a state dict, got {type(state).__name__}")

    model = _build(arch, config, model_name, model_kwargs)
    if source != "ase-search" and model.arch == "dit" and model.in_channels == 4:
        # Official DiT weights (the official code builds only 4-channel latent models) sample as
        # the official forward_with_cfg does: guidance on 3 of the 4 eps channels.
        model = _build(arch, config, model_name, {"cfg_channels": 3, **model_kwargs})
    expected = model.state_dict()
    _check_keys(path, state, expected, weights)
    # Match the model's dtypes (e.g. fp16 exports) and assign, so nothing is allocated twice.
    state = {k: v.to(dtype=expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.model_name = obj.get("model_name") if source == "ase-search" else model_name

    meta = {k: v for k, v in obj.items() if k not in ("model", "ema")}
    meta.update(path=str(path), weights=weights, source=source)
    meta.setdefault("arch", model.arch)
    meta.setdefault("config", dict(model.config))
    meta.setdefault("model_name", getattr(model, "model_name", None))
    return model, meta


def export_weights(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
                   half: bool = True, ema: bool = True, model_name: str | None = None) -> Path:
    """Write the EMA (or, with ``ema=False``, the raw) weights of a training checkpoint as a
    compact ``.safetensors`` file.

    The result holds no optimizer state; it keeps the model config and the checkpoint's plain
    metadata (step, losses, schedule, ...), and loads with :func:`load_checkpoint`. With ``half``
    the weights are stored as float16 (they are cast back to float32 on load). With
    ``model_name`` (a registry name) it also converts a bare state dict, such as official weights,
    into a checkpoint that carries its config, so every command can load it.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"export path must end in .safetensors, got {str(out)!r}")
    model, meta = load_checkpoint(checkpoint, ema=ema, model_name=model_name)
    if half:
        model = model.half()
    extra = {k: v for k, v in meta.items()
             if k not in _RESERVED and k not in ("path", "weights", "source", "optimizer")}
    try:
        json.dumps(extra)
    except TypeError:
        extra = {k: v for k, v in extra.items() if _json_safe(v)}
    return save_checkpoint(out, model, extra={**extra, "exported_from": str(checkpoint),
                                              "exported_weights": meta["weights"],
                                              "dtype": "float16" if half else "float32"})


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True
