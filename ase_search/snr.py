"""Signal-to-noise ratio of the score target across diffusion time (paper Section 2.1, Figure 1).

The network regresses the *conditional* score ``∇ log q(x_t | x_0) = -(x_t - sqrt(abar) x_0) /
(1 - abar)`` (paper Eq. 10), whose expectation over the posterior ``x_0 | x_t`` is the marginal
score ``∇ log q(x_t)``. How hard that regression is at time ``t`` is measured by how much the
target scatters around its mean for a fixed input ``x_t``:

    SNR(x_t) = ||E[s | x_t]||^2 / tr Var[s | x_t],   s = ∇ log q(x_t | x_0),  x_0 ~ q(x_0 | x_t)

(squared norm of the mean over the total variance, i.e. summed over pixels, both over the
posterior). The reported value at ``t`` averages it over draws ``x_t ~ q(x_t)``.

The data set is taken as the empirical distribution ``q(x_0) = 1/N sum_i delta(x_0 - x_i)``, so the
posterior is exact and discrete: ``w_i(x_t) ∝ N(x_t; sqrt(abar) x_i, (1 - abar) I)``, a softmax of
``-||x_t - sqrt(abar) x_i||^2 / (2 (1 - abar))``. The Monte-Carlo estimate of the paper is here the
exact weighted sum over all ``N`` points, computed in float64 and in log space, because near the data
the weights of all but one point underflow (their logs are around ``-1e5``) while the variance they
carry is still what the SNR divides by.

Closed forms that explain the curve (``v = 1 - abar``, ``d`` pixels):

* ``tr Var[s | x_t] = abar / v^2 * tr Cov[x_0 | x_t]`` and ``E[s | x_t] = -(x_t - sqrt(abar)
  E[x_0 | x_t]) / v``.
* Near the data (``v -> 0``) the posterior collapses on one point, ``tr Cov`` decays like
  ``exp(-c / v)``, and the SNR grows like ``exp(c / v)``: high SNR near the data.
* Near the noise (``abar -> 0``) ``x_t`` barely depends on ``x_0``, the posterior tends to the data
  distribution, and ``SNR ≈ 1 + v d / (abar tr Cov[x_0])``: the SNR grows again like
  ``1 / abar``. With this definition the SNR is therefore not monotone in ``t``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ase_search.diffusion import GaussianDiffusion

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PosteriorScore",
    "default_timesteps",
    "posterior_score",
    "score_snr",
    "snr_markdown",
    "snr_summary",
    "write_snr_report",
]


@dataclass(frozen=True)
class PosteriorScore:
    """Posterior moments of the conditional score at a batch of noisy points (float64).

    Attributes:
        log_weights: ``(M, N)`` log posterior weights ``log w_i(x_t)`` of the data points.
        mean: ``(M, C, H, W)`` ``E[s | x_t]``, the marginal score ``∇ log q(x_t)``.
        log_trace_var: ``(M,)`` ``log tr Var[s | x_t]`` (``-inf`` for a point-mass posterior).
        log_mean_sq_norm: ``(M,)`` ``log ||E[s | x_t]||^2``.
        log_snr: ``(M,)`` ``log_mean_sq_norm - log_trace_var`` (``+inf`` when the variance is 0).
        ess: ``(M,)`` effective number of data points in the posterior, ``1 / sum_i w_i^2``.
    """

    log_weights: Tensor
    mean: Tensor
    log_trace_var: Tensor
    log_mean_sq_norm: Tensor
    log_snr: Tensor
    ess: Tensor


def _check_images(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, C, H, W) with N >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (images in [-1, 1]), got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or infinite values; clean the data first")


def posterior_score(x_t: Tensor, data: Tensor, alpha_bar: float) -> PosteriorScore:
    """Exact posterior mean and variance of the conditional score over an empirical data set.

    Args:
        x_t: ``(M, C, H, W)`` noisy points.
        data: ``(N, C, H, W)`` data points ``x_i``; the empirical distribution is the prior.
        alpha_bar: ``abar_t`` in ``(0, 1)``.

    Returns:
        The :class:`PosteriorScore` at each of the ``M`` points.

    Raises:
        ValueError: if the shapes disagree or ``alpha_bar`` is not in ``(0, 1)``.
    """
    _check_images("x_t", x_t)
    _check_images("data", data)
    if x_t.shape[1:] != data.shape[1:]:
        raise ValueError(
            f"x_t's (C, H, W) {tuple(x_t.shape[1:])} must match data's {tuple(data.shape[1:])}")
    alpha_bar = float(alpha_bar)
    if not 0.0 < alpha_bar < 1.0:
        raise ValueError(f"alpha_bar must lie in (0, 1), got {alpha_bar}")
    a, v = alpha_bar, 1.0 - alpha_bar
    sqrt_a = math.sqrt(a)
    x = x_t.detach().to(torch.float64).flatten(1)  # (M, d)
    X = data.detach().to(device=x.device, dtype=torch.float64).flatten(1)  # (N, d)

    # 1. Posterior weights: softmax_i of -||x - sqrt(a) x_i||^2 / (2v); the expanded square costs
    # one matmul, and its float64 rounding (~1e-10 absolute) is far below the logit gaps.
    sq = (x.square().sum(1, keepdim=True) - 2.0 * sqrt_a * (x @ X.T)
          + a * X.square().sum(1)[None, :]).clamp_min(0.0)  # (M, N)
    log_w = torch.log_softmax(-sq / (2.0 * v), dim=1)  # (M, N)

    # 2. Moments of x_0 relative to the heaviest point r: with d_i = x_i - x_r,
    #    tr Cov = sum_i w_i ||d_i||^2 - ||sum_i w_i d_i||^2 and E[x_0] = x_r + sum_i w_i d_i.
    # Only points with d_i != 0 contribute; their weights are rescaled by the largest of them,
    # w_i = e^L u_i, so nothing underflows even when every w_i is around exp(-1e5).
    ref = log_w.argmax(dim=1)  # (M,)
    x_ref = X[ref]  # (M, d)
    # Direct differences (not the Gram expansion), so duplicates of x_r give exactly 0.
    dist = torch.cdist(x_ref, X, compute_mode="donot_use_mm_for_euclid_dist").square()  # (M, N)
    other = dist > 0
    masked = torch.where(other, log_w, torch.full_like(log_w, -math.inf))
    L = masked.max(dim=1).values  # (M,), -inf when the posterior is one point
    has_other = torch.isfinite(L)
    L_safe = torch.where(has_other, L, torch.zeros_like(L))
    u = torch.where(other, torch.exp(masked - L_safe[:, None]), torch.zeros_like(log_w))  # (M, N)
    A = (u * dist).sum(1)  # (M,) = e^-L sum_i w_i ||d_i||^2
    m = u @ X - u.sum(1, keepdim=True) * x_ref  # (M, d) = e^-L sum_i w_i d_i
    B = m.square().sum(1)  # (M,)
    scale = torch.exp(L_safe)
    # tr Cov = e^L (A - e^L B) >= 0 (Cauchy-Schwarz); the clamp only absorbs rounding.
    inner = (A - scale * B).clamp_min(0.0)
    log_trace_cov = torch.where(has_other, L_safe + torch.log(inner),
                                torch.full_like(L, -math.inf))  # (M,)

    # 3. Score moments: s_i = -(x - sqrt(a) x_i) / v, so E[s] = -(x - sqrt(a) E[x_0]) / v and
    # tr Var[s] = a / v^2 tr Cov[x_0].
    mean_x0 = x_ref + scale[:, None] * m  # (M, d)
    mean = -(x - sqrt_a * mean_x0) / v  # (M, d)
    log_trace_var = math.log(a) - 2.0 * math.log(v) + log_trace_cov  # (M,)
    log_mean_sq_norm = torch.log(mean.square().sum(1))  # (M,)
    log_snr = log_mean_sq_norm - log_trace_var  # (M,), +inf for a point-mass posterior
    ess = torch.exp(-torch.logsumexp(2.0 * log_w, dim=1))  # (M,)
    return PosteriorScore(
        log_weights=log_w,
        mean=mean.view(x_t.shape),
        log_trace_var=log_trace_var,
        log_mean_sq_norm=log_mean_sq_norm,
        log_snr=log_snr,
        ess=ess,
    )


def default_timesteps(n: int, num_timesteps: int = 1000) -> list[int]:
    """``n`` distinct timesteps spread evenly over ``[0, T - 1]``, both ends included."""
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= num_timesteps:
        raise ValueError(f"the number of timesteps must be an integer in [2, {num_timesteps}], "
                         f"got {n!r}")
    return sorted({round(k * (num_timesteps - 1) / (n - 1)) for k in range(n)})


def _log_mean(log_values: Tensor) -> float:
    """``log(mean(exp(log_values)))``, exact for values far outside float range."""
    return float(torch.logsumexp(log_values, dim=0) - math.log(log_values.numel()))


def score_snr(
    images: Tensor,
    diffusion: GaussianDiffusion,
    timesteps: Sequence[int],
    *,
    n_xt: int,
    generator: torch.Generator | None = None,
) -> pd.DataFrame:
    """SNR of the conditional score at each timestep, over the empirical distribution of ``images``.

    At each ``t``, ``n_xt`` points ``x_t ~ q(x_t)`` are drawn (a data point ``x_0`` uniformly from
    ``images``, then ``x_t ~ q(x_t | x_0)``), and :func:`posterior_score` gives the exact posterior
    moments of ``∇ log q(x_t | x_0)`` at each of them.

    Args:
        images: ``(N, C, H, W)`` data (images in ``[-1, 1]``, or latents).
        diffusion: the forward process (its ``alphas_cumprod`` are used).
        timesteps: integer timesteps in ``[0, T)``.
        n_xt: noisy points drawn per timestep.
        generator: random source for the draws (CPU generator).

    Returns:
        One row per timestep with columns ``t``, ``t_frac`` (``t / T``), ``alpha_bar``,
        ``log_snr`` (log of the SNR averaged over the draws), ``mean_log_snr`` and
        ``std_log_snr`` (mean and standard deviation of the per-draw log SNR),
        ``log_mean_sq_norm`` and ``log_trace_var`` (logs of the draw-averaged numerator and
        denominator) and ``ess`` (mean effective number of data points in the posterior). All
        logs are natural; a point-mass posterior gives ``log_snr = inf``.

    Raises:
        ValueError: for malformed images, timesteps outside ``[0, T)`` or ``n_xt < 1``.
    """
    import pandas as pd

    _check_images("images", images)
    if not isinstance(diffusion, GaussianDiffusion):
        raise ValueError(f"diffusion must be a GaussianDiffusion, got {type(diffusion).__name__}")
    T = diffusion.num_timesteps
    steps = list(timesteps)
    if not steps:
        raise ValueError("timesteps must hold at least one timestep")
    for t in steps:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < T:
            raise ValueError(f"timesteps must be integers in [0, {T}), got {t!r}")
    if isinstance(n_xt, bool) or not isinstance(n_xt, int) or n_xt < 1:
        raise ValueError(f"n_xt must be an integer >= 1, got {n_xt!r}")

    data = images.detach().to(torch.float64)  # (N, C, H, W)
    rows = []
    for t in steps:
        idx = torch.randint(0, data.shape[0], (n_xt,), generator=generator)  # (M,)
        noise = torch.randn((n_xt, *data.shape[1:]), generator=generator,
                            dtype=torch.float64).to(data.device)  # (M, C, H, W)
        tt = torch.full((n_xt,), t, dtype=torch.long, device=data.device)
        x_t = diffusion.q_sample(data[idx.to(data.device)], tt, noise)  # (M, C, H, W)
        abar = float(diffusion.alphas_cumprod[t])
        post = posterior_score(x_t, data, abar)
        finite = post.log_snr[torch.isfinite(post.log_snr)]
        rows.append({
            "t": t,
            "t_frac": t / T,
            "alpha_bar": abar,
            "log_snr": _log_mean(post.log_snr),
            "mean_log_snr": float(post.log_snr.mean()),
            "std_log_snr": float(finite.std()) if finite.numel() > 1 else math.nan,
            "log_mean_sq_norm": _log_mean(post.log_mean_sq_norm),
            "log_trace_var": _log_mean(post.log_trace_var),
            "ess": float(post.ess.mean()),
        })
    frame = pd.DataFrame(rows)
    flat = data.flatten(1)  # (N, d)
    frame.attrs.update({
        "num_timesteps": T, "n_xt": n_xt, "n_x0": int(data.shape[0]),
        "shape": list(data.shape[1:]),
        # tr Cov[x_0] of the empirical distribution, for the near-noise closed form.
        "trace_cov_x0": float((flat - flat.mean(0)).square().sum(1).mean()),
    })
    return frame


# ###################################################################### report
def _curve_points(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series] | None:
    """The measured curve's rows at its two ends (first and last timestep) and at its lowest
    finite log SNR; ``None`` when the SNR is infinite at every timestep."""
    finite = frame[frame["log_snr"].map(math.isfinite)]
    if finite.empty:
        return None
    return frame.iloc[0], frame.iloc[-1], finite.loc[finite["log_snr"].idxmin()]


def snr_summary(frame: pd.DataFrame) -> str:
    """One sentence describing the measured curve: its two ends and its minimum."""
    points = _curve_points(frame)
    if points is None:
        return "The SNR is infinite at every timestep (every posterior is a single point)."
    first, last, low = points
    shape = ("decreases monotonically" if frame["log_snr"].is_monotonic_decreasing
             else "is not monotone")
    return (f"log SNR {shape} in t: it is {first['log_snr']:.4g} at t/T = {first['t_frac']:.3f} "
            f"(posterior ESS = {first['ess']:.3g}), falls to a minimum of "
            f"{low['log_snr']:.3g} at t/T = {low['t_frac']:.3f} (ESS {low['ess']:.3g}), and is "
            f"{last['log_snr']:.3g} at t/T = {last['t_frac']:.3f} (ESS {last['ess']:.3g}), where "
            f"the posterior is close to the whole data set but the variance of the conditional "
            f"score shrinks with abar = {last['alpha_bar']:.2g}.")


def _against_figure_1(frame: pd.DataFrame) -> str:
    """How the measured curve compares with Figure 1's "high near data, low near noise"."""
    points = _curve_points(frame)
    if points is None:
        return "Against Figure 1: nothing to compare; every posterior is a single point."
    first, last, low = points
    ends = ("holds between the two ends" if first["log_snr"] > last["log_snr"]
            else "does not hold between the two ends")
    text = (f"Against Figure 1: the claim (high SNR near the data, low near the prior) {ends}: "
            f"log SNR {first['log_snr']:.4g} at t/T = {first['t_frac']:.3f} against "
            f"{last['log_snr']:.3g} at t/T = {last['t_frac']:.3f}. ")
    if low["t"] != last["t"]:
        text += (f"But the lowest SNR is in the middle (t/T = {low['t_frac']:.3f}), not at the "
                 f"noise end: from there the SNR grows again like 1 / abar, because the spread "
                 f"of the conditional score over the posterior scales with sqrt(abar) while its "
                 f"mean, about -x_t, does not (closed form below). ")
    if first["ess"] < 1.5:
        text += (f"Near the data the posterior is a single data point (ESS = {first['ess']:.3g}), "
                 f"so the high SNR there is a property of the finite data set, as in the paper's "
                 f"Monte-Carlo estimate over CelebA.")
    return text.rstrip()


