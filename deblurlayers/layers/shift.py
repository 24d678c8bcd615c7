"""Shift-Net+'s grouped spatio-temporal shift block (BSSTNet's decoder).

Clips are ``(B, T, C, H, W)``; parameter names follow the official ``Encoder_shift_block``.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import cat_channels, check_input, empty_batch
from .cab import GatedCAB

__all__ = ["ShiftBlock"]


# Shift-Net's spatial shifts in units of 4 px, (dy, dx): 16 groups of n2 channels, then 8 of n1.
_OUTER_SHIFTS = ((2, 2), (2, 1), (2, 0), (2, -1), (2, -2), (-2, 2), (-2, 1), (-2, 0), (-2, -1), (-2, -2),
                 (1, 2), (1, -2), (0, 2), (0, -2), (-1, 2), (-1, -2))
_INNER_SHIFTS = ((1, 1), (1, 0), (1, -1), (0, 1), (0, -1), (-1, 1), (-1, 0), (-1, -1))
_SHIFT_UNIT = 4


class ShiftBlock(nn.Module):
    """Shift-Net+'s grouped spatio-temporal shift block (official ``Encoder_shift_block``).

    Four stages, each: a temporal shift of half the channels by one frame (forward in stages 0
    and 2, backward in 1 and 3; the frame axis wraps around, as the official ``torch.roll``), a
    copy of ``8·(C//16)`` of the shifted channels moved spatially by {0, ±4, ±8} px in 24 groups
    (zeros shifted in), then ``GatedCAB(C, 5, extra)`` on the concatenation and ``GatedCAB(C, 5)``.

    (The official ``forward`` takes a ``reverse`` flag it ignores; BSSTNet passes it for the
    second block, with no effect.)

    Shape: ``(B, T, C, H, W)`` -> same.
    """

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        if channels < 16:
            raise ValueError(f"channels: expected >= 16 (8·(C//16) shifted channels), got {channels}")
        self.channels, self.number = channels, channels // 16
        extra = 8 * self.number
        for name in ("encoder_level1", "encoder_level1_1", "encoder_level1_2", "encoder_level1_3"):
            self.add_module(name, nn.Sequential(GatedCAB(channels, 5, extra), GatedCAB(channels, 5)))

    def stages(self) -> List[nn.Module]:
        return [self.encoder_level1, self.encoder_level1_1, self.encoder_level1_2, self.encoder_level1_3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = check_input(x, "B T C H W", name="x", like=self, sizes={"C": self.channels},
                        minimum={"T": 1, "H": 1, "W": 1})["B"]
        if b == 0:
            return empty_batch(self, x)
        for i, stage in enumerate(self.stages()):
            shifted = self.shift(x, backward=i % 2 == 1)
            x = stage(shifted.flatten(0, 1)).unflatten(0, (b, -1))
        return x

    def shift(self, x: torch.Tensor, backward: bool = False) -> torch.Tensor:
        """``(B, T, C, H, W)`` -> ``(B, T, C + 8·(C//16), H, W)``: temporal shift, then the spatial copies."""
        half = x.shape[2] // 2
        extra = 8 * self.number
        if backward:
            y = cat_channels((x[:, :, half:], x[:, :, :half].roll(-1, dims=1)), dim=2)
            moved = y[:, :, -extra:]
        else:
            y = cat_channels((x[:, :, -half:].roll(1, dims=1), x[:, :, :-half]), dim=2)
            moved = y[:, :, :extra]
        return cat_channels((y, self._spatial_shift(moved)), dim=2)

    def _spatial_shift(self, x: torch.Tensor) -> torch.Tensor:
        n2 = (self.number - 1) // 2
        n1 = self.number - 2 * n2
        reach = 2 * _SHIFT_UNIT
        h, w = x.shape[-2:]
        padded = F.pad(x, (reach, reach, reach, reach))
        groups = [(n2, s) for s in _OUTER_SHIFTS] + [(n1, s) for s in _INNER_SHIFTS]
        pieces, start = [], 0
        for size, (dy, dx) in groups:
            top, left = reach - dy * _SHIFT_UNIT, reach - dx * _SHIFT_UNIT
            pieces.append(padded[:, :, start:start + size, top:top + h, left:left + w])
            start += size
        return cat_channels(pieces, dim=2)
