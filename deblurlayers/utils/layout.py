"""Memory layout helpers: keep a channels-last network channels-last (``deblurlayers.inference``)."""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["memory_format_of", "in_layout_of", "cat_channels"]


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a 4-D channels-last tensor that is not also NCHW-contiguous
    (C = 1 or 1x1 tensors are both), else ``torch.contiguous_format``."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def in_layout_of(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``x`` (4-D) in ``reference``'s memory format; no copy when it already is.

    Mixed layouts are the slow case: a concatenation or a residual add of an NCHW and a
    channels-last tensor runs several times slower than either alone, and a convolution
    reorders an input that does not match its weight's layout.
    """
    if x.dim() != 4:
        return x
    return x.contiguous(memory_format=memory_format_of(reference))


def cat_channels(tensors: Sequence[torch.Tensor], dim: int = 1) -> torch.Tensor:
    """``torch.cat(tensors, dim)`` along a channel dimension, in the first tensor's layout.

    ``torch.cat`` returns NCHW whenever its inputs' layouts differ (a channels-last feature map
    and a 2-channel flow) and for any 5-D clip, whatever its inputs; here, when the first tensor's
    channels are its innermost dimension (channel stride 1: a channels-last map, or a
    ``(B, T, C, H, W)`` view of one), the result is laid out the same way.
    """
    first = tensors[0]
    dim = dim % first.dim()
    if first.dim() >= 4 and first.shape[dim] > 1 and first.stride(dim) == 1 and first.shape[-2:].numel() > 1:
        return torch.cat([t.movedim(dim, -1) for t in tensors], dim=-1).movedim(-1, dim)
    return torch.cat(tensors, dim)
