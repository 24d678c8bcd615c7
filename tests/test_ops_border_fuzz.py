"""Border fuzz of every native op against its PyTorch reference (issue 22).

The other op tests draw small random offsets, so no sample lands where kernels go wrong. Here the
sampling locations are drawn from a mixture that puts mass exactly on the integer pixel lines and
the image borders (-1, 0, size - 1, size), a few float ulps either side of them, far outside (up to
3x the map), on NaN and +-inf, and whole output columns and rows sampling outside. The shapes
include 1x1 maps, widths that are not a multiple of any vector width and channel counts around the
SIMD widths. Each case runs forward and backward, in fp32 and fp64, on 1 and 2 threads, and every
native call is made twice and must be bit-identical: an uninitialised or out-of-bounds read shows as
run-to-run change long before it shows as a wrong value.

Bilinear sampling has kinks at integer coordinates: there the derivative with respect to the location
jumps, and the reference (grid_sample, which normalises coordinates to [-1, 1] and back) can round a
location that sits exactly on a kink to the other side. A location gradient is therefore accepted
when it equals the reference's at the location, or at the location moved by +-delta along the same
axis (a one-sided derivative); every other output and gradient must equal the reference's.
"""
import contextlib
from typing import Iterator

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from deblurlayers import ops
from deblurlayers.utils.env import use_backend

from helpers import TOLERANCES

DTYPES = [torch.float32, torch.float64]
# Far enough that a +-delta shift crosses a kink only for locations within rounding error of it.
KINK_DELTA = {torch.float32: 1e-3, torch.float64: 1e-9}
# Each example takes milliseconds: many more than the suite's default 25.
fuzz = settings(max_examples=200)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def border_coordinates(gen: torch.Generator, shape, size: int, dtype: torch.dtype,
                       nonfinite: bool) -> torch.Tensor:
    """Pixel coordinates along an axis of ``size`` pixels (pixel j at coordinate j), drawn to hit
    what kernels get wrong: integers on and around the borders, +-1..3 ulps of them (in ``dtype``),
    anywhere in (-1.5, size + 0.5), far outside (up to 3x the size), and NaN / +-inf."""
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    borders = torch.tensor([-1.0, 0.0, size - 1.0, float(size)], dtype=torch.float64)
    on_border = borders[torch.randint(0, 4, shape, generator=gen)]
    integer = torch.randint(-2, size + 2, shape, generator=gen).to(torch.float64)
    line = torch.where(torch.rand(shape, generator=gen) < 0.6, on_border, integer).to(dtype)
    # k ulps above or below the line, counted in the op's own dtype.
    near = line.clone()
    steps = torch.randint(1, 4, shape, generator=gen)
    direction = torch.where(torch.rand(shape, generator=gen) < 0.5, -torch.inf, torch.inf).to(dtype)
    for _ in range(3):
        moved = torch.nextafter(near, direction)
        near = torch.where(steps > 0, moved, near)
        steps = steps - 1
    anywhere = (torch.rand(shape, generator=gen, dtype=torch.float64) * (size + 2.0) - 1.5).to(dtype)
    far = (torch.rand(shape, generator=gen, dtype=torch.float64) * 8 * size - 4 * size).to(dtype)
    special = torch.tensor([torch.nan, torch.inf, -torch.inf], dtype=dtype)[torch.randint(0, 3, shape, generator=gen)]
    out = torch.where(u < 0.3, line, near)
    out = torch.where((u >= 0.55) & (u < 0.75), anywhere, out)
    out = torch.where(u >= 0.75, far, out)
    if nonfinite:
        out = torch.where(u >= 0.97, special, out)
    return out


def assert_bit_identical(first, second, what):
    for i, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0)), (
            f"{what}: output {i} changed between two identical native calls (an uninitialised or "
            f"out-of-bounds read)")


def close(a, b, dtype, scale):
    tol = TOLERANCES[dtype]
    return torch.isclose(a, b, rtol=tol["rtol"], atol=tol["atol"] * scale, equal_nan=True)


def assert_matches(got, want, dtype, what):
    scale = max(1.0, want.nan_to_num(0.0, 0.0, 0.0).abs().max().item()) if want.numel() else 1.0
    ok = close(got, want, dtype, scale)
    assert bool(ok.all()), (
        f"{what}: {int((~ok).sum())} of {ok.numel()} entries differ from the reference, first at "
        f"{tuple(int(i) for i in (~ok).nonzero()[0])}: {got[~ok][:4].tolist()} vs {want[~ok][:4].tolist()}")


