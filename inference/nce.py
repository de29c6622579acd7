"""Noise-contrastive estimation (NCE) and flow-contrastive estimation (FCE) of energy-based models.

Both fit an unnormalised model log p(x) = -E(x) - c, with the log normaliser c learned as a
parameter next to the model's, by logistic regression of data against noise (Gutmann &
Hyvarinen 2010). With nu noise draws per datum and the logit
G(x) = -E(x) - c - log p_noise(x) - log nu, NCE maximises

    J = E_data[ log sigmoid(G(x)) ] + nu E_noise[ log sigmoid(-G(y)) ],

whose maximiser over (E, c) is the data density with its normaliser: at the optimum c is log Z.

- `NCE`: a fixed noise distribution (by default a Gaussian with the data's mean and covariance,
  fitted once to the training data).
- `FlowContrastive` (Gao et al. 2020): the noise is a trainable normalizing flow q built from
  Pyro's transforms (`CouplingFlow`: affine or rational-quadratic spline couplings over a
  standard Normal, then an affine map initialised to the data's moments), trained adversarially: the EBM and c minimise
  -V, the flow maximises it, with V the same value function at nu = 1,
  V = E_data[ log p(x) / (p(x) + q(x)) ] + E_q[ log q(y) / (p(y) + q(y)) ].
  The flow's samples are reparameterised, so its gradient flows through them.

Both need the model's energy and continuous data (the default noise is a Gaussian).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import transforms as T
from torch import nn

from inference.engine import Engine, as_args, register_engine
from inference.engine import move_optimizer_state
from inference.maximum_likelihood import make_optimizer

__all__ = ["NCE", "FlowContrastive", "CouplingFlow"]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _moments(x: torch.Tensor, jitter: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and the Cholesky factor (D, D) of the covariance of flattened data (n, D)."""
    x = _flat(x)
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / max(x.shape[0] - 1, 1)
    cov = cov + jitter * (cov.diagonal().mean() + 1.0) * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return mean, torch.linalg.cholesky(cov)