def snr_markdown(frame: pd.DataFrame, *, command: str, seed: int, dataset: str,
                 machine: dict[str, Any], seconds: float, rows: int = 10) -> str:
    """The markdown report: settings, the definition, a table at about ``rows`` points, a summary."""
    a = frame.attrs
    pick = sorted({round(k * (len(frame) - 1) / (rows - 1)) for k in range(rows)})
    lines = [
        "# Score SNR across diffusion time (paper Section 2.1, Figure 1)",
        "",
        f"- Command: `{command}`",
        f"- Date: {machine['date']}; {seconds:.0f} s",
        f"- Machine: {machine['cpu']}, {machine['logical_cores']} logical cores, GPU "
        f"{machine['gpu'] or 'none'}, torch {machine['torch']} with {machine['torch_threads']} "
        f"thread(s), Python {machine['python']}",
        f"- Data: {dataset}, {a['n_x0']} points of shape {tuple(a['shape'])} as the empirical "
        f"distribution; {a['n_xt']} draws of x_t per timestep; T = {a['num_timesteps']}, linear "
        f"betas; seed {seed}",
        "",
        "Definition: for x_t ~ q(x_t), SNR(x_t) = ||E[s]||² / tr Var[s] with s = ∇ log q(x_t | x_0) "
        "= -(x_t - sqrt(abar) x_0) / (1 - abar) and both moments over the exact posterior "
        "x_0 | x_t of the empirical distribution (weights ∝ N(x_t; sqrt(abar) x_i, (1 - abar) I), "
        "float64, log space). `log SNR` is the natural log of the SNR averaged over the draws; "
        "`mean log SNR ± sd` is the per-draw log SNR's mean and spread; `log ‖E s‖²` and "
        "`log tr Var s` are the logs of the draw-averaged numerator and denominator; "
        "ESS = 1 / Σ w_i² is the effective number of data points in the posterior.",
        "",
        "| t | t/T | abar | log SNR | mean log SNR ± sd | log ‖E s‖² | log tr Var s | ESS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i in pick:
        r = frame.iloc[i]
        sd = "" if math.isnan(r["std_log_snr"]) else f" ± {r['std_log_snr']:.3g}"
        lines.append(
            f"| {int(r['t'])} | {r['t_frac']:.3f} | {r['alpha_bar']:.4g} | {r['log_snr']:.4g} | "
            f"{r['mean_log_snr']:.4g}{sd} | {r['log_mean_sq_norm']:.3f} | "
            f"{r['log_trace_var']:.4g} | {r['ess']:.3g} |")
    lines += ["", snr_summary(frame), "", _against_figure_1(frame), ""]
    last = frame.iloc[-1]
    if a.get("trace_cov_x0", 0) > 0:
        d = math.prod(a["shape"])
        abar = last["alpha_bar"]
        expected = math.log1p((1 - abar) * d / (abar * a["trace_cov_x0"]))
        lines += [
            f"Check at the noise end: there the posterior tends to the data distribution, so "
            f"SNR ≈ 1 + (1 - abar) d / (abar tr Cov[x_0]) with d = {d} and tr Cov[x_0] = "
            f"{a['trace_cov_x0']:.4g}; at t = {int(last['t'])} this gives log SNR ≈ "
            f"{expected:.4g} against {last['log_snr']:.4g} measured.",
            "",
        ]
    return "\n".join(lines)


def _plot_values(frame: pd.DataFrame, column: str) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in frame[column]]


