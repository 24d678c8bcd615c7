"""pixel_dynamic_filter: native kernel vs reference, properties, gradients, registration, bad inputs."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from deblurlayers.flops import count_flops
from deblurlayers.ops import pixel_dynamic_filter, pixel_dynamic_filter_reference

from helpers import TOLERANCES

# (B, C, H, W, G, k, Hk, Wk)
CASES = [
    (2, 4, 8, 10, 4, 3, 8, 10),   # per-channel, full resolution
    (1, 6, 16, 24, 6, 3, 2, 3),   # per-channel, 1/8 resolution (DSTNet)
    (2, 4, 9, 7, 2, 3, 4, 5),     # shared by channel pairs, non-integer ratio
    (1, 3, 12, 12, 1, 5, 12, 12),  # one kernel for all channels, k = 5
    (1, 2, 5, 6, 2, 7, 3, 2),     # k = 7 (generic path), kernel wider than the map's interior
    (1, 2, 4, 4, 2, 1, 4, 4),     # k = 1
]


def make(case, dtype=torch.float64, requires_grad=False):
    b, c, h, w, g, k, hk, wk = case
    x = torch.randn(b, c, h, w, dtype=dtype, requires_grad=requires_grad)
    kernels = torch.randn(b, g * k * k, hk, wk, dtype=dtype, requires_grad=requires_grad)
    return x, kernels, k


def literal_loop(x, kernels, k):
    """out[b,c,y,x] = sum W[b, g(c), ky, kx](y, x) x[b, c, y+ky-r, x+kx-r], kernels already full-size."""
    b_, c_, h, w = x.shape
    g_ = kernels.shape[1] // (k * k)
    out = torch.zeros_like(x)
    r = k // 2
    for b in range(b_):
        for c in range(c_):
            g = c // (c_ // g_)
            for y in range(h):
                for xx in range(w):
                    for ky in range(k):
                        for kx in range(k):
                            yy, xs = y + ky - r, xx + kx - r
                            if 0 <= yy < h and 0 <= xs < w:
                                out[b, c, y, xx] += kernels[b, g * k * k + ky * k + kx, y, xx] * x[b, c, yy, xs]
    return out


def test_reference_matches_literal_loop():
    x, kernels, k = make((1, 4, 5, 6, 2, 3, 5, 6))
    torch.testing.assert_close(pixel_dynamic_filter_reference(x, kernels, k), literal_loop(x, kernels, k))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_native_matches_reference_forward_backward(native_ops, case, dtype):
    x, kernels, k = make(case, dtype, requires_grad=True)
    out = pixel_dynamic_filter(x, kernels, k)
    ref = pixel_dynamic_filter_reference(x, kernels, k)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, kernels), grad)
    want = torch.autograd.grad(ref, (x, kernels), grad)
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(out, ref, **tol)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, **tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_native_low_precision_matches_fp32_reference(native_ops, dtype):
    x, kernels, k = make((1, 4, 16, 16, 4, 3, 2, 2), torch.float32)
    x, kernels = x.to(dtype), kernels.to(dtype)
    out = pixel_dynamic_filter(x, kernels, k)
    assert out.dtype == dtype
    ref = pixel_dynamic_filter_reference(x.float(), kernels.float(), k)
    torch.testing.assert_close(out.float(), ref, atol=TOLERANCES[dtype]["atol"] * 10, rtol=TOLERANCES[dtype]["rtol"])


@given(b=st.integers(0, 2), groups=st.integers(1, 3), per_group=st.integers(1, 2), h=st.integers(1, 9),
       w=st.integers(1, 9), k=st.sampled_from([1, 3, 5]), data=st.data())
def test_property_native_equals_reference(native_ops, b, groups, per_group, h, w, k, data):
    hk, wk = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    x, kernels, _ = make((b, groups * per_group, h, w, groups, k, hk, wk), requires_grad=True)
    out = pixel_dynamic_filter(x, kernels, k)
    ref = pixel_dynamic_filter_reference(x, kernels, k)
    torch.testing.assert_close(out, ref, **TOLERANCES[torch.float64])
    if out.numel():
        got = torch.autograd.grad(out.sum(), (x, kernels))
        want = torch.autograd.grad(ref.sum(), (x, kernels))
        for g, r in zip(got, want):
            torch.testing.assert_close(g, r, **TOLERANCES[torch.float64])


@pytest.mark.parametrize("low_res", [False, True])
def test_centred_delta_reproduces_input(low_res):
    x = torch.randn(2, 3, 16, 16)
    size = (2, 2) if low_res else (16, 16)
    delta = torch.zeros(2, 3 * 9, *size)
    delta[:, 4::9] = 1.0  # centre tap (ky = kx = 1) of every channel
    torch.testing.assert_close(pixel_dynamic_filter(x, delta, 3), x)


def test_constant_kernel_map_is_a_depthwise_convolution():
    x = torch.randn(2, 4, 10, 12, dtype=torch.float64)
    weight = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    kernels = weight.view(1, 4 * 9, 1, 1).expand(2, -1, 3, 4).contiguous()  # constant at low resolution
    torch.testing.assert_close(pixel_dynamic_filter(x, kernels, 3), F.conv2d(x, weight, padding=1, groups=4))


def test_low_resolution_kernels_equal_explicitly_upsampled_ones():
    x, kernels, k = make((2, 4, 24, 32, 4, 3, 3, 4))
    upsampled = F.interpolate(kernels, size=(24, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(pixel_dynamic_filter(x, kernels, k), pixel_dynamic_filter(x, upsampled, k))


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[2]])
def test_gradcheck(native_ops, case):
    b, c, h, w, g, k, hk, wk = case
    x, kernels, k = make((1, c, min(h, 6), min(w, 6), g, k, min(hk, 3), min(wk, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, q: pixel_dynamic_filter(a, q, k), (x, kernels))


def test_flops_equal_the_reference_count(native_ops):
    x, kernels, k = make((1, 64, 360, 640, 64, 3, 45, 80), torch.float32, requires_grad=True)
    native = count_flops(pixel_dynamic_filter, x, kernels, k, backward=True)
    assert native.by_op == {"deblurlayers.pixel_dynamic_filter": 2 * 9 * x.numel(),
                            "deblurlayers.pixel_dynamic_filter_backward": 2 * 2 * 9 * x.numel()}
    assert count_flops(pixel_dynamic_filter_reference, x, kernels, k, backward=True).macs == native.macs


@pytest.mark.parametrize("fn", [pixel_dynamic_filter, pixel_dynamic_filter_reference])
def test_bad_inputs(fn):
    x = torch.zeros(2, 4, 8, 8)
    with pytest.raises(ValueError, match=r"kernels: expected shape \(B, G\*9, Hk, Wk\) with G dividing C=4 "
                                         r"\(kernel_size=3\), got shape \(2, 27, 8, 8\)"):
        fn(x, torch.zeros(2, 27, 8, 8), 3)
    with pytest.raises(ValueError, match=r"kernels: expected shape .* with G dividing C=4"):
        fn(x, torch.zeros(2, 30, 8, 8), 3)
    with pytest.raises(ValueError, match=r"1 <= Hk <= H=8 and 1 <= Wk <= W=8, got shape \(2, 36, 9, 8\)"):
        fn(x, torch.zeros(2, 36, 9, 8), 3)
    with pytest.raises(ValueError, match=r"kernels: expected shape \(B=2, GKK, Hk, Wk\) with B=2, got shape \(1, 36, 8, 8\)"):
        fn(x, torch.zeros(1, 36, 8, 8), 3)
    with pytest.raises(ValueError, match="kernel_size: expected a positive odd int, got 2"):
        fn(x, torch.zeros(2, 16, 8, 8), 2)
    with pytest.raises(ValueError, match=r"x: expected a 4-d tensor of shape \(B, C, H, W\)"):
        fn(torch.zeros(4, 8, 8), torch.zeros(2, 36, 8, 8), 3)
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        fn(x.long(), torch.zeros(2, 36, 8, 8), 3)
    with pytest.raises(TypeError, match="kernels: expected dtype torch.float32"):
        fn(x, torch.zeros(2, 36, 8, 8, dtype=torch.float64), 3)


def test_native_kernel_checks_name_the_argument(native_ops):
    with pytest.raises(RuntimeError, match=r"pixel_dynamic_filter: kernels: expected shape \(B, G\*k\*k, Hk, Wk\)"):
        native_ops.pixel_dynamic_filter(torch.zeros(1, 4, 8, 8), torch.zeros(1, 27, 8, 8), 3)
    with pytest.raises(RuntimeError, match="pixel_dynamic_filter: kernel_size: expected a positive odd integer"):
        native_ops.pixel_dynamic_filter(torch.zeros(1, 4, 8, 8), torch.zeros(1, 16, 8, 8), 2)