def _positive_int(arg: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{arg}: expected a positive int, got {value!r}")
    return value


class _Contrastive(Engine):
    """Shared parts of NCE and FCE: the learned log normaliser and the logistic objective."""

    requires = frozenset({"energy", "continuous"})

    def __init__(self, model: Any, guide: Callable | None, optim, lr: float, optim_kwargs: dict) -> None:
        super().__init__(model, guide)
        m = self.model
        #: c, the learned log normaliser: log p(x) = -E(x) - c.
        self.log_normalizer = nn.Parameter(torch.zeros((), dtype=m.dtype, device=m.device))
        self.optimizer = make_optimizer(optim, self._model_parameters(), lr, **optim_kwargs)

    def _model_parameters(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad] + [self.log_normalizer]

    def parameters(self) -> list[torch.Tensor]:
        return self._model_parameters()

    def log_model(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = -E(x) - c per datum, shape (batch,)."""
        return -self.model.energy(x) - self.log_normalizer

    def _data(self, batch) -> torch.Tensor:
        x = as_args(batch)[0]
        if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() < 2:
            raise ValueError(f"batch: expected a floating tensor of shape (batch, *event), got {getattr(x, 'shape', type(x).__name__)}")
        return x.to(device=self.model.device, dtype=self.model.dtype)

    @staticmethod
    def _objective(g_data: torch.Tensor, g_noise: torch.Tensor, nu: int) -> torch.Tensor:
        """J = mean log sigmoid(G(data)) + nu mean log sigmoid(-G(noise))."""
        return F.logsigmoid(g_data).mean() + nu * F.logsigmoid(-g_noise).mean()

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "log_normalizer": self.log_normalizer.detach().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.log_normalizer.copy_(state["log_normalizer"])

    def to(self, device=None, dtype=None) -> "_Contrastive":
        super().to(device, dtype)
        self.log_normalizer.data = self.log_normalizer.data.to(device=device, dtype=dtype)
        return self


# ---------------------------------------------------------------------------------------------
# NCE
# ---------------------------------------------------------------------------------------------
@register_engine("nce")
class NCE(_Contrastive):
    """Noise-contrastive estimation with the log normaliser learned as a parameter.

    - `noise`: None or ``"gaussian"``: a Gaussian with the training data's mean and covariance
      (its standard deviations times `noise_scale`), fitted in `validate` (which `inference.fit`
      calls on the whole data) or else on the first batch; or a distribution object with
      ``sample(shape)`` and ``log_prob(x)`` over data of the model's shape;
    - `num_noise`: nu, the noise draws per datum;
    - `optim`, `lr`, further keywords: the optimiser of the model's parameters and c.

    `step` returns ``loss`` (-J per datum), ``log_normalizer`` (c, the estimate of log Z) and
    ``accuracy`` (of the data-versus-noise classifier).

    >>> import torch
    >>> from models.ebm import GaussianEBM
    >>> engine = NCE(GaussianEBM(2), num_noise=4)
    >>> engine.step(torch.randn(16, 2))["log_normalizer"] != 0.0
    True
    """

    def __init__(
        self,
        model: Any,
        guide: Callable | None = None,
        *,
        noise: Any = None,
        num_noise: int = 1,
        noise_scale: float = 1.0,
        optim="adam",
        lr: float = 2e-3,
        **optim_kwargs,
    ) -> None:
        super().__init__(model, guide, optim, lr, optim_kwargs)
        self.num_noise = _positive_int("num_noise", num_noise)
        if not (isinstance(noise_scale, (int, float)) and not isinstance(noise_scale, bool) and noise_scale > 0):
            raise ValueError(f"noise_scale: expected a positive float, got {noise_scale!r}")
        self.noise_scale = float(noise_scale)
        if noise is None or (isinstance(noise, str) and noise == "gaussian"):
            self._noise = None  # fitted to the data
        elif isinstance(noise, str):
            raise ValueError(f"noise: expected None, 'gaussian' or a distribution, got {noise!r}")
        elif callable(getattr(noise, "sample", None)) and callable(getattr(noise, "log_prob", None)):
            self._noise = noise
        else:
            raise TypeError(f"noise: expected None, 'gaussian' or a distribution with sample/log_prob, got {type(noise).__name__}")
        self.noise_mean: torch.Tensor | None = None
        self.noise_scale_tril: torch.Tensor | None = None

    # ------------------------------------------------------------------ the noise
    def fit_noise(self, x: torch.Tensor) -> None:
        """Fit the Gaussian noise to data x (n, *event): its mean and scaled covariance."""
        x = self._data(x)
        if x.shape[0] < 2:
            raise ValueError(f"data: fitting the Gaussian noise needs at least 2 data, got {x.shape[0]}")
        mean, tril = _moments(x)
        self.noise_mean, self.noise_scale_tril = mean, tril * self.noise_scale

    def noise(self) -> dist.Distribution:
        """The noise distribution (over flattened data for the fitted Gaussian)."""
        if self._noise is not None:
            return self._noise
        if self.noise_mean is None:
            raise RuntimeError("the Gaussian noise is not fitted yet: call fit_noise(data) or train with inference.fit")
        return dist.MultivariateNormal(self.noise_mean, scale_tril=self.noise_scale_tril)

    def _noise_sample(self, n: int, like: torch.Tensor) -> torch.Tensor:
        y = self.noise().sample((n,))
        return y.reshape(n, *like.shape[1:]).to(device=like.device, dtype=like.dtype)

    def _noise_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self._noise is None:
            return self.noise().log_prob(_flat(x))
        return self._noise.log_prob(x)

    def validate(self, data) -> None:
        super().validate(data)
        if self._noise is None and self.noise_mean is None:
            self.fit_noise(as_args(data)[0])

    # ------------------------------------------------------------------ the objective
    def _logits(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_nu = math.log(self.num_noise)
        g_data = self.log_model(x) - self._noise_log_prob(x) - log_nu
        g_noise = self.log_model(y) - self._noise_log_prob(y) - log_nu
        return g_data, g_noise

    def loss(self, batch) -> torch.Tensor:
        return self._loss(self._data(batch))[0]

    def _loss(self, x: torch.Tensor):
        if self._noise is None and self.noise_mean is None:
            self.fit_noise(x)
        y = self._noise_sample(self.num_noise * x.shape[0], x)
        g_data, g_noise = self._logits(x, y)
        return -self._objective(g_data, g_noise, self.num_noise), g_data, g_noise

    def step(self, batch) -> dict[str, float]:
        loss, g_data, g_noise = self._loss(self._data(batch))
        value = self._apply(loss, self.optimizer)
        with torch.no_grad():
            correct = (g_data > 0).sum() + (g_noise < 0).sum()
            accuracy = float(correct) / (g_data.numel() + g_noise.numel())
        return {"loss": value, "log_normalizer": float(self.log_normalizer.detach()), "accuracy": accuracy}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.noise_mean is not None:
            state["noise_mean"] = self.noise_mean.clone()
            state["noise_scale_tril"] = self.noise_scale_tril.clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "noise_mean" in state:
            m = self.model
            self.noise_mean = state["noise_mean"].to(device=m.device, dtype=m.dtype)
            self.noise_scale_tril = state["noise_scale_tril"].to(device=m.device, dtype=m.dtype)

    def to(self, device=None, dtype=None) -> "NCE":
        super().to(device, dtype)
        if self.noise_mean is not None:
            self.noise_mean = self.noise_mean.to(device=device, dtype=dtype)
            self.noise_scale_tril = self.noise_scale_tril.to(device=device, dtype=dtype)
        return self

    def __repr__(self) -> str:
        return f"NCE({type(self.model).__name__}, num_noise={self.num_noise})"


# ---------------------------------------------------------------------------------------------
# The flow and FCE
# ---------------------------------------------------------------------------------------------
class CouplingFlow(nn.Module):
    """A normalizing flow over data of shape `x_shape` from Pyro's transforms: a standard
    Normal u, `num_layers` coupling layers (`layer="affine"`: `T.affine_coupling`, cheap;
    ``"spline"``: rational-quadratic `T.spline_coupling`, more flexible, about 10x slower on
    CPU), the coordinates reversed between layers (elementwise `T.spline` in one dimension),
    then x = loc + scale * u' with loc and scale learnable (`init_from` sets them to the data's
    moments). Pyro's transform caches are turned off, so a tensor scored twice across a
    parameter update is never served a stale inverse.

    `log_prob(x)` (batch,) and `rsample(n)` (n, *x_shape) are differentiable in the flow's
    parameters (`rsample` by reparameterisation).

    >>> flow = CouplingFlow(2, num_layers=2, hidden_dims=(16,))
    >>> flow.rsample(5).shape, flow.log_prob(torch.zeros(3, 2)).shape
    (torch.Size([5, 2]), torch.Size([3]))
    """

    def __init__(self, x_shape, num_layers: int = 4, hidden_dims: Sequence[int] = (32, 32), layer: str = "affine", count_bins: int = 8, bound: float = 4.0) -> None:
        super().__init__()
        self.x_shape = (int(x_shape),) if isinstance(x_shape, int) else tuple(int(v) for v in x_shape)
        if not self.x_shape or any(v < 1 for v in self.x_shape):
            raise ValueError(f"x_shape: expected a positive int or a tuple of positive ints, got {x_shape!r}")
        _positive_int("num_layers", num_layers)
        if layer not in ("affine", "spline"):
            raise ValueError(f"layer: expected 'affine' or 'spline', got {layer!r}")
        d = math.prod(self.x_shape)
        self.dim = d
        hidden = [int(h) for h in hidden_dims]
        if d == 1:
            layers = [T.spline(1, count_bins=count_bins, bound=bound) for _ in range(num_layers)]
        elif layer == "affine":
            layers = [T.affine_coupling(d, hidden_dims=hidden) for _ in range(num_layers)]
        else:
            layers = [T.spline_coupling(d, hidden_dims=hidden, count_bins=count_bins, bound=bound) for _ in range(num_layers)]
        self.layers = nn.ModuleList(layers)
        self.loc = nn.Parameter(torch.zeros(d))
        self.log_scale = nn.Parameter(torch.zeros(d))
        self._no_cache()

    def _no_cache(self) -> None:
        for t in self.layers:
            t._cache_size = 0

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> "CouplingFlow":
        """Set loc and scale to the mean and standard deviation of data x (n, *x_shape)."""
        x = _flat(x).to(self.loc)
        self.loc.copy_(x.mean(0))
        self.log_scale.copy_(x.std(0).clamp_min(1e-3).log())
        return self

    def distribution(self) -> dist.TransformedDistribution:
        """The flow as a Pyro `TransformedDistribution` over flattened data (event dim 1)."""
        loc = self.loc
        base = dist.Normal(torch.zeros_like(loc), torch.ones_like(loc)).to_event(1)
        reverse = T.Permute(torch.arange(self.dim - 1, -1, -1, device=loc.device))
        chain: list = []
        for i, layer in enumerate(self.layers):
            if i and self.dim > 1:
                chain.append(reverse)
            chain.append(layer)
        chain.append(T.AffineTransform(loc, self.log_scale.exp(), event_dim=1))
        return dist.TransformedDistribution(base, chain)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.distribution().log_prob(_flat(x))

    def rsample(self, n: int) -> torch.Tensor:
        return self.distribution().rsample((n,)).reshape(n, *self.x_shape)


@register_engine("fce", "flow_contrastive")
class FlowContrastive(_Contrastive):
    """Flow-contrastive estimation (Gao et al. 2020): NCE against a trainable flow, trained
    adversarially (see the module docstring).

    - `flow`: None (a `CouplingFlow` with `num_layers` `layer` couplings of `hidden_dims`, its affine
      part set to the data's moments in `validate` or on the first batch), a list of Pyro
      `TransformModule`s (made a `CouplingFlow`-like flow with those layers), or an ``nn.Module``
      offering ``log_prob(x)`` and ``rsample(n)``;
    - `noise`: the same as `flow`, under the issue's name: any flow model of the zoo
      (``noise=models.RealNVP(x_dim=2)``, `models.MAF`, ...; it offers ``log_prob(x)`` and
      ``rsample(n)``), initialised from the data in `validate` through its ``init_from`` (the
      data-dependent activation normalisation);
    - `optim`, `lr`: the optimiser of the model and c; `flow_lr`: the flow's (same optimiser).

    Each `step` updates the EBM and c on -V, then the flow on V. It returns ``loss`` (-V, the
    EBM's loss), ``log_normalizer`` (c) and ``accuracy`` (0.5 when the flow fools the EBM).

    >>> import torch
    >>> from models.ebm import GaussianEBM
    >>> engine = FlowContrastive(GaussianEBM(2), hidden_dims=(8,))
    >>> sorted(engine.step(torch.randn(16, 2)))
    ['accuracy', 'flow_loss', 'log_normalizer', 'loss']
    """

    def __init__(
        self,
        model: Any,
        guide: Callable | None = None,
        *,
        flow: Any = None,
        noise: Any = None,
        num_layers: int = 4,
        hidden_dims: Sequence[int] = (32, 32),
        layer: str = "affine",
        optim="adam",
        lr: float = 5e-3,
        flow_lr: float = 3e-3,
        **optim_kwargs,
    ) -> None:
        super().__init__(model, guide, optim, lr, optim_kwargs)
        m = self.model
        x_shape = tuple(m.example_inputs(1)[0].shape[1:])
        if noise is not None:
            if flow is not None:
                raise ValueError("noise, flow: give the trainable noise once (noise= or flow=), not both")
            if not (isinstance(noise, nn.Module) and callable(getattr(noise, "log_prob", None)) and callable(getattr(noise, "rsample", None))):
                raise TypeError(f"noise: expected a flow model with log_prob and rsample (e.g. models.RealNVP), got {type(noise).__name__}")
            flow_shape = tuple(getattr(noise, "x_shape", x_shape))
            if math.prod(flow_shape) != math.prod(x_shape):
                raise ValueError(f"noise: the flow is over shape {flow_shape}, the model's data have shape {x_shape}")
        self._flow_initialised = flow is not None or (noise is not None and not hasattr(noise, "init_from"))
        flow = noise if noise is not None else flow
        if flow is None:
            flow = CouplingFlow(x_shape, num_layers=num_layers, hidden_dims=hidden_dims, layer=layer)
        elif isinstance(flow, (list, tuple, nn.ModuleList)):
            layers = list(flow)
            if not layers or not all(isinstance(t, dist.TransformModule) for t in layers):
                raise TypeError("flow: expected a list of pyro.distributions.TransformModule layers")
            custom = CouplingFlow(x_shape, num_layers=1)
            custom.layers = nn.ModuleList(layers)
            custom._no_cache()
            flow, self._flow_initialised = custom, False
        elif not (isinstance(flow, nn.Module) and callable(getattr(flow, "log_prob", None)) and callable(getattr(flow, "rsample", None))):
            raise TypeError(f"flow: expected None, a list of Pyro TransformModules or an nn.Module with log_prob and rsample, got {type(flow).__name__}")
        self.flow = flow.to(device=m.device, dtype=m.dtype)
        self.flow_optimizer = make_optimizer(optim, self.flow.parameters(), flow_lr, **optim_kwargs)

    def parameters(self) -> list[torch.Tensor]:
        return self._model_parameters() + [p for p in self.flow.parameters() if p.requires_grad]

    def validate(self, data) -> None:
        super().validate(data)
        self._init_flow(as_args(data)[0])

    def _init_flow(self, x: torch.Tensor) -> None:
        if not self._flow_initialised and hasattr(self.flow, "init_from"):
            self.flow.init_from(self._data(x))
        self._flow_initialised = True

    def _value(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(V, logits of data, logits of flow samples), logit = log p - log q."""
        both = torch.cat([x, y])  # one pass through the EBM and the flow
        g = self.log_model(both) - self.flow.log_prob(both)
        g_data, g_noise = g[: x.shape[0]], g[x.shape[0]:]
        return self._objective(g_data, g_noise, 1), g_data, g_noise

    def loss(self, batch) -> torch.Tensor:
        x = self._data(batch)
        self._init_flow(x)
        with torch.no_grad():
            y = self.flow.rsample(x.shape[0])
        return -self._value(x, y)[0]

    def step(self, batch) -> dict[str, float]:
        x = self._data(batch)
        self._init_flow(x)
        # The EBM and c: minimise -V against the current flow (its samples held fixed).
        with torch.no_grad():
            y = self.flow.rsample(x.shape[0])
        value, g_data, g_noise = self._value(x, y)
        loss = self._apply(-value, self.optimizer)
        # The flow: maximise -V (minimise V) through reparameterised samples.
        value = self._value(x, self.flow.rsample(x.shape[0]))[0]
        flow_loss = self._apply(value, self.flow_optimizer)
        self.num_steps -= 1  # two updates, one engine step
        with torch.no_grad():
            correct = (g_data > 0).sum() + (g_noise < 0).sum()
            accuracy = float(correct) / (g_data.numel() + g_noise.numel())
        return {"loss": loss, "flow_loss": flow_loss, "log_normalizer": float(self.log_normalizer.detach()), "accuracy": accuracy}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "flow": {k: v.clone() for k, v in self.flow.state_dict().items()},
            "flow_optimizer": self.flow_optimizer.state_dict(),
            "flow_initialised": self._flow_initialised,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.flow.load_state_dict(state["flow"])
        self.flow_optimizer.load_state_dict(state["flow_optimizer"])
        self._flow_initialised = bool(state["flow_initialised"])

    def to(self, device=None, dtype=None) -> "FlowContrastive":
        super().to(device, dtype)
        self.flow.to(device=device, dtype=dtype)
        move_optimizer_state(self.flow_optimizer, device, dtype)
        return self

    def __repr__(self) -> str:
        return f"FlowContrastive({type(self.model).__name__}, flow={type(self.flow).__name__})"
