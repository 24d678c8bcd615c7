"""Memory layout helpers: keep a channels-last network channels-last (``deblurlayers.inference``)."""
from __future__ import annotations

import torch

__all__ = ["memory_format_of", "in_layout_of"]


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
