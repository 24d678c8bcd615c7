"""Blur map from optical flows (BSSTNet, Zhang et al., CVPR 2024, §3.1, eqs. 1-2)."""
from __future__ import annotations

from typing import Tuple

import torch
from einops import reduce
from torch import nn

from ..utils import check_input, empty_batch

__all__ = ["BlurMap"]

REDUCTIONS = ("mean", "sum")
NORMS = ("sequence", "frame")


class BlurMap(nn.Module):
    """Parameter-free blur map: how far each pixel moves to its neighbouring frames, min-max normalised.

    Motion blur grows with motion during the exposure, so the squared flow magnitude to the
    neighbouring frames is used as an (unnormalised) blur level per pixel:

    - first frame: ``|O[0->1]|^2``; last frame: ``|O[T-1->T-2]|^2`` (one term each);
    - interior frames: ``(|O[t->t+1]|^2 + |O[t->t-1]|^2) / 2`` (``reduction="mean"``, the official
      code) or the plain sum (``reduction="sum"``, the paper's eq. 1 with zero flows beyond the ends).

    ``B = (B^ - min) / (max - min + eps)`` over the whole clip of each sample (``norm="sequence"``,
    the official code) or over each frame (``norm="frame"``); the sharp map is ``A = 1 - B``.
    ``eps`` makes a clip with constant motion (e.g. a static camera) give ``B = 0`` where the
    official code divides 0 by 0.

    The official model detaches the map (it steers token selection and gates features, it is not
    trained through); ``detach=True`` does the same.

    Args:
        reduction: ``"mean"`` (default, official) or ``"sum"`` (paper) for interior frames.
        norm: ``"sequence"`` (default, official) or ``"frame"``.
        eps: added to ``max - min``.
        detach: return maps without gradient (default True, official).

    Shape:
        - flows_to_next: ``(B, T-1, 2, H, W)``, ``[:, t] = O[t->t+1]`` in pixels (BSSTNet's
          ``flows_backward``)
        - flows_to_prev: ``(B, T-1, 2, H, W)``, ``[:, t] = O[t+1->t]`` (BSSTNet's ``flows_forward``)
        - Output: ``(blur, sharp)``, each ``(B, T, 1, H, W)`` in ``[0, 1]``

    Example:
        >>> to_next = torch.zeros(1, 3, 2, 8, 8); to_next[:, 1, 0] = 3.0   # frame 1 moves 3 px
        >>> blur, sharp = BlurMap()(to_next, torch.zeros(1, 3, 2, 8, 8))
        >>> blur[0, :, 0, 0, 0]
        tensor([0.0000, 1.0000, 0.0000, 0.0000])
    """

    def __init__(self, reduction: str = "mean", norm: str = "sequence", eps: float = 1e-6,
                 detach: bool = True) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
        if norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
        if not eps >= 0:
            raise ValueError(f"eps: expected a non-negative float, got {eps!r}")
        self.reduction, self.norm, self.eps, self.detach = reduction, norm, float(eps), detach

    def forward(self, flows_to_next: torch.Tensor, flows_to_prev: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        dims = check_input(flows_to_next, "B Tm1 2 H W", name="flows_to_next", minimum={"H": 1, "W": 1})
        check_input(flows_to_prev, "B Tm1 2 H W", name="flows_to_prev", sizes=dims)
        if dims["B"] == 0:
            return empty_batch(self, flows_to_next, flows_to_prev)
        if self.detach:
            flows_to_next, flows_to_prev = flows_to_next.detach(), flows_to_prev.detach()
        raw = self.unnormalised(flows_to_next, flows_to_prev)
        axes = "b t 1 h w -> b 1 1 1 1" if self.norm == "sequence" else "b t 1 h w -> b t 1 1 1"
        low, high = reduce(raw, axes, "min"), reduce(raw, axes, "max")
        blur = (raw - low) / (high - low + self.eps)
        return blur, 1 - blur

    def unnormalised(self, flows_to_next: torch.Tensor, flows_to_prev: torch.Tensor) -> torch.Tensor:
        """``B^``, ``(B, T, 1, H, W)``: squared flow magnitudes to the neighbouring frames."""
        b, steps, _, h, w = flows_to_next.shape
        frames = steps + 1
        zeros = flows_to_next.new_zeros(b, 1, 1, h, w)
        # Frame t gets |O[t->t+1]|^2 (none for the last) and |O[t->t-1]|^2 (none for the first).
        ahead = torch.cat((flows_to_next.square().sum(2, keepdim=True), zeros), dim=1)
        behind = torch.cat((zeros, flows_to_prev.square().sum(2, keepdim=True)), dim=1)
        total = ahead + behind
        if self.reduction == "sum":
            return total
        neighbours = torch.full((frames,), 2.0, dtype=total.dtype, device=total.device)
        neighbours[0] = neighbours[-1] = 1.0
        return total / neighbours.view(1, frames, 1, 1, 1)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, norm={self.norm!r}, eps={self.eps}, detach={self.detach}"
