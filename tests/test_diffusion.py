"""GaussianDiffusion against closed forms and independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.distributions import Normal, kl_divergence

from ase_search.diffusion import (
    GaussianDiffusion,
    discretized_gaussian_log_likelihood,
    normal_kl,
)

D = GaussianDiffusion()


# --------------------------------------------------------------------------------- schedule
def test_linear_schedule_values():
    assert D.num_timesteps == 1000 and D.betas.dtype == torch.float64
    assert D.betas[0].item() == pytest.approx(1e-4) and D.betas[-1].item() == pytest.approx(0.02)
    expected = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(D.alphas_cumprod.numpy(), expected, rtol=1e-12)
    # The well-known end point of the linear schedule: abar_T ~ 4.04e-5 (SNR ~ 4e-5).
    assert D.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-4)


def test_schedule_is_rescaled_for_other_t():
    d = GaussianDiffusion(num_timesteps=250)
    assert d.betas[0].item() == pytest.approx(4e-4) and d.betas[-1].item() == pytest.approx(0.08)
    # Rescaling keeps the final noise level close to T = 1000's.
    assert d.alphas_cumprod[-1].item() == pytest.approx(D.alphas_cumprod[-1].item(), rel=0.3)


@pytest.mark.parametrize("bad", [1, 0, 2.5, True, "1000"])
def test_bad_num_timesteps(bad):
    with pytest.raises(ValueError, match="num_timesteps"):
        GaussianDiffusion(num_timesteps=bad)


def test_sample_timesteps():
    g = torch.Generator().manual_seed(0)
    t = D.sample_timesteps(20000, g)
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 999
    assert abs(t.double().mean().item() - 499.5) < 10  # uniform: sd of the mean ~ 2
    assert torch.equal(t[:50], D.sample_timesteps(50, torch.Generator().manual_seed(0)))


# -------------------------------------------------------------------------- forward process
def test_q_sample_is_the_closed_form_marginal():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(6, 3, 4, 4, generator=g)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    expected = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))[t.numpy()]
    a = torch.tensor(expected).view(-1, 1, 1, 1)
    ref = (a.sqrt() * x0.double() + (1 - a).sqrt() * noise.double()).float()
    torch.testing.assert_close(D.q_sample(x0, t, noise), ref, atol=1e-6, rtol=0)


def test_q_sample_monte_carlo_moments():
    g = torch.Generator().manual_seed(1)
    n = 200_000
    x0 = torch.full((n, 1, 1, 1), 0.7)
    for step in (50, 400):
        t = torch.full((n,), step)
        x_t = D.q_sample(x0, t, torch.randn(n, 1, 1, 1, generator=g)).double()
        a = D.alphas_cumprod[step].item()
        assert x_t.mean().item() == pytest.approx(math.sqrt(a) * 0.7, abs=4 / math.sqrt(n))
        assert x_t.var().item() == pytest.approx(1 - a, rel=4 * math.sqrt(2 / n))


def test_x0_and_eps_conversions_invert_q_sample():
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 3, 100, 700, 999])
    x_t = D.q_sample(x0, t, eps)
    torch.testing.assert_close(D.predict_x0_from_eps(x_t, t, eps), x0, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(D.predict_eps_from_x0(x_t, t, x0), eps, atol=1e-8, rtol=1e-8)


def test_q_posterior_is_bayes_rule():
    """q(x_{t-1} | x_t, x_0) from q(x_{t-1} | x_0) q(x_t | x_{t-1}) by completing the square."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 1, 2, 2, generator=g, dtype=torch.float64)
    x_t = torch.randn(4, 1, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 20, 500, 999])
    mean, var, log_var = D.q_posterior_mean_variance(x0, x_t, t)
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    for i, step in enumerate(t.tolist()):
        prior_mean, prior_var = math.sqrt(abar[step - 1]) * x0[i], 1 - abar[step - 1]
        lik_scale, lik_var = math.sqrt(1 - betas[step]), betas[step]
        post_var = 1 / (1 / prior_var + lik_scale**2 / lik_var)
        post_mean = post_var * (prior_mean / prior_var + lik_scale * x_t[i] / lik_var)
        torch.testing.assert_close(mean[i], post_mean, atol=1e-10, rtol=1e-10)
        assert var[i].item() == pytest.approx(post_var, rel=1e-10)
        assert log_var[i].item() == pytest.approx(math.log(post_var), rel=1e-10)


def test_posterior_log_variance_at_t0_uses_t1():
    assert D.posterior_variance[0].item() == 0.0
    assert D.posterior_log_variance_clipped[0] == D.posterior_log_variance_clipped[1]
    assert torch.isfinite(D.posterior_log_variance_clipped).all()


