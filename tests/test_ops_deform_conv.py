"""deform_conv2d (DCNv2): native vs reference vs a literal loop, conv2d and shift equivalences,
zero padding, gradients of all five inputs, gradcheck, opcheck, hypothesis, compile, bad inputs."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from deblurlayers.flops import count_flops
from deblurlayers.ops import deform_conv2d, deform_conv2d_reference

from helpers import TOLERANCES

BOTH = [deform_conv2d, deform_conv2d_reference]

# (N, Cin, Cout, groups, offset_groups, (KH, KW), stride, padding, dilation, H, W)
CASES = [
    (2, 4, 6, 1, 1, (3, 3), 1, 1, 1, 8, 9),
    (1, 8, 8, 2, 4, (3, 3), 2, 1, 2, 11, 7),
    (2, 6, 4, 2, 3, (2, 3), (1, 2), (0, 1), 1, 5, 6),
    (1, 16, 8, 1, 8, (3, 3), 1, 1, 1, 12, 12),     # ERDN / BSSTNet: 8 offset groups
    (1, 3, 5, 1, 1, (1, 1), 1, 0, 1, 4, 4),
]
# Big enough for the CPU kernel to split the pixels into several cache tiles and two column chunks.
LARGE_CASE = (2, 64, 16, 2, 8, (3, 3), 1, 1, 1, 96, 90)


def out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def make(case, dtype=torch.float64, requires_grad=False, spread=2.0):
    n, cin, cout, g, og, (kh, kw), s, p, d, h, w = case
    s, p, d = [(v, v) if isinstance(v, int) else v for v in (s, p, d)]
    ho, wo = out_size(h, kh, s[0], p[0], d[0]), out_size(w, kw, s[1], p[1], d[1])
    tensors = dict(input=torch.randn(n, cin, h, w, dtype=dtype),
                   offset=spread * torch.randn(n, 2 * og * kh * kw, ho, wo, dtype=dtype),
                   weight=torch.randn(cout, cin // g, kh, kw, dtype=dtype),
                   bias=torch.randn(cout, dtype=dtype),
                   mask=torch.rand(n, og * kh * kw, ho, wo, dtype=dtype))
    for t in tensors.values():
        t.requires_grad_(requires_grad)
    return tensors, dict(stride=s, padding=p, dilation=d)


def bilinear_zero_pad(plane, y, x):
    h, w = plane.shape
    if y <= -1 or x <= -1 or y >= h or x >= w:
        return plane.new_zeros(())
    y0, x0 = math.floor(y), math.floor(x)
    total = plane.new_zeros(())
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total = total + wy * wx * plane[yy, xx]
    return total


def literal_loop(input, offset, weight, bias, mask, stride, padding, dilation):
    n, cin, h, w = input.shape
    cout, cin_g, kh, kw = weight.shape
    groups, og, ho, wo = cin // cin_g, offset.shape[1] // (2 * kh * kw), offset.shape[2], offset.shape[3]
    out = torch.zeros(n, cout, ho, wo, dtype=input.dtype)
    for b in range(n):
        for o in range(cout):
            g = o // (cout // groups)
            for y in range(ho):
                for x in range(wo):
                    acc = bias[o].item()
                    for ci in range(cin_g):
                        c = g * cin_g + ci
                        grp = c // (cin // og)
                        for ky in range(kh):
                            for kx in range(kw):
                                k = ky * kw + kx
                                dy = offset[b, 2 * (grp * kh * kw + k), y, x].item()
                                dx = offset[b, 2 * (grp * kh * kw + k) + 1, y, x].item()
                                py = y * stride[0] - padding[0] + ky * dilation[0] + dy
                                px = x * stride[1] - padding[1] + kx * dilation[1] + dx
                                val = bilinear_zero_pad(input[b, c], py, px)
                                acc += weight[o, ci, ky, kx].item() * mask[b, grp * kh * kw + k, y, x].item() * val
                    out[b, o, y, x] = acc
    return out


def call(fn, t, kw):
    return fn(t["input"], t["offset"], t["weight"], t["bias"], mask=t["mask"], **kw)


@pytest.mark.parametrize("fn", BOTH)
@pytest.mark.parametrize("case", CASES[1:3])
def test_matches_literal_loop(native_ops, fn, case):
    t, kw = make(case)
    torch.testing.assert_close(call(fn, t, kw), literal_loop(**t, **kw), **TOLERANCES[torch.float64])


@pytest.mark.parametrize("case", CASES + [LARGE_CASE])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_matches_reference_forward_backward(native_ops, case, dtype):
    t, kw = make(case, dtype, requires_grad=True)
    names = list(t)
    out = call(deform_conv2d, t, kw)
    want = call(deform_conv2d_reference, t, kw)

    def tol(ref):
        return TOLERANCES[dtype] if dtype == torch.float64 else fp32_tolerance(ref)

    torch.testing.assert_close(out, want, **tol(want))
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [t[k] for k in names], grad)
    ref = torch.autograd.grad(want, [t[k] for k in names], grad)
    for name, a, b in zip(names, got, ref):
        torch.testing.assert_close(a, b, **tol(b), msg=lambda m: f"grad of {name}: {m}")


def fp32_tolerance(ref):  # long sums accumulated in different orders; error grows with the magnitude
    scale = ref.abs().amax().item() if ref.numel() else 0.0
    return dict(atol=1e-5 * (5 + scale), rtol=1e-4)


# fp32 on an AVX-512 CPU takes the kernel's own tile GEMM: 32-channel panels (masked at the edge)
# and 12-pixel register blocks (a partial last block), and 8-channel runs take a fixed-width
# sampling loop. These cases cross every such edge; elsewhere they test the at::addmm path.
@pytest.mark.parametrize("cout", [1, 16, 17, 32, 33, 50, 64, 96])
@pytest.mark.parametrize("groups", [1, 2])
def test_native_fp32_output_channel_panels(native_ops, cout, groups):
    case = (2, 16 * groups, cout * groups, groups, 2 * groups, (3, 3), 1, 1, 1, 7, 11)  # 77 pixels: 6 blocks + 5
    t, kw = make(case, torch.float32)
    want = call(deform_conv2d_reference, t, kw)
    torch.testing.assert_close(call(deform_conv2d, t, kw), want, **fp32_tolerance(want))


@given(n=st.integers(0, 2), og=st.sampled_from([1, 2, 4]), cpg=st.sampled_from([1, 3, 8, 16]),
       cout=st.integers(1, 70), groups=st.sampled_from([1, 2]), k=st.integers(1, 3), h=st.integers(1, 13),
       w=st.integers(1, 29), with_mask=st.booleans())
def test_property_native_fp32_equals_reference(native_ops, n, og, cpg, cout, groups, k, h, w, with_mask):
    cin = og * cpg * groups
    case = (n, cin, cout * groups, groups, og, (k, k), 1, k // 2, 1, h, w)
    t, kw = make(case, torch.float32)
    if not with_mask:
        t["mask"] = None
    want = call(deform_conv2d_reference, t, kw)
    torch.testing.assert_close(call(deform_conv2d, t, kw), want, **fp32_tolerance(want))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_native_low_precision_matches_fp32_reference(native_ops, dtype):
    t, kw = make(CASES[3], torch.float32)
    low = {k: v.to(dtype) for k, v in t.items()}
    want = call(deform_conv2d_reference, {k: v.float() for k, v in low.items()}, kw)
    torch.testing.assert_close(call(deform_conv2d, low, kw).float(), want, atol=0.15, rtol=0.03)


@given(n=st.integers(0, 2), cin_g=st.integers(1, 3), cout_g=st.integers(1, 3), groups=st.integers(1, 2),
       og=st.sampled_from([1, 2]), k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.tuples(st.integers(1, 2), st.integers(1, 2)), padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)), h=st.integers(1, 7), w=st.integers(1, 7))
def test_property_zero_offsets_and_unit_mask_are_conv2d(native_ops, n, cin_g, cout_g, groups, og, k, stride,
                                                        padding, dilation, h, w):
    cin = cin_g * groups * og
    ho = out_size(h, k[0], stride[0], padding[0], dilation[0])
    wo = out_size(w, k[1], stride[1], padding[1], dilation[1])
    if ho < 1 or wo < 1:
        return
    x = torch.randn(n, cin, h, w, dtype=torch.float64)
    weight = torch.randn(cout_g * groups, cin // groups, *k, dtype=torch.float64)
    bias = torch.randn(cout_g * groups, dtype=torch.float64)
    offset = torch.zeros(n, 2 * og * k[0] * k[1], ho, wo, dtype=torch.float64)
    want = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    for fn in BOTH:
        torch.testing.assert_close(fn(x, offset, weight, bias, stride, padding, dilation), want, atol=1e-12, rtol=1e-12)
        ones = torch.ones(n, og * k[0] * k[1], ho, wo, dtype=torch.float64)
        torch.testing.assert_close(fn(x, offset, weight, bias, stride, padding, dilation, ones), want,
                                   atol=1e-12, rtol=1e-12)


@given(n=st.integers(1, 2), og=st.sampled_from([1, 2]), k=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       spread=st.sampled_from([0.5, 3.0, 20.0]))
def test_property_native_equals_reference(native_ops, n, og, k, h, w, spread):
    case = (n, 2 * og, 3, 1, og, (k, k), 1, k // 2, 1, h, w)
    t, kw = make(case, torch.float64, requires_grad=True, spread=spread)
    out, want = call(deform_conv2d, t, kw), call(deform_conv2d_reference, t, kw)
    torch.testing.assert_close(out, want, **TOLERANCES[torch.float64])
    got = torch.autograd.grad(out.sum(), list(t.values()))
    ref = torch.autograd.grad(want.sum(), list(t.values()))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("fn", BOTH)
def test_integer_offsets_are_a_shifted_convolution(native_ops, fn):
    x = torch.randn(1, 4, 10, 12, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    offset = torch.zeros(1, 18, 10, 12, dtype=torch.float64)
    offset[:, 0::2] = 2.0   # dy = +2
    offset[:, 1::2] = -1.0  # dx = -1
    # A 3x3 conv with padding 1 reads rows -1..10; here every read moves by (+2, -1), so it reads
    # S[i, j] = x[i - 1 + 2, j - 1 - 1] (zero outside x) with no further padding.
    padded = F.pad(x, (3, 3, 3, 3))                  # padded[a, b] = x[a - 3, b - 3]
    want = F.conv2d(padded[:, :, 4:16, 1:15], weight)
    torch.testing.assert_close(fn(x, offset, weight, padding=1), want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("fn", BOTH)
def test_offsets_outside_give_the_zero_padding_result(native_ops, fn):
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    bias = torch.randn(3, dtype=torch.float64)
    far = torch.full((1, 18, 6, 6), 50.0, dtype=torch.float64, requires_grad=True)
    out = fn(x, far, weight, bias, padding=1)
    torch.testing.assert_close(out, bias.view(1, 3, 1, 1).expand_as(out))
    gx, goff = torch.autograd.grad(out.sum(), (x, far))
    assert gx.abs().max() == 0 and goff.abs().max() == 0
    # Half a pixel left of the border: half the weight on the border pixel, half on the padding.
    img = torch.arange(1.0, 5.0, dtype=torch.float64).view(1, 1, 2, 2)
    half = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    half[:, 1] = -0.5
    out = fn(img, half, torch.ones(1, 1, 1, 1, dtype=torch.float64))
    torch.testing.assert_close(out[..., 0], 0.5 * img[..., 0])
    torch.testing.assert_close(out[..., 1], 0.5 * (img[..., 0] + img[..., 1]))


def test_gradcheck(native_ops):
    t, kw = make(CASES[1], torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda i, o, w, b, m: deform_conv2d(i, o, w, b, mask=m, **kw),
        (t["input"], t["offset"], t["weight"], t["bias"], t["mask"]))


def test_non_contiguous_inputs_and_no_bias_no_mask(native_ops):
    t, kw = make(CASES[0], torch.float64)
    x = t["input"].transpose(2, 3).contiguous().transpose(2, 3)
    offset = t["offset"][:, :, :, :]
    torch.testing.assert_close(deform_conv2d(x, offset, t["weight"], **kw),
                               deform_conv2d_reference(x, offset, t["weight"], **kw))


def test_flops(native_ops):
    t, kw = make(CASES[3], torch.float32)
    got = count_flops(lambda *a: call(deform_conv2d, t, kw)).flops
    n, cin, cout, _, _, (kh, kw_), _, _, _, h, w = CASES[3]
    assert got == 2 * (n * cout * cin * kh * kw_ * h * w + 4 * n * cin * kh * kw_ * h * w)


def test_native_and_reference_count_the_same_flops(native_ops):
    t, kw = make(CASES[3], torch.float32, requires_grad=True)
    inputs = (t["input"], t["offset"], t["weight"], t["bias"], t["mask"])
    counts = [count_flops(lambda i, o, w, b, m: fn(i, o, w, b, mask=m, **kw), *inputs, backward=True).macs
              for fn in BOTH]
    assert counts[0] == counts[1]


@pytest.mark.parametrize("fn", BOTH)
def test_bad_inputs(fn):
    x, w = torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3)
    off = torch.zeros(1, 18, 8, 8)
    with pytest.raises(ValueError, match=r"input: expected a 4-d"):
        fn(x[0], off, w, padding=1)
    with pytest.raises(ValueError, match=r"offset: .*Ho=8"):
        fn(x, torch.zeros(1, 18, 6, 6), w, padding=1)
    with pytest.raises(ValueError, match=r"offset: expected shape .*2\*offset_groups\*9"):
        fn(x, torch.zeros(1, 17, 8, 8), w, padding=1)
    with pytest.raises(ValueError, match=r"offset: .*offset_groups dividing Cin=4"):
        fn(x, torch.zeros(1, 54, 8, 8), w, padding=1)
    with pytest.raises(ValueError, match=r"mask: .*C=9"):
        fn(x, off, w, padding=1, mask=torch.ones(1, 18, 8, 8))
    with pytest.raises(ValueError, match=r"weight: .*groups dividing Cin=4"):
        fn(x, off, torch.randn(6, 3, 3, 3), padding=1)
    with pytest.raises(ValueError, match=r"bias: .*Cout=6"):
        fn(x, off, w, torch.randn(5), padding=1)
    with pytest.raises(TypeError, match=r"offset: expected dtype torch.float32"):
        fn(x, off.double(), w, padding=1)
    with pytest.raises(TypeError, match="input"):
        fn(x.long(), off, w, padding=1)
    with pytest.raises(ValueError, match="does not fit"):
        fn(torch.randn(1, 4, 2, 2), torch.zeros(1, 18, 1, 1), w)
    with pytest.raises(ValueError, match="stride"):
        fn(x, off, w, stride=0, padding=1)


def test_native_kernel_checks_name_the_argument(native_ops):
    x, w = torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3)
    off, mask, bias = torch.zeros(1, 18, 8, 8), torch.ones(1, 9, 8, 8), torch.zeros(6)
    args = ([1, 1], [1, 1], [1, 1], 1, 1)
    with pytest.raises(RuntimeError, match=r"deform_conv2d: mask: expected shape"):
        native_ops.deform_conv2d(x, off, mask[:, :8], w, bias, *args)
    with pytest.raises(RuntimeError, match=r"deform_conv2d: offset_groups"):
        native_ops.deform_conv2d(x, off, mask, w, bias, [1, 1], [1, 1], [1, 1], 1, 3)
    with pytest.raises(RuntimeError, match=r"deform_conv2d_backward: grad_out: expected shape"):
        native_ops.deform_conv2d_backward(torch.zeros(1, 6, 7, 8), x, off, mask, w, *args)


def test_empty_mask_is_no_modulation_without_a_mask_of_ones(native_ops):
    t, kw = make(CASES[2], torch.float64, requires_grad=True)
    args = [list(kw[k]) for k in ("stride", "padding", "dilation")] + [2, 3]
    inputs = (t["input"], t["offset"], t["mask"], t["weight"], t["bias"])
    empty = t["input"].new_empty(0)
    ones = torch.ones_like(t["mask"]).requires_grad_()
    got = native_ops.deform_conv2d(inputs[0], inputs[1], empty, *inputs[3:], *args)
    want = native_ops.deform_conv2d(inputs[0], inputs[1], ones, *inputs[3:], *args)
    torch.testing.assert_close(got, want)
    grad = torch.randn_like(got)
    x, offset, weight = (v.detach() for v in (inputs[0], inputs[1], inputs[3]))
    grads = native_ops.deform_conv2d_backward(grad, x, offset, empty, weight, *args)
    wanted = native_ops.deform_conv2d_backward(grad, x, offset, ones.detach(), weight, *args)
    assert grads[2].shape == (0,)  # no mask gradient is computed or stored
    for i in (0, 1, 3, 4):
        torch.testing.assert_close(grads[i], wanted[i])
    torch.library.opcheck(native_ops.deform_conv2d.default,
                          (inputs[0], inputs[1], empty, *inputs[3:], *args))
    x = t["input"].detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda i: deform_conv2d(i, t["offset"].detach(), t["weight"].detach(), **kw), (x,))


# Regressions of issue 22, regenerated from the two inputs captured from the models (float32). Both
# hit the old floor-by-truncation of y + 1 in clamped_bilinear: just below the far border it rounded
# up, and the kernel read a full-weight corner one row / column past the map.
def native_equals_reference_on_every_call(x, offset, weight, bias, mask):
    want = deform_conv2d_reference(x, offset, weight, bias, padding=1, mask=mask)
    assert want.isfinite().all()
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs = [deform_conv2d(x, offset, weight, bias, padding=1, mask=mask) for _ in range(3)]
            for out in outs:
                assert torch.equal(out, outs[0])
                torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-5)  # fp32 sums of ~150 products
    finally:
        torch.set_num_threads(previous)


def test_erdn_case_a_tap_one_rounding_below_the_right_border(native_ops):
    gen = torch.Generator().manual_seed(22)
    # ERDN's first-stage PCD DCN at 32x32, 8 channels per offset group.
    x = torch.randn(1, 16, 32, 32, generator=gen)
    offset = 0.5 * torch.randn(1, 2 * 2 * 9, 32, 32, generator=gen)
    mask = torch.rand(1, 2 * 9, 32, 32, generator=gen)
    weight, bias = torch.randn(8, 16, 3, 3, generator=gen), torch.randn(8, generator=gen)
    # Group 0, tap 8 (ky = kx = 2) of output (0, 31) samples x = 31 - 1 + 2 + dx, y = 0 - 1 + 2 + 0.3.
    dx = torch.tensor(-1.147e-6)
    offset[0, 2 * 8, 0, 31], offset[0, 2 * 8 + 1, 0, 31] = 0.3, dx
    x_sample = torch.tensor(32.0) + dx
    assert x_sample < 32 and torch.floor(x_sample + 1) - 1 == 32  # the trap: truncating x + 1 gives W
    native_equals_reference_on_every_call(x, offset, weight, bias, mask)


def test_bsstnet_refiner_case_large_saturated_offsets_at_the_borders(native_ops):
    gen = torch.Generator().manual_seed(22)
    # BSSTNet's flow-refiner DCN on the 1/4 grid: 16 offset groups, offsets = flows of up to 38 px
    # plus a residue of 5 tanh(.) (a quarter saturated at +-5), a tenth of the taps one float32
    # step below the bottom or right border.
    h = w = 16
    x = torch.randn(1, 32, h, w, generator=gen)
    flows = 38 * (2 * torch.rand(1, 16, 1, 2, h, w, generator=gen) - 1)
    residue = 5 * torch.tanh(3 * torch.randn(1, 16, 9, 2, h, w, generator=gen))
    offset = flows + residue
    base_y = (torch.arange(h) - 1).view(h, 1) + (torch.arange(9) // 3).view(9, 1, 1)
    base_x = (torch.arange(w) - 1).view(1, w) + (torch.arange(9) % 3).view(9, 1, 1)
    just_below = torch.nextafter(torch.tensor(float(h)), torch.tensor(0.0))
    at_border = torch.rand(1, 16, 9, h, w, generator=gen) < 0.1
    offset[:, :, :, 0] = torch.where(at_border, just_below - base_y, offset[:, :, :, 0])
    offset[:, :, :, 1] = torch.where(at_border.roll(1, dims=-1), just_below - base_x, offset[:, :, :, 1])
    offset = offset.reshape(1, 2 * 16 * 9, h, w)
    mask = torch.rand(1, 16 * 9, h, w, generator=gen)
    weight, bias = torch.randn(8, 32, 3, 3, generator=gen), torch.randn(8, generator=gen)
    native_equals_reference_on_every_call(x, offset, weight, bias, mask)
    native_equals_reference_on_every_call(x, offset, weight, bias, torch.ones_like(mask))
