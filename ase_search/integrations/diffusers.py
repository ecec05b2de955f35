"""Exit schedules on diffusers transformers, and the DiT testbed in diffusers form.

**Hooks.** :func:`apply_exit_schedule` attaches an :class:`~ase_search.schedule.ExitSchedule` to a
diffusers transformer the way ``diffusers.hooks.apply_first_block_cache`` attaches its cache: one
``ModelHook`` on the transformer reads the timestep of each call and one on every exitable block
runs it or returns its input unchanged. Pipelines and schedulers need no change; a
classifier-free-guidance batch (conditional and unconditional halves in one call) carries one
timestep, so both halves run the same blocks. :func:`remove_exit_schedule` restores the model;
``with applied_exit_schedule(transformer, schedule):`` does both around a block.

Exitable blocks (``EXIT_LAYOUTS``), counted in forward order, dropped from the end:

=============================  ===========================================  ================
class                          exitable blocks (depth)                      t of a call
=============================  ===========================================  ================
``DiTTransformer2DModel``      ``transformer_blocks`` (``num_layers``)      ``timestep / 1000``
``PixArtTransformer2DModel``   ``transformer_blocks`` (``num_layers``)      ``timestep / 1000``
``SD3Transformer2DModel``      ``transformer_blocks`` (``num_layers``)      ``timestep / 1000``
``FluxTransformer2DModel``     ``transformer_blocks`` then                  ``timestep``
                               ``single_transformer_blocks``
                               (``num_layers + num_single_layers``)
=============================  ===========================================  ================

Block reuse (``ExitSchedule.modes``, issue #16) works as in ase-search's own models
(:func:`ase_search.callplan.call_plan` numbers the calls): a refresh call runs every block and keeps
the image stream's residual past the count (after the last block minus after block ``count``); a
reuse call runs ``count`` blocks and adds it. The cache belongs to one trajectory: pipelines reset
the hooks after each call (diffusers' stateful-hook protocol), and a call whose time is later than
the previous one's, or whose batch has another shape, starts a new trajectory by itself, so a
user's own denoising loop needs no reset between images.

A schedule's ``depth`` must equal that count (FLUX.1: 19 + 38 = 57; a count of 25 runs the 19
double-stream blocks and the first 6 single-stream ones). The embeddings and the output layers
always run; the output layer reads the last block run.

Timesteps. DiT and PixArt are DDPM models called with integer timesteps ``i`` in ``[0, 1000)``:
``t = i / 1000``, the convention of :meth:`ExitSchedule.blocks_at_index`. SD3's pipeline passes the
flow-matching scheduler's ``timesteps``, ``sigma * 1000`` in ``[0, 1000]``, so ``t = sigma``.
FLUX's pipeline passes ``timestep / 1000``, the sigma itself in ``[0, 1]`` (the transformer
multiplies by 1000 inside), so again ``t = sigma``. Either way ``t = 1`` is pure noise and ``t = 0``
data, as in the schedules. ``timestep_scale`` overrides the divisor for other conventions.

**The testbed in diffusers form.** :func:`dit_to_diffusers` converts an ase-search (or official)
DiT into a ``DiTTransformer2DModel`` and :func:`export_dit` writes it with a matching
``DDIMScheduler`` config (DiT-T: pixel-space 28x28, patch 7, 1 channel in, 2 out for the learned
variance; all of it fits the class's config). What the class cannot express are its two fixed
tables: its timestep embedding divides the frequency exponent by ``half - 1``
(``downscale_freq_shift=1``) where official DiT divides by ``half``, and it builds the position
table itself, in float32. :func:`load_transformer` restores both (the folder's ``ase_search.json``
says so, and the source's table travels in ``ase_search_pos_embed.safetensors``), after which the
outputs equal the native model's; a plain ``DiTTransformer2DModel.from_pretrained`` loads the same
weights with diffusers' tables and its outputs differ visibly (reports/diffusers.md).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

from ase_search.callplan import CallNumbering, forecast
from ase_search.schedule import ExitSchedule

if TYPE_CHECKING:
    from ase_search.measure import SelfReference

__all__ = [
    "time_diffusers_runs",
    "DiffusersMeasurement",
    "DiffusersSamples",
    "EXIT_LAYOUTS",
    "ExitCall",
    "ExitLayout",
    "ExitScheduleState",
    "MARKER",
    "POS_EMBED",
    "SCHEDULER_NAMES",
    "applied_exit_schedule",
    "apply_exit_schedule",
    "scheduler_timesteps",
    "dit_scheduler_config",
    "dit_to_diffusers",
    "exit_blocks",
    "exit_schedule_state",
    "export_dit",
    "load_scheduler",
    "load_transformer",
    "match_official_dit",
    "measure_diffusers",
    "profile_diffusers",
    "remove_exit_schedule",
    "sample_diffusers",
    "transformer_fingerprint",
]

HOOK_NAME = "ase_exit_schedule"
MARKER = "ase_search.json"  # written by export_dit next to config.json
POS_EMBED = "ase_search_pos_embed.safetensors"  # the source's position table (not in the weights)


@dataclass(frozen=True)
class ExitLayout:
    """Where a diffusers transformer's exitable blocks are and how its timesteps read.

    Attributes:
        stacks: attribute names of the block ``ModuleList`` s, in forward order.
        joint: whether the blocks take and return ``(encoder_hidden_states, hidden_states)``
            (MM-DiT: SD3, FLUX) rather than ``hidden_states`` alone.
        timestep_scale: ``t = timestep / timestep_scale`` maps a call's timestep to ``[0, 1]``.
    """

    stacks: tuple[str, ...]
    joint: bool
    timestep_scale: float

    def __post_init__(self) -> None:
        if not self.stacks:
            raise ValueError("stacks must name at least one block list")
        if not self.timestep_scale > 0:
            raise ValueError(f"timestep_scale must be positive, got {self.timestep_scale}")


EXIT_LAYOUTS: dict[str, ExitLayout] = {
    "DiTTransformer2DModel": ExitLayout(("transformer_blocks",), joint=False, timestep_scale=1000.0),
    "PixArtTransformer2DModel": ExitLayout(("transformer_blocks",), joint=False, timestep_scale=1000.0),
    "SD3Transformer2DModel": ExitLayout(("transformer_blocks",), joint=True, timestep_scale=1000.0),
    "FluxTransformer2DModel": ExitLayout(("transformer_blocks", "single_transformer_blocks"),
                                         joint=True, timestep_scale=1.0),
}


def _layout(transformer: nn.Module) -> ExitLayout:
    name = type(transformer).__name__
    if name not in EXIT_LAYOUTS:
        raise ValueError(f"exit schedules support {', '.join(EXIT_LAYOUTS)}; got {name}")
    return EXIT_LAYOUTS[name]


def exit_blocks(transformer: nn.Module) -> list[nn.Module]:
    """The exitable blocks of a supported diffusers transformer, in forward order."""
    layout = _layout(transformer)
    return [block for stack in layout.stacks for block in getattr(transformer, stack)]


@dataclass(frozen=True)
class ExitCall:
    """One transformer call under an exit schedule.

    Attributes:
        t: the call's time in ``[0, 1]``.
        blocks: the blocks the call runs: the schedule's count at ``t``, or the full depth for a
            block-reuse refresh.
        evaluated: the exitable blocks that really ran.
        refresh: whether the call was a block-reuse refresh.
    """

    t: float
    blocks: int
    evaluated: int
    refresh: bool = False


@dataclass
class ExitScheduleState:
    """What :func:`apply_exit_schedule` returns: the schedule in force and its block counter.

    Attributes:
        schedule: the schedule.
        timestep_scale: the divisor mapping timesteps to ``t``.
        block_evals: exitable-block evaluations since the last :meth:`reset` (one per block per
            call, whatever the batch size).
        calls: every transformer call since the last :meth:`reset`, in order.
    """

    schedule: ExitSchedule
    timestep_scale: float
    block_evals: int = 0
    calls: list[ExitCall] = field(default_factory=list)
    # The count of the call in progress; None outside a transformer call, where blocks run as is.
    active: int | None = None
    # Block reuse and forecast (ExitSchedule.modes): the run's call numbering (the one of
    # ase_search.callplan); at a refresh, the count whose residual is captured and the hidden
    # state after it; the refreshes' (t, residual) of the interval's run; in a reuse or forecast
    # call, the residual the first skipped block adds.
    numbering: CallNumbering | None = None
    capture: int | None = None
    captured: torch.Tensor | None = None
    history: list[tuple[float, torch.Tensor]] = field(default_factory=list)
    call_t: float = 0.0
    residual: torch.Tensor | None = None
    inject: bool = False
    # Per-module caching (granularity "modules"): in a reuse/forecast call, "keep" (a refresh)
    # or "forecast"; the blocks in `module_cached` (the call's range) keep or forecast their
    # attention and MLP outputs (before the gates), at the call's forecast order.
    module_mode: str | None = None
    module_cached: frozenset[int] = frozenset()
    order: int = 0
    module_kept: dict[tuple[str, int], list[tuple[float, torch.Tensor]]] = field(
        default_factory=dict)
    # The previous call's time and input shape: a call at a later time (t rises back towards
    # noise) or on another batch starts a new trajectory (see _TransformerHook).
    last_t: float | None = None
    last_shape: tuple[int, ...] | None = None

    def reset(self) -> None:
        """Zero the counter, forget the calls and start a new sampling run."""
        self.block_evals = 0
        self.calls.clear()
        self.new_run()

    def new_run(self) -> None:
        """Start a new sampling trajectory: block-reuse caches are emptied (the next call in a
        reuse interval refreshes). :func:`sample_diffusers` calls it for every batch."""
        self.numbering = CallNumbering(self.schedule, 1)
        self.history = []
        self.module_kept = {}
        self.module_mode = None
        self.capture = self.captured = self.residual = None
        self.inject = False
        self.last_t = self.last_shape = None


class _TransformerHook(ModelHook):
    """Reads a call's timestep and sets the block count the block hooks obey.

    Stateful in diffusers' sense (``_is_stateful``, :meth:`reset_state`): the block-reuse cache
    belongs to one sampling trajectory, and pipelines reset stateful hooks after every call
    (``maybe_free_model_hooks``). A user's own denoising loop resets nothing, so the hook also
    starts a new trajectory by itself when a call's time is later than the previous call's (a
    sampler only moves towards data, so a rise means a new image) or its input has another
    shape (another batch): the second image of a loop never starts from the first's residual.
    """

    _is_stateful = True

    def __init__(self, state: ExitScheduleState, timestep_index: int) -> None:
        super().__init__()
        self.state = state
        self.timestep_index = timestep_index  # positional index of `timestep` in forward

    def reset_state(self, module: nn.Module) -> nn.Module:
        self.state.new_run()
        return module

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        timestep = kwargs.get("timestep")
        if timestep is None and len(args) > self.timestep_index:
            timestep = args[self.timestep_index]
        state, schedule = self.state, self.state.schedule
        t = _call_time(timestep, state.timestep_scale)
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        shape = tuple(hidden.shape)
        if (state.last_t is not None and t > state.last_t) or (
                state.last_shape is not None and shape != state.last_shape):
            state.new_run()
        state.last_t, state.last_shape = t, shape
        # The one numbering (ase_search.callplan), one call at a time.
        if state.numbering is None:
            state.new_run()
        call = state.numbering.next(t)
        if call.enters:
            state.history = []  # each interval's run forecasts from its own refreshes
            state.module_kept = {}
        n, refresh = call.count, call.refresh
        state.call_t = t
        if call.reuse and schedule.granularity == "modules":
            # every block runs; the cached ones keep (refresh) or forecast their modules
            state.module_mode = "keep" if refresh else "forecast"
            state.module_cached = frozenset(call.cached(schedule.depth))
            state.order = call.order
            n = schedule.depth
        elif call.reuse:
            if refresh:
                state.capture, n = n, schedule.depth
            else:
                state.residual = forecast(state.history, t, call.order)
            state.inject = not refresh
        before, mode = state.block_evals, state.module_mode
        state.active = n
        try:
            output = self.fn_ref.original_forward(*args, **kwargs)
        finally:
            state.active, state.capture, state.captured, state.inject = None, None, None, False
            state.residual, state.module_mode = None, None
        blocks = call.count if mode == "forecast" else n  # forecast blocks run only their gates
        state.calls.append(ExitCall(t, blocks, state.block_evals - before, refresh))
        return output


class _BlockHook(ModelHook):
    """Runs exitable block ``index`` when the call's count exceeds it, else passes its input on."""

    def __init__(self, state: ExitScheduleState, index: int, joint: bool) -> None:
        super().__init__()
        self.state = state
        self.index = index
        self.joint = joint

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        state = self.state
        n = state.active
        if n is None or self.index < n:
            output = self.fn_ref.original_forward(*args, **kwargs)
            forecast_only = state.module_mode == "forecast" and self.index in state.module_cached
            if n is not None and not forecast_only:
                state.block_evals += 1
                if state.capture is not None:
                    self._capture(output, n)
            return output
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        if state.inject and self.index == n:
            # Block reuse: the first skipped block adds what blocks n.. added at the refresh.
            hidden = hidden + state.residual
        if not self.joint:
            return hidden
        # MM-DiT blocks return (encoder_hidden_states, hidden_states).
        encoder = (kwargs["encoder_hidden_states"] if "encoder_hidden_states" in kwargs
                   else args[1])
        return encoder, hidden

    def _capture(self, output: Any, depth: int) -> None:
        """At a refresh: the image stream after block ``capture`` and, at the last block, the
        residual of the blocks past it (the output layer reads only the image stream)."""
        state = self.state
        hidden = output[1] if self.joint else output
        if self.index == state.capture - 1:
            state.captured = hidden
        if self.index == depth - 1:
            kept = state.history
            if kept and kept[-1][0] == state.call_t:
                kept.pop()  # a second refresh at one time replaces the first
            kept.append((state.call_t, hidden - state.captured))
            del kept[:-3]  # enough for order 2


