"""Noise-conditional score network (NCSN; Song & Ermon 2019): a score-based model.

The model is a network s_theta(x, sigma) ~ grad_x log q_sigma(x), the score of the data
convolved with N(0, sigma^2 I), at each noise level of a decreasing sequence `sigmas`. It has no
energy and no normalised density, only a score: its program declares x under the flat
(Lebesgue) measure, so its graph is the single observed node x in the data plate (the way
`inference.langevin.ScoreNetwork` is drawn); the network is not a node (DESIGN.md).

- Training: multi-level denoising score matching,
  ``inference.ScoreMatching(ncsn, method="denoising")``, which takes the model's own `sigmas`
  (``pgm train ncsn`` uses the ``mdsm`` engine preset);
- sampling: annealed Langevin dynamics (`inference.Langevin(method="annealed")`), `sample(n)`.

Parameterisation (Song & Ermon 2020, technique 3): s_theta(x, sigma) = net(x, c(sigma)) / sigma
with c(sigma) = 1000 (log sigma - log sigma_min) / (log sigma_max - log sigma_min), a "time" in
[0, 1000] that the networks of `models/unet.py` embed with sinusoids.
"""

from __future__ import annotations

import math
import sys
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

from models.registry import register
from models import checks
from models.unet import NETWORKS, noise_network
from pgm import Model

__all__ = ["NCSN", "geometric_sigmas"]


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> list[float]:
    """`num_levels` noise levels from `sigma_max` down to `sigma_min`, equally spaced in log.

    >>> [round(s, 3) for s in geometric_sigmas(1.0, 0.01, 3)]
    [1.0, 0.1, 0.01]
    """
    if not (isinstance(num_levels, int) and not isinstance(num_levels, bool) and num_levels >= 2):
        raise ValueError(f"num_levels: expected an int >= 2, got {num_levels!r}")
    if not (0 < sigma_min < sigma_max < math.inf):
        raise ValueError(f"sigma_max, sigma_min: expected 0 < sigma_min < sigma_max, got {sigma_max!r}, {sigma_min!r}")
    ratio = (sigma_min / sigma_max) ** (1.0 / (num_levels - 1))
    return [sigma_max * ratio**i for i in range(num_levels)]


