"""Normalizing flows: one data site whose distribution is a Pyro `TransformedDistribution`.

A flow is the latent-variable model z -> x with z ~ Normal(0, I) and x = f(z), f invertible; by
the change of variables its density is exact,

    log p(x) = log N(f^{-1}(x); 0, I) + log |det d f^{-1} / d x|,

and its program is one observed site, ``pyro.sample("x", TransformedDistribution(base, layers),
obs=x)``, under the data plate. The families differ in the layers (generative order, base ->
data; each a Pyro transform where Pyro has it, see `models.flow_layers` for the rest):

===========  ====================================================================================
`NICE`       additive couplings (Pyro's `AffineCoupling` with the scale held at 1), a diagonal scaling
`RealNVP`    affine couplings; vectors: halves alternated; images (C, H, W): checkerboard and
             channel masks, squeeze and a multi-scale architecture (half the channels factored out
             per scale)
`MAF`        affine autoregressive layers (Pyro's, a MADE conditioner) used inverted: the density
             is one pass, sampling D passes
`IAF`        the same layers used forward: sampling is one pass, the density of a new point D passes
`Glow`       images: squeeze, steps of actnorm (data-dependent init), invertible 1x1 convolution
             in LU form (Pyro's `GeneralizedChannelPermute`) and channel affine coupling; multi-scale
`SplineFlow` rational-quadratic spline couplings (Durkan et al. 2019; Pyro's `SplineCoupling`,
             identity tails outside [-bound, bound])
===========  ====================================================================================

Every family takes `context_dim` for a conditional flow p(x | c) (the context enters each
conditioner network; call ``log_prob(x, c)``, ``sample(n, c)``), and `levels` for discrete data in
[0, 1] with that many grey levels: the data are dequantized (`dequantize="uniform"` or
``"variational"``, `models.dequantize`) and the flow ends with the inverse logit pre-processing,
so `log_prob` is the dequantization bound on the log-probability of the discrete data and
`bits_per_dim` is comparable with the literature.

>>> flow = RealNVP(x_dim=2, num_layers=2, hidden_dims=(8,))
>>> flow.log_prob(torch.zeros(3, 2)).shape, flow.sample(4).shape
(torch.Size([3]), torch.Size([4, 2]))
"""

from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import transforms as T
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN, ConditionalDenseNN, DenseNN
from torch import nn

from models.dequantize import DEQUANTIZATIONS, UniformDequantization, VariationalDequantization, logit_transforms
from models import checks
from models.flow_layers import (
    ActNorm,
    ConvCouplingNet,
    FactorOut,
    Inverted,
    MaskedAffineCoupling,
    Reverse,
    Squeeze,
    checkerboard_mask,
    resolve,
)
from models.registry import register
from pgm import Model

__all__ = ["Flow", "NICE", "RealNVP", "MAF", "IAF", "Glow", "SplineFlow", "ConditionalSplineCoupling", "FLOWS"]


def _positive_int(arg: str, value, minimum: int = 1) -> int:
    return checks.int_at_least(arg, value, minimum)


def _shape(x_dim, x_shape) -> tuple[int, ...]:
    if x_shape is None and x_dim is None:
        raise ValueError("x_dim, x_shape: give the data's size, x_dim=D for vectors or x_shape=(C, H, W) for images")
    if x_shape is not None:
        shape = (checks.positive_int("x_shape", x_shape),) if isinstance(x_shape, int) else checks.shape("x_shape", x_shape)
        if x_dim is not None and checks.positive_int("x_dim", x_dim) != math.prod(shape):
            raise ValueError(f"x_dim, x_shape: x_dim={x_dim} does not match x_shape={shape}")
        return shape
    return (_positive_int("x_dim", x_dim),)


