"""BSSTNet: official counts and keys, the blocks against oracles written from the spec (Shift-Net's
shifts, the Swin-3D window attention and its shift mask, BFA, the consistency check), the
propagation's flow indexing, the flow refiner's pairing, flows given vs estimated, the official
tiled pipeline, checkpoints, bad inputs."""
import math

import pytest
import torch
import torch.nn.functional as F

from deblurlayers.layers import BlurAwareAlignment
from deblurlayers.models import BSSTNet, bsstnet_loss, load_official, tiled_inference
from deblurlayers.layers import GatedCAB, ShiftBlock, SwinLayer3d, WindowAttention3d
from deblurlayers.layers.swin3d import _shift_mask
from deblurlayers.models.bsstnet import _consistency
from deblurlayers.ops import deform_conv2d, flow_warp
from helpers import count_parameters
from model_cases import BSSTNET_SMALL, clip, manifest, small

RAFT_PARAMETERS = 5_257_536


def random_flows(b, t, h, w, scale=1.5, seed=2):
    gen = torch.Generator().manual_seed(seed)
    return tuple(scale * torch.randn(b, t - 1, 2, h, w, generator=gen) for _ in range(2))


# -- official counts and keys ----------------------------------------------------------------------
def test_parameter_counts():
    facts = manifest("BSST")
    model = BSSTNet()
    uncalled = sum(math.prod(e["shape"]) for e in facts["entries"].values()
                   if not e["used"] and e.get("kind", "parameter") == "parameter")
    assert uncalled == facts["parameters_in_uncalled_modules"] == 8_271_043
    assert count_parameters(model, trainable_only=True) == facts["parameters"] - uncalled == 38_463_754
    assert count_parameters(model) == 38_463_754 + RAFT_PARAMETERS
    assert count_parameters(model.flow_estimator, trainable_only=True) == 0  # frozen
    assert count_parameters(BSSTNet(flow_estimator=None)) == 38_463_754


def official_state():
    facts = manifest("BSST")
    gen = torch.Generator().manual_seed(0)
    return facts, {k: torch.randn(e["shape"], generator=gen) if e["shape"] else torch.tensor(3.0)
                   for k, e in facts["entries"].items()}


# official key -> where the library keeps it (written from the manifest, independent of the converter)
SPOT_CHECKS = {
    "reconstruction.main.1.weight": "reconstruction.conv.weight",
    "reconstruction.main.7.bias": "reconstruction.norm_out.bias",
    "reconstruction.main.5.1.residual_group.blocks.1.attn.relative_position_bias_table":
        "reconstruction.blocks.1.residual_group.blocks.1.attn.relative_position_bias_table",
    "reconstruction.main.5.0.linear.weight": "reconstruction.blocks.0.linear.weight",
    "cabattn.0.norm.weight": "cabattn.0.norm.body.weight",
    "cabattn.0.conv1.weight": "cabattn.0.conv1.weight",
    "backbone.forward_2.2.body.3.conv_1.weight": "backbone.forward_2.2.body.3.conv_1.weight",
    "decoder_level1_1.encoder_level1_3.0.norm.bias": "decoder_level1_1.encoder_level1_3.0.norm.body.bias",
    "deform_align.backward_2.conv_offset.6.weight": "deform_align.backward_2.conv_offset.6.weight",
    "blur_motion_refine.feat_prop_module.deform_align.forward_.conv_offset.0.weight":
        "blur_motion_refine.feat_prop_module.deform_align.forward_.conv_offset.0.weight",
    "transsqattn.transformer.3.mlp.fc2.1.weight": "transsqattn.transformer.3.mlp.fc2.1.weight",
    "up21.up.1.weight": "up21.up.1.weight",
    "upsample0.upsample_conv.bias": "upsample0.upsample_conv.bias",
}


def test_official_key_manifest_loads_strictly():
    facts, state = official_state()
    model = BSSTNet(flow_estimator=None)
    result = load_official(model, {"params": state})
    assert result.missing_keys == [] and result.unexpected_keys == []
    # discarded: exactly the never-called modules and the geometry buffers
    expected = {k for k, e in facts["entries"].items() if not e["used"] or e.get("kind") == "buffer"}
    assert set(result.discarded_keys) == expected
    assert len(model.state_dict()) == facts["state_dict_entries"] - len(expected)
    own = model.state_dict()
    for official, ours in SPOT_CHECKS.items():
        assert torch.equal(own[ours], state[official]), official
    total = sum(v.double().sum() for k, v in state.items() if k not in expected)
    assert torch.isclose(sum(v.double().sum() for v in own.values()), total)


