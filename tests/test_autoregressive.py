"""Autoregressive models (FVSBN, NADE, MADE, PixelCNN): the autoregressive property by Jacobian,
normalisation by exact enumeration, exactness of sampling and completion, unit-level graphs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import models
import pgm
from models import FVSBN, MADE, NADE, PixelCNN
from models.autoregressive import MaskEnsemble, named_mask
from models.masked_nets import MADENet, MaskedConv2d


def _randomize(m, scale=1.0, seed=0):
    """Non-trivial parameters: every weight and bias redrawn N(0, scale^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def _all_binary(shape, dtype=torch.float64):
    D = math.prod(shape)
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)), dtype=dtype)
    return states.reshape(-1, *shape)


def _params(m, x):
    """The conditionals' parameters as one tensor (..., D): every parameter of unit u in column u."""
    d = m.conditionals(x)
    if hasattr(d, "mixture_distribution"):
        parts = [d.mixture_distribution.logits, d.component_distribution.loc, d.component_distribution.scale]
        return torch.cat([p.movedim(-1, 0).reshape(-1, x.shape[0], x[0].numel()) for p in parts])
    if isinstance(d, torch.distributions.Categorical):
        return d.logits.movedim(-1, 0).reshape(-1, x.shape[0], x[0].numel())
    return d.logits.reshape(1, x.shape[0], -1)


def _jacobian(m, x):
    """J[p, u, v] = d param_p(unit u) / d x_v at one point x (1, *event)."""
    f = lambda z: _params(m, z)[:, 0]
    J = torch.autograd.functional.jacobian(f, x)                      # (P, D, 1, *event)
    return J.reshape(J.shape[0], J.shape[1], -1)


def _rank(m):
    """Position of each flat unit in the generation order (units of one step share it)."""
    steps = m.steps()
    rank = torch.empty(steps.numel(), dtype=torch.long)
    for k, step in enumerate(steps.tolist()):
        rank[step] = k
    return rank


# ---------------------------------------------------------------------- the autoregressive property
def _cases():
    perm = [4, 0, 6, 2, 7, 1, 5, 3]
    return [
        ("fvsbn", lambda: FVSBN(x_dim=8)),
        ("fvsbn-perm", lambda: FVSBN(x_dim=8, order=perm)),
        ("nade", lambda: NADE(x_dim=8, h_dim=6)),
        ("nade-perm", lambda: NADE(x_dim=8, h_dim=6, order=perm)),
        ("made", lambda: MADE(x_dim=8, hidden_dims=(32, 32))),
        ("made-perm-direct", lambda: MADE(x_dim=8, hidden_dims=(32, 32, 32), order=perm, direct=True)),
        ("made-mog", lambda: MADE(x_dim=8, hidden_dims=(32,), likelihood="gaussian_mixture", num_components=3)),
        ("pixelcnn-plain", lambda: PixelCNN(x_shape=(1, 4, 4), gated=False, hidden=8, num_layers=2, first_kernel=3)),
        ("pixelcnn-gated", lambda: PixelCNN(x_shape=(2, 4, 4), hidden=8, num_layers=2, first_kernel=3)),
        ("pixelcnn-levels", lambda: PixelCNN(x_dim=16, levels=4, hidden=8, num_layers=1, first_kernel=5)),
    ]


@pytest.mark.parametrize("name,build", _cases(), ids=[c[0] for c in _cases()])
def test_autoregressive_property_by_jacobian(name, build):
    torch.manual_seed(0)
    m = _randomize(build().double(), 0.5)
    masks = range(3) if isinstance(m, MADE) else [None]
    if isinstance(m, MADE):
        m.num_masks, m.order_agnostic = 3, True   # and several orderings drawn as in agnostic training
    for k in masks:
        if k is not None:
            m.use_mask(k)
        rank = _rank(m)
        x = torch.rand(1, *m.event_shape, dtype=torch.float64)
        if getattr(m, "levels", 2) > 2:
            x = torch.randint(0, m.levels, x.shape).double()
        J = _jacobian(m, x).abs() > 0
        later = rank[None, :] >= rank[:, None]                     # [u, v]: v at or after u
        assert not (J & later[None]).any(), f"{name}: a unit's parameters depend on itself or a later unit"
        assert J.any(0).sum() >= 0.5 * (~later).sum(), f"{name}: too few dependencies found ({J.any(0).sum()})"


