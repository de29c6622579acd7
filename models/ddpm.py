"""Denoising diffusion probabilistic model (Ho et al. 2020) as a Pyro program: a deep VAE.

The **model** is the reverse chain, T latent sites and the data::

    x_T ~ N(0, I)
    x_{t-1} ~ N(mu_theta(x_t, t, y), sigma_t^2 I)      t = T, ..., 2
    x     ~ N(shift + scale * mu_theta(x_1, 1, y), (scale sigma_1)^2 I)      (observed)

and the **guide** is the fixed forward (noising) process q(x_1..T | x_0), a Markov chain
x_t ~ N(sqrt(1 - beta_t) x_{t-1}, beta_t I) from x_0 = (x - shift) / scale. The guide has no
parameters, so ``inference.SVI(ddpm)`` maximises the true evidence lower bound: a diffusion model
is literally a hierarchical VAE whose encoder is fixed. Sites are named ``x_T ... x_1`` and ``x``.

- Schedules (`schedule=`): ``"linear"`` (beta from 1e-4 to 0.02 at T = 1000, both scaled by
  1000 / T so that a shorter chain still ends in noise, as in Nichol & Dhariwal 2021) and
  ``"cosine"`` (alpha_bar(t) = cos^2(((t / T + s) / (1 + s)) pi / 2), s = 0.008, betas clipped
  at 0.999). Index convention: t = 1..T; ``alpha_bar[0] = 1``.
- Fixed variances (`variance=`): ``"beta"`` (sigma_t^2 = beta_t) or ``"posterior"`` (sigma_t^2
  = beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), the forward posterior's; for
  t = 1, where beta~_1 = 0, beta_1 is used so that the data's likelihood stays a density).
- The network predicts (`prediction=`) the noise ``"eps"``, the clean data ``"x0"`` or the
  velocity ``"v"`` = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022); each
  gives an estimate x0_hat of x_0, and mu_theta(x_t, t) is the forward posterior's mean
  q(x_{t-1} | x_t, x_0 = x0_hat).
- `shift`, `scale`: a fixed affine map from the data to the diffusion's space (digits in [0, 1]:
  shift 0.5, scale 0.5 gives [-1, 1]); its Jacobian is part of the likelihood.
- Conditional models (`num_classes=`): ``model(x, y)`` with int labels y; y = None (or the label
  `num_classes`) is the unconditional model that label dropout trains.

Training: ``inference.SVI(ddpm)`` (the ELBO; T sites per datum, so for small T) or the
simplified objective, ``inference.Diffusion(ddpm)`` (`inference/diffusion.py`). `elbo(x)`
evaluates the bound with the KL terms in closed form (one draw of x_t per t); `sample` draws by
ancestral sampling or DDIM, with classifier-free guidance.
"""

from __future__ import annotations

import math
import sys
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from tqdm.auto import tqdm

from models.registry import register
from models import checks
from models.unet import NETWORKS, noise_network
from pgm import Model

__all__ = ["DDPM", "ConditionalDDPM", "SCHEDULES", "PREDICTIONS", "VARIANCES", "SPACINGS", "beta_schedule", "ddim_timesteps"]

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("beta", "posterior")
SPACINGS = ("trailing", "leading", "linspace")


