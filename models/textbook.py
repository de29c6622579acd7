"""Textbook Bayesian networks: the small programs that teach d-separation and plates.

- `Chain` a -> b -> c, `Fork` b <- a -> c, `Collider` a -> c <- b: the three ways two
  variables meet (Bishop, PRML section 8.2).
- `Burglary`: Pearl's alarm network, the classic "explaining away" example
  (burglary -> alarm <- earthquake; alarm -> john calls, alarm -> mary calls).
- `EightSchools`: a hierarchical model with a plate (Rubin 1981; Gelman et al., BDA 5.5).
- `MatrixFactorization`: overlapping, non-nested plates (users x items).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from models import checks
from models.registry import register
from pgm import Model

__all__ = ["Chain", "Fork", "Collider", "Burglary", "EightSchools", "MatrixFactorization"]


class _Gaussian3(Model):
    """Three scalar Gaussian sites with one observed, wired by the subclass."""

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, dtype=self.dtype, device=self.device),)

    def _normal(self, loc) -> dist.Normal:
        return dist.Normal(loc, torch.ones((), dtype=self.dtype, device=self.device))

    def own_data(self, seed: int = 0):
        """200 draws of the program (its latents drawn once from their priors); 50 more to test."""
        import pgm.data

        x = self.simulate(250, seed=seed)
        return pgm.data.own(self.name, x[:200], x[200:])


@register("chain", train=dict(engine="svi", data=None, epochs=500, batch_size=None, lr=0.02))
class Chain(_Gaussian3):
    """a -> b -> c: c is observed per datum; a and b are latent, shared by the data."""

    def model(self, c=None):
        a = pyro.sample("a", self._normal(torch.zeros((), dtype=self.dtype, device=self.device)))
        b = pyro.sample("b", self._normal(a))
        with pyro.plate("data", c.shape[0] if c is not None else 1):
            return pyro.sample("c", self._normal(b), obs=c)


@register("fork", train=dict(engine="svi", data=None, epochs=500, batch_size=None, lr=0.02))
class Fork(_Gaussian3):
    """b <- a -> c: a common cause; b and c observed per datum."""

    def model(self, c=None):
        a = pyro.sample("a", self._normal(torch.zeros((), dtype=self.dtype, device=self.device)))
        with pyro.plate("data", c.shape[0] if c is not None else 1):
            pyro.sample("b", self._normal(a))
            return pyro.sample("c", self._normal(a), obs=c)


@register("collider", train=dict(engine="svi", data=None, epochs=500, batch_size=None, lr=0.02))
class Collider(_Gaussian3):
    """a -> c <- b: a common effect; c observed."""

    def model(self, c=None):
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        a = pyro.sample("a", self._normal(zero))
        b = pyro.sample("b", self._normal(zero))
        with pyro.plate("data", c.shape[0] if c is not None else 1):
            return pyro.sample("c", self._normal(a + b), obs=c)


@register("burglary", train=dict(settings=dict(learnable=True), engine="mle", data=None, epochs=300, batch_size=None,
                                 lr=0.05))
class Burglary(Model):
    """Pearl's alarm network; `calls` is `(N, 2)`: whether John and Mary called.

    Probabilities are Russell & Norvig's (AIMA, figure 14.2): P(burglary)=0.001,
    P(earthquake)=0.002, P(alarm | b, e) = 0.95, 0.94, 0.29, 0.001, P(john | alarm) = 0.90 / 0.05,
    P(mary | alarm) = 0.70 / 0.01. The latent sites are binary, so `log_prob` is exact by
    enumeration. With `learnable=True` the probabilities are parameters (logits, starting at
    AIMA's values) that maximum likelihood fits to observed calls.

    >>> m = Burglary()
    >>> round(float(m.log_prob(torch.tensor([[1., 1.]])).exp()), 6)  # P(john, mary), AIMA: 0.002084
    0.002084
    """

    def __init__(self, learnable: bool = False) -> None:
        super().__init__()
        if not isinstance(learnable, bool):
            raise TypeError(f"learnable: expected True or False, got {learnable!r}")
        tables = {
            "alarm": [[0.001, 0.29], [0.94, 0.95]],  # [burglary, earthquake]
            "john": [0.05, 0.90],
            "mary": [0.01, 0.70],
            "burglary": 0.001,
            "earthquake": 0.002,
        }
        for name, table in tables.items():
            logit = torch.logit(torch.tensor(table, dtype=torch.float64)).to(torch.get_default_dtype())
            if learnable:
                setattr(self, f"logit_{name}", torch.nn.Parameter(logit))
            else:
                self.register_buffer(f"logit_{name}", logit)

    p_alarm = property(lambda self: torch.sigmoid(self.logit_alarm))
    p_john = property(lambda self: torch.sigmoid(self.logit_john))
    p_mary = property(lambda self: torch.sigmoid(self.logit_mary))
    p_burglary = property(lambda self: torch.sigmoid(self.logit_burglary))
    p_earthquake = property(lambda self: torch.sigmoid(self.logit_earthquake))

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, 2, dtype=self.dtype, device=self.device),)

    def own_data(self, seed: int = 0):
        """5,000 mornings of calls drawn from the network (4,000 to train, 1,000 to test)."""
        import pgm.data

        x = self.simulate(5000, seed=seed)
        return pgm.data.own("burglary", x[:4000], x[4000:])

    def model(self, calls=None):
        n = calls.shape[0] if calls is not None else 1
        with pyro.plate("data", n):
            b = pyro.sample("burglary", dist.Bernoulli(self.p_burglary))
            e = pyro.sample("earthquake", dist.Bernoulli(self.p_earthquake))
            a = pyro.sample("alarm", dist.Bernoulli(self.p_alarm[b.long(), e.long()]))
            pyro.sample("john_calls", dist.Bernoulli(self.p_john[a.long()]), obs=None if calls is None else calls[..., 0])
            pyro.sample("mary_calls", dist.Bernoulli(self.p_mary[a.long()]), obs=None if calls is None else calls[..., 1])


@register("eight_schools", train=dict(engine="nuts", engine_settings=dict(num_samples=400, warmup_steps=300), data=None, epochs=1,
                     batch_size=None))
class EightSchools(Model):
    """Hierarchical normal model: mu ~ N(0, 5), tau ~ HalfCauchy(5), theta_j ~ N(mu, tau),
    y_j ~ N(theta_j, sigma_j) for J schools with known standard errors `sigma` (default: the
    eight schools of Rubin 1981)."""

    def __init__(self, sigma=(15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)) -> None:
        super().__init__()
        try:
            values = torch.as_tensor(sigma, dtype=torch.get_default_dtype())
        except (TypeError, ValueError, RuntimeError) as error:
            raise checks.ArgumentTypeError(f"sigma: expected a sequence of positive standard errors, got {sigma!r}") from error
        if values.dim() != 1 or values.numel() == 0 or not bool(torch.isfinite(values).all() and (values > 0).all()):
            raise ValueError(f"sigma: expected a non-empty sequence of positive finite standard errors, got {sigma!r}")
        self.register_buffer("sigma", values)

    def example_inputs(self, batch_size: int | None = None) -> tuple:
        return (torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=self.dtype, device=self.device),)

    def own_data(self, seed: int = 0):
        """The eight schools' estimated effects (Rubin 1981): one vector, trained and tested on whole."""
        import pgm.data

        return pgm.data.own("eight_schools", self.example_inputs()[0])

    def model(self, y=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=self.dtype, device=self.device), 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(torch.full((), 5.0, dtype=self.dtype, device=self.device)))
        with pyro.plate("schools", self.sigma.shape[0]):
            theta = pyro.sample("theta", dist.Normal(mu, tau))
            return pyro.sample("y", dist.Normal(theta, self.sigma), obs=y)


