"""models.nets: shapes, dtype and device following, the conv grid arithmetic, and the vector
quantiser's nearest-code lookup against brute force."""

import pytest
import torch

from models.nets import (
    MLP,
    ConvDecoder,
    ConvGaussianEncoder,
    ConvGridDecoder,
    ConvGridEncoder,
    GaussianEncoder,
    GridDecoder,
    GridEncoder,
    MLPDecoder,
    VectorQuantizer,
    conv_grid_shape,
    positive,
)


def test_encoders_give_loc_and_positive_scale_for_any_leading_shape():
    for enc, x in (
        (GaussianEncoder((1, 8, 8), 3, (16,)), torch.randn(2, 5, 1, 8, 8)),
        (GaussianEncoder(64, 3, (16,), scale="exp"), torch.randn(2, 5, 64)),
        (ConvGaussianEncoder((1, 8, 8), 3, (4, 8)), torch.randn(2, 5, 1, 8, 8)),
    ):
        loc, scale = enc(x)
        assert loc.shape == scale.shape == (2, 5, 3)
        assert (scale > 0).all()


def test_decoders_shapes():
    z = torch.randn(4, 6, 3)
    assert MLPDecoder(3, (1, 8, 8), (16,), num_params=2)(z).shape == (4, 6, 2, 1, 8, 8)
    assert ConvDecoder(3, (1, 28, 28), (8, 4), num_params=3)(z).shape == (4, 6, 3, 1, 28, 28)
    assert GridEncoder(64, 4, 3, (16,))(torch.randn(5, 64)).shape == (5, 4, 3)
    assert GridDecoder(4, 3, 64, (16,), num_params=2)(torch.randn(5, 4, 3)).shape == (5, 2, 64)
    assert ConvGridEncoder((3, 16, 8), 5, (4, 8))(torch.randn(2, 3, 16, 8)).shape == (2, 4, 2, 5)
    assert ConvGridDecoder(5, (3, 16, 8), (8, 4), num_params=2)(torch.randn(2, 4, 2, 5)).shape == (2, 2, 3, 16, 8)


def test_conv_grid_shape_and_bad_shapes():
    assert conv_grid_shape((1, 28, 28), 2) == (7, 7)
    assert conv_grid_shape((3, 32, 16), 3) == (4, 2)
    with pytest.raises(ValueError, match="divisible by 4"):
        conv_grid_shape((1, 6, 8), 2)
    with pytest.raises(ValueError, match=r"image shape \(C, H, W\)"):
        ConvGaussianEncoder(64, 2)
    with pytest.raises(ValueError, match="GaussianEncoder"):
        GaussianEncoder(64, 2, (8,))(torch.zeros(3, 63))
    with pytest.raises(ValueError, match="kind"):
        positive(torch.zeros(2), "relu")


def test_networks_follow_dtype():
    enc = GaussianEncoder(6, 2, (8,)).double()
    loc, scale = enc(torch.randn(3, 6, dtype=torch.float64))
    assert loc.dtype == scale.dtype == torch.float64
    vq = VectorQuantizer(5, 2).double()
    codes, z_q = vq(torch.randn(4, 3, 2, dtype=torch.float64))
    assert codes.dtype == torch.int64 and z_q.dtype == torch.float64


def test_positive():
    raw = torch.tensor([-50.0, 0.0, 3.0])
    torch.testing.assert_close(positive(raw, "softplus", 0.0), torch.nn.functional.softplus(raw))
    torch.testing.assert_close(positive(raw, "exp", 1e-4), raw.clamp(-20, 20).exp() + 1e-4)
    assert (positive(raw) > 0).all()


def test_vector_quantizer_nearest_matches_brute_force():
    torch.manual_seed(0)
    vq = VectorQuantizer(7, 3)
    z_e = torch.randn(5, 4, 3)
    brute = ((z_e.unsqueeze(-2) - vq.codebook) ** 2).sum(-1)  # (5, 4, 7)
    torch.testing.assert_close(vq.distances(z_e), brute.detach(), rtol=1e-5, atol=1e-5)
    codes, z_q = vq(z_e)
    assert torch.equal(codes, brute.argmin(-1))
    torch.testing.assert_close(z_q, vq.codebook[codes])
    z_q.sum().backward()  # the lookup is differentiable in the codebook
    counts = torch.bincount(codes.flatten(), minlength=7).float()
    torch.testing.assert_close(vq.codebook.grad, counts.unsqueeze(1).expand(7, 3))
    with pytest.raises(ValueError, match="num_codes"):
        VectorQuantizer(0, 2)


def test_mlp_heads():
    net = MLP(4, (8, 8), (2, 3))
    a, b = net(torch.zeros(5, 4))
    assert a.shape == (5, 2) and b.shape == (5, 3)
    assert MLP(4, (), 6)(torch.zeros(1, 4)).shape == (1, 6)
