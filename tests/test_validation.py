"""Bad input is refused early, with a message naming the argument or the site (issue 9, section 3).

- every zoo model's constructor, and every network of models/nets.py, refuses bad sizes, widths,
  scales and switches with a TypeError (wrong type) or ValueError (out of range) whose message
  names the argument;
- every engine that takes an optimiser refuses an unknown name when it is built;
- `pgm.Model.validate_data` (what `inference.fit` runs before the first step) refuses data that
  used to pass and then fail deep inside torch: integer data for a continuous likelihood, data
  on the boundary of a Beta likelihood, a plain program's observed site of the wrong width, a
  guide that fails on the data.
"""

from __future__ import annotations

import inspect
import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import inference
import models
import pgm
from models import nets
from models.checks import ArgumentTypeError

NAN, INF = float("nan"), float("inf")

# ------------------------------------------------------------------------------------------------
# constructors of the zoo
# ------------------------------------------------------------------------------------------------
_SIZE = [(0, ValueError), (-5, ValueError), (True, TypeError), (2.5, TypeError), ("4", TypeError)]
_DIMS = [(64, TypeError), ("64", TypeError), ((0,), ValueError), ((-5,), ValueError), ((True,), TypeError),
         ((2.5,), TypeError)]
_SCALE = [(0.0, ValueError), (-1.0, ValueError), (NAN, ValueError), (INF, ValueError), ("1", TypeError),
          (True, TypeError)]
_NONNEGATIVE = [(-1.0, ValueError), (NAN, ValueError), (INF, ValueError), ("0.1", TypeError), (True, TypeError)]
_SWITCH = [("yes", TypeError), (None, TypeError)]

#: Constructor argument -> bad values and the error each must raise.
BAD_ARGUMENTS = {
    **{name: _SIZE for name in ("x_dim", "z_dim", "v_dim", "h_dim", "num_codes", "code_dim", "num_latents",
                                "num_users", "num_items", "rank", "num_features", "num_components", "dim")},
    "num_classes": [(1, ValueError), (True, TypeError), (2.5, TypeError)],
    "learnable": [("yes", TypeError), (1, TypeError)],
    **{name: _DIMS for name in ("hidden_dims", "channels", "flow_hidden_dims")},
    **{name: _SCALE for name in ("prior_scale", "noise_scale", "scale", "concentration", "noise", "base_scale")},
    **{name: _NONNEGATIVE for name in ("init_scale", "commitment")},
    "prior_loc": [(NAN, ValueError), ("0", TypeError)],
    **{name: _SWITCH for name in ("learn_sigma", "learn_scale", "conv", "visible_lateral", "hidden_lateral")},
    "flow": [(-1, ValueError), (True, TypeError), (1.5, TypeError)],
    "sigma": [([1.0, -1.0], ValueError), ([1.0, NAN], ValueError), ([], ValueError), ("a", TypeError)],
}


def _bad_values(parameter: inspect.Parameter) -> list:
    """The bad values for a constructor argument; a width argument whose default is one int (a
    number of channels rather than one per layer) gets the bad values of a size."""
    bad = BAD_ARGUMENTS.get(parameter.name, [])
    default = parameter.default
    if bad is _DIMS and isinstance(default, int) and not isinstance(default, bool):
        return _SIZE
    return bad


def _zoo_cases():
    cases = []
    for name in models.available():
        cls, defaults, _ = models.entry(name)
        for arg, parameter in inspect.signature(cls).parameters.items():
            for value, error in _bad_values(parameter):
                cases.append(pytest.param(name, arg, value, error, id=f"{name}-{arg}={value!r}"))
    return cases


ZOO_CASES = _zoo_cases()


def _names(pattern_arg: str, message: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(pattern_arg)}(?!\w)", message) is not None


@pytest.mark.parametrize("name, arg, value, error", ZOO_CASES)
def test_zoo_constructors_refuse_bad_arguments_by_name(name, arg, value, error):
    cls, defaults, _ = models.entry(name)
    with pytest.raises(error) as caught:
        cls(**{**defaults, arg: value})
    assert _names(arg, str(caught.value)), f"the message does not name {arg!r}: {caught.value}"
    if error is TypeError:  # a wrong type is also a ValueError, so `except ValueError` catches every bad argument
        assert isinstance(caught.value, ValueError)


