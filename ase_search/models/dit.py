"""DiT (Peebles & Xie, 2022) with ASE early exits.

Architecture, parameter names and size registry follow facebookresearch/DiT ``models.py``, so the
official checkpoints (e.g. ``DiT-XL-2-256x256.pt``, a bare state dict) load with ``strict=True``.

Early exit (ASE, Section 2.2 and Figure 2, left): every DiT block is exitable and blocks are dropped
from the end. ``forward(x, t, y, n_blocks=k)`` runs ``blocks[:k]`` and then the final layer, which
reads the output of block ``k`` directly. A per-sample ``n_blocks`` tensor runs block ``i`` only on
the samples whose count exceeds ``i``, so a batch mixing timesteps costs only the blocks it uses
and each sample's output and gradient equal those of running it alone.

Block reuse (``reuse=``, a :class:`~ase_search.models.layers.BlockReuse` carried by the sampler): a
refresh call runs every block and stores, per sample, the hidden state after all blocks minus the
hidden state after block ``n_blocks``; any other call runs ``n_blocks`` blocks and adds it back.

Exit heads (``exit_heads=True``, not in the paper): each exit depth ``k < depth`` gets its own final
layer, ``exit_heads[str(k)]``, started as a copy of the shared ``final_layer`` (which stays the head
of the full depth, so the official state-dict keys are unchanged); a sample that ran ``k`` blocks
goes through head ``k``, so fine-tuning trains each head on the samples that exit there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from ase_search.models.layers import (
    Attention,
    BlockReuse,
    Mlp,
    PatchEmbed,
    apply_exit_heads,
    check_inputs,
    check_labels,
    check_model_size,
    get_2d_sincos_pos_embed,
    guided_eps,
    resolve_n_blocks,
    timestep_embedding,
    unpatchify,
)

__all__ = ["DiT", "DiTBlock", "DiT_models", "FinalLayer", "LabelEmbedder", "TimestepEmbedder"]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation of (N, T, D) tokens by per-sample (N, D) shift and scale."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


#################################################################################
#               Embedding Layers for Timesteps and Class Labels                 #
#################################################################################


class TimestepEmbedder(nn.Module):
    """Sinusoidal timestep features followed by a two-layer MLP (``mlp.0``, ``mlp.2``)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = timestep_embedding(t, self.frequency_embedding_size)  # (N, 256), float32
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))  # (N, D)


class LabelEmbedder(nn.Module):
    """Class-label embedding with label dropout for classifier-free guidance.

    When ``dropout_prob > 0`` the table gets one extra row, index ``num_classes``, the null label.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        use_cfg_embedding = int(dropout_prob > 0)
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor) -> torch.Tensor:
        """Replace each label by the null label with probability ``dropout_prob``."""
        drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        return torch.where(drop_ids, self.num_classes, labels)

    def forward(self, labels: torch.Tensor, train: bool) -> torch.Tensor:
        if train and self.dropout_prob > 0:
            labels = self.token_drop(labels)
        return self.embedding_table(labels)  # (N, D)


#################################################################################
#                                 Core DiT Model                                #
#################################################################################


class DiTBlock(nn.Module):
    """A DiT block with adaptive layer norm zero (adaLN-Zero) conditioning."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), tanh_gelu=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.parts(x, c)[0]

    def parts(self, x: torch.Tensor, c: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The block's output and its attention and MLP outputs before the adaLN gates (what a
        per-module cache keeps, schedule granularity ``modules``): (N, T, D) each."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        attn = self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_msa.unsqueeze(1) * attn
        mlp = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        x = x + gate_mlp.unsqueeze(1) * mlp
        return x, attn, mlp

    def gated(self, x: torch.Tensor, c: torch.Tensor, attn: torch.Tensor,
              mlp: torch.Tensor) -> torch.Tensor:
        """The block with kept (forecast) attention and MLP outputs: only the adaLN modulation
        runs, so the gates follow this call's conditioning."""
        _, _, gate_msa, _, _, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * attn
        return x + gate_mlp.unsqueeze(1) * mlp


