"""Channel-attention blocks of the Shift-Net+ / MPRNet family (BSSTNet's encoder, fusion and
decoder): :class:`ChannelAttention`, :class:`CAB` and the NAFNet-style :class:`GatedCAB`.

Parameter names follow BSSTNet's official ``BSST_arch.py`` (``conv_du``, ``body``, ``CA``,
``norm``, ``beta``) so its checkpoints load. Feature maps are ``(N, C, H, W)``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..utils import cat_channels, check_input
from .blocks import LayerNorm2d, leaky_relu, same_conv

__all__ = ["ChannelAttention", "CAB", "GatedCAB"]


class ChannelAttention(nn.Module):
    """``x · sigmoid(W2 ReLU(W1 avgpool(x)))`` with 1×1 convs ``C -> C`` (the official reduction
    argument is overridden to 1). Keys ``conv_du.{0,2}``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(same_conv(channels, channels, 1), nn.ReLU(inplace=True), same_conv(channels, channels, 1),
                                     nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(x.mean((-2, -1), keepdim=True))


class CAB(nn.Module):
    """Channel attention block: ``x + CA(conv(LReLU(conv(x))))``, ``k×k`` convs without bias.

    Shape: ``(N, C, H, W)`` -> same.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(same_conv(channels, channels, kernel_size), leaky_relu(),
                                  same_conv(channels, channels, kernel_size))
        self.CA = ChannelAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "N C H W", name="x", like=self, sizes={"C": self.CA.conv_du[0].in_channels},
                    minimum={"H": 1, "W": 1})
        return x + self.CA(self.body(x))


class _DepthwiseResidual(nn.Module):
    """``x + dw3×3(x)`` (official ``RepConv2``), plus ``dwk×k(x)`` when ``kernel_size`` is given
    (``RepConv``)."""

    def __init__(self, channels: int, kernel_size: Optional[int] = None) -> None:
        super().__init__()
        if kernel_size is not None:
            self.conv_1 = same_conv(channels, channels, kernel_size, groups=channels)
        self.conv_2 = same_conv(channels, channels, 3, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.conv_2(x)
        return out + self.conv_1(x) if hasattr(self, "conv_1") else out


class _Gate(nn.Module):
    """Halves of the channels multiplied: ``a·b`` (SimpleGate) or ``a·sigmoid(b)``."""

    def __init__(self, sigmoid: bool = False) -> None:
        super().__init__()
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b) if self.sigmoid else a * b


class GatedCAB(nn.Module):
    """NAFNet-style gated block with channel attention (official ``CAB1``; ``CAB2`` with
    ``extra_channels``): ``x + β·body(LN(x))``, ``β`` zero-initialised.

    body: 1×1 ``C+E -> 2C`` → depthwise-3×3 residual → SimpleGate → depthwise ``k×k`` + 3×3
    residual → 1×1 ``C -> 2C`` → sigmoid gate → channel attention → 1×1 ``C -> C``. With
    ``extra_channels = E > 0`` the input carries ``E`` more channels (Shift-Net's shifted copies,
    BSSTNet's transformer output) that pass a depthwise 3×3 first and only feed the body.

    Shape: ``(N, C + E, H, W)`` -> ``(N, C, H, W)``.
    """

    def __init__(self, channels: int, kernel_size: int = 5, extra_channels: int = 0) -> None:
        super().__init__()
        self.channels, self.extra_channels = channels, extra_channels
        if extra_channels:
            self.conv1 = same_conv(extra_channels, extra_channels, 3, groups=extra_channels)
        self.norm = LayerNorm2d(channels + extra_channels, eps=1e-6)
        self.body = nn.Sequential(
            same_conv(channels + extra_channels, 2 * channels, 1), _DepthwiseResidual(2 * channels), _Gate(),
            _DepthwiseResidual(channels, kernel_size), same_conv(channels, 2 * channels, 1), _Gate(sigmoid=True),
            ChannelAttention(channels), same_conv(channels, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "N C H W", name="x", like=self, sizes={"C": self.channels + self.extra_channels},
                    minimum={"H": 1, "W": 1})
        shortcut = x[:, :self.channels]
        if self.extra_channels:
            x = cat_channels((shortcut, self.conv1(x[:, self.channels:])), dim=1)
        return shortcut + self.body(self.norm(x)) * self.beta