def test_made_jacobian_is_exactly_its_mask_connectivity():
    torch.manual_seed(1)
    m = _randomize(MADE(x_dim=6, hidden_dims=(40, 40), num_masks=4, order_agnostic=True).double(), 0.5)
    m.use_mask(2)
    x = torch.rand(1, 6, dtype=torch.float64)
    J = _jacobian(m, x).abs().sum(0) > 0
    assert torch.equal(J, m.net.connectivity())
    # the connectivity respects the ordering of mask 2, which is not the identity
    assert not torch.equal(m.order.cpu(), torch.arange(6))


# ---------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("build", [
    lambda: FVSBN(x_dim=10, order=list(range(9, -1, -1))),
    lambda: NADE(x_dim=10, h_dim=7),
    lambda: MADE(x_dim=10, hidden_dims=(24, 24)),
    lambda: MADE(x_dim=10, hidden_dims=(24,), num_masks=5, order_agnostic=True),     # ensemble of 5 masks
], ids=["fvsbn", "nade", "made", "made-ensemble"])
def test_normalised_over_1024_states(build):
    m = _randomize(build().double(), 1.0)
    states = _all_binary((10,))
    total = m.log_prob(states).detach().exp().sum()
    assert abs(float(total) - 1.0) < 1e-6
    if isinstance(m, MADE) and m.ensemble > 1:
        assert isinstance(m.distribution(2), MaskEnsemble)
        # log of the mean probability, not a mean of logs
        members = torch.stack([m.member(k, 1024).log_prob(states) for k in range(m.ensemble)])
        assert torch.allclose(m.log_prob(states), members.exp().mean(0).log())
        assert not torch.allclose(m.log_prob(states), members.mean(0))


@pytest.mark.parametrize("gated", [False, True])
def test_pixelcnn_normalised_on_3x3_binary_images(gated):
    m = _randomize(PixelCNN(x_shape=(1, 3, 3), gated=gated, hidden=6, num_layers=2, first_kernel=3).double(), 0.7)
    total = m.log_prob(_all_binary((1, 3, 3))).exp().sum()
    assert abs(float(total) - 1.0) < 1e-6


def test_pixelcnn_categorical_levels_normalised():
    m = _randomize(PixelCNN(x_shape=(1, 2, 2), levels=3, hidden=4, num_layers=1, first_kernel=3).double(), 0.7)
    states = torch.tensor(list(itertools.product(range(3), repeat=4)), dtype=torch.float64).reshape(-1, 1, 2, 2)
    assert abs(float(m.log_prob(states).exp().sum()) - 1.0) < 1e-6


def test_gaussian_mixture_made_density_integrates_to_one():
    m = _randomize(MADE(x_dim=2, hidden_dims=(16,), likelihood="gaussian_mixture", num_components=3).double(), 0.3)
    grid = torch.linspace(-12, 12, 601, dtype=torch.float64)
    xy = torch.cartesian_prod(grid, grid)
    h = float(grid[1] - grid[0])
    total = m.log_prob(xy).exp().sum() * h * h
    assert abs(float(total) - 1.0) < 1e-3


# ---------------------------------------------------------------------- exact sampling
def _tv(samples, model, shape):
    states = _all_binary(shape)
    p = model.log_prob(states).exp()
    codes = (samples.reshape(samples.shape[0], -1) * (2 ** torch.arange(states[0].numel() - 1, -1, -1))).sum(-1).long()
    emp = torch.bincount(codes, minlength=states.shape[0]).double() / samples.shape[0]
    return 0.5 * float((emp - p).abs().sum())


#: With 20,000 draws over 32 states the expected total variation is about 0.015; 0.035 is the bound.
TV_BOUND = 0.035


