"""FactorizedSTAttention: a literal loop of eqs. 1-6, softmax axes, gradients, compile, bad inputs."""
import math

import pytest
import torch

from deblurlayers import FactorizedSTAttention


def literal_eqs(layer, x, r):
    """Eqs. 1-6 element by element (fp64), with the convolutions applied by torch (they are the
    paper's f_s, f_t, f_p) and every softmax, squeeze and product written out."""
    b_, t_, c_, h, w = x.shape
    g_, m_, n_ = layer.groups, layer.spatial_maps, layer.temporal_maps
    cg = c_ // g_
    hw = h * w
    s_logits = layer.f_s(x.flatten(0, 1)).view(b_, t_, g_, m_, hw)
    t_logits = layer.f_t(x.mean(dim=(-2, -1)).transpose(1, 2)).view(b_, g_, n_, t_)
    p_logits = layer.f_p(x[:, r]).view(b_, g_, m_ * n_, hw)
    y = torch.zeros(b_, c_, hw, dtype=x.dtype)
    for b in range(b_):
        for g in range(g_):
            # eq. 1: softmax over the pixels of each (frame, map)
            a_s = [[[math.exp(s_logits[b, t, g, m, p]) for p in range(hw)] for m in range(m_)] for t in range(t_)]
            a_s = [[[v / sum(row) for v in row] for row in frame] for frame in a_s]
            # eq. 3: softmax over the frames of each temporal map
            a_t = [[math.exp(t_logits[b, g, n, t]) for t in range(t_)] for n in range(n_)]
            a_t = [[v / sum(row) for v in row] for row in a_t]
            # eq. 5: softmax over the M*N descriptors at each pixel
            a_p = [[math.exp(p_logits[b, g, j, p]) for j in range(m_ * n_)] for p in range(hw)]
            a_p = [[v / sum(col) for v in col] for col in a_p]
            for cc in range(cg):
                c = g * cg + cc
                xv = x[b, :, c].reshape(t_, hw)
                # eq. 2: G_s[t, m] = sum_p A_s * x
                g_s = [[sum(a_s[t][m][p] * float(xv[t, p]) for p in range(hw)) for m in range(m_)] for t in range(t_)]
                # eq. 4: G_st[m, n] = sum_t G_s[t, m] * A_t[n, t]
                g_st = [sum(g_s[t][m] * a_t[n][t] for t in range(t_)) for m in range(m_) for n in range(n_)]
                # eq. 6: y[p] = sum_j G_st[j] * A_p[j, p]
                for p in range(hw):
                    y[b, c, p] = sum(g_st[j] * a_p[p][j] for j in range(m_ * n_))
    return y.view(b_, c_, h, w)


@pytest.mark.parametrize("groups,reference", [(1, None), (2, 0), (4, 2)])
def test_matches_literal_loop_of_eqs_1_to_6(groups, reference):
    torch.manual_seed(2)
    layer = FactorizedSTAttention(channels=4, spatial_maps=3, temporal_maps=2, groups=groups).double()
    x = torch.randn(2, 3, 4, 3, 4, dtype=torch.float64)
    r = 3 // 2 if reference is None else reference
    with torch.no_grad():
        torch.testing.assert_close(layer(x, reference), literal_eqs(layer, x, r))


def test_softmax_axes():
    layer = FactorizedSTAttention(channels=8, spatial_maps=3, temporal_maps=2, groups=2)
    a_s, a_t, a_p = layer.attention_maps(torch.randn(2, 5, 8, 6, 7))
    assert a_s.shape == (2, 5, 2, 3, 42) and a_t.shape == (2, 2, 2, 5) and a_p.shape == (2, 2, 6, 42)
    torch.testing.assert_close(a_s.sum(-1), torch.ones(2, 5, 2, 3))   # over pixels (eq. 1)
    torch.testing.assert_close(a_t.sum(-1), torch.ones(2, 2, 2))      # over frames (eq. 3)
    torch.testing.assert_close(a_p.sum(-2), torch.ones(2, 2, 42))     # over the M*N descriptors (eq. 5)


def test_constant_clip_is_a_fixed_point():
    """Every map is a convex combination, so a clip that is constant per channel is reproduced."""
    layer = FactorizedSTAttention(channels=6, groups=3)
    x = torch.randn(1, 1, 6, 1, 1).expand(2, 5, 6, 9, 10).contiguous()
    torch.testing.assert_close(layer(x), x[:, 0])


def test_output_is_a_convex_combination_of_the_clip():
    layer = FactorizedSTAttention(channels=4)
    x = torch.rand(1, 5, 4, 8, 8)
    y = layer(x)
    low, high = x.amin(dim=(1, 3, 4)), x.amax(dim=(1, 3, 4))
    assert (y >= low[..., None, None] - 1e-6).all() and (y <= high[..., None, None] + 1e-6).all()


def test_gradients_reach_every_parameter_and_all_frames():
    layer = FactorizedSTAttention(channels=8, groups=2)
    x = torch.randn(2, 5, 8, 6, 6, requires_grad=True)
    layer(x).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(x.grad[:, t].abs().sum() > 0 for t in range(5))


def test_compile_fullgraph():
    layer = FactorizedSTAttention(channels=8)
    x = torch.randn(1, 5, 8, 12, 10)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x))


def test_half_precision_keeps_fp32_softmax():
    layer = FactorizedSTAttention(channels=8)
    x = torch.randn(1, 3, 8, 16, 16)
    out = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert all(m.dtype == torch.float32 for m in layer.attention_maps(x.to(torch.bfloat16)))
    torch.testing.assert_close(out.float(), layer.float()(x.to(torch.bfloat16).float()), atol=0.05, rtol=0.05)


def test_bad_inputs():
    layer = FactorizedSTAttention(channels=8)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, C=8, H, W\) with C=8, got shape \(1, 5, 4, 8, 8\)"):
        layer(torch.zeros(1, 5, 4, 8, 8))
    with pytest.raises(ValueError, match=r"x: expected a 5-d tensor of shape \(B, T, C=8, H, W\)"):
        layer(torch.zeros(5, 8, 8, 8))
    with pytest.raises(ValueError, match=r"reference: expected a frame index in \[0, T=5\), got 5"):
        layer(torch.zeros(1, 5, 8, 8, 8), reference=5)
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        layer(torch.zeros(1, 5, 8, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="groups: expected a positive divisor of channels=8, got 3"):
        FactorizedSTAttention(channels=8, groups=3)
    with pytest.raises(ValueError, match="temporal_kernel: expected a positive odd int, got 2"):
        FactorizedSTAttention(temporal_kernel=2)
