"""DeformableAttention, the STDA layers (MMA, MSA) and the flow helpers they use."""
import pytest
import torch
import torch.nn.functional as F

from deblurlayers import STDA, DeformableAttention, MultiToMultiAttention, MultiToSingleAttention
from deblurlayers.ops import all_pairs_flows, compose_flows, flow_warp, masked_flow_warp
from helpers import count_parameters


def randomise_zero_init(module):
    """Deformable-DETR starts with zero offset/weight convolutions, which block the gradient to the
    query path; perturb them so every parameter's gradient can be checked."""
    for name, p in module.named_parameters():
        if "sampling_offsets.weight" in name or "attention_weights" in name:
            with torch.no_grad():
                p.normal_(0, 0.05)


def identity_conv(conv):
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        c = conv.weight.shape[0]
        k = conv.weight.shape[-1]
        conv.weight[torch.arange(c), torch.arange(c), k // 2, k // 2] = 1.0


# ----------------------------------------------------------------------------- DeformableAttention

@pytest.mark.parametrize("mode", ["multi_to_multi", "multi_to_single"])
@pytest.mark.parametrize("with_flows", [True, False])
def test_output_shapes(mode, with_flows):
    attn = DeformableAttention(embed_dim=16, num_heads=2, num_frames=3, num_points=2, query_dim=8, mode=mode)
    b, t, h, w = 2, 3, 5, 7
    value = torch.randn(b, t, 16, h, w)
    if mode == "multi_to_multi":
        query, flows, want = torch.randn(b, t, 8, h, w), torch.randn(b, t, t, 2, h, w), (b, t, 16, h, w)
    else:
        query, flows, want = torch.randn(b, 8, h, w), torch.randn(b, t, 2, h, w), (b, 16, h, w)
    assert attn(query, value, flows if with_flows else None).shape == want


def test_deformable_detr_initialisation():
    attn = DeformableAttention(embed_dim=8, num_heads=4, num_frames=3, num_points=5)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.weight) == 0 and torch.count_nonzero(attn.attention_weights.bias) == 0
    bias = attn.sampling_offsets.bias.view(4, 3, 5, 2)
    directions = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # heads at 0, 90, 180, 270 deg
    for m in range(4):
        for k in range(5):
            torch.testing.assert_close(bias[m, :, k], (directions[m] * (k + 1)).expand(3, 2), atol=1e-6, rtol=0)
    # 8 heads: the diagonal directions are scaled onto the unit square, (1, 1) not (0.71, 0.71).
    attn8 = DeformableAttention(embed_dim=8, num_heads=8, num_frames=1, num_points=1)
    torch.testing.assert_close(attn8.sampling_offsets.bias.view(8, 2)[1], torch.tensor([1.0, 1.0]))
    assert attn.value_proj.bias.abs().sum() == 0 and attn.output_proj.bias.abs().sum() == 0


def pixel_space_oracle(attn, query, value, flows):
    """The layer written out in pixel space with flow_warp (independent of ms_deform_attn's
    normalised-coordinate convention): sum over frames and points of softmax weight x the head's
    values sampled at p + flow + offset with zero padding."""
    b, t, c, h, w = value.shape
    m, p = attn.num_heads, attn.num_points
    d = c // m
    v = attn.value_proj(value.flatten(0, 1)).view(b, t, m, d, h, w)
    q = query.view(b * t, -1, h, w) if query.dim() == 5 else query
    frames_q = q.shape[0] // b
    offsets = attn.sampling_offsets(q).view(b, frames_q, m, t, p, 2, h, w)
    weights = attn.attention_weights(q).view(b, frames_q, m, t * p, h, w).softmax(3).view(b, frames_q, m, t, p, h, w)
    flows = flows.view(b, frames_q, t, 2, h, w)
    out = torch.zeros(b, frames_q, m, d, h, w, dtype=value.dtype)
    for f in range(frames_q):
        for head in range(m):
            for l in range(t):
                for k in range(p):
                    displacement = flows[:, f, l] + offsets[:, f, head, l, k]
                    sampled = flow_warp(v[:, l, head], displacement, padding_mode="zeros")
                    out[:, f, head] += weights[:, f, head, l, k].unsqueeze(1) * sampled
    out = attn.output_proj(out.view(b * frames_q, c, h, w))
    return out.view(b, frames_q, c, h, w) if query.dim() == 5 else out


