"""Gaussian diffusion with the linear beta schedule of DDPM / improved DDPM / DiT.

The forward process ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` runs over ``T`` discrete
steps ``t = 0 .. T - 1`` with ``betas = linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T)`` (float64),
the convention of ADM and DiT. The training loss is the hybrid objective of improved DDPM (Nichol &
Dhariwal, 2021), which DiT and ASE fine-tuning use: the simple MSE on the predicted noise plus, for
models that learn their variance, the variational bound term with a stop-gradient on the mean.

The same schedule has a continuous-time limit, the VP SDE of Song et al. (2021) with
``beta(t) = beta_min + t (beta_max - beta_min)``, ``beta_min = T * betas[0] = 0.1`` and
``beta_max = T * betas[-1] = 20``; the Euler-Maruyama sampler uses the ``vp_*`` helpers below.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "GaussianDiffusion",
    "discretized_gaussian_log_likelihood",
    "mean_flat",
    "normal_kl",
]


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the first (per-sample mean)."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise ``KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))`` in nats."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def discretized_gaussian_log_likelihood(x: Tensor, *, means: Tensor, log_scales: Tensor) -> Tensor:
    """Elementwise log-likelihood (nats) of 8-bit data under a discretised Gaussian decoder.

    ``x`` holds uint8 pixel values rescaled to ``[-1, 1]``, so every value is the centre of a bin of
    width ``2 / 255``; the two edge bins extend to ``-inf`` and ``+inf`` (improved DDPM's decoder
    ``L_0``). The normal CDF is computed exactly (``torch.special``) rather than with the tanh
    approximation of the official code; the two agree to about 1e-3 relative.

    Args:
        x: data in ``[-1, 1]``.
        means: decoder means, broadcastable to ``x``.
        log_scales: decoder log standard deviations, broadcastable to ``x``.
    """
    half_bin = 1.0 / 255.0
    inv_std = torch.exp(-log_scales)
    upper = inv_std * (x - means + half_bin)
    lower = inv_std * (x - means - half_bin)
    log_cdf_upper = torch.special.log_ndtr(upper)  # log P(z < upper)
    log_sf_lower = torch.special.log_ndtr(-lower)  # log P(z > lower)
    # log(Phi(upper) - Phi(lower)); the floor keeps the log finite for far-away means.
    log_delta = torch.log((torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_delta))


class GaussianDiffusion:
    """Discrete-time Gaussian diffusion with the linear schedule (DDPM, improved DDPM, DiT).

    All schedule tables are float64 tensors on the CPU, indexed by timestep; the methods move what
    they need to the device and dtype of their inputs.

    Args:
        num_timesteps: number of diffusion steps ``T``; the betas are rescaled by ``1000 / T`` so
            the process ends at about the same noise level for any ``T``.
    """

    def __init__(self, *, num_timesteps: int = 1000) -> None:
        if (isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int)
                or num_timesteps < 2):
            raise ValueError(f"num_timesteps must be an integer >= 2, got {num_timesteps!r}")
        self.num_timesteps = num_timesteps
        scale = 1000.0 / num_timesteps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)
        self.betas = betas
        alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64),
                                              self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = self.alphas_cumprod.rsqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()

        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, posterior_variance)
        self.posterior_variance = (
            betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        # The posterior variance is 0 at t = 0; the log uses the t = 1 value there, as improved
        # DDPM does, so the learned-range interpolation stays finite.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = (
            betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / (1.0 - self.alphas_cumprod)
        )

    def __repr__(self) -> str:
        return f"GaussianDiffusion(num_timesteps={self.num_timesteps})"

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _extract(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """``table[t]`` shaped ``(N, 1, ..., 1)`` to broadcast against ``like``."""
        values = table.to(device=t.device)[t.long()].to(dtype=like.dtype, device=like.device)
        return values.view(-1, *([1] * (like.ndim - 1)))

    def _check_t(self, t: Tensor, n: int) -> None:
        if t.ndim != 1 or t.shape[0] != n:
            raise ValueError(f"t must have shape ({n},), got {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(
                f"t must hold integer timesteps in [0, {self.num_timesteps}), got values in "
                f"[{int(t.min())}, {int(t.max())}]"
            )

    def sample_timesteps(
        self, n: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
    ) -> Tensor:
        """``n`` timesteps drawn uniformly from ``{0, ..., T - 1}`` (LongTensor on ``device``)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        t = torch.randint(0, self.num_timesteps, (n,), generator=generator)
        return t.to(device)

    # ---------------------------------------------------------- forward process
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw ``x_t ~ q(x_t | x_0)``: ``sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise``."""
        if noise.shape != x0.shape:
            raise ValueError(
                f"noise must match x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}"
            )
        self._check_t(t, x0.shape[0])
        return (
            self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
            + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_posterior_mean_variance(
        self, x0: Tensor, x_t: Tensor, t: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of ``q(x_{t-1} | x_t, x_0)``."""
        self._check_t(t, x0.shape[0])
        mean = (
            self._extract(self.posterior_mean_coef1, t, x_t) * x0
            + self._extract(self.posterior_mean_coef2, t, x_t) * x_t
        )
        variance = self._extract(self.posterior_variance, t, x_t)
        log_variance = self._extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
        return (
            self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """``eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)``."""
        return (
            self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0
        ) / self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t)

    # ---------------------------------------------------------- reverse process
    def model_log_variance(self, var_values: Tensor, t: Tensor) -> Tensor:
        """Improved DDPM's "learned_range" log-variance from the model's raw values ``v``.

        ``log sigma^2 = frac * log(beta_t) + (1 - frac) * log(beta~_t)`` with
        ``frac = (v + 1) / 2``, so ``v = -1`` gives the posterior variance ``beta~_t`` and
        ``v = 1`` gives ``beta_t``.
        """
        min_log = self._extract(self.posterior_log_variance_clipped, t, var_values)
        max_log = self._extract(torch.log(self.betas), t, var_values)
        frac = (var_values + 1.0) / 2.0
        return frac * max_log + (1.0 - frac) * min_log

    def p_mean_variance(
        self, model_output: Tensor, x_t: Tensor, t: Tensor, *, clip_denoised: bool = False
    ) -> dict[str, Tensor]:
        """Mean and log-variance of ``p(x_{t-1} | x_t)`` from an eps (+ variance) prediction.

        Args:
            model_output: ``(N, C, ...)`` eps, or ``(N, 2C, ...)`` eps and learned-range values;
                with only eps the variance is the posterior variance ("fixed_small").
            x_t: ``(N, C, ...)`` noisy input.
            t: ``(N,)`` integer timesteps.
            clip_denoised: clamp the predicted ``x_0`` to ``[-1, 1]`` before forming the mean.

        Returns:
            ``{"mean", "log_variance", "pred_x0"}``.
        """
        channels = x_t.shape[1]
        eps, var_values = self._split_output(model_output, channels)
        if var_values is None:
            log_variance = self._extract(self.posterior_log_variance_clipped, t, x_t)
            log_variance = log_variance.expand_as(x_t)
        else:
            log_variance = self.model_log_variance(var_values, t)
        pred_x0 = self.predict_x0_from_eps(x_t, t, eps)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return {"mean": mean, "log_variance": log_variance, "pred_x0": pred_x0}

    @staticmethod
    def _split_output(model_output: Tensor, channels: int) -> tuple[Tensor, Tensor | None]:
        if model_output.shape[1] == channels:
            return model_output, None
        if model_output.shape[1] == 2 * channels:
            eps, var_values = model_output.split(channels, dim=1)
            return eps, var_values
        raise ValueError(
            f"model_output must have {channels} channels (eps) or {2 * channels} (eps and "
            f"learned variance) to match x, got {model_output.shape[1]}"
        )

    # ------------------------------------------------------------------ losses
    def vb_terms_bpd(
        self, model_output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor
    ) -> Tensor:
        """Per-sample variational-bound term in bits per dimension.

        ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` for ``t > 0`` and the discretised
        decoder NLL ``-log p(x_0 | x_1)`` for ``t == 0`` (improved DDPM, Eq. 4-5).
        """
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x0, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=False)
        kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
        kl = mean_flat(kl) / math.log(2.0)  # (N,)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x0, means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        decoder_nll = mean_flat(decoder_nll) / math.log(2.0)  # (N,)
        return torch.where(t == 0, decoder_nll, kl)

    def training_losses(
        self, model_output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor
    ) -> dict[str, Tensor]:
        """Per-sample hybrid loss of improved DDPM / DiT.

        ``loss = mse + vb``: ``mse`` is the simple loss ``|eps - eps_theta|^2`` averaged over
        dimensions; ``vb`` (only when ``model_output`` carries learned-variance channels, else
        zeros) is :meth:`vb_terms_bpd` computed with the predicted eps detached, so the bound
        trains the variance only and the mean is trained by the MSE alone. ``vb`` is scaled by
        ``T / 1000`` as in the official code (a no-op at ``T = 1000``, which is DiT's setting).

        Args:
            model_output: ``(N, C, ...)`` or ``(N, 2C, ...)`` prediction at ``(x_t, t)``.
            x0: ``(N, C, ...)`` clean data in ``[-1, 1]``.
            x_t: ``(N, C, ...)`` ``q_sample(x0, t, noise)``.
            t: ``(N,)`` integer timesteps.
            noise: ``(N, C, ...)`` the noise used to make ``x_t``.

        Returns:
            ``{"loss", "mse", "vb"}``, each of shape ``(N,)``.
        """
        if x_t.shape != x0.shape or noise.shape != x0.shape:
            raise ValueError(
                f"x0, x_t and noise must share one shape, got {tuple(x0.shape)}, "
                f"{tuple(x_t.shape)}, {tuple(noise.shape)}"
            )
        self._check_t(t, x0.shape[0])
        eps, var_values = self._split_output(model_output, x0.shape[1])
        mse = mean_flat((noise - eps) ** 2)  # (N,)
        if var_values is None:
            vb = torch.zeros_like(mse)
        else:
            # Stop-gradient on the mean: the VLB only shapes the variance (improved DDPM, Sec 3.1).
            frozen_out = torch.cat([eps.detach(), var_values], dim=1)
            vb = self.vb_terms_bpd(frozen_out, x0, x_t, t) * (self.num_timesteps / 1000.0)
        return {"loss": mse + vb, "mse": mse, "vb": vb}

    # ---------------------------------------------- continuous-time VP-SDE limit
    @property
    def beta_min(self) -> float:
        """``beta(0)`` of the VP SDE: ``T * betas[0]`` (0.1 for the linear schedule)."""
        return float(self.betas[0]) * self.num_timesteps

    @property
    def beta_max(self) -> float:
        """``beta(1)`` of the VP SDE: ``T * betas[-1]`` (20 for the linear schedule)."""
        return float(self.betas[-1]) * self.num_timesteps

    def vp_beta(self, t: Tensor) -> Tensor:
        """``beta(t) = beta_min + t (beta_max - beta_min)`` for continuous ``t`` in ``[0, 1]``."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def vp_alpha_bar(self, t: Tensor) -> Tensor:
        """``abar(t) = exp(-int_0^t beta(s) ds)``, the continuous analogue of ``alphas_cumprod``."""
        integral = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
        return torch.exp(-integral)

    def vp_sigma(self, t: Tensor) -> Tensor:
        """Marginal standard deviation ``sqrt(1 - abar(t))`` of the VP SDE."""
        integral = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
        return torch.sqrt(-torch.expm1(-integral))  # expm1 keeps precision at small t

    def vp_model_timestep(self, t: Tensor | float) -> Tensor | float:
        """The timestep fed to a discrete-time model at continuous time ``t``: ``t * (T - 1)``.

        This is U-ViT's convention (``nnet(x, t * 999)``), mapping ``[0, 1]`` onto ``[0, T - 1]``.
        """
        return t * (self.num_timesteps - 1)
