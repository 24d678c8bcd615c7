"""Input checks and padding shared by the models."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..utils import autocast_enabled, check_shape

__all__ = ["check_clip"]


def check_clip(frames: torch.Tensor, model: nn.Module, *, name: str = "frames", num_frames: Optional[int] = None,
               min_frames: int = 1, channels: int = 3) -> Dict[str, int]:
    """Check a ``(B, T, C, H, W)`` clip for ``model`` and return its sizes.

    Raises ``ValueError`` for a wrong layout, frame count or channel count, or an empty frame
    (``H`` or ``W`` of 0); ``TypeError`` for a non-floating dtype, or one that differs from the
    parameters' outside ``torch.autocast`` (inside it, the layers cast as autocast does).
    """
    sizes = {"C": channels} if num_frames is None else {"T": num_frames, "C": channels}
    dims = check_shape(frames, "B T C H W", name=name, sizes=sizes)
    if dims["T"] < min_frames:
        raise ValueError(f"{name}: expected at least {min_frames} frame(s) in (B, T, C, H, W), "
                         f"got shape {tuple(frames.shape)}")
    if dims["H"] < 1 or dims["W"] < 1:
        raise ValueError(f"{name}: expected H >= 1 and W >= 1 in (B, T, C, H, W), got shape {tuple(frames.shape)}")
    if not frames.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {frames.dtype}")
    weight = next(model.parameters(), None)
    if (weight is not None and frames.dtype != weight.dtype
            and not autocast_enabled(frames.device.type)):
        raise TypeError(f"{name}: expected dtype {weight.dtype} (that of the parameters; or run under "
                        f"torch.autocast), got {frames.dtype}")
    return dims
