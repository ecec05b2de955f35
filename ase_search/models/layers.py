"""Pieces shared by DiT and U-ViT: attention, MLP, embeddings, patches, the early-exit plan and
classifier-free guidance.

Module and parameter names follow the official repositories (timm's ``Attention``/``Mlp`` as used
by facebookresearch/DiT, and baofff/U-ViT ``libs/uvit.py``) so that official state dicts load
with ``strict=True``: ``attn.qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``, ``*.proj`` for the
patch embedding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from ase_search.callplan import forecast

__all__ = [
    "Attention",
    "BlockReuse",
    "ExitPlan",
    "Mlp",
    "MAX_DEPTH",
    "MAX_PARAMETERS",
    "PatchEmbed",
    "apply_exit_heads",
    "check_inputs",
    "check_model_size",
    "check_labels",
    "get_2d_sincos_pos_embed",
    "guided_eps",
    "patchify",
    "resolve_n_blocks",
    "timestep_embedding",
    "unpatchify",
]


# Caps on a model built from a config (a checkpoint's or the constructor's): far above any
# published DiT or U-ViT (DiT-XL/2 has 28 blocks and 675M parameters), low enough that a corrupt
# config is refused before minutes of module construction or an out-of-memory.
MAX_DEPTH = 1024
MAX_PARAMETERS = 10**10


def check_model_size(depth: int, parameters: float) -> None:
    """Refuse a model config beyond :data:`MAX_DEPTH` blocks or :data:`MAX_PARAMETERS` parameters.

    Args:
        depth: the config's ``depth``.
        parameters: the architecture's parameter count for the config (an estimate is enough).

    Raises:
        ValueError: naming the limit and the config fields to check.
    """
    if depth > MAX_DEPTH:
        raise ValueError(f"depth must be at most {MAX_DEPTH} blocks, got {depth}; the config is "
                         f"corrupt or not meant for this library")
    if not parameters <= MAX_PARAMETERS:
        raise ValueError(f"the config describes about {parameters:.3g} parameters, more than the "
                         f"{MAX_PARAMETERS:.0e} this library builds; check its hidden size, "
                         f"mlp_ratio, input and patch size, and number of classes")


#################################################################################
#                              Transformer pieces                               #
#################################################################################


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and an output ``proj``.

    The ``qkv`` output is laid out as ``(3, num_heads, head_dim)`` along the feature axis, the layout
    of timm (DiT) and of U-ViT's ``'B L (K H D)'`` rearrange, so official weights drop in.

    Args:
        dim: token width.
        num_heads: number of heads; must divide ``dim``.
        qkv_bias: whether ``qkv`` has a bias (DiT: True, U-ViT configs: False).
        qk_scale: softmax temperature; ``None`` means ``head_dim ** -0.5``.
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = False, qk_scale: float | None = None
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must divide the width ({dim})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, self.head_dim)  # (B, L, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, L, Dh)
        x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (B, H, L, Dh)
        x = x.transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        return self.proj(x)


class Mlp(nn.Module):
    """Two-layer perceptron ``fc2(act(fc1(x)))``.

    Args:
        in_features: input and output width.
        hidden_features: width of the hidden layer.
        tanh_gelu: use the tanh approximation of GELU (DiT) instead of the exact one (U-ViT).
    """

    def __init__(self, in_features: int, hidden_features: int, tanh_gelu: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh" if tanh_gelu else "none")
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PatchEmbed(nn.Module):
    """Square image to patch tokens through a strided convolution named ``proj``.

    Args:
        img_size: height and width of the input.
        patch_size: side of a square patch; must divide ``img_size``.
        in_chans: input channels.
        embed_dim: token width.
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        if img_size % patch_size != 0:
            raise ValueError(f"patch_size ({patch_size}) must divide the image size ({img_size})")
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, T, D), T = (H / p) * (W / p)


