"""Token merging (ToMe) in the self-attention of DiT and U-ViT blocks: the paper's baseline.

Bolya & Hoffman, "Token Merging for Fast Stable Diffusion" (2023), as the ASE paper applied it
(Appendix B.3): only the **self-attention** of the chosen blocks runs on merged tokens, and its
output is unmerged so the residual stream keeps every token.

Bipartite soft matching, per attention call (the step numbers recur in the code comments):

1. The image tokens are split into destinations (one per ``stride x stride`` cell of the token grid)
   and sources (the rest). The destination in each cell is drawn once per block from ``seed``, so a
   forward pass is a pure function of its input and sampling stays reproducible.
2. Each source finds its most cosine-similar destination; the ``r`` sources with the highest
   similarity are merged into theirs (averaged), ``r = int(ratio * image_tokens)``.
3. Attention runs on ``[extras, unmerged sources, destinations]``.
4. Unmerging copies each destination's output back to the sources merged into it.

U-ViT's time (and label) tokens are never merged: they enter attention unchanged and keep their own
outputs. Schedules over blocks follow the paper: ``F<k>`` the first ``k`` blocks, ``R<k>`` the last
``k``, ``B<k>`` ``k / 2`` from each end, ``all`` every block, counted over the model's
``transformer_blocks``: DiT's ``blocks``; U-ViT's ``in_blocks``, then ``mid_block``, then
``out_blocks`` (13 for U-ViT-S and U-ViT-T).

Usage::

    handle = apply_tome(model, ToMeConfig(ratio=0.5, schedule="B4"))
    ...  # sample as usual
    handle.remove()  # or remove_tome(model): the model is bit-for-bit what it was
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "ToMeConfig",
    "ToMeHandle",
    "TokenMerge",
    "apply_tome",
    "bipartite_soft_matching",
    "merge_partition",
    "remove_tome",
    "tome_blocks",
    "tome_flop_acceleration",
]

_SCHEDULE = re.compile(r"^(?:(all)|([FRB])(\d+))$", re.IGNORECASE)


#################################################################################
#                                    Config                                     #
#################################################################################


@dataclass(frozen=True)
class ToMeConfig:
    """Token-merging settings.

    Attributes:
        ratio: share of a block's image tokens merged away before its self-attention, in
            ``[0, 1 - 1 / stride ** 2]`` (the paper's ``attn-ratio-2`` .. ``-6`` are 0.2 .. 0.6);
            0 merges nothing.
        schedule: the blocks that merge: ``"all"``, ``"F<k>"`` (first ``k``), ``"R<k>"`` (last
            ``k``) or ``"B<k>"`` (``k / 2`` from each end, ``k`` even); case-insensitive, stored
            canonically (``"all"``, ``"B4"``).
        seed: seeds the destination drawn in each grid cell (block ``i`` uses ``seed + i``);
            ``None`` takes every cell's top-left token (tomesd's ``use_rand=False``).
        stride: side of the grid cells holding one destination each (tomesd's ``sx = sy``).
    """

    ratio: float
    schedule: str = "all"
    seed: int | None = 0
    stride: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.stride, bool) or not isinstance(self.stride, int) or self.stride < 2:
            raise ValueError(f"stride must be an integer >= 2 (grid cells per destination), got "
                             f"{self.stride!r}")
        max_ratio = 1.0 - 1.0 / self.stride**2
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)):
            raise ValueError(f"ratio must be a number in [0, {max_ratio:g}], got {self.ratio!r}")
        if not 0.0 <= self.ratio <= max_ratio:
            raise ValueError(
                f"ratio must lie in [0, {max_ratio:g}] (at most the sources of a stride-"
                f"{self.stride} grid can merge), got {self.ratio}"
            )
        object.__setattr__(self, "ratio", float(self.ratio))
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or self.seed < 0):
            raise ValueError(f"seed must be None or an integer >= 0, got {self.seed!r}")
        match = _SCHEDULE.match(self.schedule) if isinstance(self.schedule, str) else None
        if match is None:
            raise ValueError(
                f"schedule must be 'all', 'F<k>', 'R<k>' or 'B<k>' (e.g. 'R4', 'B6'), got "
                f"{self.schedule!r}"
            )
        if match.group(1):
            object.__setattr__(self, "schedule", "all")
            return
        kind, k = match.group(2).upper(), int(match.group(3))
        if k < 1:
            raise ValueError(f"schedule {self.schedule!r} must merge in at least one block "
                             "(k >= 1)")
        if kind == "B" and k % 2:
            raise ValueError(
                f"schedule {self.schedule!r}: 'B<k>' takes k / 2 blocks from each end, so k must "
                f"be even (e.g. 'B{k + 1}')"
            )
        object.__setattr__(self, "schedule", f"{kind}{k}")

    def num_merged(self, num_tokens: int) -> int:
        """Tokens merged away out of ``num_tokens`` image tokens (before capping by the sources).

        ``floor(ratio * num_tokens)`` as tomesd, with a tolerance so that e.g. 0.29 of 100 is 29.
        """
        return int(num_tokens * self.ratio + 1e-9)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields; ``ToMeConfig(**d)`` rebuilds it."""
        return asdict(self)

    def describe(self) -> str:
        """A short label such as ``ToMe-0.5-B4``."""
        return f"ToMe-{self.ratio:g}-{self.schedule}"


#################################################################################
#                          Bipartite soft matching                              #
#################################################################################


def merge_partition(
    grid_h: int, grid_w: int, stride: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a row-major ``grid_h x grid_w`` token grid into sources and destinations.

    Each full ``stride x stride`` cell holds one destination, drawn with ``generator`` (``None``:
    the cell's top-left token); tokens of the rows and columns left over past the last full cell
    are all sources.

    Returns:
        ``(src_idx, dst_idx)``: ascending long tensors of token indices, together a partition of
        ``range(grid_h * grid_w)``.
    """
    cells_h, cells_w = grid_h // stride, grid_w // stride
    if cells_h * cells_w == 0:
        raise ValueError(f"a {grid_h}x{grid_w} token grid has no full {stride}x{stride} cell; "
                         f"use a smaller stride")
    if generator is None:
        pick = torch.zeros(cells_h, cells_w, dtype=torch.long)
    else:
        pick = torch.randint(stride * stride, (cells_h, cells_w), generator=generator)
    rows = torch.arange(cells_h)[:, None] * stride + pick // stride  # (cells_h, cells_w)
    cols = torch.arange(cells_w)[None, :] * stride + pick % stride  # (cells_h, cells_w)
    dst_idx = (rows * grid_w + cols).flatten().sort().values  # (cells_h * cells_w,)
    is_dst = torch.zeros(grid_h * grid_w, dtype=torch.bool)
    is_dst[dst_idx] = True
    src_idx = torch.nonzero(~is_dst).squeeze(1)  # (N - cells,)
    return src_idx, dst_idx


class TokenMerge:
    """The result of one matching: ``merge`` tokens ``(B, N, C) -> (B, N - r, C)`` and back.

    The merged layout is ``[unmerged sources (ascending score order), destinations]``; ``unmerge``
    gives every token the output of the token it ended up in.
    """

    def __init__(self, src_idx: torch.Tensor, dst_idx: torch.Tensor, unmerged: torch.Tensor,
                 merged: torch.Tensor, targets: torch.Tensor) -> None:
        self.src_idx = src_idx  # (Na,) token indices of the sources
        self.dst_idx = dst_idx  # (Nb,) token indices of the destinations
        self.unmerged = unmerged  # (B, Na - r) rows of the sources kept apart
        self.merged = merged  # (B, r) rows of the sources merged away
        self.targets = targets  # (B, r) destination row each merged source joins
        self.r = merged.shape[1]

    @staticmethod
    def _rows(index: torch.Tensor, channels: int) -> torch.Tensor:
        return index[..., None].expand(-1, -1, channels)  # (B, K, C)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """Average each merged source into its destination: (B, N, C) -> (B, N - r, C)."""
        C = x.shape[-1]
        src = x[:, self.src_idx]  # (B, Na, C)
        dst = x[:, self.dst_idx]  # (B, Nb, C)
        unm = src.gather(1, self._rows(self.unmerged, C))  # (B, Na - r, C)
        moved = src.gather(1, self._rows(self.merged, C))  # (B, r, C)
        # "mean" with include_self: a destination becomes the mean of itself and its sources.
        dst = dst.scatter_reduce(1, self._rows(self.targets, C), moved, reduce="mean")  # (B, Nb, C)
        return torch.cat([unm, dst], dim=1)  # (B, N - r, C)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """Copy outputs back to every token: (B, N - r, C) -> (B, N, C)."""
        B, _, C = y.shape
        kept = self.unmerged.shape[1]
        unm, dst = y[:, :kept], y[:, kept:]  # (B, Na - r, C), (B, Nb, C)
        src = y.new_empty(B, len(self.src_idx), C)  # (B, Na, C)
        src = src.scatter(1, self._rows(self.unmerged, C), unm)
        src = src.scatter(1, self._rows(self.merged, C), dst.gather(1, self._rows(self.targets, C)))
        out = y.new_empty(B, len(self.src_idx) + len(self.dst_idx), C)  # (B, N, C)
        return out.index_copy(1, self.dst_idx, dst).index_copy(1, self.src_idx, src)


def bipartite_soft_matching(
    metric: torch.Tensor, src_idx: torch.Tensor, dst_idx: torch.Tensor, r: int
) -> TokenMerge:
    """Match ``r`` sources to their most similar destinations (ToMe's bipartite soft matching).

    Args:
        metric: (B, N, C) token features whose cosine similarity decides the matching.
        src_idx: (Na,) source token indices; ``dst_idx``: (Nb,) destinations (a partition of N).
        r: tokens to merge away; capped at Na.

    Returns:
        A :class:`TokenMerge` for tokens laid out like ``metric``.
    """
    r = max(0, min(int(r), len(src_idx)))
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)  # unit rows: dot = cosine
        scores = metric[:, src_idx] @ metric[:, dst_idx].transpose(1, 2)  # (B, Na, Nb)
        # 2. Each source's best destination; the r best-matched sources merge.
        best, best_dst = scores.max(dim=-1)  # (B, Na) each
        # A stable sort breaks ties by token order, so equal scores merge reproducibly.
        order = torch.sort(best, dim=-1, descending=True, stable=True).indices  # (B, Na)
        merged, unmerged = order[:, :r], order[:, r:]  # (B, r), (B, Na - r)
        targets = best_dst.gather(1, merged)  # (B, r)
    return TokenMerge(src_idx, dst_idx, unmerged, merged, targets)


#################################################################################
#                               Patching models                                 #
#################################################################################


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks a schedule counts, in forward order (the model's
    ``transformer_blocks``)."""
    arch = getattr(model, "arch", None)
    if arch not in ("dit", "uvit"):
        raise ValueError(f"model must be an ase-search DiT or U-ViT (arch 'dit' or 'uvit'), got "
                         f"{type(model).__name__} with arch {arch!r}")
    return model.transformer_blocks


def tome_blocks(model: nn.Module, schedule: str | ToMeConfig) -> list[int]:
    """Indices of the blocks a schedule merges in, ascending.

    DiT counts ``model.blocks``; U-ViT counts ``in_blocks``, ``mid_block``, ``out_blocks`` in order
    (U-ViT-T: 6 + 1 + 6 = 13 blocks, the mid block is index 6).

    Raises:
        ValueError: a malformed schedule, or one asking for more blocks than the model has.
    """
    config = schedule if isinstance(schedule, ToMeConfig) else ToMeConfig(0.0, schedule)
    depth = len(_blocks(model))
    if config.schedule == "all":
        return list(range(depth))
    kind, k = config.schedule[0], int(config.schedule[1:])
    if k > depth:
        raise ValueError(f"schedule {config.schedule!r} merges in {k} blocks but this "
                         f"{model.arch} has {depth}; use k <= {depth} or 'all'")
    if kind == "F":
        return list(range(k))
    if kind == "R":
        return list(range(depth - k, depth))
    half = k // 2
    return [*range(half), *range(depth - half, depth)]


class _MergeAttention:
    """Forward pre-hook and hook pair of one attention module: merge before, unmerge after."""

    def __init__(self, config: ToMeConfig, extras: int, src_idx: torch.Tensor,
                 dst_idx: torch.Tensor) -> None:
        self.config = config
        self.extras = extras  # leading tokens (U-ViT's label and time) that never merge
        self.num_image = len(src_idx) + len(dst_idx)
        self.r = config.num_merged(self.num_image)
        self._cpu = (src_idx, dst_idx)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pending: TokenMerge | None = None

    def _indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on_device:
            self._on_device[device] = tuple(i.to(device) for i in self._cpu)
        return self._on_device[device]

    def before(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        self._pending = None
        if self.r == 0:
            return None  # nothing merges: the attention runs exactly as without ToMe
        x = args[0]  # (B, extras + N, C)
        if x.shape[1] != self.extras + self.num_image:
            raise RuntimeError(f"ToMe was set up for {self.extras} + {self.num_image} tokens, the "
                               f"attention got {x.shape[1]}")
        extras, image = x[:, : self.extras], x[:, self.extras :]  # (B, e, C), (B, N, C)
        tm = bipartite_soft_matching(image, *self._indices(x.device), self.r)
        self._pending = tm
        # 3. The attention sees the extras and the merged image tokens.
        return (torch.cat([extras, tm.merge(image)], dim=1), *args[1:])  # (B, e + N - r, C)

    def after(self, module: nn.Module, args: tuple[Any, ...],
              output: torch.Tensor) -> torch.Tensor | None:
        tm, self._pending = self._pending, None
        if tm is None:
            return None
        extras, image = output[:, : self.extras], output[:, self.extras :]  # (B, e, C), (B, N-r, C)
        # 4. Every source takes the output of the token it ended up in.
        return torch.cat([extras, tm.unmerge(image)], dim=1)  # (B, e + N, C)


class ToMeHandle:
    """What :func:`apply_tome` installed; ``remove()`` restores the model exactly.

    Also a context manager: ``with apply_tome(model, config): ...`` removes it on exit.

    Attributes:
        config: the settings applied.
        blocks: indices of the patched blocks (see :func:`tome_blocks`).
    """

    def __init__(self, model: nn.Module, config: ToMeConfig, blocks: list[int],
                 hooks: list[RemovableHandle]) -> None:
        self.config = config
        self.blocks = blocks
        self._model = model
        self._hooks = hooks

    @property
    def active(self) -> bool:
        """Whether the hooks are still installed."""
        return bool(self._hooks)

    def remove(self) -> None:
        """Remove the hooks; calling it again does nothing."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if getattr(self._model, "_tome_handle", None) is self:
            del self._model._tome_handle

    def __enter__(self) -> ToMeHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def to_dict(self) -> dict[str, Any]:
        """The config and patched blocks, for result files."""
        return {**self.config.to_dict(), "blocks": list(self.blocks)}


def apply_tome(model: nn.Module, config: ToMeConfig) -> ToMeHandle:
    """Merge tokens in the self-attention of the blocks ``config.schedule`` picks.

    Installs a forward pre-hook and a forward hook on each chosen block's ``attn`` (nothing is
    replaced: parameters, state dict and the other blocks stay as they are). A model already
    patched is first restored, so the latest call wins.

    Args:
        model: an ase-search DiT or U-ViT.
        config: the merging settings.

    Returns:
        A :class:`ToMeHandle`; ``handle.remove()`` or :func:`remove_tome` undoes the patch.

    Raises:
        ValueError: not a DiT/U-ViT, a schedule beyond the model's blocks, or a token grid too
            small for ``config.stride``.
    """
    if not isinstance(config, ToMeConfig):
        raise ValueError(f"config must be a ToMeConfig, got {type(config).__name__}")
    blocks = _blocks(model)
    chosen = tome_blocks(model, config)
    grid = model.grid_size
    extras = model.extras
    remove_tome(model)
    hooks: list[RemovableHandle] = []
    for i in chosen:
        # 1. One destination per grid cell, drawn once per block so forwards are reproducible.
        generator = None if config.seed is None else torch.Generator().manual_seed(config.seed + i)
        src_idx, dst_idx = merge_partition(grid, grid, config.stride, generator)
        pair = _MergeAttention(config, extras, src_idx, dst_idx)
        attn = blocks[i].attn
        hooks.append(attn.register_forward_pre_hook(pair.before))
        hooks.append(attn.register_forward_hook(pair.after))
    handle = ToMeHandle(model, config, chosen, hooks)
    model._tome_handle = handle
    return handle


def remove_tome(model: nn.Module) -> bool:
    """Undo :func:`apply_tome` on ``model``; returns whether a patch was removed."""
    handle = getattr(model, "_tome_handle", None)
    if handle is None:
        return False
    handle.remove()
    return True


def tome_flop_acceleration(model: nn.Module, config: ToMeConfig) -> float:
    """Share of one full forward's FLOPs that ToMe saves (matching included, every layer counted).

    Counts ``model`` without and then with ``config``; call it before :func:`apply_tome`.

    Raises:
        ValueError: ``model`` already carries ToMe.
    """
    from ase_search.metrics.latency import model_flops

    if getattr(model, "_tome_handle", None) is not None:
        raise ValueError("model already carries ToMe; call tome_flop_acceleration before "
                         "apply_tome (or after remove_tome)")
    tome_blocks(model, config)  # a schedule beyond the model fails before any forward pass
    full = model_flops(model)
    handle = apply_tome(model, config)
    try:
        merged = model_flops(model)
    finally:
        handle.remove()
    return 1.0 - merged / full