@register("matrix_factorization", num_users=5, num_items=4, rank=2,
          train=dict(settings=dict(num_users=40, num_items=30), engine="svi", data=None, epochs=2000, batch_size=None,
                     lr=0.02))
class MatrixFactorization(Model):
    """Probabilistic matrix factorisation: user factors u_i in plate "users", item factors
    v_j in plate "items", ratings r_ij ~ N(u_i . v_j, noise) in both plates — two plates that
    overlap without nesting. `ratings` is `(num_users, num_items)`."""

    def __init__(self, num_users: int, num_items: int, rank: int = 2, noise: float = 1.0) -> None:
        super().__init__()
        self.num_users, self.num_items = checks.positive_int("num_users", num_users), checks.positive_int("num_items", num_items)
        self.rank, self.noise = checks.positive_int("rank", rank), checks.finite_float("noise", noise, positive=True)

    def example_inputs(self, batch_size: int | None = None) -> tuple:
        return (torch.zeros(self.num_users, self.num_items, dtype=self.dtype, device=self.device),)

    def own_data(self, seed: int = 0):
        """One ratings matrix drawn from the program (factors from their priors)."""
        import pgm.data

        return pgm.data.own("matrix_factorization", self.simulate(self.num_users, seed=seed))

    def model(self, ratings=None):
        zero = torch.zeros(self.rank, dtype=self.dtype, device=self.device)
        users = pyro.plate("users", self.num_users, dim=-2)
        items = pyro.plate("items", self.num_items, dim=-1)
        with users:
            u = pyro.sample("u", dist.Normal(zero, 1.0).to_event(1))
        with items:
            v = pyro.sample("v", dist.Normal(zero, 1.0).to_event(1))
        with users, items:
            return pyro.sample("r", dist.Normal((u * v).sum(-1), self.noise), obs=ratings)