class _Additive(nn.Module):
    """A coupling conditioner with the log-scale held at zero (NICE's additive coupling)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, context=None):
        shift = self.net(x) if context is None else self.net(x, context)
        return shift, torch.zeros_like(shift)


class ConditionalSplineCoupling(ConditionalTransformModule):
    """Pyro's `SplineCoupling` with a context given to its conditioner (Pyro has the
    unconditional layer only)."""

    def __init__(self, input_dim: int, split_dim: int, hypernet: nn.Module, count_bins: int = 8, bound: float = 3.0):
        super().__init__()
        self.input_dim, self.split_dim, self.nn = input_dim, split_dim, hypernet
        self.count_bins, self.bound = count_bins, bound

    def condition(self, context):
        # identity=True: the first coordinates pass unchanged (Pyro's unconditional layer also
        # bends them with an elementwise spline of its own parameters, which a layer built here
        # afresh for each context could not keep)
        return T.SplineCoupling(self.input_dim, self.split_dim, partial(self.nn, context=context), self.count_bins,
                                self.bound, identity=True)


def _coupling(kind: str, dim: int, hidden: list[int], context_dim: int | None, count_bins: int = 8, bound: float = 3.0):
    """One vector coupling layer: the first dim // 2 coordinates condition the rest."""
    split = dim // 2
    rest = dim - split
    if kind == "spline":
        params = [rest * count_bins, rest * count_bins, rest * (count_bins - 1), rest * count_bins]
        if context_dim:
            return ConditionalSplineCoupling(dim, split, ConditionalDenseNN(split, context_dim, hidden, params), count_bins, bound)
        return T.SplineCoupling(dim, split, DenseNN(split, hidden, params), count_bins, bound)
    if kind == "additive":
        net = ConditionalDenseNN(split, context_dim, hidden, [rest]) if context_dim else DenseNN(split, hidden, [rest])
        net = _Additive(net)
    else:
        net = ConditionalDenseNN(split, context_dim, hidden, [rest, rest]) if context_dim else DenseNN(split, hidden, [rest, rest])
    return T.ConditionalAffineCoupling(split, net) if context_dim else T.AffineCoupling(split, net)


