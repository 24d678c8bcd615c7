"""FLOP formulas equal the analytic counts, on native and reference paths alike."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from deblurlayers.flops import EXTRA_ATEN_FORMULAS, count_flops
from deblurlayers.ops import flow_warp, haar_dwt2d, haar_dwt2d_reference, haar_idwt2d, haar_idwt2d_reference


@pytest.mark.parametrize("shape", [(1, 64, 360, 640), (2, 3, 8, 10)])
def test_haar_formula_is_four_macs_per_element(native_ops, shape):
    x = torch.zeros(shape, requires_grad=True)
    numel = x.numel()
    native = count_flops(haar_dwt2d, x, backward=True)
    assert native.macs == 2 * 4 * numel  # forward + backward (the inverse transform)
    assert native.by_op == {"deblurlayers.haar_dwt2d": 8 * numel, "deblurlayers.haar_idwt2d": 8 * numel}
    # the reference (DSTNet's grouped convolution) is counted the same by PyTorch's own table
    assert count_flops(haar_dwt2d_reference, x, backward=True).macs == native.macs
    ll = torch.zeros(shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    hi = torch.zeros(shape[0], 3 * shape[1], shape[2] // 2, shape[3] // 2)
    assert count_flops(haar_idwt2d, ll, hi).macs == count_flops(haar_idwt2d_reference, ll, hi).macs == 4 * numel


def test_registered_formula_seen_by_a_plain_flop_counter(native_ops):
    x = torch.randn(1, 2, 4, 4)
    with FlopCounterMode(display=False) as counter:
        native_ops.haar_dwt2d(x, 0.25)
    assert counter.get_total_flops() == 2 * 4 * x.numel()


@pytest.mark.parametrize("flow_grad", [False, True])
def test_grid_sample_formula(flow_grad):
    b, c, h, w = 2, 16, 90, 160
    x = torch.zeros(b, c, h, w, requires_grad=True)
    flow = torch.zeros(b, 2, h, w, requires_grad=flow_grad)
    count = count_flops(flow_warp, x, flow, backward=True)
    samples = b * c * h * w
    # forward 4 MACs per bilinear sample and channel; backward 4 (input) + 8 (grid, if needed)
    assert count.by_op["aten.grid_sampler_2d"] == 2 * 4 * samples
    assert count.by_op["aten.grid_sampler_2d_backward"] == 2 * (4 + (8 if flow_grad else 0)) * samples
    assert {torch.ops.aten.grid_sampler_2d, torch.ops.aten.grid_sampler_2d_backward} <= set(EXTRA_ATEN_FORMULAS)


def test_cpu_attention_counts_as_on_the_meta_device():
    q, k, v = (torch.randn(2, 4, 64, 16, requires_grad=True) for _ in range(3))
    attention = torch.nn.functional.scaled_dot_product_attention
    with FlopCounterMode(display=False, custom_mapping=EXTRA_ATEN_FORMULAS) as counter:
        out = attention(q, k, v)
    # QK^T and AV: 64 * 64 * 16 MACs each per (batch, head)
    forward = 2 * (2 * 2 * 4 * 64 * 64 * 16)
    assert counter.get_total_flops() == count_flops(attention, q, k, v).flops == forward
    with FlopCounterMode(display=False, custom_mapping=EXTRA_ATEN_FORMULAS) as counter:
        out.sum().backward()
    # PyTorch's convention for flash backward: five matmuls (QK^T recomputed)
    assert counter.get_total_flops() == 5 * forward // 2
