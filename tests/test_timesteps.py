"""ase_search.timesteps: the dynamic programme against brute force, on a model whose truth is
known in closed form (Gaussian data, exact eps), and explicit timesteps through ``sample``."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from ase_search.diffusion import GaussianDiffusion
from ase_search.samplers import SamplerConfig, sample
from ase_search.timesteps import (
    decode_timesteps,
    dp_pair_timesteps,
    dp_timesteps,
    dpm_solver_step,
    encode_timesteps,
    load_timesteps,
    save_timesteps,
    search_timesteps,
)

SIGMA = 0.5  # data ~ N(0, SIGMA^2 I)


class GaussianEps(nn.Module):
    """The exact eps of Gaussian data: E[eps | x_t] = sqrt(1 - abar) x_t / (abar s^2 + 1 - abar).
    Latent-like (4 channels): DDIM does not clip, so every state is a scalar times x_T."""

    in_channels, input_size, learn_sigma, num_labels, null_class, exit_depth = 4, 4, False, 0, None, 1
    arch = "dit"

    def __init__(self) -> None:
        super().__init__()
        self.abar = torch.as_tensor(GaussianDiffusion().alphas_cumprod, dtype=torch.float64)

    def forward(self, x, t, y=None, n_blocks=None):
        a = self.abar[t.long()].to(x.dtype).view(-1, 1, 1, 1)
        return (1 - a).sqrt() * x / (a * SIGMA ** 2 + 1 - a)


def scalar_costs(nodes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The same objective, written out for scalars: state_i = c_i x_T along the teacher (DDIM
    through every node), a step's cost the squared scalar gap (times mean x_T^2, common to all)."""
    from diffusers import DDIMScheduler

    abar = DDIMScheduler(**{"num_train_timesteps": 1000, "trained_betas":
                            GaussianDiffusion().betas.tolist()}).alphas_cumprod.double().numpy()

    def eps(c, s):
        return np.sqrt(1 - abar[s]) * c / (abar[s] * SIGMA ** 2 + 1 - abar[s])

    def step(c, s, s_next):
        a, a_next = abar[s], (1.0 if s_next is None else abar[s_next])
        x0 = (c - np.sqrt(1 - a) * eps(c, s)) / np.sqrt(a)
        return np.sqrt(a_next) * x0 + np.sqrt(1 - a_next) * eps(c, s)

    c = [1.0]
    for s, s_next in zip(nodes, nodes[1:]):
        c.append(step(c[-1], s, s_next))
    end = step(c[-1], nodes[-1], None)
    G = len(nodes)
    cost = np.full((G, G), np.inf)
    for i in range(G):
        for j in range(i + 1, G):
            cost[i, j] = (step(c[i], nodes[i], nodes[j]) - c[j]) ** 2
    final = np.array([(step(c[i], nodes[i], None) - end) ** 2 for i in range(G)])
    start = np.array([(c[0] - c[i]) ** 2 for i in range(G)])  # x_T taken as the state at node i
    return cost, final, start


def brute_force(cost: np.ndarray, final: np.ndarray, steps: int,
                start: np.ndarray | None = None) -> list[int]:
    G = len(final)
    start = np.where(np.arange(G) == 0, 0.0, np.inf) if start is None else start
    paths = itertools.combinations(range(G), steps)
    return list(min(paths, key=lambda p: start[p[0]] + final[p[-1]]
                    + sum(cost[a, b] for a, b in zip(p, p[1:]))))


@pytest.mark.parametrize("steps", [2, 3, 4])
def test_the_search_finds_the_brute_force_optimum_on_gaussian_data(steps):
    grid = 10
    found = search_timesteps(GaussianEps(), steps, grid=grid, n=8, seed=0)[steps]
    uniform = [int(v) for v in SamplerConfig("ddim", steps).model_times()]
    nodes = sorted({int(v) for v in np.linspace(0, 999, grid).round()} | set(uniform),
                   reverse=True)
    cost, final, start = scalar_costs(nodes)
    best = brute_force(cost, final, steps, start)
    assert list(found.timesteps) == [nodes[i] for i in best]
    assert found.cost <= found.uniform_cost * (1 + 1e-6)  # the uniform path is on the grid