class Flow(Model):
    """Base class of the flows: `layers` (an `nn.ModuleList`, generative order base -> data) over a
    standard Normal of the data's shape; see the module docstring.

    - `x_shape`: one datum's shape; `context_dim`: the size of the context of p(x | c), or None;
    - `levels`: grey levels of discrete data in [0, 1] (None: continuous data), with
      `dequantize` ("uniform" or "variational") and `alpha` (logit pre-processing).
    """

    def __init__(self, x_shape: Sequence[int], *, context_dim: int | None = None, levels: int | None = None,
                 dequantize: str = "uniform", alpha: float = 0.05) -> None:
        super().__init__()
        self.x_shape = tuple(int(v) for v in x_shape)
        self.event_dim, self.dim = len(self.x_shape), math.prod(self.x_shape)
        self.context_dim = None if context_dim is None else _positive_int("context_dim", context_dim)
        self.levels = None if levels is None else _positive_int("levels", levels, 2)
        if dequantize not in DEQUANTIZATIONS:
            raise ValueError(f"dequantize: expected one of {DEQUANTIZATIONS}, got {dequantize!r}")
        if not (isinstance(alpha, (int, float)) and 0 <= alpha < 0.5):
            raise ValueError(f"alpha: expected a float in [0, 0.5), got {alpha!r}")
        self.alpha = float(alpha)
        self.dequantizer: nn.Module | None = None
        if self.levels is not None:
            self.dequantizer = (VariationalDequantization(self.levels, self.x_shape) if dequantize == "variational"
                                else UniformDequantization(self.levels, self.event_dim))
        self.layers = nn.ModuleList()

    # ------------------------------------------------------------------ the distribution
    @property
    def quantized(self) -> bool:
        """True when the data are discrete (`levels`): log_prob is then a log-probability bound."""
        return self.levels is not None

    def base_dist(self) -> dist.Distribution:
        """The base distribution: a standard Normal over one datum's shape."""
        zero = torch.zeros(self.x_shape, dtype=self.dtype, device=self.device)
        return dist.Normal(zero, torch.ones_like(zero), validate_args=False).to_event(self.event_dim)

    def transforms(self, context: torch.Tensor | None = None) -> list:
        """The Pyro transforms base -> data for `context` (the logit post-processing included)."""
        if self.context_dim is not None and context is None:
            raise ValueError(f"context: {type(self).__name__} is conditional (context_dim={self.context_dim}); pass a context")
        anchor = self._anchor
        chain = [resolve(layer, context if self.context_dim is not None else None, anchor) for layer in self.layers]
        if self.levels is not None:
            chain += logit_transforms(self.event_dim, self.alpha)
        return chain

    def transform(self, context: torch.Tensor | None = None) -> T.ComposeTransform:
        """The flow's map base -> data as one Pyro `ComposeTransform`."""
        return T.ComposeTransform(self.transforms(context))

    def distribution(self, context: torch.Tensor | None = None) -> dist.TransformedDistribution:
        """p(x) (or p(x | context)) as a Pyro `TransformedDistribution`."""
        # no argument validation: the flow checks its data itself (`_data`), and a support check
        # per call costs more than a coupling layer at small sizes
        return dist.TransformedDistribution(self.base_dist(), self.transforms(self._context(context)), validate_args=False)

    # ------------------------------------------------------------------ checks
    def _data(self, x) -> torch.Tensor:
        k = self.event_dim
        if not torch.is_tensor(x) or x.dim() < k or tuple(x.shape[x.dim() - k:]) != self.x_shape:
            seen = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"x: expected data of shape (batch, *{self.x_shape}), got {seen}")
        return x.to(dtype=self.dtype, device=self.device) if x.is_floating_point() else x.to(self.dtype)

    def _context(self, context, lead: tuple[int, ...] | None = None):
        if self.context_dim is None:
            if context is not None:
                raise ValueError(f"context: {type(self).__name__} is unconditional (context_dim=None); got a context")
            return None
        if context is None:
            raise ValueError(f"context: {type(self).__name__} is conditional (context_dim={self.context_dim}); pass a context")
        if not torch.is_tensor(context) or context.shape[-1:] != (self.context_dim,):
            seen = tuple(context.shape) if torch.is_tensor(context) else type(context).__name__
            raise ValueError(f"context: expected shape (..., {self.context_dim}), got {seen}")
        context = context.to(dtype=self.dtype, device=self.device)
        if lead is not None:
            context = context.expand(*lead, self.context_dim)
        return context

    # ------------------------------------------------------------------ the program
    def example_inputs(self, batch_size: int = 2) -> tuple:
        x = torch.full((batch_size, *self.x_shape), 0.5 if self.levels else 0.0, dtype=self.dtype, device=self.device)
        if self.context_dim is None:
            return (x,)
        return (x, torch.zeros(batch_size, self.context_dim, dtype=self.dtype, device=self.device))

    def model(self, x: torch.Tensor, context: torch.Tensor | None = None):
        x = self._data(x)
        context = self._context(context, x.shape[:1]) if self.context_dim is not None else self._context(context)
        with pyro.plate("data", x.shape[0]):
            obs = x if self.dequantizer is None else self.dequantizer(x)[0]
            return pyro.sample("x", self.distribution(context), obs=obs)

    # ------------------------------------------------------------------ capabilities
    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) per datum, shape x.shape[:-len(x_shape)]; for discrete data (`levels`), the
        dequantization bound on log P(x) (a fresh noise draw each call)."""
        x = self._data(x)
        lead = x.shape[: x.dim() - self.event_dim]
        transforms = self.transforms(self._context(context, lead) if self.context_dim is not None else self._context(context))
        if self.dequantizer is None:
            return self._change_of_variables(transforms, x.clone())  # a fresh tensor: no transform cache can serve a stale inverse
        y, log_q = self.dequantizer(x)
        return self._change_of_variables(transforms, y) - log_q - self.dim * math.log(self.levels)

    def _change_of_variables(self, transforms: list, y: torch.Tensor) -> torch.Tensor:
        """log p(y) = log N(f^{-1}(y)) - sum of the layers' log|det| on the way back: what
        `distribution().log_prob` computes (a test checks it), without building the
        `TransformedDistribution` and its per-call domain / codomain bookkeeping."""
        batch = y.dim() - self.event_dim
        total = 0.0
        for t in reversed(transforms):
            x = t.inv(y)
            if isinstance(t, T.Permute):  # volume preserving: no zeros tensor to subtract
                y = x
                continue
            ladj = t.log_abs_det_jacobian(x, y)
            if ladj.dim() > batch:  # elementwise (or partly summed) log-determinants
                ladj = ladj.reshape(ladj.shape[:batch] + (-1,)).sum(-1)
            total = total - ladj
            y = x
        if type(self).base_dist is Flow.base_dist:  # the standard Normal, in closed form
            return total - 0.5 * y.pow(2).reshape(y.shape[:batch] + (-1,)).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return total + self.base_dist().log_prob(y)

    def energy(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return -self.log_prob(x, context)

    def bits_per_dim(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Mean negative log-likelihood of x in bits per dimension."""
        return -self.log_prob(x, context).mean() / (math.log(2.0) * self.dim)

    def rsample(self, n: int, context: torch.Tensor | None = None) -> torch.Tensor:
        """`n` reparameterised draws (n, *x_shape), differentiable in the parameters; for
        discrete data, the continuous values in [0, 1] before quantization."""
        _positive_int("n", n)
        d = self.distribution(self._context(context, (n,)) if self.context_dim is not None else self._context(context))
        return d.rsample((n,))

    @torch.no_grad()
    def sample(self, n: int, context: torch.Tensor | None = None) -> torch.Tensor:
        """`n` draws (n, *x_shape); discrete data (`levels`) are quantized to their grid."""
        y = self.rsample(n, context)
        if self.levels is None:
            return y
        from models.dequantize import quantize

        return quantize(y, self.levels)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor, context: torch.Tensor | None = None) -> "Flow":
        """Data-dependent initialisation from a batch of data: each activation normalisation not
        yet initialised standardises what reaches it (Glow). `inference.fit` calls it through
        `validate_data` on the first 1024 rows; a flow that was initialised is left as it is."""
        norms = [m for m in self.modules() if isinstance(m, ActNorm) and not bool(m.initialized)]
        if not norms:
            return self
        for m in norms:
            m.initializing = True
        try:
            self.log_prob(x, context)
        finally:
            for m in norms:
                m.initializing = False
                m.initialized.fill_(True)
        return self

    def validate_data(self, *args, **kwargs) -> None:
        """Check the data (`pgm.Model.validate_data`), then initialise the activation
        normalisations from them (`init_from`) before the first step."""
        super().validate_data(*args, **kwargs)
        if args and torch.is_tensor(args[0]) and args[0].dim() > 0:
            rest = tuple(a[:1024] if torch.is_tensor(a) and a.dim() > 0 else a for a in args[1:2])
            self.init_from(args[0][:1024], *rest)

    # ------------------------------------------------------------------ structure for drawing
    def jacobian_pattern(self, x: torch.Tensor | None = None, context: torch.Tensor | None = None,
                         num_points: int = 3) -> torch.Tensor:
        """(D, D) bool: entry [i, j] is True when base unit u_i = f^{-1}(x)_i depends on data unit
        x_j (j != i), from autograd Jacobians at `num_points` data (random ones by default), for
        the unit-level graph x_j -> x_i: the complete DAG of the order for autoregressive layers,
        the two-block pattern for one coupling layer, dense for a deep stack."""
        if x is None:
            x = self.sample(num_points, context) if self.context_dim is None else self.sample(num_points, context)
        x = self._data(x).reshape(-1, *self.x_shape)
        if self.context_dim is not None:
            context = self._context(context, x.shape[:1])
        t = self.transform(context)
        if self.levels is not None:  # the pattern of the flow, not of the elementwise logit
            x = x.clamp(1e-3, 1 - 1e-3)
        pattern = torch.zeros(self.dim, self.dim, dtype=torch.bool, device=self.device)
        for i in range(x.shape[0]):
            c = None if context is None else context[i: i + 1]
            t = self.transform(c)

            def inverse(flat):
                return t.inv(flat.reshape(1, *self.x_shape)).reshape(-1)

            jac = torch.autograd.functional.jacobian(inverse, x[i].reshape(-1).detach().clone())
            pattern |= jac.abs() > 1e-12
        pattern.fill_diagonal_(False)
        return pattern

    def latent_model(self, batch_size: int = 2) -> Model:
        """The flow as the latent-variable model it describes, for drawing: z ~ N(0, I) -> x, x a
        deterministic invertible function of z (``pgm.graph_of(flow.latent_model())``)."""
        flow = self

        def program(n: torch.Tensor):
            with pyro.plate("data", int(n.shape[0])):
                z = pyro.sample("z", flow.base_dist())
                return pyro.deterministic("x", flow.transform(None if flow.context_dim is None else
                                                               torch.zeros(z.shape[0], flow.context_dim, dtype=z.dtype, device=z.device))(z),
                                          event_dim=flow.event_dim)

        return Model.from_program(program, example_args=(torch.zeros(batch_size),))

    def extra_repr(self) -> str:
        parts = [f"x_shape={self.x_shape}"]
        if self.context_dim is not None:
            parts.append(f"context_dim={self.context_dim}")
        if self.levels is not None:
            parts.append(f"levels={self.levels}, dequantize={type(self.dequantizer).__name__}")
        return ", ".join(parts)