def write_snr_report(frame: pd.DataFrame, out: str | Path, *, command: str, seed: int,
                     dataset: str, machine: dict[str, Any], seconds: float) -> list[Path]:
    """Write ``<out>.html`` (plotly, self-contained), ``<out>.png`` (matplotlib) and ``<out>.md``.

    Args:
        frame: a :func:`score_snr` result.
        out: path prefix; a ``.html`` / ``.png`` / ``.md`` suffix on it is dropped.
        command: the command line that produced ``frame`` (recorded in the markdown).
        seed: its seed.
        dataset: the data set's name.
        machine: :func:`ase_search.evaluate.machine_info` of the machine that ran it.
        seconds: how long it ran.

    Returns:
        The three paths written.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    out = Path(out)
    if out.suffix.lower() in (".html", ".png", ".md"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    html_path, png_path, md_path = (out.with_name(out.name + s) for s in (".html", ".png", ".md"))
    title = (f"Score SNR on {dataset} ({frame.attrs['n_x0']} points, "
             f"{frame.attrs['n_xt']} draws of x_t per t)")
    # log SNR spans orders of magnitude (it grows like 1 / (1 - abar) near the data), so the
    # y axis is logarithmic in log SNR; non-positive values (SNR <= 1) would need a linear axis.
    log_axis = bool((frame["log_snr"] > 0).all() and (frame["mean_log_snr"] > 0).all())

    fig = go.Figure()
    fig.add_scatter(x=frame["t_frac"], y=_plot_values(frame, "log_snr"), mode="lines+markers",
                    name="log of mean SNR",
                    customdata=frame[["t", "alpha_bar", "ess"]].to_numpy(),
                    hovertemplate="t=%{customdata[0]}, abar=%{customdata[1]:.3g}<br>"
                                  "log SNR=%{y:.4g}<br>ESS=%{customdata[2]:.3g}<extra></extra>")
    fig.add_scatter(x=frame["t_frac"], y=_plot_values(frame, "mean_log_snr"),
                    mode="lines", line={"dash": "dash"}, name="mean of per-draw log SNR")
    fig.update_layout(title=title, xaxis_title="t / T", yaxis_title="log SNR (natural log)",
                      yaxis_type="log" if log_axis else "linear", template="plotly_white")
    tmp = html_path.with_name(f".{html_path.name}.tmp")
    fig.write_html(tmp, include_plotlyjs=True, full_html=True)  # plotly.js inline: works offline
    tmp.replace(html_path)

    fig_m, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150)
    ax.plot(frame["t_frac"], frame["log_snr"], marker="o", markersize=3, label="log of mean SNR")
    ax.plot(frame["t_frac"], frame["mean_log_snr"], linestyle="--",
            label="mean of per-draw log SNR")
    if log_axis:
        ax.set_yscale("log")
    ax.set_xlabel("t / T")
    ax.set_ylabel("log SNR (natural log)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig_m.tight_layout()
    tmp = png_path.with_name(f".{png_path.stem}.tmp.png")
    fig_m.savefig(tmp)
    plt.close(fig_m)
    tmp.replace(png_path)

    tmp = md_path.with_name(f".{md_path.name}.tmp")
    tmp.write_text(snr_markdown(frame, command=command, seed=seed, dataset=dataset,
                                machine=machine, seconds=seconds), encoding="utf-8")
    tmp.replace(md_path)
    return [html_path, png_path, md_path]