@pytest.mark.parametrize("build,shape", [
    (lambda: FVSBN(x_dim=5, order=[2, 0, 4, 1, 3]), (5,)),
    (lambda: NADE(x_dim=5, h_dim=4), (5,)),
    (lambda: MADE(x_dim=5, hidden_dims=(16,), num_masks=3, order_agnostic=True), (5,)),
    (lambda: PixelCNN(x_shape=(1, 2, 2), hidden=6, num_layers=1, first_kernel=3), (1, 2, 2)),
], ids=["fvsbn", "nade", "made-ensemble", "pixelcnn"])
def test_sampling_is_exact(build, shape):
    torch.manual_seed(0)
    m = _randomize(build().double(), 1.0, seed=3)
    x = m.sample(20_000)
    assert x.shape == (20_000, *shape)
    assert _tv(x, m, shape) < TV_BOUND


def test_nade_incremental_sampler_equals_naive_for_the_same_noise():
    m = _randomize(NADE(x_dim=20, h_dim=8, order=torch.randperm(20, generator=torch.Generator().manual_seed(0))).double())
    noise = torch.rand(200, 20, dtype=torch.float64)
    a, b = m.sample(200, noise=noise), m.sample(200, noise=noise, method="naive")
    assert torch.equal(a, b)
    assert 0.1 < float(a.mean()) < 0.9


@pytest.mark.parametrize("block", [1, 3, 4, 11, None])
def test_nade_blocked_logits_and_gradients_equal_plain_autograd(block):
    """The blocked NADE pass with its hand-written backward (what training uses) gives the
    logits and parameter gradients of plain autograd over the cumulative sum, for any block size
    (11 units, blocks that do and do not divide it); float64 gradcheck as well."""
    from models.nade import nade_logits
    torch.manual_seed(0)
    m = _randomize(NADE(x_dim=11, h_dim=7, order=torch.randperm(11)).double(), 1.0)
    x = torch.bernoulli(torch.full((5, 11), 0.5, dtype=torch.float64))
    g = torch.randn(5, 11, dtype=torch.float64)
    params = [m.W, m.c, m.V, m.b]
    xp = x[:, m.order]
    fast = nade_logits(xp, *params, block=block)[:, m.rank]
    grads_fast = torch.autograd.grad((fast * g).sum(), params)
    ref = m.logits_reference(x)
    grads_ref = torch.autograd.grad((ref * g).sum(), params)
    assert torch.allclose(fast, ref, atol=1e-12)
    for a, b in zip(grads_fast, grads_ref):
        assert torch.allclose(a, b, atol=1e-10)
    assert torch.allclose(m.logits(x), ref, atol=1e-12)                      # the model's own path
    assert torch.autograd.gradcheck(lambda W, c, V, b: nade_logits(xp, W, c, V, b, block=block), params)


# ---------------------------------------------------------------------- completion
def _exact_conditional(log_prob_fn, x_obs, observed, D):
    """p(missing | observed) over the 2^m completions, by enumeration of the joint."""
    missing = (~observed).nonzero().flatten()
    fills = _all_binary((len(missing),))
    full = x_obs.expand(fills.shape[0], D).clone()
    full[:, missing] = fills
    lp = log_prob_fn(full)
    return full, (lp - lp.logsumexp(0)).exp()


def _completion_tv(completed, full, p):
    match = (completed[:, None, :] == full[None]).all(-1)            # (n, states)
    assert bool(match.any(-1).all()), "a completion changed an observed unit"
    emp = match.double().mean(0)
    return 0.5 * float((emp - p).abs().sum())


def test_completion_of_a_prefix_is_the_exact_conditional():
    torch.manual_seed(0)
    m = _randomize(NADE(x_dim=6, h_dim=5, order=[3, 1, 5, 0, 2, 4]).double(), 1.0)
    observed = torch.zeros(6, dtype=torch.bool)
    observed[[3, 1]] = True                                         # the first two in the order
    x = torch.tensor([[0, 1, 0, 1, 0, 0]], dtype=torch.float64)
    completed = m.complete(x.expand(20_000, 6), observed)
    assert torch.equal(completed[:, observed], x.expand(20_000, 6)[:, observed])
    full, p = _exact_conditional(m.log_prob, x[0], observed, 6)
    assert _completion_tv(completed, full, p) < TV_BOUND