@pytest.mark.parametrize("mode", ["multi_to_multi", "multi_to_single"])
def test_matches_pixel_space_oracle(mode):
    torch.manual_seed(1)
    attn = DeformableAttention(embed_dim=8, num_heads=2, num_frames=3, num_points=3, mode=mode).double()
    randomise_zero_init(attn)
    with torch.no_grad():
        attn.sampling_offsets.bias.mul_(1.7)  # fractional, partly outside the 6x9 maps
    value = torch.randn(1, 3, 8, 6, 9, dtype=torch.float64)
    if mode == "multi_to_multi":
        query, flows = torch.randn(1, 3, 8, 6, 9, dtype=torch.float64), torch.randn(1, 3, 3, 2, 6, 9, dtype=torch.float64) * 2
    else:
        query, flows = torch.randn(1, 8, 6, 9, dtype=torch.float64), torch.randn(1, 3, 2, 6, 9, dtype=torch.float64) * 2
    torch.testing.assert_close(attn(query, value, flows), pixel_space_oracle(attn, query, value, flows))


def test_translating_flow_reads_the_translated_pixels():
    """Frames that are the scene shifted by s_l, flows O[c->l] = s_l: every point of every frame
    reads scene(p), so with zero learned offsets the output is the scene (inside the overlap)."""
    h, w, c = 12, 16, 4
    attn = DeformableAttention(embed_dim=c, num_heads=2, num_frames=3, num_points=2, mode="multi_to_single",
                               kernel_size=1).double()
    identity_conv(attn.value_proj)
    identity_conv(attn.output_proj)
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()
    scene = torch.randn(1, c, h, w, dtype=torch.float64)
    shifts = [(2, -1), (0, 0), (-3, 2)]  # (dx, dy) of frames 0, 1 (centre), 2
    frames = torch.stack([torch.roll(scene, shifts=(dy, dx), dims=(2, 3)) for dx, dy in shifts], 1)
    flows = torch.tensor(shifts, dtype=torch.float64).view(1, 3, 2, 1, 1).expand(1, 3, 2, h, w)
    out = attn(torch.randn(1, c, h, w, dtype=torch.float64), frames, flows)
    inner = (slice(None), slice(None), slice(2, h - 2), slice(3, w - 3))  # away from the rolled-in borders
    torch.testing.assert_close(out[inner], scene[inner])
    without_flows = attn(torch.randn(1, c, h, w, dtype=torch.float64), frames, None)
    assert (without_flows[inner] - scene[inner]).abs().max() > 0.1


@pytest.mark.parametrize("mode", ["multi_to_multi", "multi_to_single"])
def test_gradients_reach_every_parameter_and_input(mode):
    attn = DeformableAttention(embed_dim=8, num_heads=2, num_frames=2, num_points=2, query_dim=6, mode=mode)
    randomise_zero_init(attn)
    value = torch.randn(1, 2, 8, 5, 6, requires_grad=True)
    shape = (1, 2, 6, 5, 6) if mode == "multi_to_multi" else (1, 6, 5, 6)
    fshape = (1, 2, 2, 2, 5, 6) if mode == "multi_to_multi" else (1, 2, 2, 5, 6)
    query = torch.randn(*shape, requires_grad=True)
    flows = torch.randn(*fshape, requires_grad=True)
    attn(query, value, flows).square().sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(t.grad.abs().sum() > 0 for t in (value, query, flows))


def test_compile_fullgraph():
    attn = DeformableAttention(embed_dim=8, num_heads=2, num_frames=3, num_points=2)
    randomise_zero_init(attn)
    x, flows = torch.randn(1, 3, 8, 6, 7), torch.randn(1, 3, 3, 2, 6, 7)
    compiled = torch.compile(attn, fullgraph=True, backend="aot_eager")
    out = compiled(x, x, flows)
    torch.testing.assert_close(out, attn(x, x, flows))
    out.sum().backward()
    assert attn.sampling_offsets.weight.grad.abs().sum() > 0


