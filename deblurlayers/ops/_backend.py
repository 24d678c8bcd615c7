"""Choose, per call, between the native kernel and the PyTorch reference.

``DEBLURLAYERS_BACKEND``:

- ``auto`` (default): native when the library built and has a kernel for the
  device; otherwise the reference, with one warning per process and reason.
- ``native``: native or a ``RuntimeError`` that says why not.
- ``reference``: always the PyTorch reference; nothing is compiled.
"""
from __future__ import annotations

import warnings
import functools
from typing import Callable, Optional, Set

import torch
from torch.utils._pytree import tree_map

from .. import _native
from .._native.registry import has_kernel
from ..utils import autocast_enabled, env, in_layout_of

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
    if key == "Meta":
        return None  # the fake kernels, registered at import, are the meta kernels: nothing to build
    if not _native.load():
        return f"the native library failed to build or load:\n{_native.native_state().reason}"
    if not has_kernel(op, key):
        return f"the native library was built without {key} kernels for {op}"
    return None


def float32_under_autocast(op: Callable) -> Callable:
    """Run ``op`` in fp32 inside ``torch.autocast``: the native ops' autocast policy, for the wrapper.

    The native ops run in fp32 under autocast (their ``register_autocast`` policy, see
    :func:`deblurlayers._native.registry.define`): their kernels accumulate in fp32 anyway,
    sampling positions and offsets must not be rounded to 8 or 11 bits, and the inputs of one op
    often come out of layers in different precisions. The public wrappers (and their references)
    apply the same policy before their checks: fp16/bf16 tensor arguments are cast to fp32 and
    the body runs with autocast off, so the PyTorch fallback computes what the native op would and
    mixed-precision inputs never trip a dtype check. Outside autocast nothing changes.
    """

    @functools.wraps(op)
    def wrapper(*args, **kwargs):
        device_type = next((a.device.type for a in args if isinstance(a, torch.Tensor)), None)
        if device_type is None or not autocast_enabled(device_type):
            return op(*args, **kwargs)
        args, kwargs = tree_map(_to_float32, (args, kwargs))
        with torch.autocast(device_type, enabled=False):
            return op(*args, **kwargs)

    return wrapper


def keeps_memory_format(op: Callable) -> Callable:
    """Return ``op``'s 4-D outputs in the memory format of its first (4-D) tensor argument.

    The native kernels (and ``grid_sample`` in the references) read and write NCHW. In a
    channels-last network an NCHW result would turn every following residual add and
    concatenation into a mixed-layout op (several times slower than either layout alone) and make
    oneDNN reorder the next convolution's input; one copy at the op's boundary keeps the layout
    the caller chose. An NCHW input gets an NCHW-contiguous output (a no-op for the native kernels;
    a reference built from einsum or permutes may otherwise return any layout).
    """

    @functools.wraps(op)
    def wrapper(*args, **kwargs):
        out = op(*args, **kwargs)
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if first is None or first.dim() != 4:
            return out
        return tree_map(lambda value: in_layout_of(value, first) if isinstance(value, torch.Tensor) else value, out)

    return wrapper


def _to_float32(value):
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value
