"""Running a module on the meta device without copying it."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator

import torch
from torch import nn

__all__ = ["tensors_on_meta", "to_meta"]


def to_meta(value: Any) -> Any:
    """A meta tensor like ``value`` (same shape, dtype, requires_grad); anything else unchanged."""
    if not isinstance(value, torch.Tensor):
        return value
    meta = torch.empty_like(value, device="meta")
    return meta.requires_grad_(value.requires_grad) if value.is_floating_point() else meta


@contextlib.contextmanager
def tensors_on_meta(module: nn.Module) -> Iterator[None]:
    """Within the block, every parameter and buffer of ``module`` is a meta copy; afterwards the
    module holds its own tensors again.

    Swapped per module object, not per name: a module reachable under two names (RAFT's norm3 is
    also its downsample.1) is swapped and restored once. ``torch.func.functional_call`` gets that
    case wrong and leaves one name's meta copy behind. A tensor shared by two modules gets one copy.
    Not thread-safe: do not use the module elsewhere meanwhile.
    """
    copies: Dict[int, torch.Tensor] = {}
    saved = []
    try:
        for sub in module.modules():
            for store in (sub._parameters, sub._buffers):
                for name, tensor in store.items():
                    if tensor is None:
                        continue
                    if id(tensor) not in copies:
                        copies[id(tensor)] = to_meta(tensor)
                    saved.append((store, name, tensor))
                    store[name] = copies[id(tensor)]
        yield
    finally:
        for store, name, tensor in reversed(saved):
            store[name] = tensor
