"""Score SNR (ase_search/snr.py) against closed forms, autograd, and through the CLI."""

from __future__ import annotations

import math
import re

import pytest
import torch

from ase_search.diffusion import GaussianDiffusion
from ase_search.snr import default_timesteps, posterior_score, score_snr

torch.set_num_threads(1)

DIFFUSION = GaussianDiffusion()


def abar(t: int) -> float:
    return float(DIFFUSION.alphas_cumprod[t])


def noisy(x0: torch.Tensor, t: int, seed: int) -> torch.Tensor:
    """x_t ~ q(x_t | x0) in float64, independently of the library's sampling."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    a = abar(t)
    return math.sqrt(a) * x0.double() + math.sqrt(1 - a) * noise


def data(n: int, seed: int = 0, shape=(1, 3, 3)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *shape), generator=g, dtype=torch.float64) * 2 - 1


# ------------------------------------------------------------------------- one data point
@pytest.mark.parametrize("t", [0, 250, 600, 999])
def test_one_point_posterior_is_a_point_mass(t):
    x0 = data(1)
    x_t = noisy(x0.expand(5, -1, -1, -1), t, seed=t)
    post = posterior_score(x_t, x0, abar(t))
    assert torch.equal(post.log_weights, torch.zeros(5, 1, dtype=torch.float64))
    assert torch.all(post.log_trace_var == -math.inf)  # variance exactly 0
    assert torch.all(post.log_snr == math.inf)
    a = abar(t)
    expected = -(x_t - math.sqrt(a) * x0) / (1 - a)  # the conditional score itself
    torch.testing.assert_close(post.mean, expected, rtol=1e-12, atol=1e-9)


def test_duplicated_point_still_has_zero_variance():
    # Two copies of one image: the posterior splits its weight but the score is the same.
    x0 = data(1).repeat(2, 1, 1, 1)
    post = posterior_score(noisy(x0, 300, seed=1), x0, abar(300))
    assert torch.all(post.log_trace_var == -math.inf)
    assert torch.allclose(post.ess, torch.full((2,), 2.0, dtype=torch.float64))


def test_score_snr_on_one_point_is_infinite_everywhere():
    frame = score_snr(data(1).float(), DIFFUSION, default_timesteps(6), n_xt=3,
                      generator=torch.Generator().manual_seed(0))
    assert list(frame["t"]) == [0, 200, 400, 599, 799, 999]
    assert (frame["log_snr"] == math.inf).all()
    assert (frame["log_trace_var"] == -math.inf).all()
    assert (frame["ess"] == 1.0).all()


# ------------------------------------------------------------------------- two data points
@pytest.mark.parametrize("t", [1, 100, 400, 800, 999])
def test_two_point_weights_are_the_closed_form_softmax(t):
    x = data(2, seed=3)
    x_t = torch.cat([noisy(x[:1], t, seed=10 + t), noisy(x[1:], t, seed=20 + t)])  # (2, ...)
    a = abar(t)
    post = posterior_score(x_t, x, a)
    # Direct differences, not the library's expanded square.
    sq = ((x_t[:, None] - math.sqrt(a) * x[None]) ** 2).flatten(2).sum(-1)  # (2, 2)
    expected = torch.log_softmax(-sq / (2 * (1 - a)), dim=1)
    torch.testing.assert_close(post.log_weights, expected, rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("t", [0, 30, 200, 999])
def test_two_point_variance_matches_closed_form_even_when_weights_underflow(t):
    # tr Cov[x0 | x_t] = w1 w2 ||x1 - x2||^2 and tr Var[s] = abar / (1 - abar)^2 tr Cov, all in
    # log space via log-sigmoid; at t = 0 the lighter weight is around exp(-1e3), far below
    # float64's relative precision next to 1.
    x = data(2, seed=4)
    x_t = noisy(x[:1], t, seed=t)
    a, v = abar(t), 1 - abar(t)
    d = (x_t - math.sqrt(a) * x).flatten(1).square().sum(1)  # (2,)
    logit = float((d[1] - d[0]) / (2 * v))  # log w1 - log w2
    log_w1, log_w2 = -torch.nn.functional.softplus(torch.tensor(-logit, dtype=torch.float64)), \
        -torch.nn.functional.softplus(torch.tensor(logit, dtype=torch.float64))
    dist = float((x[0] - x[1]).square().sum())
    expected = math.log(a) - 2 * math.log(v) + float(log_w1 + log_w2) + math.log(dist)
    post = posterior_score(x_t, x, a)
    if t == 0:
        assert expected < -500  # the regime the log-space path exists for
    assert float(post.log_trace_var[0]) == pytest.approx(expected, rel=1e-9, abs=1e-6)


# ------------------------------------------------------------------------- the marginal score
@pytest.mark.parametrize("t", [2, 150, 500, 990])
def test_mean_score_is_the_gaussian_mixture_score(t):
    """E[s | x_t] = ∇ log q(x_t), with log q(x_t) = logsumexp_i log N(x_t; sqrt(a) x_i, v I)."""
    x = data(7, seed=5, shape=(2, 3, 2))
    x_t = noisy(x[torch.tensor([0, 3, 6])], t, seed=t)
    a, v = abar(t), 1 - abar(t)
    probe = x_t.clone().requires_grad_(True)
    diff = probe[:, None] - math.sqrt(a) * x[None]  # (3, 7, C, H, W)
    dim = diff[0, 0].numel()
    log_normal = (-diff.flatten(2).square().sum(-1) / (2 * v)
                  - 0.5 * dim * math.log(2 * math.pi * v))  # (3, 7)
    log_q = torch.logsumexp(log_normal, dim=1) - math.log(x.shape[0])  # (3,)
    (grad,) = torch.autograd.grad(log_q.sum(), probe)
    post = posterior_score(x_t, x, a)
    torch.testing.assert_close(post.mean, grad, rtol=1e-8, atol=1e-8)


def test_variance_matches_a_direct_weighted_sum():
    x = data(9, seed=6)
    t = 700
    x_t = noisy(x[:4], t, seed=7)
    a, v = abar(t), 1 - abar(t)
    post = posterior_score(x_t, x, a)
    w = post.log_weights.exp()  # (4, 9)
    s = -(x_t[:, None] - math.sqrt(a) * x[None]) / v  # (4, 9, C, H, W) conditional scores
    mean = (w[..., None, None, None] * s).sum(1)
    var = (w * (s - mean[:, None]).flatten(2).square().sum(-1)).sum(1)  # (4,)
    torch.testing.assert_close(post.log_trace_var.exp(), var, rtol=1e-9, atol=0.0)
    torch.testing.assert_close(post.log_snr.exp(), mean.flatten(1).square().sum(1) / var,
                               rtol=1e-9, atol=0.0)


def test_noise_end_matches_its_closed_form():
    # At abar -> 0 the posterior tends to the data distribution: SNR ≈ 1 + v d / (abar tr Cov).
    x = data(40, seed=8, shape=(1, 8, 8))
    frame = score_snr(x, DIFFUSION, [999], n_xt=200, generator=torch.Generator().manual_seed(1))
    a = abar(999)
    flat = x.flatten(1)
    tr_cov = float((flat - flat.mean(0)).square().sum(1).mean())
    assert frame.attrs["trace_cov_x0"] == pytest.approx(tr_cov)
    expected = math.log1p((1 - a) * 64 / (a * tr_cov))
    assert float(frame["log_snr"].iloc[0]) == pytest.approx(expected, abs=0.05)


# ------------------------------------------------------------------------- validation
def test_bad_inputs_raise_value_errors():
    x = data(3)
    with pytest.raises(ValueError, match="alpha_bar"):
        posterior_score(x, x, 1.0)
    with pytest.raises(ValueError, match="must match"):
        posterior_score(x, data(3, shape=(1, 2, 2)), 0.5)
    with pytest.raises(ValueError, match="timesteps"):
        score_snr(x, DIFFUSION, [1000], n_xt=2)
    with pytest.raises(ValueError, match="n_xt"):
        score_snr(x, DIFFUSION, [10], n_xt=0)
    with pytest.raises(ValueError, match="images"):
        score_snr(x[0], DIFFUSION, [10], n_xt=1)
    with pytest.raises(ValueError, match="number of timesteps"):
        default_timesteps(1)


# ------------------------------------------------------------------------- CLI

def test_cli_writes_self_contained_reports(tmp_path, cli):
    prefix = tmp_path / "snr"
    code, out, err = cli(["snr", "--dataset", "mnist", "--n-xt", "4", "--n-x0", "60",
                          "--timesteps", "4", "--seed", "1", "--out", str(prefix)])
    assert code == 0, err
    html = (tmp_path / "snr.html").read_text()
    # plotly.js (megabytes) is inline and nothing is fetched from a CDN.
    assert "Plotly.newPlot" in html and len(html) > 1_000_000
    # (The bundle itself mentions cdn.plot.ly as the default map-data URL; no script loads it.)
    assert re.findall(r"<script[^>]*>", html) == ["<script>"] * len(re.findall("<script", html))
    assert (tmp_path / "snr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "snr.md").read_text()
    assert "--n-x0 60" in md and "| 999 |" in md and "seed 1" in md
    assert "log SNR" in out


@pytest.mark.parametrize("argv, needle", [
    (["snr", "--dataset", "no-such-folder"], "--resolution"),
    (["snr", "--dataset", "no-such-folder", "--resolution", "8", "--channels", "1"],
     "no-such-folder"),
    (["snr", "--n-x0", "6000"], "--n-x0"),
    (["snr", "--timesteps", "1"], "number of timesteps"),
])
def test_cli_bad_input_is_one_error_line(argv, needle, tmp_path, cli):
    code, out, err = cli([*argv, "--out", str(tmp_path / "x")])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0]