def test_fixed_order_completion_refuses_a_mask_that_is_not_a_prefix():
    m = FVSBN(x_dim=4)
    with pytest.raises(ValueError, match="prefix"):
        m.complete(torch.zeros(2, 4), torch.tensor([False, True, False, False]))
    with pytest.raises(TypeError, match="mask"):
        m.complete(torch.zeros(2, 4), torch.tensor([1, 0, 0, 0]))


def test_order_agnostic_made_completes_any_mask_exactly():
    torch.manual_seed(0)
    m = _randomize(MADE(x_dim=5, hidden_dims=(24,), num_masks=3, order_agnostic=True).double(), 1.0, seed=5)
    observed = torch.tensor([False, True, False, True, False])     # not a prefix of any fixed order
    x = torch.tensor([[0, 1, 0, 0, 0]], dtype=torch.float64)
    completed = m.complete(x.expand(20_000, 5), observed)
    d = m.completion_distribution(observed, 4)
    full, p = _exact_conditional(d.log_prob, x[0], observed, 5)
    assert _completion_tv(completed, full, p) < TV_BOUND
    # the masks used for completion put the observed units first
    for member in d.members:
        member.conditional(x)
        assert set(m.order[:2].tolist()) == {1, 3}


def test_pixelcnn_completes_the_top_half():
    torch.manual_seed(0)
    m = PixelCNN(x_shape=(1, 4, 4), hidden=4, num_layers=1, first_kernel=3)
    x = torch.bernoulli(torch.full((8, 1, 4, 4), 0.5))
    out = m.complete(x, "top")
    top = named_mask("top", (1, 4, 4))
    assert torch.equal(out[:, top], x[:, top])
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="prefix"):
        m.complete(x, "bottom")


# ---------------------------------------------------------------------- unit graphs
def test_unit_graph_of_fvsbn_and_nade_is_the_complete_dag_of_their_order():
    torch.manual_seed(0)
    order = [2, 0, 3, 1]
    expected = {(f"x[{order[i]}]", f"x[{order[j]}]") for i in range(4) for j in range(i + 1, 4)}
    for m in (FVSBN(x_dim=4, order=order), NADE(x_dim=4, h_dim=3, order=order)):
        g = pgm.graph_of(m, level="unit")
        assert set(g.directed_edges) == expected, type(m).__name__


def test_unit_graph_of_made_is_its_mask_connectivity():
    torch.manual_seed(0)
    m = MADE(x_dim=5, hidden_dims=(3,), seed=2)                     # narrow: some dependencies cut
    allowed = {(f"x[{j}]", f"x[{i}]") for i, j in m.net.connectivity().nonzero().tolist()}
    assert set(pgm.graph_of(m, level="unit").directed_edges) == allowed
    assert len(allowed) < 10


def test_pixelcnn_unit_graph_shows_the_blind_spot_and_the_gated_one_has_none():
    torch.manual_seed(0)
    def name(p):
        return f"x[0,{p // 5},{p % 5}]"
    full = {(name(a), name(b)) for b in range(25) for a in range(b)}
    sizes = dict(x_shape=(1, 5, 5), hidden=8, num_layers=2, first_kernel=5)
    plain = pgm.graph_of(PixelCNN(gated=False, **sizes), level="unit")
    gated = pgm.graph_of(PixelCNN(gated=True, **sizes), level="unit")
    assert set(gated.directed_edges) == full
    assert set(plain.directed_edges) <= full
    missing = full - set(plain.directed_edges)
    # the blind spot: pixel (1, 1) never sees (0, 4), up and to the right of its receptive field,
    # although a 5x5 first layer and two 3x3 layers reach that far
    assert (name(4), name(6)) in missing
    cols = [(int(a[-2]), int(b[-2])) for a, b in missing]
    assert all(ca > cb for ca, cb in cols)                         # every missing edge comes from the right


