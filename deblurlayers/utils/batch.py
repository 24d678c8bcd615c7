"""Empty batches: what a layer returns for B = 0, from its shapes alone."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map

from .meta import tensors_on_meta

__all__ = ["empty_batch"]


def empty_batch(module: nn.Module, *args: Any, method: Optional[Callable[..., Any]] = None, **kwargs: Any) -> Any:
    """``module(*args, **kwargs)`` for inputs whose batch (dim 0) is empty, as ``nn.Conv2d`` does it.

    ``method``: another bound method of ``module`` to call instead of ``forward`` (e.g.
    ``ERDN.restore_clip``).

    Layers reshape with the batch folded into other dims (einops patterns, grouped convs), which a
    batch of 0 cannot go through. The module runs once on the meta device with a batch of one (no
    memory, no compute); each output becomes an empty tensor of that shape with batch 0, on the
    inputs' device, still attached to the autograd graph of the parameters and inputs (with zero
    gradients), so a training step over an empty batch works as it does for ``nn.Conv2d``.
    """
    tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    device = tensors[0].device

    def one_on_meta(value):
        if not isinstance(value, torch.Tensor):
            return value
        shape = (1, *value.shape[1:]) if value.dim() and value.shape[0] == 0 else value.shape
        return torch.empty(shape, dtype=value.dtype, device="meta")

    with tensors_on_meta(module):
        outputs = (method or module)(*tree_map(one_on_meta, args), **tree_map(one_on_meta, kwargs))
    sources = [t for t in (*tensors, *module.parameters()) if t.requires_grad]
    anchor = sum(t.sum() for t in sources) * 0 if sources else None

    def empty(value):
        if not isinstance(value, torch.Tensor):
            return value
        out = torch.zeros((0, *value.shape[1:]), dtype=value.dtype, device=device)
        return out + anchor.to(value.dtype) if anchor is not None else out

    return tree_map(empty, outputs)
