"""Haar DWT/IDWT: native kernel vs reference, gradients, registration, bad inputs."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from deblurlayers.ops import haar_dwt2d, haar_dwt2d_reference, haar_idwt2d, haar_idwt2d_reference

from helpers import TOLERANCES

SHAPES = [(1, 1, 2, 2), (2, 3, 8, 10), (1, 64, 18, 32), (3, 5, 2, 14)]
NORMS = ["avg", "ortho"]
SCALES = {"avg": (0.25, 1.0), "ortho": (0.5, 0.5)}


def test_hand_computed_block():
    # a b / c d = 1 2 / 3 4
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    ll, highs = haar_dwt2d(x, "avg")
    assert ll.flatten().tolist() == [2.5]
    assert highs.flatten().tolist() == [(1 - 2 + 3 - 4) / 4, (1 + 2 - 3 - 4) / 4, (1 - 2 - 3 + 4) / 4]
    ll, highs = haar_dwt2d(x, "ortho")
    assert ll.flatten().tolist() == [5.0]
    assert highs.flatten().tolist() == [-1.0, -2.0, 0.0]


def test_band_major_layout():
    # Channel c only in the W-difference band of channel c: each band holds C channels in order.
    x = torch.zeros(1, 3, 2, 2)
    x[0, 1, :, 0], x[0, 1, :, 1] = 1.0, -1.0  # pure W-difference in channel 1
    _, highs = haar_dwt2d(x)
    assert torch.nonzero(highs.flatten()).flatten().tolist() == [1]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_native_matches_reference_forward_backward(native_ops, shape, dtype, norm):
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    g_ll = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, dtype=dtype)
    g_hi = torch.randn(shape[0], 3 * shape[1], shape[2] // 2, shape[3] // 2, dtype=dtype)

    ll, hi = haar_dwt2d(x, norm)
    (grad_native,) = torch.autograd.grad((ll * g_ll).sum() + (hi * g_hi).sum(), x)
    ref_ll, ref_hi = haar_dwt2d_reference(x, norm)
    (grad_ref,) = torch.autograd.grad((ref_ll * g_ll).sum() + (ref_hi * g_hi).sum(), x)
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(ll, ref_ll, **tol)
    torch.testing.assert_close(hi, ref_hi, **tol)
    torch.testing.assert_close(grad_native, grad_ref, **tol)

    ll_in = g_ll.clone().requires_grad_()
    hi_in = g_hi.clone().requires_grad_()
    g_x = torch.randn(shape, dtype=dtype)
    out = haar_idwt2d(ll_in, hi_in, norm)
    grads = torch.autograd.grad((out * g_x).sum(), (ll_in, hi_in))
    ref = haar_idwt2d_reference(ll_in, hi_in, norm)
    ref_grads = torch.autograd.grad((ref * g_x).sum(), (ll_in, hi_in))
    torch.testing.assert_close(out, ref, **tol)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_native_low_precision_matches_fp32_reference(native_ops, dtype):
    x = torch.randn(2, 4, 8, 12).to(dtype)
    ll, hi = haar_dwt2d(x)
    ref_ll, ref_hi = haar_dwt2d_reference(x.float())
    assert ll.dtype == hi.dtype == dtype
    torch.testing.assert_close(ll.float(), ref_ll, **TOLERANCES[dtype])
    torch.testing.assert_close(hi.float(), ref_hi, **TOLERANCES[dtype])
    torch.testing.assert_close(haar_idwt2d(ll, hi).float(), haar_idwt2d_reference(ll.float(), hi.float()),
                               **TOLERANCES[dtype])


@given(b=st.integers(0, 3), c=st.integers(1, 6), h=st.integers(1, 7), w=st.integers(1, 7),
       norm=st.sampled_from(NORMS))
def test_property_native_equals_reference_and_round_trips(native_ops, b, c, h, w, norm):
    x = torch.randn(b, c, 2 * h, 2 * w, dtype=torch.float64)
    ll, hi = haar_dwt2d(x, norm)
    assert ll.shape == (b, c, h, w) and hi.shape == (b, 3 * c, h, w)
    ref_ll, ref_hi = haar_dwt2d_reference(x, norm)
    torch.testing.assert_close(ll, ref_ll, **TOLERANCES[torch.float64])
    torch.testing.assert_close(hi, ref_hi, **TOLERANCES[torch.float64])
    torch.testing.assert_close(haar_idwt2d(ll, hi, norm), x, **TOLERANCES[torch.float64])
    if norm == "ortho":  # orthonormal: energy is preserved (Parseval)
        torch.testing.assert_close(ll.square().sum() + hi.square().sum(), x.square().sum())


@pytest.mark.parametrize("norm", NORMS)
def test_gradcheck_native_and_reference(native_ops, norm):
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    ll = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    hi = torch.randn(2, 9, 2, 3, dtype=torch.float64, requires_grad=True)
    for dwt, idwt in [(haar_dwt2d, haar_idwt2d), (haar_dwt2d_reference, haar_idwt2d_reference)]:
        assert torch.autograd.gradcheck(lambda t: dwt(t, norm), (x,))
        assert torch.autograd.gradgradcheck(lambda t: dwt(t, norm), (x,))
        assert torch.autograd.gradcheck(lambda a, b: idwt(a, b, norm), (ll, hi))


def test_gradient_through_one_output_only(native_ops):
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(haar_dwt2d(x)[1].sum(), x)
    (ref,) = torch.autograd.grad(haar_dwt2d_reference(x)[1].sum(), x)
    torch.testing.assert_close(grad, ref)


def test_non_contiguous_and_empty_inputs(native_ops):
    x = torch.randn(2, 6, 8, 3).permute(0, 3, 1, 2)  # (2, 3, 6, 8), channels-last strides
    assert not x.is_contiguous()
    for got, want in zip(haar_dwt2d(x), haar_dwt2d_reference(x)):
        torch.testing.assert_close(got, want)
    ll, hi = haar_dwt2d(torch.randn(0, 3, 4, 4))
    assert ll.shape == (0, 3, 2, 2) and hi.shape == (0, 9, 2, 2)
    assert haar_idwt2d(ll, hi).shape == (0, 3, 4, 4)


@pytest.mark.parametrize("fn", [haar_dwt2d, haar_dwt2d_reference])
def test_dwt_bad_inputs(fn):
    with pytest.raises(ValueError, match=r"x: expected a 4-d tensor of shape \(B, C, H, W\), got shape \(3, 4, 4\)"):
        fn(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, C, H, W\) with even H and W, got shape \(1, 2, 5, 4\)"):
        fn(torch.zeros(1, 2, 5, 4))
    with pytest.raises(ValueError, match="even H and W"):
        fn(torch.zeros(1, 2, 4, 3))
    with pytest.raises(TypeError, match="x: expected a floating-point tensor, got dtype torch.int64"):
        fn(torch.zeros(1, 2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"norm: expected one of \('avg', 'ortho'\), got 'l2'"):
        fn(torch.zeros(1, 2, 4, 4), "l2")


@pytest.mark.parametrize("fn", [haar_idwt2d, haar_idwt2d_reference])
def test_idwt_bad_inputs(fn):
    ll = torch.zeros(2, 4, 3, 3)
    with pytest.raises(ValueError, match=r"highs: expected shape \(B=2, C3=12, h=3, w=3\) with C3=12, got shape \(2, 4, 3, 3\)"):
        fn(ll, torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"highs: .* with w=3, got shape \(2, 12, 3, 4\)"):
        fn(ll, torch.zeros(2, 12, 3, 4))
    with pytest.raises(TypeError, match="highs: expected dtype torch.float32"):
        fn(ll, torch.zeros(2, 12, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="highs: expected a tensor on cpu"):
        fn(ll, torch.zeros(2, 12, 3, 3, device="meta"))


def test_native_kernel_checks_name_the_argument(native_ops):
    with pytest.raises(RuntimeError, match=r"haar_dwt2d: x: expected even H and W"):
        native_ops.haar_dwt2d(torch.zeros(1, 1, 3, 4), 0.25)
    with pytest.raises(RuntimeError, match=r"haar_idwt2d: highs: expected shape \(B, 3C, h, w\)"):
        native_ops.haar_idwt2d(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), 1.0)


class _WaveletBlock(torch.nn.Module):
    """DWT -> conv on the high bands -> IDWT: a small module that uses both ops."""

    def __init__(self, channels=4):
        super().__init__()
        self.conv = torch.nn.Conv2d(3 * channels, 3 * channels, 3, padding=1)

    def forward(self, x):
        ll, highs = haar_dwt2d(x)
        return haar_idwt2d(ll, self.conv(highs))


def test_compile_fullgraph_matches_eager(native_ops):
    torch.manual_seed(0)
    module = _WaveletBlock()
    x = torch.randn(2, 4, 8, 12, requires_grad=True)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    out, out_eager = compiled(x), module(x)
    torch.testing.assert_close(out, out_eager)
    grads = torch.autograd.grad(out.sum(), (x, module.conv.weight))
    grads_eager = torch.autograd.grad(out_eager.sum(), (x, module.conv.weight))
    for got, want in zip(grads, grads_eager):
        torch.testing.assert_close(got, want)


def test_export_keeps_native_ops(native_ops):
    module = _WaveletBlock().eval()
    x = torch.randn(1, 4, 8, 8)
    exported = torch.export.export(module, (x,))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert {"deblurlayers.haar_dwt2d.default", "deblurlayers.haar_idwt2d.default"} <= targets
    torch.testing.assert_close(exported.module()(x), module(x))
