"""Small models shared by the tests of `inference.fit` and of run directories."""

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pgm


class LearnableNormal(pgm.Model):
    """x_i ~ Normal(loc, exp(log_scale)) per dimension; the MLE is the sample mean and std.

    `loc` starts at a standard-normal draw, or at zero with `random_init=False` (a model whose
    initial state does not depend on the random seed). `x` is `(N, dim)`.
    """

    def __init__(self, dim=3, random_init=True):
        super().__init__()
        self.dim = dim
        self.loc = nn.Parameter(torch.randn(dim) if random_init else torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.loc, self.log_scale.exp()).to_event(1), obs=x)

    def example_inputs(self, batch_size=2):
        return (torch.zeros(batch_size, self.dim, dtype=self.dtype, device=self.device),)
