"""Every CUDA source compiles with nvcc against the installed torch headers (no GPU needed)."""
import pytest

from deblurlayers._native import nvcc_check

NVCC = nvcc_check.find_nvcc()
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found")


def test_every_cuda_source_compiles():
    results = nvcc_check.check(arch="90", nvcc=NVCC)
    assert results, "no .cu files found in csrc/"
    failures = {str(source): output[-3000:] for source, ok, output in results if not ok}
    assert not failures, failures


def test_check_reports_a_broken_source(tmp_path):
    broken = tmp_path / "broken.cu"
    broken.write_text("__global__ void k() { this is not cuda; }\n")
    [(source, ok, output)] = nvcc_check.check(arch="90", nvcc=NVCC, files=[broken])
    assert not ok and "error" in output
