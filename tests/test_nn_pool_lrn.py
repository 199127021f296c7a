"""Pooling and LRN against PyTorch's own, plus the routing properties the lecture states."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convrepro import nn as cnn
from convrepro.nn import functional as cf

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return dict(
        kernel=(kh, kw), stride=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        size=(draw(st.integers(kh, 12)), draw(st.integers(kw, 12))),
        batch=draw(st.sampled_from([1, 3])), channels=draw(st.integers(1, 4)),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        channels_last=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
    )


def _input(case):
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["batch"], case["channels"], *case["size"], generator=g, dtype=case["dtype"])
    if case["channels_last"]:  # our convolution hands channels-last tensors to the pools
        x = x.to(memory_format=torch.channels_last)
    return x.requires_grad_(True), g


@settings(max_examples=120, deadline=None)
@given(pool_cases(), st.sampled_from(["max", "avg"]))
def test_pool2d_matches_pytorch(case, kind):
    x, g = _input(case)
    ours_fn, ref_fn = {"max": (cf.max_pool2d, F.max_pool2d), "avg": (cf.avg_pool2d, F.avg_pool2d)}[kind]
    ours = ours_fn(x, case["kernel"], case["stride"])
    assert type(ours.grad_fn).__name__ in ("MaxPooling2dBackward", "AveragePooling2dBackward")
    ref = ref_fn(x, case["kernel"], case["stride"])
    torch.testing.assert_close(ours, ref, **TOL[case["dtype"]])
    grad = torch.randn(ref.shape, generator=g, dtype=case["dtype"])
    torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0],
                               torch.autograd.grad(ref, x, grad)[0], **TOL[case["dtype"]])


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 5), s=st.integers(1, 4), t=st.integers(5, 20),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_pool1d_matches_pytorch(k, s, t, dtype):
    x = torch.randn(2, 3, t, dtype=dtype, requires_grad=True)
    for ours_fn, ref_fn in ((cf.max_pool1d, F.max_pool1d), (cf.avg_pool1d, F.avg_pool1d)):
        ours, ref = ours_fn(x, k, s), ref_fn(x, k, s)
        torch.testing.assert_close(ours, ref, **TOL[dtype])
        grad = torch.randn_like(ref)
        torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0],
                                   torch.autograd.grad(ref, x, grad)[0], **TOL[dtype])


@settings(max_examples=80, deadline=None)
@given(pool_cases())
def test_max_pool_with_many_ties_routes_like_pytorch(case):
    """Values drawn from {0, 1, 2}: most windows hold several maxima, and each gradient must
    still reach PyTorch's winner (the first maximum in row-major order), overlaps summed."""
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randint(0, 3, (case["batch"], case["channels"], *case["size"]), generator=g)
    x = x.to(case["dtype"]).requires_grad_(True)
    if case["channels_last"]:
        x = x.to(memory_format=torch.channels_last)
    _routes_like_pytorch(x, g, case, "MaxPooling2dBackward")


def _routes_like_pytorch(x, g, case, path):
    ours, ref = cf.max_pool2d(x, case["kernel"], case["stride"]), F.max_pool2d(x, case["kernel"], case["stride"])
    assert type(ours.grad_fn).__name__ == path
    assert torch.equal(ours, ref)
    grad = torch.randn(ref.shape, generator=g, dtype=case["dtype"])
    assert torch.equal(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(ref, x, grad)[0])
    with torch.no_grad():  # without a gradient to route, no winner is kept: same values
        assert torch.equal(cf.max_pool2d(x, case["kernel"], case["stride"]), ref)


def test_max_pool_window_with_nan_outputs_nan_like_pytorch():
    x = torch.tensor([[[[1.0, float("nan"), 2.0, 0.0]]]], requires_grad=True)
    out = cf.max_pool2d(x, (1, 2))
    assert out.isnan().tolist() == F.max_pool2d(x, (1, 2)).isnan().tolist() == [[[[True, False]]]]
    out.backward(torch.tensor([[[[1.0, 1.0]]]]))
    assert x.grad.sum() == 2.0  # each window's gradient still goes to exactly one position


def test_max_pool_routes_gradient_only_to_winners():
    x = torch.tensor([[[[1.0, 5.0, 2.0, 0.0],
                        [3.0, 4.0, 9.0, 1.0],
                        [0.0, 0.0, 1.0, 2.0],
                        [7.0, 0.0, 3.0, 8.0]]]], requires_grad=True)
    out = cf.max_pool2d(x, 2)
    assert out.flatten().tolist() == [5.0, 9.0, 7.0, 8.0]
    out.backward(torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]]))
    expected = torch.zeros(4, 4)
    expected[0, 1], expected[1, 2], expected[3, 0], expected[3, 3] = 10.0, 20.0, 30.0, 40.0
    assert torch.equal(x.grad[0, 0], expected)


