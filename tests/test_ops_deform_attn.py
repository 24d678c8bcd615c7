"""ms_deform_attn: native kernel vs reference, sampling semantics, gradients, registration, bad inputs."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from deblurlayers.flops import count_flops
from deblurlayers.ops import level_start_index, ms_deform_attn, ms_deform_attn_reference

from helpers import TOLERANCES

# (N, M, D, Lq, P, levels)
CASES = [
    (2, 3, 5, 11, 4, [(5, 7), (3, 4), (6, 2)]),   # Deformable-DETR-like pyramid, odd D
    (1, 4, 8, 30, 3, [(5, 6)] * 3),                # STDANet-like: one level per frame
    (3, 1, 1, 4, 1, [(1, 1), (2, 9)]),             # single pixel level, D = 1
    (1, 2, 33, 6, 2, [(4, 4)]),                    # D > 32, one level
]


def make(case, dtype=torch.float64, requires_grad=False, spread=0.2):
    """Random inputs with locations in [-spread, 1 + spread] (some taps outside the maps)."""
    n, m, d, lq, p, levels = case
    s = sum(h * w for h, w in levels)
    value = torch.randn(n, s, m, d, dtype=dtype)
    loc = torch.rand(n, lq, m, len(levels), p, 2, dtype=dtype) * (1 + 2 * spread) - spread
    weights = torch.rand(n, lq, m, len(levels), p, dtype=dtype)
    return [t.requires_grad_(requires_grad) for t in (value, loc, weights)] + [levels]


def bilinear_zero_pad(img, x, y):
    """Literal zero-padded bilinear sample of img (H, W, D) at pixel position (x, y)."""
    h, w, _ = img.shape
    x0, y0 = int(torch.floor(torch.tensor(x))), int(torch.floor(torch.tensor(y)))
    out = torch.zeros(img.shape[-1], dtype=img.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[yy, xx]
    return out


def literal_loop(value, levels, loc, weights):
    """Deformable-DETR's definition, element by element."""
    n_, _, m_, d = value.shape
    _, lq, _, num_levels, p_, _ = loc.shape
    out = torch.zeros(n_, lq, m_ * d, dtype=value.dtype)
    start = 0
    for l, (h, w) in enumerate(levels):
        img = value[:, start:start + h * w].reshape(n_, h, w, m_, d)
        start += h * w
        for n in range(n_):
            for q in range(lq):
                for m in range(m_):
                    for p in range(p_):
                        x = float(loc[n, q, m, l, p, 0]) * w - 0.5
                        y = float(loc[n, q, m, l, p, 1]) * h - 0.5
                        out[n, q, m * d:(m + 1) * d] += weights[n, q, m, l, p] * bilinear_zero_pad(
                            img[n, :, :, m], x, y)
    return out


@pytest.mark.parametrize("fn", [ms_deform_attn, ms_deform_attn_reference])
def test_matches_literal_loop(fn):
    value, loc, weights, levels = make(CASES[0])
    torch.testing.assert_close(fn(value, levels, None, loc, weights), literal_loop(value, levels, loc, weights))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_native_matches_reference_forward_backward(native_ops, case, dtype):
    value, loc, weights, levels = make(case, dtype, requires_grad=True)
    out = ms_deform_attn(value, levels, None, loc, weights)
    ref = ms_deform_attn_reference(value, levels, None, loc, weights)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (value, loc, weights), grad)
    want = torch.autograd.grad(ref, (value, loc, weights), grad)
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(out, ref, **tol)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, **tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_native_low_precision_matches_fp32_reference(native_ops, dtype):
    value, loc, weights, levels = make(CASES[1], torch.float32, requires_grad=True)
    low = [t.detach().to(dtype).requires_grad_() for t in (value, loc, weights)]
    out = ms_deform_attn(low[0], levels, None, low[1], low[2])
    assert out.dtype == dtype
    fp32 = [t.detach().float().requires_grad_() for t in low]
    ref = ms_deform_attn_reference(fp32[0], levels, None, fp32[1], fp32[2])
    tol = dict(atol=TOLERANCES[dtype]["atol"] * 10, rtol=TOLERANCES[dtype]["rtol"])
    torch.testing.assert_close(out.float(), ref, **tol)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, low, grad.to(dtype))
    want = torch.autograd.grad(ref, fp32, grad.to(dtype).float())
    assert [g.dtype for g in got] == [dtype] * 3
    # Location gradients scale with W and H: compare relative to their magnitude.
    for g, r in zip(got, want):
        torch.testing.assert_close(g.float(), r, atol=tol["atol"] * r.abs().max().item(), rtol=tol["rtol"] * 4)


