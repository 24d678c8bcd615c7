"""Choose, per call, between the native kernel and the PyTorch reference.

``DEBLURLAYERS_BACKEND``:

- ``auto`` (default): native when the library built and has a kernel for the
  device; otherwise the reference, with one warning per process and reason.
- ``native``: native or a ``RuntimeError`` that says why not.
- ``reference``: always the PyTorch reference; nothing is compiled.
"""
from __future__ import annotations

import warnings
from typing import Optional, Set, Tuple

import torch

from .. import _native
from .._native.registry import has_kernel
from ..utils import autocast_enabled, env

_NATIVE_DEVICES = {"cpu": "CPU", "cuda": "CUDA", "meta": "Meta"}
_WARNED: Set[str] = set()


def use_native(op: str, x: torch.Tensor) -> bool:
    """Whether ``deblurlayers::<op>`` should run natively for inputs like ``x``."""
    return _decide(op, x.device.type)


# Evaluated once at trace time under torch.compile (so the build, the file
# lock and the environment lookup never enter a graph); the decision is baked
# into the compiled graph. Its inputs are the device type and the process-wide
# backend setting, neither of which changes between calls in practice.
@torch.compiler.assume_constant_result
def _decide(op: str, device_type: str) -> bool:
    choice = env.backend()
    if choice == "reference":
        return False
    reason = unsupported_reason(op, device_type)
    if reason is None:
        return True
    if choice == "native":
        raise RuntimeError(f"deblurlayers::{op}: DEBLURLAYERS_BACKEND=native, but {reason}")
    if reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(f"deblurlayers: using the PyTorch reference because {reason}", RuntimeWarning, stacklevel=3)
    return False


def unsupported_reason(op: str, device_type: str) -> Optional[str]:
    """Why ``op`` cannot run natively on ``device_type`` (``None`` if it can); may build."""
    key = _NATIVE_DEVICES.get(device_type)
    if key is None:
        return f"there is no native kernel for device type {device_type!r}"
    if not _native.load():
        return f"the native library failed to build or load:\n{_native.native_state().reason}"
    if not has_kernel(op, "CPU" if key == "Meta" else key):
        return f"the native library was built without {key} kernels for {op}"
    return None


def promote_under_autocast(*tensors: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:
    """Under ``torch.autocast``, the floating tensors among ``tensors`` cast to their widest dtype.

    Inside an autocast region the inputs of one op often come out of different layers in different
    precisions (a low-precision conv output next to an fp32 residual or sampling grid). An op
    given such a mix runs in the widest of them, as eager type promotion would, so sampling
    positions are never rounded down; outside autocast mixed dtypes stay an error of the op's
    checks. Non-floating tensors and ``None`` pass through.
    """
    floating = [t for t in tensors if t is not None and t.is_floating_point()]
    if not floating or not autocast_enabled(floating[0].device.type):
        return tensors
    widest = floating[0].dtype
    for t in floating[1:]:
        widest = torch.promote_types(widest, t.dtype)
    return tuple(t.to(widest) if t is not None and t.is_floating_point() else t for t in tensors)
