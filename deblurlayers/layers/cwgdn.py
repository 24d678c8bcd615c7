"""CWGDN: channel-wise gated dynamic network (DSTNet, Pan et al., CVPR 2023, §3.1)."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..ops import channel_dynamic_filter
from ..utils import check_input, check_shape, empty_batch
from .blocks import LayerNorm2d

__all__ = ["ChannelDynamicKernels", "CWGDN"]


def _depthwise_stack(channels: int, kernel_size: int, depth: int = 3) -> nn.Sequential:
    return nn.Sequential(*[nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
                           for _ in range(depth)])


class ChannelDynamicKernels(nn.Module):
    """D_c: one ``k x k`` kernel per (sample, channel), predicted from the map it filters.

    AvgPool 2 -> 3 depthwise 3x3 convs -> MaxPool 2 -> 3 depthwise 3x3 convs -> global average
    -> 1x1 conv ``C -> k*k*C``; the kernels (no normalisation) filter the input through
    :func:`deblurlayers.ops.channel_dynamic_filter`, plus a learned per-channel bias (zeros at
    init). Official name ``DynamicDWConv`` (``kpn_channel.py``); parameter names match it.

    Args:
        channels: C.
        kernel_size: k of the predicted kernels (3 in DSTNet).

    Shape:
        - Input: ``(N, C, H, W)`` with H, W >= 4 (two 2x poolings).
        - Output: ``(N, C, H, W)``.
    """

    def __init__(self, channels: int = 256, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        self.Block1 = _depthwise_stack(channels, 3)
        self.Block2 = _depthwise_stack(channels, 3)
        self.tokernel = nn.Conv2d(channels, kernel_size * kernel_size * channels, 1)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.avg_pool = nn.AvgPool2d(2, 2)
        self.max_pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "N C H W", name="x", sizes={"C": self.channels})
        if x.shape[-2] < 4 or x.shape[-1] < 4:
            raise ValueError(f"x: expected shape (N, C, H, W) with H, W >= 4, got shape {tuple(x.shape)}")
        return channel_dynamic_filter(x, self.kernels(x), self.bias)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted ``(N, C, k, k)`` kernels (flat index ``c*k*k + ky*k + kx``)."""
        summary = self.Block2(self.max_pool(self.Block1(self.avg_pool(x)))).mean(dim=(-2, -1), keepdim=True)
        return rearrange(self.tokernel(summary), "n (c ky kx) 1 1 -> n c ky kx", ky=self.kernel_size, kx=self.kernel_size)


class _GatedDynamicFeedForward(nn.Module):
    """project_in (3x1x1) -> split -> D_c(z1) * z2 -> project_out (3x1x1), on ``(B, C, T, H, W)``."""

    def __init__(self, channels: int, expansion: int, kernel_size: int) -> None:
        super().__init__()
        hidden = expansion * channels
        self.project_in = nn.Conv3d(channels, 2 * hidden, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.kerner_conv_channel = ChannelDynamicKernels(hidden, kernel_size)  # sic: the official name
        self.project_out = nn.Conv3d(hidden, channels, (3, 1, 1), padding=(1, 0, 0), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1, z2 = self.project_in(x).chunk(2, dim=1)
        frames = x.shape[2]
        z1 = rearrange(z1, "b c t h w -> (b t) c h w")
        z1 = rearrange(self.kerner_conv_channel(z1), "(b t) c h w -> b c t h w", t=frames)
        return self.project_out(z1 * z2)


class CWGDN(nn.Module):
    """Channel-wise gated dynamic network block (DSTNet).

    ``out = x + project_out(D_c(z1) * z2)`` with ``(z1, z2) = split(project_in(LN(x)))``:
    a per-pixel LayerNorm, a 3x1x1 temporal convolution to ``2*e*C`` channels, the channel-wise
    dynamic filter D_c (:class:`ChannelDynamicKernels`) on the first half gated by the second,
    and a 3x1x1 convolution back to C. The temporal convolutions zero-pad the clip ends.

    Paper vs official code (the default follows the code, which produced the released weights):
    the paper's Fig. 2 has no LayerNorm and no residual, and applies one CWGDN to full-resolution
    features; the code wraps it as a pre-norm residual block and stacks 5 of them on the 1/4
    resolution LL band (``DSTNet``/``WaveletFP`` build that stack). Parameter names follow the
    code (``norm2.body``, ``ffn.project_in``, ``ffn.kerner_conv_channel``, ``ffn.project_out``):
    180·C² + 282·C parameters (755,328 at C = 64).

    Args:
        channels: C (64 in DSTNet).
        expansion: e, the hidden width is e·C (4).
        kernel_size: size of the dynamic kernels (3).

    Shape:
        - Input: ``(B, T, C, H, W)``, H, W >= 4.
        - Output: ``(B, T, C, H, W)``.

    Example:
        >>> block = CWGDN(channels=16)
        >>> block(torch.randn(2, 5, 16, 32, 32)).shape
        torch.Size([2, 5, 16, 32, 32])
    """

    def __init__(self, channels: int = 64, expansion: int = 4, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.norm2 = LayerNorm2d(channels)
        self.ffn = _GatedDynamicFeedForward(channels, expansion, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # D_c pools the map twice by 2 before predicting its kernels
        check_input(x, "B T C H W", name="x", like=self, sizes={"C": self.channels}, minimum={"T": 1, "H": 4, "W": 4})
        if x.shape[0] == 0:
            return empty_batch(self, x)
        y = rearrange(self.norm2(x), "b t c h w -> b c t h w")
        return x + rearrange(self.ffn(y), "b c t h w -> b t c h w")
