"""The hand-written layers under autocast (bf16 on this CPU, as Lightning's ``bf16-mixed`` runs them).

bf16 keeps 8 significant bits, and through several layers its rounding (and the max-pooling
winners it flips) moves gradients far from float32's: measured here, PyTorch's own AlexNet
layers in bf16 give conv1 weight gradients 17-24 % (relative L2) away from float32.  So the
stated tolerance is relative to PyTorch's own: against the float32 network, our layers in
bf16 must be no more than 1.25x as far off as ``torch.nn``'s in bf16 (+0.005), outputs and
every parameter's gradient; and both bf16 networks' outputs within 2 % of each other.  A
layer left in the wrong dtype crashes; a gradient summed wrongly misses by far more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convrepro.models.krizhevsky2012 import AlexNet, swap_kernel_convention
from convrepro.models.lecun1989 import ZipCodeNet
from convrepro.models.waibel1989 import TimeDelayNet
from convrepro.nn import functional as lf

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


def as_accurate_as_torch(ours: torch.Tensor, torchs: torch.Tensor, exact: torch.Tensor) -> bool:
    return relative_error(ours, exact) <= 1.25 * relative_error(torchs, exact) + 0.005


def _alexnet(layers: str) -> AlexNet:
    torch.manual_seed(1)
    kwargs = dict(num_classes=10, input_size=67, conv1_padding=2, width=0.25, fc_width=64, dropout=0.0, init="he")
    return AlexNet(**kwargs, layers=layers)


def test_alexnet_under_bf16_autocast_is_as_accurate_as_its_torch_nn_twin():
    ours, ref, exact = _alexnet("convrepro"), _alexnet("torch"), _alexnet("torch")
    ref.load_state_dict(swap_kernel_convention(ours.state_dict()))
    exact.load_state_dict(ref.state_dict())
    x = torch.randn(16, 3, 67, 67)
    out_exact = exact(x)
    out_exact.square().sum().backward()
    with torch.autocast(**BF16):
        out_ours, out_ref = ours(x), ref(x)
    assert out_ours.dtype == torch.bfloat16 == out_ref.dtype  # fc8 is a Linear: autocast's dtype
    assert relative_error(out_ours, out_ref) < 0.02
    assert as_accurate_as_torch(out_ours, out_ref, out_exact)
    out_ours.float().square().sum().backward()
    out_ref.float().square().sum().backward()
    ref_grads = swap_kernel_convention({n: q.grad for n, q in ref.named_parameters()})
    exact_grads = swap_kernel_convention({n: q.grad for n, q in exact.named_parameters()})
    for name, p in ours.named_parameters():
        assert p.grad.dtype == torch.float32, name  # master weights stay float32
        assert as_accurate_as_torch(p.grad, ref_grads[name], exact_grads[name]), name


def test_each_layer_keeps_its_precision_under_autocast():
    torch.manual_seed(0)
    x0, w0, b0 = torch.randn(4, 8, 13, 13), torch.randn(16, 4, 3, 3), torch.randn(16)

    def run(conv, max_pool, lrn, avg_pool, autocast):
        x, w = x0.clone().requires_grad_(), w0.clone().requires_grad_()
        with torch.autocast(**BF16, enabled=autocast):
            z = conv(x, w)
            outs = (z, max_pool(z), lrn(max_pool(z)), avg_pool(z))
        sum(o.float().sum() for o in outs[2:]).backward()
        return outs, x.grad, w.grad

    ours = (lambda x, w: lf.conv2d(x, w, b0, padding=1, groups=2), lambda z: lf.max_pool2d(z, 3, 2),
            lambda z: lf.local_response_norm(z), lambda z: lf.avg_pool2d(z, 3, 2))
    torchs = (lambda x, w: F.conv2d(x, w.flip(-2, -1), b0, padding=1, groups=2), lambda z: F.max_pool2d(z, 3, 2),
              lambda z: F.local_response_norm(z, 5, 5e-4, 0.75, 2.0), lambda z: F.avg_pool2d(z, 3, 2))
    (z, pooled, normed, averaged), gx, gw = run(*ours, autocast=True)
    assert z.dtype == torch.bfloat16  # the convolution runs in autocast's dtype, as cuDNN's
    assert pooled.dtype == torch.bfloat16  # pooling keeps the dtype it is given
    assert normed.dtype == torch.bfloat16 and averaged.dtype == torch.bfloat16
    assert gx.dtype == torch.float32 and gw.dtype == torch.float32
    (tz, *_), tgx, tgw = run(*torchs, autocast=True)
    (ez, *_), egx, egw = run(*ours, autocast=False)
    assert relative_error(z, ez) < 0.01
    assert as_accurate_as_torch(gx, tgx, egx) and as_accurate_as_torch(gw, tgw, egw)


def test_lecun_and_tdnn_under_bf16_autocast_follow_float32():
    torch.manual_seed(2)
    for model, x in ((ZipCodeNet(), torch.rand(8, 1, 16, 16) * 2 - 1), (TimeDelayNet(), torch.randn(8, 16, 15))):
        ref = model(x)
        ref.square().sum().backward()
        ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        with torch.autocast(**BF16):
            out = model(x)
        out.float().square().sum().backward()
        # Shallow networks without max pooling: close to float32 outright.
        assert relative_error(out, ref) < 0.02, type(model).__name__
        for name, p in model.named_parameters():
            assert relative_error(p.grad, ref_grads[name]) < 0.05, f"{type(model).__name__}.{name}"