def beta_schedule(kind: str, num_steps: int) -> torch.Tensor:
    """beta_1..beta_T (float64, shape (T,)) of the ``"linear"`` or ``"cosine"`` schedule.

    >>> b = beta_schedule("linear", 1000)
    >>> round(b[0].item(), 6), round(b[-1].item(), 6)
    (0.0001, 0.02)
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps: expected a positive int, got {num_steps!r}")
    if kind == "linear":
        scale = 1000.0 / num_steps
        return torch.linspace(1e-4 * scale, min(0.02 * scale, 0.999), num_steps, dtype=torch.float64)
    if kind == "cosine":
        s = 0.008
        t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise ValueError(f"schedule: expected one of {SCHEDULES}, got {kind!r}")


def ddim_timesteps(num_steps: int, steps: int, spacing: str = "trailing") -> list[int]:
    """The S = `steps` time steps, in 1..T and decreasing, that DDIM visits; after the last one it
    jumps to t = 0 (the data). T = `num_steps`.

    - ``"trailing"`` (default): t_i = T - floor(i T / S), i = 0..S-1. Starts at T (pure noise,
      where training put the prior), ends at T - floor((S-1) T / S) (about T / S). Recommended by
      Lin et al. 2024 ("Common diffusion noise schedules and sample steps are flawed").
    - ``"leading"``: DDIM's original code, 1 + k floor(T / S), k = S-1..0. Ends at t = 1 but
      starts at 1 + (S-1) floor(T / S) < T: the first step sees less noise than the sampler's
      N(0, I) start (e.g. t = 901 of 1000 with S = 10): kept for comparison only.
    - ``"linspace"``: round(linspace(T, 1, S)): both ends, T and 1.

    With S = T every spacing is T, T-1, ..., 1 (ancestral sampling's steps).

    >>> ddim_timesteps(1000, 10)
    [1000, 900, 800, 700, 600, 500, 400, 300, 200, 100]
    >>> ddim_timesteps(1000, 10, "leading")[:2], ddim_timesteps(10, 4, "linspace")
    ([901, 801], [10, 7, 4, 1])
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps: expected a positive int, got {num_steps!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= num_steps:
        raise ValueError(f"steps: expected an int in 1..{num_steps} (the chain's length), got {steps!r}")
    T, S = num_steps, steps
    if spacing == "trailing":
        return [T - (i * T) // S for i in range(S)]
    if spacing == "leading":
        c = T // S
        return [1 + k * c for k in range(S - 1, -1, -1)]
    if spacing == "linspace":
        if S == 1:
            return [T]
        out = [int(round(T - i * (T - 1) / (S - 1))) for i in range(S)]
        if len(set(out)) != S:  # cannot happen for S <= T, kept as a guard
            raise ValueError(f"steps: linspace spacing of {S} steps over {T} repeats a step")
        return out
    raise ValueError(f"spacing: expected one of {SPACINGS}, got {spacing!r}")


def _positive_int(arg: str, value) -> int:
    return checks.positive_int(arg, value)


#: `pgm train ddpm`: the 8x8 digits in a few CPU minutes (about 3,000 steps of a 256-wide MLP).
def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, accurate at both ends (Maechler 2012)."""
    return torch.where(a > -math.log(2), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


DIGITS_PRESET = dict(
    settings=dict(num_steps=1000, schedule="cosine", prediction="v", network="mlp", hidden_dim=256, num_layers=3,
                  shift=0.5, scale=0.5, clip=(0.0, 1.0), levels=17),
    engine="diffusion", engine_settings={"ema_decay": 0.995}, data="digits", epochs=250, batch_size=128, lr=1e-3,
)


@register("ddpm", x_dim=2, num_steps=10, hidden_dim=32, num_layers=1, train=DIGITS_PRESET)
class DDPM(Model):
    """A denoising diffusion model: reverse chain x_T -> ... -> x_1 -> x (the program) and the
    fixed forward process as guide (see the module docstring).

    - `x_dim`: the data's shape (an int for vectors); `x_shape=` says the same;
    - `num_steps` T, `schedule` (``"linear"`` / ``"cosine"``), `variance` (``"beta"`` /
      ``"posterior"``), `prediction` (``"eps"`` / ``"x0"`` / ``"v"``);
    - `net`: a module (x_t, t, y) -> shape of x; default `models.unet.noise_network(network, ...)`
      with `network` ``"mlp"`` (`hidden_dim`, `num_layers`) or ``"unet"`` (`channels`);
    - `num_classes`: labels for a conditional model p(x | y) (None: unconditional);
    - `shift`, `scale`: data = shift + scale * x_0 (the diffusion runs on x_0);
    - `clip`: (low, high) in data space: `sample` clips its estimates of x_0 to this range
      (sampling only; the program and the ELBO never clip);
    - `levels`: grey levels of discrete data in [0, 1] (values k / (levels - 1), as `pgm.data`
      stores them; None: continuous data). With levels, the bound's last term -log p(x | x_1) is
      the discretized Gaussian of Ho et al. (2020): the probability of x's quantization cell
      (the outer cells open to +-infinity), so `elbo` and `bits_per_dim` bound the
      log-probability of the discrete data (bits/dim >= 0) rather than a density.

    >>> import torch
    >>> ddpm = DDPM(x_dim=2, num_steps=3, hidden_dim=8, num_layers=1)
    >>> [n for n in ddpm.structure().latent], ddpm.structure().observed
    (['x_3', 'x_2', 'x_1'], ('x',))
    >>> ddpm.sample(5).shape
    torch.Size([5, 2])
    """

    def __init__(
        self,
        x_dim=2,
        num_steps: int = 1000,
        schedule: str = "linear",
        *,
        variance: str = "beta",
        prediction: str = "eps",
        net: nn.Module | None = None,
        network: str = "mlp",
        hidden_dim: int = 128,
        num_layers: int = 3,
        channels: Sequence[int] = (32, 64),
        num_classes: int | None = None,
        shift: float = 0.0,
        scale: float = 1.0,
        clip: tuple[float, float] | None = None,
        levels: int | None = None,
        x_shape=None,
    ) -> None:
        super().__init__()
        shape_arg = ("x_dim", x_dim) if x_shape is None else ("x_shape", x_shape)
        value = shape_arg[1]
        name = "x_dim" if x_shape is None else "x_shape"
        shape = (checks.positive_int(name, value),) if x_shape is None or isinstance(value, int) else checks.shape(name, value)
        channels = checks.dims("channels", channels)
        self.x_shape = shape
        self.num_steps = _positive_int("num_steps", num_steps)
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
        if variance not in VARIANCES:
            raise ValueError(f"variance: expected one of {VARIANCES}, got {variance!r}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction: expected one of {PREDICTIONS}, got {prediction!r}")
        if num_classes is not None:
            checks.int_at_least("num_classes", num_classes, 2)
        if network not in NETWORKS:
            raise ValueError(f"network: expected one of {NETWORKS}, got {network!r}")
        shift = checks.finite_float("shift", shift)
        scale = checks.finite_float("scale", scale, positive=True)
        if clip is not None:
            if not (isinstance(clip, (tuple, list)) and len(clip) == 2 and float(clip[0]) < float(clip[1])):
                raise ValueError(f"clip: expected None or (low, high) with low < high, got {clip!r}")
            clip = (float(clip[0]), float(clip[1]))
        if net is not None and not callable(net):
            raise TypeError(f"net: expected an nn.Module (x_t, t, y) -> shape of x, got {type(net).__name__}")
        self.schedule, self.variance, self.prediction = schedule, variance, prediction
        self.num_classes = num_classes
        self.conditional = num_classes is not None  # trained on (x, labels)
        self.shift, self.scale, self.clip = float(shift), float(scale), clip
        self.levels = None if levels is None else checks.int_at_least("levels", levels, 2)
        if net is None:
            options = dict(hidden_dim=hidden_dim, num_layers=num_layers) if network == "mlp" else dict(channels=tuple(channels))
            net = noise_network(network, self.x_shape, num_classes=num_classes, **options)
        self.net = net
        self._set_schedule(beta_schedule(schedule, self.num_steps))

    # ------------------------------------------------------------------ the schedule
    def _set_schedule(self, betas: torch.Tensor) -> None:
        T = self.num_steps
        beta = torch.cat([torch.zeros(1, dtype=torch.float64), betas.to(torch.float64)])  # index t = 0..T
        alpha = 1 - beta
        alpha_bar = torch.cumprod(alpha, 0)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        post_var = torch.zeros(T + 1, dtype=torch.float64)
        post_var[1:] = beta[1:] * (1 - prev[1:]) / (1 - alpha_bar[1:])
        if self.variance == "beta":
            sigma2 = beta.clone()
        else:
            sigma2 = post_var.clone()
            sigma2[1] = beta[1]
        buffers = {
            "betas": beta,
            "alphas_bar": alpha_bar,
            "sqrt_alphas_bar": alpha_bar.sqrt(),
            "sqrt_one_minus_alphas_bar": (1 - alpha_bar).sqrt(),
            "alphas_bar_prev": prev,
            "posterior_variance": post_var,
            "sigmas": sigma2.sqrt(),
            # q(x_{t-1} | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, posterior_variance)
            "coef_x0": prev.sqrt() * beta / (1 - alpha_bar).clamp(min=1e-300),
            "coef_xt": alpha.sqrt() * (1 - prev) / (1 - alpha_bar).clamp(min=1e-300),
        }
        # The ELBO's term at step t is vlb_const[t] + vlb_coef[t] |x_0 - x0_hat|^2 (see vlb_term).
        d = math.prod(self.x_shape)
        var_p, var_q = sigma2, post_var
        const = 0.5 * d * (torch.log(var_p / var_q.clamp(min=1e-30)) + var_q / var_p - 1)
        coef = 0.5 * buffers["coef_x0"] ** 2 / var_p
        const[1] = 0.5 * d * math.log(2 * math.pi) + 0.5 * d * torch.log(var_p[1]) + d * math.log(self.scale)
        coef[1] = 0.5 / var_p[1]
        const[0], coef[0] = 0.0, 0.0  # no step 0
        buffers["vlb_const"], buffers["vlb_coef"] = const, coef
        dtype = torch.get_default_dtype()
        for name, value in buffers.items():
            self.register_buffer(name, value.to(dtype), persistent=False)

    def _at(self, name: str, t, like: torch.Tensor) -> torch.Tensor:
        """Buffer `name` at step(s) t (an int, or a long tensor of the batch's shape), shaped to
        broadcast against `like` (*batch, *x_shape)."""
        buf = getattr(self, name)
        if isinstance(t, int):
            return buf[t]
        return buf[t].reshape(*t.shape, *([1] * len(self.x_shape)))

    # ------------------------------------------------------------------ the network's output
    def _net(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        k = len(self.x_shape)
        batch = x_t.shape[: x_t.dim() - k]
        tt = torch.as_tensor(t, device=x_t.device).to(x_t.dtype).expand(batch)
        if y is not None and self.num_classes is None:
            raise ValueError("y: this DDPM is unconditional (num_classes=None); it takes no labels")
        out = self.net(x_t, tt, y) if self.num_classes is not None else self.net(x_t, tt)
        if out.shape != x_t.shape:
            raise ValueError(f"net: expected an output shaped like x_t {tuple(x_t.shape)}, got {tuple(out.shape)}")
        return out

    def to_x0_eps(self, x_t: torch.Tensor, t, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat) from the network's output at step t under `prediction`."""
        a, s = self._at("sqrt_alphas_bar", t, x_t), self._at("sqrt_one_minus_alphas_bar", t, x_t)
        if self.prediction == "eps":
            return (x_t - s * out) / a, out
        if self.prediction == "x0":
            return out, (x_t - a * out) / s
        return a * x_t - s * out, s * x_t + a * out  # v = a eps - s x0

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        """What the network regresses on at step t: eps, x0 or v."""
        if self.prediction == "eps":
            return eps
        if self.prediction == "x0":
            return x0
        return self._at("sqrt_alphas_bar", t, x0) * eps - self._at("sqrt_one_minus_alphas_bar", t, x0) * x0

    def q_sample(self, x0: torch.Tensor, t, eps: torch.Tensor | None = None) -> torch.Tensor:
        """A draw of x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)."""
        eps = torch.randn_like(x0) if eps is None else eps
        return self._at("sqrt_alphas_bar", t, x0) * x0 + self._at("sqrt_one_minus_alphas_bar", t, x0) * eps

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t) -> torch.Tensor:
        """The mean of q(x_{t-1} | x_t, x_0)."""
        return self._at("coef_x0", t, x_t) * x0 + self._at("coef_xt", t, x_t) * x_t

    def reverse_mean(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        """mu_theta(x_t, t, y): the reverse step's mean (the posterior mean at x0_hat)."""
        x0, _ = self.to_x0_eps(x_t, t, self._net(x_t, t, y))
        return self.posterior_mean(x0, x_t, t)

    def to_data(self, x0: torch.Tensor) -> torch.Tensor:
        return self.shift + self.scale * x0

    def from_data(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    # ------------------------------------------------------------------ the program and guide
    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, *self.x_shape, dtype=self.dtype, device=self.device),)

    def _labels(self, y, n: int, device) -> torch.Tensor | None:
        if y is None:
            return None
        if self.num_classes is None:
            raise ValueError("y: this DDPM is unconditional (num_classes=None); it takes no labels")
        y = torch.as_tensor(y, device=device)
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise ValueError("y: expected integer class labels")
        y = y.long()
        if y.dim() == 0:
            y = y.expand(n)
        if y.shape != (n,):
            raise ValueError(f"y: expected one label per datum, shape ({n},), got {tuple(y.shape)}")
        if bool(((y < 0) | (y > self.num_classes)).any()):
            raise ValueError(f"y: expected labels in 0..{self.num_classes - 1} (or {self.num_classes}: no label), got "
                             f"{y.min().item()}..{y.max().item()}")
        return y

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """The reverse chain: x_T ~ N(0, I), x_{t-1} ~ N(mu_theta(x_t, t, y), sigma_t^2), x observed."""
        T, k = self.num_steps, len(self.x_shape)
        y = self._labels(y, x.shape[0], x.device)
        zero = torch.zeros(self.x_shape, dtype=x.dtype, device=x.device)
        with pyro.plate("data", x.shape[0]):
            x_t = pyro.sample(f"x_{T}", dist.Normal(zero, 1.0).to_event(k))
            for t in range(T, 1, -1):
                x_t = pyro.sample(f"x_{t - 1}", dist.Normal(self.reverse_mean(x_t, t, y), self.sigmas[t]).to_event(k))
            mean = self.to_data(self.reverse_mean(x_t, 1, y))
            pyro.sample("x", dist.Normal(mean, self.scale * self.sigmas[1]).to_event(k), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """The fixed forward process q(x_1..T | x_0): x_t ~ N(sqrt(1 - beta_t) x_{t-1}, beta_t I)."""
        k = len(self.x_shape)
        x_t = self.from_data(x)
        with pyro.plate("data", x.shape[0]):
            for t in range(1, self.num_steps + 1):
                beta = self.betas[t]
                x_t = pyro.sample(f"x_{t}", dist.Normal((1 - beta).sqrt() * x_t, beta.sqrt()).to_event(k))

    def chain_sites(self) -> list[str]:
        """The reverse chain's sites in program order, ``x_T, ..., x_1, x``: a Markov chain of
        identically shaped Gaussian steps, which a drawing may collapse to
        x_T -> ... -> x_t -> ... -> x_1 -> x."""
        return [f"x_{t}" for t in range(self.num_steps, 0, -1)] + ["x"]

    def validate_data(self, *args, chunk_size: int = 4096, **kwargs) -> None:
        """Cheap checks (the whole chain is not traced): finite data of the right shape, labels in range."""
        if not args or not torch.is_tensor(args[0]):
            raise ValueError("data: expected a tensor x (and, for a conditional DDPM, labels y)")
        x = args[0]
        if tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"data: expected shape (n, *{self.x_shape}), got {tuple(x.shape)}")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"data: {int((~torch.isfinite(x)).sum())} non-finite values (NaN or inf)")
        if len(args) > 1:
            self._labels(args[1], x.shape[0], x.device)

    # ------------------------------------------------------------------ the bound, in closed form
    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_T | x_0) || N(0, I)) per datum (the ELBO's L_T term, no parameters)."""
        ab = self.alphas_bar[self.num_steps]
        dims = tuple(range(x0.dim() - len(self.x_shape), x0.dim()))
        return 0.5 * (ab * x0.pow(2).sum(dims) + math.prod(self.x_shape) * (-ab - torch.log1p(-ab)))

    def vlb_term(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The ELBO's term at step t per datum, in closed form given x_t (nats): for t >= 2,
        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)); for t = 1, -log p(x | x_1) in data space
        (the Jacobian of `scale` included). `out`: the network's output at (x_t, t)."""
        # Both Gaussians have fixed variances and their means differ by coef_x0 (x0 - x0_hat), so the
        # term needs one squared distance per datum.
        # KL: 0.5 d (log(var_p / var_q) + var_q / var_p - 1) + 0.5 c0^2 sq / var_p; at t = 1 the
        # negative log-likelihood 0.5 d log(2 pi var_p) + 0.5 sq / var_p + d log(scale): both are
        # a constant plus a coefficient times sq, per step (vlb_const, vlb_coef; _set_schedule).
        dims = tuple(range(x0.dim() - len(self.x_shape), x0.dim()))
        if self.prediction == "x0":
            x0_hat = out
        else:  # only x0_hat of to_x0_eps: this runs at every training step (the engine's ELBO metric)
            a, s = self._at("sqrt_alphas_bar", t, x_t), self._at("sqrt_one_minus_alphas_bar", t, x_t)
            x0_hat = (x_t - s * out) / a if self.prediction == "eps" else a * x_t - s * out
        sq = (x0 - x0_hat).pow(2).sum(dims)
        term = self.vlb_const[t] + self.vlb_coef[t] * sq
        if self.levels is not None:  # discrete data: the t = 1 term is a cell's probability
            first = t == 1
            if bool(first.any()):
                term = torch.where(first, self.discrete_nll(x0, x0_hat), term)
        return term

    def discrete_nll(self, x0: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """-log P(x | x_1) of data on the `levels` grid (nats per datum, shape (*batch,)): each unit's
        probability is the mass of N(mean, sigma_1^2) over its quantization cell x0 +- half a
        level (in the diffusion's units), the lowest and highest cells open to -+infinity. `x0`
        and `mean` (the predicted x_0) are in the diffusion's units, shape (*batch, *x_shape)."""
        half = 0.5 / ((self.levels - 1) * self.scale)
        sigma = self.sigmas[1]
        k = torch.round(self.to_data(x0) * (self.levels - 1))
        inf = torch.full_like(x0, math.inf)
        low = torch.where(k <= 0, -inf, (x0 - half - mean) / sigma)
        high = torch.where(k >= self.levels - 1, inf, (x0 + half - mean) / sigma)
        # log(Phi(high) - Phi(low)), from the tail on the side where both bounds lie away from it
        upper_side = low > 0
        a = torch.where(upper_side, -low, high)  # the larger of the two, mirrored when low > 0
        b = torch.where(upper_side, -high, low)
        log_a, log_b = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
        log_p = log_a + _log1mexp(log_b - log_a)
        dims = tuple(range(x0.dim() - len(self.x_shape), x0.dim()))
        return -log_p.sum(dims)

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, y: torch.Tensor | None = None, *, chunk: int = 64) -> torch.Tensor:
        """The evidence lower bound of each datum (nats, shape (batch,)): L_T and the KL terms in
        closed form, one draw of x_t ~ q(x_t | x_0) per step (the estimate of Ho et al. 2020 and
        Nichol & Dhariwal 2021); with `levels`, a bound on the log-probability of the discrete
        data (see the class docstring). `chunk`: steps evaluated per network call."""
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"x: expected a tensor of shape (n, *{self.x_shape}), got {tuple(getattr(x, 'shape', ()))}")
        x = x.to(device=self.device, dtype=self.dtype)
        if self.levels is not None:
            grid = x * (self.levels - 1)
            if bool(((grid - grid.round()).abs() > 1e-4).any() | (x < 0).any() | (x > 1).any()):
                raise ValueError(f"x: expected data on the {self.levels}-level grid k / {self.levels - 1} in [0, 1] "
                                 f"(levels={self.levels}), got values such as {float(x.flatten()[0]):.4g}")
        n = x.shape[0]
        y = self._labels(y, n, x.device)
        x0 = self.from_data(x)
        total = self.prior_kl(x0)
        for start in range(1, self.num_steps + 1, chunk):
            ts = torch.arange(start, min(start + chunk, self.num_steps + 1), device=x.device)
            t = ts[:, None].expand(len(ts), n)  # (steps, n)
            x0s = x0.expand(len(ts), *x0.shape)
            x_t = self.q_sample(x0s, t)
            out = self._net(x_t.reshape(-1, *self.x_shape), t.reshape(-1),
                            None if y is None else y.expand(len(ts), n).reshape(-1)).reshape(x_t.shape)
            total = total + self.vlb_term(x0s, x_t, t, out).sum(0)
        return -total

    def bits_per_dim(self, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
        """-ELBO in bits per dimension, averaged over the data (with `levels`, of the discrete
        data, >= 0; on continuous data it bounds a density, so it may be negative)."""
        return float(-self.elbo(x, y).mean()) / (math.prod(self.x_shape) * math.log(2))

    # ------------------------------------------------------------------ sampling
    def predict(self, x_t: torch.Tensor, t: int, y=None, guidance: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat) at step t, with classifier-free guidance of weight w = `guidance`:
        eps = (1 + w) eps(x_t, y) - w eps(x_t) (only when w != 0 and labels are given); x0_hat
        clipped to `clip` (data space) when the model has one, and eps_hat recomputed from it."""
        out = self._net(x_t, t, y)
        x0, eps = self.to_x0_eps(x_t, t, out)
        if guidance != 0.0 and y is not None:
            _, eps_u = self.to_x0_eps(x_t, t, self._net(x_t, t, None))
            eps = (1.0 + guidance) * eps - guidance * eps_u
            ab = self.alphas_bar[t]
            x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        if self.clip is not None:
            low, high = (self.clip[0] - self.shift) / self.scale, (self.clip[1] - self.shift) / self.scale
            x0 = x0.clamp(low, high)
            ab = self.alphas_bar[t]
            eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return x0, eps

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, eta: float = 0.0, guidance: float = 0.0, label=None, *,
               spacing: str = "trailing", progress: bool | None = None, x_T: torch.Tensor | None = None) -> torch.Tensor:
        """`n` draws, shape (n, *x_shape), in data space.

        - `steps` None: ancestral sampling through all T steps (the program's reverse chain; the
          last step returns its mean, as Ho et al. do). `steps` S: DDIM (Song et al. 2021) on the
          S steps `ddim_timesteps(T, S, spacing)` with noise `eta` (0: deterministic; 1 with
          S = T: ancestral sampling with sigma_t^2 = beta~_t).
        - `label`: an int (all samples) or n labels, for a conditional model (None:
          unconditional); `guidance` w: classifier-free guidance (1 + w) eps(x, c) - w eps(x).
        - `progress`: a progress bar (None: when there are 100 steps or more and stderr is a terminal).

        DDIM's first jump uses x0_hat at t = T, where alpha_bar_T is tiny (2.4e-9 for the cosine
        schedule at T = 1000): from a noise prediction, x0_hat = (x_T - sqrt(1 - alpha_bar_T)
        eps) / sqrt(alpha_bar_T) multiplies the network's error by 1 / sqrt(alpha_bar_T). Use
        ``prediction="v"`` (no division) or a `clip` range for DDIM with few steps.
        - `x_T`: the starting noise (default N(0, I) draws).
        """
        _positive_int("n", n)
        if not isinstance(eta, (int, float)) or isinstance(eta, bool) or not eta >= 0:
            raise ValueError(f"eta: expected a non-negative number, got {eta!r}")
        if not isinstance(guidance, (int, float)) or isinstance(guidance, bool) or not math.isfinite(guidance):
            raise ValueError(f"guidance: expected a finite number (w), got {guidance!r}")
        if guidance != 0.0 and label is None:
            raise ValueError("guidance: classifier-free guidance needs a label (label=...)")
        if steps is None and eta != 0.0:
            raise ValueError("eta: applies to DDIM sampling only; give steps= as well")
        y = self._labels(label, n, self.device)
        ts = list(range(self.num_steps, 0, -1)) if steps is None else ddim_timesteps(self.num_steps, steps, spacing)
        if x_T is None:
            x = torch.randn(n, *self.x_shape, device=self.device, dtype=self.dtype)
        else:
            if tuple(x_T.shape) != (n, *self.x_shape):
                raise ValueError(f"x_T: expected shape {(n, *self.x_shape)}, got {tuple(x_T.shape)}")
            x = x_T.to(device=self.device, dtype=self.dtype)
        show = len(ts) >= 100 and sys.stderr.isatty() if progress is None else bool(progress)
        bar = tqdm(total=len(ts), desc="sampling" if steps is None else f"DDIM {len(ts)} steps", disable=not show, leave=False)
        for i, t in enumerate(ts):
            x0, eps = self.predict(x, t, y, float(guidance))
            if steps is None:  # ancestral
                mean = self.posterior_mean(x0, x, t)
                x = mean + self.sigmas[t] * torch.randn_like(x) if t > 1 else mean
            else:
                s = ts[i + 1] if i + 1 < len(ts) else 0
                ab_t, ab_s = self.alphas_bar[t], self.alphas_bar[s]
                sigma = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).clamp(min=0).sqrt()
                x = ab_s.sqrt() * x0 + (1 - ab_s - sigma**2).clamp(min=0).sqrt() * eps
                if s > 0 and eta > 0:
                    x = x + sigma * torch.randn_like(x)
            bar.update(1)
        bar.close()
        return self.to_data(x)

    def extra_repr(self) -> str:
        return (f"x_shape={self.x_shape}, num_steps={self.num_steps}, schedule={self.schedule!r}, "
                f"variance={self.variance!r}, prediction={self.prediction!r}, num_classes={self.num_classes}")


@register("ddpm_conditional", x_dim=2, num_steps=10, hidden_dim=32, num_layers=1, num_classes=10,
          train={**DIGITS_PRESET, "settings": {**DIGITS_PRESET["settings"], "num_classes": 10}})
class ConditionalDDPM(DDPM):
    """A class-conditional DDPM p(x | y) (`DDPM` with `num_classes`, 10 by default), trained with
    label dropout on batches (x, y) and sampled with classifier-free guidance.

    >>> ConditionalDDPM(x_dim=2, num_steps=3, hidden_dim=8, num_layers=1).sample(4, label=3, guidance=2.0).shape
    torch.Size([4, 2])
    """

    def __init__(self, x_dim=2, num_steps: int = 1000, schedule: str = "linear", *, num_classes: int = 10, **kwargs) -> None:
        super().__init__(x_dim, num_steps, schedule, num_classes=num_classes, **kwargs)
