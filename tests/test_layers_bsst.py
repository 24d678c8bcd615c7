"""BSST: selection on a synthetic blur map (indices), a literal per-window oracle, the dense case,
soft split / composition, official parameter names, gradients, batch order, compile, bad inputs."""
import math

import pytest
import torch
import torch.nn.functional as F

from deblurlayers import BlurAwareSparseAttention
from deblurlayers.layers import BlurAwareSparseTransformer, FusionFeedForward, SoftComp, SoftSplit
from deblurlayers.layers.bsst import select_frames, select_frames_official, window_blur_levels
from helpers import count_parameters


# ------------------------------------------------------------------------------------------------
# A literal implementation of the intended semantics: Python loops, lists of positions, no padding
# tricks. Independent of the layer's gathers, masks and permutations.
# ------------------------------------------------------------------------------------------------
def literal_attention(att, x, levels, *, parity, theta, kq, kkv, group, outside="zeros"):
    """SparseWindowAttention on normalised tokens ``x`` (B, T, h, w, C); ``levels`` (B, T, nh, nw).
    ``outside="zeros"``: region positions outside the image are zero key/value vectors (official);
    ``"masked"``: they are not keys at all."""
    b_size, frames, h, w, c = x.shape
    (wh, ww), (eh, ew), (ph, pw) = att.window_size, att.expand_size, att.pool_size
    heads, d = att.num_heads, c // att.num_heads
    q, k, v = att.query(x), att.key(x), att.value(x)
    nh, nw = math.ceil(h / wh), math.ceil(w / ww)
    padded = F.pad(x, (0, 0, 0, nw * ww - w, 0, nh * wh - h))
    pooled = att.pool_layer(padded.flatten(0, 1).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    pooled = pooled.unflatten(0, (b_size, frames))
    cells = [(i, j) for i in range(pooled.shape[2]) for j in range(pooled.shape[3]) if i * ph < h and j * pw < w]
    pooled_k, pooled_v = att.key(pooled), att.value(pooled)

    def attend(queries, keys, values):
        qs, ks, vs = (a.view(a.shape[0], heads, d).transpose(0, 1) for a in (queries, keys, values))
        weights = torch.softmax(qs @ ks.transpose(1, 2) / math.sqrt(d), dim=-1)
        return (weights @ vs).transpose(0, 1).reshape(-1, c)

    out = torch.zeros_like(q)
    for b in range(b_size):
        for i in range(nh):
            for j in range(nw):
                own = [(y, z) for y in range(i * wh, min((i + 1) * wh, h)) for z in range(j * ww, min((j + 1) * ww, w))]
                region = [(y, z) for y in range(i * wh - eh, (i + 1) * wh + eh) for z in range(j * ww - ew, (j + 1) * ww + ew)
                          if outside == "zeros" or (0 <= y < h and 0 <= z < w)]
                zero = torch.zeros(c, dtype=x.dtype)
                at = lambda a, t, y, z: a[b, t, y, z] if 0 <= y < h and 0 <= z < w else zero  # noqa: E731
                cand = [t for t in range(frames) if parity is None or t % 2 == parity]
                level = {t: float(levels[b, t, i, j]) for t in cand}
                active = bool(cand) and (theta is None or any(level[t] > theta for t in cand))
                rest = list(range(frames))
                if active:
                    query_frames = sorted(cand, key=lambda t: (-level[t], t))[:kq]
                    kv_frames = sorted(cand, key=lambda t: (level[t], t))[:kkv]
                    queries = torch.stack([q[b, t, y, z] for t in query_frames for (y, z) in own])
                    keys = torch.stack([at(k, t, y, z) for t in kv_frames for (y, z) in region]
                                       + [pooled_k[b, t, y, z] for t in kv_frames for (y, z) in cells])
                    values = torch.stack([at(v, t, y, z) for t in kv_frames for (y, z) in region]
                                         + [pooled_v[b, t, y, z] for t in kv_frames for (y, z) in cells])
                    result = attend(queries, keys, values)
                    for n, (t, (y, z)) in enumerate([(t, p) for t in query_frames for p in own]):
                        out[b, t, y, z] = result[n]
                    rest = [t for t in rest if t not in query_frames]
                for start in range(0, len(rest), group):
                    chunk = [(t, p) for t in rest[start:start + group] for p in own]
                    pick = lambda a: torch.stack([a[b, t, y, z] for t, (y, z) in chunk])  # noqa: E731
                    result = attend(pick(q), pick(k), pick(v))
                    for n, (t, (y, z)) in enumerate(chunk):
                        out[b, t, y, z] = result[n]
    return att.proj(out)


def make_layer(dim=16, heads=2, window=4, pool=2, seed=0, **kwargs):
    torch.manual_seed(seed)
    layer = BlurAwareSparseAttention(dim=dim, num_heads=heads, window_size=window, pool_size=pool,
                                     hidden_dim=8 * 25, init_std=0.2, **kwargs).double()
    for p in layer.parameters():  # break the zero-bias init so biases are exercised too
        p.data.add_(torch.randn_like(p) * 0.05)
    return layer


CASES = [
    # (B, T, h, w, layer kwargs)
    (2, 8, 8, 8, dict(theta=0.5, parity=0)),
    (1, 8, 8, 12, dict(theta=0.5, parity=1)),
    (2, 7, 7, 10, dict(theta=0.4, parity=0)),                                   # padded grid, T not /4
    (1, 9, 9, 5, dict(theta=0.3, parity=1, num_query_frames=3, num_kv_frames=2, group_frames=2)),
    (2, 6, 8, 8, dict(theta=None, parity=None, num_query_frames=2, num_kv_frames=4)),
    (1, 5, 6, 6, dict(theta=2.0, parity=0)),                                    # no active window
    (1, 1, 5, 7, dict(theta=0.1, parity=1)),                                    # no candidate frame
]


@pytest.mark.parametrize("outside", ["zeros", "masked"])
@pytest.mark.parametrize("b,t,h,w,kwargs", CASES)
def test_attention_matches_literal_oracle(b, t, h, w, kwargs, outside):
    layer = make_layer(outside_tokens=outside, **kwargs)
    x = torch.randn(b, t, h, w, 16, dtype=torch.float64)
    blur = torch.rand(b, t, 1, h, w, dtype=torch.float64)
    levels = window_blur_levels(blur, layer.attention.window_size)
    candidates = (t - (kwargs["parity"] or 0) + 1) // 2 if kwargs["parity"] is not None else t
    kq = kwargs.get("num_query_frames") or min(max(1, t // 4), candidates)
    kkv = kwargs.get("num_kv_frames") or min(max(1, t // 4), candidates)
    group = kwargs.get("group_frames") or max(1, t // 4)
    got = layer.attention(x, layer.select(blur), layer.group_frames)
    want = literal_attention(layer.attention, x, levels, parity=kwargs["parity"], theta=kwargs["theta"],
                             kq=kq, kkv=kkv, group=group, outside=outside)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_outside_tokens_change_only_the_border_windows():
    """A 32x32 token grid with 8x8 windows and 4-token enlargement (BSSTNet's 256² tile): the
    regions of the 12 border windows reach outside the image, those of the 4 inner ones do not."""
    t = 4
    zeros = make_layer(dim=16, window=8, pool=4, theta=None, parity=None, num_query_frames=t, num_kv_frames=t)
    masked = make_layer(dim=16, window=8, pool=4, theta=None, parity=None, num_query_frames=t, num_kv_frames=t,
                        outside_tokens="masked")
    assert zeros.attention.outside_tokens == "zeros"  # the official behaviour is the default
    x = torch.randn(1, t, 32, 32, 16, dtype=torch.float64)
    blur = torch.rand(1, t, 1, 32, 32, dtype=torch.float64)
    a, b = zeros.attention(x, zeros.select(blur)), masked.attention(x, masked.select(blur))
    differs = (a - b).abs().amax(dim=(0, 1, 4)).view(4, 8, 4, 8).amax(dim=(1, 3))  # per window
    border = torch.ones(4, 4, dtype=torch.bool)
    border[1:3, 1:3] = False
    assert (differs[~border] == 0).all() and (differs[border] > 1e-6).all()


def test_everything_selected_is_dense_window_attention():
    """All windows active, every frame a query and a key/value frame: the dense layer, checked
    against full attention of each window's tokens to every frame's region and pooled tokens."""
    t = 4
    layer = make_layer(theta=None, parity=None, num_query_frames=t, num_kv_frames=t)
    x = torch.randn(2, t, 8, 8, 16, dtype=torch.float64)
    blur = torch.rand(2, t, 1, 8, 8, dtype=torch.float64)
    got = layer.attention(x, layer.select(blur))
    want = literal_attention(layer.attention, x, window_blur_levels(blur, 4), parity=None, theta=None,
                             kq=t, kkv=t, group=1)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    # Independent of the blur map when everything is selected.
    torch.testing.assert_close(layer.attention(x, layer.select(torch.rand_like(blur))), got)


# ------------------------------------------------------------------------------------------------
# Selection on a synthetic blur map (the spec's example), asserted on indices
# ------------------------------------------------------------------------------------------------
def synthetic_token_blur(frames=8):
    """32×32 tokens, 8×8 windows: window (0, 0) blurry in frames 0, 2, 5 (levels 0.9, 0.6, 0.8),
    window (1, 2) in frame 3 (0.7); the rest sharp with distinct small levels."""
    blur = torch.zeros(1, frames, 1, 32, 32)
    for t in range(frames):
        blur[0, t] = 0.01 * (frames - t)  # later frames slightly sharper: a unique sharpest order
    for t, level in ((0, 0.9), (2, 0.6), (5, 0.8)):
        blur[0, t, 0, 0:8, 0:8] = level
    blur[0, 3, 0, 8:16, 16:24] = 0.7
    return blur


def test_selection_picks_blurriest_queries_and_sharpest_keys():
    blur = synthetic_token_blur()
    layers = BlurAwareSparseTransformer(dim=32, depth=4, num_heads=2, hidden_dim=200).transformer
    sel0, sel1, sel2 = (layers[i].select(blur) for i in range(3))
    win00, win12 = 0, 1 * 4 + 2
    # Layer 0, even frames {0, 2, 4, 6}, Kq = Kkv = T/4 = 2: only (0, 0) is blurry in an even frame.
    assert sel0.active[0].nonzero().flatten().tolist() == [win00]
    assert sel0.query_frames[0, win00].tolist() == [0, 2]       # levels 0.9, 0.6
    assert sel0.kv_frames[0, win00].tolist() == [4, 6]          # the sharpest even frames
    # Layer 1, odd frames {1, 3, 5, 7}: both windows; the blurriest odd frame leads each.
    assert sel1.active[0].nonzero().flatten().tolist() == [win00, win12]
    assert sel1.query_frames[0, win00].tolist() == [1, 5]       # 0.8 (frame 5), then 0.07 (frame 1)
    assert sel1.query_frames[0, win12].tolist() == [1, 3]       # 0.7 (frame 3), then 0.07 (frame 1)
    assert sel1.kv_frames[0, win00].tolist() == [3, 7]
    assert sel1.kv_frames[0, win12].tolist() == [5, 7]
    # Layer 2 repeats layer 0 (the official code's aliasing bug would make it blur-blind).
    assert torch.equal(sel2.query_frames, sel0.query_frames) and torch.equal(sel2.active, sel0.active)


def test_selection_by_hand_on_random_levels():
    levels = torch.rand(3, 12, 2, 3)
    sel = select_frames(levels, parity=1, theta=0.5, num_query_frames=3, num_kv_frames=2)
    for b in range(3):
        for n in range(6):
            u = {t: float(levels[b, t, n // 3, n % 3]) for t in range(1, 12, 2)}
            assert bool(sel.active[b, n]) == any(val > 0.5 for val in u.values())
            assert sel.query_frames[b, n].tolist() == sorted(sorted(u, key=u.get, reverse=True)[:3])
            assert sel.kv_frames[b, n].tolist() == sorted(sorted(u, key=u.get)[:2])


def test_window_levels_average_and_max_ignore_padding():
    blur = torch.rand(2, 3, 1, 10, 7)
    avg, mx = window_blur_levels(blur, 4, "avg"), window_blur_levels(blur, 4, "max")
    assert avg.shape == mx.shape == (2, 3, 3, 2)
    torch.testing.assert_close(avg[1, 2, 2, 1], blur[1, 2, 0, 8:10, 4:7].mean())
    torch.testing.assert_close(mx[0, 1, 0, 0], blur[0, 1, 0, 0:4, 0:4].max())


def test_selection_decides_which_tokens_interact():
    """A token of a non-query frame of an inactive window only sees its own group's window."""
    layer = make_layer(theta=0.5, parity=0)
    x = torch.randn(1, 8, 8, 8, 16, dtype=torch.float64)
    blur = torch.zeros(1, 8, 1, 8, 8, dtype=torch.float64)
    blur[0, 4, 0, :4, :4] = 1.0                  # window (0, 0) blurry in frame 4 only
    base = layer.attention(x, layer.select(blur))
    bumped = x.clone()
    bumped[0, 0, 0, 7] += 1.0                   # a token of window (0, 1), frame 0
    diff = (layer.attention(bumped, layer.select(blur)) - base).abs().amax(-1)[0]
    # Window (0, 1) is inactive: groups {0, 1}, {2, 3}, ... so only frames 0-1 of it change...
    assert diff[:2, :4, 4:].amax() > 0 and diff[2:, :4, 4:].amax() == 0
    # ...and window (0, 0)'s query frame 4 sees frame 0's region (its sharpest even frame).
    assert diff[4, :4, :4].amax() > 0 and diff[5, :4, :4].amax() == 0


# ------------------------------------------------------------------------------------------------
# Soft split / composition / feed-forward
# ------------------------------------------------------------------------------------------------
def test_soft_split_is_unfold_then_linear():
    split = SoftSplit(channels=3, dim=8, kernel_size=3, stride=2, padding=1)
    x = torch.randn(2, 4, 3, 9, 10)
    tokens = split(x)
    assert tokens.shape == (2, 4, 5, 5, 8)
    # token (1, 2) of frame (1, 3): the 3×3 patch around pixel (2, 4), channel slowest.
    patch = F.pad(x[1, 3], (1, 1, 1, 1))[:, 2:5, 4:7].reshape(-1)
    torch.testing.assert_close(tokens[1, 3, 1, 2], split.embedding(patch))
    blur = torch.rand(2, 4, 1, 9, 10)
    torch.testing.assert_close(split.token_blur(blur)[1, 3, 0, 1, 2], F.pad(blur[1, 3, 0], (1, 1, 1, 1))[2:5, 4:7].mean())


def test_soft_comp_sums_overlapping_patches():
    comp = SoftComp(channels=2, dim=6, kernel_size=3, stride=2, padding=1)
    nn_identity = torch.nn.Conv2d(2, 2, 3, padding=1, bias=False)
    nn_identity.weight.data.zero_()
    nn_identity.weight.data[[0, 1], [0, 1], 1, 1] = 1.0
    comp.bias_conv = nn_identity
    tokens = torch.randn(1, 2, 3, 4, 6)
    out = comp(tokens, (6, 8))
    patches = comp.embedding(tokens).view(1, 2, 3, 4, 2, 3, 3)
    want = torch.zeros(1, 2, 2, 8, 10)
    for i in range(3):
        for j in range(4):
            want[:, :, :, 2 * i: 2 * i + 3, 2 * j: 2 * j + 3] += patches[:, :, i, j]
    torch.testing.assert_close(out, want[..., 1:7, 1:9])


def test_feed_forward_averages_overlaps():
    """Tokens that agree, and hidden patches constant per channel: averaging the overlaps changes
    nothing away from the border, so there the feed-forward is the plain MLP (a sum would not be)."""
    ffn = FusionFeedForward(dim=4, hidden_dim=2 * 25)
    ffn.fc1[0].weight.data = torch.randn(2, 4).repeat_interleave(25, dim=0)
    ffn.fc1[0].bias.data = torch.randn(2).repeat_interleave(25)
    x = torch.randn(1, 2, 1, 1, 4).expand(1, 2, 6, 6, 4)
    out = ffn(x, (12, 12))
    assert out.shape == x.shape
    torch.testing.assert_close(out[:, :, 1:-1, 1:-1], ffn.fc2(ffn.fc1(x))[:, :, 1:-1, 1:-1])
    assert not torch.allclose(out[:, :, 0, 0], ffn.fc2(ffn.fc1(x))[:, :, 0, 0])  # border patches see padding


# ------------------------------------------------------------------------------------------------
# Official structure
# ------------------------------------------------------------------------------------------------
def test_official_parameter_names_and_counts():
    stack = BlurAwareSparseTransformer()
    assert count_parameters(stack) == 4 * 2_086_888
    names = {k for k in stack.state_dict()}
    for i in range(4):
        for key in ("attention.query.weight", "attention.key.bias", "attention.value.weight", "attention.proj.bias",
                    "attention.pool_layer.weight", "attention.pool_layer.bias", "norm1.weight", "norm2.bias",
                    "mlp.fc1.0.weight", "mlp.fc2.1.weight"):
            assert f"transformer.{i}.{key}" in names
    assert [layer.parity for layer in stack.transformer] == [0, 1, 0, 1]
    assert count_parameters(SoftSplit()) == 2_458_112
    assert count_parameters(SoftComp()) == 2_794_368
    # The official 32×32 geometry buffers are checkpoint knowledge: BSSTNet's converter drops them,
    # the layer holds no buffers of its own.
    assert not list(stack.buffers())


def test_full_size_forward_shape():
    layer = BlurAwareSparseAttention()
    blur = synthetic_token_blur(8)
    out = layer(torch.randn(1, 8, 32, 32, 512), blur)
    assert out.shape == (1, 8, 32, 32, 512) and out.isfinite().all()


# ------------------------------------------------------------------------------------------------
# Gradients, batch order, compile
# ------------------------------------------------------------------------------------------------
def test_gradients_reach_every_parameter():
    layer = make_layer(theta=0.5, parity=0).float()
    x = torch.randn(2, 8, 8, 8, 16, requires_grad=True)
    blur = torch.rand(2, 8, 1, 8, 8)
    layer(x, blur, (16, 16)).square().sum().backward()
    assert x.grad.abs().sum() > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_invariant_to_batch_order():
    layer = make_layer(theta=0.4, parity=1)
    x = torch.randn(3, 8, 7, 9, 16, dtype=torch.float64)
    blur = torch.rand(3, 8, 1, 7, 9, dtype=torch.float64)
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(layer(x[perm], blur[perm]), layer(x, blur)[perm])


def test_compile_fullgraph():
    layer = make_layer(theta=0.4, parity=0).float()
    x, blur = torch.randn(2, 8, 7, 9, 16), torch.rand(2, 8, 1, 7, 9)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, blur), layer(x, blur))


# ------------------------------------------------------------------------------------------------
# Bad inputs
# ------------------------------------------------------------------------------------------------
def test_bad_inputs():
    layer = BlurAwareSparseAttention(dim=16, num_heads=2, window_size=4, hidden_dim=50)
    x, blur = torch.randn(1, 8, 8, 8, 16), torch.rand(1, 8, 1, 8, 8)
    with pytest.raises(ValueError, match=r"tokens: .*C=16"):
        layer(torch.randn(1, 8, 8, 8, 12), blur)
    with pytest.raises(ValueError, match=r"blur: .*h=8"):
        layer(x, torch.rand(1, 8, 1, 16, 16))
    with pytest.raises(ValueError, match=r"blur: "):
        layer(x, torch.rand(1, 8, 8, 8))
    with pytest.raises(TypeError, match="tokens"):
        layer(x.long(), blur)
    with pytest.raises(ValueError, match="fold_size"):
        layer(x, blur, (32, 32))
    with pytest.raises(ValueError, match="num_query_frames"):
        BlurAwareSparseAttention(dim=16, num_heads=2, hidden_dim=50, num_query_frames=5)(x, blur)
    with pytest.raises(ValueError, match="num_kv_frames"):
        BlurAwareSparseAttention(dim=16, num_heads=2, hidden_dim=50, num_kv_frames=0)
    with pytest.raises(ValueError, match="parity"):
        BlurAwareSparseAttention(dim=16, num_heads=2, hidden_dim=50, parity=2)
    with pytest.raises(ValueError, match="window_pool"):
        BlurAwareSparseAttention(dim=16, num_heads=2, hidden_dim=50, window_pool="median")
    with pytest.raises(ValueError, match="dim"):
        BlurAwareSparseAttention(dim=15, num_heads=2, hidden_dim=50)
    with pytest.raises(ValueError, match="hidden_dim"):
        BlurAwareSparseAttention(dim=16, num_heads=2, hidden_dim=60)
    with pytest.raises(ValueError, match=r"x: .*C=3"):
        SoftSplit(channels=3, dim=8)(torch.randn(1, 2, 4, 8, 8))
    with pytest.raises(ValueError, match="output_size"):
        SoftComp(channels=3, dim=8)(torch.randn(1, 2, 4, 4, 8), (16, 16))


def test_partial_groups_give_finite_gradients():
    """T = 9, Kq = 3, groups of 2: partial and fully discarded groups must not poison the backward."""
    layer = make_layer(theta=0.3, parity=1, num_query_frames=3, num_kv_frames=2, group_frames=2)
    x = torch.randn(1, 9, 9, 5, 16, dtype=torch.float64, requires_grad=True)
    layer(x, torch.rand(1, 9, 1, 9, 5, dtype=torch.float64)).sum().backward()
    assert x.grad.isfinite().all()
    assert all(p.grad.isfinite().all() for p in layer.parameters())


# ------------------------------------------------------------------------------------------------
# The released code's selection (issue 21): the spec's CPU measurement of the official BSST.forward
# on the same synthetic map (spec §3.4) is the oracle.
# ------------------------------------------------------------------------------------------------
def test_official_selection_reproduces_the_measured_official_frames():
    blur = synthetic_token_blur()
    stack = BlurAwareSparseTransformer(dim=32, depth=4, num_heads=2, hidden_dim=200, selection="official")
    assert [layer.selection for layer in stack.transformer] == ["official"] + ["official_aliased"] * 3
    sel = [layer.select(blur) for layer in stack.transformer]
    win00, win12 = 0, 1 * 4 + 2
    # Layer 0: blur-aware, as intended: (0, 0) -> queries [0, 2], keys/values [4, 6].
    assert sel[0].active[0].nonzero().flatten().tolist() == [win00]
    assert sel[0].query_frames[0, win00].tolist() == [0, 2] and sel[0].kv_frames[0, win00].tolist() == [4, 6]
    # Layer 1: the active windows are still right, the frames blur-blind: queries [0, 1], K/V [1, 3].
    assert sel[1].active[0].nonzero().flatten().tolist() == [win00, win12]
    for win in (win00, win12):
        assert sel[1].query_frames[0, win].tolist() == [0, 1] and sel[1].kv_frames[0, win].tolist() == [1, 3]
    # Layer 2: queries [0, 1], K/V [0, 2]; layer 3 as layer 1.
    assert sel[2].query_frames[0, win00].tolist() == [0, 1] and sel[2].kv_frames[0, win00].tolist() == [0, 2]
    for field in ("active", "query_frames", "kv_frames"):
        assert torch.equal(getattr(sel[3], field), getattr(sel[1], field))


def test_official_first_layer_ranks_every_frame_with_ties_to_the_lowest_index():
    # One window, T = 8, Kq = Kkv = 2.
    levels = torch.zeros(1, 8, 1, 1)
    levels[0, 2], levels[0, 6] = 0.9, 0.5
    sel = select_frames_official(levels, parity=0, theta=0.3)
    assert sel.query_frames[0, 0].tolist() == [2, 6]          # the two blurriest even frames
    assert sel.kv_frames[0, 0].tolist() == [0, 4]             # (1 - U) = 1 for frames 0, 4: ties, lowest first
    # Only frame 0 blurry: the second query is the lowest-index frame of score 0, frame 1, odd.
    levels = torch.zeros(1, 8, 1, 1)
    levels[0, 0] = 0.9
    sel = select_frames_official(levels, parity=0, theta=0.3)
    assert sel.query_frames[0, 0].tolist() == [0, 1]
    aliased = select_frames_official(levels, parity=1, theta=0.3, aliased=True)
    assert aliased.query_frames[0, 0].tolist() == [0, 1] and aliased.kv_frames[0, 0].tolist() == [1, 3]
    assert not aliased.active.any()                            # no odd frame is blurry


def test_official_selection_is_the_models_default_and_blur_the_layers():
    from deblurlayers.models import BSSTNet

    from model_cases import BSSTNET_SMALL

    model = BSSTNet(**{**BSSTNET_SMALL, "flow_estimator": None})
    assert [layer.selection for layer in model.transsqattn.transformer] == ["official"] + ["official_aliased"] * 3
    blur = BSSTNet(**{**BSSTNET_SMALL, "flow_estimator": None, "selection": "blur"})
    assert {layer.selection for layer in blur.transsqattn.transformer} == {"blur"}
    assert BlurAwareSparseTransformer(dim=32, num_heads=2, hidden_dim=200).selection == "blur"
    with pytest.raises(ValueError, match="selection: expected 'blur' or 'official'"):
        BlurAwareSparseTransformer(dim=32, num_heads=2, hidden_dim=200, selection="official_aliased")
    with pytest.raises(ValueError, match="selection: expected one of"):
        BlurAwareSparseAttention(dim=32, num_heads=2, hidden_dim=200, selection="paper")
