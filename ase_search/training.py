"""One training loop for pretraining and for ASE fine-tuning (Algorithm 1).

Pretraining is the special case with every block at every t and ``lambda(t) = 1``. Fine-tuning
passes an :class:`ExitSampler` (which block count each training sample uses at its t) and a
:class:`TimeReweighting` (the paper's ``lambda(t)`` for the first ``C`` cycles).

Determinism: everything random in step ``k`` (batch indices, t, noise, label dropout) is drawn
after seeding the global RNG with ``(seed, k)``, and each epoch's data order from ``(seed,
epoch)``. A run resumed from a checkpoint therefore follows exactly the same trajectory as an
uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from ase_search.diffusion import GaussianDiffusion
from ase_search.progress import progress_bar

__all__ = [
    "ExitSampler",
    "TrainConfig",
    "TrainResult",
    "TimeReweighting",
    "ema_update",
    "train",
]


class ExitSampler(Protocol):
    """Maps each training sample's timestep to the number of exitable blocks it runs."""

    def __call__(self, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``t``: (N,) timesteps in [0, T); returns (N,) block counts (LongTensor)."""
        ...


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by pretraining and fine-tuning.

    Args:
        steps: total optimiser steps (a resumed run continues up to this number).
        batch_size: samples per step.
        lr: AdamW learning rate (peak, after warm-up).
        lr_schedule: ``"constant"`` (the paper's DiT fine-tune) or ``"cosine"`` (its U-ViT one).
        warmup_steps: linear warm-up from 0 to ``lr``.
        decay_steps: constant schedule only: decay linearly to 0 over the last ``decay_steps``
            steps (warm-up, stable, decay); 0 keeps ``lr`` to the end. The stable phase's
            checkpoints stay resumable with a longer ``steps``.
        weight_decay: AdamW weight decay.
        ema_decay: ``alpha`` of the EMA teacher, ``theta_T <- alpha theta_T + (1 - alpha) theta_S``.
        grad_clip: max gradient norm, or ``None``.
        seed: base seed of every random draw.
        checkpoint_every: steps between checkpoints (``last.pt`` is always refreshed at the end).
        log_every: steps between logged loss values.
        distill: regress the noise prediction onto a frozen copy of the starting model run at
            full depth (its label dropout drawn alike), instead of onto the sampled noise; the
            learned-variance term still uses the data. For fine-tuning exits: the target is what
            the pretrained network would say, which has less variance than the noise and anchors
            the full-depth path to it.
    """

    steps: int
    batch_size: int = 128
    lr: float = 1e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    decay_steps: int = 0
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    grad_clip: float | None = 1.0
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    distill: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "warmup_steps", "decay_steps", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        for name in ("batch_size", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.distill, bool):
            raise ValueError(f"distill must be true or false, got {self.distill!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got "
                             f"{self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0 (0 disables warm-up), got "
                             f"{self.warmup_steps}")
        if self.decay_steps < 0:
            raise ValueError(f"decay_steps must be >= 0 (0 disables the decay), got "
                             f"{self.decay_steps}")
        if self.decay_steps and self.lr_schedule != "constant":
            raise ValueError("decay_steps applies to the constant schedule; cosine already "
                             "anneals to 0")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        clip = self.grad_clip
        if clip is not None and not (clip > 0 and math.isfinite(clip)):
            raise ValueError(f"grad_clip must be a finite number > 0, or None to disable clipping, "
                             f"got {self.grad_clip}")

    def lr_at(self, step: int) -> float:
        """Learning rate used for optimiser step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            left = self.steps - step  # steps still to take, this one included
            return self.lr * min(1.0, left / self.decay_steps) if self.decay_steps else self.lr
        span = max(1, self.steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TimeReweighting:
    """The time-dependent coefficient ``lambda(t)`` of Algorithm 1.

    The paper leaves ``lambda`` open; it must steer updates toward the t where the schedule dropped
    blocks (new computation paths to learn) and away from t near data, where the full network is
    already right. We use

        lambda(t) = (1 + gamma * d(t)) / E_t[1 + gamma * d(t)],   d(t) = 1 - n(t) / depth,

    where ``n(t)`` is the number of blocks the schedule keeps at t (for a one-shot space, the
    expected count) and ``d(t)`` the dropped share. It is normalised to mean 1 over uniform t so
    the loss scale (and the learning rate's meaning) is unchanged. For the first ``cycles`` epochs
    the loss is multiplied by ``lambda(t)``; afterwards ``lambda = 1``.

    Args:
        dropped_share: (T,) tensor, ``d`` at each training timestep.
        gamma: strength of the reweighting (0 disables it).
        cycles: number of epochs ``C`` during which ``lambda(t)`` applies.
    """

    dropped_share: torch.Tensor
    gamma: float = 2.0
    cycles: int = 1

    def __post_init__(self) -> None:
        if not (self.gamma >= 0 and math.isfinite(self.gamma)):
            raise ValueError(f"gamma must be a finite number >= 0, got {self.gamma}")
        if self.cycles < 0:
            raise ValueError(f"cycles must be >= 0, got {self.cycles}")

    @property
    def weights(self) -> torch.Tensor:
        raw = 1.0 + self.gamma * self.dropped_share.double()  # (T,)
        return (raw / raw.mean()).float()

    def __call__(self, t: torch.Tensor, epoch: int) -> torch.Tensor:
        """``lambda(t)`` for a batch of timesteps (N,) during ``epoch`` (0-based)."""
        if epoch >= self.cycles:
            return torch.ones(t.shape, dtype=torch.float32, device=t.device)
        return self.weights.to(t.device)[t.long()]


@dataclass
class TrainResult:
    model: nn.Module  # the student
    ema: nn.Module  # the EMA teacher (use this for sampling)
    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    wall_time: float = 0.0


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """``theta_T <- alpha * theta_T + (1 - alpha) * theta_S`` for every parameter and buffer."""
    for p_t, p_s in zip(teacher.parameters(), student.parameters()):
        p_t.mul_(alpha).add_(p_s.detach(), alpha=1.0 - alpha)
    for b_t, b_s in zip(teacher.buffers(), student.buffers()):
        b_t.copy_(b_s)


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63 - 1)


def _batch_indices(n: int, batch_size: int, step: int, seed: int) -> tuple[torch.Tensor, int]:
    """Indices of step ``step``: consecutive slices of a per-epoch permutation (drop-last)."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(_step_seed(seed + 7919, epoch))
    perm = torch.randperm(n, generator=gen)
    if n < batch_size:  # tiny datasets: sample with replacement
        return perm[torch.randint(0, n, (batch_size,), generator=gen)], epoch
    return perm[pos * batch_size : (pos + 1) * batch_size], epoch


def _fetch(dataset: Dataset, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):  # in memory: one gather
        x, y = dataset.images[idx], dataset.labels[idx]
    else:
        items = [dataset[int(i)] for i in idx]
        x = torch.stack([it[0] for it in items])
        y = torch.as_tensor([int(it[1]) for it in items]) if len(items[0]) > 1 else None
    if x.dtype == torch.uint8:  # images stored as bytes -> [-1, 1]
        x = x.float() / 127.5 - 1.0
    return x.float(), (None if y is None else y.long())


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    diffusion: GaussianDiffusion | None = None,
    exits: ExitSampler | None = None,
    reweighting: TimeReweighting | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    checkpoint_extra: dict[str, Any] | None = None,
    on_checkpoint: Callable[[Path, int], None] | None = None,
) -> TrainResult:
    """Train ``model`` with the (hybrid) diffusion loss; return student, EMA teacher and losses.

    Args:
        model: a DiT or U-ViT (see :mod:`ase_search.models`); its weights are the start point.
        dataset: yields ``(x, y)`` with x in [-1, 1] (or uint8) of the model's shape.
        config: optimisation settings.
        out_dir: where the ``last.pt`` checkpoint is kept, refreshed every ``checkpoint_every``
            steps and at the end (None: no checkpoints).
        diffusion: noise process (default: linear betas, T = 1000).
        exits: per-sample block counts from t (None: all blocks, i.e. pretraining).
        reweighting: ``lambda(t)`` of Algorithm 1 (None: 1).
        resume: continue from ``out_dir/last.pt`` if it exists; refused (``ValueError``) when
            its ``checkpoint_extra`` entries differ from this run's.
        device: where to train.
        progress: show a rich progress bar on stderr.
        checkpoint_extra: stored in every checkpoint (e.g. the exit schedule as a dict).
        on_checkpoint: called with (path, step) after each checkpoint is written.
    """
    from ase_search.models import load_state_dict_file, save_checkpoint

    diffusion = diffusion or GaussianDiffusion()
    device = torch.device(device)
    model = model.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    # The distillation target: the starting weights (so also on resume, where the caller passes
    # the same starting model), in training mode only for its label dropout.
    frozen = copy.deepcopy(model).train().requires_grad_(False) if config.distill else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    step, losses, wall = 0, [], 0.0
    running: float | None = None  # smoothed loss for the log; checkpointed so resume logs alike
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is not None and (out / "last.pt").is_file():
        state = load_state_dict_file(out / "last.pt")
        _check_same_run(out / "last.pt", state, checkpoint_extra or {})
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        losses = [tuple(x) for x in state.get("losses", [])]
        wall = float(state.get("wall_time", 0.0))
        running = state.get("running_loss")

    T = diffusion.num_timesteps
    n_data = len(dataset)  # type: ignore[arg-type]

    def checkpoint() -> None:
        if out is None:
            return
        extra = {
            "step": step,
            "train_config": asdict(config),
            "losses": [list(x) for x in losses],
            "wall_time": wall,
            "running_loss": running,
            **(checkpoint_extra or {}),
        }
        path = out / "last.pt"
        save_checkpoint(path, model, ema_state=ema.state_dict(),
                        optimizer_state=optimizer.state_dict(), extra=extra)
        if on_checkpoint is not None:
            on_checkpoint(path, step)

    bar = progress_bar(note="loss {task.fields[loss]:.4f}", enabled=progress)
    task = bar.add_task("train", total=config.steps, completed=step,
                        loss=float("nan") if running is None else running)
    with bar:
        while step < config.steps:
            t0 = time.perf_counter()
            torch.manual_seed(_step_seed(config.seed, step))
            idx, epoch = _batch_indices(n_data, config.batch_size, step, config.seed)
            x0, y = _fetch(dataset, idx)
            x0 = x0.to(device)  # (N, C, H, W)
            n = x0.shape[0]
            t = torch.randint(0, T, (n,))  # (N,)
            noise = torch.randn_like(x0, device="cpu").to(device)
            if y is not None:  # label dropout for guidance is the model's (class_dropout_prob)
                y = y.to(device) if model.num_labels > 0 else None  # unconditional: no labels
            n_blocks = exits(t) if exits is not None else None
            weight = reweighting(t, epoch) if reweighting is not None else None
            t, n_blocks = t.to(device), (None if n_blocks is None else n_blocks.to(device))

            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step)
            x_t = diffusion.q_sample(x0, t, noise)  # (N, C, H, W)
            rng = _rng_state(device) if frozen is not None else None
            model_out = model(x_t, t, y, n_blocks=n_blocks)  # (N, C_out, H, W)
            target = noise if frozen is None else _frozen_eps(frozen, x_t, t, y, rng, device)
            per_sample = diffusion.training_losses(model_out, x0, x_t, t, target)["loss"]  # (N,)
            if weight is not None:
                per_sample = per_sample * weight.to(device)
            loss = per_sample.mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training diverged: loss is {loss.item()} at step {step}; lower --lr or "
                    f"check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            ema_update(ema, model, config.ema_decay)
            step += 1
            wall += time.perf_counter() - t0

            value = loss.item()
            running = value if running is None else 0.98 * running + 0.02 * value
            if step % config.log_every == 0 or step == config.steps:
                losses.append((step, running))
                if progress and not bar.console.is_terminal:  # a log file: one line per log_every
                    bar.console.print(f"step {step}/{config.steps} loss {running:.4f} "
                                      f"({wall / 60:.1f} min)", highlight=False)
            bar.update(task, completed=step, loss=running)
            if step % config.checkpoint_every == 0 and step < config.steps:
                checkpoint()
    checkpoint()
    return TrainResult(model=model, ema=ema, step=step, losses=losses, wall_time=wall)


