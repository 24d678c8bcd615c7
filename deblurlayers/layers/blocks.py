"""Small building blocks shared by several layers and models."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["LayerNorm2d", "ResBlock", "pad_to_multiple"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of every pixel (Restormer's "WithBias" LayerNorm).

    ``y = (x - mean_C(x)) / sqrt(var_C(x) + eps) * weight + bias`` with the biased variance.
    Parameters are ``body.weight`` and ``body.bias`` (the official DSTNet/Restormer names).

    Shape:
        - Input: ``(..., C, H, W)``
        - Output: same as input.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.body = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = self.body.normalized_shape[0]
        if x.dim() < 3 or x.shape[-3] != channels:
            raise ValueError(f"x: expected shape (..., C={channels}, H, W), got shape {tuple(x.shape)}")
        return rearrange(self.body(rearrange(x, "... c h w -> ... h w c")), "... h w c -> ... c h w")


class ResBlock(nn.Module):
    """``x + conv2(LeakyReLU(conv1(x)))``, same-size convolutions with bias, no normalisation.

    Args:
        channels: C.
        negative_slope: of the LeakyReLU (0.1 in DSTNet; 0, i.e. ReLU, in ERDN/CDVD-TSP).
        init_scale: if given, Kaiming-normal initialisation scaled by this factor (BasicSR's
            ``ResidualBlockNoBN`` uses 0.1); ``None`` keeps PyTorch's default initialisation.
        kernel_size: odd kernel size of both convolutions (3; 5 in CDVD-TSP's restoration net).

    Shape:
        - Input: ``(N, C, H, W)``
        - Output: ``(N, C, H, W)``
    """

    def __init__(self, channels: int, negative_slope: float = 0.1, init_scale: float = None,
                 kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size: expected an odd size, got {kernel_size}")
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.act = nn.LeakyReLU(negative_slope)
        if init_scale is not None:
            for conv in (self.conv1, self.conv2):
                nn.init.kaiming_normal_(conv.weight)
                conv.weight.data.mul_(init_scale)
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect",
                    min_size: int = 0) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad the last two dims of ``x`` at the bottom/right up to multiples of ``multiple``
    (and at least ``min_size``).

    Returns the padded tensor and the original ``(H, W)`` to crop back to. Reflection needs the
    padding to be smaller than the size; larger gaps fall back to replication.
    """
    h, w = x.shape[-2:]
    target_h = max(h + (-h) % multiple, min_size + (-min_size) % multiple)
    target_w = max(w + (-w) % multiple, min_size + (-min_size) % multiple)
    pad_h, pad_w = target_h - h, target_w - w
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    if mode == "reflect" and (pad_h >= h or pad_w >= w):
        mode = "replicate"
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    padded = F.pad(flat, (0, pad_w, 0, pad_h), mode=mode)
    return padded.reshape(*lead, *padded.shape[-3:]), (h, w)
