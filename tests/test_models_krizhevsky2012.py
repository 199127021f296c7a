"""AlexNet as the paper describes it: shapes, parameter counts, init, ablation switches,
and the hand-written network against its torch.nn twin."""

from __future__ import annotations

import pytest
import torch

from convrepro.models.krizhevsky2012 import AlexNet, swap_kernel_convention

PAPER_SHAPES = {  # (maps, size) after each layer for a 227x227 input (the paper's figure 2)
    "conv1": (96, 55), "pool1": (96, 27), "conv2": (256, 27), "pool2": (256, 13),
    "conv3": (384, 13), "conv4": (384, 13), "conv5": (256, 13), "pool5": (256, 6),
}


def _shapes(model: AlexNet, size: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
        for name in [*PAPER_SHAPES, "fc6", "fc7", "fc8"]]
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("size,padding", [(227, 0), (224, 2)])
def test_every_layer_has_the_papers_output_shape(size, padding):
    shapes = _shapes(AlexNet(num_classes=1000, input_size=size, conv1_padding=padding), size)
    for name, (maps, side) in PAPER_SHAPES.items():
        assert shapes[name] == (maps, side, side), name
    assert shapes["fc6"] == (4096,) and shapes["fc7"] == (4096,) and shapes["fc8"] == (1000,)


def test_parameter_count_with_the_two_gpu_groups():
    model = AlexNet(num_classes=1000)
    expected = (
        96 * 3 * 11 * 11 + 96            # conv1
        + 256 * 48 * 5 * 5 + 256         # conv2: each kernel sees its GPU's 48 maps
        + 384 * 256 * 3 * 3 + 384        # conv3: all maps
        + 384 * 192 * 3 * 3 + 384        # conv4: 192 of 384
        + 256 * 192 * 3 * 3 + 256        # conv5
        + 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
    )
    assert model.free_parameters() == expected == 60_965_224  # "about 60.97 M"
    assert model.conv2.weight.shape == (256, 48, 5, 5)
    assert model.conv4.weight.shape == (384, 192, 3, 3) and model.conv5.weight.shape == (256, 192, 3, 3)


def test_ablation_switches():
    one_gpu = AlexNet(num_classes=1000, groups=1)
    extra = 256 * 48 * 25 + 384 * 192 * 9 + 256 * 192 * 9  # the cross-GPU connections
    assert one_gpu.free_parameters() == 60_965_224 + extra
    half = AlexNet(num_classes=10, width=0.5, groups=1)
    assert [half.conv1.weight.shape[0], half.conv2.weight.shape[0], half.conv3.weight.shape[0]] == [48, 128, 192]
    no_lrn = AlexNet(num_classes=10, lrn=False)
    assert isinstance(no_lrn.norm1, torch.nn.Identity) and isinstance(no_lrn.norm2, torch.nn.Identity)
    # Non-overlapping 2/2 pooling: 55 -> 27 -> 13 -> 6 as well, so fc6 keeps its size.
    shapes = _shapes(AlexNet(num_classes=10, pool_kernel=2, pool_stride=2), 227)
    assert shapes["pool1"] == (96, 27, 27) and shapes["pool5"] == (256, 6, 6)


def test_paper_init():
    torch.manual_seed(0)
    model = AlexNet(num_classes=1000)
    for name in ("conv1", "conv3", "fc6", "fc8"):
        assert getattr(model, name).weight.std().item() == pytest.approx(0.01, rel=0.05)
    for name, bias in {"conv1": 0, "conv2": 1, "conv3": 0, "conv4": 1, "conv5": 1, "fc6": 1, "fc7": 1,
                       "fc8": 0}.items():
        assert torch.all(getattr(model, name).bias == bias), name
    caffe = AlexNet(num_classes=10, bias_one=0.1)
    assert torch.all(caffe.conv2.bias == 0.1)
    he = AlexNet(num_classes=10, init="he")
    assert he.conv3.weight.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.05)


def test_wrong_input_size_and_bad_options_are_refused():
    with pytest.raises(ValueError, match="too small: nothing is left after"):
        AlexNet(input_size=40)
    with pytest.raises(ValueError, match="built for 227x227 inputs"):
        AlexNet(num_classes=10)(torch.randn(1, 3, 224, 224))
    with pytest.raises(ValueError, match="groups must be 1"):
        AlexNet(groups=4)
    with pytest.raises(ValueError, match="layers must be one of"):
        AlexNet(layers="cudnn")


def test_hand_written_network_equals_its_torch_nn_twin():
    """Same weights, same outputs and gradients: the benchmark compares like with like."""
    torch.manual_seed(1)
    # He init: the paper's N(0, 0.01) with biases 1 makes every output nearly its bias,
    # which would hide a wrong kernel.
    kwargs = dict(num_classes=10, input_size=67, conv1_padding=2, width=0.25, fc_width=64, dropout=0.0,
                  init="he")
    ours = AlexNet(**kwargs).double()
    ref = AlexNet(**kwargs, layers="torch").double()
    ref.load_state_dict(swap_kernel_convention(ours.state_dict()))
    x = torch.randn(3, 3, 67, 67, dtype=torch.float64)
    out_ours, out_ref = ours(x), ref(x)
    torch.testing.assert_close(out_ours, out_ref, rtol=1e-9, atol=1e-12)
    out_ours.square().sum().backward()
    out_ref.square().sum().backward()
    ref_grads = swap_kernel_convention({n: q.grad for n, q in ref.named_parameters()})
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], rtol=1e-8, atol=1e-11, msg=name)


def test_the_twins_lrn_is_pytorchs_function_from_deterministic_ops():
    """torch.nn.LocalResponseNorm's backward (avg_pool3d) has no deterministic CUDA kernel; the
    twin's own composition must compute the same function (PyTorch divides alpha by n)."""
    from convrepro.models.krizhevsky2012 import TorchLocalResponseNorm

    x = torch.randn(2, 9, 5, 5, dtype=torch.float64, requires_grad=True)
    ours = TorchLocalResponseNorm(5, 1e-4, 0.75, 2.0)(x)
    ref = torch.nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0)(x)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-14)
