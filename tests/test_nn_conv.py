"""The hand-written convolution against PyTorch's cross-correlation with a flipped kernel."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convrepro import nn as cnn
from convrepro.nn import functional as cf
from convrepro.nn.functional import conv as conv_module

PATHS = ("small", "large")


@contextmanager
def conv_path(path: str):
    """Force one of the two implementations (gather for small layers, GEMM for large ones)."""
    saved = conv_module.SMALL_COLUMNS
    conv_module.SMALL_COLUMNS = 1 << 62 if path == "small" else 0
    try:
        yield
    finally:
        conv_module.SMALL_COLUMNS = saved

# float32 results go through different GEMM blockings than oneDNN's: sums of up to a few
# hundred products agree to a few ulps of their magnitude.
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def reference_conv2d(x, w, bias, stride, padding, pad_value, groups):
    ph, pw = padding
    xp = F.pad(x, (pw, pw, ph, ph), value=pad_value)
    out = F.conv2d(xp, w.flip(-2, -1), None, stride=stride, groups=groups)
    if bias is not None:
        out = out + (bias.view(-1, 1, 1) if bias.dim() == 1 else bias)
    return out


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 3))
    dg = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h = draw(st.integers(max(1, kh - 2 * ph), 13))
    w = draw(st.integers(max(1, kw - 2 * pw), 13))
    return dict(
        batch=draw(st.sampled_from([1, 2, 5])), c=cg * groups, d=dg * groups, groups=groups,
        kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw), size=(h, w),
        pad_value=draw(st.sampled_from([0.0, -1.0, 0.37])),
        bias=draw(st.sampled_from(["map", "unit", None])),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        seed=draw(st.integers(0, 2**16)),
        path=draw(st.sampled_from(PATHS)),
    )


@settings(max_examples=200, deadline=None)
@given(conv_cases())
def test_conv2d_matches_flipped_pytorch_forward_and_backward(case):
    g = torch.Generator().manual_seed(case["seed"])
    dt = case["dtype"]
    (h, w), (kh, kw), (sh, sw), (ph, pw) = case["size"], case["kernel"], case["stride"], case["padding"]
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    x = torch.randn(case["batch"], case["c"], h, w, generator=g, dtype=dt, requires_grad=True)
    wt = torch.randn(case["d"], case["c"] // case["groups"], kh, kw, generator=g, dtype=dt,
                     requires_grad=True)
    bias = None
    if case["bias"] == "map":
        bias = torch.randn(case["d"], generator=g, dtype=dt, requires_grad=True)
    elif case["bias"] == "unit":
        bias = torch.randn(case["d"], ho, wo, generator=g, dtype=dt, requires_grad=True)
    args = (case["stride"], case["padding"], case["pad_value"], case["groups"])

    with conv_path(case["path"]):
        ours = cf.conv2d(x, wt, bias, stride=args[0], padding=args[1], pad_value=args[2], groups=args[3])
    ref = reference_conv2d(x, wt, bias, *args)
    torch.testing.assert_close(ours, ref, **TOL[dt])

    grad = torch.randn(ref.shape, generator=g, dtype=dt)
    leaves = [t for t in (x, wt, bias) if t is not None]
    ours_g = torch.autograd.grad(ours, leaves, grad)
    ref_g = torch.autograd.grad(ref, leaves, grad)
    for a, b in zip(ours_g, ref_g, strict=True):
        torch.testing.assert_close(a, b, **TOL[dt])


@settings(max_examples=100, deadline=None)
@given(
    c=st.integers(1, 4), d=st.integers(1, 4), k=st.integers(1, 5), s=st.integers(1, 4),
    p=st.integers(0, 3), t=st.integers(5, 20), batch=st.sampled_from([1, 3]),
    pad_value=st.sampled_from([0.0, -1.0]), dtype=st.sampled_from([torch.float32, torch.float64]),
    bias=st.sampled_from(["map", "unit", None]), groups=st.sampled_from([1, 2]),
    time_major=st.booleans(), input_grad=st.booleans(),
)
def test_conv1d_matches_flipped_pytorch(c, d, k, s, p, t, batch, pad_value, dtype, bias, groups,
                                        time_major, input_grad):
    """Every 1-D path (the time-delay one, and the 2-D one grouped convolutions take), any
    input layout (a (N, T, C) tensor transposed, as a recurrent or frame-major source gives)."""
    c, d = c * groups, d * groups
    x = torch.randn(batch, t, c, dtype=dtype).transpose(1, 2) if time_major else torch.randn(batch, c, t, dtype=dtype)
    x.requires_grad_(input_grad)
    w = torch.randn(d, c // groups, k, dtype=dtype, requires_grad=True)
    t_out = (t + 2 * p - k) // s + 1
    b = None if bias is None else torch.randn((d,) if bias == "map" else (d, t_out), dtype=dtype, requires_grad=True)
    ours = cf.conv1d(x, w, b, stride=s, padding=p, pad_value=pad_value, groups=groups)
    ref = F.conv1d(F.pad(x, (p, p), value=pad_value), w.flip(-1), b if bias == "map" else None,
                   stride=s, groups=groups)
    if bias == "unit":
        ref = ref + b
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    grad = torch.randn_like(ref)
    leaves = [v for v in (x, w, b) if v is not None and v.requires_grad]
    for a, r in zip(torch.autograd.grad(ours, leaves, grad),
                    torch.autograd.grad(ref, leaves, grad), strict=True):
        torch.testing.assert_close(a, r, **TOL[dtype])


def test_conv1d_bias_per_unit():
    x = torch.randn(2, 16, 15, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 16, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, 13, dtype=torch.float64, requires_grad=True)
    out = cf.conv1d(x, w, b)
    torch.testing.assert_close(out, F.conv1d(x, w.flip(-1)) + b)
    assert torch.autograd.gradcheck(lambda x, w, b: cf.conv1d(x, w, b), (x, w, b))
    one = x[:1].detach().requires_grad_()  # one token: the on-line path's own branch
    assert torch.autograd.gradcheck(lambda x, w, b: cf.conv1d(x, w, b, padding=1, pad_value=-1.0),
                                    (one, w, torch.randn(8, 15, dtype=torch.float64, requires_grad=True)))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("stride,padding,groups,bias_shape", [
    (1, 0, 1, (4,)), ((2, 3), (1, 2), 2, (4,)), (2, 2, 1, (4, 5, 6)), (3, 1, 2, None),
])
def test_conv2d_gradcheck_float64(stride, padding, groups, bias_shape, path):
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4 // groups, 3, 2, dtype=torch.float64, requires_grad=True)
    if bias_shape is not None and len(bias_shape) == 3:
        ho = (9 + 2 * 2 - 3) // 2 + 1
        wo = (11 + 2 * 2 - 2) // 2 + 1
        bias_shape = (4, ho, wo)
    b = None if bias_shape is None else torch.randn(*bias_shape, dtype=torch.float64,
                                                    requires_grad=True)
    inputs = (x, w) if b is None else (x, w, b)

    def f(*t):
        return cf.conv2d(*t, stride=stride, padding=padding, pad_value=-1.0, groups=groups)

    with conv_path(path):
        assert torch.autograd.gradcheck(f, inputs)


def test_large_path_on_channels_last_input_with_many_channels():
    # The large path's per-offset copies (>= 16 channels per group) and workspace reuse.
    x = torch.randn(2, 32, 9, 9, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(8, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    with conv_path("large"):
        out = cf.conv2d(x, w, padding=1, groups=2)
        out2 = cf.conv2d(x, w, padding=1, groups=2)  # the workspace is reused, results stay right
    ref = F.conv2d(x, w.flip(-2, -1), padding=1, groups=2)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(out2, ref)
    grad = torch.randn_like(ref)
    with conv_path("large"):
        ours = torch.autograd.grad(cf.conv2d(x, w, padding=1, groups=2), (x, w), grad)
    for a, b in zip(ours, torch.autograd.grad(ref, (x, w), grad), strict=True):
        torch.testing.assert_close(a, b)


def test_forward_is_convolution_not_correlation():
    # An impulse input reproduces the kernel itself (z = w * delta = w): the signature of
    # convolution; a correlation would return the kernel reversed.
    x = torch.zeros(1, 1, 1, 7, dtype=torch.float64)
    x[0, 0, 0, 3] = 1.0
    w = torch.tensor([[[[1.0, 2.0, 3.0]]]], dtype=torch.float64)
    out = cf.conv2d(x, w, padding=(0, 1))
    assert out.flatten().tolist() == [0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0]


def test_backward_is_correlation():
    # dL/da = w (correlation) dL/dz: an impulse in the output gradient at position m sends
    # back w[m - m'] over m', i.e. the kernel reversed around m.
    x = torch.zeros(1, 1, 1, 7, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[[[1.0, 2.0, 3.0]]]], dtype=torch.float64)
    out = cf.conv2d(x, w, padding=(0, 1))
    grad = torch.zeros_like(out)
    grad[0, 0, 0, 3] = 1.0
    (dx,) = torch.autograd.grad(out, x, grad)
    assert dx.flatten().tolist() == [0.0, 0.0, 3.0, 2.0, 1.0, 0.0, 0.0]


def test_connection_table_masks_kernel_and_counts_free_parameters():
    table = torch.zeros(4, 3, dtype=torch.bool)
    table[0, 0] = table[1, :2] = table[2, 1:] = table[3, :] = True
    conv = cnn.Conv2d(3, 4, 3, padding=1, connection_table=table).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    masked = conv.weight * table[:, :, None, None]
    torch.testing.assert_close(conv(x), reference_conv2d(x, masked, conv.bias, (1, 1), (1, 1),
                                                         0.0, 1))
    conv(x).sum().backward()
    assert torch.all(conv.weight.grad[~table] == 0)
    assert torch.all(conv.weight.grad[table].abs().sum(dim=(-2, -1)) > 0)
    assert conv.free_parameters() == int(table.sum()) * 9 + 4


def test_unit_bias_module_shapes():
    conv = cnn.Conv2d(1, 12, 5, stride=2, padding=2, pad_value=-1.0, bias="unit", input_size=16)
    assert conv.bias.shape == (12, 8, 8)
    assert conv.free_parameters() == 12 * 25 + 768
    assert conv(torch.randn(3, 1, 16, 16)).shape == (3, 12, 8, 8)


def test_large_convolution_under_inference_mode_then_training():
    """Lightning evaluates under torch.inference_mode: the reused column workspace made there
    must still serve (and be written by) a later training step."""
    from convrepro.nn import functional as lf

    x, w = torch.randn(8, 48, 20, 20), torch.randn(64, 48, 3, 3, requires_grad=True)
    with torch.inference_mode():
        lf.conv2d(x, w.detach(), padding=1)  # first use of this shape: the workspace is made here
    out = lf.conv2d(x, w, padding=1)
    out.square().sum().backward()
    ref = torch.nn.functional.conv2d(x, w.detach().flip(-2, -1), padding=1)
    torch.testing.assert_close(out.detach(), ref, rtol=1e-4, atol=1e-3)
    assert w.grad is not None and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("path", PATHS)
def test_input_no_receptive_field_reads_gets_zero_gradient(path):
    # Stride 2 over a 1x1 input framed by 3: every window lands on the frame, none on the input.
    x = torch.randn(2, 3, 1, 1, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 1, 1, dtype=torch.float64, requires_grad=True)
    with conv_path(path):
        out = cf.conv2d(x, w, stride=2, padding=3, pad_value=-1.0)
    torch.testing.assert_close(out, reference_conv2d(x, w, None, (2, 2), (3, 3), -1.0, 1))
    (grad_x,) = torch.autograd.grad(out.sum(), (x,))
    assert torch.equal(grad_x, torch.zeros_like(x))


@pytest.mark.parametrize("kernel,stride,padding,groups", [
    (5, 2, 2, 1),  # LeCun's H1/H2 geometry: the frame read, positions with 4 to 9 readers
    (3, 1, 0, 1), (1, 2, 3, 1),  # no frame; a frame and positions no window reads
    (3, 3, 1, 2), (4, 2, 1, 3),
])
def test_input_gradient_by_the_overlap_add_matches_pytorch(kernel, stride, padding, groups):
    # The small path sums the column gradient onto the input by one scatter-add (float64).
    g = torch.Generator().manual_seed(kernel * 100 + stride * 10 + padding)
    x2 = torch.randn(3, 2 * groups, 7, 9, generator=g, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(2 * groups, 2, kernel, kernel, generator=g, dtype=torch.float64)
    with conv_path("small"):
        out = cf.conv2d(x2, w2, stride=stride, padding=padding, pad_value=-1.0, groups=groups)
    ref = reference_conv2d(x2, w2, None, (stride, stride), (padding, padding), -1.0, groups)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(out, x2, grad)[0], torch.autograd.grad(ref, x2, grad)[0],
                               **TOL[torch.float64])
    # The TDNN's time-delay path (one group) shares the overlap-add.
    x1 = torch.randn(3, 4, 11, generator=g, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(5, 4, kernel, generator=g, dtype=torch.float64)
    out = cf.conv1d(x1, w1, stride=stride, padding=padding, pad_value=-1.0)
    ref = F.conv1d(F.pad(x1, (padding, padding), value=-1.0), w1.flip(-1), stride=stride)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(out, x1, grad)[0], torch.autograd.grad(ref, x1, grad)[0],
                               **TOL[torch.float64])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_unit_bias_gradient_from_either_gradient_layout(path, batch, layout):
    # The per-unit bias gradient is summed in the memory order the output gradient lies in.
    x = torch.randn(batch, 2, 9, 9, dtype=torch.float64)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    bias = torch.randn(4, 4, 4, dtype=torch.float64, requires_grad=True)
    with conv_path(path):
        out = cf.conv2d(x, w, bias, stride=2, padding=0)
    grad = torch.randn(out.shape, dtype=torch.float64)
    if layout == "channels_last":
        grad = grad.contiguous(memory_format=torch.channels_last)
    (grad_bias,) = torch.autograd.grad(out, (bias,), grad)
    torch.testing.assert_close(grad_bias, grad.sum(dim=0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, reference_conv2d(x, w, bias, (2, 2), (0, 0), 0.0, 1), **TOL[torch.float64])