def test_dp_matches_brute_force_on_random_costs():
    rng = np.random.default_rng(0)
    for G, steps in ((7, 3), (8, 4), (6, 1)):
        cost = np.triu(rng.random((G, G)), k=1)
        cost[np.tril_indices(G)] = np.inf
        final = rng.random(G)
        path, value = dp_timesteps(cost, final, steps)
        assert path == brute_force(cost, final, steps)
        assert value == pytest.approx(sum(cost[a, b] for a, b in zip(path, path[1:]))
                                      + final[path[-1]])
        start = rng.random(G)
        path, value = dp_timesteps(cost, final, steps, start)
        assert path == brute_force(cost, final, steps, start)


def test_the_pair_dp_matches_brute_force_on_random_costs():
    """A multistep solver's programme: the cost of a step depends on the node before it."""
    rng = np.random.default_rng(1)
    for G, steps in ((7, 3), (8, 4), (6, 5), (6, 2), (5, 1)):
        i, j, k = np.indices((G, G, G))
        first = np.where(i[:, :, 0] < j[:, :, 0], rng.random((G, G)), np.inf)
        second = np.where((i < j) & (j < k), rng.random((G, G, G)), np.inf)
        final, start = rng.random(G), rng.random(G)

        def total(p):
            value = start[p[0]] + final[p[-1]]
            if len(p) > 1:
                value += first[p[0], p[1]]
            return value + sum(second[a, b, c] for a, b, c in zip(p, p[1:], p[2:]))

        path, value = dp_pair_timesteps(first, second, final, steps, start)
        best = min(itertools.combinations(range(G), steps), key=total)
        assert path == list(best) and value == pytest.approx(total(best))


def test_the_dpm_solver_step_is_diffusers_multistep_update():
    """dpm_solver_step (first order, then second) == DPMSolverMultistepScheduler as ase-search
    configures it, step by step, at uneven timesteps."""
    from diffusers import DPMSolverMultistepScheduler

    from ase_search.samplers._base import scheduler_kwargs
    from ase_search.samplers.dpm_solver import DPM_SOLVER_SETTINGS

    diffusion = GaussianDiffusion()
    scheduler = DPMSolverMultistepScheduler(**scheduler_kwargs(diffusion), **DPM_SOLVER_SETTINGS)
    timesteps = [950, 700, 420, 260, 90]
    scheduler.set_timesteps(timesteps=timesteps)
    bar = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    model = GaussianEps()
    data = []
    for i, s in enumerate(timesteps[:-1]):
        t = torch.full((3,), s)
        eps = model(x.float(), t).double()
        a, sig = bar[s].sqrt(), (1 - bar[s]).sqrt()
        data.append((x - sig * eps) / a)
        nxt = timesteps[i + 1]
        prev = timesteps[i - 1] if i else s
        alpha = (bar[prev].sqrt(), a, bar[nxt].sqrt())
        sigma = ((1 - bar[prev]).sqrt(), sig, (1 - bar[nxt]).sqrt())
        want = dpm_solver_step(x, data[-1], data[-2] if i else None, alpha, sigma)
        got = scheduler.step(eps.float(), s, x.float()).prev_sample.double()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        x = got


def test_dpm_solver_timesteps_are_searched_with_its_own_update():
    found = search_timesteps(GaussianEps(), [2, 3], sampler="dpm-solver", grid=12, n=4, seed=0)
    for k, r in found.items():
        assert len(r.timesteps) == k and list(r.timesteps) == sorted(r.timesteps, reverse=True)
        assert r.cost <= r.uniform_cost * (1 + 1e-9)  # the uniform spacing is a candidate
        assert r.sampler_config().name == "dpm-solver"
        out = sample(GaussianEps(), sampler=r.sampler_config(), n=2, seed=0)  # it runs
        assert torch.isfinite(out.images).all()