@register(
    "ncsn", x_dim=2, hidden_dim=32, num_layers=1,
    train=dict(settings=dict(hidden_dim=128, num_layers=3, sigma_max=3.0, sigma_min=0.01, num_levels=10),
               engine="mdsm", data="moons", epochs=60, batch_size=256, lr=1e-3),
)
class NCSN(Model):
    """A noise-conditional score network over data of shape `x_dim` (see the module docstring).

    - `sigmas`: the decreasing noise levels, or `sigma_max`, `sigma_min`, `num_levels` for a
      geometric sequence (default 3.0 to 0.01 in 10 levels; Song & Ermon 2020 advise sigma_max
      about the largest distance between data points);
    - `net`: a module (x, c, y=None) -> shape of x; default `models.unet.noise_network(network)`,
      ``"mlp"`` (`hidden_dim`, `num_layers`) or ``"unet"`` (`channels`);
    - sampling: `steps_per_level` T, `step_size` eps (the step at level i is eps sigma_i^2 /
      sigma_L^2; default 0.2 sigma_L^2, i.e. 2e-5 at sigma_L = 0.01, as in Song & Ermon 2019),
      `final_denoise` (end with x + sigma_L^2 s(x, sigma_L); Song & Ermon 2020).

    >>> import torch
    >>> ncsn = NCSN(x_dim=2, hidden_dim=8, num_layers=1, num_levels=3)
    >>> ncsn.score(torch.zeros(4, 2), torch.full((4,), 0.5)).shape, sorted(ncsn.capabilities())
    (torch.Size([4, 2]), ['continuous', 'normalized', 'program', 'sample'])
    """

    def __init__(
        self,
        x_dim=2,
        sigmas: Sequence[float] | None = None,
        *,
        sigma_max: float = 3.0,
        sigma_min: float = 0.01,
        num_levels: int = 10,
        net: nn.Module | None = None,
        network: str = "mlp",
        hidden_dim: int = 128,
        num_layers: int = 3,
        channels: Sequence[int] = (32, 64),
        steps_per_level: int = 100,
        step_size: float | None = None,
        final_denoise: bool = True,
        x_shape=None,
    ) -> None:
        super().__init__()
        value = x_dim if x_shape is None else x_shape
        name = "x_dim" if x_shape is None else "x_shape"
        shape = (checks.positive_int(name, value),) if x_shape is None or isinstance(value, int) else checks.shape(name, value)
        channels = checks.dims("channels", channels)
        self.x_shape = shape
        from inference.langevin import check_sigmas

        self.sigmas = check_sigmas(sigmas) if sigmas is not None else geometric_sigmas(sigma_max, sigma_min, num_levels)
        if len(self.sigmas) < 2:
            raise ValueError(f"sigmas: expected at least two noise levels, got {self.sigmas}")
        if network not in NETWORKS:
            raise ValueError(f"network: expected one of {NETWORKS}, got {network!r}")
        if not isinstance(steps_per_level, int) or isinstance(steps_per_level, bool) or steps_per_level < 1:
            raise ValueError(f"steps_per_level: expected a positive int, got {steps_per_level!r}")
        if step_size is not None and not (isinstance(step_size, (int, float)) and step_size > 0):
            raise ValueError(f"step_size: expected a positive number, got {step_size!r}")
        if net is not None and not callable(net):
            raise TypeError(f"net: expected an nn.Module (x, c) -> shape of x, got {type(net).__name__}")
        self.steps_per_level = steps_per_level
        self.step_size = 0.2 * self.sigmas[-1] ** 2 if step_size is None else float(step_size)
        self.final_denoise = bool(final_denoise)
        if net is None:
            options = dict(hidden_dim=hidden_dim, num_layers=num_layers) if network == "mlp" else dict(channels=tuple(channels))
            net = noise_network(network, self.x_shape, **options)
        self.net = net
        self._log_range = (math.log(self.sigmas[-1]), math.log(self.sigmas[0]))

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, *self.x_shape, dtype=self.dtype, device=self.device),)

    def model(self, x: torch.Tensor):
        """x under the flat measure: the model is its score, not a density."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.ImproperUniform(constraints.real, (), self.x_shape), obs=x)

    def noise_time(self, sigma: torch.Tensor) -> torch.Tensor:
        """c(sigma): the noise level as the network's "time", 0 at sigma_min and 1000 at sigma_max."""
        low, high = self._log_range
        return 1000.0 * (sigma.log() - low) / (high - low)

    def score(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        """s_theta(x, sigma) = net(x, c(sigma)) / sigma; `sigma`: a float or one level per datum
        (default: the smallest level)."""
        batch = x.shape[: x.dim() - len(self.x_shape)]
        sigma = self.sigmas[-1] if sigma is None else sigma
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(batch)
        out = self.net(x, self.noise_time(sigma))
        return out / sigma.reshape(*batch, *([1] * len(self.x_shape)))

    def missing(self, capability: str) -> str | None:
        if capability in ("energy", "log_prob"):
            return "it is a score network: it gives the gradient of the log density, not the density"
        return super().missing(capability)

    def sampler(self, *, steps_per_level: int | None = None, step_size: float | None = None,
                final_denoise: bool | None = None, progress: bool = False, annealed: bool = True):
        """The annealed Langevin sampler (`inference.Langevin`) with this model's levels and step
        sizes (`annealed=False`: plain Langevin at the smallest level, step size eps, for
        steps_per_level * L steps)."""
        from inference.langevin import Langevin

        steps = self.steps_per_level if steps_per_level is None else steps_per_level
        eps = self.step_size if step_size is None else step_size
        if annealed:
            return Langevin(self, method="annealed", sigmas=self.sigmas, step_size=eps, num_steps=steps,
                            final_denoise=self.final_denoise if final_denoise is None else final_denoise,
                            progress=progress)
        return Langevin(self, method="ula", step_size=eps, num_steps=steps * len(self.sigmas),
                        init_scale=self.sigmas[0], progress=progress)

    @torch.no_grad()
    def sample(self, n: int, *, steps_per_level: int | None = None, step_size: float | None = None,
               final_denoise: bool | None = None, init: torch.Tensor | None = None, progress: bool | None = None) -> torch.Tensor:
        """`n` draws by annealed Langevin dynamics from N(0, sigma_max^2 I) (or from `init`), shape
        (n, *x_shape). `progress` (None: when there are 1000 steps or more and stderr is a terminal) shows a bar."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        steps = self.steps_per_level if steps_per_level is None else steps_per_level
        show = steps * len(self.sigmas) >= 1000 and sys.stderr.isatty() if progress is None else bool(progress)
        sampler = self.sampler(steps_per_level=steps, step_size=step_size, final_denoise=final_denoise, progress=show)
        if init is not None:
            if tuple(init.shape) != (n, *self.x_shape):
                raise ValueError(f"init: expected shape {(n, *self.x_shape)}, got {tuple(init.shape)}")
            return sampler.sample(data=init)
        return sampler.sample(n)

    def extra_repr(self) -> str:
        return f"x_shape={self.x_shape}, sigmas={self.sigmas[0]:.3g}..{self.sigmas[-1]:.3g} ({len(self.sigmas)} levels)"
