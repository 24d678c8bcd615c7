"""FSTANet: a reference network around factorized spatio-temporal attention (Suin & Rajagopalan,
"Gated Spatio-Temporal Attention-Guided Video Deblurring", arXiv / CVPR 2021).

**Derived.** The paper outlines its network ("a hierarchical encoder-decoder with densely connected
modules" whose spatio-temporal attention fuses the neighbours into the current frame) but gives no
widths, depths or code; this model is the library's concrete reading of that outline (design spec
§6.3), not a reproduction of released weights, and it has no official checkpoint.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from einops import rearrange
from torch import nn

from ..layers import FactorizedSTAttention
from ..layers.blocks import ResidualDenseBlock
from ..utils import clip_forward, pad_to_multiple
from ._cards import ModelCard, Reported
from ._checkpoint import StateDict, register_converter
from ._registry import register_model

SIZE_MULTIPLE = 4  # two stride-2 encoder stages

__all__ = ["FSTANet"]


class FSTANet(nn.Module):
    """Derived factorized-attention deblurring network: a clip in, its reference frame restored.

    1. A per-frame encoder shared by all frames, three scales (``C``, ``2C``, ``4C`` at full, 1/2,
       1/4 resolution): each a 3x3 conv (stride 1, then 2) with ReLU and a
       :class:`~deblurlayers.layers.blocks.ResidualDenseBlock`.
    2. At every scale, :class:`~deblurlayers.layers.FactorizedSTAttention` fuses the T frames'
       features into the reference frame: ``z_s = f_s[r] + FSTA(f_s)``.
    3. A decoder: a dense block at 1/4, then per scale a stride-2 transposed conv with ReLU, the
       fused skip added, and a dense block; a 3x3 conv to RGB plus the blurry reference frame.

    Any ``T >= 1`` and ``H x W`` (padded to multiples of 4, reflect, and cropped back).

    Args:
        channels: C, the full-resolution width (32).
        spatial_maps, temporal_maps: M and N of the attention (8, 4).
        growth: the dense blocks' growth rate (32).
        dense_layers: convs per dense block (4).

    Shape:
        - frames: ``(B, T, 3, H, W)``; ``reference``: the frame index r (default ``T // 2``)
        - Output: ``(B, 3, H, W)``, the restored frame r

    Example:
        >>> model = FSTANet(channels=8, growth=8)
        >>> model(torch.rand(2, 5, 3, 18, 22)).shape
        torch.Size([2, 3, 18, 22])
    """

    def __init__(self, channels: int = 32, spatial_maps: int = 8, temporal_maps: int = 4, growth: int = 32,
                 dense_layers: int = 4) -> None:
        super().__init__()
        widths = (channels, 2 * channels, 4 * channels)
        self.encoder = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c, 3, stride=1 if i == 0 else 2, padding=1), nn.ReLU(inplace=True),
                          ResidualDenseBlock(c, growth, dense_layers))
            for i, (c_in, c) in enumerate(zip((3,) + widths[:-1], widths)))
        self.attention = nn.ModuleList(FactorizedSTAttention(c, spatial_maps, temporal_maps) for c in widths)
        self.bottleneck = ResidualDenseBlock(widths[2], growth, dense_layers)
        self.upsample = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1), nn.ReLU(inplace=True))
            for c in (widths[2], widths[1]))
        self.decoder = nn.ModuleList(ResidualDenseBlock(c, growth, dense_layers) for c in (widths[1], widths[0]))
        self.out = nn.Conv2d(channels, 3, 3, padding=1)

    @clip_forward()
    def forward(self, frames: torch.Tensor, reference: Optional[int] = None) -> torch.Tensor:
        b, t = frames.shape[:2]
        r = t // 2 if reference is None else reference
        if not isinstance(r, int) or not 0 <= r < t:
            raise ValueError(f"reference: expected a frame index in [0, T={t}), got {reference!r}")
        padded, (h, w) = pad_to_multiple(frames, SIZE_MULTIPLE)
        x = rearrange(padded, "b t c h w -> (b t) c h w")
        fused = []
        for encode, attend in zip(self.encoder, self.attention):
            x = encode(x)
            clip = rearrange(x, "(b t) c h w -> b t c h w", b=b)
            fused.append(clip[:, r] + attend(clip, reference=r))
        y = self.bottleneck(fused[2])
        for up, skip, refine in zip(self.upsample, (fused[1], fused[0]), self.decoder):
            y = refine(up(y) + skip)
        return (self.out(y) + padded[:, r])[..., :h, :w]


@register_converter(FSTANet)
def convert_fstanet(model: nn.Module, state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """No official checkpoint exists (the paper released no code): a library state dict loads as it is."""
    return dict(state), {}


FSTANET_CARD = ModelCard(
    name="fstanet", paper="Gated Spatio-Temporal Attention-Guided Video Deblurring (Suin, Rajagopalan; CVPR 2021)",
    code=None, frames_in=None, min_frames=1, output="reference", output_type="Tensor (B, 3, H, W)",
    size_multiple=SIZE_MULTIPLE, parameters=1_204_935, official_parameters=None, loss=None,
    compute="not given; this network is derived (the paper released no code)",
    reported=(Reported("GoPro", 31.61, 0.91, "Table 1 (the paper's network, not this derived one)"),))


@register_model("fstanet", card=FSTANET_CARD)
def fstanet(**kwargs) -> FSTANet:
    """FSTANet (derived reference network of the factorized-attention paper)."""
    return FSTANet(**kwargs)
