"""Variational autoencoder: the generative program z -> x with a learned decoder, and its guide.

The model is the directed graph z -> x:

    z ~ prior (default Normal(0, I) over z_dim dims)
    x ~ p(x | decoder(z))      the likelihood is a choice (`likelihood=`), see `LIKELIHOODS`

and the guide (amortised posterior) is q(z | x) = Normal(encoder(x)), optionally pushed through
inverse autoregressive flow layers (`flow=` IAF layers, Pyro's `affine_autoregressive`). The
encoder lives in the guide only: `pgm.graph_of(VAE(...))` is exactly z -> x.

Training is by an engine (`inference.SVI(vae)`); a beta-VAE is SVI's `beta` option, not a
property of the model.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn

from models import checks
from models.nets import ConvDecoder, ConvGaussianEncoder, GaussianEncoder, MLPDecoder, positive
from models.registry import register
from pgm import Model

__all__ = ["VAE", "Likelihood", "LIKELIHOODS"]

#: Likelihood name -> what the decoder outputs (per datum, per data dimension).
LIKELIHOODS = {
    "bernoulli": "logits; binary data {0, 1}",
    "gaussian": "mean (and a raw scale when likelihood_scale='decoder'); real data",
    "laplace": "location (and a raw scale when likelihood_scale='decoder'); real data",
    "continuous_bernoulli": "logits; data in [0, 1] (Loaiza-Ganem & Cunningham 2019)",
    "beta": "two raw concentrations; data in the open interval (0, 1)",
    "categorical": "num_categories logits; integer-valued data in {0, ..., num_categories - 1}",
}


class Likelihood(nn.Module):
    """p(x | params): turns decoder outputs into a distribution over one datum of `x_shape`.

    `params` has shape (*batch, num_params, *x_shape). The returned distribution has batch shape
    `batch` and event shape `x_shape` (`to_event(len(x_shape))`).

    For "gaussian" and "laplace", `scale` is a float (fixed), "learned" (one free scale per data
    dimension, shared by all data: a parameter of this module) or "decoder" (a second decoder
    head: heteroscedastic). Scales are at least `min_scale`.

    >>> lik = Likelihood("gaussian", (3,), scale=0.5)
    >>> d = lik(torch.zeros(2, 1, 3))
    >>> type(d.base_dist).__name__, d.batch_shape, d.event_shape
    ('Normal', torch.Size([2]), torch.Size([3]))
    """

    def __init__(self, name: str, x_shape: Sequence[int], *, scale: float | str = "learned", num_categories: int | None = None, min_scale: float = 1e-3):
        super().__init__()
        if name not in LIKELIHOODS:
            raise ValueError(f"likelihood: expected one of {sorted(LIKELIHOODS)}, got {name!r}")
        self.kind, self.x_shape = name, checks.shape("x_shape", x_shape)
        self.min_scale = checks.finite_float("min_scale", min_scale, nonnegative=True)
        self.scale_mode: str | None = None
        self.num_params = 1
        if name in ("gaussian", "laplace"):
            if isinstance(scale, (int, float)) and not isinstance(scale, bool):
                scale = checks.finite_float("likelihood_scale", scale, positive=True)
                self.scale_mode = "fixed"
                self.register_buffer("fixed_scale", torch.tensor(scale))
            elif scale == "learned":
                self.scale_mode = "learned"
                # softplus(0.5413) = 1.0: start at unit scale.
                self.raw_scale = nn.Parameter(torch.full(self.x_shape, 0.5413))
            elif scale == "decoder":
                self.scale_mode = "decoder"
                self.num_params = 2
            else:
                raise ValueError(f"likelihood_scale: expected a positive float, 'learned' or 'decoder', got {scale!r}")
        elif name == "beta":
            self.num_params = 2
        elif name == "categorical":
            if num_categories is None:
                raise ValueError("num_categories: the categorical likelihood needs an int >= 2, got None")
            self.num_params = checks.int_at_least("num_categories", num_categories, 2)

    def _split(self, params: torch.Tensor) -> list[torch.Tensor]:
        k = len(self.x_shape)
        if params.dim() < k + 1 or tuple(params.shape[-k - 1 :]) != (self.num_params, *self.x_shape):
            raise ValueError(
                f"decoder output: expected shape (batch, {self.num_params}, *{self.x_shape}) for the "
                f"{self.kind} likelihood, got {tuple(params.shape)}"
            )
        return list(params.unbind(-k - 1))

    def _scale(self, heads: list[torch.Tensor]) -> torch.Tensor:
        if self.scale_mode == "fixed":
            return self.fixed_scale.expand(heads[0].shape)
        raw = self.raw_scale if self.scale_mode == "learned" else heads[1]
        return positive(raw, "softplus", self.min_scale).expand(heads[0].shape)

    def base(self, params: torch.Tensor) -> dist.Distribution:
        """The per-dimension distribution (batch shape (*batch, *x_shape), no event dims)."""
        heads = self._split(params)
        if self.kind == "bernoulli":
            return dist.Bernoulli(logits=heads[0])
        if self.kind == "gaussian":
            return dist.Normal(heads[0], self._scale(heads))
        if self.kind == "laplace":
            return dist.Laplace(heads[0], self._scale(heads))
        if self.kind == "continuous_bernoulli":
            return dist.ContinuousBernoulli(logits=heads[0].clamp(-30.0, 30.0))
        if self.kind == "beta":
            return dist.Beta(positive(heads[0], "softplus", 1e-3), positive(heads[1], "softplus", 1e-3))
        logits = torch.stack(heads, dim=-1)  # (*batch, *x_shape, K)
        return dist.Categorical(logits=logits)

    def forward(self, params: torch.Tensor) -> dist.Distribution:
        return self.base(params).to_event(len(self.x_shape))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The mean of x given the parameters, shape (*batch, *x_shape)."""
        base = self.base(params)
        if isinstance(base, dist.Categorical):
            values = torch.arange(self.num_params, dtype=base.probs.dtype, device=base.probs.device)
            return (base.probs * values).sum(-1)
        return base.mean

    def example_value(self, dtype=None, device=None) -> torch.Tensor:
        """A value inside the support for one datum (zeros; 0.5 for the open-interval Beta)."""
        fill = 0.5 if self.kind == "beta" else 0.0
        return torch.full(self.x_shape, fill, dtype=dtype, device=device)

    def extra_repr(self) -> str:
        return f"{self.kind!r}, x_shape={self.x_shape}" + (f", scale={self.scale_mode}" if self.scale_mode else "")


