"""Noise-Easy vs Data-Easy (Appendix A.1): FID against fine-tuning steps at the same compute.

The paper's Figure 5 fine-tunes DiT with a Noise-Easy schedule (fewer blocks near noise) and its
Data-Easy mirror (the same counts with t reflected to 1 - t) and tracks FID over the steps. Here
each ``--presets`` schedule and its mirror ``<preset>-data-easy`` get one Algorithm 1 trajectory
on the shipped testbed, and the EMA teacher is scored at every ``--checkpoints`` step (FID-MNIST
over seeds, common random numbers). A trajectory resumes from its ``last.pt`` up to the next
checkpoint, which is exact: every draw of step k is seeded by (seed, k) and the learning rate is
constant. The full model (no exits, no fine-tune) is the reference line.

    python -m benchmarks.noise_easy --presets D3 --checkpoints 0 100 200 400 800 --n 500 --seeds 5

Cells: one per trajectory (``dit/D3``, ``dit/D3-data-easy``), saved after every checkpoint, and
``dit/full``; more checkpoints reuse those measured with the same settings.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import sys
import time
from dataclasses import field
from pathlib import Path
from typing import Any

from ase_search.schedule import DATA_EASY_SUFFIX, preset_names
from benchmarks._common import (ROOT, display_path, fid_text, machine_text, sampler_name,
                               short_hash, weights_sha256)
from benchmarks._runner import Benchmark, CellContext, Report, markdown_table, option, run

ARCHS = ("dit", "uvit")


@dataclasses.dataclass(frozen=True)
class Params:
    """The model, the schedules, the fine-tune and how FID is measured along it."""

    arch: str = field(default="dit", metadata=option("testbed model", identity=False,
                                                     choices=ARCHS))
    checkpoint: str | None = field(default=None, metadata=option(
        "model weights (default: the shipped testbed model)", identity=False))
    presets: tuple[str, ...] = field(default=("D3",), metadata=option(
        "Noise-Easy presets; each is run with its '-data-easy' mirror", identity=False))
    checkpoints: tuple[int, ...] = field(default=(0, 100, 200, 400, 800), metadata=option(
        "fine-tuning steps at which FID is measured"))
    n: int = field(default=500, metadata=option("samples per seed"))
    seeds: int = field(default=5, metadata=option("seeds 0..S-1"))
    sampler: str = "ddim"
    steps: int = field(default=20, metadata=option("sampling steps"))
    batch_size: int = field(default=250, metadata=option("sampling batch"))
    ft_batch_size: int = 64
    lr: float = 2e-5
    ema_decay: float = 0.999
    gamma: float = field(default=2.0, metadata=option("strength of lambda(t)"))
    cycles: int = field(default=1, metadata=option("epochs C with lambda(t)"))
    ft_seed: int = 0
    work_dir: Path = field(default=ROOT / "studies" / "noise-easy", metadata=option(
        "where the trajectories' last.pt checkpoints are kept", identity=False))

    def __post_init__(self) -> None:
        if any(k < 0 for k in self.checkpoints):
            raise ValueError("--checkpoints must be >= 0")
        object.__setattr__(self, "checkpoints", tuple(sorted(set(self.checkpoints))))
        for p in self.presets:
            if p.endswith(DATA_EASY_SUFFIX) or p == "full" or p not in preset_names(self.arch):
                raise ValueError(f"--presets takes Noise-Easy presets of {self.arch}: "
                                 f"{preset_names(self.arch, data_easy=False)[1:]}, got {p!r}")
        if min(self.n, self.seeds, self.steps, self.batch_size, self.ft_batch_size) < 1:
            raise ValueError("--n, --seeds, --steps, --batch-size and --ft-batch-size must be "
                             ">= 1")

    def weights(self) -> Path:
        from ase_search.testbed import TESTBEDS

        return Path(self.checkpoint) if self.checkpoint else TESTBEDS[self.arch].path


def keys(params: Params) -> list[str]:
    names = ["full"] + [n for p in params.presets for n in (p, p + DATA_EASY_SUFFIX)]
    return [f"{params.arch}/{n}" for n in names]


# ###################################################################### the schedules
def uniform_block_acceleration(schedule: Any) -> float:
    """Share of exitable blocks skipped over uniform t in [0, 1] (the fine-tune's t law)."""
    widths = [hi - lo for lo, hi in zip(schedule.boundaries, schedule.boundaries[1:])]
    return 1.0 - sum(w * n for w, n in zip(widths, schedule.blocks)) / schedule.depth


def settings_key(settings: dict[str, Any]) -> str:
    """What a measured step depends on: everything but the checkpoint list and the horizon."""
    return short_hash({k: v for k, v in settings.items()
                       if k not in ("checkpoints", "finetune", "model_name")}
                      | {"finetune": {k: v for k, v in settings["finetune"].items()
                                      if k != "steps"}})


# ###################################################################### one trajectory
def trajectory(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """Fine-tune with one schedule, scoring the EMA teacher at every checkpoint (``full``: the
    model as shipped, at step 0 only); each step is saved as it finishes."""
    from ase_search.callplan import block_acceleration
    from ase_search.data import build_dataset
    from ase_search.evaluate import evaluate, machine_info
    from ase_search.finetune import FinetuneConfig, finetune
    from ase_search.metrics.latency import CostModel, profile_components
    from ase_search.models import load_state_dict_file
    from ase_search.samplers import SamplerConfig
    from ase_search.schedule import preset
    from ase_search.testbed import load_model

    arch, _, name = key.partition("/")
    weights = params.weights()
    base = load_model(arch, weights)
    sampler = SamplerConfig(name=sampler_name(params.sampler), steps=params.steps)
    config = FinetuneConfig(steps=max(params.checkpoints), batch_size=params.ft_batch_size,
                            lr=params.lr, lr_schedule="constant", ema_decay=params.ema_decay,
                            gamma=params.gamma, cycles=params.cycles, seed=params.ft_seed)
    settings = {
        "arch": arch, "model_name": getattr(base, "model_name", arch), "depth": base.exit_depth,
        "weights": display_path(weights), "weights_sha256": weights_sha256(weights),
        "n": params.n, "seeds": list(range(params.seeds)), "sampler": sampler.to_dict(),
        "batch_size": params.batch_size, "finetune": dataclasses.asdict(config), "data": "mnist",
        "checkpoints": list(params.checkpoints),
    }
    skey = settings_key(settings)
    old = ctx.previous if (ctx.previous or {}).get("settings_key") == skey else {}
    schedule = preset(name, arch, base.exit_depth)
    cost = (CostModel.from_dict(old["cost_model"]) if old
            else profile_components(base, batch_size=256))
    record: dict[str, Any] = {
        "name": name, "command": ctx.command, "machine": machine_info(), "settings": settings,
        "settings_key": skey, "cost_model": cost.to_dict(),
        "schedule": {
            "schedule": schedule.to_dict(), "intervals": schedule.describe(),
            "uniform_block_acceleration": uniform_block_acceleration(schedule),
            "sampler_block_acceleration": block_acceleration(schedule, sampler),
            "predicted_acceleration": cost.acceleration(schedule, sampler.model_times()),
        },
        "steps": dict(old.get("steps", {})),
    }
    if name.endswith(DATA_EASY_SUFFIX):
        mirror = preset(name.removesuffix(DATA_EASY_SUFFIX), arch, base.exit_depth)
        if not math.isclose(uniform_block_acceleration(mirror),
                            record["schedule"]["uniform_block_acceleration"], abs_tol=1e-9):
            raise ValueError(f"{mirror.name} and {name} do not skip the same share of blocks; "
                             f"the comparison would not be at the same compute")

    run_dir = params.work_dir / f"{arch}-{name}-{skey}"
    last = run_dir / "last.pt"
    if not old and last.is_file():  # nothing measured to continue from: train afresh
        last.unlink()
    data = None
    for k in [0] if name == "full" else params.checkpoints:
        if str(k) in record["steps"]:
            continue
        t0 = time.perf_counter()
        if k == 0:
            model = base
        else:
            done = int(load_state_dict_file(last)["step"]) if last.is_file() else 0
            if done > k:
                raise SystemExit(
                    f"{last} is at step {done}, past checkpoint {k} whose FID is not cached; "
                    f"remove {run_dir} (or pass --fresh) to train this trajectory again")
            print(f"fine-tune {name}: step {done} -> {k}", file=sys.stderr, flush=True)
            if data is None:
                data = build_dataset("mnist", resolution=base.input_size,
                                     channels=base.in_channels)
            model = finetune(copy.deepcopy(base).train(), data, schedule,
                             dataclasses.replace(config, steps=k), out_dir=run_dir,
                             resume=True).ema.eval()
        result = evaluate(model, schedule, sampler=sampler, n=params.n,
                          seeds=settings["seeds"], cost_model=cost,
                          batch_size=params.batch_size)
        record["steps"][str(k)] = {
            "step": k, "fid_mean": result.mean("fid"), "fid_std": result.std("fid"),
            "per_seed": [m["fid"] for m in result.metrics],
            "block_acceleration": result.block_acceleration,
            "predicted_acceleration": result.predicted_acceleration,
            "seconds": time.perf_counter() - t0,
        }
        print(f"{name:>16s} step {k:>6d}: FID {fid_text(record['steps'][str(k)])}", flush=True)
        ctx.checkpoint(record)
    return record


# ###################################################################### the report
def verdict(pairs: list[tuple[str, str]], steps: dict[str, dict[str, Any]],
            checkpoints: list[int]) -> list[str]:
    """One sentence per (Noise-Easy, Data-Easy) pair from ``steps[name][str(k)]``, the FID at
    step ``k``: at each step the lower mean wins, by more than the seed noise when the difference
    exceeds the larger of the two standard deviations over seeds."""
    sentences = []
    for noise, data in pairs:
        wins, clear = [], []
        for k in checkpoints:
            a, b = steps[noise][str(k)], steps[data][str(k)]
            diff = b["fid_mean"] - a["fid_mean"]  # > 0: Noise-Easy is lower
            if diff > 0:
                wins.append(k)
            stds = [s for s in (a["fid_std"], b["fid_std"]) if s is not None]
            if stds and abs(diff) > max(stds):
                clear.append(f"{k} ({noise if diff > 0 else data} lower)")
        last = checkpoints[-1]
        a, b = steps[noise][str(last)], steps[data][str(last)]
        text = (f"**{noise} vs {data}:** the Noise-Easy schedule {noise} has the lower FID at "
                f"{len(wins)} of {len(checkpoints)} step counts"
                + (f" ({', '.join(map(str, wins))})" if wins else ""))
        if a["fid_std"] is None:
            text += "; with one seed there is no seed standard deviation to compare against"
        else:
            text += (f"; the difference exceeds the larger seed standard deviation at "
                     f"{len(clear)} of them" + (f": {', '.join(clear)}" if clear else ""))
        text += f". After {last} steps: {noise} {fid_text(a)} vs {data} {fid_text(b)}"
        deltas = [y - x for x, y in zip(a["per_seed"], b["per_seed"])]
        if len(deltas) > 1:
            text += (f"; paired over the common seeds, {data} − {noise} = "
                     f"{statistics.fmean(deltas):+.2f} ± {statistics.stdev(deltas):.2f} (std of "
                     f"the per-seed differences)")
        sentences.append(text + ".")
    return sentences


def figure(arch_cells: dict[str, dict[str, Any]], pairs: list[tuple[str, str]],
           checkpoints: list[int]) -> Any:
    """FID against fine-tuning steps: Noise-Easy solid, Data-Easy dashed, the full model dotted."""
    import plotly.graph_objects as go

    s = next(iter(arch_cells.values()))["settings"]
    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for p, (noise, data) in enumerate(pairs):
        colour = palette[p % len(palette)]
        for name, dash in ((noise, "solid"), (data, "dash")):
            steps = arch_cells[name]["steps"]
            ks = [k for k in checkpoints if str(k) in steps]
            fig.add_trace(go.Scatter(
                x=ks, y=[steps[str(k)]["fid_mean"] for k in ks], mode="lines+markers",
                name=name, line={"color": colour, "dash": dash},
                error_y={"type": "data", "visible": True,
                         "array": [steps[str(k)]["fid_std"] or 0.0 for k in ks]}))
    full = arch_cells.get("full", {}).get("steps", {}).get("0")
    if full:
        fig.add_hline(y=full["fid_mean"], line={"color": "#555", "dash": "dot"},
                      annotation_text=f"full model {fid_text(full)}")
    fig.update_layout(
        xaxis_title="fine-tuning steps (Algorithm 1)",
        yaxis_title=f"FID-MNIST (mean ± std over {len(s['seeds'])} seeds)",
        template="plotly_white", height=520,
        title=f"{s['model_name']}: Noise-Easy (solid) vs Data-Easy (dashed), "
              f"{s['sampler']['name']}-{s['sampler']['steps']}, N = {s['n']}")
    return fig


def section(arch_cells: dict[str, dict[str, Any]], html_name: str) -> tuple[str, Any]:
    """One model's text and figure from its cells (``name -> cell``)."""
    import pandas as pd

    pairs = [(n, n + DATA_EASY_SUFFIX) for n in arch_cells
             if n != "full" and not n.endswith(DATA_EASY_SUFFIX)
             and n + DATA_EASY_SUFFIX in arch_cells]
    names = [n for pair in pairs for n in pair]
    steps = {n: c["steps"] for n, c in arch_cells.items()}
    checkpoints = sorted({int(k) for n in names for k in steps[n]})
    complete = [k for k in checkpoints if all(str(k) in steps[n] for n in names)]
    s = next(c for n, c in arch_cells.items() if n != "full")["settings"] if names else \
        next(iter(arch_cells.values()))["settings"]
    full = steps.get("full", {}).get("0")
    runs = list(dict.fromkeys(
        f"Generated {c['machine']['date']} by `{c['command']}` on {machine_text(c['machine'])}."
        for c in arch_cells.values()))
    lines = [
        *runs, "",
        f"- model: {s['model_name']} ({s['arch']}, {s['depth']} exitable blocks), weights "
        f"`{s['weights']}` (sha256 {s['weights_sha256'][:12]})",
        f"- FID-MNIST (the project's digit-classifier features; not comparable with Inception "
        f"FID) of the EMA teacher, mean ± std over seeds {s['seeds']} (common random numbers: "
        f"every schedule and step count sees the same labels and noise), N = {s['n']} samples "
        f"per seed, sampler {s['sampler']['name']}-{s['sampler']['steps']}",
        f"- fine-tune (Algorithm 1, one trajectory per schedule, evaluated at steps "
        f"{', '.join(map(str, checkpoints))}): "
        + ", ".join(f"{k} {v}" for k, v in s["finetune"].items() if k != "steps")
        + " (constant learning rate, so resuming a trajectory at each checkpoint is exact)",
        "- step 0 is the shipped model without fine-tuning; the full model (no exits, no "
        "fine-tune) is the reference" + (f": FID **{fid_text(full)}**" if full else ""), "",
        "Same compute: a schedule and its mirror run the same counts over mirrored intervals, so "
        "they skip the same share of blocks over uniform t (the fine-tune's t) and, up to the "
        "sampler's time grid, over the sampling calls:", "",
    ]
    rows = [[n, f"`{info['intervals']}`", f"{info['uniform_block_acceleration']:.2%}",
             f"{info['sampler_block_acceleration']:.2%}", f"{info['predicted_acceleration']:.2%}"]
            for n in names for info in [arch_cells[n]["schedule"]]]
    lines += [markdown_table(pd.DataFrame(rows, columns=[
        "schedule", "[t interval): blocks", "block accel. (uniform t)", "block accel. (sampler)",
        "predicted accel. (cost model)"]), align=["left", "left", "right", "right", "right"])]
    minutes = sum(v["seconds"] for st in steps.values() for v in st.values()) / 60
    table = [[str(k), *(fid_text(steps[n].get(str(k))) for n in names)] for k in checkpoints]
    lines += ["", "## FID against fine-tuning steps", "",
              markdown_table(pd.DataFrame(table, columns=["steps", *names]),
                             align=["right"] * (len(names) + 1)),
              "", "## Verdict", "", *[f"- {v}" for v in verdict(pairs, steps, complete)], "",
              f"FID evaluations: {minutes:.1f} min over the cells (fine-tuning not counted; "
              f"cached cells cost nothing). Plot: `{html_name}`.", ""]
    return "\n".join(lines), figure(arch_cells, pairs, checkpoints)


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> Report:
    html_name = Path(json_name).with_suffix(".html").name
    by_arch = [{k.partition("/")[2]: c for k, c in cells.items() if k.partition("/")[0] == a}
               for a in ARCHS]
    sections = [section(arch_cells, html_name) for arch_cells in by_arch if arch_cells]
    title = "Noise-Easy vs Data-Easy (Appendix A.1)"
    return Report("\n".join([f"# {title}", "", *(text for text, _ in sections)]),
                  figures=[fig for _, fig in sections], title=title)


BENCHMARK = Benchmark(  # every trajectory depends on the weights it starts from
    name="noise_easy", doc=__doc__, params=Params, keys=keys, cell=trajectory, report=report,
    cell_identity=lambda params, key: {"weights_sha256": weights_sha256(params.weights())})


if __name__ == "__main__":
    run(BENCHMARK)
