"""Searched timesteps: the N model timesteps whose N-step sample stays closest to a many-step one.

Dynamic programming over a fine grid of candidate timesteps on the model's own teacher
trajectory, as GITS does (Chen et al., "On the Trajectory Regularity of ODE-based Diffusion
Sampling", ICML 2024): one many-step run of the sampler from calibration noise gives, at every
grid timestep ``g_i``, the teacher's state ``x_i`` and the model's output there. A step of the
sampler's own update rule from ``g_i`` to ``g_j`` (or to the end) then costs the mean squared
distance of its result to the teacher's state at ``g_j`` (or to the teacher's sample), computed
from the kept outputs without another model call; starting at ``g_i`` costs the distance of the
noise ``x_T`` (what a sampler starts from) to ``x_i``. The N timesteps minimise the sum. The grid
holds the uniform spacings' timesteps too, so the searched ones are never worse than those by
this measure.

DDIM (deterministic, ``eta = 0``) and DPM-Solver++ (2M) are searched here, each with its own
update (guidance included): DDIM's is the one sampling uses (:class:`ase_search.samplers.ddim
.DDIM`); DPM-Solver++'s second-order step from ``g_j`` to ``g_k`` also reads the output at the
previous node ``g_i``, so its programme runs over pairs of nodes (:func:`dp_pair_timesteps`),
with the first step of first order and the last one to the sample, as
``DPMSolverMultistepScheduler`` takes them. The result is a
:class:`~ase_search.samplers.SamplerConfig` with explicit ``timesteps``, which ``sample``,
``eval`` and studies take, and a JSON file (:func:`save_timesteps`).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ase_search.files import atomic_write_text

__all__ = ["OBJECTIVES", "SearchedTimesteps", "decode_timesteps", "dp_pair_timesteps",
           "dp_timesteps", "dpm_solver_step", "encode_timesteps", "fid_timesteps",
           "load_timesteps", "save_timesteps", "search_timesteps"]

FORMAT = "ase-search timesteps"
# what a search minimises: the distance to the teacher's trajectory (the dynamic programme), or
# FID on selection seeds (:func:`fid_timesteps`)
OBJECTIVES = ("teacher", "fid")


@dataclass(frozen=True)
class SearchedTimesteps:
    """The result of :func:`search_timesteps`.

    Attributes:
        sampler: the sampler name (``"ddim"``).
        timesteps: the N model timesteps, descending.
        cost: the objective at ``timesteps``: with ``objective="teacher"`` the summed step
            costs (mean squared distance to the teacher), with ``"fid"`` the mean FID over the
            selection seeds.
        uniform_cost: the same objective for the sampler's default spacing at N steps.
        grid: the candidate grid's size (the linspace grid and the uniform spacings' timesteps);
            the teacher runs through all of it (with ``"fid"``: the trials measured).
        calibration: calibration samples (per seed) and the (first) seed.
        objective: one of :data:`OBJECTIVES`.
    """

    sampler: str
    timesteps: tuple[int, ...]
    cost: float
    uniform_cost: float
    grid: int
    calibration: tuple[int, int]
    objective: str = "teacher"

    def sampler_config(self, cfg_scale: float = 1.0) -> Any:
        from ase_search.samplers import SamplerConfig

        return SamplerConfig(self.sampler, len(self.timesteps), cfg_scale=cfg_scale,
                             timesteps=self.timesteps)


def dp_timesteps(cost: np.ndarray, final: np.ndarray, steps: int,
                 start: np.ndarray | None = None) -> tuple[list[int], float]:
    """The cheapest path of ``steps`` grid nodes, then to the end.

    Args:
        cost: (G, G) cost of a step from node ``i`` to a later node ``j > i`` (``inf`` elsewhere).
        final: (G,) cost of the last step, from node ``i`` to the end.
        steps: N, the nodes visited (model calls), ``1 <= N <= G``.
        start: (G,) cost of starting at node ``i`` (``None``: only node 0, at no cost).

    Returns:
        The visited nodes (ascending: from the grid's top towards data) and the path's cost.
    """
    G = cost.shape[0]
    if not 1 <= steps <= G:
        raise ValueError(f"steps must lie in [1, {G}] (the grid's size), got {steps}")
    best = np.full((steps, G), math.inf)
    parent = np.full((steps, G), -1, dtype=np.int64)
    if start is None:
        best[0, 0] = 0.0
    else:
        best[0] = start
    for k in range(1, steps):
        # best[k, j] = min_i best[k-1, i] + cost[i, j]
        total = best[k - 1][:, None] + cost  # (G, G)
        parent[k] = np.argmin(total, axis=0)
        best[k] = total[parent[k], np.arange(G)]
    ends = best[steps - 1] + final
    node = int(np.argmin(ends))
    value = float(ends[node])
    path = [node]
    for k in range(steps - 1, 0, -1):
        node = int(parent[k, node])
        path.append(node)
    return path[::-1], value


def dp_pair_timesteps(first: np.ndarray, second: np.ndarray, final: np.ndarray, steps: int,
                      start: np.ndarray) -> tuple[list[int], float]:
    """The cheapest path of ``steps`` grid nodes when a step's cost depends on the node before
    it (a multistep solver's): the first step costs ``first[i, j]``, every later one from ``j``
    to ``k`` after ``i`` costs ``second[i, j, k]``, the last one ``final[k]``, starting at node
    ``i`` costs ``start[i]``; ``inf`` where the nodes do not increase.

    Returns:
        The visited nodes (ascending) and the path's cost.
    """
    G = first.shape[0]
    if not 1 <= steps <= G:
        raise ValueError(f"steps must lie in [1, {G}] (the grid's size), got {steps}")
    if steps == 1:
        node = int(np.argmin(start + final))
        return [node], float(start[node] + final[node])
    best = start[:, None] + first  # (G, G): best[i, j], the path's last two nodes i, j
    parents = []
    for _ in range(steps - 2):
        total = best[:, :, None] + second  # (G, G, G): previous pair (i, j), next node k
        parent = np.argmin(total, axis=0)  # (G, G): the best i for the pair (j, k)
        best = np.take_along_axis(total, parent[None], axis=0)[0]
        parents.append(parent)
    ends = best + final[None, :]
    i, j = np.unravel_index(int(np.argmin(ends)), ends.shape)
    value = float(ends[i, j])
    path = [int(j), int(i)]
    for parent in reversed(parents):
        i, j = int(parent[path[-1], path[-2]]), path[-1]
        path.append(i)
    return path[::-1], value


def dpm_solver_step(x: torch.Tensor, d: torch.Tensor, d_prev: torch.Tensor | None,
                    alpha: Sequence[float], sigma: Sequence[float]) -> torch.Tensor:
    """One step of DPM-Solver++ (2M, midpoint; ``DPMSolverMultistepScheduler``'s) from the
    state ``x`` at the current node to the next, given the data predictions ``d`` there and
    ``d_prev`` at the previous node (``None``: the first step, of first order).

    Args:
        alpha, sigma: ``sqrt(alphas_cumprod)`` and ``sqrt(1 - alphas_cumprod)`` at the previous,
            current and next node (the previous ones unused for a first-order step); numbers,
            or tensors that broadcast against ``x`` (e.g. ``(K, 1)`` next nodes for a flattened
            ``x``: K steps at once).
    """
    a0, a1, a2 = (torch.as_tensor(v, dtype=x.dtype) for v in alpha)
    s0, s1, s2 = (torch.as_tensor(v, dtype=x.dtype) for v in sigma)
    lam0, lam1, lam2 = torch.log(a0 / s0), torch.log(a1 / s1), torch.log(a2 / s2)
    h = lam2 - lam1
    x_next = (s2 / s1) * x - a2 * torch.expm1(-h) * d
    if d_prev is None:
        return x_next
    r0 = (lam1 - lam0) / h
    return x_next - 0.5 * a2 * torch.expm1(-h) * (d - d_prev) / r0


def _grid(num_timesteps: int, size: int) -> list[int]:
    """``size`` distinct integer timesteps, ``round(linspace(T - 1, 0, size))``."""
    grid = sorted({int(v) for v in np.linspace(0, num_timesteps - 1, size).round()}, reverse=True)
    if len(grid) != size:
        raise ValueError(f"a grid of {size} timesteps does not fit {num_timesteps} training "
                         f"timesteps")
    return grid


def search_timesteps(model: nn.Module, steps: int | Sequence[int], *, sampler: str = "ddim",
                     grid: int = 100, n: int = 64, seed: int = 10_000, cfg_scale: float = 1.0,
                     device: str | torch.device = "cpu",
                     progress: Callable[[str], None] | None = None
                     ) -> dict[int, SearchedTimesteps]:
    """Search the timesteps of ``sampler`` at each step count of ``steps`` on ``model``.

    Args:
        model: an ase-search DiT or U-ViT (full depth).
        steps: one step count or several (each searched on the same teacher run).
        sampler: ``"ddim"`` or ``"dpm-solver"`` (DPM-Solver++ 2M; the teacher is DDIM's either
            way, the many-step ODE trajectory).
        grid: candidate timesteps (and the teacher's steps): ``round(linspace(T - 1, 0, grid))``.
        n: calibration samples (their noise and labels drawn as ``sample`` draws them).
        seed: the calibration seed (keep it apart from evaluation seeds).
        cfg_scale: classifier-free guidance of the runs the timesteps are for.
        device: where to run.
        progress: called with a line per stage.

    Returns:
        step count -> :class:`SearchedTimesteps`.
    """
    from ase_search.diffusion import GaussianDiffusion
    from ase_search.samplers import SAMPLERS, SamplerConfig
    from ase_search.samplers._sample import _guided_model, _resolve_labels

    if sampler not in ("ddim", "dpm-solver"):
        raise ValueError(f"timesteps are searched for ddim and dpm-solver; got {sampler!r}")
    counts = [steps] if isinstance(steps, int) else list(steps)
    diffusion = GaussianDiffusion()
    T = diffusion.num_timesteps
    for k in counts:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= grid:
            raise ValueError(f"steps must be integers in [1, {grid}] (the grid), got {k!r}")
    uniform = {k: [int(v) for v in SamplerConfig(sampler, k).model_times(T)] for k in counts}
    nodes = sorted(set(_grid(T, grid)) | {s for u in uniform.values() for s in u}, reverse=True)
    grid = len(nodes)
    solver = SAMPLERS["ddim"]  # the teacher's, and DDIM's steps
    pixel = model.in_channels in (1, 3)
    scheduler = solver.build_scheduler(diffusion, learn_sigma=model.learn_sigma,
                                       clip_denoised=pixel, spacing="linspace")
    teacher_config = SamplerConfig("ddim", grid, cfg_scale=cfg_scale, timesteps=tuple(nodes))
    device = torch.device(device)
    model = model.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    labels = _resolve_labels(model, None, n, generator)
    shape = (model.in_channels, model.input_size, model.input_size)
    x = torch.stack([torch.randn(shape, generator=generator) for _ in range(n)]).to(device)
    y = None if labels is None else labels.to(device)
    forward = _guided_model(model, cfg_scale)
    step_generator = torch.Generator().manual_seed(seed)

    def step(out: torch.Tensor, s: int, s_next: int | None, state: torch.Tensor) -> torch.Tensor:
        return solver.step(scheduler, out, s, s_next, state, config=teacher_config,
                           generator=step_generator)

    if progress:
        progress(f"teacher: ddim-{grid} on {n} calibration samples (seed {seed})")
    states, outputs = [], []
    with torch.no_grad():
        for i, s in enumerate(nodes):
            t = torch.full((n,), s, dtype=torch.long, device=device)
            out = forward(x, t, y, None, None).float()
            states.append(x)
            outputs.append(out)
            x = step(out, s, nodes[i + 1] if i + 1 < grid else None, x)
        final = x
        if progress:
            progress(f"step costs: {grid * (grid - 1) // 2 + grid} candidate steps")
        G = grid
        start = np.array([float(((states[0] - states[i]) ** 2).mean()) for i in range(G)])
        if sampler == "ddim":
            cost = np.full((G, G), math.inf)
            last = np.empty(G)
            for i in range(G):
                for j in range(i + 1, G):
                    moved = step(outputs[i], nodes[i], nodes[j], states[i])
                    cost[i, j] = float(((moved - states[j]) ** 2).mean())
                last[i] = float(((step(outputs[i], nodes[i], None, states[i]) - final) ** 2)
                                .mean())
        else:
            first, second, last = _dpm_solver_costs(states, outputs, final, nodes, diffusion)
    results = {}
    for k in counts:
        on_grid = [nodes.index(s) for s in uniform[k]]
        if sampler == "ddim":
            path, value = dp_timesteps(cost, last, k, start)
            uniform_cost = (start[on_grid[0]] + last[on_grid[-1]]
                            + sum(cost[a, b] for a, b in zip(on_grid, on_grid[1:])))
        else:
            path, value = dp_pair_timesteps(first, second, last, k, start)
            uniform_cost = (start[on_grid[0]] + last[on_grid[-1]]
                            + (first[on_grid[0], on_grid[1]] if k > 1 else 0.0)
                            + sum(second[a, b, c] for a, b, c
                                  in zip(on_grid, on_grid[1:], on_grid[2:])))
        results[k] = SearchedTimesteps(sampler, tuple(nodes[p] for p in path), value,
                                       float(uniform_cost), grid, (n, seed))
        if progress:
            progress(f"{sampler}-{k}: {list(results[k].timesteps)} (cost {value:.3g}; uniform "
                     f"{results[k].uniform_cost:.3g})")
    return results


def _dpm_solver_costs(states: list[torch.Tensor], outputs: list[torch.Tensor],
                      final: torch.Tensor, nodes: list[int], diffusion: Any
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DPM-Solver++ (2M)'s step costs on the teacher trajectory: ``first[j, k]`` (a first
    step), ``second[i, j, k]`` (a step from ``j`` to ``k`` after ``i``) and ``last[k]`` (to the
    sample: its data prediction), each the mean squared distance to the teacher's state.

    A second-order step is the first-order one plus ``C_ijk (d_j - d_i)``
    (:func:`dpm_solver_step`), so its squared distance expands into inner products: one matrix
    product per ``j`` instead of a tensor per ``(i, j, k)``."""
    G = len(nodes)
    bar = diffusion.alphas_cumprod[nodes].double()  # (G,)
    alpha, sigma = bar.sqrt(), (1.0 - bar).sqrt()
    lam = torch.log(alpha / sigma)
    flat = torch.stack([s.flatten() for s in states]).double()  # (G, M)
    M = flat.shape[1]
    channels = states[0].shape[1]
    data = torch.stack([((s.double() - sigma[i] * o[:, :channels].double()) / alpha[i]).flatten()
                        for i, (s, o) in enumerate(zip(states, outputs))])  # (G, M)
    gram = data @ data.T  # (G, G)
    first = np.full((G, G), math.inf)
    second = np.full((G, G, G), math.inf)
    last = ((data - final.flatten().double()) ** 2).mean(1).numpy()
    for j in range(G - 1):
        k = torch.arange(j + 1, G)
        base = dpm_solver_step(flat[j], data[j], None, (alpha[j], alpha[j], alpha[k, None]),
                               (sigma[j], sigma[j], sigma[k, None])) - flat[k]  # (K, M)
        bb = (base ** 2).sum(1)  # (K,)
        first[j, j + 1:] = (bb / M).numpy()
        if j == 0:
            continue
        i = torch.arange(j)
        h = lam[k] - lam[j]  # (K,)
        # C_ijk = -1/2 alpha_k expm1(-h_jk) / r0, r0 = (lam_j - lam_i) / h_jk: (j, K)
        c = -0.5 * alpha[k] * torch.expm1(-h) * h / (lam[j] - lam[i])[:, None]
        b_dot_v = (base @ data[j])[None, :] - (data[i] @ base.T)  # <base_k, d_j - d_i>: (j, K)
        vv = gram[j, j] + gram[i, i] - 2.0 * gram[i, j]  # ||d_j - d_i||^2: (j,)
        second[:j, j, j + 1:] = ((bb[None, :] + 2.0 * c * b_dot_v + c ** 2 * vv[:, None])
                                 / M).clamp_min(0.0).numpy()
    return first, second, last


def encode_timesteps(timesteps: Sequence[int], num_timesteps: int = 1000) -> dict[str, float]:
    """The parameters of :func:`fid_timesteps`'s search that decode to ``timesteps``
    (descending, at least two): the first and the last, and each inner one as the share of the
    way it goes from the one before it down to the last (``gap_i``)."""
    ts = [int(v) for v in timesteps]
    if len(ts) < 2 or any(a <= b for a, b in zip(ts, ts[1:])) or ts[-1] < 0 or (
            ts[0] >= num_timesteps):
        raise ValueError(f"timesteps must be at least two distinct descending integers in "
                         f"[0, {num_timesteps - 1}], got {ts}")
    last = ts[-1]
    params: dict[str, float] = {"first": ts[0], "last": last}
    for i in range(1, len(ts) - 1):
        params[f"gap_{i}"] = (ts[i - 1] - ts[i]) / (ts[i - 1] - last)
    return params


def decode_timesteps(params: dict[str, float], steps: int) -> tuple[int, ...] | None:
    """The timesteps :func:`encode_timesteps` encodes (rounded); ``None`` where rounding makes
    two of them equal."""
    last = int(params["last"])
    ts = [int(params["first"])]
    for i in range(1, steps - 1):
        ts.append(int(round(ts[-1] - params[f"gap_{i}"] * (ts[-1] - last))))
    ts.append(last)
    if any(a <= b for a, b in zip(ts, ts[1:])):
        return None
    return tuple(ts)


def fid_timesteps(model: nn.Module, steps: int | Sequence[int], *, sampler: str = "ddim",
                  trials: int = 60, n: int = 500, seeds: Sequence[int] = (10_000, 10_001),
                  reference: str = "mnist", cfg_scale: float = 1.0,
                  device: str | torch.device = "cpu",
                  progress: Callable[[str], None] | None = None
                  ) -> dict[int, SearchedTimesteps]:
    """Search the timesteps of ``sampler`` at each step count by the FID of the samples they give
    (Optuna's multivariate TPE over the first and last timestep and the inner gaps, as
    :func:`encode_timesteps` parametrises them), as AutoDiffusion searches timesteps by a sample
    quality score (Li et al., "AutoDiffusion: Training-Free Optimization of Time Steps and
    Architectures for Automated Diffusion Model Acceleration", ICCV 2023).

    The teacher-distance programme (:func:`search_timesteps`) rewards the conditional mean: on
    the testbeds its paths stop short of the data end and lose FID to uniform spacing. This
    search measures what a user compares instead. Its first trials are the uniform spacing and
    the programme's timesteps. FID is measured on ``seeds`` alone (keep them apart from the seeds
    a verdict is judged on: the search selects on them).

    Args:
        model: an ase-search DiT or U-ViT in pixel space (full depth).
        steps: one step count (>= 2) or several (each searched on its own).
        sampler: ``"ddim"`` or ``"dpm-solver"``.
        trials: FID measurements per step count (the first two are the seeds above).
        n: samples per seed.
        seeds: the selection seeds (common random numbers: every trial draws the same noise).
        reference: FID reference data (``"mnist"`` or a folder of images).
        cfg_scale: classifier-free guidance of the runs the timesteps are for.
        device: where to run.
        progress: called with a line per trial.

    Returns:
        step count -> :class:`SearchedTimesteps` (``objective="fid"``; ``grid``: trials run).
    """
    import optuna

    from ase_search.measure import measure_schedule
    from ase_search.metrics.latency import profile_components
    from ase_search.samplers import SamplerConfig

    if model.in_channels not in (1, 3):
        raise ValueError("the FID objective samples images: it is for pixel-space models; "
                         "search a latent model's timesteps with the teacher objective")
    counts = [steps] if isinstance(steps, int) else list(steps)
    for k in counts:
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ValueError(f"steps must be integers >= 2, got {k!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 2:
        raise ValueError(f"trials must be an integer >= 2, got {trials!r}")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must list at least one selection seed")
    T = 1000
    cost_model = profile_components(model, device=str(device))  # once: no trial reads it
    results = {}
    for k in counts:
        measured: dict[tuple[int, ...], float] = {}

        def fid(ts: tuple[int, ...], k: int = k) -> float:
            if ts not in measured:
                config = SamplerConfig(sampler, k, cfg_scale=cfg_scale, timesteps=ts)
                m = measure_schedule(model, None, sampler=config, n=n, seeds=seeds,
                                     reference=reference, cost_model=cost_model, device=device,
                                     keep_images=0)
                measured[ts] = float(np.mean([row["fid"] for row in m.metrics]))
                if progress:
                    progress(f"{sampler}-{k} trial {len(measured)}/{trials}: {list(ts)} FID "
                             f"{measured[ts]:.3f}")
            return measured[ts]

        def objective(trial: Any, k: int = k) -> float:
            params = {"first": trial.suggest_int("first", T // 2, T - 1),
                      "last": trial.suggest_int("last", 0, T // 3)}
            for i in range(1, k - 1):
                params[f"gap_{i}"] = trial.suggest_float(f"gap_{i}", 0.02, 0.98)
            ts = decode_timesteps(params, k)
            if ts is None:
                raise optuna.TrialPruned("two timesteps round to one")
            trial.set_user_attr("timesteps", list(ts))
            return fid(ts)

        uniform = tuple(int(v) for v in SamplerConfig(sampler, k).model_times(T))
        programme = search_timesteps(model, k, sampler=sampler, cfg_scale=cfg_scale,
                                     device=device)[k].timesteps
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial is ours
        try:
            with warnings.catch_warnings():  # multivariate TPE is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                tpe = optuna.samplers.TPESampler(seed=seeds[0], multivariate=True,
                                                 n_startup_trials=min(10, trials))
            study = optuna.create_study(sampler=tpe)
            for ts in dict.fromkeys((uniform, programme)):
                params = encode_timesteps(ts, T)
                if params["first"] >= T // 2 and params["last"] <= T // 3:  # inside the space
                    study.enqueue_trial(params)
            study.optimize(objective, n_trials=trials)
        finally:
            optuna.logging.set_verbosity(verbosity)
        best = min(measured, key=measured.__getitem__)
        results[k] = SearchedTimesteps(sampler, best, measured[best], fid(uniform), len(measured),
                                       (n, seeds[0]), "fid")
    return results


def save_timesteps(path: str | Path, result: SearchedTimesteps, *, arch: str,
                   checkpoint: str | None = None) -> Path:
    """Write ``result`` as JSON (atomically): what ``--timesteps FILE`` reads."""
    data = {"format": FORMAT, "version": 1, "arch": arch, "sampler": result.sampler,
            "steps": len(result.timesteps), "timesteps": list(result.timesteps),
            "cost": result.cost, "uniform_cost": result.uniform_cost, "grid": result.grid,
            "calibration": {"n": result.calibration[0], "seed": result.calibration[1]},
            "objective": result.objective, "checkpoint": checkpoint}
    atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")
    return Path(path)


def load_timesteps(path: str | Path) -> tuple[str, tuple[int, ...]]:
    """``(sampler, timesteps)`` from a file :func:`save_timesteps` wrote.

    Raises:
        ValueError: a missing or malformed file (the message says which).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"timesteps file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{path} is not a timesteps JSON file ({type(err).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an ase-search timesteps file (written by `ase-search "
                         f"timesteps`)")
    ts = data.get("timesteps")
    if not isinstance(ts, list) or not ts or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in ts):
        raise ValueError(f"{path}: timesteps must be a non-empty list of integers")
    sampler = data.get("sampler")
    if sampler not in ("ddim", "dpm-solver"):
        raise ValueError(f"{path}: sampler must be ddim or dpm-solver, got {sampler!r}")
    return sampler, tuple(ts)