class _VectorFlow(Flow):
    """Flows over vectors (D,): `num_layers` layers of one kind, alternated, and an optional
    data-initialised normalisation at the data end (`normalize`)."""

    kind = "affine"

    def __init__(self, x_dim: int | None = None, *, x_shape=None, num_layers: int = 4, hidden_dims: Sequence[int] = (64, 64),
                 context_dim: int | None = None, levels: int | None = None, dequantize: str = "uniform", alpha: float = 0.05,
                 normalize: bool = True, **layer_options) -> None:
        shape = _shape(x_dim, x_shape)
        if len(shape) != 1:
            raise ValueError(f"x_shape: {type(self).__name__} is a flow over vectors, got shape {shape}; flatten the data")
        super().__init__(shape, context_dim=context_dim, levels=levels, dequantize=dequantize, alpha=alpha)
        _positive_int("num_layers", num_layers)
        if self.dim < 2:
            raise ValueError(f"x_dim: {type(self).__name__} needs at least 2 dimensions, got {self.dim}")
        self.x_dim = self.dim
        self.hidden_dims = list(checks.dims("hidden_dims", hidden_dims))
        self.layers.extend(self._build(num_layers, **layer_options))
        if normalize:
            self.layers.append(ActNorm(self.dim, event_dim=1, data_init=True))

    def _build(self, num_layers: int, **options) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for i in range(num_layers):
            if i:
                layers.append(Reverse(self.dim))
            layers.append(_coupling(self.kind, self.dim, self.hidden_dims, self.context_dim, **options))
        return layers


