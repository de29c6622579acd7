"""`Posterior`: samples of latent sites from any engine, in one layout so that engines compare.

Every site's samples are a tensor `(chains, draws, *site_shape)`; engines that draw one stream
of samples (SVI's guide, importance sampling) use one chain. Summaries and diagnostics (r-hat,
effective sample size) go through ArviZ.

>>> import torch
>>> post = Posterior({"mu": torch.arange(8.0).reshape(2, 4)})
>>> post.num_chains, post.num_draws, post.flat("mu").shape
(2, 4, torch.Size([8]))
>>> float(post.mean("mu"))
3.5
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterator, Mapping

import numpy as np
import torch

__all__ = ["Posterior", "Summary"]


class Posterior:
    """Samples of latent sites, each `(chains, draws, *site_shape)`, and optional diagnostics.

    Args:
        samples: site name -> tensor with a leading chain and draw dimension.
        diagnostics: free-form engine diagnostics (e.g. MCMC's acceptance rate, divergences).
    """

    def __init__(self, samples: Mapping[str, torch.Tensor], diagnostics: Mapping[str, Any] | None = None) -> None:
        if not isinstance(samples, Mapping):
            raise TypeError(f"samples: expected a dict of site name -> tensor, got {type(samples).__name__}")
        out: dict[str, torch.Tensor] = {}
        shape = None
        for name, value in samples.items():
            value = torch.as_tensor(value)
            if value.dim() < 2:
                raise ValueError(
                    f"samples[{name!r}]: expected shape (chains, draws, *site_shape), got {tuple(value.shape)}; "
                    "use Posterior.from_draws for samples without a chain dimension"
                )
            if shape is not None and value.shape[:2] != shape:
                raise ValueError(
                    f"samples[{name!r}]: (chains, draws) = {tuple(value.shape[:2])} differs from "
                    f"{tuple(shape)} of the other sites"
                )
            shape = value.shape[:2]
            out[name] = value.detach()
        self.samples: dict[str, torch.Tensor] = out
        self.diagnostics: dict[str, Any] = dict(diagnostics or {})

    @classmethod
    def from_draws(cls, draws: Mapping[str, torch.Tensor], diagnostics: Mapping[str, Any] | None = None) -> "Posterior":
        """A one-chain posterior from samples `(draws, *site_shape)`."""
        return cls({name: torch.as_tensor(v).unsqueeze(0) for name, v in draws.items()}, diagnostics)

    # ------------------------------------------------------------------ access
    @property
    def names(self) -> list[str]:
        return list(self.samples)

    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0] if self.samples else 0

    @property
    def num_draws(self) -> int:
        return next(iter(self.samples.values())).shape[1] if self.samples else 0

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.samples

    def __iter__(self) -> Iterator[str]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def _get(self, name: str) -> torch.Tensor:
        if name not in self.samples:
            raise KeyError(f"no samples of site {name!r}; sites: {', '.join(self.samples) or 'none'}")
        return self.samples[name]

    def flat(self, name: str) -> torch.Tensor:
        """Samples of `name` with chains and draws merged: `(chains * draws, *site_shape)`."""
        value = self._get(name)
        return value.reshape((-1,) + tuple(value.shape[2:]))

    def mean(self, name: str) -> torch.Tensor:
        """Posterior mean of `name` over chains and draws (shape of the site)."""
        return _float(self.flat(name)).mean(0)

    def std(self, name: str) -> torch.Tensor:
        """Posterior standard deviation of `name` over chains and draws (unbiased)."""
        value = _float(self.flat(name))
        if value.shape[0] < 2:
            return torch.full(value.shape[1:], math.nan, dtype=value.dtype, device=value.device)
        return value.std(0)

    def quantile(self, name: str, q: float | torch.Tensor) -> torch.Tensor:
        """Quantile(s) `q` of `name` over chains and draws."""
        value = _float(self.flat(name))
        return torch.quantile(value, torch.as_tensor(q, dtype=value.dtype, device=value.device), dim=0)

    def to(self, device=None) -> "Posterior":
        return Posterior({k: v.to(device) for k, v in self.samples.items()}, self.diagnostics)

    # ------------------------------------------------------------------ summaries
    def to_arviz(self):
        """An `arviz.InferenceData` with a `posterior` group: one variable per site, dims
        `(chain, draw, <site>_dim_0, ...)`."""
        import arviz as az

        posterior = {name: v.cpu().numpy() for name, v in self.samples.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                return az.from_dict(posterior=posterior)
            except TypeError:  # arviz >= 1.0: groups are passed as one mapping
                return az.from_dict({"posterior": posterior})

    def summary(self, prob: float = 0.9) -> "Summary":
        """Mean, sd, the central `prob` interval, r-hat and bulk ESS (from ArviZ) of every scalar
        element of every site. Returns a `Summary`: a dict `row -> {column: value}` that prints
        as a table."""
        if not 0.0 < prob < 1.0:
            raise ValueError(f"prob: expected a probability in (0, 1), got {prob!r}")
        lo, hi = (1.0 - prob) / 2.0, (1.0 + prob) / 2.0
        columns = ("mean", "sd", f"{100 * lo:g}%", f"{100 * hi:g}%", "r_hat", "ess_bulk")
        rows: dict[str, dict[str, float]] = {}
        for name, value in self.samples.items():
            x = _float(value).cpu().numpy()
            chains, draws = x.shape[:2]
            x = x.reshape(chains, draws, -1)
            site_shape = tuple(value.shape[2:])
            for j in range(x.shape[-1]):
                label = name if not site_shape else f"{name}[{', '.join(map(str, np.unravel_index(j, site_shape)))}]"
                col = x[..., j]
                flat = col.reshape(-1)
                rows[label] = {
                    "mean": float(flat.mean()),
                    "sd": float(flat.std(ddof=1)) if flat.size > 1 else math.nan,
                    columns[2]: float(np.quantile(flat, lo)),
                    columns[3]: float(np.quantile(flat, hi)),
                    "r_hat": _diagnostic("rhat", col),
                    "ess_bulk": _diagnostic("ess", col),
                }
        return Summary(rows, columns)

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}: {tuple(v.shape[2:])}" for k, v in self.samples.items())
        return f"Posterior(chains={self.num_chains}, draws={self.num_draws}, sites={{{sites}}})"


class Summary(dict):
    """A posterior summary: `row -> {column: value}`, printed as a table."""

    def __init__(self, rows: dict[str, dict[str, float]], columns: tuple[str, ...]) -> None:
        super().__init__(rows)
        self.columns = columns

    def __str__(self) -> str:
        width = max([len(r) for r in self] + [4])
        head = " " * width + "".join(f"{c:>11}" for c in self.columns)
        lines = [head]
        for row, values in self.items():
            cells = "".join(f"{_fmt(values[c]):>11}" for c in self.columns)
            lines.append(f"{row:<{width}}{cells}")
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle) -> None:  # IPython
        p.text(str(self))


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.3f}"


def _float(value: torch.Tensor) -> torch.Tensor:
    return value if value.is_floating_point() else value.to(torch.get_default_dtype())


def _diagnostic(kind: str, col: np.ndarray) -> float:
    """ArviZ's rank-normalised split r-hat or bulk ESS of one scalar's `(chain, draw)` samples;
    NaN where it is undefined (fewer than 4 draws, constant samples)."""
    if col.shape[1] < 4 or np.all(col == col.flat[0]):
        return math.nan
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = az.rhat(col) if kind == "rhat" else az.ess(col, method="bulk")
        except Exception:  # noqa: BLE001 - diagnostics must not break a summary
            return math.nan
    return float(np.asarray(value).reshape(-1)[0])
