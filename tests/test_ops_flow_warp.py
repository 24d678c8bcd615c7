"""flow_warp: backward warping against a literal per-pixel bilinear loop."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from deblurlayers.ops import flow_warp


def loop_warp(x, flow, padding_mode):
    """out[b,c,y,x] = bilinear sample of x[b,c] at (x + u, y + v); zeros or clamped border."""
    b_, c_, h, w = x.shape
    out = torch.zeros_like(x)
    for b in range(b_):
        for i in range(h):
            for j in range(w):
                px, py = j + float(flow[b, 0, i, j]), i + float(flow[b, 1, i, j])
                if padding_mode == "border":
                    px, py = min(max(px, 0.0), w - 1.0), min(max(py, 0.0), h - 1.0)
                x0, y0 = math.floor(px), math.floor(py)
                for yy, xx, wt in [(y0, x0, (1 - (py - y0)) * (1 - (px - x0))), (y0, x0 + 1, (1 - (py - y0)) * (px - x0)),
                                   (y0 + 1, x0, (py - y0) * (1 - (px - x0))), (y0 + 1, x0 + 1, (py - y0) * (px - x0))]:
                    if 0 <= yy < h and 0 <= xx < w:
                        out[b, :, i, j] += wt * x[b, :, yy, xx]
    return out


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_matches_literal_bilinear_loop(padding_mode, align_corners):
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    flow = 3 * torch.randn(2, 2, 5, 7, dtype=torch.float64)  # reaches outside the map too
    torch.testing.assert_close(flow_warp(x, flow, padding_mode, align_corners), loop_warp(x, flow, padding_mode))


@given(b=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 6),
       dx=st.integers(-3, 3), dy=st.integers(-3, 3), align_corners=st.booleans())
def test_integer_flow_is_a_shift_with_zero_fill(b, c, h, w, dx, dy, align_corners):
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    flow = torch.empty(b, 2, h, w, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = dx, dy
    expected = torch.zeros_like(x)
    ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
    src_ys, src_xs = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    if ys.stop > ys.start and xs.stop > xs.start:
        expected[:, :, ys, xs] = x[:, :, src_ys, src_xs]
    torch.testing.assert_close(flow_warp(x, flow, "zeros", align_corners), expected)


def test_zero_flow_is_identity_and_empty_batch():
    x = torch.randn(2, 3, 6, 9)
    torch.testing.assert_close(flow_warp(x, torch.zeros(2, 2, 6, 9)), x)
    assert flow_warp(torch.zeros(0, 3, 4, 4), torch.zeros(0, 2, 4, 4)).shape == (0, 3, 4, 4)


def test_low_precision_samples_in_fp32():
    x = torch.randn(1, 2, 4, 1280)
    flow = torch.full((1, 2, 4, 1280), 0.25)
    out = flow_warp(x.half(), flow.half())
    assert out.dtype == torch.float16
    # fp16 grid coordinates near x = 1280 would be off by up to 0.3 px; fp32 ones are not.
    torch.testing.assert_close(out.float(), flow_warp(x.half().float(), flow), atol=2e-3, rtol=2e-3)


def test_gradcheck():
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    flow = (0.7 * torch.randn(1, 2, 4, 5, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, f: flow_warp(a, f, "border"), (x, flow))


def test_compile_fullgraph():
    x, flow = torch.randn(1, 3, 6, 6), torch.randn(1, 2, 6, 6)
    compiled = torch.compile(flow_warp, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, flow), flow_warp(x, flow))


def test_bad_inputs():
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"flow: expected shape \(B=2, 2, H=8, W=8\) with W=8, got shape \(2, 2, 8, 9\)"):
        flow_warp(x, torch.zeros(2, 2, 8, 9))
    with pytest.raises(ValueError, match=r"flow: .* with 2=2, got shape \(2, 3, 8, 8\)"):
        flow_warp(x, torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"flow: .* with B=2, got shape \(1, 2, 8, 8\)"):
        flow_warp(x, torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"x: expected a 4-d tensor of shape \(B, C, H, W\), got shape \(3, 8, 8\)"):
        flow_warp(torch.zeros(3, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(TypeError, match="flow: expected a floating-point tensor, got dtype torch.int64"):
        flow_warp(x, torch.zeros(2, 2, 8, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        flow_warp(x.long(), torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match=r"padding_mode: expected one of \('zeros', 'border', 'reflection'\), got 'wrap'"):
        flow_warp(x, torch.zeros(2, 2, 8, 8), "wrap")
    with pytest.raises(ValueError, match="flow: expected a tensor on cpu"):
        flow_warp(x, torch.zeros(2, 2, 8, 8, device="meta"))