class _ModuleHook(ModelHook):
    """Per-module caching (schedule granularity ``modules``) on a block's attention (``attn1``)
    or MLP (``ff``): in a reuse/forecast call, the call's cached blocks keep the module's output
    (before the block's gate) on a refresh and return its forecast otherwise."""

    def __init__(self, state: ExitScheduleState, index: int, kind: str) -> None:
        super().__init__()
        self.state = state
        self.key = (kind, index)

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        state = self.state
        if state.module_mode is None or self.key[1] not in state.module_cached:
            return self.fn_ref.original_forward(*args, **kwargs)
        if state.module_mode == "forecast":
            return forecast(state.module_kept[self.key], state.call_t, state.order)
        output = self.fn_ref.original_forward(*args, **kwargs)
        kept = state.module_kept.setdefault(self.key, [])
        if kept and kept[-1][0] == state.call_t:
            kept.pop()  # a second refresh at one time replaces the first
        kept.append((state.call_t, output))
        del kept[:-3]  # enough for order 2
        return output


def _call_time(timestep: Any, scale: float) -> float:
    """``t`` in ``[0, 1]`` of one call; every sample of the batch must share the timestep."""
    if timestep is None:
        raise ValueError("the exit-schedule hook needs the call's timestep; the transformer was "
                         "called without one")
    values = torch.as_tensor(timestep).detach().reshape(-1)
    if values.numel() == 0:
        raise ValueError("the exit-schedule hook got an empty timestep tensor")
    lo, hi = float(values.min()), float(values.max())
    if lo != hi:
        # Per-sample block counts would need every block's inputs split by rows; diffusers
        # pipelines (CFG included) pass one timestep per call.
        raise ValueError(f"the exit-schedule hook needs one timestep per call, got values from {lo} "
                         f"to {hi}; call the transformer once per timestep")
    t = lo / scale
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"timestep {lo} / timestep_scale {scale:g} = {t:g} is outside [0, 1]; pass "
                         f"the timestep_scale that maps this model's timesteps to [0, 1]")
    return t


