"""ase-search's exit schedules against diffusers' own caches, on the DiT testbed in diffusers form.

Issue #17's head-to-head. Every configuration samples the exported DiT testbed through
:func:`ase_search.integrations.diffusers.sample_diffusers` with the same seeds: the full model at
DDIM ``--steps`` and DPM-Solver++ ``--dpm-steps`` (the steps-only ladder); the ``--searched``
fastest exit configurations of the diffusers study ``--study``; the presets ``--presets`` on the
shipped and on the one-shot weights; every diffusers cache hook that runs on
``DiTTransformer2DModel``, at two settings each (``CACHES``); and a plain ``from_pretrained`` of
the export. FID-MNIST over ``--seeds`` seeds; latency is the fastest of ``--rounds`` rounds in
CPU time. Caches and exit schedules are judged against the ladder, each family on its own
(:func:`benchmarks._common.judge_cells`). Run from the repository root:

    python -m benchmarks.diffusers --threads 1
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import field
from pathlib import Path
from typing import Any

from benchmarks._common import (
    REFERENCE_STUDIES,
    SOLVER_TITLES,
    Judged,
    configuration,
    display_path,
    judge_cells,
    ladder_label,
    load_testbed,
    on_seeds,
    provenance,
    reference_one_shot_weights,
    sampler_of,
    weights_sha256,
)
from benchmarks._runner import Benchmark, CellContext, Report, markdown_table, option, run

ARCH = "dit"



@dataclasses.dataclass(frozen=True)
class Cache:
    """One diffusers cache hook at one setting.

    Attributes:
        hook: the hook's name (``TaylorSeer``, ``FirstBlockCache``, ...).
        setting: its main knob (interval, threshold, skip range, blocks skipped).
        what: the setting in words, for the report.
        shipped: the setting diffusers ships as the hook's default (or its docs' example).
        order: TaylorSeer's ``max_order``.
        warmup: TaylorSeer's ``disable_cache_before_step``.
    """

    hook: str
    setting: float
    what: str
    shipped: bool = False
    order: int = 1
    warmup: int = 2


# diffusers' cache hooks on a sweep of their settings, the shipped one marked.
CACHES: dict[str, Cache] = {
    "fbc-0.05": Cache("FirstBlockCache", 0.05, "threshold 0.05 (default)", shipped=True),
    "fbc-0.1": Cache("FirstBlockCache", 0.1, "threshold 0.1"),
    "fbc-0.2": Cache("FirstBlockCache", 0.2, "threshold 0.2"),
    "pab-2": Cache("PyramidAttentionBroadcast", 2,
                   "spatial attention reused for 2 steps, t in (100, 800) (docs' example)",
                   shipped=True),
    "pab-3": Cache("PyramidAttentionBroadcast", 3,
                   "spatial attention reused for 3 steps, t in (100, 800)"),
    "pab-4": Cache("PyramidAttentionBroadcast", 4,
                   "spatial attention reused for 4 steps, t in (100, 800)"),
    "fastercache-2": Cache("FasterCache", 2, "spatial attention skip range 2 (default)",
                           shipped=True),
    "fastercache-3": Cache("FasterCache", 3, "spatial attention skip range 3"),
    "fastercache-4": Cache("FasterCache", 4, "spatial attention skip range 4"),
    "taylorseer-5": Cache("TaylorSeer", 5, "cache interval 5, order 1, 3 warm-up steps "
                          "(defaults), attn1 and ff of every block", shipped=True, warmup=3),
    "taylorseer-2": Cache("TaylorSeer", 2, "cache interval 2, attn1 and ff of every block"),
    "taylorseer-3": Cache("TaylorSeer", 3, "cache interval 3, attn1 and ff of every block"),
    "taylorseer-4": Cache("TaylorSeer", 4, "cache interval 4, attn1 and ff of every block"),
    "taylorseer-2-o2": Cache("TaylorSeer", 2, "cache interval 2, order 2, attn1 and ff of "
                             "every block", order=2),
    "taylorseer-4-o2": Cache("TaylorSeer", 4, "cache interval 4, order 2, attn1 and ff of "
                             "every block", order=2),
    "magcache-0.02": Cache("MagCache", 0.02, "threshold 0.02, calibrated ratios"),
    "magcache-0.06": Cache("MagCache", 0.06, "threshold 0.06 (default), calibrated ratios",
                           shipped=True),
    "magcache-0.24": Cache("MagCache", 0.24, "threshold 0.24, calibrated ratios"),
    "layerskip-2": Cache("LayerSkip", 2, "the last 2 blocks skipped at every step"),
    "layerskip-4": Cache("LayerSkip", 4, "the last 4 blocks skipped at every step"),
}
# Hooks probed for applicability: TaylorSeer, MagCache and SeaCache with their defaults, the
# others at their first setting above.
PROBES = ("FirstBlockCache", "PyramidAttentionBroadcast", "FasterCache", "TaylorSeer",
          "MagCache", "SeaCache", "LayerSkip")


@dataclasses.dataclass(frozen=True)
class Params:
    """Which configurations, measured how."""

    # Down to 2 steps: a steps-only ladder must reach below the fastest configuration it
    # judges, or a fast point's "speedup at matched FID" is against the ladder's end.
    steps: tuple[int, ...] = field(default=(2, 3, 4, 5, 7, 10, 14, 20), metadata=option(
        "DDIM step counts of the full model", identity=False))
    dpm_steps: tuple[int, ...] = field(default=(2, 3, 4, 5, 7, 10, 14, 20), metadata=option(
        "DPM-Solver++ step counts of the full model", identity=False))
    study: str = field(default=str(REFERENCE_STUDIES / "dit-diffusers.db"), metadata=option(
        "the diffusers study whose fronts' exit configurations are measured", identity=False))
    searched: int = field(default=4, metadata=option(
        "at most this many searched configurations (the fastest first)", identity=False))
    searched_fid: float = field(default=3.0, metadata=option(
        "searched configurations with a FID above this x the study's reference are left out",
        identity=False))
    steps_exits: int = field(default=20, metadata=option(
        "DDIM steps of the exit schedules and the caches"))
    presets: tuple[str, ...] = field(default=("D1", "D3", "D4", "taylorseer-2", "delta-dit"),
                                     metadata=option("ase-search presets", identity=False))
    caches: tuple[str, ...] = field(default=tuple(CACHES), metadata=option(
        "diffusers cache settings measured", identity=False, choices=list(CACHES)))
    solver_steps: int = field(default=10, metadata=option(
        "DPM-Solver++ steps of --solver-caches and --solver-presets", identity=False))
    solver_caches: tuple[str, ...] = field(
        default=("taylorseer-2", "taylorseer-4", "taylorseer-5", "fastercache-2", "pab-2",
                 "fbc-0.05", "magcache-0.06"),
        metadata=option("diffusers cache settings measured at DPM-Solver++ --solver-steps too",
                        identity=False, choices=list(CACHES)))
    solver_presets: tuple[str, ...] = field(default=("taylorseer-2", "delta-dit"), metadata=option(
        "ase-search presets measured at DPM-Solver++ --solver-steps too", identity=False))
    timesteps: tuple[str, ...] = field(
        default=tuple(str(REFERENCE_STUDIES / "timesteps" / f"dit-{s}-5-fid.json")
                      for s in ("ddim", "dpm-solver")),
        metadata=option("searched timesteps files (`ase-search timesteps`) the full model runs "
                        "at: steps-only configurations of the ladder", identity=False))
    n: int = field(default=500, metadata=option("samples per seed"))
    seeds: int = field(default=5, metadata=option("sample seeds 0..S-1 (common random numbers)"))
    batch_size: int = field(default=500, metadata=option("sampling batch"))
    latency_n: int = field(default=100, metadata=option("samples per timed round"))
    rounds: int = field(default=5, metadata=option("timed rounds (fastest kept)"))
    # The only clock; a field still, since the cached cells' identity holds it.
    clock: str = field(default="cpu", metadata=option(
        "latency clock: the process's CPU time (wall time is recorded too)", choices=["cpu"]))
    window: float = field(default=1.25, metadata=option(
        "the headline counts points with FID <= window x the reference's", identity=False))

    def __post_init__(self) -> None:
        from ase_search.schedule import preset_names

        if not self.steps or min(self.steps) < 1 or self.steps_exits not in self.steps:
            raise ValueError(f"--steps must be step counts >= 1 holding --steps-exits "
                             f"{self.steps_exits}, got {list(self.steps)}")
        names = preset_names(ARCH, peers=True)
        bad = [p for p in (*self.presets, *self.solver_presets) if p not in names or p == "full"]
        if bad:
            raise ValueError(f"--presets / --solver-presets {bad}: choose from {names}")
        missing = [t for t in self.timesteps if not Path(t).is_file()]
        if missing:
            raise ValueError(f"--timesteps {missing}: no such file (`ase-search timesteps` "
                             f"writes one)")
        if self.solver_steps < 1:
            raise ValueError(f"--solver-steps must be >= 1, got {self.solver_steps}")
        if self.n < 2 or min(self.seeds, self.batch_size, self.latency_n, self.rounds) < 1:
            raise ValueError("--n must be >= 2; --seeds, --batch-size, --latency-n, --rounds >= 1")

    @property
    def searched_configs(self) -> dict[str, dict[str, Any]]:
        """The searched configurations (:func:`searched`)."""
        return searched(self.study, self.searched, self.searched_fid)


def keys(params: Params) -> list[str]:
    return ["conversion", "applicability", "overhead",
            *(f"full/ddim-{k}" for k in params.steps),
            *(f"full/dpm-solver-{k}" for k in params.dpm_steps),
            *(f"searched/{k}" for k in params.searched_configs),
            "stock/full",
            *(f"ase/{p}" for p in params.presets),
            *(f"one-shot/{p}" for p in ("full", *params.presets)),
            *(f"cache/{c}" for c in params.caches),
            *(f"{group}/{name}@dpm-solver-{params.solver_steps}"
              for group, names in (("cache", params.solver_caches),
                                   ("ase", params.solver_presets)) for name in names),
            *(f"timesteps/{Path(t).stem}" for t in params.timesteps)]


def timesteps_file(params: Params, stem: str) -> dict[str, Any]:
    """The searched timesteps ``stem`` of ``--timesteps``: its sampler, steps and timesteps."""
    import json

    path = next(Path(t) for t in params.timesteps if Path(t).stem == stem)
    data = json.loads(path.read_text())
    if data.get("arch") != ARCH:
        raise ValueError(f"{path} holds {data.get('arch')} timesteps, not {ARCH}'s")
    return {"sampler": data["sampler"], "steps": int(data["steps"]),
            "timesteps": [int(t) for t in data["timesteps"]], "file": display_path(path)}


@functools.cache
def folder(kind: str) -> Path:
    """The testbed (``base``) or the one-shot weights (``one-shot``) exported once per run."""
    from ase_search.integrations.diffusers import export_dit

    weights = None if kind == "base" else reference_one_shot_weights(ARCH)
    out = Path(tempfile.mkdtemp(prefix=f"ase-diffusers-{kind}-")) / "dit"
    export_dit(load_testbed(ARCH, weights), out,
               source="the shipped dit testbed" if weights is None else display_path(weights))
    return out


@functools.cache
def searched(study: str, most: int, fid_ratio: float) -> dict[str, dict[str, Any]]:
    """The ``most`` fastest exit configurations on the joint and exits-at-reference fronts of the
    diffusers study ``study`` with a FID at most ``fid_ratio`` x its reference's (none without
    the study): ``config_key -> {"sampler", "schedule", "trial", "fid", "what"}``."""
    from ase_search.fronts import study_fronts
    from ase_search.pareto import open_study
    from ase_search.record import trial_preset

    if not Path(study).is_file():
        return {}
    s = open_study(study)
    if not s.user_attrs.get("config", {}).get("diffusers"):
        raise ValueError(f"--study {study} is not a diffusers study (`ase-search run "
                         f"--diffusers`)")
    fronts = study_fronts(s)
    if fronts.reference is None:
        return {}
    limit = fid_ratio * fronts.reference.fid
    found = {p.key: p for p in (*fronts.joint, *fronts.exits_at_reference)
             if p.kind == "exit" and p.fid <= limit}
    trials = {t.number: t for t in s.trials}
    return {p.key: {"sampler": p.sampler, "schedule": trials[p.trial].user_attrs["schedule"],
                    "trial": p.trial, "fid": p.fid,
                    "what": trial_preset(trials[p.trial]) or f"trial {p.trial}"}
            for p in sorted(found.values(), key=lambda p: p.latency)[:most]}


def weights_identity(params: Params, key: str) -> dict[str, Any]:
    from ase_search.testbed import TESTBEDS

    ident = {"testbed_sha256": weights_sha256(TESTBEDS[ARCH].path)}
    if key.startswith("one-shot/"):
        ident["one_shot_sha256"] = weights_sha256(reference_one_shot_weights(ARCH))
    if key.startswith("searched/"):
        found = params.searched_configs[key.partition("/")[2]]
        ident.update(schedule=found["schedule"], sampler=found["sampler"])
    if key.startswith("timesteps/"):
        ident["timesteps"] = timesteps_file(params, key.partition("/")[2])["timesteps"]
    return ident


# ###################################################################### the caches
def apply_cache(transformer: Any, cache: Cache, steps: int, clock: dict[str, int],
                sampler: str = "ddim") -> None:
    """Attach diffusers' hook ``cache`` for a run of ``steps`` steps of ``sampler``;
    ``clock["t"]`` is the current timestep."""
    import torch
    from diffusers import hooks as H

    hook, setting = cache.hook, cache.setting

    def current() -> int:
        return clock["t"]

    if hook == "FirstBlockCache":
        H.apply_first_block_cache(transformer, H.FirstBlockCacheConfig(threshold=setting))
    elif hook == "PyramidAttentionBroadcast":
        H.apply_pyramid_attention_broadcast(transformer, H.PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=int(setting), current_timestep_callback=current))
    elif hook == "FasterCache":
        # No CFG here (cfg_scale 1): the model is "guidance distilled" as far as the hook goes.
        H.apply_faster_cache(transformer, H.FasterCacheConfig(
            spatial_attention_block_skip_range=int(setting), current_timestep_callback=current,
            is_guidance_distilled=True, tensor_format="BCHW",
            attention_weight_callback=lambda _: 0.5))
    elif hook == "TaylorSeer":
        # The default patterns match no DiT module (its attention is attn1).
        H.apply_taylorseer_cache(transformer, H.TaylorSeerCacheConfig(
            cache_interval=int(setting), disable_cache_before_step=cache.warmup,
            max_order=cache.order, taylor_factors_dtype=torch.float32,
            cache_identifiers=[r"^transformer_blocks\.\d+\.(attn1|ff)$"]))
    elif hook == "MagCache":
        H.apply_mag_cache(transformer, H.MagCacheConfig(
            threshold=setting, num_inference_steps=steps,
            mag_ratios=calibrate_magcache(steps, sampler)))
    elif hook == "LayerSkip":
        depth = len(transformer.transformer_blocks)
        H.apply_layer_skip(transformer, H.LayerSkipConfig(
            indices=list(range(depth - int(setting), depth))))
    elif hook == "SeaCache":
        H.apply_sea_cache(transformer, H.SeaCacheConfig())
    else:
        raise ValueError(f"unknown cache hook {hook}")


@functools.cache
def calibrate_magcache(steps: int, sampler: str = "ddim") -> tuple[float, ...]:
    """MagCache's magnitude ratios for the base testbed at ``sampler``-``steps`` (its calibrate
    mode, one batch of 64 samples of seed 1000, which no measured configuration uses)."""
    import ast

    from diffusers import hooks as H

    from ase_search.integrations.diffusers import load_scheduler, load_transformer, sample_diffusers

    transformer = load_transformer(folder("base"))
    H.apply_mag_cache(transformer, H.MagCacheConfig(num_inference_steps=steps, calibrate=True))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        sample_diffusers(transformer, load_scheduler(folder("base"), sampler), n=64,
                         steps=steps, seed=1000, cache_context=True)
    line = next(x for x in printed.getvalue().splitlines()
                if x.startswith("[") and x[1:2].isdigit())
    return tuple(ast.literal_eval(line))


def probe(hook: str) -> str:
    """What ``hook`` says under DiTPipeline's conditions (no cache context), verbatim."""
    from diffusers import hooks as H

    from ase_search.integrations.diffusers import load_scheduler, load_transformer, sample_diffusers

    transformer = load_transformer(folder("base"))
    clock = {"t": 999}
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        if hook == "TaylorSeer":  # the defaults, to show what they hook on DiT
            H.apply_taylorseer_cache(transformer, H.TaylorSeerCacheConfig())
        elif hook == "MagCache":  # the defaults: no ratios for this model
            H.apply_mag_cache(transformer, H.MagCacheConfig())
        else:
            apply_cache(transformer, next(c for c in CACHES.values() if c.hook == hook), 4,
                        clock)
        hooked = sum(1 for m in transformer.modules() if hasattr(m, "_diffusers_hook"))
        sample_diffusers(transformer, load_scheduler(folder("base")), n=2, steps=4, seed=0,
                         on_step=lambda i, t: clock.update(t=int(t)))
        result = f"runs; {hooked} modules hooked"
    except Exception as err:  # what a user would see, verbatim
        result = f"{type(err).__name__}: {' '.join(str(err).split())}"
    finally:
        logger.removeHandler(handler)
    return result + "".join(f" | log: {' '.join(m.split())}" for m in dict.fromkeys(messages))


