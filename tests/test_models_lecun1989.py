"""ZipCodeNet exactly as LeCun et al. 1989 describe it."""

from __future__ import annotations

import pytest
import torch

from convrepro.models.lecun1989 import BLOCK_TABLE, ZipCodeNet, connection_table


def test_the_papers_size_figures():
    net = ZipCodeNet()
    assert net.free_parameters() == 9760
    assert net.units() == 1256
    assert net.connections() == 64660


def test_layer_shapes_and_per_unit_biases():
    net = ZipCodeNet()
    x = torch.randn(3, 1, 16, 16)
    h1 = net.h1(x)
    h2 = net.h2(net.act1(h1))
    assert h1.shape == (3, 12, 8, 8) and net.h1.bias.shape == (12, 8, 8)
    assert h2.shape == (3, 12, 4, 4) and net.h2.bias.shape == (12, 4, 4)
    assert net(x).shape == (3, 10)


def test_default_table_is_the_block_scheme_with_8_of_12_maps():
    table = ZipCodeNet().h2.conv.connection_table
    assert table.sum(dim=1).tolist() == [8] * 12
    assert table[0].nonzero().flatten().tolist() == list(range(8))
    assert table[4].nonzero().flatten().tolist() == list(range(4, 12))
    assert table[8].nonzero().flatten().tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert torch.equal(table, connection_table(BLOCK_TABLE))


def test_input_is_framed_with_background_minus_one():
    # A blank (all -1) digit must give the same H1 response at every interior and border
    # position: the frame is background, not black (0).
    net = ZipCodeNet()
    with torch.no_grad():
        z = net.h1.conv(torch.full((1, 1, 16, 16), -1.0))
    assert torch.allclose(z, z[:, :, :1, :1].expand_as(z), atol=1e-6)


@pytest.mark.parametrize("fan", ["F", "sqrt_F"])
def test_init_range_is_2_4_over_fan_in(fan):
    net = ZipCodeNet(init_fan=fan)
    for layer, f in ((net.h1, 25), (net.h2, 200), (net.h3, 192), (net.output, 30)):
        bound = 2.4 / (f if fan == "F" else f**0.5)
        for p in layer.parameters():
            assert p.abs().max() <= bound + 1e-7
            assert p.abs().max() > 0.5 * bound  # really spread over the range


def test_stride_equals_decimation_pooling_outputs_and_gradients():
    torch.manual_seed(0)
    stride = ZipCodeNet(subsampling="stride").double()
    decim = ZipCodeNet(subsampling="decimation").double()
    decim.load_state_dict(stride.state_dict())
    x = torch.rand(4, 1, 16, 16, dtype=torch.float64) * 2 - 1
    out_s, out_d = stride(x), decim(x)
    torch.testing.assert_close(out_s, out_d, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out_s)
    grads_s = torch.autograd.grad(out_s, list(stride.parameters()), g)
    grads_d = torch.autograd.grad(out_d, list(decim.parameters()), g)
    for a, b in zip(grads_s, grads_d, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        ZipCodeNet(nonlinearity="relu2")
    with pytest.raises(ValueError, match="subsampling must be one of"):
        ZipCodeNet(subsampling="pool")
    with pytest.raises(ValueError, match="names input map 12"):
        ZipCodeNet(h2_table=[[12]] * 12)