def assert_matches_up_to_kinks(got, want, one_sided, dtype, what):
    """``got`` equals ``want`` or, entry by entry, one of the one-sided derivatives."""
    scale = max(1.0, want.nan_to_num(0.0, 0.0, 0.0).abs().max().item()) if want.numel() else 1.0
    ok = close(got, want, dtype, scale)
    for side in one_sided:
        ok |= close(got, side, dtype, scale)
    assert bool(ok.all()), (
        f"{what}: {int((~ok).sum())} of {ok.numel()} entries match neither the reference nor a "
        f"one-sided derivative: {got[~ok][:4].tolist()} vs {want[~ok][:4].tolist()}")


def run_twice(fn, inputs, grad):
    """Native forward and backward, each done twice: (out, grads) of the first call."""
    results = []
    for _ in range(2):
        with use_backend("native"):
            out = fn(*inputs)
            grads = torch.autograd.grad(out, [t for t in inputs if t.requires_grad], grad, allow_unused=True)
        results.append((out.detach(), *[g if g is not None else torch.zeros(()) for g in grads]))
    return results


def reference_grads(fn, inputs, grad):
    out = fn(*inputs)
    grads = torch.autograd.grad(out, [t for t in inputs if t.requires_grad], grad)
    return (out.detach(), *grads)


# ---------------------------------------------------------------------------
# deform_conv2d
# ---------------------------------------------------------------------------

def out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def dcn_offsets(gen, n, og, kh, kw, ho, wo, h, w, stride, pad, dil, dtype, nonfinite):
    """Offsets (N, 2*og*kh*kw, Ho, Wo) that put each tap at a border coordinate; one output column
    and one output row sample only far outside."""
    shape = (n, og, kh * kw, ho, wo)
    tap = torch.arange(kh * kw)
    base_y = (torch.arange(ho) * stride - pad).view(ho, 1) + (tap // kw * dil).view(-1, 1, 1)
    base_x = (torch.arange(wo) * stride - pad).view(1, wo) + (tap % kw * dil).view(-1, 1, 1)
    y = border_coordinates(gen, shape, h, dtype, nonfinite).double()
    x = border_coordinates(gen, shape, w, dtype, nonfinite).double()
    x[..., int(torch.randint(0, wo, (), generator=gen))] = -3.0 * w - 2
    y[..., int(torch.randint(0, ho, (), generator=gen)), :] = 3.0 * h + 2
    offset = torch.stack([y - base_y, x - base_x], dim=3)  # (n, og, K, 2, ho, wo): (dy, dx) pairs
    return offset.reshape(n, 2 * og * kh * kw, ho, wo).to(dtype)


@fuzz
@given(n=st.integers(1, 2), og=st.integers(1, 3), cpg=st.sampled_from([1, 3, 7, 8, 9, 16, 17]),
       weight_groups=st.integers(1, 2), cout_g=st.integers(1, 3),
       kernel=st.sampled_from([(1, 1), (3, 3), (2, 3)]), stride=st.integers(1, 2), pad=st.integers(0, 2),
       dil=st.integers(1, 2), h=st.integers(1, 12) | st.integers(20, 24), w=st.integers(1, 13) | st.integers(36, 40),
       with_mask=st.booleans(), nonfinite=st.booleans(), dtype=st.sampled_from(DTYPES),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**31 - 1))
