"""Generative adversarial network: the generative process of a GAN as a Pyro program.

z ~ N(0, I), x = G(z): the generator gives an implicit distribution, written as a Delta at
G(z). The discriminator is not part of the generative process: it is a network the
adversarial engine trains beside the program. The graph is z -> x, the same as a VAE's.
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from models import checks
from models.nets import MLP
from models.registry import register
from pgm import Model

__all__ = ["GAN"]


@register("gan", x_dim=64, z_dim=8)
class GAN(Model):
    """A GAN with generator `G: z_dim -> x_dim` and discriminator `D: x_dim -> 1` (logit).

    `generator` and `discriminator` default to MLPs with `hidden_dims`.

    >>> gan = GAN(x_dim=4, z_dim=2, hidden_dims=(8,))
    >>> gan.sample(3).shape
    torch.Size([3, 4])
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int] = (128, 128),
        generator: nn.Module | None = None,
        discriminator: nn.Module | None = None,
    ) -> None:
        super().__init__()
        x_dim, z_dim = checks.positive_int("x_dim", x_dim), checks.positive_int("z_dim", z_dim)
        hidden_dims = checks.dims("hidden_dims", hidden_dims)
        checks.callable_or_none("generator", generator)
        checks.callable_or_none("discriminator", discriminator)
        self.x_dim, self.z_dim = x_dim, z_dim
        self.generator = generator if generator is not None else MLP(z_dim, hidden_dims, x_dim)
        self.discriminator = discriminator if discriminator is not None else MLP(x_dim, hidden_dims, 1)

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, self.x_dim, dtype=self.dtype, device=self.device),)

    def model(self, x=None):
        n = x.shape[0] if x is not None else 1
        zero = torch.zeros(self.z_dim, dtype=self.dtype, device=self.device)
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(zero, 1.0).to_event(1))
            return pyro.sample("x", dist.Delta(self.generator(z), event_dim=1), obs=x)