def test_bad_inputs():
    attn = DeformableAttention(embed_dim=8, num_heads=2, num_frames=3, num_points=2)
    x = torch.randn(1, 3, 8, 6, 7)
    with pytest.raises(ValueError, match=r"flows: expected shape \(B=1, Tq=3, T=3, 2, h=6, w=7\) with h=6, "
                                         r"got shape \(1, 3, 3, 2, 5, 7\)"):
        attn(x, x, torch.zeros(1, 3, 3, 2, 5, 7))
    with pytest.raises(ValueError, match=r"value: expected shape \(B, T=3, C=8, h, w\) with T=3"):
        attn(x, x[:, :2])
    with pytest.raises(ValueError, match=r"query: expected shape \(B=1, T=3, Cq=8, h=6, w=7\) with Cq=8"):
        attn(x[:, :, :4], x)
    single = DeformableAttention(embed_dim=8, num_heads=2, num_frames=3, num_points=2, mode="multi_to_single")
    with pytest.raises(ValueError, match=r"query: expected a 4-d tensor of shape \(B=1, Cq=8, h=6, w=7\)"):
        single(x, x)
    with pytest.raises(ValueError, match=r"flows: expected a 5-d tensor of shape \(B=1, T=3, 2, h=6, w=7\)"):
        single(x[:, 0], x, torch.zeros(1, 3, 3, 2, 6, 7))
    with pytest.raises(ValueError, match="mode: expected one of"):
        DeformableAttention(mode="centre")
    with pytest.raises(ValueError, match="num_heads: expected a positive divisor of embed_dim=10, got 4"):
        DeformableAttention(embed_dim=10, num_heads=4)


# ----------------------------------------------------------------------------- flow helpers

def test_masked_flow_warp_zeroes_samples_off_the_map():
    x = torch.randn(1, 3, 6, 8)
    flow = torch.zeros(1, 2, 6, 8)
    flow[:, 0, :, :4] = -10.0  # left half reads far off the map
    out = masked_flow_warp(x, flow)
    assert torch.count_nonzero(out[..., :4]) == 0
    torch.testing.assert_close(out[..., 4:], x[..., 4:])
    torch.testing.assert_close(flow_warp(x, flow, padding_mode="border")[..., :4], x[..., :1].expand(-1, -1, -1, 4))


def test_compose_constant_flows_adds_them():
    a = torch.tensor([1.0, -2.0]).view(1, 2, 1, 1).expand(1, 2, 8, 10)
    b = torch.tensor([0.5, 3.0]).view(1, 2, 1, 1).expand(1, 2, 8, 10)
    for masked in (True, False):
        composed = compose_flows(a, b, masked)
        torch.testing.assert_close(composed[..., 2:5, 1:8], (a + b)[..., 2:5, 1:8])
    # Off the map (rows shifted 2 up leave the first two rows' samples outside): only the masked one drops b.
    torch.testing.assert_close(compose_flows(a, b, True)[..., 0, 3], a[..., 0, 3])
    torch.testing.assert_close(compose_flows(a, b, False)[..., 0, 3], (a + b)[..., 0, 3])


def test_all_pairs_flows_is_stdans_table():
    torch.manual_seed(3)
    o01, o12, o10, o21 = (torch.randn(2, 2, 6, 7) for _ in range(4))
    table = all_pairs_flows(torch.stack((o01, o12), 1), torch.stack((o10, o21), 1))
    zero = torch.zeros_like(o01)
    want = [[zero, o01, o01 + masked_flow_warp(o12, o01)],
            [o10, zero, o12],
            [o21 + masked_flow_warp(o10, o21), o21, zero]]
    for t in range(3):
        for l in range(3):
            torch.testing.assert_close(table[:, t, l], want[t][l])