def test_every_sized_zoo_model_is_covered():
    covered = {case.values[0] for case in ZOO_CASES}
    for name in models.available():
        cls, _, _ = models.entry(name)
        if inspect.signature(cls).parameters:
            assert name in covered, f"{name}: none of its constructor arguments is checked here; add them to BAD_ARGUMENTS"


def test_good_arguments_in_other_forms_are_accepted():
    assert models.VAE(x_dim=6, z_dim=2, hidden_dims=[8]).x_shape == (6,)
    assert models.VAE(x_shape=torch.Size([1, 8, 8]), z_dim=2, conv=True, channels=[4, 8]).x_shape == (1, 8, 8)
    import numpy as np

    assert models.RBM(np.int64(4), 3, init_scale=np.float32(0.1)).v_dim == 4
    assert models.DBN(4, (3,), init_scale=0.0).hidden_dims == (3,)
    assert nets.MLP(3, (), 2)(torch.zeros(1, 3)).shape == (1, 2)  # no hidden layer: a linear map


# ------------------------------------------------------------------------------------------------
# networks
# ------------------------------------------------------------------------------------------------
NET_CASES = [
    (lambda: nets.MLP(4, 64, 2), TypeError, "hidden_dims"),
    (lambda: nets.MLP(4, "64", 2), TypeError, "hidden_dims"),
    (lambda: nets.MLP(4, (0,), 2), ValueError, "hidden_dims"),
    (lambda: nets.MLP(4, (-5,), 2), ValueError, "hidden_dims"),
    (lambda: nets.MLP(0, (8,), 2), ValueError, "in_dim"),
    (lambda: nets.MLP(4, (8,), 0), ValueError, "out_dim"),
    (lambda: nets.MLP(4, (8,), (2, 0)), ValueError, "out_dim"),
    (lambda: nets.MLP(4, (8,), 2, activation=3), TypeError, "activation"),
    (lambda: nets.GaussianEncoder((1, 8, 8), 0), ValueError, "z_dim"),
    (lambda: nets.GaussianEncoder(4, 2, min_scale=NAN), ValueError, "min_scale"),
    (lambda: nets.GaussianEncoder(4, 2, scale="relu"), ValueError, "scale"),
    (lambda: nets.GaussianEncoder((4, 0), 2), ValueError, "in_shape"),
    (lambda: nets.ConvGaussianEncoder((1, 8, 8), 2, channels=()), ValueError, "channels"),
    (lambda: nets.ConvGaussianEncoder((1, 8, 8), 2, channels=32), TypeError, "channels"),
    (lambda: nets.MLPDecoder(2, 4, num_params=0), ValueError, "num_params"),
    (lambda: nets.MLPDecoder(2, "4"), TypeError, "out_shape"),
    (lambda: nets.ConvDecoder(True, (1, 8, 8)), TypeError, "z_dim"),
    (lambda: nets.GridEncoder(4, 0, 2), ValueError, "num_latents"),
    (lambda: nets.GridDecoder(2, 2, 4, (-5,)), ValueError, "hidden_dims"),
    (lambda: nets.ConvGridEncoder((1, 8, 8), 2.5), TypeError, "code_dim"),
    (lambda: nets.ConvGridDecoder(2, (1, 8, 8), num_params=-1), ValueError, "num_params"),
    (lambda: nets.VectorQuantizer(4, True), TypeError, "code_dim"),
    (lambda: nets.VectorQuantizer(0, 2), ValueError, "num_codes"),
]


@pytest.mark.parametrize("build, error, arg", NET_CASES, ids=[f"{i}-{c[2]}" for i, c in enumerate(NET_CASES)])
def test_networks_refuse_bad_arguments_by_name(build, error, arg):
    with pytest.raises(error) as caught:
        build()
    assert _names(arg, str(caught.value)), f"the message does not name {arg!r}: {caught.value}"


# ------------------------------------------------------------------------------------------------
# engines: an unknown optimiser is refused when the engine is built
# ------------------------------------------------------------------------------------------------
def _vae():
    return models.VAE(x_dim=4, z_dim=2, hidden_dims=(8,))