def test_flow_estimator_is_not_part_of_the_state_dict(tmp_path):
    model = small("bsstnet")
    state = model.state_dict()
    assert not [k for k in state if k.startswith("flow_estimator.")]
    other = small("bsstnet", flow_iters=1)
    other.load_state_dict(state, strict=True)
    # a BasicSR checkpoint of the network round-trips through load_official
    torch.manual_seed(5)
    for p in model.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    torch.save({"params": model.state_dict()}, tmp_path / "net_g.pth")
    fresh = small("bsstnet")
    assert load_official(fresh, tmp_path / "net_g.pth") == ([], [], {})
    fresh.flow_estimator.load_state_dict(model.flow_estimator.state_dict())
    x = clip("bsstnet", frames=3, height=16, width=16, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), model.eval()(x))


def test_flow_estimator_stays_frozen_in_eval_mode():
    model = small("bsstnet").train()
    assert model.training and not model.flow_estimator.training
    assert not any(p.requires_grad for p in model.flow_estimator.parameters())


# -- blocks against oracles ---------------------------------------------------------------------------
# Shift-Net's spatial shifts (dy, dx) in pixels, as the official slicing moves them:
# out[y, x] = in[y - dy, x - dx] (zeros where that falls outside).
OFFICIAL_SHIFTS = [(8, 8), (8, 4), (8, 0), (8, -4), (8, -8), (-8, 8), (-8, 4), (-8, 0), (-8, -4), (-8, -8),
                   (4, 8), (4, -8), (0, 8), (0, -8), (-4, 8), (-4, -8),
                   (4, 4), (4, 0), (4, -4), (0, 4), (0, -4), (-4, 4), (-4, 0), (-4, -4)]