def _check_same_run(path: Path, state: dict[str, Any], extra: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint whose ``checkpoint_extra`` entries (the schedule, the
    space, a one-shot key...) differ from this run's: it was written by another run."""
    import json

    def plain(value: Any) -> str:  # tuples come back as tuples or lists: compare as JSON
        return json.dumps(value, sort_keys=True, default=str)

    differ = [k for k, v in extra.items() if k in state and plain(state[k]) != plain(v)]
    if differ:
        raise ValueError(f"{path} was written by another run (its {', '.join(differ)} differ "
                         f"from this one's); resume with the same settings, or move it away "
                         f"to start afresh")


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The generator states a forward pass draws from (label dropout): CPU, and the GPU's."""
    return (torch.get_rng_state(),
            torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _frozen_eps(frozen: nn.Module, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
                rng: tuple[torch.Tensor, torch.Tensor | None],
                device: torch.device) -> torch.Tensor:
    """The frozen model's full-depth noise prediction at ``(x_t, t)``, replaying the student's
    random state so that both drop the same labels; the caller's generators are left as the
    student's forward left them."""
    cpu_state, gpu_state = rng
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if gpu_state is not None else []):
        torch.set_rng_state(cpu_state)
        if gpu_state is not None:
            torch.cuda.set_rng_state(gpu_state, device)
        out = frozen(x_t, t, y)  # (N, C_out, H, W)
    return out[:, : x_t.shape[1]]  # (N, C, H, W): the eps half of a learned-variance output