ENGINE_FACTORIES = {
    "SVI": lambda **kw: inference.SVI(models.NormalNormal(), **kw),
    "WakeSleep": lambda **kw: inference.WakeSleep(_vae(), **kw),
    "MaximumLikelihood": lambda **kw: inference.MaximumLikelihood(models.GaussianEBM(2), **kw),
    "ContrastiveDivergence": lambda **kw: inference.ContrastiveDivergence(models.RBM(4, 3), **kw),
    "ScoreMatching": lambda **kw: inference.ScoreMatching(models.GaussianEBM(2), **kw),
    "NCE": lambda **kw: inference.NCE(models.GaussianEBM(2), **kw),
    "FlowContrastive": lambda **kw: inference.FlowContrastive(models.GaussianEBM(2), num_layers=1, hidden_dims=(8,), **kw),
    "Diffusion": lambda **kw: inference.Diffusion(models.DDPM(x_dim=2, num_steps=3, hidden_dim=8, num_layers=1), **kw),
    "ReverseKL": lambda **kw: inference.ReverseKL(models.RealNVP(2, num_layers=1, hidden_dims=(8,)),
                                                  target=lambda x: -(x ** 2).sum(-1) / 2, **kw),
    "Objective": lambda **kw: inference.Objective(
        models.VQVAE(x_dim=4, num_codes=4, code_dim=2, num_latents=2, hidden_dims=(8,)), **kw),
}


@pytest.mark.parametrize("engine", sorted(ENGINE_FACTORIES))
def test_unknown_optimiser_is_refused_at_construction(engine):
    with pytest.raises(ValueError) as caught:
        ENGINE_FACTORIES[engine](optim="adamm")
    message = str(caught.value)
    assert message.startswith("optim:") and "'adamm'" in message
    assert all(name in message for name in ("adam", "adamw", "sgd", "rmsprop", "adagrad")), message
    with pytest.raises(TypeError, match="optim"):
        ENGINE_FACTORIES[engine](optim=3)
    assert ENGINE_FACTORIES[engine](optim="SGD").num_steps == 0  # known names in any case


@pytest.mark.parametrize("engine", ["SVI", "WakeSleep", "MaximumLikelihood"])
@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan"), "fast"])
def test_bad_learning_rates_are_refused_at_construction(engine, lr):
    with pytest.raises(ValueError, match=r"^lr: expected a positive finite learning rate"):
        ENGINE_FACTORIES[engine](lr=lr)


def test_every_engine_with_an_optimiser_is_covered():
    inference.load_engines()
    with_optim = {cls.__name__ for cls in inference.ENGINES.values() if "optim" in inspect.signature(cls).parameters}
    assert with_optim <= set(ENGINE_FACTORIES), f"add a factory for {sorted(with_optim - set(ENGINE_FACTORIES))}"


