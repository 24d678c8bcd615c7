"""Locate, compile, cache and load the native op library.

State machine (see :func:`native_state`)::

    not_attempted --load()--> ok | failed(reason)
    DEBLURLAYERS_BACKEND=reference --> disabled (nothing is compiled)

The library is built once per (torch version, CUDA version, source hash) into
``<build root>/<key>/`` and reused from there by every later process. A file
lock with a timeout serialises concurrent first builds; it is released by the
kernel when its holder dies, so a killed build never leaves a lock behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional

import torch

from ..utils import env

LIBRARY_NAME = "deblurlayers_ops"
SOURCE_MARKER = "include/deblurlayers"  # the shared header folder: present in every source tree
CXX_FLAGS = ["-O3"]
CUDA_FLAGS = ["-O3"]
REASON_LINES = 30
_SOURCE_SUFFIXES = (".cpp", ".h", ".cu", ".cuh")


@dataclass
class NativeState:
    """Where the native library stands in this process."""

    status: str = "not_attempted"  # not_attempted | ok | failed | disabled
    reason: str = ""
    build_dir: Optional[str] = None
    with_cuda: bool = False
    build_seconds: Optional[float] = None
    sources: List[str] = field(default_factory=list)


_STATE = NativeState()
_LOCK = threading.Lock()


def native_state() -> NativeState:
    """The current state (never triggers a build)."""
    return _STATE


# ---------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------

def source_root() -> Path:
    """The folder holding the C++/CUDA sources.

    Tried in order: the package data of a wheel install
    (``deblurlayers/_csrc``, via importlib.resources), the same folder next to
    this package, and the repository's top-level ``csrc/`` (editable installs
    and plain checkouts, where the mapped package does not exist).
    """
    package_dir = Path(__file__).resolve().parents[1]
    candidates = []
    try:
        from importlib.resources import files

        candidates.append(Path(str(files("deblurlayers._csrc"))))
    except (ModuleNotFoundError, TypeError, ValueError):
        pass
    candidates += [package_dir / "_csrc", package_dir.parent / "csrc"]
    for candidate in candidates:
        if (candidate / SOURCE_MARKER).is_dir():
            return candidate
    raise FileNotFoundError(
        "deblurlayers: native sources not found; looked in " + ", ".join(str(c) for c in candidates)
    )


def sources(root: Optional[Path] = None, with_cuda: bool = False) -> List[Path]:
    """Translation units to compile: every ``.cpp``, plus every ``.cu`` when ``with_cuda``."""
    root = root or source_root()
    suffixes = (".cpp", ".cu") if with_cuda else (".cpp",)
    return sorted(p for p in root.rglob("*") if p.suffix in suffixes)


def _source_hash(root: Path, flags: List[str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in _SOURCE_SUFFIXES):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    digest.update(" ".join(flags).encode())
    return digest.hexdigest()[:16]


def build_key(root: Path, with_cuda: bool) -> str:
    """Cache key: torch version, CUDA version (or cpu), Python ABI and source hash."""
    torch_version = torch.__version__.split("+")[0]
    cuda = f"cu{torch.version.cuda.replace('.', '')}" if with_cuda and torch.version.cuda else "cpu"
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    flags = _cxx_flags() + (CUDA_FLAGS + [os.environ.get("TORCH_CUDA_ARCH_LIST", "")] if with_cuda else [])
    sanitized = f"-{env.sanitizer()}san" if env.sanitizer() else ""
    return f"torch{torch_version}-{cuda}-{py}{sanitized}-{_source_hash(root, flags)}"


def _cxx_flags() -> List[str]:
    # ATen's parallel_for expands an OpenMP pragma inside our translation
    # units: without -fopenmp the CPU kernels would silently run on one thread.
    # The kernels never read floating-point exception flags; without
    # -fno-trapping-math GCC will not if-convert (and so not vectorise) loops
    # of selects such as deform_conv2d's bilinear coefficients.
    if platform.system() == "Linux":
        return CXX_FLAGS + ["-fopenmp", "-fno-trapping-math"] + _sanitizer_flags()
    return CXX_FLAGS + _sanitizer_flags()


def _sanitizer_flags() -> List[str]:
    # Host code only: nvcc has no AddressSanitizer (compute-sanitizer checks the CUDA kernels).
    if env.sanitizer() == "address":
        return ["-fsanitize=address", "-fno-omit-frame-pointer"]
    return []


def _cuda_wanted() -> bool:
    if not (torch.cuda.is_available() and torch.version.cuda):
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    return CUDA_HOME is not None


# ---------------------------------------------------------------------------
# Build and load
# ---------------------------------------------------------------------------

def load() -> bool:
    """Build (first time) and load the native library; ``True`` when usable.

    Never raises for a build failure: the reason is recorded in
    :func:`native_state` and callers fall back to the PyTorch references.
    """
    if _STATE.status in ("ok", "failed"):
        return _STATE.status == "ok"
    with _LOCK:
        if _STATE.status == "not_attempted":
            _load_locked()
    return _STATE.status == "ok"


def _load_locked() -> None:
    start = time.perf_counter()
    compiling = False
    try:
        root = source_root()
        with_cuda = _cuda_wanted()
        build_dir = Path(env.build_root()) / build_key(root, with_cuda)
        _STATE.build_dir, _STATE.with_cuda = str(build_dir), with_cuda
        _STATE.sources = [str(p) for p in sources(root, with_cuda)]
        _preflight()
        build_dir.mkdir(parents=True, exist_ok=True)  # cpp_extension needs it to exist
        with _file_lock(build_dir.with_name(build_dir.name + ".lock"), env.build_timeout()):
            _remove_stale_baton(build_dir)
            compiling = not (build_dir / f"{LIBRARY_NAME}.so").exists()
            if compiling:
                _announce(f"building native ops (first use, ~40 s on 2 cores; cached in {build_dir})")
            _compile_and_load(root, build_dir, with_cuda)
    except Exception as exc:  # a failed build must never break the caller
        _STATE.status, _STATE.reason = "failed", _summarise(exc)
    else:
        _STATE.status, _STATE.reason = "ok", ""
    _STATE.build_seconds = time.perf_counter() - start
    if compiling:
        outcome = "built" if _STATE.status == "ok" else "failed (python -m deblurlayers info says why)"
        _announce(f"native ops {outcome} in {_STATE.build_seconds:.0f} s")


def _announce(message: str) -> None:
    """One line on stderr: a first build blocks the first op call for tens of seconds."""
    if not env.quiet_build():
        print(f"deblurlayers: {message}", file=sys.stderr, flush=True)


def _preflight() -> None:
    """Fail early, with a readable reason, on what cpp_extension reports badly."""
    from torch.utils.cpp_extension import verify_ninja_availability

    verify_ninja_availability()
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"C++ compiler {compiler!r} not found (set CXX to a working compiler)")


def _compile_and_load(root: Path, build_dir: Path, with_cuda: bool) -> None:
    from torch.utils import cpp_extension

    cpp_extension.load(
        name=LIBRARY_NAME,
        sources=[str(p) for p in sources(root, with_cuda)],
        extra_cflags=_cxx_flags(),
        extra_cuda_cflags=CUDA_FLAGS,
        extra_ldflags=(["-fopenmp"] if platform.system() == "Linux" else []) + _sanitizer_flags(),
        extra_include_paths=[str(root / "include")],
        build_directory=str(build_dir),
        with_cuda=with_cuda,
        is_python_module=False,
        verbose=env.verbose_build(),
    )


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: rely on cpp_extension's own baton
        yield
        return
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"waited {timeout:.0f} s for the build lock {path}, held by another process "
                        "(raise DEBLURLAYERS_BUILD_TIMEOUT or remove that process)"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _remove_stale_baton(build_dir: Path) -> None:
    # cpp_extension's own baton has no timeout: a builder killed mid-build
    # leaves build_dir/lock and the next load() waits forever. We hold the
    # exclusive file lock, so no live deblurlayers build can own it.
    baton = build_dir / "lock"
    if baton.exists():
        baton.unlink()


def _summarise(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-REASON_LINES:])