@pytest.mark.parametrize("name", ["ddim", "dpm-solver"])
def test_explicit_uniform_timesteps_are_the_spacing_bit_for_bit(name):
    from ase_search.models import create_model

    torch.manual_seed(0)
    model = create_model("DiT-test").eval()
    uniform = SamplerConfig(name, 5)
    explicit = SamplerConfig(name, 5, timesteps=tuple(int(s) for s in uniform.model_times()))
    a = sample(model, sampler=uniform, n=3, seed=1).images
    b = sample(model, sampler=explicit, n=3, seed=1).images
    assert torch.equal(a, b)
    other = SamplerConfig(name, 5, timesteps=(999, 700, 400, 150, 20))
    assert not torch.equal(sample(model, sampler=other, n=3, seed=1).images, a)


def test_timesteps_files_round_trip_and_bad_ones_are_refused(tmp_path):
    found = search_timesteps(GaussianEps(), 3, grid=10, n=4, seed=0)[3]
    path = save_timesteps(tmp_path / "ts.json", found, arch="dit")
    assert load_timesteps(path) == ("ddim", found.timesteps)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "ase-search timesteps", "sampler": "ddim",
                               "timesteps": [3, "x"]}))
    with pytest.raises(ValueError, match="list of integers"):
        load_timesteps(bad)
    with pytest.raises(ValueError, match="not found"):
        load_timesteps(tmp_path / "none.json")
    with pytest.raises(ValueError, match="strictly descending"):
        SamplerConfig("ddim", 3, timesteps=(100, 500, 0))
    with pytest.raises(ValueError, match="one timestep per step"):
        SamplerConfig("ddim", 2, timesteps=(999, 500, 0))


def test_the_dpm_solver_costs_are_its_steps_distances():
    """The expanded second-order costs == the distance of dpm_solver_step's result, computed
    step by step, for every triple (random states and outputs)."""
    from ase_search.timesteps import _dpm_solver_costs

    g = torch.Generator().manual_seed(3)
    nodes = [900, 720, 500, 330, 120]
    states = [torch.randn(2, 1, 3, 3, generator=g) for _ in nodes]
    outputs = [torch.randn(2, 1, 3, 3, generator=g) for _ in nodes]
    final = torch.randn(2, 1, 3, 3, generator=g)
    diffusion = GaussianDiffusion()
    first, second, last = _dpm_solver_costs(states, outputs, final, nodes, diffusion)
    bar = diffusion.alphas_cumprod.double()
    a = [float(bar[s].sqrt()) for s in nodes]
    sg = [float((1 - bar[s]).sqrt()) for s in nodes]
    d = [(s.double() - sg[n] * o.double()) / a[n] for n, (s, o) in enumerate(zip(states, outputs))]
    for i, j, k in itertools.combinations(range(len(nodes)), 3):
        x = dpm_solver_step(states[j].double(), d[j], d[i], (a[i], a[j], a[k]),
                            (sg[i], sg[j], sg[k]))
        assert second[i, j, k] == pytest.approx(float(((x - states[k]) ** 2).mean()), rel=1e-9)
    for j, k in itertools.combinations(range(len(nodes)), 2):
        x = dpm_solver_step(states[j].double(), d[j], None, (a[j], a[j], a[k]), (sg[j], sg[j], sg[k]))
        assert first[j, k] == pytest.approx(float(((x - states[k]) ** 2).mean()), rel=1e-9)
    assert last == pytest.approx([float(((x - final) ** 2).mean()) for x in d], rel=1e-9)
    assert np.isinf(second[2, 1, 3]) and np.isinf(first[3, 1])


@pytest.mark.parametrize("timesteps", [(999, 0), (800, 600, 400, 200, 0), (950, 700, 420, 260, 90),
                                       (727, 545, 414, 323, 242), (999, 998, 997)])
def test_the_fid_search_parameters_encode_every_descending_timesteps(timesteps):
    params = encode_timesteps(timesteps)
    assert all(0.0 < params[f"gap_{i}"] < 1.0 for i in range(1, len(timesteps) - 1))
    assert decode_timesteps(params, len(timesteps)) == timesteps


def test_fid_search_parameters_refuse_what_is_not_timesteps():
    for bad in [(500,), (0, 500), (500, 500, 0), (1000, 0)]:
        with pytest.raises(ValueError, match="distinct descending"):
            encode_timesteps(bad)
    # gaps that round two timesteps onto one decode to nothing (the search prunes them)
    assert decode_timesteps({"first": 3, "last": 0, "gap_1": 0.01, "gap_2": 0.5}, 4) is None