def test_all_pairs_flows_chains_outward_for_longer_clips():
    flows_next = torch.ones(1, 4, 2, 8, 8) * torch.tensor([0.25, 0.0]).view(1, 1, 2, 1, 1)
    table = all_pairs_flows(flows_next, -flows_next)
    for t in range(5):
        for l in range(5):
            torch.testing.assert_close(table[0, t, l, 0, 3, 3], torch.tensor(0.25 * (l - t)))


# ----------------------------------------------------------------------------- STDA layers

def test_parameter_counts_and_names_match_official():
    mma, msa = MultiToMultiAttention(), MultiToSingleAttention()
    assert count_parameters(mma) == 4_066_096
    assert count_parameters(msa) == 5_064_112
    shapes = {k: tuple(v.shape) for k, v in msa.state_dict().items() if k.endswith("weight")}
    assert shapes == {
        "defor_attn.sampling_offsets.weight": (288, 384, 3, 3), "defor_attn.attention_weights.weight": (144, 384, 3, 3),
        "defor_attn.value_proj.weight": (128, 128, 3, 3), "defor_attn.output_proj.weight": (128, 128, 3, 3),
        "feed_forward.weight": (128, 128, 3, 3), "emb_qk.weight": (384, 388, 3, 3), "emb_v.weight": (384, 384, 3, 3),
        "feedforward.0.weight": (128, 256, 3, 3), "feedforward.2.weight": (128, 128, 3, 3),
        "fusion.0.weight": (128, 128, 1, 1)}
    assert tuple(mma.state_dict()["emb_qk.weight"].shape) == (384, 392, 3, 3)
    assert tuple(mma.state_dict()["defor_attn.sampling_offsets.weight"].shape) == (288, 128, 3, 3)
    assert "fusion.0.weight" not in mma.state_dict()
    stda = STDA()
    assert {k.split(".")[0] for k in stda.state_dict()} == {"MMA", "MSA"}
    assert count_parameters(stda) == 4_066_096 + 5_064_112


def clip(b=1, c=8, h=6, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, c, h, w, generator=g)
    return x, torch.randn(b, 2, 2, h, w, generator=g), torch.randn(b, 2, 2, h, w, generator=g)


def capture_inputs(module, names):
    seen = {}
    for name in names:
        def hook(mod, args, name=name):
            seen[name] = args
        getattr(module, name).register_forward_pre_hook(hook)
    return seen


def test_mma_wiring_follows_the_official_code():
    """emb_qk sees [W0, F1, W2, O01, O12, O10, O21]; the attention gets STDAN's flow table."""
    mma = MultiToMultiAttention(channels=8, num_heads=2, num_points=2)
    seen = capture_inputs(mma, ["emb_qk", "emb_v", "defor_attn"])
    x, nxt, prv = clip()
    out = mma(x, x, nxt, prv)
    assert out.shape == x.shape
    o01, o12, o10, o21 = nxt[:, 0], nxt[:, 1], prv[:, 0], prv[:, 1]
    want = torch.cat((flow_warp(x[:, 0], o10, padding_mode="border"), x[:, 1],
                      flow_warp(x[:, 2], o12, padding_mode="border"), o01, o12, o10, o21), 1)
    torch.testing.assert_close(seen["emb_qk"][0], want)
    torch.testing.assert_close(seen["emb_v"][0], x.flatten(1, 2))
    query, value, flows = seen["defor_attn"]
    torch.testing.assert_close(query, F.leaky_relu(mma.emb_qk(want), 0.1).view_as(x))
    torch.testing.assert_close(flows, all_pairs_flows(nxt, prv, masked=True))
    torch.testing.assert_close(flows[:, 0, 2], o01 + masked_flow_warp(o12, o01))


