"""The SDLM curvature estimate against brute-force Gauss-Newton diagonals."""

from __future__ import annotations

import torch
from torch import nn

from convrepro import nn as cnn
from convrepro.models.activations import ScaledTanh
from convrepro.models.lecun1989 import ZipCodeNet
from convrepro.training.sdlm import SDLM, gauss_newton_diagonal


def brute_force_gn_diagonal(model, x, curvature):
    """sum_n sum_k H_kk (dy_k / dtheta)^2: the exact Gauss-Newton diagonal, one output at a time."""
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for n in range(len(x)):
        out = model(x[n : n + 1])
        h = curvature(out)[0]
        for k in range(out.shape[1]):
            grads = torch.autograd.grad(out[0, k], params, retain_graph=True)
            for t, g in zip(total, grads, strict=True):
                t += h[k] * g**2
    return dict(zip(params, total, strict=True))


class TinyChain(nn.Module):
    """Every unit has a single path to the output: the diagonal approximation is exact.

    A framed (pad -1) convolution whose kernel covers its whole padded input (one output
    unit per map), a shared-weight free chain of one unit per layer, one output.
    """

    def __init__(self):
        super().__init__()
        self.conv = cnn.Conv2d(1, 1, 5, padding=1, pad_value=-1.0)
        self.fc = nn.Linear(1, 1)
        self.act1, self.act2 = ScaledTanh(), nn.Tanh()

    def stages(self):
        return [(self.conv, self.act1), (nn.Sequential(nn.Flatten(), self.fc), self.act2)]

    def forward(self, x):
        return self.act2(self.fc(self.act1(self.conv(x)).flatten(1)))


def mse_curvature(y):
    return torch.full_like(y, 2.0 / y.shape[1])


def test_exact_where_each_unit_has_one_path():
    torch.manual_seed(0)
    net = TinyChain().double()
    x = torch.randn(6, 1, 3, 3, dtype=torch.float64)
    ours = gauss_newton_diagonal(net, x, mse_curvature)
    exact = brute_force_gn_diagonal(net, x, mse_curvature)
    for p in net.parameters():
        torch.testing.assert_close(ours[p], exact[p], rtol=1e-10, atol=1e-14)


def test_zipcode_top_layers_exact_lower_layers_positive_and_correlated():
    torch.manual_seed(1)
    net = ZipCodeNet().double().eval()
    x = torch.rand(5, 1, 16, 16, dtype=torch.float64) * 2 - 1
    ours = gauss_newton_diagonal(net, x, mse_curvature)
    exact = brute_force_gn_diagonal(net, x, mse_curvature)
    for layer in (net.output, net.h3):  # no two paths share a unit below these weights
        for p in layer.parameters():
            torch.testing.assert_close(ours[p], exact[p], rtol=1e-10, atol=1e-14)
    for p in (net.h1.conv.weight, net.h2.conv.weight, net.h1.bias, net.h2.bias):
        assert torch.all(ours[p] >= 0)
    # The table's removed connections get no curvature (they are not free parameters).
    removed = ~net.h2.conv.connection_table
    assert torch.all(ours[net.h2.conv.weight][removed] == 0)
    # Dropping cross terms changes the values, not what is large and what is small.
    h2 = net.h2.conv.weight
    keep = net.h2.conv.connection_table[:, :, None, None].expand_as(h2)
    r = torch.corrcoef(torch.stack([ours[h2][keep], exact[h2][keep]]))[0, 1]
    assert r > 0.5


def test_cross_entropy_curvature_is_softmax_variance():
    from convrepro.training.losses import ClassificationLoss

    y = torch.tensor([[2.0, 0.0, -1.0]])
    p = torch.softmax(y, 1)
    torch.testing.assert_close(ClassificationLoss("cross_entropy", num_classes=3).output_curvature(y), p * (1 - p))


def test_sdlm_step_is_eps_over_mu_plus_h():
    w = nn.Parameter(torch.tensor([1.0, 1.0, 1.0]))
    opt = SDLM([w], lr=0.1, mu=0.5)
    opt.set_curvature({w: torch.tensor([0.0, 0.5, 1.5])})
    w.grad = torch.tensor([1.0, 1.0, 2.0])
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([1 - 0.1 / 0.5, 1 - 0.1 / 1.0, 1 - 0.2 / 2.0]))