def test_deform_conv2d_border_fuzz(native_ops, n, og, cpg, weight_groups, cout_g, kernel, stride, pad, dil,
                                   h, w, with_mask, nonfinite, dtype, threads, seed):
    cin = og * cpg
    groups = weight_groups if cin % weight_groups == 0 else 1
    kh, kw = kernel
    ho, wo = out_size(h, kh, stride, pad, dil), out_size(w, kw, stride, pad, dil)
    assume(ho >= 1 and wo >= 1)  # else rejected by the op's own checks (test_ops_deform_conv.py)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=gen, dtype=torch.float64).to(dtype)
    weight = torch.randn(cout_g * groups, cin // groups, kh, kw, generator=gen, dtype=torch.float64).to(dtype)
    bias = torch.randn(cout_g * groups, generator=gen, dtype=torch.float64).to(dtype)
    offset = dcn_offsets(gen, n, og, kh, kw, ho, wo, h, w, stride, pad, dil, dtype, nonfinite)
    mask = torch.rand(n, og * kh * kw, ho, wo, generator=gen, dtype=torch.float64).to(dtype) if with_mask else None
    grad = torch.randn(n, cout_g * groups, ho, wo, generator=gen, dtype=torch.float64).to(dtype)
    kw_args = dict(stride=stride, padding=pad, dilation=dil)

    def call(fn):
        if with_mask:
            return lambda i, o, wt, b, m: fn(i, o, wt, b, mask=m, **kw_args)
        return lambda i, o, wt, b: fn(i, o, wt, b, **kw_args)

    def inputs(off=offset):
        tensors = [x, off, weight, bias] + ([mask] if with_mask else [])
        return [t.clone().requires_grad_() for t in tensors]

    with num_threads(threads):
        first, second = run_twice(call(ops.deform_conv2d), inputs(), grad)
    assert_bit_identical(first, second, "deform_conv2d")
    want = reference_grads(call(ops.deform_conv2d_reference), inputs(), grad)
    names = ["output", "grad_input", "grad_offset", "grad_weight", "grad_bias", "grad_mask"]
    for i, name in enumerate(names[:len(want)]):
        if name != "grad_offset":
            assert_matches(first[i], want[i], dtype, f"deform_conv2d {name}")
    # Location gradients: the dy channels against y moved by +-delta, the dx channels against x moved.
    delta, is_dy = KINK_DELTA[dtype], (torch.arange(offset.shape[1]) % 2 == 0).view(1, -1, 1, 1)
    sides = []
    for sign in (1, -1):
        moved_y = reference_grads(call(ops.deform_conv2d_reference), inputs(offset + sign * delta * is_dy), grad)[2]
        moved_x = reference_grads(call(ops.deform_conv2d_reference), inputs(offset + sign * delta * ~is_dy), grad)[2]
        sides.append(torch.where(is_dy, moved_y, moved_x))
    assert_matches_up_to_kinks(first[2], want[2], sides, dtype, "deform_conv2d grad_offset")


# ---------------------------------------------------------------------------
# ms_deform_attn
# ---------------------------------------------------------------------------

@fuzz
@given(n=st.integers(1, 2), m=st.integers(1, 2), d=st.sampled_from([1, 3, 7, 8, 9, 16, 17, 33]),
       levels=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 11)), min_size=1, max_size=3),
       lq=st.integers(1, 6), p=st.integers(1, 4), nonfinite=st.booleans(), dtype=st.sampled_from(DTYPES),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**31 - 1))
def test_ms_deform_attn_border_fuzz(native_ops, n, m, d, levels, lq, p, nonfinite, dtype, threads, seed):
    gen = torch.Generator().manual_seed(seed)
    s = sum(hh * ww for hh, ww in levels)
    value = torch.randn(n, s, m, d, generator=gen, dtype=torch.float64).to(dtype)
    shape = (n, lq, m, p)
    # Pixel coordinates (x = loc * W - 0.5) drawn per level, then normalised as the op takes them.
    loc = torch.stack([torch.stack([(border_coordinates(gen, shape, ww, dtype, nonfinite).double() + 0.5) / ww,
                                    (border_coordinates(gen, shape, hh, dtype, nonfinite).double() + 0.5) / hh],
                                   dim=-1) for hh, ww in levels], dim=3).to(dtype)
    attn = torch.rand(n, lq, m, len(levels), p, generator=gen, dtype=torch.float64).to(dtype)
    grad = torch.randn(n, lq, m * d, generator=gen, dtype=torch.float64).to(dtype)

    def call(fn):
        return lambda v, l, a: fn(v, levels, None, l, a)

    def inputs(locations=loc):
        return [t.clone().requires_grad_() for t in (value, locations, attn)]

    with num_threads(threads):
        first, second = run_twice(call(ops.ms_deform_attn), inputs(), grad)
    assert_bit_identical(first, second, "ms_deform_attn")
    want = reference_grads(call(ops.ms_deform_attn_reference), inputs(), grad)
    for i, name in ((0, "output"), (1, "grad_value"), (3, "grad_attention_weights")):
        assert_matches(first[i], want[i], dtype, f"ms_deform_attn {name}")
    # One pixel in normalised units is 1 / W (x) or 1 / H (y): delta is moved per level and axis.
    sizes = torch.tensor([[ww, hh] for hh, ww in levels], dtype=torch.float64).view(1, 1, 1, -1, 1, 2)
    is_x = torch.tensor([True, False])
    sides = []
    for sign in (1, -1):
        step = (sign * KINK_DELTA[dtype] / sizes).to(dtype)
        moved_x = reference_grads(call(ops.ms_deform_attn_reference), inputs(loc + step * is_x), grad)[2]
        moved_y = reference_grads(call(ops.ms_deform_attn_reference), inputs(loc + step * ~is_x), grad)[2]
        sides.append(torch.where(is_x, moved_x, moved_y))
    assert_matches_up_to_kinks(first[2], want[2], sides, dtype, "ms_deform_attn grad_sampling_locations")


