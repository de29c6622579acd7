"""Which engine, by which name, trains a model: the decisions `pgm train` and Python users share.

Engines have command-line names (`ENGINE_PRESETS`: a registered engine plus preset options, so
``pcd`` is contrastive divergence with persistent chains); `default_engine` picks the first that
applies to a model; `build_engine` builds one by name with settings.

>>> import models
>>> default_engine(models.get("vae"))
'svi'
>>> sorted(n for n in ENGINE_PRESETS if ENGINE_PRESETS[n][0] == "cd")
['cd', 'pcd']
"""

from __future__ import annotations

from typing import Any

from inference.engine import EngineError

__all__ = ["ENGINE_PRESETS", "ENGINE_PREFERENCE", "engine_names_for", "default_engine", "build_engine",
           "add_engine_preset"]

#: Engine names on the command line: (registered engine, preset options).
ENGINE_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "svi": ("svi", {}),
    "iwae": ("svi", {"elbo": "iwae", "num_particles": 5}),
    "rws": ("rws", {}),
    "mcmc": ("mcmc", {"kernel": "nuts"}),
    "nuts": ("mcmc", {"kernel": "nuts"}),
    "hmc": ("mcmc", {"kernel": "hmc"}),
    "mle": ("mle", {}),
    "objective": ("objective", {}),
    "cd": ("cd", {"k": 1}),
    "pcd": ("cd", {"k": 1, "persistent": True}),
    "sm": ("sm", {"method": "exact"}),
    "sliced-sm": ("sm", {"method": "sliced"}),
    "dsm": ("sm", {"method": "denoising", "sigma": 0.1}),
    "nce": ("nce", {}),
    "fce": ("fce", {}),
}

#: The engine used when none is named: the first that applies to the model (a model that
#: states its own training objective, like the VQ-VAE, is trained by it).
ENGINE_PREFERENCE: list[str] = ["objective", "svi", "mle", "pcd", "sliced-sm", "mcmc"]


def add_engine_preset(name: str, engine: str, *, prefer_before: str | None = None, **options: Any) -> None:
    """Give the registered engine `engine` the command-line name `name` with preset `options`;
    with `prefer_before`, it is also tried as a default engine just before that name."""
    if name in ENGINE_PRESETS and ENGINE_PRESETS[name] != (engine, options):
        raise ValueError(f"engine name {name!r} is already a preset of {ENGINE_PRESETS[name][0]!r}")
    ENGINE_PRESETS[name] = (engine, dict(options))
    if prefer_before is not None and name not in ENGINE_PREFERENCE:
        index = ENGINE_PREFERENCE.index(prefer_before) if prefer_before in ENGINE_PREFERENCE else len(ENGINE_PREFERENCE)
        ENGINE_PREFERENCE.insert(index, name)


def engine_names_for(model) -> dict[str, str | None]:
    """Every command-line engine name mapped to None if it applies to `model`, else the reason."""
    import inference

    engines = inference.load_engines()
    out: dict[str, str | None] = {}
    for name, (registered, _) in ENGINE_PRESETS.items():
        cls = engines.get(registered)
        out[name] = "not available in this installation" if cls is None else cls.supports(model)
    return out


def default_engine(model) -> str:
    """The command-line name of the engine `pgm train` uses for `model` when none is named."""
    reasons = engine_names_for(model)
    for name in ENGINE_PREFERENCE:
        if reasons.get(name, "") is None:
            return name
    working = [n for n, r in reasons.items() if r is None]
    if working:
        return working[0]
    raise EngineError(f"no engine applies to {type(model).__name__}: "
                      + "; ".join(f"{n}: {r}" for n, r in reasons.items()))


def build_engine(name: str | None, model, settings: dict[str, Any] | None = None):
    """`(name, engine)`: the engine called `name` on the command line (`default_engine` when None)
    built for `model` with its preset options updated by `settings`.

    Raises `ValueError` naming `--engine` for an unknown name, and `EngineError` (naming the
    engines that would work) when it does not apply."""
    import inference

    engines = inference.load_engines()
    if name is None:
        name = default_engine(model)
    if name not in ENGINE_PRESETS:
        raise ValueError(f"--engine: unknown engine {name!r}; expected one of {', '.join(ENGINE_PRESETS)}")
    registered, preset = ENGINE_PRESETS[name]
    if registered not in engines:
        raise ValueError(f"--engine: {name!r} is not available in this installation")
    reason = engines[registered].supports(model)
    if reason is not None:
        working = [n for n, r in engine_names_for(model).items() if r is None]
        raise EngineError(f"--engine {name}: it cannot train {type(model).__name__}: {reason}. "
                          f"Engines that would work: {', '.join(working) if working else 'none'}")
    return name, engines[registered](model, **{**preset, **(settings or {})})


def default_eval_method(model) -> tuple[str, str]:
    """`(method, why)`: how `pgm eval` scores a model's test log-likelihood by default: exact
    where the density is known (a latent-free or enumerable program, a closed form), AIS for
    energy models whose log Z is unknown, the closed-form variational bound of a diffusion model
    (``"elbo"``, `DDPM.elbo`), else the IWAE bound through the model's guide.

    >>> import models
    >>> default_eval_method(models.get("vae"))[0], default_eval_method(models.RBM(v_dim=64, h_dim=128))[0]
    ('iwae', 'ais')
    """
    capabilities = model.capabilities()
    if callable(getattr(model, "elbo", None)) and callable(getattr(model, "vlb_term", None)):
        import inference.diffusion  # noqa: F401  (registers the "elbo" method)

        return "elbo", "a diffusion model: its variational bound, the KL terms in closed form (a bound, not exact)"
    if "log_prob" in capabilities:
        return "exact", "the model's log density is exact"
    if "energy" in capabilities and "normalized" not in capabilities:
        from inference.partition import MAX_BITS, _is_rbm

        if callable(getattr(model, "log_partition", None)):
            return "exact", "its log Z has a closed form"
        if _is_rbm(model) and min(model.h_dim, model.v_dim) <= min(MAX_BITS, 16):
            return "exact", "its log Z sums exactly over the smaller layer's states"
        return "ais", "its energy's log Z is unknown: annealed importance sampling estimates it"
    if "latents" in capabilities:
        return "iwae", "it has latents: the importance-weighted bound through its guide"
    raise ValueError(f"{type(model).__name__}: no evaluation method applies (no log density, energy or latents)")


def trains_greedily(model, engine: str | None) -> bool:
    """Whether `pgm train` trains `model` greedily, layer by layer (a deep belief net's
    `pretrain`), rather than through one engine: when it can and no other engine is named."""
    return callable(getattr(model, "pretrain", None)) and engine in (None, "cd", "pcd")
