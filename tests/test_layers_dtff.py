"""DTFF (one fusion step and its propagation) and its pixel filter generator D_p."""
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from deblurlayers import DTFF
from deblurlayers.layers import PixelDynamicKernels
from deblurlayers.ops import use_backend


def official_pixel_filter(v, kernel_map, k=3):
    """DSTNet's D_p application, written out: upsample x8, unfold, per-channel weighted sum."""
    b, c, h, w = v.shape
    kernels = F.interpolate(kernel_map, scale_factor=8, mode="bilinear", align_corners=False)
    kernels = rearrange(kernels, "b (c t) h w -> b c t h w", t=k * k)
    patches = rearrange(F.unfold(v, k, padding=k // 2), "b (c t) (h w) -> b c t h w", t=k * k, h=h)
    return (kernels * patches).sum(dim=2)


def test_dtff_parameters_match_the_official_layout():
    step = DTFF()
    p, nb = 64, 15
    assert sum(q.numel() for q in step.parameters()) == 171 * p * p + 25 * p + nb * (18 * p * p + 2 * p) == 1_809_856
    keys = set(step.state_dict())
    assert {"conv1.weight", "conv3.bias", "kernel_conv_pixel.tokernel.weight",
            "kernel_conv_pixel.Block2.2.conv2.bias", "resblock_bcakward2d.main.0.14.conv2.weight"} <= keys
    assert step.kernel_conv_pixel.tokernel.weight.shape == (9 * p, p, 1, 1)


def test_pixel_kernels_match_the_official_formulation():
    torch.manual_seed(0)
    dp = PixelDynamicKernels(channels=8).double()
    v = torch.randn(2, 8, 32, 24, dtype=torch.float64)
    kernel_map = dp.kernels(v)
    assert kernel_map.shape == (2, 72, 4, 3)
    torch.testing.assert_close(dp(v), official_pixel_filter(v, kernel_map))


def test_pixel_kernels_pad_odd_sizes_and_crop_back():
    torch.manual_seed(0)
    dp = PixelDynamicKernels(channels=4).double()
    v = torch.randn(1, 4, 13, 21, dtype=torch.float64)
    padded = F.pad(v, (0, 3, 0, 3), mode="reflect")  # to 16 x 24
    want = official_pixel_filter(padded, dp.kernels(padded))[..., :13, :21]
    torch.testing.assert_close(dp(v), want)


def test_step_matches_the_equations():
    torch.manual_seed(0)
    step = DTFF(channels=8, num_blocks=2).double()
    x, h = torch.randn(2, 8, 16, 16, dtype=torch.float64), torch.randn(2, 8, 16, 16, dtype=torch.float64)
    fused = F.leaky_relu(step.conv1(torch.cat([x, h], 1)), 0.1)
    a, b = fused[:, :8], fused[:, 8:]
    v = a * torch.sigmoid(step.conv2(a)) + b * torch.sigmoid(step.conv3(b))
    v = official_pixel_filter(v, step.kernel_conv_pixel.kernels(v))
    for block in step.resblock_bcakward2d.main[0]:
        v = v + block.conv2(F.leaky_relu(block.conv1(v), 0.1))
    torch.testing.assert_close(step(x, h), v)


def test_native_and_reference_backends_agree():
    torch.manual_seed(0)
    step = DTFF(channels=8, num_blocks=1)
    x, h = torch.randn(1, 8, 24, 16), torch.randn(1, 8, 24, 16)
    with use_backend("reference"):
        ref = step(x, h)
    torch.testing.assert_close(step(x, h), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(16, 16), (9, 14), (5, 5)])
def test_shapes_any_size(size):
    step = DTFF(channels=8, num_blocks=1)
    x = torch.randn(2, 8, *size)
    assert step(x, torch.zeros_like(x)).shape == x.shape
    assert step(x).shape == x.shape  # no state: zeros


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    step = DTFF(channels=8, num_blocks=2)
    x = torch.randn(2, 8, 16, 16)
    step(x, torch.randn_like(x)).square().sum().backward()
    for name, p in step.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_propagation_is_causal_in_its_direction():
    torch.manual_seed(0)
    step = DTFF(channels=4, num_blocks=1).double()
    clip = torch.randn(1, 4, 4, 16, 16, dtype=torch.float64)
    changed = clip.clone()
    changed[:, 2] += torch.randn_like(changed[:, 2])
    fwd, fwd2 = step.propagate(clip), step.propagate(changed)
    torch.testing.assert_close(fwd2[:, :2], fwd[:, :2])
    assert not torch.allclose(fwd2[:, 3], fwd[:, 3])
    bwd, bwd2 = step.propagate(clip, reverse=True), step.propagate(changed, reverse=True)
    torch.testing.assert_close(bwd2[:, 3:], bwd[:, 3:])
    assert not torch.allclose(bwd2[:, 0], bwd[:, 0])
    # the first state is F(x_0, 0)
    torch.testing.assert_close(fwd[:, 0], step(clip[:, 0], torch.zeros_like(clip[:, 0])))


def test_compile_fullgraph(native_ops):
    torch.manual_seed(0)
    step = DTFF(channels=8, num_blocks=1)
    x, h = torch.randn(1, 8, 16, 16, requires_grad=True), torch.randn(1, 8, 16, 16)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    out, eager = compiled(x, h), step(x, h)
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), x)[0], torch.autograd.grad(eager.sum(), x)[0])


def test_bad_inputs():
    step = DTFF(channels=8, num_blocks=1)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, P=8, H, W\) with P=8, got shape \(1, 4, 16, 16\)"):
        step(torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"h: expected shape \(B=1, P=8, H=16, W=16\) with W=16, got shape \(1, 8, 16, 12\)"):
        step(torch.zeros(1, 8, 16, 16), torch.zeros(1, 8, 16, 12))
    with pytest.raises(ValueError, match=r"features: expected a 5-d tensor"):
        step.propagate(torch.zeros(1, 8, 16, 16))