def test_msa_wiring_follows_the_official_code():
    """emb_qk sees [W0, F1, W2, O12, O10]; base offsets are O[1->0], 0, O[1->2]; 1x1 fusion last."""
    msa = MultiToSingleAttention(channels=8, num_heads=2, num_points=2)
    seen = capture_inputs(msa, ["emb_qk", "defor_attn", "feedforward", "fusion"])
    x, nxt, prv = clip()
    src = torch.randn_like(x)
    out = msa(x, src, nxt, prv)
    assert out.shape == (1, 8, 6, 7)
    want = torch.cat((flow_warp(x[:, 0], prv[:, 0], padding_mode="border"), x[:, 1],
                      flow_warp(x[:, 2], nxt[:, 1], padding_mode="border"), nxt[:, 1], prv[:, 0]), 1)
    torch.testing.assert_close(seen["emb_qk"][0], want)
    _, _, flows = seen["defor_attn"]
    torch.testing.assert_close(flows, torch.stack((prv[:, 0], torch.zeros_like(prv[:, 0]), nxt[:, 1]), 1))
    ffn_in = seen["feedforward"][0]
    torch.testing.assert_close(ffn_in[:, 8:], src[:, 1])  # the second half is the encoder's centre frame
    fused_in = seen["fusion"][0]
    torch.testing.assert_close(out, F.leaky_relu(msa.fusion[0](fused_in), 0.1))


def test_stda_gradients_reach_every_parameter():
    stda = STDA(channels=8, num_heads=2, num_points=2)
    randomise_zero_init(stda)
    x, nxt, prv = clip()
    x.requires_grad_()
    stda(x, nxt, prv).square().sum().backward()
    for name, p in stda.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_stda_compile_fullgraph():
    stda = STDA(channels=8, num_heads=2, num_points=2)
    randomise_zero_init(stda)
    x, nxt, prv = clip()
    compiled = torch.compile(stda, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, nxt, prv), stda(x, nxt, prv))


def test_stda_batch_elements_are_independent():
    stda = STDA(channels=8, num_heads=2, num_points=2)
    randomise_zero_init(stda)
    x, nxt, prv = clip(b=3)
    both = stda(x, nxt, prv)
    torch.testing.assert_close(both[1:2], stda(x[1:2], nxt[1:2], prv[1:2]))


def test_stda_bad_inputs():
    stda = STDA(channels=8, num_heads=2, num_points=2)
    x, nxt, prv = clip()
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T=3, C=8, h, w\) with T=3, got shape \(1, 5, 8, 6, 7\)"):
        stda(torch.randn(1, 5, 8, 6, 7), nxt, prv)
    with pytest.raises(ValueError, match=r"flows_to_next: expected shape \(B=1, Tm1=2, 2, h=6, w=7\) with h=6"):
        stda(x, torch.randn(1, 2, 2, 3, 7), prv)
    with pytest.raises(ValueError, match=r"flows_to_prev: expected shape \(B=1, Tm1=2, 2, h=6, w=7\) with Tm1=2"):
        stda(x, nxt, prv[:, :1])
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T=3, C=8, h, w\) with C=8"):
        stda(torch.randn(1, 3, 4, 6, 7), nxt, prv)


def test_offsets_learning_rate_group_is_selectable_by_name():
    """STDANet trains sampling_offsets at lr x 0.01: the names must let users build that group."""
    stda = STDA(channels=8, num_heads=2, num_points=2)
    names = [n for n, _ in stda.named_parameters() if "sampling_offsets" in n]
    assert names == ["MMA.defor_attn.sampling_offsets.weight", "MMA.defor_attn.sampling_offsets.bias",
                     "MSA.defor_attn.sampling_offsets.weight", "MSA.defor_attn.sampling_offsets.bias"]


def test_flops_at_720p_match_the_official_model():
    """Spec §5.1 (FlopCounterMode on the official STDAN at 720p): MMA 393 and MSA 309 GMACs of
    convolutions, about 5 GMACs of deformable sampling for the two."""
    from deblurlayers.flops import count_flops

    x, flows = torch.zeros(1, 3, 128, 180, 320), torch.zeros(1, 2, 2, 180, 320)
    mma = count_flops(MultiToMultiAttention(), x, x, flows, flows).by_op
    msa = count_flops(MultiToSingleAttention(), x, x, flows, flows).by_op
    assert round(mma["aten.convolution"] / 2e9) == 393
    assert round(msa["aten.convolution"] / 2e9) == 309
    sampling = (mma["deblurlayers.ms_deform_attn"] + msa["deblurlayers.ms_deform_attn"]) / 2e9
    assert 4.5 < sampling < 6.0