#################################################################################
#                          Embeddings and patch helpers                         #
#################################################################################


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, ``[cos, sin]`` halves (GLIDE/DiT).

    Args:
        t: (N,) timesteps, any real or integer dtype.
        dim: embedding width; an odd width gets one trailing zero.
        max_period: the longest period, reached by the last frequency.

    Returns:
        (N, dim) float32 embedding.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )  # (half,)
    args = t[:, None].float() * freqs[None]  # (N, half)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2 * half)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def _sincos_1d(embed_dim: int, pos: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, embed_dim) ``[sin, cos]`` features in float64 (MAE convention)."""
    omega = torch.arange(embed_dim // 2, dtype=torch.float64, device=pos.device) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # (D/2,)
    out = pos.to(torch.float64)[:, None] * omega[None]  # (M, D/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, D)


def get_2d_sincos_pos_embed(
    embed_dim: int, grid_size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Fixed 2D sin-cos positional embedding of a square token grid (MAE / DiT).

    Token ``r * grid_size + c`` (row ``r``, column ``c``) gets ``[sin/cos(c * w), sin/cos(r * w)]``:
    the first half of the width encodes the column, as in the official code where the meshgrid puts
    the width coordinate first.

    Args:
        embed_dim: width; must be divisible by 4.
        grid_size: tokens per side.
        device: where to build it (defaults to the current default device).

    Returns:
        (grid_size ** 2, embed_dim) float32 tensor.
    """
    if embed_dim % 4 != 0:
        raise ValueError(f"embed_dim must be divisible by 4 for a 2D sin-cos embedding, got {embed_dim}")
    coords = torch.arange(grid_size, dtype=torch.float64, device=device)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (G, G) each
    emb_col = _sincos_1d(embed_dim // 2, cols.reshape(-1))  # (G*G, D/2)
    emb_row = _sincos_1d(embed_dim // 2, rows.reshape(-1))  # (G*G, D/2)
    return torch.cat([emb_col, emb_row], dim=1).float()  # (G*G, D)


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, C, H, W) images -> (N, T, p * p * C) tokens, each token laid out as ``(p1, p2, C)``."""
    N, C, H, W = imgs.shape
    p = patch_size
    x = imgs.reshape(N, C, H // p, p, W // p, p)  # (N, C, h, p1, w, p2)
    x = torch.einsum("nchpwq->nhwpqc", x)  # (N, h, w, p1, p2, C)
    return x.reshape(N, (H // p) * (W // p), p * p * C)


def unpatchify(x: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """(N, T, p * p * C) tokens of a square grid -> (N, C, H, W) images; inverse of :func:`patchify`."""
    N, T, _ = x.shape
    p = patch_size
    h = w = math.isqrt(T)
    assert h * w == T and x.shape[2] == p * p * channels, "unpatchify needs a square token grid"
    x = x.reshape(N, h, w, p, p, channels)  # (N, h, w, p1, p2, C)
    x = torch.einsum("nhwpqc->nchpwq", x)  # (N, C, h, p1, w, p2)
    return x.reshape(N, channels, h * p, w * p)


#################################################################################
#                               Input validation                                #
#################################################################################


def check_inputs(model: Any, x: torch.Tensor, t: torch.Tensor | float | int) -> torch.Tensor:
    """Validate ``x`` against the model's input shape and return ``t`` as an (N,) tensor.

    A scalar ``t`` (Python number or 0-d tensor) is broadcast to the batch.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a (N, C, H, W) tensor, got {got}")
    expected = (model.in_channels, model.input_size, model.input_size)
    if tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"x must have shape (N, {expected[0]}, {expected[1]}, {expected[2]}) for this model, "
            f"got {tuple(x.shape)}"
        )
    if not isinstance(t, torch.Tensor):
        t = torch.tensor(float(t), device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must have shape ({x.shape[0]},) (one timestep per sample), got {tuple(t.shape)}")
    return t


def check_labels(y: torch.Tensor, batch_size: int, num_rows: int) -> None:
    """Validate an (N,) integer label tensor whose values index an embedding of ``num_rows`` rows."""
    if not isinstance(y, torch.Tensor) or y.shape != (batch_size,):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be a ({batch_size},) tensor of class labels, got {got}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    # The value check reads the labels on the host: free on the CPU, a device-to-host sync on
    # every call on an accelerator, where the embedding's own bounds check catches them instead.
    if batch_size and y.device.type == "cpu" and (int(y.min()) < 0 or int(y.max()) >= num_rows):
        raise ValueError(
            f"y must hold labels in [0, {num_rows - 1}] (the last may be the null label), "
            f"got values in [{int(y.min())}, {int(y.max())}]"
        )


#################################################################################
#                                 Early exits                                   #
#################################################################################


@dataclass(frozen=True)
class ExitPlan:
    """Which samples run exitable block ``i`` for a given ``n_blocks``.

    Attributes:
        full: every sample runs the first ``full`` exitable blocks.
        total: no sample runs more than ``total`` exitable blocks.
        per_sample: (N,) long counts when samples differ, else ``None``.
    """

    full: int
    total: int
    per_sample: torch.Tensor | None = None

    def rows(self, i: int) -> torch.Tensor | None:
        """Indices of the samples that run exitable block ``i``; ``None`` means all of them."""
        if i < self.full or self.per_sample is None:
            return None
        return torch.nonzero(self.per_sample > i).squeeze(1)  # (N_active,)

    def counts(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """(N,) long block count of every sample."""
        if self.per_sample is not None:
            return self.per_sample
        return torch.full((batch_size,), self.full, dtype=torch.long, device=device)


def resolve_n_blocks(
    n_blocks: int | torch.Tensor | None, batch_size: int, exit_depth: int, device: torch.device
) -> ExitPlan:
    """Turn the ``n_blocks`` argument of a forward into an :class:`ExitPlan`.

    Args:
        n_blocks: ``None`` (all ``exit_depth`` blocks), an int in ``[1, exit_depth]``, or an (N,)
            integer tensor of per-sample counts in that range.
        batch_size: N.
        exit_depth: number of exitable blocks of the model.
        device: the device of the batch (per-sample counts are moved there).

    Raises:
        ValueError: for a count out of range, a non-integer dtype or a wrong length.
    """
    if n_blocks is None:
        return ExitPlan(exit_depth, exit_depth)
    if isinstance(n_blocks, torch.Tensor) and n_blocks.ndim == 0:
        n_blocks = n_blocks.item()
    if isinstance(n_blocks, torch.Tensor):
        if n_blocks.dtype.is_floating_point or n_blocks.dtype.is_complex or n_blocks.dtype == torch.bool:
            raise ValueError(f"n_blocks must be an integer tensor, got dtype {n_blocks.dtype}")
        if n_blocks.shape != (batch_size,):
            raise ValueError(
                f"n_blocks must be an int or a ({batch_size},) tensor (one count per sample), "
                f"got shape {tuple(n_blocks.shape)}"
            )
        low, high = int(n_blocks.min()), int(n_blocks.max())
        if low < 1 or high > exit_depth:
            raise ValueError(
                f"n_blocks must lie in [1, {exit_depth}] (exitable blocks of this model), "
                f"got values in [{low}, {high}]"
            )
        if low == high:
            return ExitPlan(low, low)
        return ExitPlan(low, high, n_blocks.to(device=device, dtype=torch.long))
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int):
        raise ValueError(f"n_blocks must be None, an int or an integer tensor, got {type(n_blocks).__name__}")
    if not 1 <= n_blocks <= exit_depth:
        raise ValueError(f"n_blocks must lie in [1, {exit_depth}] (exitable blocks of this model), got {n_blocks}")
    return ExitPlan(n_blocks, n_blocks)


def apply_exit_heads(
    head: Callable[..., torch.Tensor],
    n_blocks: int | torch.Tensor | None,
    exit_depth: int,
    *inputs: torch.Tensor,
) -> torch.Tensor:
    """Each sample through the exit head of its own block count (models with exit heads).

    Args:
        head: ``head(k, *inputs)``, the output head after ``k`` exitable blocks on a batch.
        n_blocks: the blocks each sample ran, as in a model's forward.
        exit_depth: number of exitable blocks of the model.
        *inputs: (N, ...) tensors that ``head`` reads, split by sample.

    Returns:
        (N, ...): row ``i`` is ``head(n_blocks[i], *inputs)[i]``; a batch with one count runs one
        head on the whole batch, a mixed one runs each head on its samples only (so a head's
        gradient comes only from the samples that exit there).
    """
    plan = resolve_n_blocks(n_blocks, inputs[0].shape[0], exit_depth, inputs[0].device)
    if plan.per_sample is None:
        return head(plan.total, *inputs)
    out: torch.Tensor | None = None
    for k in torch.unique(plan.per_sample).tolist():
        rows = torch.nonzero(plan.per_sample == k).squeeze(1)  # (N_k,)
        part = head(k, *(a[rows] for a in inputs))  # (N_k, ...)
        if out is None:
            out = part.new_zeros((inputs[0].shape[0], *part.shape[1:]))
        out = out.index_copy(0, rows, part)  # differentiable in part
    assert out is not None
    return out


#################################################################################
#                                  Block reuse                                  #
#################################################################################


class BlockReuse:
    """The block-reuse and forecast cache of one sampling trajectory (``reuse`` and ``forecast``
    intervals, issues #16 and #24).

    The sampler makes a fresh one for each batch trajectory, so nothing carries over between runs,
    seeds or batches, and calls :meth:`begin` before every call with the call's
    :class:`~ase_search.callplan.PlannedCall` and time. A model's forward with ``reuse=`` this
    object runs every block on a refresh call and keeps, per sample (guidance's doubled batch is
    one batch here, so per branch too), the residual of the blocks past the sample's count with
    the call's time; on any other call it runs the count and adds that residual, forecast to the
    call's time (:func:`ase_search.callplan.forecast`; order 0 adds the last one as it is). What
    the residual is belongs to each model (see :mod:`ase_search.schedule`); DiT keeps one, under
    ``"past"``, U-ViT one per decoder block.

    Attributes:
        modules: keep each block's attention and MLP outputs before the gates (schedule
            granularity ``modules``; DiT) instead of one residual.
        refresh: whether the call in progress is a refresh.
        t: the call's time in ``[0, 1]``.
        order: the forecast order of the call in progress.
        call: the call in progress (its :class:`~ase_search.callplan.PlannedCall`; with
            ``modules``, which blocks it caches).
    """

    KEEP = 3  # refreshes kept per residual: enough for order 2

    def __init__(self, modules: bool = False) -> None:
        self.modules = modules  # per-module caching (schedule granularity "modules", DiT)
        self.refresh = True
        self.t = 0.0
        self.order = 0
        self.call: Any = None  # the call in progress (its PlannedCall), once begun
        self._counts: torch.Tensor | None = None  # (N,) the counts the residuals are valid for
        self._history: dict[Any, list[tuple[float, torch.Tensor]]] = {}

    def begin(self, call: Any, t: float) -> None:
        """Set up for the next call: its :class:`~ase_search.callplan.PlannedCall` and time."""
        if call.enters:
            self._history = {}  # each interval's run forecasts from its own refreshes
        self.refresh, self.order, self.t = call.refresh, call.order, float(t)
        self.call = call

    def runs(self, plan: ExitPlan, exit_depth: int) -> ExitPlan:
        """The blocks the model runs on this call: all of them on a refresh, else ``plan``'s."""
        return ExitPlan(exit_depth, exit_depth) if self.refresh else plan

    def store(self, key: Any, plan: ExitPlan, residual: torch.Tensor) -> None:
        """Keep ``residual`` (N, ...) for the counts of ``plan`` at this call's time; a refresh
        calls it."""
        counts = plan.counts(residual.shape[0], residual.device)
        if self._counts is None or not torch.equal(self._counts, counts):
            self._history = {}  # residuals past other counts are no longer valid
        self._counts = counts
        kept = self._history.setdefault(key, [])
        if kept and kept[-1][0] == self.t:
            kept.pop()  # a second refresh at one time (a repeated timestep) replaces the first
        kept.append((self.t, residual))
        del kept[:-self.KEEP]

    def residual(self, key: Any, plan: ExitPlan, batch_size: int,
                 device: torch.device) -> torch.Tensor:
        """The residual kept under ``key``, forecast to this call's time at its order, checked
        against ``plan``.

        Raises:
            ValueError: no refresh kept it, or it was kept for other block counts.
        """
        counts = plan.counts(batch_size, device)
        if key not in self._history:
            raise ValueError("block reuse: a reuse call needs a refresh call first (set "
                             "reuse.refresh = True) to store the residuals")
        if self._counts is None or not torch.equal(self._counts, counts):
            raise ValueError("block reuse: the residuals were stored for other block counts or "
                             "another batch; refresh at these counts first")
        return forecast(self._history[key], self.t, self.order)


#################################################################################
#                           Classifier-free guidance                            #
#################################################################################


def guided_eps(
    model: nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    cfg_scale: float,
    n_blocks: int | torch.Tensor | None = None,
    reuse: BlockReuse | None = None,
) -> torch.Tensor:
    """Classifier-free guidance over one batched forward: the one implementation in ase-search.

    The batch holds a conditional half and then an unconditional half (``y`` carries the model's
    ``null_class`` in the second half); the model runs on it once. In the first ``cfg_channels``
    output channels (``model.cfg_channels``; ``None`` or absent means all ``in_channels``) both
    halves get the
    guided ``eps = uncond + cfg_scale * (cond - uncond)``; every other channel (the learned
    variance, and for official DiT checkpoints the fourth latent channel, as in the official
    ``forward_with_cfg``) passes through from its own half. ``forward_with_cfg`` of DiT and U-ViT
    and the samplers call it.

    Args:
        model: an ase-search DiT or U-ViT with a null label.
        x: (2B, C, H, W) inputs.
        t: (2B,) timesteps.
        y: (2B,) labels, conditional half then null labels.
        cfg_scale: guidance scale ``s``; 1 gives the conditional eps.
        n_blocks: exitable blocks to run, as in the model's forward.
        reuse: the block-reuse cache, as in the model's forward; it keeps both branches.

    Returns:
        (2B, C_out, H, W) model output with guided eps channels.
    """
    if model.null_class is None:
        raise ValueError("classifier-free guidance needs a class-conditional model with a null label")
    if y is None or y.shape[0] % 2 != 0:
        got = "no labels" if y is None else y.shape[0]
        raise ValueError(f"classifier-free guidance needs an even batch (cond half, uncond half), got {got}")
    # reuse= only when reusing, so a model without block reuse still serves skip schedules.
    extra = {} if reuse is None else {"reuse": reuse}
    model_out = model(x, t, y, n_blocks=n_blocks, **extra)  # (2B, C_out, H, W)
    cfg_channels = getattr(model, "cfg_channels", None)  # optional in the model interface
    c = model.in_channels if cfg_channels is None else cfg_channels
    eps, rest = model_out[:, :c], model_out[:, c:]
    cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
    half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)  # (B, c, H, W)
    eps = torch.cat([half_eps, half_eps], dim=0)
    return torch.cat([eps, rest], dim=1)
