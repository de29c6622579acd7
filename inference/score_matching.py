"""Score matching: fit a model's score s(x) = grad_x log p(x) to the data without its normaliser.

Three objectives, all minimised by the data's score (Fisher divergence up to a constant):

- ``"exact"`` (Hyvarinen 2005): E_data[ 1/2 |s(x)|^2 + tr(grad_x s(x)) ]. The Hessian trace
  takes one backward pass per data dimension, so it is for small dimensions.
- ``"sliced"`` (Song et al. 2019): random projections v ~ N(0, I) replace the trace,
  E_data E_v[ v^T (grad_x s(x)) v + 1/2 (v^T s(x))^2 ]; with ``variance_reduced=True`` the
  second term is replaced by its expectation over v, 1/2 |s(x)|^2 (SSM-VR).
- ``"denoising"`` (Vincent 2011): perturb x~ = x + sigma z, z ~ N(0, I), and regress the score
  of the perturbed data on -z / sigma: E[ 1/2 |s(x~, sigma) + z / sigma|^2 ]. It fits the
  score of the data convolved with N(0, sigma^2 I) (so a Gaussian's covariance comes out
  sigma^2 I too wide). With a decreasing sequence `sigmas` (NCSN, Song & Ermon 2019) each
  datum gets a level drawn uniformly and the loss is weighted by sigma^2,
  E[ 1/2 |sigma s(x~, sigma) + z|^2 ], so every level contributes on the same scale.

The score comes from the model (`inference.langevin.score_of`): a ``score(x, sigma=None)``
method, or minus the gradient of a differentiable `energy`, or the gradient of `log_prob` for a
model with a log density but no energy (a noise level is passed only to an energy or score
that takes ``sigma``). A bare score network (an ``nn.Module``) is wrapped by
`inference.langevin.ScoreNetwork` (pass ``x_shape=``).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

import torch

import pgm
from inference.engine import Engine, EngineError, _refusal, as_args, register_engine
from inference.langevin import accepts_sigma, as_score_model, check_sigmas, has_score, score_of
from inference.maximum_likelihood import make_optimizer

__all__ = ["ScoreMatching", "METHODS", "geometric"]

METHODS = ("exact", "sliced", "denoising")


@register_engine("sm", "score_matching")
class ScoreMatching(Engine):
    """Score matching for continuous models with a differentiable energy or a score network.

    - `method`: ``"exact"``, ``"sliced"`` or ``"denoising"`` (see the module docstring);
    - `sigma`: the noise level of single-level denoising (default 0.1);
    - `sigmas`: a strictly decreasing sequence of noise levels for the multi-level denoising
      objective (exclusive with `sigma`); `geometric(sigma_max, sigma_min, n)` builds one; when
      neither is given and the model has its own ``sigmas`` (`models.NCSN`), those are used;
    - `num_projections`: random projections per datum (sliced);
    - `variance_reduced`: SSM-VR, the |s|^2 term in closed form (sliced);
    - `optim`, `lr`, further keywords: the optimiser (see `make_optimizer`);
    - `x_shape`: the data shape, only for a bare score network.

    `step` returns ``loss`` (the objective, per datum).

    >>> import torch
    >>> from models.ebm import GaussianEBM
    >>> engine = ScoreMatching(GaussianEBM(2), method="exact")
    >>> x = torch.randn(8, 2)
    >>> abs(engine.loss(x).item() - (0.5 * (x**2).sum(-1).mean() - 2).item()) < 1e-5  # s = -x, tr = -2
    True
    """

    requires = frozenset({"continuous"})

    def __init__(
        self,
        model: Any,
        guide: Callable | None = None,
        *,
        method: str = "exact",
        sigma: float | None = None,
        sigmas: Sequence[float] | torch.Tensor | None = None,
        num_projections: int = 1,
        variance_reduced: bool = True,
        optim="adam",
        lr: float = 1e-3,
        x_shape=None,
        **optim_kwargs,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        super().__init__(as_score_model(model, x_shape), guide)
        if not isinstance(num_projections, int) or isinstance(num_projections, bool) or num_projections < 1:
            raise ValueError(f"num_projections: expected a positive int, got {num_projections!r}")
        self.method = method
        self.sigmas: list[float] | None = None
        self.sigma: float | None = None
        if method == "denoising":
            if sigma is not None and sigmas is not None:
                raise ValueError("sigma, sigmas: give one noise level (sigma) or a sequence (sigmas), not both")
            own = getattr(self.model, "sigmas", None)
            if sigmas is None and sigma is None and own is not None and not callable(own):
                sigmas = own  # a noise-conditional model (models.NCSN) states its own levels
            if sigmas is not None:
                self.sigmas = check_sigmas(sigmas)
            else:
                sigma = 0.1 if sigma is None else sigma
                if not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and math.isfinite(sigma) and sigma > 0):
                    raise ValueError(f"sigma: expected a positive noise level, got {sigma!r}")
                self.sigma = float(sigma)
        elif sigma is not None or sigmas is not None:
            raise ValueError(f"sigma, sigmas: only method='denoising' uses noise levels (method={method!r})")
        # The score: the model's own, else -grad energy, else grad log_prob.
        m = self.model
        self._energy_fn = None
        if not has_score(m) and m.missing("energy") is not None:
            self._energy_fn = lambda x: -m.log_prob(x)
        self.num_projections = num_projections
        self.variance_reduced = bool(variance_reduced)
        self.optimizer = make_optimizer(optim, self.parameters(), lr, **optim_kwargs)
        # Denoising with the model's own score s(x, sigma) (an NCSN): how to pass the noise level is
        # decided once here, not per step, and no gradient with respect to the noisy data is needed.
        self._direct_score: str | None = None  # how the noise level is passed: "named", "positional", "none"
        if method == "denoising" and self._energy_fn is None and has_score(m):
            fn = m.score
            if accepts_sigma(fn):
                target = fn.forward if isinstance(fn, torch.nn.Module) else fn
                try:
                    named = "sigma" in inspect.signature(target).parameters
                except (TypeError, ValueError):
                    named = False
                self._direct_score = "named" if named else "positional"
            else:
                self._direct_score = "none"
        self._levels: torch.Tensor | None = None

    @classmethod
    def supports(cls, model: pgm.Model) -> str | None:
        reason = super().supports(model)
        if reason is not None:
            return reason
        if has_score(model):
            return None
        missing = model.missing("energy")
        if missing is not None and model.missing("log_prob") is not None:
            return (
                f"it needs a differentiable energy or log density (or a score(x) method), and "
                f"{type(model).__name__} lacks them: {missing}"
            )
        return None

    # ------------------------------------------------------------------ the objectives
    def _score(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        s = score_of(self.model, x, sigma, create_graph=True, energy_fn=self._energy_fn)
        if s.shape != x.shape:
            raise ValueError(f"score: expected the shape of x {tuple(x.shape)}, got {tuple(s.shape)}")
        if not s.requires_grad:
            raise EngineError(
                _refusal(type(self), self.model, "its score does not depend differentiably on x or on any parameter")
            )
        return s

    def _grad(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(out, x, create_graph=True, allow_unused=True)
        return torch.zeros_like(x) if g is None else g  # a score constant in x has zero Jacobian

    def _exact(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        s = self._score(x).flatten(1)
        trace = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(s.shape[1]):
            trace = trace + self._grad(s[:, i].sum(), x).flatten(1)[:, i]
        return 0.5 * s.pow(2).sum(1) + trace

    def _sliced(self, x: torch.Tensor) -> torch.Tensor:
        m = self.num_projections
        x = x.detach().repeat(m, *([1] * (x.dim() - 1))).requires_grad_(True)
        v = torch.randn_like(x)
        s = self._score(x)
        sv = (s * v).flatten(1).sum(1)
        vjv = (self._grad(sv.sum(), x) * v).flatten(1).sum(1)
        second = 0.5 * s.pow(2).flatten(1).sum(1) if self.variance_reduced else 0.5 * sv.pow(2)
        return (vjv + second).reshape(m, -1).mean(0)

    def _denoising_score(self, noisy: torch.Tensor, sigma) -> torch.Tensor:
        if self._direct_score is None:
            return self._score(noisy.requires_grad_(True), sigma)
        if not torch.is_tensor(sigma):
            sigma = torch.full(noisy.shape[:1], sigma, dtype=noisy.dtype, device=noisy.device)
        mode, score = self._direct_score, self.model.score
        s = score(noisy, sigma=sigma) if mode == "named" else score(noisy, sigma) if mode == "positional" else score(noisy)
        if s.shape != noisy.shape:
            raise ValueError(f"score: expected the shape of x {tuple(noisy.shape)}, got {tuple(s.shape)}")
        if not s.requires_grad:
            raise EngineError(_refusal(type(self), self.model, "its score does not depend differentiably on any parameter"))
        return s

    def _denoising(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        z = torch.randn_like(x)
        shape = (-1,) + (1,) * (x.dim() - 1)
        if self.sigmas is None:
            s = self._denoising_score(x + self.sigma * z, self.sigma)
            return 0.5 * (s + z / self.sigma).pow(2).flatten(1).sum(1)
        levels = self._levels
        if levels is None or levels.dtype != x.dtype or levels.device != x.device:
            levels = self._levels = torch.tensor(self.sigmas, dtype=x.dtype, device=x.device)
        sigma = levels[torch.randint(len(self.sigmas), (x.shape[0],), device=x.device)]
        s = self._denoising_score(x + sigma.reshape(shape) * z, sigma)
        return 0.5 * (sigma.reshape(shape) * s + z).pow(2).flatten(1).sum(1)

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """The score-matching objective of each datum, shape (batch,)."""
        if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() < 2:
            raise ValueError(f"x: expected a floating tensor of shape (batch, *event), got {getattr(x, 'shape', type(x).__name__)}")
        x = x.to(device=self.model.device, dtype=self.model.dtype)
        return {"exact": self._exact, "sliced": self._sliced, "denoising": self._denoising}[self.method](x)

    def loss(self, batch) -> torch.Tensor:
        return self.objective(as_args(batch)[0]).mean()

    def step(self, batch) -> dict[str, float]:
        return {"loss": self._apply(self.loss(batch), self.optimizer)}

    # ------------------------------------------------------------------ state

    def __repr__(self) -> str:
        return f"ScoreMatching({type(self.model).__name__}, method={self.method!r})"


def geometric(sigma_max: float, sigma_min: float, num_levels: int) -> list[float]:
    """A geometric sequence of `num_levels` noise levels from `sigma_max` down to `sigma_min`.

    >>> [round(s, 3) for s in geometric(1.0, 0.01, 3)]
    [1.0, 0.1, 0.01]
    """
    if not (0 < sigma_min < sigma_max) or not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(
            f"sigma_max, sigma_min, num_levels: expected 0 < sigma_min < sigma_max and num_levels >= 2, "
            f"got {sigma_max!r}, {sigma_min!r}, {num_levels!r}"
        )
    ratio = (sigma_min / sigma_max) ** (1.0 / (num_levels - 1))
    return [sigma_max * ratio**i for i in range(num_levels)]


from inference.choice import add_engine_preset  # noqa: E402

#: multi-level denoising score matching at the model's own noise levels (NCSN)
add_engine_preset("mdsm", "sm", method="denoising")
