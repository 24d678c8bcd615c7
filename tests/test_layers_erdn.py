"""ERDN layers: ModulatedDeformConv2d (+ BSSTNet variant), DilatedPyramidBlock, PyramidDeformableAlign,
GradientMap, SFTGradientBranch and sft."""
import math

import pytest
import torch
import torch.nn.functional as F

from deblurlayers import (DilatedPyramidBlock, GradientMap, ModulatedDeformConv2d, PyramidDeformableAlign,
                          SFTGradientBranch)
from deblurlayers.layers import sft
from helpers import count_parameters


def shift(x, dy, dx):
    """``out[..., y, x] = x[..., y + dy, x + dx]``, zero outside (integer dy, dx)."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def perturb_zero_init(module, std=0.05):
    """The offset heads start at zero, which stops gradients to the layers before them."""
    gen = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, ModulatedDeformConv2d):
            last = m.conv_offset if isinstance(m.conv_offset, torch.nn.Conv2d) else m.conv_offset[-1]
            with torch.no_grad():
                last.weight.copy_(std * torch.randn(last.weight.shape, generator=gen))


def assert_grads_reach_every_parameter(module, loss):
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


# -- ModulatedDeformConv2d -----------------------------------------------------------------------
def test_dcn_pack_parameters_match_erdn_and_bsstnet():
    erdn = ModulatedDeformConv2d(64, 64, 3, padding=1, deformable_groups=8)
    assert count_parameters(erdn) == 161_560 and count_parameters(erdn.conv_offset) == 124_632
    assert set(erdn.state_dict()) == {"weight", "bias", "conv_offset.weight", "conv_offset.bias"}
    bsst = ModulatedDeformConv2d(384, 192, deformable_groups=16, cond_channels=3 * 192 + 9,
                                 offset_channels=(192, 192, 192), max_residue_magnitude=5)
    assert count_parameters(bsst) == 12_342_720 // 4
    assert {k.rsplit(".", 1)[0] for k in bsst.state_dict() if k.startswith("conv_offset")} == {
        f"conv_offset.{i}" for i in (0, 2, 4, 6)}


def test_fresh_dcn_pack_is_a_half_masked_convolution():
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(6, 5, 3, padding=1, deformable_groups=3).double()
    with torch.no_grad():
        dcn.bias.normal_()
    x, cond = torch.randn(2, 6, 7, 9, dtype=torch.float64), torch.randn(2, 6, 7, 9, dtype=torch.float64)
    want = F.conv2d(x, 0.5 * dcn.weight, dcn.bias, padding=1)  # offsets 0, mask sigmoid(0)
    torch.testing.assert_close(dcn(x, cond), want)


def test_dcn_pack_reads_offsets_and_mask_from_the_offset_conv_in_torchvision_layout():
    torch.manual_seed(0)
    groups, taps = 2, 9
    dcn = ModulatedDeformConv2d(4, 3, 3, padding=1, deformable_groups=groups).double()
    # Constant predictions through the bias: (dy, dx) = (1, -2) everywhere, mask logit log(3) -> 0.75.
    bias = torch.zeros(3 * groups * taps, dtype=torch.float64)
    bias[0:2 * groups * taps:2], bias[1:2 * groups * taps:2] = 1.0, -2.0
    bias[2 * groups * taps:] = math.log(3.0)
    with torch.no_grad():
        dcn.conv_offset.bias.copy_(bias)
    x = torch.randn(1, 4, 8, 10, dtype=torch.float64)
    want = F.conv2d(shift(F.pad(x, (1, 1, 1, 1)), 1, -2), 0.75 * dcn.weight, dcn.bias)
    torch.testing.assert_close(dcn(x, torch.randn(1, 4, 8, 10, dtype=torch.float64)), want)


def test_flow_guided_variant_steers_each_group_half_with_its_flow():
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(8, 4, 3, padding=1, deformable_groups=4, cond_channels=5,
                                offset_channels=(6,), max_residue_magnitude=5).double()
    with torch.no_grad():
        dcn.bias.normal_()
    x, cond = torch.randn(1, 8, 9, 11, dtype=torch.float64), torch.randn(1, 5, 9, 11, dtype=torch.float64)
    flows = torch.zeros(1, 2, 2, 9, 11, dtype=torch.float64)
    flows[:, 0, 0], flows[:, 0, 1] = 2.0, 0.0    # first 2 groups (channels 0-3): x + 2
    flows[:, 1, 0], flows[:, 1, 1] = 0.0, -1.0   # last 2 groups (channels 4-7): y - 1
    mask_bias = torch.empty(1, 2, 9, 11, dtype=torch.float64)
    mask_bias[:, 0], mask_bias[:, 1] = math.log(3.0), -math.log(3.0)   # masks 0.75 and 0.25
    padded = F.pad(x, (1, 1, 1, 1))
    want = (F.conv2d(shift(padded[:, :4], 0, 2), 0.75 * dcn.weight[:, :4], dcn.bias)
            + F.conv2d(shift(padded[:, 4:], -1, 0), 0.25 * dcn.weight[:, 4:]))
    torch.testing.assert_close(dcn(x, cond, flows, mask_bias), want)


def test_flow_guided_residual_is_bounded_by_max_residue_magnitude():
    dcn = ModulatedDeformConv2d(4, 4, deformable_groups=2, max_residue_magnitude=5)
    with torch.no_grad():
        dcn.conv_offset.bias.fill_(1e3)
    flow = torch.randn(1, 2, 6, 6)
    offset, _ = dcn.offsets_and_mask(torch.randn(1, 4, 6, 6), flow)
    residual = offset - flow.flip(1).repeat(1, offset.shape[1] // 2, 1, 1)
    torch.testing.assert_close(residual, torch.full_like(residual, 5.0))


def test_dcn_pack_gradients_and_compile():
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(8, 8, deformable_groups=2, offset_channels=(8,), max_residue_magnitude=3)
    perturb_zero_init(dcn)
    x, cond, flow = torch.randn(1, 8, 6, 7), torch.randn(1, 8, 6, 7), torch.randn(1, 2, 6, 7)
    assert_grads_reach_every_parameter(dcn, dcn(x, cond, flow).square().sum())
    compiled = torch.compile(dcn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, cond, flow), dcn(x, cond, flow))


def test_dcn_pack_bad_inputs():
    with pytest.raises(ValueError, match="deformable_groups: expected a divisor of in_channels=6"):
        ModulatedDeformConv2d(6, 6, deformable_groups=4)
    with pytest.raises(TypeError, match="kernel_size: expected an int or a pair of ints"):
        ModulatedDeformConv2d(4, 4, kernel_size=2.5)
    dcn = ModulatedDeformConv2d(4, 4, deformable_groups=2)
    x = torch.randn(1, 4, 6, 6)
    with pytest.raises(ValueError, match=r"cond: .*C=4.*got.*\(1, 3, 6, 6\)"):
        dcn(x, torch.randn(1, 3, 6, 6))
    with pytest.raises(ValueError, match=r"cond: .*H=6"):
        dcn(x, torch.randn(1, 4, 5, 6))
    with pytest.raises(ValueError, match="flow: only used with max_residue_magnitude"):
        dcn(x, x, torch.zeros(1, 2, 6, 6))
    guided = ModulatedDeformConv2d(4, 4, deformable_groups=2, max_residue_magnitude=5)
    # no flow: the bounded residual alone is the offset (ProPainter's propagation)
    assert guided(x, x).shape == x.shape
    with pytest.raises(ValueError, match="flow: expected a number of maps dividing deformable_groups=2"):
        guided(x, x, torch.zeros(1, 3, 2, 6, 6))
    with pytest.raises(ValueError, match="mask_bias: expected a number of maps dividing"):
        guided(x, x, torch.zeros(1, 2, 6, 6), torch.zeros(1, 3, 6, 6))


# -- DilatedPyramidBlock -------------------------------------------------------------------------
def test_pyramid_block_parameters_and_names_match_rfblock():
    counts = [count_parameters(DilatedPyramidBlock(64, n)) for n in (1, 2, 3, 4)]
    assert counts == [45_184, 164_160, 381_440, 803_648]
    keys = set(DilatedPyramidBlock(64, 4).state_dict())
    assert {f"rfblock.3.{i}.weight" for i in (0, 2, 4, 6, 8)} <= keys and "rfblock.3.10.weight" not in keys
    assert "last_layer.weight" in keys and "last_layer.weight" not in DilatedPyramidBlock(64, 1).state_dict()


@pytest.mark.parametrize("branches", [1, 2, 3])
def test_pyramid_block_receptive_field(branches):
    """The output at a pixel depends on exactly the 3·(2^n - 1) window around it."""
    torch.manual_seed(0)
    block = DilatedPyramidBlock(4, branches).double()
    x = torch.randn(1, 8, 49, 49, dtype=torch.float64, requires_grad=True)
    block(x)[0, :, 24, 24].sum().backward()
    rows, cols = torch.nonzero(x.grad.abs().sum((0, 1)), as_tuple=True)
    radius = (block.receptive_field - 1) // 2
    assert block.receptive_field == 3 * (2 ** branches - 1)
    assert (rows.min().item(), rows.max().item()) == (24 - radius, 24 + radius)
    assert (cols.min().item(), cols.max().item()) == (24 - radius, 24 + radius)


def test_pyramid_block_gradients_compile_and_bad_inputs():
    torch.manual_seed(0)
    block = DilatedPyramidBlock(4, 3)
    x = torch.randn(2, 8, 12, 12)
    assert_grads_reach_every_parameter(block, block(x).square().sum())
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), block(x))
    with pytest.raises(ValueError, match=r"x: .*C=8"):
        block(torch.randn(2, 4, 12, 12))
    with pytest.raises(ValueError, match="num_branches: expected an int >= 1"):
        DilatedPyramidBlock(4, 0)


# -- PyramidDeformableAlign ----------------------------------------------------------------------
def pyramid(b, c, h, w, levels=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, h >> i, w >> i, generator=gen) for i in range(levels)]


def test_pyramid_align_parameters_and_names_match_pcd_alignment():
    align = PyramidDeformableAlign()
    assert count_parameters(align) == 2_755_704
    cascade = count_parameters(align.cas_offset_conv1) + count_parameters(align.cas_offset_conv2) + count_parameters(align.cas_dcnpack)
    assert cascade == 272_280
    keys = set(align.state_dict())
    for key in ("offset_conv1.l4.rfblock.0.0.weight", "offset_conv1.l1.rfblock.3.8.weight",
                "offset_conv1.l1.last_layer.weight", "offset_conv2.l3.weight", "dcn_pack.l4.conv_offset.weight",
                "feat_conv.l1.weight", "cas_offset_conv1.weight", "cas_offset_conv2.bias",
                "cas_dcnpack.conv_offset.bias"):
        assert key in keys, key
    assert "offset_conv2.l4.weight" not in keys and "feat_conv.l4.weight" not in keys
    assert len(keys) == 92


@pytest.mark.parametrize("size", [(16, 24), (32, 40), (56, 64)])
def test_pyramid_align_shapes(size):
    torch.manual_seed(0)
    align = PyramidDeformableAlign(channels=8, deformable_groups=2)
    out = align(pyramid(2, 8, *size), pyramid(2, 8, *size, seed=1))
    assert out.shape == (2, 8, *size)


def test_pyramid_align_rejects_sizes_that_are_not_multiples_of_8():
    align = PyramidDeformableAlign(channels=8, deformable_groups=2)
    feats = [torch.randn(1, 8, 20, 24), torch.randn(1, 8, 10, 12), torch.randn(1, 8, 5, 6), torch.randn(1, 8, 2, 3)]
    with pytest.raises(ValueError, match=r"nbr\[0\]: a 4-level pyramid needs H and W divisible by 8, got 20x24"):
        align(feats, feats)


def test_pyramid_align_bad_inputs():
    align = PyramidDeformableAlign(channels=8, deformable_groups=2, levels=3)
    good = pyramid(1, 8, 16, 16, levels=3)
    with pytest.raises(ValueError, match=r"nbr: expected a list of 3 feature maps .*got list of length 4"):
        align(pyramid(1, 8, 16, 16), good)
    with pytest.raises(ValueError, match=r"ref\[1\]: .*H=8"):
        align(good, [good[0], torch.randn(1, 8, 7, 8), good[2]])
    with pytest.raises(ValueError, match=r"nbr\[0\]: .*C=8"):
        align([torch.randn(1, 4, 16, 16)] + good[1:], good)


def test_pyramid_align_uses_every_level_and_parameter_and_compiles():
    torch.manual_seed(0)
    align = PyramidDeformableAlign(channels=8, deformable_groups=2, levels=3)
    perturb_zero_init(align)
    nbr = [t.requires_grad_() for t in pyramid(1, 8, 16, 16, levels=3)]
    ref = [t.requires_grad_() for t in pyramid(1, 8, 16, 16, levels=3, seed=1)]
    out = align(nbr, ref)
    assert_grads_reach_every_parameter(align, out.square().sum())
    assert all(t.grad.abs().sum() > 0 for t in nbr + ref)
    compiled = torch.compile(align, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(nbr, ref), align(nbr, ref))


def test_pyramid_align_without_cascade():
    align = PyramidDeformableAlign(channels=8, deformable_groups=2, levels=2, cascade=False)
    assert not any(k.startswith("cas_") for k in align.state_dict())
    assert align(pyramid(1, 8, 8, 8, levels=2), pyramid(1, 8, 8, 8, levels=2)).shape == (1, 8, 8, 8)


# -- GradientMap ---------------------------------------------------------------------------------
def gradient_by_hand(img, eps=1e-6):
    """Eq. 6 with zero padding, one pixel at a time."""
    h, w = img.shape
    at = lambda y, x: img[y, x].item() if 0 <= y < h and 0 <= x < w else 0.0  # noqa: E731
    out = torch.empty(h, w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            gx, gy = at(y, x + 1) - at(y, x - 1), at(y + 1, x) - at(y - 1, x)
            out[y, x] = math.sqrt(gx * gx + gy * gy + eps)
    return out


def test_gradient_map_matches_eq6_by_hand():
    img = torch.tensor([[1.0, 2.0, 4.0, 7.0], [0.0, 3.0, 3.0, 1.0], [5.0, 5.0, 2.0, 0.0]], dtype=torch.float64)
    out = GradientMap()(img.view(1, 1, 3, 4))[0, 0]
    # Two pixels worked out on paper: (1, 1): gx = 3 - 0, gy = 5 - 2; (0, 0): gx = 2 - 0, gy = 0 - 0.
    assert out[1, 1].item() == pytest.approx(math.sqrt(9 + 9 + 1e-6))
    assert out[0, 0].item() == pytest.approx(math.sqrt(4 + 1e-6))
    torch.testing.assert_close(out, gradient_by_hand(img))


def test_gradient_map_is_per_channel_and_replicate_padding_differs_only_at_the_border():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    out = GradientMap()(img)
    for b in range(2):
        for c in range(3):
            torch.testing.assert_close(out[b, c], gradient_by_hand(img[b, c]))
    rep = GradientMap(padding="replicate")(img)
    torch.testing.assert_close(rep[..., 1:-1, 1:-1], out[..., 1:-1, 1:-1])
    flat = torch.ones(1, 1, 4, 4)
    torch.testing.assert_close(GradientMap(padding="replicate")(flat), torch.full_like(flat, 1e-3))


def test_gradient_map_loads_the_official_buffers_and_has_finite_gradients():
    gm = GradientMap()
    assert set(gm.state_dict()) == {"weight_h", "weight_v"} and count_parameters(gm) == 0
    gm.load_state_dict({"weight_h": gm.weight_h.clone(), "weight_v": gm.weight_v.clone()})
    x = torch.ones(1, 3, 5, 5, requires_grad=True)   # flat inside: gradient 0, kept finite by eps
    gm(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_gradient_map_bad_inputs():
    with pytest.raises(ValueError, match="padding: expected one of"):
        GradientMap(padding="reflect")
    with pytest.raises(ValueError, match=r"x: expected a 4-d tensor of shape \(B, C, H, W\), got shape \(3, 5, 5\)"):
        GradientMap()(torch.rand(3, 5, 5))
    with pytest.raises(TypeError, match="x: expected a floating"):
        GradientMap()(torch.ones(1, 3, 5, 5, dtype=torch.int64))


# -- SFTGradientBranch ---------------------------------------------------------------------------
def restoration_features(b, f, h, w, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(b, f << j, h >> j, w >> j, generator=gen) for j in range(3)]


def test_gradient_branch_parameters_and_names_match_recons_grad():
    branch = SFTGradientBranch()
    assert count_parameters(branch) == 5_296_099
    keys = set(branch.state_dict())
    for key in ("in_layer.0.weight", "in_layer.5.conv2.weight", "inBlock.2.weight", "down_first.0.weight",
                "encoder_first.1.conv1.bias", "encoder_second.2.weight", "decoder_second.1.conv2.weight",
                "decoder_second_up.0.weight", "decoder_first_up.0.bias", "outBlock.1.conv1.weight",
                "recons_output.weight", "condition_scale.2.2.weight", "condition_shift.0.0.bias"):
        assert key in keys, key


@pytest.mark.parametrize("size", [(16, 24), (32, 32), (24, 40)])
def test_gradient_branch_shapes_at_three_scales(size):
    branch = SFTGradientBranch(n_feat=8)
    feats = restoration_features(2, 8, *size)
    alphas, betas, grad = branch(torch.rand(2, 3, *size), feats)
    assert [a.shape for a in alphas] == [f.shape for f in feats] == [b.shape for b in betas]
    assert grad.shape == (2, 3, *size)


def test_gradient_branch_default_width_shapes():
    alphas, _, grad = SFTGradientBranch()(torch.rand(1, 3, 16, 16), restoration_features(1, 32, 16, 16))
    assert [tuple(a.shape[1:]) for a in alphas] == [(32, 16, 16), (64, 8, 8), (128, 4, 4)]
    assert grad.shape == (1, 3, 16, 16)


def test_gradient_branch_gradients_and_compile():
    torch.manual_seed(0)
    branch = SFTGradientBranch(n_feat=4)
    feats = restoration_features(1, 4, 8, 8)
    grad = torch.rand(1, 3, 8, 8)
    alphas, betas, pred = branch(grad, feats)
    loss = pred.square().sum() + sum(sft(f, a, b).square().sum() for f, a, b in zip(feats, alphas, betas))
    assert_grads_reach_every_parameter(branch, loss)
    compiled = torch.compile(branch, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(grad, feats), branch(grad, feats)):
        torch.testing.assert_close(got, want)


def test_gradient_branch_bad_inputs():
    branch = SFTGradientBranch(n_feat=4)
    with pytest.raises(ValueError, match=r"grad: expected H and W divisible by 4 .*got 10x8"):
        branch(torch.rand(1, 3, 10, 8), restoration_features(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"feats\[1\]: .*C=8"):
        branch(torch.rand(1, 3, 8, 8), [torch.rand(1, 4, 8, 8), torch.rand(1, 4, 4, 4), torch.rand(1, 16, 2, 2)])
    with pytest.raises(ValueError, match="feats: expected 3 feature maps"):
        branch(torch.rand(1, 3, 8, 8), restoration_features(1, 4, 8, 8)[:2])
    with pytest.raises(ValueError, match=r"grad: .*C=3"):
        branch(torch.rand(1, 1, 8, 8), restoration_features(1, 4, 8, 8))


def test_sft_is_scale_and_shift_without_broadcasting():
    feat, alpha, beta = torch.randn(3, 2, 4, 4, 5).unbind(0)
    torch.testing.assert_close(sft(feat, alpha, beta), feat * alpha + beta)
    with pytest.raises(ValueError, match=r"alpha: .*C=4"):
        sft(feat, alpha[:, :1], beta)
