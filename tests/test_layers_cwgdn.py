"""CWGDN, its channel-wise dynamic filter D_c, and LayerNorm2d."""
import pytest
import torch
import torch.nn.functional as F

from deblurlayers import CWGDN
from deblurlayers.layers import ChannelDynamicKernels, LayerNorm2d
from deblurlayers.ops import channel_dynamic_filter
from helpers import count_parameters


def test_channel_dynamic_filter_matches_per_sample_convolution():
    x = torch.randn(3, 4, 9, 11, dtype=torch.float64)
    kernels = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    out = channel_dynamic_filter(x, kernels, bias)
    for n in range(3):
        want = F.conv2d(x[n:n + 1], kernels[n].unsqueeze(1), bias, padding=1, groups=4)
        torch.testing.assert_close(out[n:n + 1], want)


def test_channel_dynamic_filter_bad_inputs():
    x = torch.zeros(2, 4, 8, 8)
    with pytest.raises(ValueError, match=r"kernels: expected shape \(B=2, C=4, k, k\) with C=4, got shape \(2, 3, 3, 3\)"):
        channel_dynamic_filter(x, torch.zeros(2, 3, 3, 3))
    with pytest.raises(ValueError, match="with odd k"):
        channel_dynamic_filter(x, torch.zeros(2, 4, 2, 2))
    with pytest.raises(ValueError, match=r"kernels: expected shape \(B=2, C=4, k, k\) with k=3, got shape \(2, 4, 3, 5\)"):
        channel_dynamic_filter(x, torch.zeros(2, 4, 3, 5))
    with pytest.raises(ValueError, match=r"bias: expected shape \(C=4\)"):
        channel_dynamic_filter(x, torch.zeros(2, 4, 3, 3), torch.zeros(5))


def test_layer_norm_2d_matches_formula():
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.body.weight.normal_()
        norm.body.bias.normal_()
    x = torch.randn(2, 3, 6, 4, 5, dtype=torch.float64)
    norm = norm.double()
    mean = x.mean(dim=-3, keepdim=True)
    var = x.var(dim=-3, unbiased=False, keepdim=True)
    want = (x - mean) / torch.sqrt(var + 1e-5) * norm.body.weight.view(6, 1, 1) + norm.body.bias.view(6, 1, 1)
    torch.testing.assert_close(norm(x), want)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., C=6, H, W\), got shape \(2, 5, 4, 4\)"):
        norm(torch.zeros(2, 5, 4, 4))


def test_dynamic_kernels_are_predicted_from_the_input_and_applied_per_sample():
    torch.manual_seed(0)
    dc = ChannelDynamicKernels(channels=8).double()
    with torch.no_grad():
        dc.bias.normal_()
    x = torch.randn(2, 8, 12, 10, dtype=torch.float64)
    kernels = dc.kernels(x)
    assert kernels.shape == (2, 8, 3, 3)
    out = dc(x)
    for n in range(2):
        want = F.conv2d(x[n:n + 1], kernels[n].unsqueeze(1), dc.bias, padding=1, groups=8)
        torch.testing.assert_close(out[n:n + 1], want)
    # the kernels summarise the whole map: changing a far-away pixel changes every output pixel
    x2 = x.clone()
    x2[0, :, -1, -1] += 5.0
    assert not torch.allclose(dc(x2)[0, :, 0, 0], out[0, :, 0, 0])


def test_cwgdn_parameters_match_the_official_layout():
    block = CWGDN()
    c = 64
    assert count_parameters(block) == 180 * c * c + 282 * c == 755_328
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes["norm2.body.weight"] == (c,)
    assert shapes["ffn.project_in.weight"] == (8 * c, c, 3, 1, 1)
    assert shapes["ffn.project_out.weight"] == (c, 4 * c, 3, 1, 1)
    assert shapes["ffn.kerner_conv_channel.bias"] == (4 * c,)
    assert shapes["ffn.kerner_conv_channel.tokernel.weight"] == (36 * c, 4 * c, 1, 1)
    assert shapes["ffn.kerner_conv_channel.Block2.2.weight"] == (4 * c, 1, 3, 3)
    assert len(shapes) == 19


@pytest.mark.parametrize("shape", [(2, 5, 16, 32, 32), (1, 1, 16, 4, 4), (2, 3, 16, 9, 13)])
def test_cwgdn_shapes(shape):
    assert CWGDN(channels=16)(torch.randn(shape)).shape == shape


def test_cwgdn_gradients_reach_every_parameter():
    torch.manual_seed(0)
    block = CWGDN(channels=8)
    block(torch.randn(2, 3, 8, 12, 12)).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_cwgdn_is_temporally_local_and_batch_order_invariant():
    torch.manual_seed(0)
    block = CWGDN(channels=8).double()
    x = torch.randn(3, 7, 8, 8, 8, dtype=torch.float64)
    out = block(x)
    # two 3x1x1 temporal convolutions: frame t sees frames t-2..t+2 only
    x2 = x.clone()
    x2[:, 6] += torch.randn_like(x2[:, 6])  # not a constant: the LayerNorm would remove it
    out2 = block(x2)
    torch.testing.assert_close(out2[:, :4], out[:, :4])
    assert not torch.allclose(out2[:, 4], out[:, 4])
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(block(x[perm]), out[perm])


def test_cwgdn_compile_fullgraph():
    torch.manual_seed(0)
    block = CWGDN(channels=8)
    x = torch.randn(1, 3, 8, 8, 8, requires_grad=True)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    out, eager = compiled(x), block(x)
    torch.testing.assert_close(out, eager)
    g1 = torch.autograd.grad(out.sum(), (x, block.ffn.project_in.weight))
    g2 = torch.autograd.grad(eager.sum(), (x, block.ffn.project_in.weight))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_cwgdn_bad_inputs():
    block = CWGDN(channels=8)
    with pytest.raises(ValueError, match=r"x: expected a 5-d tensor of shape \(B, T, C=8, H, W\), got shape \(2, 8, 8, 8\)"):
        block(torch.zeros(2, 8, 8, 8))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, C=8, H, W\) with C=8, got shape \(1, 2, 4, 8, 8\)"):
        block(torch.zeros(1, 2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"x: expected H >= 4 in \(B, T, C, H, W\), got shape \(1, 2, 8, 3, 8\)"):
        block(torch.zeros(1, 2, 8, 3, 8))
