"""What native support this installation has: ``deblurlayers.native_status()``."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any, Dict, Optional

import torch

from . import _native
from ._native.registry import has_kernel
from .utils import env
from .version import __version__


def native_status(load: bool = False) -> Dict[str, Any]:
    """Report torch/CUDA/compiler versions, the build directory and per-op status.

    Args:
        load: build and load the native library first if that has not been
            tried in this process (the first build compiles ``csrc/``: minutes).

    Returns:
        A dict with ``status`` (``not_attempted``, ``ok``, ``failed`` or
        ``disabled`` when ``DEBLURLAYERS_BACKEND=reference``), ``reason``,
        ``build_dir``, versions, and ``ops``: ``{name: {"cpu": bool, "cuda": bool}}``.
    """
    backend = env.backend()
    if load and backend != "reference":
        _native.load()
    state = _native.native_state()
    status = "disabled" if backend == "reference" and state.status == "not_attempted" else state.status
    reason = state.reason
    loaded = state.status == "ok"
    ops = {
        name: {"cpu": loaded and has_kernel(name, "CPU"), "cuda": loaded and has_kernel(name, "CUDA")}
        for name in sorted(_native.specs())
    }
    problem = _shadowed_package() or ("" if ops else "no op is registered (deblurlayers/__init__.py did not run)")
    if problem:
        status, reason = "failed", problem
    return {
        "deblurlayers": __version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "compiler": _compiler_version(),
        "nvcc": _nvcc_version(),
        "torch_cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST"),
        "backend": backend,
        "status": status,
        "reason": reason,
        "imported_from": _imported_from(),
        "build_dir": state.build_dir or env.build_root(),
        "build_seconds": state.build_seconds,
        "with_cuda": state.with_cuda,
        "sources": _safe_source_root(),
        "ops": ops,
    }


def format_status(status: Dict[str, Any]) -> str:
    keys = ("deblurlayers", "imported_from", "torch", "torch_cuda", "cuda_available", "compiler", "nvcc",
            "torch_cuda_arch_list", "backend", "status", "build_dir", "build_seconds", "sources")
    width = max(len(k) for k in keys + tuple("  " + name for name in status["ops"])) + 1
    lines = [f"{key:{width}s} {status[key]}" for key in keys]
    lines.append("ops:" if status["ops"] else f"{'ops:':{width}s} (none)")
    for name, support in status["ops"].items():
        built = ", ".join(dev for dev, ok in support.items() if ok) or "not built"
        lines.append(f"{'  ' + name:{width}s} {built}")
    if status["reason"]:
        lines.append("reason:")
        lines += ["  " + line for line in status["reason"].splitlines()]
    return "\n".join(lines)


def _imported_from() -> str:
    """The folder the ``deblurlayers`` package in ``sys.modules`` came from."""
    package = sys.modules.get("deblurlayers")
    if getattr(package, "__file__", None):
        return os.path.dirname(os.path.abspath(package.__file__))
    return os.pathsep.join(getattr(package, "__path__", [])) or "?"


def _shadowed_package() -> str:
    """Why the imported ``deblurlayers`` is not the installed package, or ``""``.

    A folder named ``deblurlayers`` without an ``__init__.py`` in the working directory (the clone,
    seen from the folder that holds it) is imported as a namespace package ahead of the installed
    one: ``deblurlayers.info`` still resolves, but the package's ``__init__`` never runs, so no op
    is registered and every report would be empty.
    """
    package = sys.modules.get("deblurlayers")
    if package is None or getattr(package, "__file__", None):
        return ""
    return (f"`deblurlayers` was imported as a namespace package from {_imported_from()}, a folder without "
            "an __init__.py that shadows the installed package (typically the clone itself, seen from the "
            "folder that holds it): its ops were never registered. Run from another directory.")


def _first_line(cmd) -> Optional[str]:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line for line in out.splitlines() if line.strip()]
    return lines[-1] if cmd[0].endswith("nvcc") and lines else (lines[0] if lines else None)


def _compiler_version() -> Optional[str]:
    return _first_line([os.environ.get("CXX", "c++"), "--version"])


def _nvcc_version() -> Optional[str]:
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else "nvcc"
    return _first_line([nvcc, "--version"])


def _safe_source_root() -> Optional[str]:
    try:
        return str(_native.source_root())
    except FileNotFoundError:
        return None