@given(n=st.integers(0, 2), m=st.integers(1, 3), d=st.integers(1, 9), lq=st.integers(0, 7), p=st.integers(1, 4),
       levels=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=3))
def test_property_native_equals_reference(native_ops, n, m, d, lq, p, levels):
    value, loc, weights, levels = make((n, m, d, lq, p, levels), requires_grad=True, spread=0.5)
    out = ms_deform_attn(value, levels, None, loc, weights)
    ref = ms_deform_attn_reference(value, levels, None, loc, weights)
    assert out.shape == (n, lq, m * d)
    torch.testing.assert_close(out, ref, **TOLERANCES[torch.float64])
    if out.numel():
        got = torch.autograd.grad(out.sum(), (value, loc, weights))
        want = torch.autograd.grad(ref.sum(), (value, loc, weights))
        for g, r in zip(got, want):
            torch.testing.assert_close(g, r, **TOLERANCES[torch.float64])


@pytest.mark.parametrize("fn", [ms_deform_attn, ms_deform_attn_reference])
def test_one_hot_attention_at_pixel_centres_reads_the_pixels(fn):
    """Zero offsets from the reference points + one-hot weights = the value at the query's pixel."""
    h, w, m, d, p = 4, 6, 2, 3, 5
    levels = [(h, w), (h, w)]
    value = torch.randn(1, 2 * h * w, m, d, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    ref_points = torch.stack((xs.flatten() / w, ys.flatten() / h), -1)  # (h*w, 2)
    loc = ref_points.view(1, h * w, 1, 1, 1, 2).expand(1, h * w, m, 2, p, 2).contiguous()
    weights = torch.zeros(1, h * w, m, 2, p, dtype=torch.float64)
    weights[:, :, :, 1, 3] = 1.0  # level 1, point 3
    out = fn(value, levels, None, loc, weights)
    torch.testing.assert_close(out, value[:, h * w:].flatten(2))


@pytest.mark.parametrize("fn", [ms_deform_attn, ms_deform_attn_reference])
def test_fractional_location_is_bilinear(fn):
    value = torch.randn(1, 12, 1, 2, dtype=torch.float64)  # one 3x4 level
    loc = torch.tensor([0.3, 0.7], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    out = fn(value, [(3, 4)], None, loc, torch.ones(1, 1, 1, 1, 1, dtype=torch.float64))
    x, y = 0.3 * 4 - 0.5, 0.7 * 3 - 0.5  # (0.7, 1.6)
    img = value[0, :, 0].view(3, 4, 2)
    want = (0.4 * 0.3 * img[1, 0] + 0.4 * 0.7 * img[1, 1] + 0.6 * 0.3 * img[2, 0] + 0.6 * 0.7 * img[2, 1])
    assert abs(x - 0.7) < 1e-12 and abs(y - 1.6) < 1e-12
    torch.testing.assert_close(out.view(2), want)


@pytest.mark.parametrize("fn", [ms_deform_attn, ms_deform_attn_reference])
def test_far_outside_reads_zero_and_has_no_gradient(fn):
    value, loc, weights, levels = make(CASES[1], requires_grad=True)
    far = (loc.detach() + torch.tensor([3.0, -2.5], dtype=loc.dtype)).requires_grad_()
    out = fn(value, levels, None, far, weights)
    assert torch.count_nonzero(out) == 0
    grads = torch.autograd.grad(out.sum(), (value, far, weights))
    assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_partially_outside_uses_zero_padding():
    """Half a pixel left of the map: half the border pixel's value (a clamped sampler would give all)."""
    value = torch.ones(1, 4, 1, 1, dtype=torch.float64)  # 2x2 of ones
    loc = torch.tensor([0.0, 0.25], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)  # pixel (x, y) = (-0.5, 0)
    out = ms_deform_attn(value, [(2, 2)], None, loc, torch.ones(1, 1, 1, 1, 1, dtype=torch.float64))
    torch.testing.assert_close(out.view(()), torch.tensor(0.5, dtype=torch.float64))


def test_tensor_and_sequence_spatial_shapes_agree(native_ops):
    value, loc, weights, levels = make(CASES[0])
    shapes = torch.tensor(levels)
    out_t = ms_deform_attn(value, shapes, level_start_index(shapes), loc, weights)
    torch.testing.assert_close(out_t, ms_deform_attn(value, levels, None, loc, weights))
    torch.testing.assert_close(ms_deform_attn(value, shapes, None, loc, weights), out_t)
    assert level_start_index(shapes).tolist() == [0, 35, 47]


@pytest.mark.parametrize("case", [CASES[0], CASES[2]])
def test_gradcheck(native_ops, case):
    n, m, d, lq, p, levels = case
    value, loc, weights, levels = make((1, m, min(d, 3), min(lq, 4), min(p, 2), levels), requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, l, a: ms_deform_attn(v, levels, None, l, a), (value, loc, weights))


def test_flops_equal_the_reference_count(native_ops):
    value, loc, weights, levels = make((1, 4, 32, 3 * 45 * 80, 12, [(45, 80)] * 3), torch.float32,
                                       requires_grad=True)
    samples = weights.numel() * value.shape[-1]
    native = count_flops(lambda v, l, a: ms_deform_attn(v, levels, None, l, a), value, loc, weights, backward=True)
    assert native.by_op == {"deblurlayers.ms_deform_attn": 2 * 5 * samples,
                            "deblurlayers.ms_deform_attn_backward": 2 * 14 * samples}
    reference = count_flops(lambda v, l, a: ms_deform_attn_reference(v, levels, None, l, a), value, loc, weights,
                            backward=True)
    assert reference.macs == native.macs


@pytest.mark.parametrize("fn", [ms_deform_attn, ms_deform_attn_reference])
def test_bad_inputs(fn):
    value, loc, weights, levels = make(CASES[0], torch.float32)  # levels hold 35 + 12 + 12 = 59 rows
    with pytest.raises(ValueError, match=r"spatial_shapes: expected 3 \(H, W\) pairs .* got \[\(5, 7\), \(3, 4\)\]"):
        fn(value, levels[:2], None, loc, weights)
    with pytest.raises(ValueError, match=r"sum\(H\*W\) = 60 positions, but value has S = 59"):
        fn(value, [(5, 7), (3, 4), (13, 1)], None, loc, weights)
    with pytest.raises(ValueError, match=r"spatial_shapes: expected a 2-d tensor of shape \(L=3, 2\)"):
        fn(value, torch.tensor(levels).flatten(), None, loc, weights)
    with pytest.raises(ValueError, match=r"level_start_index: expected the exclusive prefix sum of H\*W, "
                                         r"\[0, 35, 47\], got \[0, 35, 46\]"):
        fn(value, torch.tensor(levels), torch.tensor([0, 35, 46]), loc, weights)
    with pytest.raises(TypeError, match="spatial_shapes: expected dtype torch.int64, got torch.int32"):
        fn(value, torch.tensor(levels, dtype=torch.int32), None, loc, weights)
    with pytest.raises(ValueError, match=r"sampling_locations: expected shape \(N=2, Lq, M=3, L, P, 2\) with M=3"):
        fn(value, levels, None, loc[:, :, :2], weights)
    with pytest.raises(ValueError, match=r"attention_weights: expected shape \(N=2, Lq=11, M=3, L=3, P=4\) with P=4"):
        fn(value, levels, None, loc, weights[..., :3])
    with pytest.raises(ValueError, match=r"value: expected a 4-d tensor of shape \(N, S, M, D\)"):
        fn(value.flatten(2), levels, None, loc, weights)
    with pytest.raises(TypeError, match="sampling_locations: expected dtype torch.float32 .* got torch.float64"):
        fn(value, levels, None, loc.double(), weights)
    with pytest.raises(TypeError, match="value: expected a floating-point tensor"):
        fn(value.long(), levels, None, loc, weights)


def test_native_kernel_checks_name_the_argument(native_ops):
    value, loc, weights, levels = make(CASES[0], torch.float32)
    with pytest.raises(RuntimeError, match=r"ms_deform_attn: spatial_shapes: the levels hold sum\(H\*W\) = 60"):
        native_ops.ms_deform_attn(value, torch.tensor([[5, 7], [3, 4], [13, 1]]), torch.tensor([0, 35, 47]),
                                  loc, weights)
    with pytest.raises(RuntimeError, match="ms_deform_attn: level_start_index: expected the exclusive prefix sum"):
        native_ops.ms_deform_attn(value, torch.tensor(levels), torch.tensor([0, 30, 47]), loc, weights)
    with pytest.raises(RuntimeError, match=r"ms_deform_attn: attention_weights: expected shape \[2, 11, 3, 3, 4\]"):
        native_ops.ms_deform_attn(value, torch.tensor(levels), torch.tensor([0, 35, 47]), loc, weights[:1])
