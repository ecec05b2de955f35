"""Samplers driven by the exact eps of Gaussian data, against closed forms.

For ``x_0 ~ N(mu, diag(s^2))`` the forward marginal is ``x_t ~ N(sqrt(abar) mu, abar s^2 + 1 - abar)``
and the optimal noise prediction is ``E[eps | x_t] = (x_t - sqrt(abar) mu) sqrt(1 - abar) /
(abar s^2 + 1 - abar)``. Three checks:

* with enough steps every sampler returns (close to) ``N(mu, s^2)``;
* deterministic samplers (DDIM with eta = 0, DPM-Solver++ 2M) match, sample by sample, a float64
  re-implementation of their update rules from the papers (not from diffusers);
* stochastic samplers (DDPM, DDIM with eta = 1, Euler-Maruyama) with few steps match the exact
  Gaussian their affine updates produce (mean and variance propagated in closed form).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ase_search.diffusion import GaussianDiffusion
from ase_search.samplers import SamplerConfig, sample

DIFFUSION = GaussianDiffusion()
T = DIFFUSION.num_timesteps
ACP = DIFFUSION.alphas_cumprod  # float64
# Narrow enough that clipping the predicted x_0 to [-1, 1] practically never triggers.
MU = torch.tensor([0.1, -0.1, 0.0, 0.05], dtype=torch.float64)
STD = torch.tensor([0.3, 0.2, 0.25, 0.15], dtype=torch.float64)


pytestmark = pytest.mark.usefixtures("one_thread")


def exact_eps(x: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """``E[eps | x_t]`` for the Gaussian data above; ``x`` is ``(N, 4)``, ``abar`` broadcasts."""
    return (x - abar.sqrt() * MU) * (1 - abar).sqrt() / (abar * STD**2 + 1 - abar)


class GaussianEps(nn.Module):
    """The closed-form eps predictor, behind the ase-search model interface (4 dims as 1x2x2)."""

    arch = "dit"
    exit_depth = 4
    in_channels = 1
    input_size = 2
    num_labels = 0
    null_class = None

    def __init__(self, *, continuous: bool = False, learn_sigma: bool = False) -> None:
        super().__init__()
        # Discrete samplers pass integer timesteps of the training chain; Euler-Maruyama passes
        # s = t (T - 1) for continuous VP-SDE time t, whose marginal is abar(t) = exp(-int beta).
        self.continuous = continuous
        self.learn_sigma = learn_sigma
        self.first_x: list[torch.Tensor] = []  # x_T at the first call, to replay deterministic runs

    def forward(self, x, t, y=None, n_blocks=None):
        if self.continuous:
            abar = DIFFUSION.vp_alpha_bar(t.double() / (T - 1))
        else:
            abar = ACP[t.long()]
        if not self.first_x:
            self.first_x.append(x.clone())
        eps = exact_eps(x.double().view(-1, 4), abar.view(-1, 1)).float().view_as(x)
        if self.learn_sigma:
            # v = -1 is the posterior variance, the same as "fixed_small".
            return torch.cat([eps, -torch.ones_like(eps)], dim=1)  # (N, 2, 2, 2)
        return eps  # (N, 1, 2, 2)


def draw(model: GaussianEps, config: SamplerConfig, n: int, seed: int = 1) -> torch.Tensor:
    return sample(model, sampler=config, n=n, batch_size=n, seed=seed).images.double().view(-1, 4)


# ---------------------------------------------------------------------------- recovery
@pytest.mark.parametrize(
    "config",
    [
        SamplerConfig("ddpm", 1000),
        SamplerConfig("ddim", 500),
        SamplerConfig("dpm-solver", 250),
        SamplerConfig("euler-maruyama", 500),
    ],
    ids=lambda c: f"{c.name}-{c.steps}",
)
def test_sampler_recovers_gaussian(config):
    x = draw(GaussianEps(continuous=config.name == "euler-maruyama"), config, n=8000)
    # 8000 samples: standard error <= 0.0035 on the mean and 0.8 % on the std; the rest of the
    # tolerance is the solvers' discretisation bias at these step counts (about 2 % at most).
    torch.testing.assert_close(x.mean(0), MU, atol=0.015, rtol=0)
    torch.testing.assert_close(x.std(0) / STD, torch.ones(4, dtype=torch.float64), atol=0.04,
                               rtol=0)


# ------------------------------------------------- deterministic: sample-by-sample reference
def reference_ddim(x: torch.Tensor, times: list[int]) -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12) with eta = 0 and x_0 clipped to [-1, 1], float64."""
    for i, t in enumerate(times):
        a = ACP[t]
        a_prev = ACP[times[i + 1]] if i + 1 < len(times) else torch.tensor(1.0, dtype=torch.float64)
        eps = exact_eps(x, a)
        x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x.clamp(-1, 1)