def exit_schedule_state(transformer: nn.Module) -> ExitScheduleState | None:
    """The state of the exit schedule applied to ``transformer``, or ``None``."""
    registry = getattr(transformer, "_diffusers_hook", None)
    hook = None if registry is None else registry.get_hook(HOOK_NAME)
    return None if hook is None else hook.state


def apply_exit_schedule(transformer: nn.Module, schedule: ExitSchedule, *,
                        timestep_scale: float | None = None) -> ExitScheduleState:
    """Run ``transformer`` under ``schedule``: at time ``t`` only the first ``blocks_at(t)`` blocks.

    Args:
        transformer: a ``DiTTransformer2DModel``, ``PixArtTransformer2DModel``,
            ``SD3Transformer2DModel`` or ``FluxTransformer2DModel`` (see the module docstring for
            which blocks are exitable and how timesteps map to ``t``).
        schedule: a ``dit`` schedule whose ``depth`` is the model's exitable depth.
        timestep_scale: ``t = timestep / timestep_scale``; ``None`` for the class's convention.

    Returns:
        The live state: ``state.block_evals`` counts block evaluations, ``state.calls`` lists the
        calls.

    Raises:
        ValueError: an unsupported class, a schedule of another depth or architecture, or a model
            that already has a schedule.
    """
    layout = _layout(transformer)
    blocks = exit_blocks(transformer)
    if not isinstance(schedule, ExitSchedule):
        raise ValueError(f"schedule must be an ExitSchedule, got {type(schedule).__name__}")
    if schedule.arch != "dit":
        raise ValueError(f"diffusers transformers drop blocks from the end like DiT; the schedule "
                         f"is for {schedule.arch} (its counts mean decoder blocks)")
    if schedule.depth != len(blocks):
        stacks = " + ".join(f"{len(getattr(transformer, s))} {s}" for s in layout.stacks)
        raise ValueError(f"the schedule {schedule.name!r} was written for depth {schedule.depth} "
                         f"but this {type(transformer).__name__} has {len(blocks)} exitable blocks "
                         f"({stacks}); use a schedule of depth {len(blocks)}")
    scale = layout.timestep_scale if timestep_scale is None else float(timestep_scale)
    if not scale > 0:
        raise ValueError(f"timestep_scale must be positive, got {timestep_scale}")
    if exit_schedule_state(transformer) is not None:
        raise ValueError("this transformer already has an exit schedule; call "
                         "remove_exit_schedule(transformer) first")
    params = list(inspect.signature(type(transformer).forward).parameters)
    state = ExitScheduleState(schedule, scale)
    if schedule.granularity == "modules" and not all(
            isinstance(getattr(b, "attn1", None), nn.Module)
            and isinstance(getattr(b, "ff", None), nn.Module) for b in blocks):
        raise ValueError(f"granularity 'modules' keeps each block's attention (attn1) and MLP "
                         f"(ff) outputs; {type(transformer).__name__}'s blocks do not have both: "
                         f"use granularity 'blocks'")
    for index, block in enumerate(blocks):
        HookRegistry.check_if_exists_or_initialize(block).register_hook(
            _BlockHook(state, index, layout.joint), HOOK_NAME)
        if schedule.granularity == "modules":
            for kind in ("attn1", "ff"):
                HookRegistry.check_if_exists_or_initialize(getattr(block, kind)).register_hook(
                    _ModuleHook(state, index, kind), HOOK_NAME)
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.register_hook(_TransformerHook(state, params.index("timestep") - 1), HOOK_NAME)
    registry.invalidate_child_registries_cache()
    return state


