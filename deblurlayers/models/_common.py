"""Input checks shared by the models."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..utils import check_input

__all__ = ["check_clip"]


def check_clip(frames: torch.Tensor, model: nn.Module, *, name: str = "frames", num_frames: Optional[int] = None,
               min_frames: int = 1, channels: int = 3) -> Dict[str, int]:
    """Check a ``(B, T, C, H, W)`` clip for ``model`` and return its sizes.

    Raises ``ValueError`` for a wrong layout, frame count or channel count, or an empty frame
    (``H`` or ``W`` of 0); ``TypeError`` for a non-floating dtype, or one that differs from the
    parameters' outside ``torch.autocast``. A batch of 0 passes (models return empty results).
    """
    sizes = {"C": channels} if num_frames is None else {"T": num_frames, "C": channels}
    return check_input(frames, "B T C H W", name=name, like=model, sizes=sizes,
                       minimum={"T": min_frames, "H": 1, "W": 1})
