"""Small building blocks shared by several layers and models."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

__all__ = ["LayerNorm2d", "ResBlock", "ResidualDenseBlock", "encoder_stage", "decoder_stage",
           "output_stage"]


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
        self.act = activation(negative_slope)
        if init_scale is not None:
            for conv in (self.conv1, self.conv2):
                nn.init.kaiming_normal_(conv.weight)
                conv.weight.data.mul_(init_scale)
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class ResidualDenseBlock(nn.Module):
    """RDN's residual dense block: densely connected 3x3 convs, a 1x1 local fusion, a local residual.

    ``y_i = ReLU(conv_i([x, y_1, ..., y_{i-1}]))`` for ``i = 1..L``;
    ``out = x + fusion([x, y_1, ..., y_L])``.

    Args:
        channels: C.
        growth: channels each conv adds (32).
        num_layers: L (4).

    Shape:
        - Input: ``(N, C, H, W)``
        - Output: ``(N, C, H, W)``
    """

    def __init__(self, channels: int, growth: int = 32, num_layers: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels + i * growth, growth, 3, padding=1), nn.ReLU(inplace=True))
            for i in range(num_layers))
        self.fusion = nn.Conv2d(channels + num_layers * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return x + self.fusion(torch.cat(features, dim=1))


# CDVD-TSP's encoder-decoder stages (Pan et al., CVPR 2020), shared by STDANet (its whole U-Net)
# and ERDN (``center_net``, ``recons_net``). Their index layout (``0.0`` = the head conv, ``1..n``
# = ResBlocks, ``n+1.0`` = the transposed conv) is the official one, so released weights load.
# Every ResBlock is conv-ReLU-conv; the head/upsampling activation is LeakyReLU(0.1) in STDANet
# and ReLU in ERDN (``negative_slope``).


def encoder_stage(in_channels: int, channels: int, kernel_size: int = 3, stride: int = 1,
                  negative_slope: float = 0.1, num_resblocks: int = 3) -> nn.Sequential:
    """``inBlock`` (stride 1) / ``encoder_first``, ``encoder_second`` (stride 2) of CDVD-TSP.

    ``[Conv(k, stride) + LeakyReLU] -> num_resblocks x ResBlock(k)``:
    ``(N, in_channels, H, W) -> (N, channels, H / stride, W / stride)``.
    """
    head = nn.Sequential(nn.Conv2d(in_channels, channels, kernel_size, stride, kernel_size // 2),
                         activation(negative_slope))
    return nn.Sequential(head, *[ResBlock(channels, 0.0, kernel_size=kernel_size) for _ in range(num_resblocks)])


def decoder_stage(in_channels: int, channels: int, kernel_size: int = 5, negative_slope: float = 0.1,
                  num_resblocks: int = 3) -> nn.Sequential:
    """``decoder_second`` / ``decoder_first`` of CDVD-TSP.

    ``num_resblocks x ResBlock(k) -> [ConvTranspose 3x3 s2 + LeakyReLU]``:
    ``(N, in_channels, H, W) -> (N, channels, 2H, 2W)``.
    """
    up = nn.Sequential(nn.ConvTranspose2d(in_channels, channels, 3, stride=2, padding=1, output_padding=1),
                       activation(negative_slope))
    return nn.Sequential(*[ResBlock(in_channels, 0.0, kernel_size=kernel_size) for _ in range(num_resblocks)], up)


def output_stage(channels: int, out_channels: int = 3, kernel_size: int = 5, num_resblocks: int = 3) -> nn.Sequential:
    """``outBlock`` of CDVD-TSP: ``num_resblocks x ResBlock(k) -> Conv(k)``, no activation."""
    return nn.Sequential(*[ResBlock(channels, 0.0, kernel_size=kernel_size) for _ in range(num_resblocks)],
                         nn.Conv2d(channels, out_channels, kernel_size, padding=kernel_size // 2))


def same_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = False, groups: int = 1) -> nn.Conv2d:
    """A ``k×k`` convolution that keeps the size (padding ``k // 2``), without bias by default (the
    Shift-Net+ / MPRNet blocks')."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias, groups=groups)


def activation(negative_slope: float) -> nn.Module:
    """An in-place LeakyReLU (a ReLU for slope 0, which autograd cannot invert in place).

    Every use follows a convolution whose output nothing else reads, so computing in place is
    safe under autograd and saves one activation-sized buffer (and its page faults) per call.
    """
    return nn.ReLU(inplace=True) if negative_slope == 0 else nn.LeakyReLU(negative_slope, inplace=True)


def leaky_relu(slope: float = 0.1) -> nn.LeakyReLU:
    return nn.LeakyReLU(slope, inplace=True)