def remove_exit_schedule(transformer: nn.Module) -> None:
    """Remove the hooks :func:`apply_exit_schedule` attached (a no-op when there are none)."""
    registry = getattr(transformer, "_diffusers_hook", None)
    if registry is None:
        return
    registry.remove_hook(HOOK_NAME, recurse=True)
    registry.invalidate_child_registries_cache()


@contextlib.contextmanager
def applied_exit_schedule(transformer: nn.Module,
                          schedule: ExitSchedule) -> Iterator[ExitScheduleState]:
    """:func:`apply_exit_schedule` for the ``with`` block (which gets its state), then
    :func:`remove_exit_schedule`, also when the block raises."""
    state = apply_exit_schedule(transformer, schedule)
    try:
        yield state
    finally:
        remove_exit_schedule(transformer)


# ----------------------------------------------------------------------------- DiT conversion


def match_official_dit(transformer: nn.Module, pos_embed: torch.Tensor | None = None) -> None:
    """Give a ``DiTTransformer2DModel`` official DiT's fixed embeddings, in place.

    Two tables are computed, not learned, and diffusers computes them differently: the timestep
    frequencies (diffusers ``exp(-ln(10000) k / (half - 1))``, ``downscale_freq_shift=1``; official
    DiT and ase-search ``exp(-ln(10000) k / half)``), and the 2D sin-cos positions (diffusers in
    float32, official DiT in float64, up to 2e-4 apart). The learned weights fit the official ones.

    Args:
        transformer: the model to change.
        pos_embed: the source checkpoint's ``(1, T, D)`` position table (a float16 file rounds
            it); ``None`` computes official DiT's float64 table.
    """
    from ase_search.models.layers import get_2d_sincos_pos_embed

    if type(transformer).__name__ != "DiTTransformer2DModel":
        raise ValueError(f"match_official_dit takes a DiTTransformer2DModel, got "
                         f"{type(transformer).__name__}")
    for module in transformer.modules():
        if type(module).__name__ == "CombinedTimestepLabelEmbeddings":
            module.time_proj.downscale_freq_shift = 0
    table = transformer.pos_embed.pos_embed  # (1, T, D) buffer
    grid = transformer.config.sample_size // transformer.config.patch_size
    if pos_embed is None:
        pos_embed = get_2d_sincos_pos_embed(table.shape[-1], grid, device=table.device).unsqueeze(0)
    if tuple(pos_embed.shape) != tuple(table.shape):
        raise ValueError(f"pos_embed must have shape {tuple(table.shape)}, got {tuple(pos_embed.shape)}")
    table.copy_(pos_embed)