# ###################################################################### the cells
def timed(sample: Any, rounds: int) -> dict[str, Any]:
    """The fastest of ``rounds`` calls of ``sample()`` (after one warm-up), with the load, in
    wall time and in this process's CPU time (on one torch thread, the compute itself, without
    what other processes on the shared cores take)."""
    sample()
    wall, cpu, loads = [], [], []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        w0, c0 = time.perf_counter(), time.process_time()
        sample()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"fastest_s": min(cpu), "fastest_wall_s": min(wall), "rounds_cpu_s": cpu,
            "rounds_wall_s": wall, "load_1min": loads}


def conversion() -> dict[str, float]:
    """The export against the native DiT-T: forwards on 64 random inputs, DDIM-20 samples."""
    import torch
    from diffusers import DiTTransformer2DModel

    from ase_search.integrations.diffusers import load_scheduler, load_transformer, sample_diffusers
    from ase_search.samplers import SamplerConfig, sample

    native, converted = load_testbed(ARCH), load_transformer(folder("base"))
    stock = DiTTransformer2DModel.from_pretrained(folder("base"), low_cpu_mem_usage=False)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=g)
    t = torch.randint(0, 1000, (64,), generator=g)
    y = torch.randint(0, 11, (64,), generator=g)
    with torch.no_grad():
        want = native(x, t, y)
        got = converted(x, timestep=t, class_labels=y, return_dict=False)[0]
        plain = stock.eval()(x, timestep=t, class_labels=y, return_dict=False)[0]
    a = sample(native, sampler=SamplerConfig("ddim", 20), n=64, seed=0).images
    b = sample_diffusers(converted, load_scheduler(folder("base")), n=64, steps=20, seed=0).images
    return {"forward_max_abs": float((got - want).abs().max()),
            "stock_forward_max_abs": float((plain - want).abs().max()),
            "output_max_abs": float(want.abs().max()),
            "samples_max_abs": float((a - b).abs().max())}


