"""U-ViT (Bao et al., 2022) with ASE early exits.

Architecture and parameter names follow baofff/U-ViT ``libs/uvit.py`` so the official ``.pth``
files (bare state dicts) load with ``strict=True``. All inputs are tokens: the time token (and the
label token of a class-conditional model) are prepended to the patch tokens, in the order
``[label, time, patches]``. ``depth // 2`` encoder blocks (``in_blocks``) push their outputs, one
``mid_block`` follows, and ``depth // 2`` decoder blocks (``out_blocks``) pop them in reverse and fuse
them through ``skip_linear(cat([x, skip]))`` before attention and MLP. ``depth`` follows the
official convention: the CelebA/CIFAR-10 "13-layer" U-ViT-S is ``depth=12`` (6 + 1 + 6 blocks).

Early exit (ASE, Section 2.2 and Figure 2, right): only the decoder is exitable, because the long
skips make dropping encoder blocks lose information. ``n_blocks=k`` runs the encoder and the mid
block, then the first ``k`` decoder blocks whole. Each of the remaining decoder blocks is *dropped*:
it still pops its skip (in order) and applies its ``skip_linear`` to ``cat([x, skip])``, and
skips its norms, attention and MLP. Then come ``norm``, ``decoder_pred`` and the final layer.
A per-sample ``n_blocks`` tensor runs a decoder block whole only on the samples whose count
exceeds its index; the others get only its ``skip_linear``.

Block reuse (``reuse=``, a :class:`~ase_search.models.layers.BlockReuse` carried by the sampler): a
refresh call runs every block and stores, for each decoder block past a sample's count, what its
attention and MLP added there (``body(z) - z``, ``z`` its ``skip_linear`` output); any other call
treats those blocks as dropped (``skip_linear`` on the current state and skip) and adds the stored
residual. Per block rather than end to end, so a refresh costs exactly a full call (see
:mod:`ase_search.schedule`).

Exit heads (``exit_heads=True``, not in the paper): the output head is ``norm``, ``decoder_pred``
and ``final_layer``; each exit depth ``k < depth // 2`` gets its own copy of the three,
``exit_heads[str(k)]`` (an :class:`OutputHead`), and the top-level ones stay the head of the full
decoder (so the official state-dict keys are unchanged). A sample that ran ``k`` decoder blocks
whole goes through head ``k``, so fine-tuning trains each head on the samples that exit there.

Class labels: ``num_classes`` is the number of rows of ``label_emb`` as in the official code
(``num_classes <= 0``: unconditional). With ``has_null_label`` (default) the last row is the
classifier-free-guidance null label, as in the official latent ImageNet models (``num_classes=1001``,
null label 1000); so ``num_labels = num_classes - 1`` and ``null_class = num_classes - 1``. The
official code drops labels in the data pipeline; here ``class_dropout_prob`` (default 0) drops them
inside ``forward`` in training mode, like DiT.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.utils.checkpoint

from ase_search.models.layers import (
    Attention,
    BlockReuse,
    Mlp,
    PatchEmbed,
    apply_exit_heads,
    check_inputs,
    check_labels,
    check_model_size,
    guided_eps,
    resolve_n_blocks,
    timestep_embedding,
    unpatchify,
)

__all__ = ["Block", "OutputHead", "UViT", "UViT_models"]


class Block(nn.Module):
    """A pre-norm transformer block; decoder blocks first fuse the long skip through ``skip_linear``.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over ``dim``.
        qkv_bias: bias of the fused ``qkv`` projection.
        qk_scale: attention temperature (``None``: ``head_dim ** -0.5``).
        skip: give the block a ``skip_linear`` (decoder blocks).
        use_checkpoint: recompute attention and MLP in the backward pass to save memory.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        skip: bool = False,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.use_checkpoint = use_checkpoint

    def fuse(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """The long-skip fusion, the only part of a decoder block that ASE keeps when dropping it."""
        if self.skip_linear is None:
            return x
        return self.skip_linear(torch.cat([x, skip], dim=-1))  # (N, L, D)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """Attention and MLP with residuals, the part a dropped decoder block skips."""
        if self.use_checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(self._body, x, use_reentrant=False)
        return self._body(x)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(self.fuse(x, skip))


class OutputHead(nn.Module):
    """An exit head of U-ViT: its own ``norm``, ``decoder_pred`` and ``final_layer``, shaped as the
    model's shared ones (whose values it starts from)."""

    def __init__(self, embed_dim: int, patch_dim: int, in_chans: int, conv: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch_dim)
        self.final_layer = nn.Conv2d(in_chans, in_chans, 3, padding=1) if conv else nn.Identity()


class UViT(nn.Module):
    """U-ViT noise-prediction network whose decoder blocks are exitable.

    Args:
        img_size: spatial size of the (square) input.
        patch_size: patch side; must divide ``img_size``.
        in_chans: input (and output) channels.
        embed_dim: token width.
        depth: official depth: ``depth // 2`` encoder blocks, one mid block, ``depth // 2`` decoder
            blocks (``depth=12`` is the 13-block U-ViT-S).
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over ``embed_dim``.
        qkv_bias: bias of the fused ``qkv`` projections.
        qk_scale: attention temperature (``None``: ``head_dim ** -0.5``).
        mlp_time_embed: embed time through Linear-SiLU-Linear (else the sinusoid is the token).
        num_classes: rows of the label embedding, null label included; ``<= 0`` is unconditional.
        use_checkpoint: activation checkpointing of every block's attention and MLP.
        conv: a 3x3 convolution after unpatchifying (``final_layer``).
        skip: long skip connections (``skip_linear`` in decoder blocks).
        class_dropout_prob: probability of replacing a label by the null label in training mode.
        has_null_label: whether the last label row is the null label of classifier-free guidance.
        exit_heads: give every exit depth below ``depth // 2`` its own output head (see the module
            docstring); each starts as a copy of the shared one.
    """

    arch = "uvit"
    learn_sigma = False
    cfg_channels: int | None = None  # guidance guides every channel (see layers.guided_eps)

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        mlp_time_embed: bool = False,
        num_classes: int = -1,
        use_checkpoint: bool = False,
        conv: bool = True,
        skip: bool = True,
        class_dropout_prob: float = 0.0,
        has_null_label: bool = True,
        exit_heads: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("img_size", img_size),
            ("patch_size", patch_size),
            ("in_chans", in_chans),
            ("embed_dim", embed_dim),
            ("num_heads", num_heads),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer >= 2 (depth // 2 decoder blocks), got {depth!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise ValueError(f"num_classes must be an integer (<= 0 for unconditional), got {num_classes!r}")
        if img_size % patch_size != 0:
            raise ValueError(f"patch_size ({patch_size}) must divide img_size ({img_size})")
        if embed_dim % num_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}")
        conditional = num_classes > 0
        if conditional and has_null_label and num_classes < 2:
            raise ValueError(
                f"num_classes counts the null label too, so a conditional model needs num_classes >= 2, "
                f"got {num_classes}"
            )
        if not 0.0 <= class_dropout_prob <= 1.0:
            raise ValueError(f"class_dropout_prob must lie in [0, 1], got {class_dropout_prob}")
        if not isinstance(exit_heads, bool):
            raise ValueError(f"exit_heads must be true or false, got {exit_heads!r}")
        if class_dropout_prob > 0 and not (conditional and has_null_label):
            raise ValueError(
                "class_dropout_prob > 0 needs a null label: use num_classes > 0 with has_null_label=True"
            )
        # Before any module exists: depth + 1 blocks (attention 4 e^2, MLP 2 r e^2, a decoder
        # skip_linear 2 e^2), the time MLP, embeddings (patches, pos_embed, labels) and the head.
        e, tokens = embed_dim, (img_size // patch_size) ** 2
        check_model_size(depth, (depth + 1) * (4 + 2 * mlp_ratio) * e * e + depth * e * e
                         + 8 * e * e + e * (2 * patch_size**2 * in_chans + tokens + 2
                                            + max(num_classes, 0))
                         + (depth // 2 - 1 if exit_heads else 0) * e * (patch_size**2 * in_chans + 2))
        self.config: dict[str, Any] = dict(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=float(mlp_ratio),
            qkv_bias=bool(qkv_bias),
            qk_scale=None if qk_scale is None else float(qk_scale),
            mlp_time_embed=bool(mlp_time_embed),
            num_classes=num_classes,
            use_checkpoint=bool(use_checkpoint),
            conv=bool(conv),
            skip=bool(skip),
            class_dropout_prob=float(class_dropout_prob),
            has_null_label=bool(has_null_label),
        )
        if exit_heads:
            # Recorded only when set, so every other model's config (and the keys derived from it)
            # stays as it was.
            self.config["exit_heads"] = True
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.in_channels = in_chans
        self.out_channels = in_chans
        self.input_size = img_size
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.exit_depth = depth // 2
        self.class_dropout_prob = float(class_dropout_prob)
        if conditional:
            self.num_labels = num_classes - 1 if has_null_label else num_classes
            self.null_class: int | None = num_classes - 1 if has_null_label else None
        else:
            self.num_labels, self.null_class = 0, None

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches

        self.time_embed = (
            nn.Sequential(nn.Linear(embed_dim, 4 * embed_dim), nn.SiLU(), nn.Linear(4 * embed_dim, embed_dim))
            if mlp_time_embed
            else nn.Identity()
        )
        self.label_emb = nn.Embedding(num_classes, embed_dim) if conditional else None
        self.extras = 2 if conditional else 1  # prepended tokens: [label,] time
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + num_patches, embed_dim))

        block_kwargs = dict(
            dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
            use_checkpoint=use_checkpoint,
        )
        self.in_blocks = nn.ModuleList([Block(**block_kwargs) for _ in range(depth // 2)])
        self.mid_block = Block(**block_kwargs)
        self.out_blocks = nn.ModuleList([Block(**block_kwargs, skip=skip) for _ in range(depth // 2)])

        self.norm = nn.LayerNorm(embed_dim)
        self.patch_dim = patch_size**2 * in_chans
        self.decoder_pred = nn.Linear(embed_dim, self.patch_dim)
        self.final_layer = nn.Conv2d(in_chans, in_chans, 3, padding=1) if conv else nn.Identity()
        self.exit_heads = nn.ModuleDict(
            {str(k): OutputHead(embed_dim, self.patch_dim, in_chans, conv) for k in range(1, depth // 2)}
        ) if exit_heads else None

        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)
        self.init_exit_heads()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def init_exit_heads(self) -> None:
        """Set every exit head to a copy of the shared head (nothing without exit heads).

        The model then computes what it computes without heads, so heads can be switched on for
        trained weights (:func:`ase_search.models.add_exit_heads`) and trained from there.
        """
        for head in (self.exit_heads or {}).values():
            for name in ("norm", "decoder_pred", "final_layer"):
                getattr(head, name).load_state_dict(getattr(self, name).state_dict())

    def exit_head(self, k: int) -> nn.Module:
        """What holds the ``norm``, ``decoder_pred`` and ``final_layer`` applied after ``k`` decoder
        blocks: head ``k`` with exit heads, else (and at the full depth) the model's own."""
        if self.exit_heads is None or k == self.exit_depth:
            return self
        return self.exit_heads[str(k)]

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay by the official training recipe."""
        return {"pos_embed"}

    def _labels(self, y: torch.Tensor | None, batch_size: int, device: torch.device) -> torch.Tensor | None:
        """Validate ``y`` and apply training-time label dropout; ``None`` for unconditional models."""
        if self.label_emb is None:
            if y is not None:
                raise ValueError("this U-ViT is unconditional (num_classes <= 0): pass y=None")
            return None
        if y is None:
            if self.null_class is None:
                raise ValueError("y is required: this U-ViT has no null label (has_null_label=False)")
            return torch.full((batch_size,), self.null_class, dtype=torch.long, device=device)
        check_labels(y, batch_size, self.num_classes)
        if self.training and self.class_dropout_prob > 0:
            drop = torch.rand(batch_size, device=y.device) < self.class_dropout_prob
            y = torch.where(drop, self.null_class, y)
        return y

    # The parts ``forward`` is made of; the cost model, ToMe and guidance use them too.

    def embed(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """All inputs as tokens ``[label, time, patches]`` with positions added (inputs unchecked).

        Args:
            x: (N, C, H, W) inputs.
            t: (N,) timesteps.
            y: (N,) labels of a conditional model (checked, training-time dropout applied),
                ``None`` for an unconditional one.

        Returns:
            (N, extras + L, D) tokens.
        """
        x = self.patch_embed(x)  # (N, L, D)
        t_emb = timestep_embedding(t, self.embed_dim).to(x.dtype)  # (N, D), float32 -> model dtype
        time_token = self.time_embed(t_emb).unsqueeze(1)  # (N, 1, D)
        x = torch.cat((time_token, x), dim=1)  # (N, 1 + L, D)
        if y is not None:
            label_token = self.label_emb(y).unsqueeze(1)  # (N, 1, D)
            x = torch.cat((label_token, x), dim=1)  # (N, 2 + L, D)
        return x + self.pos_embed  # (N, extras + L, D)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The encoder blocks and the mid block, the part that always runs whole (never exited).

        Args:
            x: (N, extras + L, D) tokens from :meth:`embed`.

        Returns:
            ``(h, skips)``: the mid block's output and the encoder blocks' outputs in order (the
            decoder pops them from the end).
        """
        skips = []
        for blk in self.in_blocks:
            x = blk(x)  # (N, extras + L, D)
            skips.append(x)
        x = self.mid_block(x)  # (N, extras + L, D)
        return x, skips

    @property
    def exit_blocks(self) -> nn.ModuleList:
        """The blocks an exit schedule counts, in forward order: the decoder blocks."""
        return self.out_blocks

    @property
    def transformer_blocks(self) -> list[nn.Module]:
        """Every block with self-attention over the tokens, in forward order (what ToMe counts):
        encoder blocks, the mid block, decoder blocks."""
        return [*self.in_blocks, self.mid_block, *self.out_blocks]

    @property
    def grid_size(self) -> int:
        """Patch tokens per side of the (square) token grid."""
        return self.patch_embed.grid_size

    def head(self, x: torch.Tensor, n_blocks: int | torch.Tensor | None = None) -> torch.Tensor:
        """Norm, ``decoder_pred`` on the patch tokens, unpatchify and the final layer.

        Args:
            x: (N, extras + L, D) output of the last decoder block.
            n_blocks: the decoder blocks each sample ran whole, as in :meth:`forward`; with exit
                heads it picks each sample's head (``None``: the full depth's, the shared one).

        Returns:
            (N, C, H, W).
        """
        if self.exit_heads is None:
            return self._predict(self, x)
        return apply_exit_heads(lambda k, x: self._predict(self.exit_head(k), x), n_blocks,
                                self.exit_depth, x)

    def _predict(self, parts: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """:meth:`head` with the ``norm``, ``decoder_pred`` and ``final_layer`` of ``parts``."""
        x = parts.norm(x)
        x = parts.decoder_pred(x)  # (N, extras + L, p * p * C)
        assert x.size(1) == self.extras + self.patch_embed.num_patches
        x = x[:, self.extras :, :]  # (N, L, p * p * C)
        x = unpatchify(x, self.patch_size, self.in_chans)  # (N, C, H, W)
        return parts.final_layer(x)  # (N, C, H, W)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        n_blocks: int | torch.Tensor | None = None,
        reuse: BlockReuse | None = None,
    ) -> torch.Tensor:
        """Forward pass of U-ViT, running the first ``n_blocks`` decoder blocks whole.

        Args:
            x: (N, C, H, W) noisy images.
            t: (N,) diffusion timesteps in ``[0, T)``, float or integer.
            y: (N,) labels for a conditional model (``None``: the null label); must be ``None`` for
                an unconditional one.
            n_blocks: ``None`` (all decoder blocks), an int in ``[1, depth // 2]``, or an (N,)
                integer tensor of per-sample counts. Dropped decoder blocks apply only ``skip_linear``.
            reuse: block reuse (see the module docstring); ``None`` adds nothing past the count.

        Returns:
            (N, C, H, W) noise prediction.
        """
        t = check_inputs(self, x, t)
        N = x.shape[0]
        y = self._labels(y, N, x.device)
        plan = resolve_n_blocks(n_blocks, N, self.exit_depth, x.device)

        x = self.embed(x, t, y)  # (N, extras + L, D)
        x, skips = self.encode(x)  # (N, extras + L, D), one skip per decoder block

        for i, blk in enumerate(self.out_blocks):
            skip = skips.pop()  # the output of the mirrored encoder block
            if i < plan.full:
                x = blk(x, skip)  # (N, extras + L, D)
            elif reuse is not None and reuse.refresh:
                z = blk.fuse(x, skip)  # (N, extras + L, D)
                x = blk.body(z)
                reuse.store(i, plan, x - z)  # what the body adds, for the samples that drop it
            else:
                # Dropped block (ASE): keep skip_linear so the encoder features still reach the head.
                x = blk.fuse(x, skip)  # (N, extras + L, D)
                if reuse is not None:
                    dropped = plan.counts(N, x.device) <= i  # (N,)
                    residual = reuse.residual(i, plan, N, x.device)
                    x = torch.where(dropped[:, None, None], x + residual, x)
                if i < plan.total:
                    rows = plan.rows(i)  # the samples that still run this block whole
                    x = x.index_copy(0, rows, blk.body(x[rows]))

        # With reuse, x stands for the full decoder's output: the full depth's head reads it.
        return self.head(x, n_blocks if reuse is None else None)  # (N, C, H, W)

    def forward_with_cfg(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        cfg_scale: float,
        n_blocks: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Batched classifier-free guidance with DiT's contract (see :func:`layers.guided_eps`).

        The batch holds the conditional half then the unconditional half (``y`` holds ``null_class``
        there); only the first half of ``x`` is read. Returns ``uncond + cfg_scale * (cond -
        uncond)`` in both halves. The official U-ViT samplers write guidance as
        ``cond + w * (cond - uncond)``, i.e. ``cfg_scale = 1 + w``.
        """
        half = x[: len(x) // 2]
        return guided_eps(self, torch.cat([half, half], dim=0), t, y, cfg_scale, n_blocks=n_blocks)


#################################################################################
#                                  U-ViT Configs                                #
#################################################################################

_SMALL = dict(embed_dim=512, depth=12, num_heads=8, mlp_ratio=4, qkv_bias=False, mlp_time_embed=False)

UViT_models: dict[str, Callable[..., UViT]] = {
    # configs/celeba64_uvit_small.py: CelebA 64x64, unconditional (the paper's U-ViT reference).
    "U-ViT-S/4": functools.partial(UViT, img_size=64, patch_size=4, in_chans=3, num_classes=-1, **_SMALL),
    # configs/cifar10_uvit_small.py: CIFAR-10 32x32, unconditional.
    "U-ViT-S/2": functools.partial(UViT, img_size=32, patch_size=2, in_chans=3, num_classes=-1, **_SMALL),
    # configs/imagenet64_uvit_{mid,large}.py: pixel ImageNet 64x64, 1000 labels and no null label.
    "U-ViT-M/4": functools.partial(
        UViT, img_size=64, patch_size=4, in_chans=3, embed_dim=768, depth=16, num_heads=12,
        mlp_ratio=4, qkv_bias=False, mlp_time_embed=False, num_classes=1000, has_null_label=False,
    ),
    "U-ViT-L/4": functools.partial(
        UViT, img_size=64, patch_size=4, in_chans=3, embed_dim=1024, depth=20, num_heads=16,
        mlp_ratio=4, qkv_bias=False, mlp_time_embed=False, num_classes=1000, has_null_label=False,
    ),
    # Testbed (MNIST 28x28): 16 tokens of 7x7 pixels, 6 + 1 + 6 blocks, 10 labels + null label 10.
    # No final 3x3 conv (as the official latent-space configs): with Adam each of its 10 weights moves
    # about lr per step, so it needs thousands of steps to approach the identity the network first has
    # to learn (eps ~ x_t near noise), which the testbed's short training cannot afford.
    "U-ViT-T": functools.partial(
        UViT, img_size=28, patch_size=7, in_chans=1, embed_dim=128, depth=12, num_heads=4, mlp_ratio=4,
        qkv_bias=False, mlp_time_embed=False, num_classes=11, class_dropout_prob=0.1, conv=False,
    ),
    # Unit tests only: 3 + 1 + 3 blocks of width 32, 5 labels + null label 5.
    "U-ViT-test": functools.partial(
        UViT, img_size=8, patch_size=2, in_chans=2, embed_dim=32, depth=6, num_heads=2, mlp_ratio=2,
        qkv_bias=True, mlp_time_embed=True, num_classes=6, class_dropout_prob=0.1,
    ),
}
