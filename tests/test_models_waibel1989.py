"""TimeDelayNet and the fixed-position baseline as Waibel et al. 1989 describe them."""

from __future__ import annotations

import pytest
import torch

from convrepro.models.waibel1989 import FixedPositionNet, TimeDelayNet


def test_parameter_counts_and_shapes():
    net = TimeDelayNet(output_bias=False)
    assert net.time_delay_parameters() == 392 + 123
    assert sum(p.numel() for p in net.parameters()) == 515
    assert sum(p.numel() for p in TimeDelayNet().parameters()) == 515 + 3  # the output biases
    h1, h2 = net.hidden(torch.randn(4, 16, 15))
    assert h1.shape == (4, 8, 13) and h2.shape == (4, 3, 9)
    assert net(torch.randn(4, 16, 15)).shape == (4, 3)
    assert sum(p.numel() for p in FixedPositionNet().parameters()) == 491


@pytest.mark.parametrize("integration", ["sum", "mean", "sum_sq", "max"])
def test_output_integrates_each_hidden2_row_over_time(integration):
    net = TimeDelayNet(integration=integration, output="none", output_bias=False)
    x = torch.randn(2, 16, 15)
    _, h2 = net.hidden(x)
    expected = {"sum": h2.sum(-1), "mean": h2.mean(-1), "sum_sq": (h2**2).sum(-1), "max": h2.amax(-1)}[integration]
    torch.testing.assert_close(net(x), expected)


def test_tdnn_response_shifts_with_its_input():
    # Shift invariance by construction: hidden layers of a shifted input are the shifted
    # hidden layers (away from the edges).
    net = TimeDelayNet()
    x = torch.randn(1, 16, 20)
    big = TimeDelayNet(frames=20)
    big.load_state_dict(net.state_dict())
    _, a = big.hidden(x)
    _, b = big.hidden(torch.roll(x, 2, dims=-1))
    torch.testing.assert_close(b[..., 4:], a[..., 2:-2])


def test_averaged_shared_gradients_divide_by_the_number_of_copies():
    torch.manual_seed(0)
    summed = TimeDelayNet()
    averaged = TimeDelayNet(average_shared_gradients=True)
    averaged.load_state_dict(summed.state_dict())
    x = torch.randn(3, 16, 15)
    summed(x).sum().backward()
    averaged(x).sum().backward()
    torch.testing.assert_close(averaged.hidden1.weight.grad, summed.hidden1.weight.grad / 13)
    torch.testing.assert_close(averaged.hidden2.weight.grad, summed.hidden2.weight.grad / 9)
    torch.testing.assert_close(averaged.output_bias.grad, summed.output_bias.grad)