# ---------------------------------------------------------------------------
# pixel_dynamic_filter and the Haar pair: no sampling locations, so the fuzz is over the shapes
# whose edges the kernels special-case (1x1 maps, maps narrower than the filter, odd widths,
# channel runs around the vector widths) and over extreme values.
# ---------------------------------------------------------------------------

def extreme_values(gen, shape, dtype):
    """Random values with a share of exact zeros and of large magnitudes."""
    values = torch.randn(shape, generator=gen, dtype=torch.float64)
    pick = torch.rand(shape, generator=gen)
    values = torch.where(pick < 0.1, torch.zeros_like(values), values)
    values = torch.where(pick > 0.95, values * 1e4, values)
    return values.to(dtype)


@fuzz
@given(b=st.integers(1, 2), groups=st.integers(1, 3), cpg=st.sampled_from([1, 3, 8, 9, 17]),
       k=st.sampled_from([1, 3, 5, 7]), h=st.integers(1, 12), w=st.integers(1, 19),
       low_resolution=st.booleans(), dtype=st.sampled_from(DTYPES), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**31 - 1))
def test_pixel_dynamic_filter_border_fuzz(native_ops, b, groups, cpg, k, h, w, low_resolution, dtype, threads,
                                          seed):
    gen = torch.Generator().manual_seed(seed)
    hk, wk = ((h + 1) // 2, (w + 2) // 3) if low_resolution else (h, w)
    x = extreme_values(gen, (b, groups * cpg, h, w), dtype)
    kernels = extreme_values(gen, (b, groups * k * k, hk, wk), dtype)
    grad = torch.randn(b, groups * cpg, h, w, generator=gen, dtype=torch.float64).to(dtype)

    def call(fn):
        return lambda xx, kk: fn(xx, kk, k)

    def inputs():
        return [t.clone().requires_grad_() for t in (x, kernels)]

    with num_threads(threads):
        first, second = run_twice(call(ops.pixel_dynamic_filter), inputs(), grad)
    assert_bit_identical(first, second, "pixel_dynamic_filter")
    want = reference_grads(call(ops.pixel_dynamic_filter_reference), inputs(), grad)
    for i, name in enumerate(["output", "grad_x", "grad_kernels"]):
        assert_matches(first[i], want[i], dtype, f"pixel_dynamic_filter {name}")


@fuzz
@given(b=st.integers(1, 2), c=st.sampled_from([1, 3, 8, 9, 17]), h=st.integers(1, 9), w=st.integers(1, 21),
       norm=st.sampled_from(["avg", "ortho"]), dtype=st.sampled_from(DTYPES), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**31 - 1))
def test_haar_border_fuzz(native_ops, b, c, h, w, norm, dtype, threads, seed):
    gen = torch.Generator().manual_seed(seed)
    x = extreme_values(gen, (b, c, 2 * h, 2 * w), dtype)
    grads = (torch.randn(b, c, h, w, generator=gen, dtype=torch.float64).to(dtype),
             torch.randn(b, 3 * c, h, w, generator=gen, dtype=torch.float64).to(dtype))

    def dwt_then_idwt(fn_dwt, fn_idwt):
        def run(xx):
            ll, highs = fn_dwt(xx, norm)
            # Both directions in one graph: the backward of each is the other op.
            return torch.cat([ll.flatten(), highs.flatten(), fn_idwt(ll, highs, norm).flatten()])
        return run

    grad = torch.cat([grads[0].flatten(), grads[1].flatten(), x.flatten()])
    with num_threads(threads):
        first, second = run_twice(dwt_then_idwt(ops.haar_dwt2d, ops.haar_idwt2d), [x.clone().requires_grad_()], grad)
    assert_bit_identical(first, second, "haar")
    want = reference_grads(dwt_then_idwt(ops.haar_dwt2d_reference, ops.haar_idwt2d_reference),
                           [x.clone().requires_grad_()], grad)
    for i, name in enumerate(["outputs", "grad_x"]):
        assert_matches(first[i], want[i], dtype, f"haar {name}")


def test_border_coordinates_hit_what_they_promise():
    gen = torch.Generator().manual_seed(0)
    c = border_coordinates(gen, (20000,), 7, torch.float32, nonfinite=True)
    finite = c[c.isfinite()]
    assert (finite == 7).any() and (finite == -1).any() and (finite == 0).any() and (finite == 6).any()
    just_below = torch.nextafter(torch.tensor(7.0), torch.tensor(0.0))
    assert (finite == just_below).any()                    # one ulp inside the far border
    assert (finite > 14).any() and (finite < -14).any()    # far outside
    assert c.isnan().any() and (c == torch.inf).any() and (c == -torch.inf).any()
    assert not border_coordinates(gen, (1000,), 7, torch.float32, nonfinite=False).isfinite().logical_not().any()
