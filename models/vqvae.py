"""Vector-quantised VAE (van den Oord et al. 2017): discrete codes -> x, with a learned codebook.

The generative program is the directed graph codes -> x:

    codes ~ Uniform categorical over `num_codes` per grid position (grid_shape positions)
    x     ~ p(x | decoder(codebook[codes]))          (the likelihood is a choice, as for VAE)

The autoregressive prior over codes that makes VQ-VAE a good sampler is a second stage: `prior`
(constructor: "pixelcnn", or any `AutoregressiveModel` over the code grid with `num_codes` levels)
is fitted by maximum likelihood to the codes of the data (`fit_prior`), and the program's codes
site then carries the prior's autoregressive distribution, so `sample` draws codes from it. The guide is deterministic: q(codes | x) puts all its mass on the codes
nearest to the encoder's outputs, so the ELBO is log p(x | z_q(x)) - len(grid) * log(num_codes).

**Training** is not by the ELBO (its gradient does not reach the encoder through the argmin):
`loss(x)` is the VQ-VAE objective per datum,

    -log p(x | decoder(z_e + sg(z_q - z_e)))     reconstruction, straight-through to the encoder
    + || sg(z_e) - z_q ||^2                      codebook: moves codes towards encoder outputs
    + commitment * || z_e - sg(z_q) ||^2         commitment: keeps the encoder near its codes

(squared distances summed over grid positions and code dims; sg = stop-gradient), minimised by
any torch optimiser. `codebook_usage` reports how many codes are used and the perplexity of
their usage; `reset_dead_codes` moves unused codes onto random encoder outputs.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from models import checks
from models.nets import ConvGridDecoder, ConvGridEncoder, GridDecoder, GridEncoder, VectorQuantizer
from models.registry import register
from models.vae import LIKELIHOODS, Likelihood, _resolve_shape
from pgm import Model
from pgm.enumerate import MAX_CONFIGURATIONS

__all__ = ["VQVAE"]


@register("vqvae", x_dim=64, num_codes=32, code_dim=4, num_latents=4, hidden_dims=(128,),
          train=dict(settings=dict(hidden_dims=(256,), num_latents=8, prior="pixelcnn"), engine="objective", data="digits",
                     epochs=100, batch_size=128, lr=1e-3))
class VQVAE(Model):
    """VQ-VAE: codes ~ uniform over `num_codes` at each of `grid_shape` positions, x ~
    likelihood(decoder(codebook[codes])); the guide picks the codes nearest the encoder outputs.

    Data: `x_dim` (flat vectors; MLP networks, a row of `num_latents` codes) or `x_shape`
    (`conv=True`: (C, H, W) images, conv networks, an (H/4, W/4) grid of codes with the default
    two `channels`). `encoder(x) -> z_e` of shape (N, *grid_shape, code_dim) and
    `decoder(z_q (N, *grid_shape, code_dim)) -> (N, num_params, *x_shape)` may be passed in.
    `likelihood` as for `models.vae.VAE`; `commitment` is the weight of the commitment loss.

    >>> import pgm
    >>> vq = VQVAE(x_dim=6, num_codes=4, code_dim=2, num_latents=3, hidden_dims=(8,))
    >>> sorted(pgm.graph_of(vq).directed_edges)
    [('codes', 'x')]
    >>> vq.grid_shape, vq.sample(5).shape
    ((3,), torch.Size([5, 6]))
    """

    def __init__(
        self,
        x_dim: int | None = None,
        num_codes: int = 64,
        code_dim: int = 8,
        *,
        x_shape: Sequence[int] | None = None,
        num_latents: int = 4,
        hidden_dims: Sequence[int] = (256,),
        conv: bool = False,
        channels: Sequence[int] = (32, 64),
        likelihood: str = "bernoulli",
        likelihood_scale: float | str = "learned",
        num_categories: int | None = None,
        encoder: nn.Module | Callable | None = None,
        decoder: nn.Module | Callable | None = None,
        commitment: float = 0.25,
        prior: str | nn.Module | None = None,
        prior_settings: dict | None = None,
    ) -> None:
        super().__init__()
        self.x_shape = _resolve_shape(x_dim, x_shape)
        self.x_dim = math.prod(self.x_shape)
        num_codes, code_dim = checks.positive_int("num_codes", num_codes), checks.positive_int("code_dim", code_dim)
        num_latents = checks.positive_int("num_latents", num_latents)
        if not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood: expected one of {sorted(LIKELIHOODS)}, got {likelihood!r}")
        commitment = checks.finite_float("commitment", commitment, nonnegative=True)
        conv = checks.boolean("conv", conv)
        if conv and len(self.x_shape) != 3:
            raise ValueError(f"conv: convolutional networks need x_shape=(C, H, W), got x_shape={self.x_shape}")
        self.num_codes, self.code_dim, self.commitment = num_codes, code_dim, float(commitment)
        self.likelihood = Likelihood(likelihood, self.x_shape, scale=likelihood_scale, num_categories=num_categories)
        channels = checks.dims("channels", channels, min_len=1)
        hidden_dims = checks.dims("hidden_dims", hidden_dims)
        num_params = self.likelihood.num_params
        if encoder is None:
            encoder = (
                ConvGridEncoder(self.x_shape, code_dim, channels)
                if conv
                else GridEncoder(self.x_shape, num_latents, code_dim, hidden_dims)
            )
        for arg, net in (("encoder", encoder), ("decoder", decoder)):
            if net is not None and not callable(net):
                raise TypeError(f"{arg}: expected an nn.Module or a callable, got {type(net).__name__}")
        self.encoder = encoder
        self.grid_shape = self._probe_grid()
        if decoder is None:
            decoder = (
                ConvGridDecoder(code_dim, self.x_shape, channels[::-1], num_params=num_params)
                if conv
                else GridDecoder(math.prod(self.grid_shape), code_dim, self.x_shape, hidden_dims[::-1], num_params=num_params)
            )
        self.decoder = decoder
        self.quantizer = VectorQuantizer(num_codes, code_dim)
        self.prior = self._build_prior(prior, prior_settings)
        # Code counts since the last reset (updated by `loss` in training mode).
        self.register_buffer("code_counts", torch.zeros(num_codes))

    def _probe_grid(self) -> tuple[int, ...]:
        anchor = next(iter(self.encoder.parameters()), None) if isinstance(self.encoder, nn.Module) else None
        kw = {} if anchor is None else {"dtype": anchor.dtype, "device": anchor.device}
        with torch.no_grad():
            z_e = self.encoder(torch.zeros(1, *self.x_shape, **kw))
        if z_e.dim() < 3 or z_e.shape[0] != 1 or z_e.shape[-1] != self.code_dim:
            raise ValueError(
                f"encoder: expected outputs of shape (batch, *grid_shape, code_dim={self.code_dim}), "
                f"got {tuple(z_e.shape)} for a batch of 1"
            )
        return tuple(z_e.shape[1:-1])

    # ------------------------------------------------------------------ networks
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The continuous encoder outputs z_e, shape (N, *grid_shape, code_dim), for x (N, *x_shape)."""
        return self.encoder(x)

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, z_q): the nearest code indices (N, *grid_shape) and their vectors (N, *grid_shape, D)."""
        return self.quantizer(z_e)

    def decoder_params(self, z_q: torch.Tensor) -> torch.Tensor:
        """Decoder outputs (*lead, num_params, *x_shape) for code vectors (*lead, *grid_shape, D)."""
        k = len(self.grid_shape) + 1
        lead = z_q.shape[: z_q.dim() - k]
        params = self.decoder(z_q.reshape(-1, *z_q.shape[z_q.dim() - k :]))
        return params.reshape(*lead, self.likelihood.num_params, *self.x_shape)

    def decode(self, z_q: torch.Tensor) -> dist.Distribution:
        """p(x | z_q): batch shape lead, event shape x_shape, for code vectors (*lead, *grid_shape, D)."""
        return self.likelihood(self.decoder_params(z_q))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The guide's codes for x: int64 indices of shape (N, *grid_shape)."""
        return self.quantizer.nearest(self.encode(x))

    # ------------------------------------------------------------------ the program
    def example_inputs(self, batch_size: int = 2) -> tuple:
        value = self.likelihood.example_value(dtype=self.dtype, device=self.device)
        return (value.expand(batch_size, *self.x_shape).clone(),)

    def prior_dist(self, batch_size: int | None = None) -> dist.Distribution:
        """The prior over codes, event shape grid_shape: uniform, or the autoregressive `prior`
        (for a batch of `batch_size`) when the model has one."""
        if self.prior is not None and batch_size is not None:
            return self.prior.distribution(batch_size)
        logits = torch.zeros(self.num_codes, dtype=self.dtype, device=self.device)
        uniform = dist.Categorical(logits=logits).expand(self.grid_shape).to_event(len(self.grid_shape))
        return uniform if batch_size is None else uniform.expand((batch_size,))

    # ------------------------------------------------------------------ the code prior
    def _build_prior(self, prior, settings):
        if prior is None:
            if settings:
                raise ValueError("prior_settings: given without a prior; pass prior='pixelcnn'")
            return None
        if isinstance(prior, str):
            if prior != "pixelcnn":
                raise ValueError(f"prior: expected 'pixelcnn', an autoregressive model or None, got {prior!r}")
            from models.pixelcnn import PixelCNN

            kernel = 3 if min(self.grid_shape) < 7 else 7
            options = dict(hidden=32, num_layers=3, first_kernel=max(kernel, 3))
            options.update(settings or {})
            prior = PixelCNN(x_shape=self.grid_shape, levels=max(self.num_codes, 3), **options)
        from models.autoregressive import AutoregressiveModel

        if not isinstance(prior, AutoregressiveModel):
            raise TypeError(f"prior: expected an AutoregressiveModel over the code grid, got {type(prior).__name__}")
        if tuple(prior.event_shape) != tuple(self.grid_shape):
            raise ValueError(f"prior: its event shape {tuple(prior.event_shape)} is not the code grid {self.grid_shape}")
        return prior

    def code_log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(codes) of code grids (N, *grid_shape) under the prior (uniform without one)."""
        if self.prior is None:
            return torch.full(codes.shape[:1], -math.prod(self.grid_shape) * math.log(self.num_codes),
                              dtype=self.dtype, device=self.device)
        return self.prior.log_prob(codes.to(self.dtype))

    def fit_prior(self, x: torch.Tensor, *, epochs: int = 20, batch_size: int = 128, lr: float = 3e-3, **fit_kwargs):
        """Second stage: fit the autoregressive prior by maximum likelihood to the codes of the
        data `x` (through `inference.fit`). Builds the default PixelCNN prior if there is none.
        Returns the fit's history."""
        from inference import MaximumLikelihood, fit

        if self.prior is None:
            self.prior = self._build_prior("pixelcnn", None).to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            codes = torch.cat([self.codes(x[i : i + 1024]) for i in range(0, x.shape[0], 1024)]).to(self.dtype)
        engine = MaximumLikelihood(self.prior, lr=lr)
        return fit(engine, codes, epochs=epochs, batch_size=batch_size, **fit_kwargs)

    def model(self, x: torch.Tensor):
        with pyro.plate("data", x.shape[0]):
            codes = pyro.sample("codes", self.prior_dist(x.shape[0]))
            z_q = self.quantizer.lookup(codes)
            return pyro.sample("x", self.decode(z_q), obs=x)

    def guide(self, x: torch.Tensor):
        with pyro.plate("data", x.shape[0]):
            codes = self.codes(x).to(self.dtype)
            return pyro.sample("codes", dist.Delta(codes, event_dim=len(self.grid_shape)))

    def missing(self, capability: str) -> str | None:
        reason = super().missing(capability)
        if reason is None and capability in ("log_prob", "energy"):
            n = self.num_codes ** math.prod(self.grid_shape)
            if n > MAX_CONFIGURATIONS:
                return (
                    f"summing out its codes means {self.num_codes}**{math.prod(self.grid_shape)} = {n} "
                    f"configurations per datum, more than {MAX_CONFIGURATIONS}"
                )
        return reason

    # ------------------------------------------------------------------ training objective
    def loss_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The terms of the VQ-VAE objective per datum, each of shape (N,): "reconstruction"
        (-log p(x | straight-through z_q)), "codebook" and "commitment" (squared distances, not
        yet weighted), "codes" (N, *grid_shape), the nearest codes, and with a prior "prior", its
        negative log-likelihood of the (detached) codes."""
        z_e = self.encode(x)
        codes, z_q = self.quantize(z_e)
        z_st = z_e + (z_q - z_e).detach()  # forward: z_q; backward: identity to z_e
        reconstruction = -self.decode(z_st).log_prob(x)
        dims = tuple(range(1, z_e.dim()))
        codebook = (z_q - z_e.detach()).pow(2).sum(dims)
        commitment = (z_e - z_q.detach()).pow(2).sum(dims)
        terms = {"reconstruction": reconstruction, "codebook": codebook, "commitment": commitment, "codes": codes}
        if self.prior is not None:
            terms["prior"] = -self.prior.log_prob(codes.detach().to(self.dtype))
        return terms

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The VQ-VAE objective averaged over the batch (a differentiable scalar), plus the
        prior's negative log-likelihood of the (detached) codes when the model has a prior. In
        training mode it also counts the codes used, for `codebook_usage` and `reset_dead_codes`."""
        terms = self.loss_terms(x)
        if self.training:
            with torch.no_grad():
                self.code_counts += torch.bincount(terms["codes"].flatten(), minlength=self.num_codes).to(self.code_counts)
        total = terms["reconstruction"] + terms["codebook"] + self.commitment * terms["commitment"]
        if self.prior is not None:
            # the prior learns the current codes (detached: its gradient reaches only its own
            # parameters), so one run trains both stages; fit_prior refits it on the final codes
            total = total + terms["prior"]
        return total.mean()

    # ------------------------------------------------------------------ the codebook
    @torch.no_grad()
    def codebook_usage(self, x: torch.Tensor | None = None) -> dict[str, float | torch.Tensor]:
        """How the codebook is used: by the data `x` (its nearest codes), or, without `x`, by the
        batches seen by `loss` since the last reset. Returns "counts" (num_codes,), "used" (how
        many codes have count > 0), "fraction_used" and "perplexity" (exp of the entropy of the
        usage frequencies: num_codes when all are used equally, 1 when one code takes all)."""
        if x is not None:
            counts = torch.bincount(self.codes(x).flatten(), minlength=self.num_codes).to(self.code_counts)
        else:
            counts = self.code_counts.clone()
        total = counts.sum()
        if total == 0:
            return {"counts": counts, "used": 0, "fraction_used": 0.0, "perplexity": float("nan")}
        p = counts / total
        entropy = -(p * p.clamp_min(1e-30).log()).sum()
        used = int((counts > 0).sum())
        return {"counts": counts, "used": used, "fraction_used": used / self.num_codes, "perplexity": float(entropy.exp())}

    @torch.no_grad()
    def reset_dead_codes(self, x: torch.Tensor, min_count: float = 1.0, counts: torch.Tensor | None = None) -> int:
        """Move every dead code (count below `min_count`: by default, never the nearest code since
        the last reset) onto an encoder output of a random datum and position of `x` (drawn with
        torch's RNG, without replacement where there are enough); then zero the counts. `counts`
        overrides the counts kept by `loss` (e.g. `codebook_usage(data)["counts"]`). Returns how
        many codes were reset."""
        counts = self.code_counts if counts is None else counts.to(self.code_counts)
        dead = (counts < min_count).nonzero().flatten()
        if len(dead):
            z_e = self.encode(x).reshape(-1, self.code_dim)
            replace = len(dead) > z_e.shape[0]
            pick = torch.randint(z_e.shape[0], (len(dead),), device=z_e.device) if replace else torch.randperm(z_e.shape[0], device=z_e.device)[: len(dead)]
            self.quantizer.codebook[dead] = z_e[pick].to(self.quantizer.codebook)
        self.code_counts.zero_()
        return int(len(dead))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder means E[x | z_q(x)], shape (N, *x_shape)."""
        _, z_q = self.quantize(self.encode(x))
        return self.likelihood.mean(self.decoder_params(z_q))
