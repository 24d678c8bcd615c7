"""The inference fast path: channels-last end to end, equal to the eager NCHW model."""
import copy

import pytest
import torch
from torch import nn

from deblurlayers import optimize_for_inference, to_channels_last
from deblurlayers.ops import (channel_dynamic_filter, deform_conv2d, deform_conv2d_reference, flow_warp, haar_dwt2d, haar_dwt2d_reference,
                              haar_idwt2d, haar_idwt2d_reference, pixel_dynamic_filter, pixel_dynamic_filter_reference)
from deblurlayers.utils import in_layout_of, memory_format_of
from model_cases import CASES, clip, small

CL = torch.channels_last


def _is_cl(t):
    return memory_format_of(t) == CL


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _x(c=4, h=8, w=10, dtype=torch.float64):
    return torch.randn(2, c, h, w, generator=_gen(), dtype=dtype)


# op name -> (callable, args built from x); each returns a tensor or a tuple of 4-D tensors
OPS = {
    "deform_conv2d": (deform_conv2d, lambda x: (x, 0.5 * torch.randn(2, 18, 8, 10, generator=_gen(1), dtype=x.dtype),
                                                  torch.randn(6, 4, 3, 3, generator=_gen(2), dtype=x.dtype)),
                      dict(padding=1)),
    "deform_conv2d_reference": (deform_conv2d_reference,
                                lambda x: (x, 0.5 * torch.randn(2, 18, 8, 10, generator=_gen(1), dtype=x.dtype),
                                           torch.randn(6, 4, 3, 3, generator=_gen(2), dtype=x.dtype)), dict(padding=1)),
    "pixel_dynamic_filter": (pixel_dynamic_filter, lambda x: (x, torch.randn(2, 9, 8, 10, generator=_gen(1),
                                                                             dtype=x.dtype)), {}),
    "pixel_dynamic_filter_reference": (pixel_dynamic_filter_reference,
                                       lambda x: (x, torch.randn(2, 9, 8, 10, generator=_gen(1), dtype=x.dtype)), {}),
    "haar_dwt2d": (haar_dwt2d, lambda x: (x,), {}),
    "haar_dwt2d_reference": (haar_dwt2d_reference, lambda x: (x,), {}),
    "haar_idwt2d": (haar_idwt2d, lambda x: (x, torch.randn(2, 12, 8, 10, generator=_gen(1), dtype=x.dtype)), {}),
    "haar_idwt2d_reference": (haar_idwt2d_reference,
                              lambda x: (x, torch.randn(2, 12, 8, 10, generator=_gen(1), dtype=x.dtype)), {}),
    "channel_dynamic_filter": (channel_dynamic_filter,
                               lambda x: (x, torch.randn(2, 4, 3, 3, generator=_gen(1), dtype=x.dtype)), {}),
    "flow_warp": (flow_warp, lambda x: (x, 2 * torch.randn(2, 2, 8, 10, generator=_gen(1), dtype=x.dtype)), {}),
}


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_keeps_the_channels_last_layout_of_its_input(name):
    op, make_args, kwargs = OPS[name]
    args = make_args(_x())
    expected = _outputs(op(*args, **kwargs))
    assert all(not _is_cl(e) for e in expected)  # NCHW in, NCHW out: nothing changes there
    got = _outputs(op(args[0].contiguous(memory_format=CL), *args[1:], **kwargs))
    assert all(_is_cl(g) for g in got), [g.stride() for g in got]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_layout_helpers():
    x = _x()
    assert memory_format_of(x) == torch.contiguous_format
    assert memory_format_of(x.contiguous(memory_format=CL)) == CL
    assert memory_format_of(torch.randn(2, 1, 4, 4).contiguous(memory_format=CL)) == torch.contiguous_format
    assert memory_format_of(torch.randn(2, 3, 4)) == torch.contiguous_format
    y = in_layout_of(x, x.contiguous(memory_format=CL))
    assert _is_cl(y) and torch.equal(y, x)
    assert in_layout_of(x, x) is x


def test_to_channels_last_converts_only_4d_tensors_in_place():
    model = nn.Sequential(nn.Conv3d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Linear(4, 4), nn.BatchNorm2d(4))
    params = list(model.parameters())
    assert to_channels_last(model) is model
    assert [p for p in model.parameters()] == params  # the same Parameter objects
    assert _is_cl(model[1].weight) and model[0].weight.is_contiguous() and model[2].weight.is_contiguous()
    with pytest.raises(TypeError, match="module: expected an nn.Module"):
        to_channels_last(torch.zeros(1))
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        optimize_for_inference("dstnet")


def _layer_flips(model, x):
    """The modules that were given a channels-last tensor and returned an NCHW one."""
    flips = set()

    def hook(module, args, out):
        ins = [a for a in args if isinstance(a, torch.Tensor) and a.dim() == 4 and a.shape[1] > 1]
        outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,))
                if isinstance(o, torch.Tensor) and o.dim() == 4 and o.shape[1] > 1 and o.shape[-2:].numel() > 1]
        if any(_is_cl(a) for a in ins) and any(o.is_contiguous() for o in outs):
            flips.add(type(module).__name__)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.inference_mode():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, flips


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_path_equals_eager_and_never_flips_back_to_nchw(name):
    model = small(name).eval()
    x = clip(name, batch=1, height=32, width=32)
    with torch.inference_mode():
        expected = model(x)
    fast = optimize_for_inference(copy.deepcopy(model))
    assert not fast.training and not any(p.requires_grad for p in fast.parameters())
    got, flips = _layer_flips(fast, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    assert not flips, f"layers returning NCHW from channels-last input: {sorted(flips)}"


def test_fast_path_compiled_with_freezing_equals_eager():
    model = small("dstnet").eval()
    x = clip("dstnet", batch=1, height=32, width=32)
    with torch.inference_mode():
        expected = model(x)
        got = optimize_for_inference(copy.deepcopy(model), compile=True)(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_erdn_inference_runs_one_first_stage_window_at_a_time_with_the_same_result():
    model = small("erdn").eval()
    x = clip("erdn", batch=2, height=16, width=24)
    calls = []
    model.stages[0].register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    batched = model(x)  # autograd on: the three windows in one batch (the training path)
    assert calls == [6]
    calls.clear()
    with torch.no_grad():
        sequential = model(x)
    assert calls == [2, 2, 2]
    torch.testing.assert_close(sequential, batched, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["haar_dwt2d", "haar_idwt2d"])
def test_haar_kernels_run_channels_last_natively(op, native_ops):
    """The CPU Haar kernels read and write channels-last maps directly (no copy to NCHW and back);
    the fake kernels must promise the same strides (opcheck compares them, and runs autograd)."""
    x = torch.randn(2, 5, 6, 8, dtype=torch.float64, generator=_gen()).contiguous(memory_format=CL)
    args = (x, 0.5) if op == "haar_dwt2d" else (x, torch.randn(2, 15, 6, 8, dtype=torch.float64,
                                                                generator=_gen(1)).contiguous(memory_format=CL), 0.5)
    args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
    kernel = getattr(native_ops, op).default
    out = _outputs(kernel(*args))
    assert all(_is_cl(o) for o in out)
    nchw = _outputs(kernel(*(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)))
    for o, e in zip(out, nchw):
        torch.testing.assert_close(o, e, rtol=0, atol=1e-12)
    torch.library.opcheck(kernel, args)