# ---------------------------------------------------------------------- networks, registry, errors
def test_made_net_context_and_several_parameters_per_unit():
    net = MADENet(4, hidden_dims=(16, 16), params_per_unit=3, order=[1, 3, 0, 2], context_dim=2).double()
    x, c = torch.rand(1, 4, dtype=torch.float64), torch.rand(1, 2, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda z: net(z, c), x).reshape(3, 4, 4).abs().sum(0) > 0
    assert not (J & ~net.connectivity()).any()
    Jc = torch.autograd.functional.jacobian(lambda z: net(x, z), c).reshape(12, 2)
    assert (Jc.abs().sum(-1) > 0).sum() > 6                           # the context reaches the outputs
    with pytest.raises(ValueError, match="context"):
        net(x)


def test_masked_conv_masks():
    a, b = MaskedConv2d(1, 1, 3, "A").mask[0, 0], MaskedConv2d(1, 1, 3, "B").mask[0, 0]
    assert a.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize("name", ["fvsbn", "nade", "made", "pixelcnn"])
def test_registered_with_an_mle_preset_on_binarized_digits(name):
    m = models.get(name)
    preset = models.preset(name)
    assert preset.engine == "mle" and preset.data == "digits" and preset.data_settings.get("binarize")
    assert {"log_prob", "sample", "discrete"} <= m.capabilities()
    x = m.sample(3)
    assert torch.isfinite(m.log_prob(x)).all()
    # unconditional p(x): `pgm.Model.conditional` (a p(x | y) model, fed labels by `pgm train`)
    # must stay False; the per-unit conditionals are `conditionals(x)`
    assert m.conditional is False


def test_pgm_train_feeds_autoregressive_models_their_data_alone(tmp_path):
    """A one-epoch command-line run on the binarized digits (regression: a `conditional` method
    once made the command line pass the labels as a second argument)."""
    from pgm.cli import main

    for name in ("fvsbn", "nade"):
        assert main(["train", name, "--epochs", "1", "--out", str(tmp_path / name), "--quiet", "--num-samples", "4"]) == 0
    # `pgm sample RUN --complete IMAGE_FILE --mask top`: the observed top half is kept
    given = torch.bernoulli(torch.full((3, 64), 0.5))
    torch.save(given, tmp_path / "given.pt")
    out = tmp_path / "completed.pt"
    assert main(["sample", str(tmp_path / "nade"), "--complete", str(tmp_path / "given.pt"), "--mask", "top",
                 "-o", str(out)]) == 0
    filled = torch.load(out)
    top = named_mask("top", (64,))
    assert filled.shape[1:] == (64,) and len(filled) > 3 and torch.equal(filled[:3], given)
    assert torch.equal(filled[3:6][:, top], given[:, top]) and set(filled.unique().tolist()) <= {0.0, 1.0}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="x_dim"):
        FVSBN(x_dim=0)
    with pytest.raises(ValueError, match="order"):
        NADE(x_dim=3, order=[0, 0, 1])
    with pytest.raises(ValueError, match="ensemble"):
        MADE(x_dim=3, num_masks=2, ensemble=3)
    with pytest.raises(ValueError, match="likelihood"):
        MADE(x_dim=3, likelihood="poisson")
    with pytest.raises(ValueError, match="x_dim"):
        PixelCNN(x_dim=10)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 3\)"):
        FVSBN(x_dim=3).log_prob(torch.zeros(2, 4))


def test_mle_trains_made_on_one_mask_per_step():
    import inference

    torch.manual_seed(0)
    m = MADE(x_dim=6, hidden_dims=(16,), num_masks=4, order_agnostic=True)
    seen = []
    original = m.member
    m.member = lambda k, *a, **kw: (seen.append(k), original(k, *a, **kw))[1]
    engine = inference.MaximumLikelihood(m, lr=1e-2)
    seen.clear()
    data = torch.bernoulli(torch.full((32, 6), 0.3))
    for _ in range(12):
        engine.step(data)
    assert len(seen) == 12 and len(set(seen)) > 1                     # one mask per step, several masks


def test_mixture_made_is_registered_for_the_2d_toys():
    m = models.get("made_mog")
    assert isinstance(m, MADE) and m.likelihood == "gaussian_mixture"
    assert models.preset("made_mog").data == "moons" and models.preset("made_mog").engine == "mle"
    assert {"log_prob", "sample", "continuous"} <= m.capabilities()
    x = m.sample(5)
    assert torch.allclose(m.energy(x), -m.log_prob(x))