@register("nice", x_dim=2, num_layers=2, hidden_dims=(16,),
          train=dict(settings={"num_layers": 6, "hidden_dims": (128, 128)}, engine="mle", data="moons",
                     data_settings={"n_samples": 20000}, epochs=15, batch_size=256, lr=2e-3))
class NICE(_VectorFlow):
    """NICE (Dinh et al. 2014): additive couplings with alternating halves and a diagonal scaling
    at the base.

    >>> NICE(x_dim=4, num_layers=2, hidden_dims=(8,)).log_prob(torch.zeros(2, 4)).shape
    torch.Size([2])
    """

    kind = "additive"

    def _build(self, num_layers: int, **options) -> list[nn.Module]:
        return [ActNorm(self.dim, event_dim=1, data_init=False)] + super()._build(num_layers, **options)


@register("realnvp", x_dim=2, num_layers=2, hidden_dims=(16,),
          train=dict(settings={"num_layers": 8, "hidden_dims": (128, 128)}, engine="mle", data="checkerboard",
                     engine_settings={"lr_half_life": 1000}, data_settings={"n_samples": 40000}, epochs=30,
                     batch_size=256, lr=1.5e-3))
class RealNVP(_VectorFlow):
    """RealNVP (Dinh et al. 2017): affine couplings. Vectors (`x_dim`): halves alternated.
    Images (`x_shape=(C, H, W)`): per scale three checkerboard couplings, a squeeze, three channel
    couplings and half the channels factored out; four checkerboard couplings at the last scale
    (`num_scales`, `hidden_channels` of the convolutional conditioners).

    >>> RealNVP(x_shape=(1, 4, 4), num_scales=2, hidden_channels=4).sample(2).shape
    torch.Size([2, 1, 4, 4])
    """

    kind = "affine"

    def __init__(self, x_dim: int | None = None, *, x_shape=None, num_layers: int = 4, hidden_dims: Sequence[int] = (64, 64),
                 num_scales: int = 2, hidden_channels: int = 32, context_dim: int | None = None, levels: int | None = None,
                 dequantize: str = "uniform", alpha: float = 0.05, normalize: bool = True) -> None:
        shape = _shape(x_dim, x_shape)
        if len(shape) == 1:
            super().__init__(x_shape=shape, num_layers=num_layers, hidden_dims=hidden_dims, context_dim=context_dim,
                             levels=levels, dequantize=dequantize, alpha=alpha, normalize=normalize)
            return
        if len(shape) != 3:
            raise ValueError(f"x_shape: expected (D,) or an image shape (C, H, W), got {shape}")
        Flow.__init__(self, shape, context_dim=context_dim, levels=levels, dequantize=dequantize, alpha=alpha)
        self.num_scales = _positive_int("num_scales", num_scales)
        c, h, w = shape
        if h % 2 ** (num_scales - 1) or w % 2 ** (num_scales - 1):
            raise ValueError(f"x_shape: {num_scales} scales need H and W divisible by {2 ** (num_scales - 1)}, got {shape}")
        self.hidden_channels = _positive_int("hidden_channels", hidden_channels)
        self.layers.extend(self._scale(shape, 0))
        if normalize:
            self.layers.append(ActNorm(c, event_dim=3, data_init=True))

    def _checker(self, shape, parity):
        c, h, w = shape
        net = ConvCouplingNet(c, c, (h, w), self.hidden_channels, self.context_dim)
        return MaskedAffineCoupling(checkerboard_mask(h, w, parity).expand(c, h, w).clone(), net)

    def _channel(self, shape):
        c, h, w = shape
        split = c // 2
        net = ConvCouplingNet(split, c - split, (h, w), self.hidden_channels, self.context_dim)
        return T.ConditionalAffineCoupling(split, net, dim=-3) if self.context_dim else T.AffineCoupling(split, net, dim=-3)

    def _scale(self, shape, scale: int) -> list[nn.Module]:
        """Layers of one scale and those below it, generative order."""
        c, h, w = shape
        if scale == self.num_scales - 1:
            return [self._checker(shape, i % 2) for i in range(4)]
        squeezed = (4 * c, h // 2, w // 2)
        channel: list[nn.Module] = []
        for i in range(3):
            if i:
                channel.append(Reverse(4 * c, event_dim=3))
            channel.append(self._channel(squeezed))
        below = self._scale((2 * c, h // 2, w // 2), scale + 1)
        # data -> base: checker x3, squeeze, channel x3, factor out half, unsqueeze; reversed here.
        return ([Squeeze(), FactorOut(2 * c, below)] + channel[::-1] + [Squeeze(unsqueeze=True)]
                + [self._checker(shape, i % 2) for i in range(3)][::-1])


class _DefaultDtype:
    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        self.saved = torch.get_default_dtype()
        if self.dtype in (torch.float32, torch.float64):
            torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.saved)


class AffineAutoregressive(T.AffineAutoregressive):
    """Pyro's `AffineAutoregressive`, its sequential inverse run in the dtype of its input (Pyro
    1.9 starts that loop from zeros of the default dtype, which fails for float64 flows)."""

    def _inverse(self, y):
        with _DefaultDtype(y.dtype):
            return super()._inverse(y)


class ConditionalAffineAutoregressive(T.ConditionalAffineAutoregressive):
    """Pyro's `ConditionalAffineAutoregressive`, conditioned into `AffineAutoregressive` above."""

    def condition(self, context):
        net = partial(self.nn, context=context)
        net.permutation = self.nn.permutation
        net.get_permutation = self.nn.get_permutation
        return AffineAutoregressive(net, **self.kwargs)


def _autoregressive(dim: int, hidden: list[int], context_dim: int | None) -> nn.Module:
    if context_dim:
        return ConditionalAffineAutoregressive(ConditionalAutoRegressiveNN(dim, context_dim, hidden))
    return AffineAutoregressive(AutoRegressiveNN(dim, hidden))


@register("maf", x_dim=2, num_layers=2, hidden_dims=(16,),
          train=dict(settings={"num_layers": 3, "hidden_dims": (256,), "levels": 17}, engine="mle", data="digits",
                     epochs=40, batch_size=128, lr=1e-3))
class MAF(_VectorFlow):
    """Masked autoregressive flow (Papamakarios et al. 2017): Pyro's affine autoregressive
    layers (MADE conditioners, a fresh variable order each) used inverted, so the density is one
    network pass and sampling takes D passes.

    >>> MAF(x_dim=3, num_layers=2, hidden_dims=(8,)).log_prob(torch.zeros(2, 3)).shape
    torch.Size([2])
    """

    def _build(self, num_layers: int, **options) -> list[nn.Module]:
        return [Inverted(_autoregressive(self.dim, self.hidden_dims, self.context_dim)) for _ in range(num_layers)]

    def as_iaf(self) -> "IAF":
        """An IAF sharing this flow's layers and defining the same density: each layer keeps its
        parameters, and the map base -> data is the same (computed with the other direction fast)."""
        return IAF._sharing(self)


@register("iaf", x_dim=2, num_layers=2, hidden_dims=(16,),
          train=dict(settings={"num_layers": 5, "hidden_dims": (128, 128)}, engine="mle", data="8gaussians",
                     data_settings={"n_samples": 20000}, epochs=12, batch_size=256, lr=2e-3))
class IAF(_VectorFlow):
    """Inverse autoregressive flow (Kingma et al. 2016): Pyro's affine autoregressive layers
    used forward, so sampling is one pass and the density of a new point takes D passes (the
    density of its own samples is served from Pyro's cache).

    >>> IAF(x_dim=3, num_layers=2, hidden_dims=(8,)).rsample(4).shape
    torch.Size([4, 3])
    """

    def _build(self, num_layers: int, **options) -> list[nn.Module]:
        return [_autoregressive(self.dim, self.hidden_dims, self.context_dim) for _ in range(num_layers)]

    @classmethod
    def _sharing(cls, flow: Flow) -> "Flow":
        other = cls.__new__(cls)
        Flow.__init__(other, flow.x_shape, context_dim=flow.context_dim, levels=flow.levels, alpha=flow.alpha)
        other.x_dim = flow.dim
        other.dequantizer = flow.dequantizer
        other.layers = flow.layers
        return other.to(device=flow.device, dtype=flow.dtype)


@register("spline", x_dim=2, num_layers=2, hidden_dims=(16,),
          train=dict(settings={"num_layers": 4, "hidden_dims": (64, 64)}, engine="mle", data="pinwheel",
                     data_settings={"n_samples": 20000}, epochs=12, batch_size=256, lr=2e-3))
class SplineFlow(_VectorFlow):
    """Neural spline flow, coupling form (Durkan et al. 2019): rational-quadratic spline couplings
    (Pyro's `SplineCoupling`; `count_bins` bins on [-`bound`, `bound`], identity tails).

    >>> SplineFlow(x_dim=2, num_layers=2, hidden_dims=(8,)).log_prob(torch.zeros(2, 2)).shape
    torch.Size([2])
    """

    kind = "spline"

    def __init__(self, x_dim: int | None = None, *, count_bins: int = 8, bound: float = 4.0, **kwargs) -> None:
        _positive_int("count_bins", count_bins, 2)
        if not (isinstance(bound, (int, float)) and bound > 0):
            raise ValueError(f"bound: expected a positive float, got {bound!r}")
        super().__init__(x_dim, count_bins=count_bins, bound=float(bound), **kwargs)


@register("glow", x_shape=(1, 4, 4), num_scales=2, steps_per_scale=1, hidden_channels=8,
          train=dict(settings={"x_shape": (1, 8, 8), "levels": 17, "num_scales": 2, "steps_per_scale": 6,
                               "hidden_channels": 64}, engine="mle", data="digits", epochs=40, batch_size=64, lr=1e-3))
class Glow(Flow):
    """Glow (Kingma & Dhariwal 2018) over images (C, H, W): per scale a squeeze, then
    `steps_per_scale` steps of activation normalisation (data-dependent initialisation), an
    invertible 1x1 convolution in LU form (Pyro's `GeneralizedChannelPermute`) and a channel affine
    coupling (Pyro's `AffineCoupling` with a convolutional conditioner), then half the channels
    factored out (not at the last scale).

    >>> Glow(x_shape=(1, 4, 4), num_scales=2, steps_per_scale=1, hidden_channels=4).sample(2).shape
    torch.Size([2, 1, 4, 4])
    """

    def __init__(self, x_dim: int | None = None, *, x_shape=None, num_scales: int = 2, steps_per_scale: int = 4,
                 hidden_channels: int = 32, context_dim: int | None = None, levels: int | None = None,
                 dequantize: str = "uniform", alpha: float = 0.05) -> None:
        shape = _shape(x_dim, x_shape)
        if len(shape) == 1:  # digits come flat: a square image of one channel
            side = math.isqrt(shape[0])
            if side * side != shape[0]:
                raise ValueError(f"x_shape: Glow needs an image shape (C, H, W), got {shape}")
            shape = (1, side, side)
        if len(shape) != 3:
            raise ValueError(f"x_shape: Glow needs an image shape (C, H, W), got {shape}")
        super().__init__(shape, context_dim=context_dim, levels=levels, dequantize=dequantize, alpha=alpha)
        self.num_scales = _positive_int("num_scales", num_scales)
        self.steps_per_scale = _positive_int("steps_per_scale", steps_per_scale)
        self.hidden_channels = _positive_int("hidden_channels", hidden_channels)
        c, h, w = shape
        if h % 2 ** num_scales or w % 2 ** num_scales:
            raise ValueError(f"x_shape: {num_scales} scales need H and W divisible by {2 ** num_scales}, got {shape}")
        self.layers.extend(self._scale(shape, 0))

    def _step(self, shape) -> list[nn.Module]:
        """One step, generative order: coupling, 1x1 convolution, actnorm (reversed data order)."""
        c, h, w = shape
        split = c // 2
        net = ConvCouplingNet(split, c - split, (h, w), self.hidden_channels, self.context_dim)
        coupling = T.ConditionalAffineCoupling(split, net, dim=-3) if self.context_dim else T.AffineCoupling(split, net, dim=-3)
        return [coupling, T.GeneralizedChannelPermute(channels=c), ActNorm(c, event_dim=3, data_init=True)]

    def _scale(self, shape, scale: int) -> list[nn.Module]:
        c, h, w = shape
        squeezed = (4 * c, h // 2, w // 2)
        steps: list[nn.Module] = []
        for _ in range(self.steps_per_scale):
            steps = self._step(squeezed) + steps
        inner: list[nn.Module] = []
        if scale < self.num_scales - 1:
            inner = [FactorOut(2 * c, self._scale((2 * c, h // 2, w // 2), scale + 1))]
        # data -> base: squeeze, steps, factor out half, unsqueeze; reversed here.
        return [Squeeze()] + inner + steps + [Squeeze(unsqueeze=True)]

    def _data(self, x):
        if torch.is_tensor(x) and x.dim() >= 1 and x.shape[-1] == self.dim and tuple(x.shape[-3:]) != self.x_shape:
            x = x.reshape(*x.shape[:-1], *self.x_shape)  # flat digits
        return super()._data(x)


#: The flow families by registry name.
FLOWS = {"nice": NICE, "realnvp": RealNVP, "maf": MAF, "iaf": IAF, "glow": Glow, "spline": SplineFlow}