def reference_dpm_solver_2m(x: torch.Tensor, times: list[int]) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), first order at the first and last step.

    The last step goes to sigma = 0, where the update reduces to the predicted x_0.
    """
    def lam(a):  # half log-SNR, lambda_t = log(alpha_t / sigma_t)
        return 0.5 * torch.log(a / (1 - a))

    prev_x0, prev_h = None, None
    for i, t in enumerate(times):
        a = ACP[t]
        x0 = (x - (1 - a).sqrt() * exact_eps(x, a)) / a.sqrt()
        if i == len(times) - 1:
            return x0.clamp(-1, 1)
        a_next = ACP[times[i + 1]]
        h = lam(a_next) - lam(a)
        if prev_x0 is None:
            d = x0
        else:
            r = prev_h / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev_x0
        x = ((1 - a_next) / (1 - a)).sqrt() * x - a_next.sqrt() * torch.expm1(-h) * d
        prev_x0, prev_h = x0, h
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("config", "reference"),
    [
        (SamplerConfig("ddim", 10), reference_ddim),
        (SamplerConfig("ddim", 37), reference_ddim),
        (SamplerConfig("dpm-solver", 10), reference_dpm_solver_2m),
        (SamplerConfig("dpm-solver", 25), reference_dpm_solver_2m),
    ],
    ids=["ddim-10", "ddim-37", "dpm-solver-10", "dpm-solver-25"],
)
def test_deterministic_sampler_matches_reference_per_sample(config, reference):
    model = GaussianEps()
    x = draw(model, config, n=2000)
    x_T = model.first_x[0].double().view(-1, 4)
    times = [int(s) for s in config.model_times(T)]
    torch.testing.assert_close(x, reference(x_T, times), atol=2e-4, rtol=0)


# ------------------------------------------------- stochastic: exact Gaussian propagation
def propagate_discrete(times: list[int], eta: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of DDPM (``eta=None``) or DDIM(eta) output, without clipping.

    Each step is affine in x plus independent Gaussian noise, so x stays Gaussian:
    ``x' = P x + Q + sqrt(V) z`` gives ``m' = P m + Q`` and ``v' = P^2 v + V``.
    """
    m, v = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    for i, t in enumerate(times):
        a = ACP[t]
        a_prev = ACP[times[i + 1]] if i + 1 < len(times) else torch.tensor(1.0, dtype=torch.float64)
        k = (1 - a).sqrt() / (a * STD**2 + 1 - a)  # eps = k x - k sqrt(a) mu
        p0 = (1 - (1 - a).sqrt() * k) / a.sqrt()  # x0 = p0 x + q0
        q0 = (1 - a).sqrt() * k * MU
        if eta is None:  # DDPM posterior mean and variance (Ho et al. 2020, Eq. 6-7)
            beta = 1 - a / a_prev
            c1 = a_prev.sqrt() * beta / (1 - a)
            c2 = (a / a_prev).sqrt() * (1 - a_prev) / (1 - a)
            p, q = c1 * p0 + c2, c1 * q0
            noise_var = (1 - a_prev) / (1 - a) * beta if i + 1 < len(times) else 0.0
        else:  # DDIM (Song et al. 2021, Eq. 12 and 16)
            noise_var = eta**2 * (1 - a_prev) / (1 - a) * (1 - a / a_prev)
            direction = (1 - a_prev - noise_var).sqrt()
            p = a_prev.sqrt() * p0 + direction * k
            q = a_prev.sqrt() * q0 - direction * k * a.sqrt() * MU
        m, v = p * m + q, p**2 * v + noise_var
    return m, v


def propagate_euler_maruyama(config: SamplerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance after Euler-Maruyama on the reverse VP SDE with the exact score."""
    m, v = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    ts = [float(t) for t in config.continuous_times()] + [0.0]
    for t, t_next in zip(ts, ts[1:]):
        beta = 0.1 + t * (20.0 - 0.1)
        a = torch.tensor(math.exp(-(0.1 * t + 0.5 * (20.0 - 0.1) * t * t)), dtype=torch.float64)
        k = (1 - a).sqrt() / (a * STD**2 + 1 - a)  # eps = k x - k sqrt(a) mu; score = -eps / sigma
        sigma = (1 - a).sqrt()
        dt = t_next - t
        p = 1 + (-0.5 * beta + beta * k / sigma) * dt
        q = -beta * k * a.sqrt() * MU / sigma * dt
        noise_var = beta * -dt if t_next > 0 else 0.0
        m, v = p * m + q, p**2 * v + noise_var
    return m, v


@pytest.mark.parametrize(
    ("config", "learn_sigma"),
    [
        (SamplerConfig("ddpm", 20), False),
        (SamplerConfig("ddpm", 20), True),
        (SamplerConfig("ddim", 10, eta=1.0), False),
        (SamplerConfig("euler-maruyama", 40), False),
    ],
    ids=["ddpm-20-fixed-small", "ddpm-20-learned-range", "ddim-10-eta1", "em-40"],
)
def test_stochastic_sampler_matches_exact_gaussian(config, learn_sigma):
    n = 20000
    model = GaussianEps(continuous=config.name == "euler-maruyama", learn_sigma=learn_sigma)
    x = draw(model, config, n=n)
    if config.name == "euler-maruyama":
        m, v = propagate_euler_maruyama(config)
    else:
        m, v = propagate_discrete([int(s) for s in config.model_times(T)],
                                  config.eta if config.name == "ddim" else None)
    std = v.sqrt()
    # With this few steps the output is visibly not N(mu, s^2), so the check has teeth.
    assert (std / STD - 1).abs().max() > 0.03 or (m - MU).abs().max() > 0.01
    # Standard errors: std / sqrt(n) on the mean, std / sqrt(2 n) on the std; allow ~4.5 of them.
    torch.testing.assert_close(x.mean(0), m, atol=float(4.5 * std.max() / math.sqrt(n)), rtol=0)
    torch.testing.assert_close(x.std(0) / std, torch.ones(4, dtype=torch.float64),
                               atol=4.5 / math.sqrt(2 * n), rtol=0)