def official_shift(clip, number, backward):
    """One clip (T, C, H, W): the official channel_shift with the frames as its batch."""
    t, c, h, w = clip.shape
    rolled = clip.reshape(1, t * c, h, w).roll(-(c // 2) if backward else c // 2, 1).reshape(t, c, h, w)
    part = rolled[:, -8 * number:] if backward else rolled[:, :8 * number]
    n2 = (number - 1) // 2
    sizes = [n2] * 16 + [number - 2 * n2] * 8
    moved = torch.zeros_like(part)
    start = 0
    for size, (dy, dx) in zip(sizes, OFFICIAL_SHIFTS):
        for y in range(h):
            for x in range(w):
                if 0 <= y - dy < h and 0 <= x - dx < w:
                    moved[:, start:start + size, y, x] = part[:, start:start + size, y - dy, x - dx]
        start += size
    return torch.cat((rolled, moved), dim=1)


@pytest.mark.parametrize("channels", [64, 48, 16])
@pytest.mark.parametrize("backward", [False, True])
def test_shift_matches_the_official_channel_and_spatial_shifts(channels, backward):
    block = ShiftBlock(channels)
    x = torch.randn(2, 3, channels, 11, 13)
    out = block.shift(x, backward)
    for b in range(2):  # every clip on its own: the temporal roll wraps within the clip
        torch.testing.assert_close(out[b], official_shift(x[b], channels // 16, backward), rtol=0, atol=0)


def official_shift_mask(size, window, shift):
    """Video Swin's compute_mask: label the slices, -100 between different labels of a window."""
    img = torch.zeros(*size)
    cnt = 0
    for d in (slice(-window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for h in (slice(-window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            for w in (slice(-window[2]), slice(-window[2], -shift[2]), slice(-shift[2], None)):
                img[d, h, w] = cnt
                cnt += 1
    wd, wh, ww = window
    windows = img.reshape(size[0] // wd, wd, size[1] // wh, wh, size[2] // ww, ww).permute(0, 2, 4, 1, 3, 5)
    windows = windows.reshape(-1, wd * wh * ww)
    diff = windows[:, None, :] - windows[:, :, None]
    return diff.ne(0).float() * -100.0


@pytest.mark.parametrize("size,window,shift", [((4, 16, 16), (2, 8, 8), (1, 4, 4)),
                                               ((2, 16, 24), (2, 8, 8), (0, 4, 4)),
                                               ((6, 8, 16), (2, 8, 8), (1, 0, 4))])
def test_swin_shift_mask_matches_video_swin(size, window, shift):
    torch.testing.assert_close(_shift_mask(size, window, shift, "cpu"), official_shift_mask(size, window, shift))


def test_window_attention_is_multi_head_attention_with_the_relative_bias():
    torch.manual_seed(0)
    attn = WindowAttention3d(12, (2, 3, 3), num_heads=3)
    attn.relative_position_bias_table.data.normal_()
    coords = [(d, h, w) for d in range(2) for h in range(3) for w in range(3)]
    x = torch.randn(2, 1, 18, 12)
    q, k, v = attn.qkv_self(x[:, 0]).reshape(2, 18, 3, 3, 4).permute(2, 0, 3, 1, 4)
    bias = torch.empty(3, 18, 18)
    for i, (di, hi, wi) in enumerate(coords):
        for j, (dj, hj, wj) in enumerate(coords):
            index = ((di - dj + 1) * 5 + (hi - hj + 2)) * 5 + (wi - wj + 2)
            bias[:, i, j] = attn.relative_position_bias_table[index]
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0 + bias, dim=-1)
    expected = attn.proj((weights @ v).permute(0, 2, 1, 3).reshape(2, 18, 12))
    torch.testing.assert_close(attn(x)[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_swin_layer_attends_within_windows_and_shifted_regions():
    torch.manual_seed(0)
    plain, shifted = SwinLayer3d(8, 2, (2, 4, 4), (0, 0, 0)), SwinLayer3d(8, 2, (2, 4, 4), (1, 2, 2))
    x = torch.randn(1, 4, 8, 8, 8)
    # unshifted: windows are fixed, so rolling by whole windows commutes with the layer
    rolled = torch.roll(x, shifts=(2, 4, 4), dims=(1, 2, 3))
    torch.testing.assert_close(plain(rolled), torch.roll(plain(x), shifts=(2, 4, 4), dims=(1, 2, 3)),
                               rtol=1e-5, atol=1e-5)

    def reach(layer, token):
        x.requires_grad_(True)
        layer(x)[(0, *token)].sum().backward()
        found = {tuple(i.tolist()) for i in (x.grad[0].abs().sum(-1) > 1e-12).nonzero()}
        x.grad = None
        return found

    assert reach(plain, (3, 7, 7)) == {(d, h, w) for d in (2, 3) for h in range(4, 8) for w in range(4, 8)}
    # shifted by (1, 2, 2): the last token's window wraps around to d = 0, h, w in {0, 1}, but the
    # mask keeps it to its own region, the tokens that did not wrap
    assert reach(shifted, (3, 7, 7)) == {(3, h, w) for h in (6, 7) for w in (6, 7)}
    # inputs not a multiple of the window are padded after the norm and cropped back
    odd = torch.randn(1, 3, 6, 7, 8)
    assert shifted(odd).shape == odd.shape and shifted(odd).isfinite().all()


def test_gated_cab_is_the_identity_at_initialisation():
    x = torch.randn(2, 20, 9, 9)
    torch.testing.assert_close(GatedCAB(12, 5, extra_channels=8)(x), x[:, :12])
    torch.testing.assert_close(GatedCAB(12, 3)(x[:, :12]), x[:, :12])


def test_blur_aware_alignment_by_hand():
    torch.manual_seed(0)
    c, g = 8, 4
    align = BlurAwareAlignment(c, deformable_groups=g)
    for p in align.conv_offset.parameters():
        p.data.normal_(0, 0.05)
    feats, cond = torch.randn(2, 2 * c, 6, 7), torch.randn(2, 3 * c + 5, 6, 7)
    flows, sharp = torch.randn(2, 2, 2, 6, 7), torch.rand(2, 2, 6, 7)
    out = align(feats, cond, flows, sharp)
    raw = align.conv_offset(torch.cat((cond, flows[:, 0], flows[:, 1]), dim=1))
    o1, o2, m = raw.chunk(3, dim=1)
    residual = 5 * torch.tanh(torch.cat((o1, o2), dim=1))
    per_half = g // 2 * 9
    guide = torch.cat([flows[:, f].flip(1).repeat(1, per_half, 1, 1) for f in range(2)], dim=1)
    bias = torch.cat([(0.1 * (2 * sharp[:, f:f + 1] - 1)).expand(-1, per_half, -1, -1) for f in range(2)], dim=1)
    expected = deform_conv2d(feats, residual + guide, align.weight, align.bias, padding=(1, 1),
                             mask=torch.sigmoid(m + bias))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_forward_backward_consistency_by_hand():
    zero = torch.zeros(1, 2, 5, 6)
    assert _consistency(zero, zero).eq(1).all()
    right = torch.zeros(1, 2, 5, 6)
    right[:, 0] = 1.0
    # inverse flows agree where the target is inside; a flow that goes the same way both times fails
    assert _consistency(right, -right)[..., :-1].eq(1).all()
    assert _consistency(right, right).eq(0).all()
    flow, back = torch.randn(1, 2, 5, 6), torch.randn(1, 2, 5, 6)
    warped = flow_warp(back, flow)
    expected = ((flow + warped).square().sum(1, keepdim=True)
                < 0.01 * (flow.square().sum(1, keepdim=True) + warped.square().sum(1, keepdim=True)) + 0.5)
    torch.testing.assert_close(_consistency(flow, back), expected.float())


# -- data flow --------------------------------------------------------------------------------------
def test_propagation_uses_the_official_flow_indices():
    model = small("bsstnet")
    b, t, h, w = 1, 5, 32, 32
    to_next, to_prev = random_flows(b, t, h // 4, w // 4)
    seen = {}
    for branch in ("backward_1", "forward_1"):
        seen[branch] = []
        model.deform_align[branch].register_forward_hook(
            lambda mod, args, out, branch=branch: seen[branch].append(args[2].detach().clone()))
    with torch.no_grad():
        model(clip("bsstnet", b, t, h, w), to_next, to_prev)  # a fresh refiner returns its input flows
    back, fwd = seen["backward_1"], seen["forward_1"]
    assert len(back) == len(fwd) == t - 1
    # backward: t = 3, 2, ...: first order O[t->t+1], second order O[t->t+1] + warp(O[t+1->t+2])
    torch.testing.assert_close(back[0][:, 0], to_next[:, 3])
    assert back[0][:, 1].eq(0).all()
    torch.testing.assert_close(back[1][:, 0], to_next[:, 2])
    torch.testing.assert_close(back[1][:, 1], to_next[:, 2] + flow_warp(to_next[:, 3], to_next[:, 2]))
    # forward: t = 1, 2, ...: O[t->t-1], then O[t->t-1] + warp(O[t-1->t-2])
    torch.testing.assert_close(fwd[0][:, 0], to_prev[:, 0])
    torch.testing.assert_close(fwd[1][:, 1], to_prev[:, 1] + flow_warp(to_prev[:, 0], to_prev[:, 1]))


def test_flow_refiner_pairs_each_flow_with_the_official_blur_frame():
    model = small("bsstnet")
    calls = []
    model.blur_motion_refine.register_forward_hook(lambda mod, args, out: calls.append(args))
    blur = torch.arange(5.0).view(1, 5, 1, 1, 1).expand(1, 5, 1, 8, 8)
    to_next, to_prev = random_flows(1, 5, 8, 8)
    refined_next, refined_prev = model.blur_motion_refine.refine_both(blur, to_next, to_prev)
    (blur_a, flows_a), (blur_b, flows_b) = calls
    assert blur_a[0, :, 0, 0, 0].tolist() == [1, 2, 3, 4] and torch.equal(flows_a, to_next)
    assert blur_b[0, :, 0, 0, 0].tolist() == [3, 2, 1, 0] and torch.equal(flows_b, to_prev.flip(1))
    # zero-initialised last conv: a fresh refiner returns its input
    torch.testing.assert_close(refined_next, to_next)
    torch.testing.assert_close(refined_prev, to_prev)


def test_full_size_model_any_batch_odd_size_and_frames_not_divisible_by_four():
    torch.manual_seed(0)
    model = BSSTNet(flow_iters=2).eval()
    x = clip("bsstnet", batch=2, frames=5, height=37, width=45)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape and out.isfinite().all()


def test_estimated_flows_are_the_official_recipe_and_equal_given_ones():
    model = small("bsstnet").eval()
    x = clip("bsstnet", batch=1, frames=3, height=32, width=48)
    to_next, to_prev = model.estimate_flows(x)
    half = F.interpolate(x[0], scale_factor=0.5, mode="bilinear", align_corners=False)
    for i in range(2):
        for flow, (a, c) in ((to_next, (i, i + 1)), (to_prev, (i + 1, i))):
            full = model.flow_estimator(half[a:a + 1], half[c:c + 1], iters=BSSTNET_SMALL["flow_iters"])
            torch.testing.assert_close(flow[:, i], F.interpolate(full, scale_factor=0.5, mode="bilinear") / 2,
                                       rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x, to_next, to_prev))
    # pairs in several estimator calls give the same flows
    torch.testing.assert_close(model.estimate_flows(x, pairs_per_call=1)[1], to_prev, rtol=1e-5, atol=1e-5)


def test_batch_elements_are_independent():
    model = small("bsstnet").eval()
    x = clip("bsstnet", batch=2, frames=4, height=16, width=32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[1:], model(x[1:]), rtol=1e-4, atol=1e-5)


def test_a_static_clip_is_finite():
    model = small("bsstnet").eval()
    x = clip("bsstnet", frames=4, height=16, width=16, batch=1)[:, :1].expand(1, 4, 3, 16, 16)
    zero = torch.zeros(1, 3, 2, 4, 4)
    with torch.no_grad():
        assert model(x, zero, zero).isfinite().all()


def test_outside_tokens_option_reaches_every_bsst_layer():
    model = small("bsstnet", outside_tokens="masked")
    assert {layer.attention.outside_tokens for layer in model.transsqattn.transformer} == {"masked"}
    assert {layer.attention.outside_tokens for layer in small("bsstnet").transsqattn.transformer} == {"zeros"}


def test_tiling_equals_the_untiled_model_where_one_tile_covers_the_frame():
    model = small("bsstnet").eval()
    x = clip("bsstnet", frames=4, height=40, width=52, batch=1)
    with torch.no_grad():
        whole = model(x)
        torch.testing.assert_close(tiled_inference(model, x, tile=64, overlap=16), whole)
        torch.testing.assert_close(model.restore(x, tile=256, frames_per_clip=None), whole)
        tiled = model.restore(x, tile=32, overlap=16, frames_per_clip=3, frame_overlap=2)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the official AMP test
            amp = model.restore(x, tile=32, overlap=16)
        assert model.restore(x[:0]).shape == (0, 4, 3, 40, 52)
    assert tiled.shape == amp.shape == x.shape and tiled.isfinite().all() and amp.isfinite().all()


def test_restore_crops_the_whole_frame_flows_for_each_tile():
    model = small("bsstnet").eval()
    x = clip("bsstnet", frames=3, height=48, width=48, batch=1)
    seen = []
    original = model.forward

    def spy(clip, flows_to_next=None, flows_to_prev=None):
        seen.append((flows_to_next, clip.shape))
        return original(clip, flows_to_next, flows_to_prev)

    model.forward = spy
    with torch.no_grad():
        model.restore(x, tile=32, overlap=16, frames_per_clip=None)
    to_next, _ = model.estimate_flows(x)
    assert len(seen) == 4
    # tiles start at 0 and 16 px: their flows are the crops at 0 and 4 on the 1/4 grid
    assert torch.equal(seen[-1][0], to_next[..., 4:12, 4:12]) and seen[-1][1][-2:] == (32, 32)


def test_loss_is_the_mean_absolute_error():
    a, b = torch.rand(2, 3, 3, 8, 8), torch.rand(2, 3, 3, 8, 8)
    torch.testing.assert_close(bsstnet_loss(a, b), (a - b).abs().mean())
    with pytest.raises(ValueError, match="sharp: expected"):
        bsstnet_loss(a, b[:, :2])


# -- bad inputs ----------------------------------------------------------------------------------------
class ConstantFlow(torch.nn.Module):
    """A stand-in estimator with RAFT's call: records its inputs, returns 2 px to the right."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, image1, image2, iters=20):
        self.calls.append((image1.shape, iters, float(image1.min()), float(image1.max())))
        flow = torch.zeros(image1.shape[0], 2, *image1.shape[-2:])
        flow[:, 0] = 2.0 * self.scale
        return flow


def test_any_module_with_the_estimators_call_replaces_raft():
    estimator = ConstantFlow()
    model = small("bsstnet", flow_estimator=estimator, flow_iters=3)
    assert not estimator.scale.requires_grad and not [k for k in model.state_dict() if "scale" in k]
    x = clip("bsstnet", batch=1, frames=3, height=32, width=48)
    to_next, to_prev = model.estimate_flows(x)
    # both directions of the 2 pairs in one call, on x0.5 frames in [0, 1]
    (shape, iters, low, high), = estimator.calls
    assert shape == (4, 3, 16, 24) and iters == 3 and 0 <= low and high <= 1
    # 2 px at x0.5 is 1 px on the 1/4 grid
    assert to_next.shape == (1, 2, 2, 8, 12) and torch.allclose(to_next[:, :, 0], torch.ones(()))


def test_a_float64_model_takes_float64_clips():
    model = small("bsstnet").eval()
    x = clip("bsstnet", batch=1, frames=3, height=32, width=32)
    with torch.no_grad():
        single = model(x)
        double = model.double()(x.double())
    assert double.dtype == torch.float64
    torch.testing.assert_close(double, single.double(), rtol=1e-4, atol=1e-4)


def test_restore_refuses_non_finite_frames_when_asked():
    model = small("bsstnet").eval()
    x = clip("bsstnet", batch=1, frames=3, height=32, width=32)
    x[0, 1, 0, 4, 4] = float("inf")
    with pytest.raises(ValueError, match=r"frames: 1 NaN or infinite values, in frame\(s\) \[1\]"):
        model.restore(x, tile=32, overlap=0, check_finite=True)