def overhead(params: Params) -> dict[str, Any]:
    """The exit-schedule hooks with the full schedule against no hooks: whole runs in interleaved
    pairs of rounds, and the hooks' own cost per call where it is largest (single-sample calls,
    10 interleaved blocks of 200)."""
    import torch

    from ase_search.integrations.diffusers import (
        apply_exit_schedule,
        exit_blocks,
        load_scheduler,
        load_transformer,
        sample_diffusers,
    )
    from ase_search.schedule import preset

    scheduler = load_scheduler(folder("base"))
    plain, hooked = load_transformer(folder("base")), load_transformer(folder("base"))
    apply_exit_schedule(hooked, preset("full", ARCH, len(exit_blocks(plain))))

    def run_cpu_s(model: Any) -> float:
        c0 = time.process_time()
        sample_diffusers(model, scheduler, n=params.latency_n, steps=params.steps_exits, seed=0)
        return time.process_time() - c0

    run_cpu_s(plain), run_cpu_s(hooked)
    # interleaved, so load changes hit both alike
    pairs = [(run_cpu_s(plain), run_cpu_s(hooked)) for _ in range(2 * params.rounds)]
    ratios = sorted(h / p for p, h in pairs)
    x, t, y = torch.randn(1, 1, 28, 28), torch.tensor([500]), torch.tensor([3])

    def calls(model: Any, count: int = 200) -> float:
        c0 = time.process_time()
        with torch.no_grad():
            for _ in range(count):
                model(x, timestep=t, class_labels=y, return_dict=False)
        return (time.process_time() - c0) / count

    single = [(calls(plain), calls(hooked)) for _ in range(10)]
    per_call = statistics.median(h - p for p, h in single)
    model_call = min(p for p, _ in pairs) / params.steps_exits
    return {"plain_cpu_s": [p for p, _ in pairs], "hooked_cpu_s": [h for _, h in pairs],
            "single_call_plain_s": [p for p, _ in single],
            "single_call_hooked_s": [h for _, h in single],
            "hook_us_per_call": per_call * 1e6, "model_call_s": model_call,
            "hook_us_sd": statistics.stdev(h - p for p, h in single) * 1e6,
            "hook_share": per_call / model_call,
            "overhead": statistics.median(ratios) - 1.0,
            "overhead_fastest": min(h for _, h in pairs) / min(p for p, _ in pairs) - 1.0,
            "load_1min": os.getloadavg()[0], "n": params.latency_n, "steps": params.steps_exits}