# ------------------------------------------------------------------------------------------------
# data validation: what used to pass and then fail inside torch
# ------------------------------------------------------------------------------------------------
class LearnableNormal(pgm.Model):
    """x ~ Normal(loc, 1) over 3 dims, with a learnable loc."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(3))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.loc, 1.0).to_event(1), obs=x)

    def example_inputs(self, batch_size=2):
        return (torch.zeros(batch_size, 3),)


def normal_program(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(torch.zeros(3), 1.0).to_event(1), obs=x)


def test_integer_data_for_a_continuous_likelihood_is_named_not_cast():
    ints = torch.randint(0, 3, (10, 3))
    # the design choice: refused with the site and both dtypes, never cast behind the user's back
    for model in (LearnableNormal(), pgm.Model.from_program(normal_program, example_args=(torch.zeros(2, 3),))):
        with pytest.raises(ValueError, match=r"observed site 'x' .*continuous Normal likelihood.*torch\.int64.*"
                                             r"floating-point.*float32.*x\.to\(torch\.float32\)"):
            model.validate_data(ints)
        model.validate_data(ints.float())
    vae = models.VAE(x_dim=4, z_dim=2, hidden_dims=(8,), likelihood="gaussian")
    with pytest.raises(ValueError, match=r"observed site 'x' of VAE has a continuous Normal likelihood.*int64"):
        vae.validate_data(torch.randint(0, 3, (10, 4)))
    # a discrete likelihood whose density torch cannot take on integers: still named, with the dtypes
    with pytest.raises(ValueError, match=r"observed site 'x' of VAE: its Bernoulli likelihood cannot score .*int64.*"
                                         r"float32"):
        _vae().validate_data(torch.randint(0, 2, (10, 4)))
    # and in a program whose own arithmetic refuses them
    with pytest.raises(ValueError, match=r"dtypes \['int64'\] do not fit RBM .*site 'h'.*x\.to\(torch\.float32\)"):
        models.RBM(4, 3).validate_data(torch.randint(0, 2, (10, 4)))


def test_integer_data_are_refused_before_the_first_step_of_fit():
    vae = models.VAE(x_dim=4, z_dim=2, hidden_dims=(8,), likelihood="gaussian")
    engine = inference.SVI(vae)
    before = [p.detach().clone() for p in vae.parameters()]
    with pytest.raises(ValueError, match="observed site 'x'"):
        inference.fit(engine, torch.randint(0, 3, (16, 4)), epochs=1, batch_size=8, progress=False, device="cpu")
    assert engine.num_steps == 0
    assert all(torch.equal(a, p) for a, p in zip(before, vae.parameters()))


def test_data_on_the_boundary_of_a_beta_likelihood_are_named():
    vae = models.VAE(x_dim=4, z_dim=2, hidden_dims=(8,), likelihood="beta")
    x = torch.full((6, 4), 0.5)
    x[1, 2], x[4, 0] = 0.0, 1.0
    with pytest.raises(ValueError, match=r"observed site 'x' of VAE: its Beta likelihood gives 2 of 24 values a "
                                         r"non-finite log-density \(e\.g\. values \[0\.0, 1\.0\]"):
        vae.validate_data(x)
    vae.validate_data(x.clamp(1e-3, 1 - 1e-3))  # inside the open interval: accepted


def test_a_plain_program_with_the_wrong_width_names_site_shape_and_event_shape():
    program = pgm.Model.from_program(normal_program, example_args=(torch.zeros(2, 3),))
    with pytest.raises(ValueError, match=r"do not fit the program 'normal_program' at observed site 'x': the data "
                                         r"there have shape \(10, 5\) \(\(5,\) per datum\).*event shape \(3,\).*"
                                         r"data of shape \(10, 3\)"):
        program.validate_data(torch.zeros(10, 5))
    program.validate_data(torch.zeros(10, 3))


class GuidedNormal(LearnableNormal):
    """x ~ Normal(z, 1), z ~ Normal(0, 1) over 3 dims, with a guide q(z | x) from a linear map of
    `guide_width` inputs (wrong when it differs from the data's width)."""

    def __init__(self, guide_width=3, fail=False):
        super().__init__()
        self.encoder = nn.Linear(guide_width, 3)
        self.fail = fail

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z + self.loc, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.encoder(x), 1.0).to_event(1))
            if self.fail:
                raise RuntimeError("the guide broke")


def test_a_guide_that_fails_on_the_data_is_named():
    data = torch.randn(8, 3)
    GuidedNormal().validate_data(data)
    with pytest.raises(ValueError, match=r"do not fit the guide of GuidedNormal before its first sample site: "
                                         r"RuntimeError: mat1 and mat2 shapes cannot be multiplied"):
        GuidedNormal(guide_width=5).validate_data(data)
    with pytest.raises(ValueError, match=r"the guide of GuidedNormal after site 'z'.*the guide broke"):
        GuidedNormal(fail=True).validate_data(data)


def test_a_guide_given_to_svi_is_checked_too():
    model = GuidedNormal()
    data = torch.randn(8, 3)

    def narrow_guide(x):  # two latent dims where the model has three
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))

    engine = inference.SVI(model, guide=narrow_guide)
    with pytest.raises(ValueError, match=r"GuidedNormal run on its guide's values"):
        inference.fit(engine, data, epochs=1, batch_size=8, progress=False, device="cpu")
    assert engine.num_steps == 0
    inference.SVI(model).validate(data)  # its own guide fits


def test_a_guide_value_of_the_wrong_shape_is_named():
    class WideGuide(GuidedNormal):
        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))  # two latent dims
                pyro.sample("x", dist.Normal(self.loc + z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    with pytest.raises(ValueError, match=r"guide: the value of site 'z'.*\(8, 3\).*event shape \(2,\)"):
        WideGuide().validate_data(torch.randn(8, 3))


def test_validation_leaves_the_model_as_it_was():
    # the mixture's guide initialises itself from the first data it sees: validation must not
    model = models.GaussianMixture(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.validate_data(torch.randn(40, 2) * 3)
    assert not bool(model.guide_initialized)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_implicit_likelihoods_are_not_scored():
    gan = models.GAN(x_dim=4, z_dim=2, hidden_dims=(8,))
    gan.validate_data(torch.randn(8, 4))  # a Delta at G(z) has no density at the data: not an error


def test_argument_type_error_is_both_kinds():
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)