@register("vae", x_dim=64, z_dim=8, hidden_dims=(128,),
          train=dict(settings=dict(hidden_dims=(256,)), engine="svi", data="digits", epochs=100, batch_size=128, lr=1e-3))
class VAE(Model):
    """Variational autoencoder: z ~ prior, x ~ likelihood(decoder(z)); guide q(z|x) from an encoder.

    Data shape: `x_dim` (flat vectors) or `x_shape` (e.g. (1, 28, 28); `conv=True` uses small
    convolutional networks, which need an image shape (C, H, W) with H, W divisible by 4).
    `encoder(x) -> (loc, scale)` of shape (N, z_dim) and `decoder(z) -> (N, num_params, *x_shape)`
    (or any shape with as many elements) may be passed in; they are called on a flat batch of N.

    `likelihood`: one of `LIKELIHOODS` ("bernoulli", "gaussian", "laplace",
    "continuous_bernoulli", "beta", "categorical"); `likelihood_scale` for "gaussian"/"laplace"
    (a float: fixed; "learned": one free scale per dimension; "decoder": a decoder head);
    `num_categories` for "categorical". `prior`: "normal" (standard Normal over z_dim dims), a
    distribution with event shape (z_dim,), or a callable returning one (an `nn.Module` prior
    is registered, so its parameters are trained and it follows `.to()`; a distribution
    object keeps the device and dtype it was made with). `flow`: the posterior family, pushed after
    the amortised Gaussian and shared by all data: an int (that many IAF layers, Pyro's
    `affine_autoregressive`, kept in `flows`), a flow family name of `models.flows.FLOWS`
    ("iaf", "maf", "realnvp", "nice", "spline"; `flow_layers` layers of `flow_hidden_dims`), or
    a `models.Flow` over vectors of z_dim (its layers are used; kept in `posterior_flow`). They
    are submodules, so engines train them with the rest.

    >>> import pgm
    >>> vae = VAE(x_dim=6, z_dim=2, hidden_dims=(8,))
    >>> g = pgm.graph_of(vae)
    >>> sorted(g.nodes), g.directed_edges
    (['x', 'z'], [('z', 'x')])
    >>> vae.sample(3).shape, vae.sample(3, mean=True).shape
    (torch.Size([3, 6]), torch.Size([3, 6]))
    """

    def __init__(
        self,
        x_dim: int | None = None,
        z_dim: int = 8,
        *,
        x_shape: Sequence[int] | None = None,
        hidden_dims: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        likelihood_scale: float | str = "learned",
        num_categories: int | None = None,
        decoder: nn.Module | Callable | None = None,
        encoder: nn.Module | Callable | None = None,
        prior: str | dist.Distribution | Callable = "normal",
        conv: bool = False,
        channels: Sequence[int] = (32, 64),
        flow: "int | str | Model | None" = None,
        flow_hidden_dims: Sequence[int] | None = None,
        flow_layers: int = 2,
        encoder_scale: str = "softplus",
    ) -> None:
        super().__init__()
        self.x_shape = _resolve_shape(x_dim, x_shape)
        z_dim = checks.positive_int("z_dim", z_dim)
        if not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood: expected one of {sorted(LIKELIHOODS)}, got {likelihood!r}")
        conv = checks.boolean("conv", conv)
        encoder_scale = checks.one_of("encoder_scale", encoder_scale, ("softplus", "exp"))
        self.z_dim = z_dim
        self.x_dim = math.prod(self.x_shape)
        self.likelihood = Likelihood(likelihood, self.x_shape, scale=likelihood_scale, num_categories=num_categories)
        num_params = self.likelihood.num_params
        hidden_dims = checks.dims("hidden_dims", hidden_dims)
        if conv and len(self.x_shape) != 3:
            raise ValueError(f"conv: convolutional networks need x_shape=(C, H, W), got x_shape={self.x_shape}")
        channels = checks.dims("channels", channels, min_len=1)
        if encoder is None:
            encoder = (
                ConvGaussianEncoder(self.x_shape, z_dim, channels, scale=encoder_scale)
                if conv
                else GaussianEncoder(self.x_shape, z_dim, hidden_dims, scale=encoder_scale)
            )
        if decoder is None:
            decoder = (
                ConvDecoder(z_dim, self.x_shape, channels[::-1], num_params=num_params)
                if conv
                else MLPDecoder(z_dim, self.x_shape, hidden_dims[::-1], num_params=num_params)
            )
        for arg, net in (("encoder", encoder), ("decoder", decoder)):
            if not callable(net):
                raise TypeError(f"{arg}: expected an nn.Module or a callable, got {type(net).__name__}")
        self.encoder, self.decoder = encoder, decoder
        # An nn.Module prior becomes a child module (its parameters are trained with the rest).
        self.prior = _resolve_prior(prior, z_dim)
        self.flows = nn.ModuleList()
        self.posterior_flow = _posterior_flow(flow, z_dim, flow_layers, flow_hidden_dims)
        if self.posterior_flow is not None:
            flow = None
        if flow is not None:
            flow = checks.int_at_least("flow", flow, 0)
        if flow_hidden_dims is not None:
            flow_hidden_dims = checks.dims("flow_hidden_dims", flow_hidden_dims, min_len=1)
        if flow:
            if z_dim < 2:
                raise ValueError("flow: IAF layers need z_dim >= 2 (an autoregressive transform of one dim is affine)")
            hidden = None if flow_hidden_dims is None else list(flow_hidden_dims)
            for _ in range(flow):
                self.flows.append(T.affine_autoregressive(z_dim, hidden_dims=hidden))

    # ------------------------------------------------------------------ networks
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of the guide's base Gaussian q0(z|x), each (*lead, z_dim), for x of
        shape (*lead, *x_shape). With `flow`, q(z|x) is q0 pushed through the IAF layers."""
        lead = x.shape[: x.dim() - len(self.x_shape)]
        loc, scale = self.encoder(x.reshape(-1, *self.x_shape))
        return loc.reshape(*lead, self.z_dim), scale.reshape(*lead, self.z_dim)

    def decoder_params(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder outputs reshaped to (*lead, num_params, *x_shape) for z of shape (*lead, z_dim)."""
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, self.z_dim))
        return out.reshape(*lead, self.likelihood.num_params, *self.x_shape)

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        """The likelihood p(x | z): batch shape z.shape[:-1], event shape x_shape."""
        return self.likelihood(self.decoder_params(z))

    def prior_dist(self) -> dist.Distribution:
        """The prior p(z), event shape (z_dim,)."""
        if isinstance(self.prior, str):
            zero = torch.zeros(self.z_dim, dtype=self.dtype, device=self.device)
            return dist.Normal(zero, 1.0).to_event(1)
        prior = self.prior if isinstance(self.prior, dist.Distribution) else self.prior()
        if tuple(prior.event_shape) != (self.z_dim,):
            raise ValueError(f"prior: expected a distribution with event shape ({self.z_dim},), got {tuple(prior.event_shape)}")
        return prior

    def posterior_dist(self, x: torch.Tensor) -> dist.Distribution:
        """The guide's q(z | x): batch shape x.shape[:-len(x_shape)], event shape (z_dim,)."""
        loc, scale = self.encode(x)
        q = dist.Normal(loc, scale).to_event(1)
        if len(self.flows):
            q = dist.TransformedDistribution(q, list(self.flows))
        elif self.posterior_flow is not None:
            q = dist.TransformedDistribution(q, self.posterior_flow.transforms())
        return q

    # ------------------------------------------------------------------ the program
    def example_inputs(self, batch_size: int = 2) -> tuple:
        value = self.likelihood.example_value(dtype=self.dtype, device=self.device)
        return (value.expand(batch_size, *self.x_shape).clone(),)

    def _check_data(self, x) -> None:
        k = len(self.x_shape)
        if not torch.is_tensor(x) or x.dim() < k + 1 or tuple(x.shape[x.dim() - k :]) != self.x_shape:
            seen = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x: expected data of shape (batch, *{self.x_shape}), got {seen}")

    def model(self, x: torch.Tensor):
        self._check_data(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior_dist())
            return pyro.sample("x", self.decode(z), obs=x)

    def guide(self, x: torch.Tensor):
        self._check_data(x)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.posterior_dist(x))

    # ------------------------------------------------------------------ conveniences
    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        """`n` draws (n, *x_shape) by ancestral sampling; `mean=True` gives the decoder means
        E[x | z] at prior draws of z instead (smoother pictures)."""
        if not mean:
            return super().sample(n)
        z = self.prior_dist().sample((n,))
        return self.likelihood.mean(self.decoder_params(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, *, sample_z: bool = False) -> torch.Tensor:
        """Decoder means E[x | z] at z = the guide's mean (`sample_z=True`: a guide draw)."""
        q = self.posterior_dist(x)
        if sample_z or len(self.flows) or self.posterior_flow is not None:
            z = q.sample()
        else:
            z = self.encode(x)[0]
        return self.likelihood.mean(self.decoder_params(z))


def _posterior_flow(flow, z_dim: int, flow_layers: int, flow_hidden_dims):
    """The flow family of the guide when `flow` names one or is a `models.Flow`, else None."""
    from models.flows import FLOWS, Flow

    if isinstance(flow, Flow):
        if flow.x_shape != (z_dim,) or flow.context_dim is not None or flow.levels is not None:
            raise ValueError(f"flow: expected an unconditional flow over vectors of z_dim={z_dim}, got {flow!r}")
        return flow
    if not isinstance(flow, str):
        return None
    vector = {k: v for k, v in FLOWS.items() if k != "glow"}
    if flow not in vector:
        raise ValueError(f"flow: expected a number of IAF layers or one of {sorted(vector)}, got {flow!r}")
    if z_dim < 2:
        raise ValueError(f"flow: a {flow} posterior needs z_dim >= 2, got {z_dim}")
    if not isinstance(flow_layers, int) or isinstance(flow_layers, bool) or flow_layers < 1:
        raise ValueError(f"flow_layers: expected a positive int, got {flow_layers!r}")
    hidden = (max(4 * z_dim, 32),) if flow_hidden_dims is None else tuple(int(h) for h in flow_hidden_dims)
    return vector[flow](x_dim=z_dim, num_layers=flow_layers, hidden_dims=hidden, normalize=False)


def _resolve_shape(x_dim, x_shape) -> tuple[int, ...]:
    if x_shape is None and x_dim is None:
        raise ValueError("x_dim, x_shape: give the data's size, x_dim=D for vectors or x_shape=(C, H, W)")
    if x_shape is not None:
        shape = checks.shape("x_shape", x_shape)
        if x_dim is not None and checks.positive_int("x_dim", x_dim) != math.prod(shape):
            raise ValueError(f"x_dim, x_shape: x_dim={x_dim} does not match x_shape={shape} ({math.prod(shape)} values)")
        return shape
    return (checks.positive_int("x_dim", x_dim),)


def _resolve_prior(prior, z_dim: int):
    if isinstance(prior, str):
        if prior != "normal":
            raise ValueError(f"prior: expected 'normal', a distribution or a callable returning one, got {prior!r}")
        return prior
    if isinstance(prior, dist.Distribution):
        if tuple(prior.event_shape) != (z_dim,):
            raise ValueError(f"prior: expected a distribution with event shape ({z_dim},), got {tuple(prior.event_shape)}")
        return prior
    if callable(prior):
        return prior
    raise TypeError(f"prior: expected 'normal', a distribution or a callable returning one, got {type(prior).__name__}")
