"""Known-answer pieces shared by the diffusion and NCSN tests: exact denoisers for Gaussian data
and Gaussian mixtures, and a two-sample MMD."""

from __future__ import annotations

import math

import torch
from torch import nn


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD with a Gaussian kernel (bandwidth: the median heuristic on x and y)."""
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)
    if bandwidth is None:
        bandwidth = d2[d2 > 0].median().sqrt().item()
    k = torch.exp(-d2 / (2 * bandwidth**2))
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    return float((kxx.sum() - kxx.diag().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diag().sum()) / (m * (m - 1)) - 2 * kxy.mean())


class MixtureScore(nn.Module):
    """The exact score of a Gaussian mixture sum_k w_k N(a m_k, (a^2 s_k^2 + noise^2) I) (isotropic
    components): the data's density after scaling by a and adding N(0, noise^2) noise."""

    def __init__(self, means, stds, weights) -> None:
        super().__init__()
        self.register_buffer("means", torch.as_tensor(means, dtype=torch.float64))
        self.register_buffer("stds", torch.as_tensor(stds, dtype=torch.float64))
        self.register_buffer("log_w", torch.as_tensor(weights, dtype=torch.float64).log())

    def score(self, x: torch.Tensor, a, noise, component=None) -> torch.Tensor:
        """x: (n, d); a, noise: (n,) tensors; component: None (the mixture) or (n,) ints (one
        component each, or K for the mixture)."""
        a, noise = a.to(x.dtype)[:, None, None], noise.to(x.dtype)[:, None, None]
        mu = a * self.means.to(x.dtype)  # (n, K, d)
        var = a.pow(2) * self.stds.to(x.dtype)[None, :, None].pow(2) + noise.pow(2)  # (n, K, 1)
        diff = x[:, None, :] - mu
        d = x.shape[-1]
        logp = self.log_w.to(x.dtype) - 0.5 * (diff.pow(2) / var).sum(-1) - 0.5 * d * var[..., 0].log()
        if component is not None:
            K = len(self.log_w)
            one = nn.functional.one_hot(component.clamp(max=K - 1), K).bool()
            only = torch.where(one, logp, torch.full_like(logp, -math.inf))
            logp = torch.where((component == K)[:, None], logp, only)
        r = torch.softmax(logp, -1)[..., None]
        return (r * (-diff / var)).sum(1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """p(component | x) under the mixture itself, (n, K)."""
        ones = torch.ones(x.shape[0], dtype=x.dtype)
        mu = self.means.to(x.dtype)
        var = self.stds.to(x.dtype).pow(2)[None, :]
        logp = self.log_w.to(x.dtype) - 0.5 * (x[:, None, :] - mu).pow(2).sum(-1) / var - 0.5 * x.shape[-1] * var.log()
        del ones
        return torch.softmax(logp, -1)


class OracleEps(nn.Module):
    """The exact noise predictor E[eps | x_t] of a DDPM whose data (in diffusion space) is the
    mixture `mixture`: -sqrt(1 - alpha_bar_t) * score of q(x_t)."""

    def __init__(self, mixture: MixtureScore, alphas_bar: torch.Tensor) -> None:
        super().__init__()
        self.mixture = mixture
        self.register_buffer("alphas_bar", alphas_bar.detach().clone().double())
        self.dummy = nn.Parameter(torch.zeros(()))  # so that engines find a parameter

    def forward(self, x, t, y=None):
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        ab = self.alphas_bar[t.reshape(-1).round().long()].to(x.dtype)
        comp = None if y is None else torch.as_tensor(y).reshape(-1)
        s = self.mixture.score(flat, ab.sqrt(), (1 - ab).sqrt(), comp)
        return (-(1 - ab).sqrt()[:, None] * s + 0 * self.dummy).reshape(shape)


class LinearEps(nn.Module):
    """eps(x_t, t) = a_t x_t + b_t, one (a, b) per step: exact for 1D Gaussian data."""

    def __init__(self, num_steps: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(num_steps + 1))
        self.b = nn.Parameter(torch.zeros(num_steps + 1))

    def forward(self, x, t, y=None):
        i = t.round().long()
        return self.a[i][..., None] * x + self.b[i][..., None]
