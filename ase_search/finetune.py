"""ASE fine-tuning (Algorithm 1) for a fixed exit schedule, and the one-shot fine-tune over a space.

Algorithm 1 trains the student with the exit schedule (each sample's t picks its block count),
multiplies the loss by a time-dependent ``lambda(t)`` for the first ``C`` cycles, updates an EMA
teacher ``theta_T <- alpha theta_T + (1 - alpha) theta_S`` and uses AdamW with a constant (DiT) or
cosine (U-ViT) learning rate and the hybrid loss. The teacher is the model that is sampled from.

The one-shot variant draws, for every training sample, a block count from the range the search
space allows at its t (the largest with probability ``full_share``, else uniformly), so one set of
weights serves every schedule of the space and the search can skip per-trial fine-tuning.
:func:`one_shot_weights` makes those weights as the search uses them: cached under a key of what
made them (starting weights, space, settings, data), resumable after a kill, and recorded by a
study relative to its folder (:func:`weights_record`, :func:`recorded_weights`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from ase_search.diffusion import GaussianDiffusion
from ase_search.schedule import ExitSchedule
from ase_search.space import ScheduleSpace
from ase_search.training import TimeReweighting, TrainConfig, TrainResult, train

__all__ = [
    "REBUILD_COMMAND",
    "FinetuneConfig",
    "ScheduleExits",
    "SpaceExits",
    "finetune",
    "finetune_one_shot",
    "one_shot_key",
    "one_shot_path",
    "one_shot_weights",
    "shipped_one_shot",
    "rebase_weights",
    "recorded_weights",
    "weights_record",
]


class ScheduleExits:
    """Exit sampler of a fixed schedule: the block count at each sample's t (deterministic)."""

    def __init__(self, schedule: ExitSchedule, num_timesteps: int = 1000) -> None:
        steps = torch.arange(num_timesteps, dtype=torch.float64) / num_timesteps
        self.table = schedule.blocks_for(steps)  # (T,) blocks at every training timestep

    def __call__(self, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.table[t.long().cpu()]

    @property
    def expected_blocks(self) -> torch.Tensor:
        return self.table.double()


class SpaceExits:
    """One-shot exit sampler: each sample's block count is drawn from the space's range at its t.

    With probability ``full_share`` the sample runs the largest count the space allows at its t
    (the "sandwich rule" of weight-shared supernets: the biggest sub-network keeps its quality
    while the others are trained); otherwise the count is uniform over the range. The range at t
    is the union over the intervals that can cover t; for fixed edges it is
    ``[min_blocks[k], max_blocks[k]]`` of the interval holding t.
    """

    def __init__(self, space: ScheduleSpace, num_timesteps: int = 1000, *,
                 full_share: float = 0.0) -> None:
        if not 0.0 <= full_share <= 1.0:
            raise ValueError(f"full_share must lie in [0, 1], got {full_share}")
        lo, hi = [], []
        for i in range(num_timesteps):
            t = i / num_timesteps
            if space.edges is None:
                k_range = range(space.intervals)  # searched edges: any interval may hold t
            else:
                k = sum(1 for e in space.edges[1:-1] if t >= e)
                k_range = range(k, k + 1)
            lo.append(min(space.min_blocks[k] for k in k_range))
            hi.append(max(space.max_blocks[k] for k in k_range))
        self.low = torch.tensor(lo)  # (T,)
        self.high = torch.tensor(hi)  # (T,)
        self.full_share = full_share

    def __call__(self, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        t = t.long().cpu()
        u = torch.rand(t.shape, generator=generator)  # (N,)
        span = (self.high[t] - self.low[t] + 1).double()
        uniform = self.low[t] + (u * span).long().clamp(max=span.long() - 1)  # (N,)
        if self.full_share == 0.0:
            return uniform
        largest = torch.rand(t.shape, generator=generator) < self.full_share  # (N,)
        return torch.where(largest, self.high[t], uniform)

    @property
    def expected_blocks(self) -> torch.Tensor:
        uniform = (self.low + self.high).double() / 2
        return self.full_share * self.high.double() + (1.0 - self.full_share) * uniform


@dataclass(frozen=True)
class FinetuneConfig:
    """Algorithm 1's settings. Defaults follow the paper (B.1) scaled to the testbed.

    Args:
        steps: optimiser steps.
        batch_size: the paper used 64 (DiT) and 128 (U-ViT).
        lr: the paper used 2e-5 (DiT, constant); U-ViT used cosine annealing.
        lr_schedule: ``"constant"`` or ``"cosine"``; ``None`` picks the paper's per architecture
            for Algorithm 1, and cosine for the one-shot fine-tune over a space (its many exits
            knock the model out of its pretrained minimum; the decay brings it back).
        ema_decay: EMA rate ``alpha`` of the teacher.
        gamma: strength of ``lambda(t)`` (see :class:`~ase_search.training.TimeReweighting`).
        cycles: ``C``, epochs during which ``lambda(t)`` applies before it is reset to 1.
        seed: random seed.
        full_share: one-shot only: share of samples trained at the largest block count the space
            allows at their t (see :class:`SpaceExits`); keeps the full model's quality. On the
            DiT testbed 0.5 beat 0.25 for the full model and for every exit alike.
        distill: regress onto the frozen starting model's full-depth prediction instead of the
            noise (see :class:`~ase_search.training.TrainConfig`). Not the paper's recipe.
    """

    steps: int = 500
    batch_size: int = 64
    lr: float = 2e-5
    lr_schedule: Literal["constant", "cosine"] | None = None
    ema_decay: float = 0.999
    gamma: float = 2.0
    cycles: int = 1
    seed: int = 0
    full_share: float = 0.5
    distill: bool = False

    def __post_init__(self) -> None:
        # Fail at construction, naming the field, rather than later inside train().
        for name in ("steps", "cycles", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not isinstance(self.distill, bool):
            raise ValueError(f"distill must be true or false, got {self.distill!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.lr_schedule not in (None, "constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant', 'cosine' or None (the paper's "
                             f"choice per architecture), got {self.lr_schedule!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not (self.gamma >= 0 and math.isfinite(self.gamma)):
            raise ValueError(f"gamma must be a finite number >= 0 (0 disables lambda(t)), got "
                             f"{self.gamma}")
        if self.cycles < 0:
            raise ValueError(f"cycles must be >= 0, got {self.cycles}")
        if not 0.0 <= self.full_share <= 1.0:
            raise ValueError(f"full_share must lie in [0, 1], got {self.full_share}")

    def train_config(self, arch: str, checkpoint_every: int = 1000, *,
                     one_shot: bool = False) -> TrainConfig:
        schedule = self.lr_schedule or ("cosine" if arch == "uvit" or one_shot else "constant")
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           lr_schedule=schedule, ema_decay=self.ema_decay, seed=self.seed,
                           checkpoint_every=checkpoint_every, distill=self.distill)


def finetune(
    model: nn.Module,
    dataset: Dataset,
    target: ExitSchedule | ScheduleSpace,
    config: FinetuneConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: str = "cpu",
    progress: bool = True,
    diffusion: GaussianDiffusion | None = None,
    checkpoint_every: int = 1000,
    checkpoint_extra: dict[str, Any] | None = None,
    on_checkpoint: Callable[[Path, int], None] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` with Algorithm 1; returns the student and the EMA teacher.

    Args:
        target: an exit schedule (each sample runs the blocks the schedule gives its t), or a
            search space for the one-shot variant (each sample draws a count from the space's
            range at its t).
        out_dir, resume, checkpoint_every, on_checkpoint: the training state kept in
            ``out_dir/last.pt`` (see :func:`~ase_search.training.train`).
        checkpoint_extra: more entries for the checkpoints; a resume whose entries differ is
            refused.
    """
    _check_model(model, target.arch, target.depth)
    T = (diffusion or GaussianDiffusion()).num_timesteps
    one_shot = isinstance(target, ScheduleSpace)
    if (target.levers is not None and target.levers.reuses) if one_shot else target.reuses:
        warnings.warn("the target's block-reuse intervals are fine-tuned as skip: each sample "
                      "trains its first blocks with no cached residual, which is not how reuse "
                      "samples; block reuse is training-free, so sample it without a fine-tune "
                      "(or fine-tune the skip schedule)", UserWarning, stacklevel=2)
    if one_shot:
        exits: ScheduleExits | SpaceExits = SpaceExits(target, T, full_share=config.full_share)
        extra = {"space": target.to_dict(), "finetune": "one-shot"}
    else:
        exits = ScheduleExits(target, T)
        extra = {"schedule": target.to_dict(), "finetune": "algorithm-1"}
    reweighting = TimeReweighting(dropped_share=1.0 - exits.expected_blocks / model.exit_depth,
                                  gamma=config.gamma, cycles=config.cycles)
    train_config = config.train_config(model.arch, checkpoint_every, one_shot=one_shot)
    return train(model, dataset, train_config, exits=exits, reweighting=reweighting,
                 checkpoint_extra={**extra, **(checkpoint_extra or {})}, out_dir=out_dir,
                 resume=resume, device=device, progress=progress, diffusion=diffusion,
                 on_checkpoint=on_checkpoint)


def finetune_one_shot(model: nn.Module, dataset: Dataset, space: ScheduleSpace,
                      config: FinetuneConfig, **kwargs: Any) -> TrainResult:
    """The one-shot fine-tune over ``space``: :func:`finetune` with the space as target."""
    return finetune(model, dataset, space, config, **kwargs)


def _check_model(model: nn.Module, arch: str, depth: int) -> None:
    if model.arch != arch:
        raise ValueError(f"the schedule is for {arch} but the model is {model.arch}")
    if model.exit_depth != depth:
        raise ValueError(f"the schedule expects {depth} exitable blocks but the model has "
                         f"{model.exit_depth}; rescale it (presets do this) or export one for "
                         f"this model")


#################################################################################
#                  One-shot weights: made once, keyed, resumable                #
#################################################################################

# How the reference studies' one-shot weights are rebuilt (they are not committed); for another
# study, add `--storage STUDY`.
REBUILD_COMMAND = "python -m tools.reference_study --arch {arch} --weights-only"
_KEY_VERSION = 1  # bump when what the key covers changes
# One-shot weights shipped with the package, for the default spaces on the testbeds at the
# default settings (`<arch>-<key[:12]>.safetensors`): a newcomer's first search skips the
# fine-tune that would make exactly these weights (issue #26). Used only where the full key
# matches; any other model, space, setting or data fine-tunes as before.
SHIPPED_ONE_SHOT = Path(__file__).resolve().parent / "assets" / "one-shot"


def one_shot_key(model: nn.Module, space: ScheduleSpace, config: FinetuneConfig,
                 data: str) -> str:
    """The hex SHA-256 of everything that decides the one-shot weights.

    It covers the starting weights' content (the state dict tensor by tensor, with the model's
    arch and config, so a ``.pt`` and a ``.safetensors`` copy agree), the space (its ``to_dict``
    less the prose ``description`` and a joint space's ``sampling`` section), every
    :class:`FinetuneConfig` field and the data: the spec ``"mnist"``, a file's content, or a folder's file names and sizes (hashing every image of a
    large folder would cost more than it protects). The device is not covered: the same recipe
    on a GPU is the same recipe.
    """
    # The weights are trained over t, not for a sampler: a joint space's sampling section (and
    # the prose description) does not change them.
    space_dict = {k: v for k, v in space.to_dict().items()
                  if k not in ("description", "sampling")}
    recipe = {"version": _KEY_VERSION, "model": _model_sha256(model), "space": space_dict,
              "finetune": asdict(config), "data": _data_fingerprint(data)}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def one_shot_weights(
    model: nn.Module,
    space: ScheduleSpace,
    config: FinetuneConfig,
    *,
    data: str,
    out_dir: str | Path,
    name: str,
    progress: bool = True,
    device: str = "cpu",
    checkpoint_every: int = 200,
    on_checkpoint: Callable[[Path, int], None] | None = None,
    key: str | None = None,
) -> Path:
    """The one-shot weights of ``model`` over ``space``: made once, then reused.

    The file is ``out_dir/<name>-one-shot-<key[:12]>.safetensors`` with the full
    :func:`one_shot_key` in its metadata (``one_shot_key``), so studies with other settings in
    one folder never share it. A file of that name whose recorded key differs (renamed or edited
    by hand) is refused, never overwritten. While the fine-tune runs, its state (student, EMA
    teacher, optimizer, step; the random draws of step k depend only on the seed and k, see
    :mod:`ase_search.training`) is saved atomically every ``checkpoint_every`` steps to
    ``<file>.partial/last.pt``; a later call resumes from it and ends with the weights of an
    uninterrupted run (bit for bit on the CPU, with the same thread count). The partial state is
    deleted once the weights are written.

    Args:
        model: the starting weights; trained in place (the EMA teacher is what is saved).
        space: the search space whose schedules the weights must serve.
        config: the fine-tune settings.
        data: the data spec (see :func:`ase_search.data.build_dataset`); read only to train.
        out_dir: folder of the weights (the study's).
        name: the study's name, the file's prefix.
        progress: show a progress bar.
        device: where to train.
        checkpoint_every: steps between saved training states.
        on_checkpoint: called with ``(path, step)`` after each saved state.
        key: :func:`one_shot_key` of these arguments when the caller has it already (it hashes
            every weight of the model); ``None`` computes it.

    Returns:
        The weights file.

    Raises:
        ValueError: the file exists but records another key, or the partial state was written
            by another run.
    """
    key = one_shot_key(model, space, config, data) if key is None else key
    out = one_shot_path(out_dir, name, key)
    if out.is_file():
        _check_key(out, key)
        return out
    shipped = shipped_one_shot(key)
    if shipped is not None:  # copied, so the study's folder holds its weights like any other
        from ase_search.files import atomic_write

        if progress:
            print(f"one-shot weights: the package ships them for this key ({key[:12]}), no "
                  f"fine-tune needed", flush=True)
        return atomic_write(out, lambda tmp: shutil.copyfile(shipped, tmp))
    from ase_search.data import build_dataset
    from ase_search.models import save_checkpoint

    dataset = build_dataset(data, resolution=model.input_size, channels=model.in_channels)
    partial = out.with_name(out.name + ".partial")
    result = finetune(model.train(), dataset, space, config, out_dir=partial, resume=True,
                      device=device, progress=progress, checkpoint_every=checkpoint_every,
                      checkpoint_extra={"one_shot_key": key}, on_checkpoint=on_checkpoint)
    save_checkpoint(out, result.ema, extra={"finetune": "one-shot", "space": space.to_dict(),
                                            "steps": result.step, "one_shot_key": key,
                                            "finetune_config": asdict(config), "data": data})
    shutil.rmtree(partial, ignore_errors=True)  # only once the weights are safely written
    return out


def shipped_one_shot(key: str) -> Path | None:
    """The one-shot weights the package ships for ``key`` (see ``SHIPPED_ONE_SHOT``), or None."""
    for path in sorted(SHIPPED_ONE_SHOT.glob(f"*-{key[:12]}.safetensors")):
        if _recorded_key(path) == key:
            return path
    return None


def one_shot_path(out_dir: str | Path, name: str, key: str) -> Path:
    """Where :func:`one_shot_weights` keeps the weights of ``key`` for study ``name``."""
    return Path(out_dir) / f"{name}-one-shot-{key[:12]}.safetensors"


def weights_record(weights: str | Path, folder: str | Path | None) -> dict[str, Any]:
    """What a study (or an exported schedule) records of the weights it was measured with.

    Returns:
        ``{"path": ..., "one_shot_key": ...}``: the path relative to ``folder`` (the recording
        file's folder, so a clone or a moved folder still finds it; absolute when ``folder`` is
        ``None``, e.g. a PostgreSQL study), and the file's one-shot key, or ``None`` for weights
        not made by :func:`one_shot_weights`.
    """
    weights = Path(weights).resolve()
    path = str(weights) if folder is None else _relative(weights, Path(folder).resolve())
    return {"path": path, "one_shot_key": _recorded_key(weights) if weights.is_file() else None}


def rebase_weights(record: Any, source: str | Path | None,
                   target: str | Path | None) -> dict[str, Any] | None:
    """``record`` (relative to folder ``source``) made relative to folder ``target``, e.g. for a
    schedule exported from a study into another folder; ``None`` stays ``None``."""
    if not record:
        return None
    candidates, key = _candidates(record, source)
    absolute = next((c for c in candidates if c.is_file()), candidates[0]).resolve()
    folder = None if target is None else Path(target).resolve()
    return {"path": str(absolute) if folder is None else _relative(absolute, folder),
            "one_shot_key": key}


def recorded_weights(record: Any, folder: str | Path | None, *, arch: str = "dit") -> Path:
    """The weights file a study or schedule recorded, checked against its one-shot key.

    Args:
        record: a :func:`weights_record` dict, or a bare path string (studies made before
            records were relative: an absolute path that is missing here is looked for by its
            name in ``folder``).
        folder: the recording file's folder (relative paths resolve against it).
        arch: for the rebuild advice.

    Raises:
        ValueError: the file is missing (with how to rebuild it), or its key differs.
    """
    candidates, key = _candidates(record, folder)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ValueError(
            f"the weights this was measured with, {candidates[0]}, are missing; rebuild them "
            f"with `{REBUILD_COMMAND.format(arch=arch)}` (add --storage STUDY for your own "
            f"study), or pass --checkpoint to run other weights")
    if key is not None:
        _check_key(found, key)
    return found


def _candidates(record: Any, folder: str | Path | None) -> tuple[list[Path], str | None]:
    """Where a record's file may be (the first is where it should be), and its key."""
    path, key = _parse_record(record)
    base = Path(folder).absolute() if folder is not None else Path.cwd()
    candidates = [Path(os.path.normpath(base / path))]  # an absolute path stays itself
    if isinstance(record, str) and Path(path).is_absolute():  # recorded on another machine
        candidates.append(base / Path(path).name)
    return candidates, key


def _check_key(path: Path, key: str) -> None:
    recorded = _recorded_key(path)
    if recorded != key:
        raise ValueError(
            f"{path} holds one-shot weights made from other settings (key "
            f"{str(recorded)[:12]}, expected {key[:12]}); move it away and rebuild them")


def _recorded_key(path: Path) -> str | None:
    """The ``one_shot_key`` in a safetensors file's metadata (read from the header only)."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    from ase_search.models import CheckpointError

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            extra = json.loads((f.metadata() or {}).get("extra", "{}"))
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"could not read {path} as a safetensors file: {err}") from None
    key = extra.get("one_shot_key") if isinstance(extra, dict) else None
    return key if isinstance(key, str) else None


def _parse_record(record: Any) -> tuple[str, str | None]:
    if isinstance(record, str) and record:
        return record, None
    if isinstance(record, dict) and isinstance(record.get("path"), str) and record["path"]:
        key = record.get("one_shot_key")
        return record["path"], key if isinstance(key, str) else None
    raise ValueError(f"malformed weights record {record!r}; expected a path or "
                     f"{{'path': ..., 'one_shot_key': ...}}")


def _relative(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return str(path)


def _model_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256(json.dumps([getattr(model, "arch", None),
                                        getattr(model, "config", None)],
                                       sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _data_fingerprint(data: str) -> Any:
    path = Path(data)
    if data.lower() == "mnist" or not path.exists():
        return data
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return {"file_sha256": digest.hexdigest()}
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {"folder": [[p.relative_to(path).as_posix(), p.stat().st_size] for p in files]}