def test_max_pool_ties_go_to_first_in_row_major_order_and_overlaps_accumulate():
    x = torch.ones(1, 1, 3, 5, requires_grad=True)  # every window is one big tie
    out = cf.max_pool2d(x, 3, 2)  # two windows, overlapping in column 2
    out.backward(torch.tensor([[[[1.0, 2.0]]]]))
    expected = torch.zeros(3, 5)
    expected[0, 0], expected[0, 2] = 1.0, 2.0  # top-left of each window
    assert torch.equal(x.grad[0, 0], expected)
    y = torch.tensor([[[[0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]]], requires_grad=True)
    z = torch.cat([y, torch.zeros(1, 1, 3, 2)], dim=-1)  # one winner shared by two windows
    cf.max_pool2d(z, 3, 2).sum().backward()
    assert y.grad[0, 0, 1, 1] == 1.0  # only the first window contains (1, 1)


def test_average_pool_spreads_evenly():
    x = torch.randn(1, 2, 4, 6, requires_grad=True)
    cf.avg_pool2d(x, 2).backward(torch.ones(1, 2, 2, 3))
    assert torch.equal(x.grad, torch.full_like(x, 0.25))


def test_decimation_keeps_every_factor_th_and_scatters_into_zeros():
    x = torch.arange(2 * 3 * 7 * 5, dtype=torch.float64).view(2, 3, 7, 5).requires_grad_(True)
    out = cf.decimation_pool2d(x, 2)
    assert out.shape == (2, 3, 4, 3)
    assert torch.equal(out, x[:, :, ::2, ::2])
    g = torch.randn_like(out)
    out.backward(g)
    expected = torch.zeros_like(x)
    expected[:, :, ::2, ::2] = g
    assert torch.equal(x.grad, expected)
    assert torch.autograd.gradcheck(lambda t: cf.decimation_pool1d(t, 3),
                                    (torch.randn(2, 3, 10, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("fn", [
    lambda t: cf.max_pool2d(t, 3, 2), lambda t: cf.avg_pool2d(t, 3, 2), lambda t: cf.avg_pool2d(t, 2),
    lambda t: cf.decimation_pool2d(t, (2, 3)), lambda t: cf.max_pool1d(t.flatten(2), 4, 3),
    lambda t: cf.avg_pool1d(t.flatten(2), 4, 3), lambda t: cf.local_response_norm(t * 20, 3, 1e-2),
])
def test_pool_and_lrn_gradcheck_float64(fn):
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 7), channels=st.integers(1, 12), scale=st.sampled_from([1.0, 30.0]),
       alpha=st.sampled_from([1e-4, 1e-2]), beta=st.sampled_from([0.75, 0.5]),
       k=st.sampled_from([2.0, 1.0]), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_lrn_matches_pytorch_with_alpha_times_size(size, channels, scale, alpha, beta, k, dtype):
    x = (torch.randn(2, channels, 5, 4, dtype=dtype) * scale).requires_grad_(True)
    ours = cf.local_response_norm(x, size, alpha, beta, k)
    ref = F.local_response_norm(x, size, alpha=alpha * size, beta=beta, k=k)
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    grad = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0],
                               torch.autograd.grad(ref, x, grad)[0], **TOL[dtype])


def test_lrn_is_the_papers_formula():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64).view(1, 6, 1, 1)
    b = cf.local_response_norm(a, size=5, alpha=1e-4, beta=0.75, k=2.0).flatten()
    # map 0 sees maps 0..2, map 3 sees maps 1..5 (n = 5 centred, clipped at the edges)
    assert b[0].item() == pytest.approx(1.0 / (2.0 + 1e-4 * (1 + 4 + 9)) ** 0.75, rel=1e-14)
    assert b[3].item() == pytest.approx(4.0 / (2.0 + 1e-4 * (4 + 9 + 16 + 25 + 36)) ** 0.75, rel=1e-14)


@pytest.mark.parametrize("mode", cnn.TemporalIntegration.MODES)
def test_temporal_integration(mode):
    x = torch.rand(4, 3, 9, dtype=torch.float64, requires_grad=True)
    expected = {"sum": x.sum(-1), "mean": x.mean(-1), "sum_sq": (x * x).sum(-1),
                "max": x.amax(-1)}[mode]
    out = cnn.TemporalIntegration(mode)(x)
    torch.testing.assert_close(out, expected)
    assert torch.autograd.gradcheck(cnn.TemporalIntegration(mode), (x,))


def test_lecture_written_example():
    r"""The lecture's written example (last slide), derived by hand.

    x[n] = delta[n], w[n] = exp(-n^2/2), g = sigma(max_n (w * x)[n]), y = 1, binary
    cross-entropy L = -log g.

    (w * x)[n] = sum_m w[n - m] delta[m] = w[n], whose maximum is w[0] = 1 at n* = 0, so
    g = sigma(1).  dL/dz at the max is g - y = sigma(1) - 1 (the BCE-sigmoid gradient);
    max pooling routes it to n* = 0 only, so dL/dz[n] = (sigma(1) - 1) delta[n].  The
    weight gradient is the correlation dL/dw[n] = sum_m dL/dz[m] x[m - n]
    = (sigma(1) - 1) x[-n] = (sigma(1) - 1) delta[n]:  about -0.2689 at n = 0, 0 elsewhere.
    """
    half = 4
    n = torch.arange(-half, half + 1, dtype=torch.float64)
    w = torch.exp(-(n**2) / 2).view(1, 1, -1).requires_grad_(True)  # w[k] is w[n = k - half]
    x = (n == 0).to(torch.float64).view(1, 1, -1)  # delta[n] on the same index range
    z = cf.conv1d(x, w, padding=half)  # 'same' length: z[k] is (w * x)[n = k - half]
    g = torch.sigmoid(cnn.TemporalIntegration("max")(z)).squeeze()
    loss = F.binary_cross_entropy(g, torch.tensor(1.0, dtype=torch.float64))
    loss.backward()
    expected = torch.where(n == 0, torch.sigmoid(torch.tensor(1.0, dtype=torch.float64)) - 1, 0.0)
    torch.testing.assert_close(w.grad.flatten(), expected, rtol=0, atol=1e-6)
    assert w.grad.flatten()[half].item() == pytest.approx(-0.2689, abs=1e-4)
