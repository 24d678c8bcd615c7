"""Checks every native op gets, written once over tests/op_cases.py: opcheck of the op and its
backward, torch.compile, deterministic backward, low precision, autocast, non-contiguous inputs."""
import pytest
import torch

from deblurlayers.ops import use_backend
from helpers import TOLERANCES
from op_cases import CASES, IDS, check_autocast_runs_in_fp32, make, outputs


def _loss(result):
    return sum(o.float().sum() for o in outputs(result))


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_opcheck(native_ops, case, dtype, requires_grad):
    tensors = make(case, dtype, requires_grad)
    torch.library.opcheck(getattr(native_ops, case.name).default, case.native(*tensors))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", [c for c in CASES if c.backward], ids=[c.name for c in CASES if c.backward])
def test_opcheck_backward_op(native_ops, case, dtype):
    tensors = make(case, dtype)
    grad = torch.randn_like(outputs(case.call(*tensors))[0])
    torch.library.opcheck(getattr(native_ops, case.name + "_backward").default, case.backward(grad, *tensors))


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_compile_fullgraph_matches_eager_forward_and_backward(native_ops, case, backend):
    tensors = make(case, requires_grad=True)
    with use_backend(backend):
        compiled = torch.compile(case.call, fullgraph=True, backend="aot_eager")
        got = outputs(compiled(*tensors))
    want = outputs(case.reference(*tensors))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    grads = torch.autograd.grad(_loss(got), tensors)
    for g, w in zip(grads, torch.autograd.grad(_loss(want), tensors)):
        torch.testing.assert_close(g, w)
    torch._dynamo.reset()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_is_deterministic(native_ops, case):
    tensors = make(case, requires_grad=True)
    first, second = (torch.autograd.grad(_loss(case.call(*tensors)), tensors) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_low_precision_forward_matches_fp32_reference(native_ops, case, dtype):
    tensors = make(case, dtype)
    got = outputs(case.call(*tensors))
    want = outputs(case.reference(*[t.float() for t in tensors]))
    for g, w in zip(got, want):
        assert g.dtype == dtype
        scale = float(w.abs().max())  # sums of several rounded products: relative to the output's range
        torch.testing.assert_close(g.float(), w, rtol=TOLERANCES[dtype]["rtol"],
                                   atol=4 * TOLERANCES[dtype]["atol"] * max(scale, 1.0))


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_autocast_runs_the_op_in_fp32(native_ops, case, backend):
    with use_backend(backend):
        check_autocast_runs_in_fp32(case, make(case, torch.bfloat16), "cpu", torch.bfloat16)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_autocast_mixed_precision_inputs_do_not_raise(native_ops, case):
    tensors = make(case)
    mixed = [t.bfloat16() if i % 2 else t for i, t in enumerate(tensors)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = outputs(case.call(*mixed))
    want = outputs(case.call(*[t.float() for t in mixed]))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def _non_contiguous(t):
    """The same values with other strides: the last two dims stored transposed."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() >= 2 and t.shape[-1] > 1 else t


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_non_contiguous_inputs(native_ops, case):
    tensors = make(case, torch.float64, requires_grad=True)
    strided = [_non_contiguous(t.detach()).requires_grad_() for t in tensors]
    assert any(not t.is_contiguous() for t in strided)
    got, want = case.call(*strided), case.call(*tensors)
    for g, w in zip(outputs(got), outputs(want)):
        torch.testing.assert_close(g, w)
    for g, w in zip(torch.autograd.grad(_loss(got), strided), torch.autograd.grad(_loss(want), tensors)):
        torch.testing.assert_close(g, w)