def dit_to_diffusers(model: nn.Module) -> nn.Module:
    """An equivalent ``DiTTransformer2DModel`` of an ase-search (or official-layout) DiT.

    Every block gets its own copy of the shared timestep and label embedders (diffusers recomputes
    them per block); the fused ``qkv`` is split into ``to_q``, ``to_k``, ``to_v``. Call
    :func:`match_official_dit` on the result (``load_transformer`` does) for outputs equal
    to ``model``'s within float32 rounding.

    Raises:
        ValueError: ``model`` is not a DiT.
    """
    from diffusers import DiTTransformer2DModel

    if getattr(model, "arch", None) != "dit":
        raise ValueError(f"only DiT models convert to DiTTransformer2DModel, got "
                         f"{getattr(model, 'arch', type(model).__name__)}")
    cfg = model.config
    if cfg["mlp_ratio"] != 4.0:
        raise ValueError(f"DiTTransformer2DModel has a 4x MLP; this DiT's mlp_ratio is "
                         f"{cfg['mlp_ratio']}")
    if cfg["class_dropout_prob"] <= 0:
        raise ValueError("DiTTransformer2DModel's label table has a null row; this DiT has none "
                         "(class_dropout_prob == 0)")
    if cfg.get("exit_heads"):
        raise ValueError("DiTTransformer2DModel has one output layer, but this DiT has exit heads "
                         "(one per exit depth); export a DiT without them")
    hidden = cfg["hidden_size"]
    target = DiTTransformer2DModel(
        num_attention_heads=cfg["num_heads"],
        attention_head_dim=hidden // cfg["num_heads"],
        in_channels=cfg["in_channels"],
        out_channels=model.out_channels,
        num_layers=cfg["depth"],
        sample_size=cfg["input_size"],
        patch_size=cfg["patch_size"],
        num_embeds_ada_norm=cfg["num_classes"],
        norm_eps=1e-6,  # official DiT's LayerNorms
    )
    src = {k: v.detach().float() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {
        "pos_embed.proj.weight": src["x_embedder.proj.weight"],
        "pos_embed.proj.bias": src["x_embedder.proj.bias"],
        "proj_out_1.weight": src["final_layer.adaLN_modulation.1.weight"],
        "proj_out_1.bias": src["final_layer.adaLN_modulation.1.bias"],
        "proj_out_2.weight": src["final_layer.linear.weight"],
        "proj_out_2.bias": src["final_layer.linear.bias"],
    }
    for i in range(cfg["depth"]):
        b, p = f"blocks.{i}.", f"transformer_blocks.{i}."
        emb = p + "norm1.emb."
        out[emb + "timestep_embedder.linear_1.weight"] = src["t_embedder.mlp.0.weight"]
        out[emb + "timestep_embedder.linear_1.bias"] = src["t_embedder.mlp.0.bias"]
        out[emb + "timestep_embedder.linear_2.weight"] = src["t_embedder.mlp.2.weight"]
        out[emb + "timestep_embedder.linear_2.bias"] = src["t_embedder.mlp.2.bias"]
        out[emb + "class_embedder.embedding_table.weight"] = src["y_embedder.embedding_table.weight"]
        out[p + "norm1.linear.weight"] = src[b + "adaLN_modulation.1.weight"]
        out[p + "norm1.linear.bias"] = src[b + "adaLN_modulation.1.bias"]
        # qkv rows are laid out (3, heads, head_dim): q, k, v are its three thirds.
        for name, w in zip(("to_q", "to_k", "to_v"), src[b + "attn.qkv.weight"].chunk(3, dim=0)):
            out[p + f"attn1.{name}.weight"] = w
        for name, w in zip(("to_q", "to_k", "to_v"), src[b + "attn.qkv.bias"].chunk(3, dim=0)):
            out[p + f"attn1.{name}.bias"] = w
        out[p + "attn1.to_out.0.weight"] = src[b + "attn.proj.weight"]
        out[p + "attn1.to_out.0.bias"] = src[b + "attn.proj.bias"]
        out[p + "ff.net.0.proj.weight"] = src[b + "mlp.fc1.weight"]
        out[p + "ff.net.0.proj.bias"] = src[b + "mlp.fc1.bias"]
        out[p + "ff.net.2.weight"] = src[b + "mlp.fc2.weight"]
        out[p + "ff.net.2.bias"] = src[b + "mlp.fc2.bias"]
    # Strict: a key either side left unmapped is a conversion bug, not something to skip.
    target.load_state_dict({k: v.clone() for k, v in out.items()}, strict=True)
    return target.eval()


def dit_scheduler_config(model: nn.Module) -> dict[str, Any]:
    """A ``DDIMScheduler`` config matching :class:`ase_search.diffusion.GaussianDiffusion` (T=1000).

    Linear betas from 1e-4 to 0.02, epsilon prediction, ``leading`` spacing (ase-search's DDIM
    default) and the last step to ``alpha = 1``; pixel-space models clip the predicted ``x_0`` to
    ``[-1, 1]`` as ase-search's sampler does, latent ones do not.
    """
    pixel = model.in_channels in (1, 3)
    return dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                prediction_type="epsilon", clip_sample=pixel, clip_sample_range=1.0,
                set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")


def export_dit(model: nn.Module, out_dir: str | os.PathLike[str], *, source: str) -> Path:
    """Write ``model`` as a diffusers ``DiTTransformer2DModel`` folder with its scheduler config.

    ``out_dir`` gets ``config.json`` and ``diffusion_pytorch_model.safetensors`` (load with
    ``DiTTransformer2DModel.from_pretrained(out_dir)``), ``scheduler_config.json`` (load with
    ``DDIMScheduler.from_pretrained(out_dir)``), and :data:`MARKER` (provenance) and
    :data:`POS_EMBED` (the position table), which :func:`load_transformer` reads. The folder appears whole or not at all.

    Raises:
        ValueError: ``model`` cannot be converted.
        FileExistsError: ``out_dir`` exists and is not empty.
    """
    from diffusers import DDIMScheduler
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"-o {out} already exists and is not empty; give a new folder")
    target = dit_to_diffusers(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        target.save_pretrained(tmp, safe_serialization=True)
        DDIMScheduler(**dit_scheduler_config(model)).save_pretrained(tmp)
        marker = {
            "version": 1,
            "arch": "dit",
            "source": source,
            "model_config": model.config,
            # what a plain from_pretrained gets wrong (see match_official_dit)
            "timestep_embedding": "official-dit",
            "num_classes": model.num_labels,
            "null_class": model.null_class,
            "learn_sigma": model.learn_sigma,
            "cfg_channels": model.cfg_channels,
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        # diffusers rebuilds pos_embed at load (a non-persistent buffer), so it travels aside.
        save_file({"pos_embed": model.pos_embed.detach().float().cpu().contiguous()}, tmp / POS_EMBED)
        for path in tmp.iterdir():
            path.chmod(0o644)
        tmp.chmod(0o755)
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _transformer_dir(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    if (path / "transformer" / "config.json").is_file():
        return path / "transformer"
    raise FileNotFoundError(f"--diffusers {path} is neither a diffusers transformer folder "
                            f"(config.json) nor a pipeline folder with transformer/config.json")


def transformer_fingerprint(path: str | os.PathLike[str], *, chunks: int = 16,
                            chunk_bytes: int = 1 << 16) -> str:
    """A hex SHA-256 of what a transformer folder holds: its ``config.json`` and, for each weights
    file, its name, size and ``chunks`` evenly spaced ``chunk_bytes`` slices (first and last
    included). New weights of the same shape change every slice, so they are caught; a
    many-gigabyte folder is read in milliseconds instead of minutes.

    Raises:
        FileNotFoundError: the folder holds no transformer.
    """
    import hashlib

    folder = _transformer_dir(Path(path).expanduser())
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for file in sorted(p for p in folder.iterdir()
                       if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth")):
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with file.open("rb") as f:
            for i in range(chunks):
                f.seek(max(0, size - chunk_bytes) * i // max(1, chunks - 1))
                digest.update(f.read(chunk_bytes))
    return digest.hexdigest()


def load_transformer(path: str | os.PathLike[str]) -> nn.Module:
    """Load a local diffusers transformer folder, or a pipeline folder's ``transformer/``.

    Nothing is downloaded. A folder written by :func:`export_dit` gets the official DiT timestep
    frequencies back (:func:`match_official_dit`). The model is in eval mode, float32.

    Raises:
        FileNotFoundError: the folder holds no transformer.
        ValueError: the transformer class has no exit layout.
    """
    import diffusers
    from safetensors.torch import load_file

    folder = _transformer_dir(Path(path).expanduser())
    config = json.loads((folder / "config.json").read_text())
    name = config.get("_class_name")
    if name not in EXIT_LAYOUTS:
        raise ValueError(f"{folder / 'config.json'} holds a {name}; exit schedules support "
                         f"{', '.join(EXIT_LAYOUTS)}")
    transformer = getattr(diffusers, name).from_pretrained(folder, local_files_only=True,
                                                      low_cpu_mem_usage=False)
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("timestep_embedding") == "official-dit":
        table = folder / POS_EMBED
        match_official_dit(transformer, load_file(table)["pos_embed"] if table.is_file() else None)
    return transformer.float().eval()


# ase-search sampler names the diffusers path runs, each as a diffusers scheduler built from the
# folder's own scheduler config (its betas): DDIM, DDPM (learned-range variances, DiT's sampler)
# and DPM-Solver++ 2M with ase-search's settings.
SCHEDULER_NAMES = ("ddim", "ddpm", "dpm-solver")


def load_scheduler(path: str | os.PathLike[str], name: str = "ddim", *,
                   timestep_spacing: str | None = None, explicit: bool = False) -> Any:
    """The scheduler of a local folder (``scheduler_config.json`` or ``scheduler/``) as ``name``.

    Args:
        path: a transformer, pipeline or exported folder.
        name: ``ddim`` (``DDIMScheduler``), ``ddpm`` (``DDPMScheduler`` with learned-range
            variances) or ``dpm-solver`` (``DPMSolverMultistepScheduler`` as ase-search's own
            DPM-Solver++ 2M, :data:`~ase_search.samplers.dpm_solver.DPM_SOLVER_SETTINGS`).
        timestep_spacing: ``leading``/``linspace``/``trailing`` for DDIM and DDPM; ``None``
            keeps the folder's. DPM-Solver++ always spaces ``linspace``, as ase-search's does.
        explicit: the run takes explicit timesteps (:func:`set_timesteps`). diffusers'
            ``DDIMScheduler`` takes none, so DDIM is then ``DPMSolverMultistepScheduler`` at
            order 1: DPM-Solver++'s first-order update is DDIM's (tested against ase-search's
            DDIM at searched timesteps), except that it does not clip the predicted x0 as
            DDIM does on a pixel-space model (on the DiT testbed at 5 FID-searched steps: FID
            4.31 against 4.32, reports/timesteps.md).
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    from ase_search.samplers.dpm_solver import DPM_SOLVER_SETTINGS

    root = Path(path).expanduser()
    for folder in (root, root / "scheduler", root.parent / "scheduler"):
        if (folder / "scheduler_config.json").is_file():
            break
    else:
        raise FileNotFoundError(f"--diffusers {root} has no scheduler_config.json (nor a "
                                f"scheduler/ folder); export it with `ase-search export-diffusers`")
    config = DDIMScheduler.load_config(folder)
    spacing = {} if timestep_spacing is None else {"timestep_spacing": timestep_spacing}
    if name == "ddim" and explicit:
        return DPMSolverMultistepScheduler.from_config(config, **{**DPM_SOLVER_SETTINGS,
                                                                  "solver_order": 1})
    if name == "ddim":
        return DDIMScheduler.from_config(config, **spacing)
    if name == "ddpm":
        return DDPMScheduler.from_config(config, variance_type="learned_range", **spacing)
    if name == "dpm-solver":
        return DPMSolverMultistepScheduler.from_config(config, **DPM_SOLVER_SETTINGS)
    raise ValueError(f"the diffusers path samples with {', '.join(SCHEDULER_NAMES)}, got {name!r}")


def set_timesteps(scheduler: Any, steps: int, timesteps: Sequence[int] | None = None) -> None:
    """``scheduler.set_timesteps`` for a ``steps``-step run, or at explicit ``timesteps``
    (descending integers, e.g. searched ones: ``ase-search timesteps``), which diffusers'
    DPM-Solver++ and DDPM schedulers take and its DDIM scheduler does not.

    Raises:
        ValueError: explicit timesteps for a scheduler without them, or their count is not
            ``steps``.
    """
    if timesteps is None:
        scheduler.set_timesteps(steps)
        return
    if "timesteps" not in inspect.signature(scheduler.set_timesteps).parameters:
        raise ValueError(f"diffusers' {type(scheduler).__name__} takes no explicit timesteps "
                         f"(its step assumes uniform spacing); sample searched timesteps with "
                         f"dpm-solver or ddpm, or through ase-search's own samplers")
    if len(timesteps) != steps:
        raise ValueError(f"{len(timesteps)} timesteps for a {steps}-step run")
    scheduler.set_timesteps(timesteps=[int(t) for t in timesteps])


def scheduler_timesteps(scheduler: Any, steps: int,
                        timesteps: Sequence[int] | None = None) -> list[int]:
    """The timesteps at which ``scheduler`` calls the model in a ``steps``-step run, in order
    (one call per timestep, as :func:`sample_diffusers` runs it)."""
    set_timesteps(scheduler, steps, timesteps)
    return [int(t) for t in scheduler.timesteps]


def profile_diffusers(transformer: nn.Module, *, batch_size: int = 256,
                      device: str | torch.device = "cpu", warmup: int = 2, repeats: int = 3,
                      rounds: int = 3) -> Any:
    """Time a ``DiTTransformer2DModel`` through the hooks and return its
    :class:`~ase_search.metrics.latency.CostModel`.

    Whole calls are timed at two constant schedules, all ``depth`` blocks and one block, in
    interleaved rounds (each keeps its fastest, :func:`~ase_search.metrics.latency.
    fastest_round`); their difference over ``depth - 1`` is a block's cost and the rest of the
    one-block call the fixed part (embeddings, output layer, the hooks themselves). So the cost
    model is what this transformer costs as run, hooks included, with no knowledge of its
    internals.

    Raises:
        ValueError: not a ``DiTTransformer2DModel``, fewer than two exitable blocks, or rounds < 1.
    """
    from ase_search.metrics.latency import CostModel, fastest_round, load_average, measure
    from ase_search.runtime import available_cpus

    if type(transformer).__name__ != "DiTTransformer2DModel":
        raise ValueError(f"profile_diffusers times DiTTransformer2DModel, got "
                         f"{type(transformer).__name__}")
    depth = len(exit_blocks(transformer))
    if depth < 2 or rounds < 1:
        raise ValueError(f"profile_diffusers needs >= 2 exitable blocks and rounds >= 1, got "
                         f"{depth} and {rounds}")
    device = torch.device(device)
    transformer = transformer.to(device).eval()
    cfg = transformer.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, cfg.in_channels, cfg.sample_size, cfg.sample_size,
                    generator=g).to(device)  # (B, C, H, W)
    y = torch.randint(0, cfg.num_embeds_ada_norm, (batch_size,), generator=g).to(device)  # (B,)
    t = torch.full((batch_size,), 500, device=device)  # (B,)
    counts = {"call_full": depth, "call_1": 1}
    times: dict[str, list[float]] = {name: [] for name in counts}
    load_before = load_average()
    for r in range(rounds):
        for name, count in counts.items():
            with applied_exit_schedule(transformer, ExitSchedule(
                    "dit", depth, (0.0, 1.0), (count,), f"constant-{count}")):
                times[name].append(measure(
                    lambda: transformer(x, timestep=t, class_labels=y, return_dict=False),
                    warmup=warmup if r == 0 else 0, repeats=repeats, device=device))
    seconds = {name: fastest_round(v) for name, v in times.items()}
    block = max(0.0, (seconds["call_full"] - seconds["call_1"]) / (depth - 1))
    conditions = {"load_before": load_before, "load_after": load_average(),
                  "cpus": available_cpus(), "threads": torch.get_num_threads(),
                  "rounds": rounds, "repeats": repeats, "profiled": "whole diffusers calls"}
    return CostModel(arch="dit", depth=depth, fixed=seconds["call_1"] - block, block=block,
                     dropped=0.0, batch_size=batch_size, device=str(device), components=seconds,
                     conditions=conditions)


@dataclass(frozen=True)
class DiffusersSamples:
    """Samples of :func:`sample_diffusers`.

    Attributes:
        images: ``(n, C, H, W)`` float32 samples (in ``[-1, 1]`` for pixel models).
        labels: ``(n,)`` class labels.
        block_evals: exitable-block evaluations per sample (the whole trajectory).
        model_calls: transformer calls per sample (a CFG pair is one call).
    """

    images: torch.Tensor
    labels: torch.Tensor
    block_evals: int
    model_calls: int


def sample_diffusers(
    transformer: nn.Module,
    scheduler: Any,
    *,
    n: int,
    steps: int,
    seed: int = 0,
    cfg_scale: float = 1.0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    cache_context: bool = False,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    timesteps: Sequence[int] | None = None,
) -> DiffusersSamples:
    """Class-conditional samples of a ``DiTTransformer2DModel`` through a diffusers scheduler loop.

    The loop DiTPipeline runs, without its VAE (the testbed is pixel-space): one call per
    timestep, the conditional and null-label halves in one batch when ``cfg_scale > 1``. An exit
    schedule applied with :func:`apply_exit_schedule` is obeyed and counted. Labels and initial
    noise are drawn as :func:`ase_search.samplers.sample` draws them (one CPU generator seeded
    with ``seed``: all labels, then each sample's noise), so seeds are common random numbers.

    For diffusers' own cache hooks (stateful), ``cache_context=True`` wraps each call in the
    ``cache_context("cond", ...)`` that ``CacheMixin`` pipelines set (``DiTTransformer2DModel``
    is not a ``CacheMixin``, so DiTPipeline sets none), and their state is reset before each
    batch; ``on_step(i, timestep)`` runs before each call (e.g. a ``current_timestep_callback``).
    ``timesteps``: explicit ones instead of the scheduler's spacing (:func:`set_timesteps`).
    """
    if type(transformer).__name__ != "DiTTransformer2DModel":
        raise ValueError(f"sample_diffusers samples DiTTransformer2DModel, got "
                         f"{type(transformer).__name__}")
    from diffusers.models.cache_utils import CacheMixin

    cfg = transformer.config
    channels, size = cfg.in_channels, cfg.sample_size
    num_classes = cfg.num_embeds_ada_norm
    learned = scheduler.config.get("variance_type") in ("learned", "learned_range")
    set_timesteps(scheduler, steps, timesteps)  # a scheduler without them fails before sampling
    state = exit_schedule_state(transformer)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    images, block_evals, calls = [], 0, 0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            x = torch.stack([torch.randn((channels, size, size), generator=generator)
                             for _ in range(start, stop)]).to(device)  # (B, C, H, W)
            y = labels[start:stop].to(device)
            if cfg_scale > 1.0:
                y = torch.cat([y, torch.full_like(y, num_classes)])  # null label: last row
            set_timesteps(scheduler, steps, timesteps)
            step_generator = torch.Generator(device).manual_seed(seed * 1_000_003 + start)
            before = 0 if state is None else state.block_evals
            registry = getattr(transformer, "_diffusers_hook", None)
            if registry is not None:
                registry.reset_stateful_hooks()
            if state is not None:
                state.new_run()
            for i, timestep in enumerate(scheduler.timesteps):
                if on_step is not None:
                    on_step(i, timestep)
                model_in = torch.cat([x, x]) if cfg_scale > 1.0 else x
                context = (CacheMixin.cache_context(transformer, "cond", step_index=i,
                                                    num_inference_steps=steps, timestep=timestep)
                           if cache_context else contextlib.nullcontext())
                with context:
                    out = transformer(model_in, timestep=timestep.expand(len(model_in)).to(device),
                                      class_labels=y, return_dict=False)[0]  # (B', C_out, H, W)
                eps, rest = out[:, :channels], out[:, channels:]
                if cfg_scale > 1.0:
                    cond, uncond = eps.chunk(2)
                    eps = uncond + cfg_scale * (cond - uncond)
                    rest = rest.chunk(2)[0]
                model_out = torch.cat([eps, rest], dim=1) if learned else eps
                x = scheduler.step(model_out, timestep, x, generator=step_generator).prev_sample
            calls = len(scheduler.timesteps)
            if state is not None:
                block_evals = state.block_evals - before  # per batch = per sample
            else:
                block_evals = calls * len(exit_blocks(transformer))
            pixel = channels in (1, 3)
            images.append((x.clamp(-1.0, 1.0) if pixel else x).float().cpu())
    return DiffusersSamples(torch.cat(images), labels, block_evals, calls)


def time_diffusers_runs(path: str | os.PathLike[str],
                        configs: dict[str, tuple[ExitSchedule | None, Any]], *, batch_size: int,
                        rounds: int = 5, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Time each configuration's whole :func:`sample_diffusers` run of ``batch_size`` samples
    through the hooks and the folder's diffusers schedulers, interleaved
    (:func:`~ase_search.metrics.latency.time_interleaved`): the measured latency of a diffusers
    study's points, every lever's work (the hooks, the cache, the scheduler) included.

    Args:
        path: the transformer's folder (or a pipeline folder with ``transformer/``).
        configs: name -> (schedule or ``None`` for the full model,
            :class:`~ase_search.samplers.SamplerConfig`).
        batch_size: samples of one run.
        rounds: timed rounds (>= 1).
        device: where to run.

    Returns:
        name -> :class:`~ase_search.metrics.latency.TimedRun`.
    """
    from ase_search.metrics.latency import time_interleaved

    transformer = load_transformer(path).to(device)

    def run(schedule: ExitSchedule | None, sampler: Any) -> Callable[[], None]:
        scheduler = load_scheduler(path, sampler.name, timestep_spacing=sampler.timestep_spacing,
                                   explicit=sampler.timesteps is not None)
        hooked = schedule is not None and not schedule.is_full

        def go() -> None:
            with (applied_exit_schedule(transformer, schedule) if hooked
                  else contextlib.nullcontext()):
                sample_diffusers(transformer, scheduler, n=batch_size, steps=sampler.steps,
                                 cfg_scale=sampler.cfg_scale, batch_size=batch_size,
                                 device=device, timesteps=sampler.timesteps)
        return go

    return time_interleaved({name: run(*config) for name, config in configs.items()},
                            rounds=rounds, device=device)


@dataclass(frozen=True)
class DiffusersMeasurement:
    """What :func:`measure_diffusers` measured for one schedule, seed by seed.

    Attributes:
        schedule: the schedule (``None``: the full model).
        reference: ``"self"`` (the full model's samples with the same seeds) or a FID data spec.
        metrics: per seed, ``{"fid": ...}`` plus ``"paired_rmse"`` against ``"self"``: the
            root-mean-square pixel difference (images in ``[0, 1]``) of each sample and the full
            model's sample from the same noise and label, averaged over the samples.
        block_evals: exitable-block evaluations per sample.
        full_block_evals: the full model's (depth x model calls).
        images: the first seed's samples (at most 64), for a grid.
    """

    schedule: ExitSchedule | None
    reference: str
    metrics: list[dict[str, float]]
    block_evals: int
    full_block_evals: int
    images: torch.Tensor

    @property
    def block_acceleration(self) -> float:
        """Share of block evaluations skipped."""
        return 1.0 - self.block_evals / self.full_block_evals

    def mean(self, key: str = "fid") -> float:
        return sum(m[key] for m in self.metrics) / len(self.metrics)

    def std(self, key: str = "fid") -> float | None:
        if len(self.metrics) < 2:
            return None
        values = [m[key] for m in self.metrics]
        mu = sum(values) / len(values)
        return (sum((v - mu) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def measure_diffusers(
    transformer: nn.Module,
    scheduler: Any,
    schedule: ExitSchedule | None,
    *,
    steps: int,
    n: int,
    seeds: Sequence[int] = (0,),
    reference: str | SelfReference = "self",
    cfg_scale: float = 1.0,
    fid_config: Any = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    timesteps: Sequence[int] | None = None,
) -> DiffusersMeasurement:
    """FID of ``schedule`` on a diffusers DiT, sampled through :func:`sample_diffusers`.

    The schedule is applied for the measurement and removed afterwards.

    Args:
        reference: ``"self"``: the full model samples the same seeds with the same scheduler and
            steps (hooks off) and serves as the reference, for FID and the paired per-image
            distance. A :class:`SelfReference` (e.g. the full model at a search's reference
            configuration): FID against its ``distribution``, the paired distance against its
            ``paired`` samples. Any other string is a FID data spec (``"mnist"`` or a folder of
            images).

    Raises:
        ValueError: bad arguments, or a schedule that does not fit the model.
        FloatingPointError: the model produced NaN/inf samples.
    """
    from ase_search.measure import SelfReference, check_finite_samples, fid_images, paired_rmse
    from ase_search.metrics.fid import compute_fid

    if n < 2:
        raise ValueError(f"n must be >= 2 samples per seed for FID, got {n}")
    if not list(seeds):
        raise ValueError("seeds must hold at least one seed")
    if exit_schedule_state(transformer) is not None:
        raise ValueError("the transformer already has an exit schedule; remove it first, "
                         "measure_diffusers applies the schedule it measures")
    depth = len(exit_blocks(transformer))
    same = reference == "self"
    metrics, first, block_evals, calls = [], None, 0, 0
    for seed in seeds:
        full = None
        if same or schedule is None:
            full = sample_diffusers(transformer, scheduler, n=n, steps=steps, seed=seed,
                                    cfg_scale=cfg_scale, batch_size=batch_size, device=device,
                                    timesteps=timesteps)
            check_finite_samples(full.images)
        if schedule is None:
            out = full
        else:
            with applied_exit_schedule(transformer, schedule):
                out = sample_diffusers(transformer, scheduler, n=n, steps=steps, seed=seed,
                                       cfg_scale=cfg_scale, batch_size=batch_size, device=device,
                                       timesteps=timesteps)
            check_finite_samples(out.images)
        images = fid_images(out.images, None)
        if same or isinstance(reference, SelfReference):
            ref = full.images if same else reference.paired(seed)  # (n, C, H, W)
            if ref.shape != out.images.shape:
                raise ValueError(f"the reference samples of seed {seed} have shape "
                                 f"{tuple(ref.shape)}, the measured ones {tuple(out.images.shape)}")
            against = ref if same else reference.distribution
            result = compute_fid(images, reference=fid_images(against, None), config=fid_config)
            result["paired_rmse"] = paired_rmse(out.images, ref)
        else:
            result = compute_fid(images, reference=reference, config=fid_config)
        metrics.append(result)
        first = out.images[:64] if first is None else first
        block_evals, calls = out.block_evals, out.model_calls
    return DiffusersMeasurement(schedule, "self" if isinstance(reference, SelfReference)
                                else reference, metrics, block_evals, depth * calls, first)
