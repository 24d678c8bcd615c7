"""Compile-check every CUDA source with nvcc, without a GPU or a CUDA build of torch.

The CPU wheel of torch ships the ATen/c10 CUDA headers except the generated
``c10/cuda/impl/cuda_cmake_macros.h``; a one-line stub in a temporary include
directory stands in for it (conventions §3). Usage::

    python -m deblurlayers nvcc-check [--arch 90] [--nvcc PATH]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Tuple

from .build import source_root, sources

_MACROS_STUB = "#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n"


def find_nvcc() -> Optional[str]:
    from torch.utils.cpp_extension import CUDA_HOME

    candidates = [os.path.join(CUDA_HOME, "bin", "nvcc")] if CUDA_HOME else []
    candidates.append(shutil.which("nvcc") or "")
    return next((c for c in candidates if c and os.path.isfile(c)), None)


def nvcc_command(nvcc: str, source: Path, output: Path, stub_dir: Path, arch: str) -> List[str]:
    import torch.utils.cpp_extension as cpp

    root = source_root()
    includes = [stub_dir, root / "include", *cpp.include_paths()]
    return [nvcc, "-c", str(source), "-o", str(output), "-std=c++20", "-O3",
            f"-gencode=arch=compute_{arch},code=sm_{arch}", *cpp.COMMON_NVCC_FLAGS,
            *[f"-I{path}" for path in includes]]


def check(arch: str = "90", nvcc: Optional[str] = None,
          files: Optional[List[Path]] = None) -> List[Tuple[Path, bool, str]]:
    """Compile each ``.cu`` in ``csrc/`` (or ``files``); returns ``(source, ok, output)`` per file."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    with tempfile.TemporaryDirectory() as tmp:
        stub_dir = Path(tmp) / "stub"
        (stub_dir / "c10" / "cuda" / "impl").mkdir(parents=True)
        (stub_dir / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text(_MACROS_STUB)
        cuda_sources = files or [s for s in sources(with_cuda=True) if s.suffix == ".cu"]

        def compile_one(index_source):
            index, source = index_source
            cmd = nvcc_command(nvcc, source, Path(tmp) / f"{index}.o", stub_dir, arch)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            return source, proc.returncode == 0, proc.stdout + proc.stderr

        jobs = int(os.environ.get("MAX_JOBS", os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(compile_one, enumerate(cuda_sources)))
    return results


def main(arch: str = "90", nvcc: Optional[str] = None) -> int:
    start = time.perf_counter()
    results = check(arch, nvcc)
    for source, ok, output in results:
        print(f"{'ok  ' if ok else 'FAIL'} {source}")
        if not ok:
            print(output)
    failed = sum(not ok for _, ok, _ in results)
    print(f"nvcc check (sm_{arch}): {len(results)} file(s), {failed} failed, {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0
