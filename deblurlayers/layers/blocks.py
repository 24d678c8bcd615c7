"""Small building blocks shared by several layers and models."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

__all__ = ["LayerNorm2d"]


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