def measure(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """One cell: the conversion, the hooks' applicability or overhead, or a configuration's FIDs
    and latency."""
    from diffusers import DiTTransformer2DModel

    from ase_search.evaluate import machine_info
    from ase_search.integrations.diffusers import (
        apply_exit_schedule,
        exit_blocks,
        load_scheduler,
        load_transformer,
        sample_diffusers,
    )
    from ase_search.measure import fid_images
    from ase_search.metrics.fid import compute_fid
    from ase_search.schedule import ExitSchedule, preset

    common = {"command": ctx.command, "machine": machine_info()}
    single = {"conversion": conversion, "overhead": lambda: overhead(params),
              "applicability": lambda: {"probes": {hook: probe(hook) for hook in PROBES}}}
    if key in single:
        return {**single[key](), **common}

    group, _, rest = key.partition("/")
    name, _, at = rest.partition("@")
    path = folder("one-shot" if group == "one-shot" else "base")
    transformer = (DiTTransformer2DModel.from_pretrained(path, low_cpu_mem_usage=False).eval()
                   if group == "stock" else load_transformer(path))
    depth = len(exit_blocks(transformer))
    sampler, steps, schedule, found, explicit = "ddim", params.steps_exits, None, {}, None
    if at:
        sampler, _, count = at.rpartition("-")
        steps = int(count)
    if group == "full":
        sampler, _, count = name.rpartition("-")
        steps = int(count)
    elif group == "timesteps":
        found = timesteps_file(params, name)
        sampler, steps, explicit = found["sampler"], found["steps"], found["timesteps"]
    elif group == "searched":
        found = params.searched_configs[name]
        sampler, steps = found["sampler"]["name"], found["sampler"]["steps"]
        schedule = ExitSchedule.from_dict(found["schedule"])
    elif group in ("ase", "one-shot") and name != "full":
        schedule = preset(name, ARCH, depth)
    if schedule is not None:
        apply_exit_schedule(transformer, schedule)
    scheduler = load_scheduler(path, sampler, explicit=explicit is not None)
    clock = {"t": 999}
    if group == "cache":
        apply_cache(transformer, CACHES[name], steps, clock, sampler)

    def draw(n: int, seed: int) -> Any:
        return sample_diffusers(transformer, scheduler, n=n, steps=steps, seed=seed,
                                batch_size=params.batch_size, cache_context=group == "cache",
                                on_step=lambda i, t: clock.update(t=int(t)), timesteps=explicit)

    t0 = time.perf_counter()
    fids, block_evals = [], None
    for seed in range(params.seeds):
        out = draw(params.n, seed)
        fids.append(compute_fid(fid_images(out.images, None), reference="mnist")["fid"])
        block_evals = out.block_evals
    seconds = time.perf_counter() - t0
    latency = timed(lambda: draw(params.latency_n, 0), params.rounds)
    print(f"{key}: FID {statistics.fmean(fids):.2f} ({' '.join(f'{f:.2f}' for f in fids)}), "
          f"{latency['fastest_s'] / params.latency_n * 1e3:.2f} ms/sample, {seconds:.0f} s",
          file=sys.stderr, flush=True)
    return {"group": group, "name": name, "sampler": sampler, "steps": steps, "fids": fids,
            "trial": found.get("trial"), "what": found.get("what"),
            "timesteps": explicit, "timesteps_file": found.get("file"),
            "seeds": list(range(params.seeds)), "n": params.n,
            "schedule": None if schedule is None else schedule.to_dict(),
            "block_evals": block_evals, "full_block_evals": depth * steps,
            "latency": latency, "latency_n": params.latency_n,
            "setting": CACHES[name].what if group == "cache" else None,
            "seconds": seconds, **common}


# ###################################################################### the report
def label(c: dict[str, Any]) -> str:
    if c["group"] == "full":
        return ladder_label(c)
    if c["group"] == "searched":
        return (f"searched {c['what']}, {SOLVER_TITLES[sampler_of(c)]}-{c['steps']} "
                f"({c['name'].partition('/')[2]})")
    if c["group"] == "timesteps":
        return (f"full, {SOLVER_TITLES[sampler_of(c)]}-{c['steps']} at FID-searched "
                f"{','.join(map(str, c['timesteps']))}")
    what = {"stock": "full (plain from_pretrained)", "ase": f"ase {c['name']}",
            "one-shot": f"one-shot {c['name']}"}.get(c["group"], c["name"])
    return f"{what}, {SOLVER_TITLES[sampler_of(c)]}-{c['steps']}"


def verdicts(configs: dict[str, dict[str, Any]], params: Params) -> tuple[dict[str, Any],
                                                                          list[Judged]]:
    """Every configuration as the rule's Configuration (latency relative to the reference's,
    its rounds' spread as the error), and the verdicts on diffusers' caches and on ase-search's
    exit schedules against the steps-only ladder, the latter without the seed the diffusers
    study selected its configurations on."""
    ref_key = f"full/ddim-{params.steps_exits}"
    ref_s = configs[ref_key]["latency"]["fastest_s"]
    pts = {k: configuration(label(c), c, c["latency"]["fastest_s"] / ref_s,
                            c["latency"]["rounds_cpu_s"]) for k, c in configs.items()}
    ladder = [pts[k] for k, c in configs.items() if c["group"] in ("full", "timesteps")]

    def group(*names: str) -> list[Any]:
        return [pts[k] for k, c in configs.items()
                if c["group"] in names and c["name"] != "full"]

    out = [judge_cells(group("cache"), ladder, pts[ref_key], lever="diffusers' caches",
                       window=params.window)]
    if ours := group("ase", "one-shot", "searched"):
        out.append(judge_cells(ours, ladder, pts[ref_key], lever="ase-search's exit schedules",
                               window=params.window,
                               selection_seeds=selection_seeds(params) if group("searched")
                               else ()))
    return pts, out


def kind_of(c: dict[str, Any]) -> str:
    """What kind of configuration a cell is, for the cover table."""
    return {"full": "fewer uniform steps", "timesteps": "searched timesteps",
            "searched": "searched schedule", "ase": "ase-search preset",
            "one-shot": "one-shot preset"}.get(c["group"], c["group"])


def covers(configs: dict[str, dict[str, Any]], pts: dict[str, Any], judged: Judged,
           params: Params) -> list[str]:
    """Each hook at its shipped and best settings, and every cache configuration's cover
    (:func:`ase_search.verdict.cover`) by the configurations ase-search's joint space holds
    (the full model at fewer steps and at searched timesteps, presets, searched schedules), on
    the seeds no search selected on."""
    import pandas as pd

    from ase_search.verdict import cover

    cache_keys = [k for k, c in configs.items() if c["group"] == "cache"]
    ours = [k for k, c in configs.items() if c["group"] not in ("cache", "stock")]
    if not cache_keys or not ours:
        return []
    selected = set(selection_seeds(params))
    seeds = [s for s in pts[f"full/ddim-{params.steps_exits}"].seeds if s not in selected
             and all(s in pts[k].seeds for k in (*cache_keys, *ours))]
    on = {k: on_seeds(pts[k], seeds) for k in (*cache_keys, *ours)}
    kind = {on[k].label: kind_of(configs[k]) for k in ours}
    found = {k: cover(on[k], [on[o] for o in ours]) for k in cache_keys}

    def rank(k: str) -> tuple[float, float]:  # best: the largest discounted speedup, then FID
        j = judged.judgement(pts[k].label)
        return (-(j.discounted or 0.0) if j is not None else 1.0, pts[k].fid)

    hooks: dict[str, list[str]] = {}
    for k in cache_keys:
        hooks.setdefault(CACHES[configs[k]["name"]].hook, []).append(k)
    rows = []
    for hook, ks in hooks.items():
        shipped = [k for k in ks if CACHES[configs[k]["name"]].shipped]
        best = min(ks, key=rank)
        for k in dict.fromkeys([*shipped, best, *sorted(ks, key=rank)]):
            f = found[k]
            role = " and ".join(r for r, hit in (("shipped", k in shipped), ("best", k == best))
                                if hit)
            rows.append([hook, role, pts[k].label, pts[k].fid_text(),
                         f"{pts[k].latency.value:.3f}", judged.word(pts[k].label),
                         "" if f.by is None else f"{f.by.label} ({kind[f.by.label]})",
                         "" if f.comparison is None else
                         f.comparison.text() + (", beaten" if f.beats else "")])
    covered = [k for k in cache_keys if found[k].by is not None]
    by_kind: dict[str, int] = {}
    for k in covered:
        by_kind[kind[found[k].by.label]] = by_kind.get(kind[found[k].by.label], 0) + 1
    return ["## Each cache at its shipped and best settings, and what covers it", "",
            f"**Target** (issue #24: for every cache configuration measured, a configuration of "
            f"ase-search's joint space at no more latency with a FID the cache does not beat): "
            f"**{len(covered)} of {len(cache_keys)} covered**"
            + (f" ({', '.join(f'{n} by {w}' for w, n in sorted(by_kind.items()))})"
               if covered else "")
            + (f"; not covered: {', '.join(pts[k].label for k in cache_keys if k not in covered)}"
               if len(covered) < len(cache_keys) else "") + ".", "",
            f"- Seeds {', '.join(map(str, seeds))} (the diffusers study selected its schedules "
            f"on seed {', '.join(map(str, sorted(selected)))}); a cover's latency at the "
            f"pessimistic end of its rounds' spread is at most the cache's at the optimistic "
            f"end, and the cache does not beat its FID by rule 1 at one-sided alpha 0.05, "
            f"unadjusted (`ase_search.verdict.cover`); of the covers, the one with the lowest "
            f"FID. **shipped**: diffusers' default setting (PyramidAttentionBroadcast has none: "
            f"its docs' example); **best**: the setting with the largest discounted speedup "
            f"against fewer steps (the lowest FID when none is in the window), chosen on the "
            f"judged seeds, which favours the cache.",
            "- **vs fewer steps**: the caches' verdict above, on seeds 0-4.", "",
            markdown_table(pd.DataFrame(rows, columns=[
                "hook", "setting is", "configuration", "FID-MNIST", "relative latency",
                "vs fewer steps", "covered by", "the cache against its cover"])), ""]


def selection_seeds(params: Params) -> tuple[int, ...]:
    """The seed the diffusers study selected its configurations on (its config's ``seed``)."""
    if not Path(params.study).is_file():
        return (0,)
    from ase_search.pareto import open_study

    return (int(open_study(params.study).user_attrs.get("config", {}).get("seed", 0)),)


def searched_line(configs: dict[str, dict[str, Any]], params: Params) -> str:
    """The report's bullet on the searched configurations: which study, made how."""
    from ase_search.pareto import open_study
    from ase_search.record import reference_sampler

    study = display_path(Path(params.study))
    if not any(c["group"] == "searched" for c in configs.values()):
        return (f"- Searched: none measured (`{study}` does not exist; `python -m "
                f"tools.reference_study --arch dit --diffusers` makes it)")
    attrs = open_study(params.study).user_attrs
    run = attrs.get("last_run", {})
    return (f"- Searched: `{study}`, a training-free `ase-search run --diffusers` study of the "
            f"exported testbed in `{attrs.get('space', {}).get('description', '?')}`"
            + (f" ({run.get('new_trials')} trials, {run['wall_time'] / 60:.1f} min, finished "
               f"{run.get('finished')})" if run.get("wall_time") else "")
            + f"; its exit configurations on the joint and exits-at-"
            f"{reference_sampler(attrs['config'], attrs.get('space')).describe()} fronts with a "
            f"FID at most {params.searched_fid:g}x the study's reference (at its one seed), the "
            f"{params.searched} fastest, re-measured here over the seeds above")


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    import pandas as pd
    import plotly.graph_objects as go

    from ase_search.verdict import non_dominated

    configs = {k: c for k, c in cells.items() if "fids" in c}
    ref_key = f"full/ddim-{params.steps_exits}"
    lines = ["# ase-search exit schedules against diffusers' caches (DiT testbed, diffusers path)",
             "", f"Written by `benchmarks/diffusers.py` from `{json_name}` (issues #17, #24).", ""]
    if ref_key not in configs:
        return Report("\n".join(lines + ["The reference configuration is not measured yet.", ""]))
    ref_cell = configs[ref_key]
    pts, judged = verdicts(configs, params)
    joint = non_dominated(list(pts.values()))
    loads = [x for c in configs.values() for x in c["latency"]["load_1min"]]
    lines += [
        *provenance(cells),
        "- Path: the DiT testbed exported with `ase-search export-diffusers`, loaded with "
        "`load_transformer`, sampled by `sample_diffusers` (DiTPipeline's loop without a VAE) "
        "with the exported `DDIMScheduler` (leading spacing) or, for DPM-Solver++, "
        "`load_scheduler(..., 'dpm-solver')` (a `DPMSolverMultistepScheduler` from the same "
        "config with ase-search's DPM-Solver++ 2M settings); cfg scale 1",
        searched_line(configs, params),
        f"- Latency: measured, the fastest of {params.rounds} rounds of {params.latency_n} "
        f"samples in one batch after a warm-up, in CPU time of the one torch thread (wall time "
        f"on these shared cores varied by up to half between rounds; the fastest wall time is "
        f"in the JSON), relative to the full model at DDIM-{params.steps_exits} "
        f"({ref_cell['latency']['fastest_s'] / params.latency_n * 1e3:.2f} ms per sample); "
        f"1-minute load average during the rounds {min(loads):.2f} to {max(loads):.2f} on "
        f"{ref_cell['machine']['logical_cores']} cores; the verdict takes each configuration's "
        f"latency uncertainty as its rounds' range over the fastest",
        "- Steps-only ladder: the full model (the shipped testbed) with DDIM and DPM-Solver++ at "
        "every measured step count, and at the FID-searched timesteps of "
        + ", ".join(f"`{display_path(Path(t))}`" for t in params.timesteps)
        + " (`ase-search timesteps --objective fid`, calibration seed 10000) through "
        "`timesteps=`; diffusers' caches and ase-search's exit schedules are judged against "
        "it, each family on its own",
        "- Latency caveat: CPU time on these shared cores is not clean. The rounds of one "
        "configuration differ by up to "
        f"{max(pts[k].latency.error for k in configs):.0%} (the spread column), and a cell "
        "timed beside other work reads up to a quarter slower (four of the cells added on "
        "2026-12-07 were timed again for that); a cover or a speedup inside those spreads is "
        "not a claim",
        "- Verdict: every judgement by the paired rule of `ase_search/verdict.py` on the cached "
        "cells", "", "## Verdict", ""]
    titles = ["diffusers' caches", "ase-search's presets and searched configurations"]
    for title, j in zip(titles, judged):
        lines += j.markdown(title)
    word = {p: j for j in judged for p in (*(x.point.label for x in j.verdict.judgements),
                                           *(x.label for x in j.verdict.outside))}
    if "overhead" in cells:
        o = cells["overhead"]
        se_us = o["hook_us_sd"] / len(o["single_call_plain_s"]) ** 0.5
        bound = max(0.0, o["hook_us_per_call"] + 2 * se_us) * 1e-6 / o["model_call_s"]
        lines += [f"Hook overhead at full depth (the exit-schedule hooks with the full schedule "
                  f"against no hooks, DDIM-{o['steps']}, {o['n']} samples, "
                  f"{len(o['plain_cpu_s'])} interleaved pairs of rounds, CPU time): median "
                  f"ratio **{o['overhead']:+.2%}** of the model's time, fastest against fastest "
                  f"{o['overhead_fastest']:+.2%} (limit 1%; 1-minute load {o['load_1min']:.2f}); "
                  f"these rounds resolve no better than a few percent. Resolved directly "
                  f"(10 interleaved blocks of 200 single-sample calls, hooked minus plain, "
                  f"median): the hooks cost {o['hook_us_per_call']:.0f} µs per call, standard "
                  f"error {se_us:.0f} µs, so at most **{bound:.2%}** of one call at {o['n']} "
                  f"samples ({o['model_call_s'] * 1e3:.0f} ms) at two standard errors.", ""]

    lines += covers(configs, pts, judged[0], params)
    rows = []
    for k, c in sorted(configs.items(), key=lambda kc: pts[kc[0]].latency.value):
        p, j = pts[k], word.get(pts[k].label)
        rows.append([
            p.label, CACHES[c["name"]].what if c["group"] == "cache" else "", p.fid_text(),
            f"{p.latency.value:.3f}",
            f"{p.latency.error:.1%}", f"{c['latency']['fastest_s'] / c['latency_n'] * 1e3:.2f}",
            "" if c["group"] in ("full", "stock", "cache", "timesteps") else
            f"{1 - c['block_evals'] / c['full_block_evals']:.1%}",
            "yes" if p in joint else "", "" if j is None else j.word(p.label),
            "" if j is None else j.against(p.label)])
    lines += ["## Every configuration", "",
              "Sorted by measured latency. FID: mean ± sd over all seeds; **spread**: the rounds' "
              "range over the fastest (the verdict's latency uncertainty); **vs fewer steps**: the "
              "rule's judgement of a cache's or an exit schedule's configuration in the quality "
              "window (`ase_search.verdict`: the discounted speedup at matched FID and the "
              "cheapest steps-only configuration it does not beat; beyond / below the ladder), on "
              "its family's seeds; empty for the ladder and the full model's variants; **paired "
              "FID ratio**: against that configuration.", "",
              markdown_table(pd.DataFrame(rows, columns=[
                  "configuration", "setting", "FID-MNIST", "relative latency", "spread",
                  "CPU ms / sample", "block acceleration", "joint front", "vs fewer steps",
                  "paired FID ratio"]),
                  align=["left", "left", "right", "right", "right", "right", "right", "center",
                         "left", "left"]), ""]
    if "applicability" in cells:
        lines += ["## Which diffusers hooks apply to DiTTransformer2DModel", "",
                  "Each hook attached with its defaults (TaylorSeer and MagCache: all defaults) "
                  "and run for 4 DDIM steps as DiTPipeline calls the transformer, without a "
                  "`cache_context` (DiTTransformer2DModel is not a `CacheMixin`, so DiTPipeline "
                  "sets none). What it said, verbatim:", "",
                  *(f"- **{hook}**: `{said}`"
                    for hook, said in cells["applicability"]["probes"].items()),
                  "", "The measured settings above run each hook inside `cache_context('cond', "
                  "step_index=..., num_inference_steps=..., timestep=...)` (what CacheMixin "
                  "pipelines set) and give PyramidAttentionBroadcast and FasterCache the current "
                  "timestep through `current_timestep_callback`. SeaCache needs a flow-matching "
                  "sigma in [0, 1] (x_t = (1 - sigma) x_0 + sigma noise), which a DDPM/DDIM model "
                  "has not, so it is not measured.", ""]
    if "conversion" in cells:
        c = cells["conversion"]
        lines += ["## The conversion", "",
                  f"`load_transformer` of the export against the native DiT-T on 64 random "
                  f"inputs: max |difference| {c['forward_max_abs']:.3g} (outputs up to "
                  f"{c['output_max_abs']:.3g}); DDIM-20 samples of seed 0 through the diffusers "
                  f"path against ase-search's own sampler: max |difference| "
                  f"{c['samples_max_abs']:.3g}. A plain `DiTTransformer2DModel.from_pretrained` "
                  f"of the same folder keeps diffusers' timestep frequencies "
                  f"(`exp(-ln(10000) k / 127)` instead of official DiT's `/ 128`) and its float32 "
                  f"position table: max |difference| {c['stock_forward_max_abs']:.3g}; its FID is "
                  f"the `plain from_pretrained` row.", ""]
    groups: dict[str, list[Any]] = {}
    for k, c in configs.items():
        g = (CACHES[c["name"]].hook if c["group"] == "cache" else
             f"full, {SOLVER_TITLES[sampler_of(c)]}" if c["group"] == "full" else c["group"])
        groups.setdefault(g, []).append(pts[k])
    fig = go.Figure()
    for g, ps in groups.items():
        ps = sorted(ps, key=lambda p: p.latency.value)
        fig.add_trace(go.Scatter(x=[p.latency.value for p in ps], y=[p.fid for p in ps],
                                 mode="lines+markers" if g.startswith("full") else "markers",
                                 name=g, text=[p.label for p in ps],
                                 hovertemplate="%{text}<br>latency %{x:.3f}<br>FID %{y:.2f}"
                                               "<extra></extra>"))
    fig.update_layout(title="FID-MNIST (log) against measured latency, diffusers path",
                      xaxis_title=f"measured latency / full model at DDIM-{params.steps_exits}",
                      yaxis_title="FID-MNIST (mean over seeds)", yaxis_type="log", height=600)
    return Report("\n".join(lines), figures=[fig],
                  title="ase-search against diffusers' caches",
                  html_intro="".join(f"<p>{j.markdown(t)[0].replace('**', '')}</p>"
                                     for t, j in zip(titles, judged)))


BENCHMARK = Benchmark(name="diffusers", doc=__doc__, params=Params, keys=keys, cell=measure,
                      report=report, cell_identity=weights_identity)


if __name__ == "__main__":
    run(BENCHMARK)
