"""Generative adversarial network: the generative process of a GAN as a Pyro program.

z ~ N(0, I), x = G(z): the generator gives an implicit distribution, written as a Delta (a point
mass) at G(z) for the observed x. The program is the generator only: the discriminator is not
part of the generative process but a learned two-sample test that `inference.Adversarial` owns
and trains beside it. The graph is z -> x, the same as a VAE's.

An implicit program has no likelihood (p(x | z) is a point mass), so ELBO engines refuse it and
`inference.Adversarial` trains it. Give the same generator a likelihood, ``noise=sigma``
(x ~ N(G(z), sigma^2 I)) and the program gains a density and a guide q(z | x) (an encoder): SVI
then trains the same z -> x program, a VAE with the GAN's generator as its decoder.
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from models import checks
from models.generators import ConvGenerator, MLPGenerator
from models.registry import register
from pgm import Model

__all__ = ["GAN"]


def _image_side(x_dim: int) -> int | None:
    side = math.isqrt(x_dim)
    return side if side * side == x_dim and side >= 8 and side % 4 == 0 else None


@register(
    "gan", x_dim=64, z_dim=8, hidden_dims=(64,),
    # digits: the R1 penalty (gamma 1) on the discriminator; with these seeds, 1,000 samples against
    # the test digits: FD 4.4, IS 7.7, recall 0.81 (without it FD 32-38, IS 5.9-6.1, recall 0.18-0.41).
    train=dict(settings={"z_dim": 16, "hidden_dims": (256, 256)}, engine="gan",
               engine_settings={"r1": 1.0}, data="digits", epochs=100, batch_size=64, lr=5e-4,
               # 2D toys: a 2D latent and 128-wide MLPs on both sides; 47 epochs of 8,000 points in
               # batches of 256 is about 1,500 generator steps (tests/test_gan.py checks the modes).
               variants={"8gaussians": dict(settings={"z_dim": 2, "hidden_dims": (128, 128)},
                                            engine_settings={"hidden_dims": (128, 128), "r1": 0.0},
                                            epochs=47, batch_size=256, lr=1e-3)}),
)
class GAN(Model):
    """A GAN's generator as a program: z ~ N(0, I_z_dim), x = G(z) (a Delta at G(z)).

    `generator`: a module ``z (N, z_dim) -> x (N, *x_shape)``, or ``"mlp"``, ``"conv"``
    (DCGAN-style, for flattened square images, side a multiple of 4, values in [0, 1]), or
    ``"auto"``: conv for such images of side 16 or more (MNIST's 784), else an MLP with
    `hidden_dims` (the 8x8 digits, where it trains better on a CPU budget); the output is a
    sigmoid for square images (values in [0, 1]) and the identity otherwise (2D toys). `noise`: None for the implicit model; a positive float gives x a
    Normal likelihood of that std and the model a guide (an MLP `encoder`), for SVI.

    >>> gan = GAN(x_dim=4, z_dim=2, hidden_dims=(8,))
    >>> gan.sample(3).shape
    torch.Size([3, 4])
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int] = (128, 128),
        generator: nn.Module | str = "auto",
        *,
        channels: int = 32,
        noise: float | None = None,
        encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        x_dim, z_dim = checks.positive_int("x_dim", x_dim), checks.positive_int("z_dim", z_dim)
        hidden_dims = checks.dims("hidden_dims", hidden_dims)
        channels = checks.positive_int("channels", channels)
        if noise is not None:
            noise = checks.finite_float("noise", noise, positive=True)
        self.x_dim, self.z_dim, self.noise = x_dim, z_dim, None if noise is None else float(noise)
        side = _image_side(x_dim)
        if isinstance(generator, nn.Module):
            self.generator = generator
        elif generator in ("auto", "mlp", "conv"):
            kind = ("conv" if side is not None and side >= 16 else "mlp") if generator == "auto" else generator
            if kind == "conv":
                if side is None:
                    raise ValueError(f"generator: 'conv' needs a flattened square image (side a multiple of 4), got x_dim={x_dim}")
                self.generator = ConvGenerator(z_dim, (1, side, side), channels=channels, out_shape=x_dim)
            else:
                self.generator = MLPGenerator(z_dim, hidden_dims, x_dim, output="sigmoid" if side else "identity")
        else:
            raise TypeError(f"generator: expected an nn.Module or 'auto', 'mlp', 'conv', got {generator!r}")
        if self.noise is not None:
            from models.nets import GaussianEncoder

            self.encoder = encoder if encoder is not None else GaussianEncoder(x_dim, z_dim, hidden_dims)
        elif encoder is not None:
            raise ValueError("encoder: only a GAN with a likelihood (noise=sigma) has a guide to encode with")

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, self.x_dim, dtype=self.dtype, device=self.device),)

    def model(self, x=None):
        n = x.shape[0] if x is not None else 1
        zero = torch.zeros(self.z_dim, dtype=self.dtype, device=self.device)
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(zero, 1.0).to_event(1))
            mean = self.generator(z)
            if self.noise is None:
                return pyro.sample("x", dist.Delta(mean, event_dim=1), obs=x)
            return pyro.sample("x", dist.Normal(mean, self.noise).to_event(1), obs=x)

    @property
    def guide(self):
        """q(z | x) from the encoder when the model has a likelihood (`noise`); else None."""
        return self._guide if self.noise is not None else None

    def _guide(self, x=None):
        loc, scale = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def rsample(self, n: int) -> torch.Tensor:
        """`n` draws G(z), differentiable in the generator's parameters (no likelihood noise): the
        program's x for `n` data, without tracing it (the adversarial engine's fast path)."""
        z = torch.randn(n, self.z_dim, dtype=self.dtype, device=self.device)
        return self.generator(z)

    def sample(self, n: int, mean: bool = False) -> torch.Tensor:
        """`n` samples of x (with the likelihood's noise when the model has one, unless `mean`)."""
        with torch.no_grad():
            x = self.rsample(n)
            if self.noise is not None and not mean:
                x = x + self.noise * torch.randn_like(x)
        return x