class FinalLayer(nn.Module):
    """The final layer of DiT: adaLN-modulated norm and a linear map to patch pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        x = modulate(self.norm_final(x), shift, scale)  # (N, T, D)
        return self.linear(x)  # (N, T, p * p * C_out)


class DiT(nn.Module):
    """Diffusion model with a Transformer backbone, exitable after any block.

    Args:
        input_size: spatial size of the (square) input.
        patch_size: patch side; must divide ``input_size``.
        in_channels: input channels C.
        hidden_size: token width; divisible by ``num_heads`` and by 4.
        depth: number of DiT blocks (all exitable).
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over ``hidden_size``.
        class_dropout_prob: label-dropout probability during training; when positive the label
            table gets a null row (index ``num_classes``) used by classifier-free guidance.
        num_classes: number of real classes.
        learn_sigma: predict the variance interpolation too (``2 * C`` output channels).
        cfg_channels: the leading output channels classifier-free guidance guides (the rest pass
            through); ``None`` guides all ``in_channels``. The official DiT code guides 3 of its 4
            latent channels, so official checkpoints load with ``cfg_channels=3`` and sample as it
            does (see :func:`ase_search.models.layers.guided_eps`).
        exit_heads: give every exit depth below ``depth`` its own final layer (see the module
            docstring); each starts as a copy of the shared one.
    """

    arch = "dit"
    extras = 0  # tokens before the patches: none, time and label enter through adaLN

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        cfg_channels: int | None = None,
        exit_heads: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("input_size", input_size),
            ("patch_size", patch_size),
            ("in_channels", in_channels),
            ("hidden_size", hidden_size),
            ("depth", depth),
            ("num_heads", num_heads),
            ("num_classes", num_classes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if input_size % patch_size != 0:
            raise ValueError(f"patch_size ({patch_size}) must divide input_size ({input_size})")
        if hidden_size % num_heads != 0 or hidden_size % 4 != 0:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}) and by 4 "
                "(for the 2D sin-cos positional embedding)"
            )
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}")
        if not 0.0 <= class_dropout_prob <= 1.0:
            raise ValueError(f"class_dropout_prob must lie in [0, 1], got {class_dropout_prob}")
        if cfg_channels is not None and (isinstance(cfg_channels, bool) or not isinstance(cfg_channels, int)
                                         or not 1 <= cfg_channels <= in_channels):
            raise ValueError(f"cfg_channels must be None or an integer in [1, {in_channels}] (in_channels), "
                             f"got {cfg_channels!r}")
        if not isinstance(exit_heads, bool):
            raise ValueError(f"exit_heads must be true or false, got {exit_heads!r}")
        # Before any module exists: blocks (attention 4 h^2, MLP 2 r h^2, adaLN 6 h^2), embeddings
        # (patches, pos_embed, timestep MLP, label table) and the final layer.
        h, pixels = hidden_size, patch_size**2 * in_channels * (3 if learn_sigma else 2)
        tokens = (input_size // patch_size) ** 2
        check_model_size(depth, depth * (10 + 2 * mlp_ratio) * h * h + 3 * h * h
                         + h * (pixels + tokens + 256 + num_classes + 1)
                         + (depth - 1 if exit_heads else 0) * h * (2 * h + pixels))
        self.config: dict[str, Any] = dict(
            input_size=input_size,
            patch_size=patch_size,
            in_channels=in_channels,
            hidden_size=hidden_size,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=float(mlp_ratio),
            class_dropout_prob=float(class_dropout_prob),
            num_classes=num_classes,
            learn_sigma=bool(learn_sigma),
        )
        if cfg_channels is not None:
            # Recorded only when set, so every other model's config (and the keys derived from it)
            # stays as it was.
            self.config["cfg_channels"] = cfg_channels
        if exit_heads:
            self.config["exit_heads"] = True  # likewise recorded only when set
        self.cfg_channels = cfg_channels
        self.learn_sigma = bool(learn_sigma)
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.input_size = input_size
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.exit_depth = depth
        self.num_labels = num_classes
        self.null_class: int | None = num_classes if class_dropout_prob > 0 else None

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        # Fixed sin-cos embedding, kept as a frozen Parameter so it sits in the state dict as in the
        # official checkpoints.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)

        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.exit_heads = nn.ModuleDict(
            {str(k): FinalLayer(hidden_size, patch_size, self.out_channels) for k in range(1, depth)}
        ) if exit_heads else None
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Official DiT initialisation: xavier linears, sin-cos ``pos_embed``, adaLN-Zero."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)

        pos_embed = get_2d_sincos_pos_embed(
            self.pos_embed.shape[-1], self.x_embedder.grid_size, device=self.pos_embed.device
        )  # (T, D)
        self.pos_embed.data.copy_(pos_embed.unsqueeze(0))

        # The patch embedding is initialised like an nn.Linear on flattened patches.
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))

        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)

        # adaLN-Zero: every block starts as the identity and the output starts at zero.
        for block in self.blocks:
            nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)
        self.init_exit_heads()

    def init_exit_heads(self) -> None:
        """Set every exit head to a copy of the shared final layer (nothing without exit heads).

        The model then computes what it computes without heads, so heads can be switched on for
        trained weights (:func:`ase_search.models.add_exit_heads`) and trained from there.
        """
        for head in (self.exit_heads or {}).values():
            head.load_state_dict(self.final_layer.state_dict())

    def exit_head(self, k: int) -> FinalLayer:
        """The final layer after ``k`` blocks: head ``k`` with exit heads, else the shared one."""
        if self.exit_heads is None or k == self.exit_depth:
            return self.final_layer
        return self.exit_heads[str(k)]

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, p * p * C_out) -> (N, C_out, H, W)."""
        return unpatchify(x, self.patch_size, self.out_channels)

    # The parts ``forward`` is made of; the cost model, ToMe and guidance use them too.

    def embed(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens and the conditioning vector, before the first block (inputs unchecked).

        Args:
            x: (N, C, H, W) inputs.
            t: (N,) timesteps.
            y: (N,) labels (the null label included); dropped as in training when in training mode.

        Returns:
            ``(h, c)``: (N, T, D) tokens with positions added and the (N, D) timestep + label embedding.
        """
        h = self.x_embedder(x) + self.pos_embed  # (N, T, D), where T = H * W / patch_size ** 2
        t = self.t_embedder(t)  # (N, D)
        y = self.y_embedder(y, self.training)  # (N, D)
        return h, t + y

    @property
    def exit_blocks(self) -> nn.ModuleList:
        """The blocks an exit schedule counts, in forward order: every DiT block."""
        return self.blocks

    @property
    def transformer_blocks(self) -> list[nn.Module]:
        """Every block with self-attention over the tokens, in forward order (what ToMe counts)."""
        return list(self.blocks)

    @property
    def grid_size(self) -> int:
        """Patch tokens per side of the (square) token grid."""
        return self.x_embedder.grid_size

    def head(self, h: torch.Tensor, c: torch.Tensor,
             n_blocks: int | torch.Tensor | None = None) -> torch.Tensor:
        """The final layer on the output of the last block run, unpatchified.

        Args:
            h: (N, T, D) tokens.
            c: (N, D) conditioning from :meth:`embed`.
            n_blocks: the blocks each sample ran, as in :meth:`forward`; with exit heads it picks
                each sample's head (``None``: the full depth's, the shared final layer).

        Returns:
            (N, out_channels, H, W).
        """
        if self.exit_heads is None:
            h = self.final_layer(h, c)  # (N, T, patch_size ** 2 * out_channels)
        else:
            h = apply_exit_heads(lambda k, *a: self.exit_head(k)(*a), n_blocks, self.exit_depth, h, c)
        return self.unpatchify(h)  # (N, out_channels, H, W)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        n_blocks: int | torch.Tensor | None = None,
        reuse: BlockReuse | None = None,
    ) -> torch.Tensor:
        """Forward pass of DiT, exiting after ``n_blocks`` blocks.

        Args:
            x: (N, C, H, W) inputs (images or latents).
            t: (N,) diffusion timesteps in ``[0, T)``, float or integer.
            y: (N,) class labels; ``None`` means the null label (requires ``class_dropout_prob > 0``).
            n_blocks: ``None`` (all blocks), an int in ``[1, depth]``, or an (N,) integer tensor of
                per-sample counts.
            reuse: block reuse (see the module docstring); ``None`` adds nothing past the count.

        Returns:
            (N, C_out, H, W); ``C_out = 2 * C`` when ``learn_sigma``.
        """
        t = check_inputs(self, x, t)
        N = x.shape[0]
        if y is None:
            if self.null_class is None:
                raise ValueError("y is required: this DiT has no null label (class_dropout_prob == 0)")
            y = torch.full((N,), self.null_class, dtype=torch.long, device=x.device)
        check_labels(y, N, self.y_embedder.embedding_table.num_embeddings)
        plan = resolve_n_blocks(n_blocks, N, self.exit_depth, x.device)
        refresh = reuse is not None and reuse.refresh
        run = plan if reuse is None else reuse.runs(plan, self.exit_depth)  # refresh: every block

        x, c = self.embed(x, t, y)  # (N, T, D), (N, D)
        if reuse is not None and reuse.modules:
            return self.head(self._per_module(x, c, plan, reuse), c, None)
        exited = x  # on a refresh: each sample's state after its own n_blocks blocks
        for i, block in enumerate(self.blocks[: run.total]):
            rows = run.rows(i)
            if rows is None:
                x = block(x, c)  # (N, T, D)
            else:
                # Only the samples with n_blocks > i run block i; the others carry x through.
                x = x.index_copy(0, rows, block(x[rows], c[rows]))  # (N, T, D)
            if refresh and plan.full <= i + 1 <= plan.total:
                at = plan.counts(N, x.device) == i + 1  # (N,) samples whose count is i + 1
                exited = torch.where(at[:, None, None], x, exited)  # (N, T, D)
        if refresh:
            reuse.store("past", plan, x - exited)  # (N, T, D)
        elif reuse is not None:
            x = x + reuse.residual("past", plan, N, x.device)  # (N, T, D)
        # With reuse, x stands for the full depth's state: the full depth's head reads it.
        return self.head(x, c, n_blocks if reuse is None else None)  # (N, out_channels, H, W)

    def _per_module(self, x: torch.Tensor, c: torch.Tensor, plan: Any,
                    reuse: BlockReuse) -> torch.Tensor:
        """The blocks under a per-module cache (schedule granularity ``modules``): the blocks
        the call does not cache run (the first ``count`` for the default ``rear`` range); each
        cached one runs whole on a refresh, keeping its attention and MLP outputs before the
        gates, and otherwise adds the kept ones (forecast to this call's time) through this
        call's gates."""
        if plan.per_sample is not None:
            raise ValueError("a per-module cache needs one block count per call (sampling), not "
                             "per-sample counts")
        N = x.shape[0]
        cached = (set(range(plan.total, len(self.blocks))) if reuse.call is None
                  else set(reuse.call.cached(len(self.blocks))))
        for i, block in enumerate(self.blocks):
            if i not in cached:
                x = block(x, c)  # (N, T, D)
            elif reuse.refresh:
                x, attn, mlp = block.parts(x, c)
                reuse.store(("attn", i), plan, attn)
                reuse.store(("mlp", i), plan, mlp)
            else:
                x = block.gated(x, c, reuse.residual(("attn", i), plan, N, x.device),
                                reuse.residual(("mlp", i), plan, N, x.device))
        return x

    def forward_with_cfg(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        cfg_scale: float,
        n_blocks: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Batched classifier-free guidance as in the official ``forward_with_cfg``.

        The batch holds the conditional half then the unconditional half (``y`` holds
        ``null_class`` there); only the first half of ``x`` is read. The guided
        ``eps = uncond + cfg_scale * (cond - uncond)`` fills both halves in the first
        ``cfg_channels`` channels (all ``in_channels`` when ``None``; 3 for official checkpoints, as
        the official code) and the other channels pass through (see
        :func:`ase_search.models.layers.guided_eps`).
        """
        half = x[: len(x) // 2]
        return guided_eps(self, torch.cat([half, half], dim=0), t, y, cfg_scale, n_blocks=n_blocks)


#################################################################################
#                                   DiT Configs                                 #
#################################################################################

# Sizes of the DiT paper (Table 1): depth, hidden size, heads.
_SIZES = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}

DiT_models: dict[str, Callable[..., DiT]] = {
    f"DiT-{size}/{patch}": functools.partial(
        DiT, depth=depth, hidden_size=hidden, patch_size=patch, num_heads=heads
    )
    for size, (depth, hidden, heads) in _SIZES.items()
    for patch in (2, 4, 8)
}
# Testbed (MNIST 28x28): 16 tokens of 7x7 pixels.
DiT_models["DiT-T"] = functools.partial(
    DiT, input_size=28, patch_size=7, in_channels=1, hidden_size=128, depth=12, num_heads=4,
    num_classes=10, class_dropout_prob=0.1, learn_sigma=True,
)
# Unit tests only: a few thousand parameters.
DiT_models["DiT-test"] = functools.partial(
    DiT, input_size=8, patch_size=2, in_channels=2, hidden_size=32, depth=4, num_heads=2,
    num_classes=5, class_dropout_prob=0.1, learn_sigma=True,
)