def test_learned_range_interpolates_log_variances():
    t = torch.tensor([5, 5, 5])
    v = torch.tensor([-1.0, 1.0, 0.0], dtype=torch.float64).view(3, 1, 1, 1)
    log_var = D.model_log_variance(v, t).view(3)
    lo, hi = math.log(D.posterior_variance[5].item()), math.log(D.betas[5].item())
    torch.testing.assert_close(log_var, torch.tensor([lo, hi, (lo + hi) / 2],
                                                     dtype=torch.float64))


# ---------------------------------------------------------------------------- likelihoods
def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(4)
    m1, m2 = torch.randn(100, generator=g, dtype=torch.float64), torch.randn(100, generator=g, dtype=torch.float64)
    lv1, lv2 = torch.randn(100, generator=g, dtype=torch.float64), torch.randn(100, generator=g, dtype=torch.float64)
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected, atol=1e-10, rtol=1e-10)


def test_discretized_likelihood_matches_scipy_and_normalises():
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)  # the 256 pixel values in [-1, 1]
    mean, log_scale = 0.13, math.log(0.2)
    logp = discretized_gaussian_log_likelihood(bins, means=torch.tensor(mean, dtype=torch.float64),
                                               log_scales=torch.tensor(log_scale, dtype=torch.float64))
    z = stats.norm(mean, 0.2)
    edges = np.concatenate([[-np.inf], (bins[:-1].numpy() + bins[1:].numpy()) / 2, [np.inf]])
    expected = np.log(z.cdf(edges[1:]) - z.cdf(edges[:-1]))
    np.testing.assert_allclose(logp.numpy(), expected, rtol=1e-6, atol=1e-9)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


