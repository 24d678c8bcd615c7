"""The CUDA kernels, on a machine with an NVIDIA GPU (skipped elsewhere): every op of
tests/op_cases.py against its PyTorch reference on the CPU, forward and backward in fp32 and fp64;
opcheck on CUDA tensors; and the ops under fp16 autocast, which must run them in fp32 and accept
inputs of mixed precision. The per-op files test the CPU kernels; these run the same cases on the
GPU."""
import pytest
import torch

from deblurlayers import _native
from helpers import TOLERANCES
from op_cases import CASES, IDS, check_autocast_runs_in_fp32, make, outputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# fp32 sums run in other orders on the GPU (atomics, cuBLAS): tolerances relative to the range.
CUDA_TOLERANCES = {torch.float64: TOLERANCES[torch.float64], torch.float32: dict(rtol=1e-4, atol=1e-4)}


@pytest.fixture(scope="module")
def cuda_ops(native_ops):
    if not _native.native_state().with_cuda:
        pytest.fail("a GPU is present but the native library was built without CUDA (is nvcc found? "
                    "CUDA_HOME?): " + _native.native_state().build_dir)
    return native_ops


def _to_cuda(tensors, requires_grad=False):
    return [t.detach().cuda().requires_grad_(requires_grad) for t in tensors]


def _weighted_loss(result, weights):
    return sum((o.double() * w).sum() for o, w in zip(outputs(result), weights))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_matches_reference_forward_backward(cuda_ops, case, dtype):
    cpu = make(case, dtype, requires_grad=True)
    gpu = _to_cuda(cpu, requires_grad=True)
    got, want = case.call(*gpu), case.reference(*cpu)
    tol = CUDA_TOLERANCES[dtype]
    for g, w in zip(outputs(got), outputs(want)):
        assert g.is_cuda and g.dtype == dtype
        torch.testing.assert_close(g.cpu(), w, **tol)
    weights = [torch.randn(o.shape, dtype=torch.float64) for o in outputs(want)]
    grads_gpu = torch.autograd.grad(_weighted_loss(got, [w.cuda() for w in weights]), gpu)
    grads_cpu = torch.autograd.grad(_weighted_loss(want, weights), cpu)
    for g, w in zip(grads_gpu, grads_cpu):
        torch.testing.assert_close(g.cpu(), w, **tol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_opcheck(cuda_ops, case):
    tensors = _to_cuda(make(case, torch.float32, requires_grad=True), requires_grad=True)
    torch.library.opcheck(getattr(cuda_ops, case.name).default, case.native(*tensors))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_fp16_autocast_runs_the_op_in_fp32(cuda_ops, case):
    check_autocast_runs_in_fp32(case, _to_cuda(make(case, torch.float16)), "cuda", torch.float16)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_fp16_autocast_mixed_inputs_forward_and_backward(cuda_ops, case):
    tensors = make(case, torch.float32)
    mixed = [t.detach().cuda().to(torch.float16 if i % 2 else torch.float32).requires_grad_()
             for i, t in enumerate(tensors)]
    with torch.autocast("cuda", dtype=torch.float16):
        got = outputs(case.call(*mixed))
    want = outputs(case.call(*[t.detach().float() for t in mixed]))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    grads = torch.autograd.grad(sum(o.float().sum() for o in got), mixed)
    for g, t in zip(grads, mixed):
        assert g.dtype == t.dtype and bool(torch.isfinite(g).all())
