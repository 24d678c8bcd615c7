"""One description per native op, for the checks every op gets (tests/test_ops_common.py), in the
style of torchvision's OpTester: the op-specific files keep what is specific to each op (its
maths against literal loops, its gradients, its error messages)."""
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from deblurlayers import ops


@dataclass(frozen=True)
class OpCase:
    """``call(*tensors)`` runs the public op; ``reference`` its PyTorch twin; ``native(*tensors)``
    gives the ``torch.ops.deblurlayers.<name>`` arguments; ``make(dtype, gen)`` the tensors;
    ``backward(grad, *tensors)`` the arguments of ``<name>_backward`` (None: the op has none, its
    backward is another forward op)."""

    name: str
    call: Callable
    reference: Callable
    native: Callable
    make: Callable[[torch.dtype, torch.Generator], Sequence[torch.Tensor]]
    backward: Optional[Callable] = None


def _rand(gen, dtype, *shape, scale=1.0, shift=0.0):
    return (scale * torch.rand(*shape, generator=gen, dtype=torch.float64) + shift).to(dtype)


_LEVELS = [(6, 8), (3, 4)]
_SHAPES = torch.tensor(_LEVELS)
_STARTS = ops.level_start_index(_SHAPES)

CASES = [
    OpCase("haar_dwt2d", lambda x: ops.haar_dwt2d(x), lambda x: ops.haar_dwt2d_reference(x),
           lambda x: (x, 0.25), lambda dtype, g: (_rand(g, dtype, 2, 3, 8, 12),)),
    OpCase("haar_idwt2d", ops.haar_idwt2d, ops.haar_idwt2d_reference, lambda ll, hi: (ll, hi, 1.0),
           lambda dtype, g: (_rand(g, dtype, 2, 3, 4, 6), _rand(g, dtype, 2, 9, 4, 6))),
    OpCase("pixel_dynamic_filter", ops.pixel_dynamic_filter, ops.pixel_dynamic_filter_reference,
           lambda x, k: (x, k, 3), lambda dtype, g: (_rand(g, dtype, 2, 4, 16, 16), _rand(g, dtype, 2, 36, 2, 2)),
           lambda grad, x, k: (grad, x, k, 3)),
    OpCase("ms_deform_attn",
           lambda v, loc, a: ops.ms_deform_attn(v, _LEVELS, None, loc, a),
           lambda v, loc, a: ops.ms_deform_attn_reference(v, _LEVELS, None, loc, a),
           lambda v, loc, a: (v, _SHAPES, _STARTS, loc, a),
           lambda dtype, g: (_rand(g, dtype, 2, 60, 2, 4), _rand(g, dtype, 2, 5, 2, 2, 3, 2, scale=1.2, shift=-0.1),
                             _rand(g, dtype, 2, 5, 2, 2, 3)),
           lambda grad, v, loc, a: (grad, v, _SHAPES, _STARTS, loc, a)),
    OpCase("deform_conv2d",
           lambda x, o, m, w, b: ops.deform_conv2d(x, o, w, b, padding=1, mask=m),
           lambda x, o, m, w, b: ops.deform_conv2d_reference(x, o, w, b, padding=1, mask=m),
           lambda x, o, m, w, b: (x, o, m, w, b, [1, 1], [1, 1], [1, 1], 1, 2),
           lambda dtype, g: (_rand(g, dtype, 2, 4, 7, 9), _rand(g, dtype, 2, 36, 7, 9, scale=4, shift=-2),
                             _rand(g, dtype, 2, 18, 7, 9), _rand(g, dtype, 3, 4, 3, 3, scale=0.5),
                             _rand(g, dtype, 3)),
           lambda grad, x, o, m, w, b: (grad, x, o, m, w, [1, 1], [1, 1], [1, 1], 1, 2)),
]
IDS = [case.name for case in CASES]


def make(case, dtype=torch.float32, requires_grad=False, seed=0):
    tensors = case.make(dtype, torch.Generator().manual_seed(seed))
    return [t.requires_grad_(requires_grad) for t in tensors]


def outputs(result):
    return result if isinstance(result, tuple) else (result,)


def check_autocast_runs_in_fp32(case, low, device_type, dtype):
    """Under ``torch.autocast(device_type, dtype)`` the op runs in fp32 on the low-precision tensors
    ``low``: fp32 outputs, equal to the op on the same values cast to fp32 outside autocast."""
    with torch.autocast(device_type, dtype=dtype):
        got = outputs(case.call(*low))
    want = outputs(case.call(*[t.float() for t in low]))
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w)