# ---------------------------------------------------------------------------------- losses
def make_batch(seed: int = 5, t=(0, 1, 37, 400, 999)):
    g = torch.Generator().manual_seed(seed)
    n = len(t)
    x0 = (torch.randint(0, 256, (n, 2, 4, 4), generator=g).double() / 127.5 - 1)
    noise = torch.randn(n, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor(t)
    return x0, D.q_sample(x0, t, noise), t, noise


def test_vb_is_zero_when_the_model_predicts_the_true_posterior():
    x0, x_t, t, noise = make_batch(t=(1, 2, 37, 400, 999))
    # eps = the true noise recovers x0 exactly; v = -1 picks the posterior variance.
    out = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    losses = D.training_losses(out, x0, x_t, t, noise)
    torch.testing.assert_close(losses["vb"], torch.zeros(5, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(losses["mse"], torch.zeros(5, dtype=torch.float64))
    # Any other variance costs bits (little at large t, where beta_t and beta~_t nearly agree).
    worse = D.training_losses(torch.cat([noise, torch.zeros_like(noise)], dim=1), x0, x_t, t, noise)
    assert (worse["vb"] > 0).all() and (worse["vb"][:3] > 1e-5).all()


def test_vb_is_the_kl_between_gaussians_in_bits():
    x0, x_t, t, noise = make_batch(t=(3, 50, 600))
    g = torch.Generator().manual_seed(6)
    eps = noise + 0.3 * torch.randn(noise.shape, generator=g, dtype=torch.float64)
    v = torch.rand(noise.shape, generator=g, dtype=torch.float64) * 2 - 1
    vb = D.training_losses(torch.cat([eps, v], 1), x0, x_t, t, noise)["vb"]
    true_mean, true_var, _ = D.q_posterior_mean_variance(x0, x_t, t)
    model_x0 = D.predict_x0_from_eps(x_t, t, eps)
    model_mean, _, _ = D.q_posterior_mean_variance(model_x0, x_t, t)
    model_var = D.model_log_variance(v, t).exp()
    kl = kl_divergence(Normal(true_mean, true_var.sqrt().expand_as(true_mean)),
                       Normal(model_mean, model_var.sqrt()))
    torch.testing.assert_close(vb, kl.mean(dim=(1, 2, 3)) / math.log(2), atol=1e-9, rtol=1e-9)


def test_vb_at_t0_is_the_decoder_nll():
    x0, x_t, t, noise = make_batch(t=(0, 0))
    g = torch.Generator().manual_seed(7)
    eps = noise + 0.5 * torch.randn(noise.shape, generator=g, dtype=torch.float64)
    v = torch.zeros_like(noise)
    vb = D.training_losses(torch.cat([eps, v], 1), x0, x_t, t, noise)["vb"]
    # At t = 0 the model mean is (x_0 prediction's) posterior mean and sigma^2 = exp(log var).
    model_mean, _, _ = D.q_posterior_mean_variance(D.predict_x0_from_eps(x_t, t, eps), x_t, t)
    std = D.model_log_variance(v, t).exp().sqrt().numpy()
    lo = np.where(x0.numpy() < -0.999, -np.inf, x0.numpy() - 1 / 255)
    hi = np.where(x0.numpy() > 0.999, np.inf, x0.numpy() + 1 / 255)
    z = stats.norm(model_mean.numpy(), std)
    nll = -np.log(z.cdf(hi) - z.cdf(lo)).mean(axis=(1, 2, 3)) / math.log(2)
    np.testing.assert_allclose(vb.numpy(), nll, rtol=1e-6)


def test_mse_and_hybrid_loss():
    x0, x_t, t, noise = make_batch()
    eps = torch.zeros_like(noise)
    plain = D.training_losses(eps, x0, x_t, t, noise)
    torch.testing.assert_close(plain["mse"], (noise**2).mean(dim=(1, 2, 3)))
    assert torch.equal(plain["vb"], torch.zeros(5, dtype=torch.float64))
    assert torch.equal(plain["loss"], plain["mse"])
    hybrid = D.training_losses(torch.cat([eps, torch.zeros_like(eps)], 1), x0, x_t, t, noise)
    torch.testing.assert_close(hybrid["loss"], hybrid["mse"] + hybrid["vb"])
    assert all(v.shape == (5,) for v in hybrid.values())


def test_vb_does_not_train_the_mean():
    x0, x_t, t, noise = make_batch()
    g = torch.Generator().manual_seed(8)
    out = torch.randn(5, 4, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    losses = D.training_losses(out, x0, x_t, t, noise)
    (grad_vb,) = torch.autograd.grad(losses["vb"].sum(), out, retain_graph=True)
    assert torch.equal(grad_vb[:, :2], torch.zeros_like(grad_vb[:, :2]))  # eps channels
    assert grad_vb[:, 2:].abs().sum() > 0  # variance channels
    (grad_loss,) = torch.autograd.grad(losses["loss"].sum(), out, retain_graph=True)
    (grad_mse,) = torch.autograd.grad(losses["mse"].sum(), out)
    torch.testing.assert_close(grad_loss[:, :2], grad_mse[:, :2])


def test_vb_is_rescaled_by_t_over_1000():
    d = GaussianDiffusion(num_timesteps=250)
    g = torch.Generator().manual_seed(9)
    x0 = torch.rand(3, 1, 2, 2, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(3, 1, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([4, 100, 249])
    x_t = d.q_sample(x0, t, noise)
    out = torch.cat([noise * 0.9, torch.zeros_like(noise)], 1)
    vb = d.training_losses(out, x0, x_t, t, noise)["vb"]
    torch.testing.assert_close(vb, d.vb_terms_bpd(out, x0, x_t, t) * 0.25)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model_output": torch.zeros(2, 3, 4, 4)}, "channels"),
        ({"t": torch.tensor([0, 1000])}, "t must"),
        ({"t": torch.tensor([-1, 3])}, "t must"),
        ({"t": torch.tensor([1])}, "shape"),
        ({"noise": torch.zeros(2, 2, 4, 3)}, "shape"),
    ],
)
def test_bad_loss_input(kwargs, match):
    args = {"model_output": torch.zeros(2, 2, 4, 4), "x0": torch.zeros(2, 2, 4, 4),
            "x_t": torch.zeros(2, 2, 4, 4), "t": torch.tensor([0, 1]),
            "noise": torch.zeros(2, 2, 4, 4), **kwargs}
    with pytest.raises(ValueError, match=match):
        D.training_losses(**args)


# ------------------------------------------------------------------ VP-SDE continuous limit
def test_vp_sde_parameters_and_marginal():
    assert D.beta_min == pytest.approx(0.1) and D.beta_max == pytest.approx(20.0)
    for t in (0.001, 0.3, 0.77, 1.0):
        integral, _ = integrate.quad(lambda s: 0.1 + s * 19.9, 0, t)
        tt = torch.tensor(t, dtype=torch.float64)
        assert D.vp_beta(tt).item() == pytest.approx(0.1 + t * 19.9)
        assert D.vp_alpha_bar(tt).item() == pytest.approx(math.exp(-integral), rel=1e-12)
        assert D.vp_sigma(tt).item() ** 2 + D.vp_alpha_bar(tt).item() == pytest.approx(1.0)


def test_vp_sde_is_the_limit_of_the_discrete_schedule():
    # -log abar_i = -sum_j log(1 - beta_j) ~ int_0^{(i+1)/T} beta(s) ds: a Riemann sum with
    # steps 1/T, so the two agree to 1e-3 in abar and to 1 % in log abar away from t = 0.
    i = torch.arange(1000)
    continuous = D.vp_alpha_bar((i + 1).double() / 1000)
    assert (D.alphas_cumprod - continuous).abs().max() < 1e-3
    log_discrete, log_continuous = torch.log(D.alphas_cumprod), torch.log(continuous)
    assert ((log_discrete - log_continuous).abs() / log_discrete.abs())[100:].max() < 0.01


def test_vp_model_timestep_is_uvit_convention():
    assert D.vp_model_timestep(1.0) == 999.0
    assert D.vp_model_timestep(0.0) == 0.0
