"""DSTNet and DSTNet-L (Pan et al., "Deep Discriminative Spatial and Temporal Network for Efficient
Video Deblurring", CVPR 2023), assembled from :class:`~deblurlayers.layers.WaveletFP`.

The data flow, names and counts follow the official ``basicsr/archs/deblur_arch.py`` (``Deblur``)
and ``deblurL_arch.py`` (``Deblur_L``); ``docs/models/dstnet.md`` lists the paper/code differences.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import torch
from einops import rearrange
from torch import nn

from ..layers import WaveletFP
from ..utils import clip_forward, pad_to_multiple
from ._checkpoint import StateDict, register_converter
from ._cards import Checkpoint, ModelCard, Reported, TestPipeline
from ._registry import register_model

__all__ = ["DSTNet", "dstnet_loss", "official_haar_filters"]

# Two Haar levels and D_p's x8 kernel upsampling at the half-resolution propagation: the official
# code requires H, W multiples of 16; the model pads to them.
SIZE_MULTIPLE = 16


class DSTNet(nn.Module):
    """DSTNet: a blurry clip in, the restored clip out (official ``Deblur`` / ``Deblur_L``).

    ``out_t = recons(WaveletFP(feat_extractor(B_t))_t) + B_t``: a per-frame 3x3 conv to C
    features, :class:`~deblurlayers.layers.WaveletFP` (two Haar levels, 5 CWGDN blocks on the
    quarter-resolution low band, bidirectional DTFF propagation at half resolution), a per-frame
    3x3 conv to RGB and the global residual (no clamp). The official 3-D convolutions with
    ``(1, 3, 3)`` kernels are per-frame 2-D convolutions here; the converter reshapes their weights.

    Any ``T >= 1`` and ``H x W``: frames are padded (reflect, bottom/right) to multiples of 16, as
    the official code requires, and the output cropped back. Inputs in [0, 1].

    Parameters: ``DSTNet()`` holds 7,449,795 (the paper's 7.45 M, counted by the official code as
    7,450,819 with its 1,024 frozen Haar filter values, which are no parameters here: the Haar
    transform is the fixed :func:`~deblurlayers.ops.haar_dwt2d`); ``get_model("dstnet_l")`` holds
    16,964,003 (official 16,965,027).

    Args:
        num_feat: C, the feature width (64).
        prop_feat: P, the propagation width (C; 96 for DSTNet-L).
        num_blocks: ResBlocks per DTFF (15; 30 for DSTNet-L).
        **wavelet_kwargs: further :class:`~deblurlayers.layers.WaveletFP` options (``levels``,
            ``num_cwgdn``, ``init``: the paper's variants).

    Shape:
        - frames: ``(B, T, 3, H, W)``
        - Output: ``(B, T, 3, H, W)``

    Example:
        >>> model = DSTNet(num_feat=8, num_blocks=1)
        >>> model(torch.rand(1, 2, 3, 20, 24)).shape
        torch.Size([1, 2, 3, 20, 24])
    """

    def __init__(self, num_feat: int = 64, prop_feat: Optional[int] = None, num_blocks: int = 15,
                 **wavelet_kwargs) -> None:
        super().__init__()
        self.feat_extractor = nn.Conv2d(3, num_feat, 3, padding=1)
        self.wavelet_fp = WaveletFP(num_feat, prop_feat, num_blocks, **wavelet_kwargs)
        self.recons = nn.Conv2d(num_feat, 3, 3, padding=1)

    @clip_forward()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b = frames.shape[0]
        padded, (h, w) = pad_to_multiple(frames, SIZE_MULTIPLE)
        flat = rearrange(padded, "b t c h w -> (b t) c h w")
        features = rearrange(self.feat_extractor(flat), "(b t) c h w -> b t c h w", b=b)
        features = rearrange(self.wavelet_fp(features), "b t c h w -> (b t) c h w")
        out = rearrange(self.recons(features) + flat, "(b t) c h w -> b t c h w", b=b)
        return out[..., :h, :w]


def dstnet_loss(restored: torch.Tensor, sharp: torch.Tensor, fft_weight: float = 0.1,
                eps: float = 1e-12) -> torch.Tensor:
    """DSTNet's training loss (``train_Deblur_GOPRO.yml``): Charbonnier + 0.1 x FFT L1.

    ``mean(sqrt((x - y)^2 + eps)) + fft_weight * mean(|rfft2(x) - rfft2(y)|)``, the FFT term the
    mean complex magnitude of the spectrum difference over the last two dims, computed in fp32
    (half-precision FFTs lose too much). Any matching shapes, e.g. ``(B, T, 3, H, W)``.
    """
    if restored.shape != sharp.shape:
        raise ValueError(f"sharp: expected the shape of restored {tuple(restored.shape)}, got {tuple(sharp.shape)}")
    charbonnier = torch.sqrt((restored - sharp).float().pow(2) + eps).mean()
    spectrum = torch.fft.rfft2(restored.float()) - torch.fft.rfft2(sharp.float())
    return charbonnier + fft_weight * spectrum.abs().mean()


# ------------------------------------------------------------------------------ official weights

def official_haar_filters(channels: int) -> torch.Tensor:
    """DSTNet's frozen ``wave.haar_weights`` ``(4C, 1, 2, 2)``: per channel the four +-1 filters
    LL, (a-b+c-d), (a+b-c-d), (a-b-c+d) of a 2x2 block ``[[a, b], [c, d]]`` (the /4 is applied in
    its forward), channel-major. :func:`~deblurlayers.ops.haar_dwt2d` computes this transform."""
    signs = torch.tensor([[[1, 1], [1, 1]], [[1, -1], [1, -1]], [[1, 1], [-1, -1]], [[1, -1], [-1, 1]]],
                         dtype=torch.float32)
    return signs[:, None].repeat(channels, 1, 1, 1)


_PER_FRAME_CONVS = ("feat_extractor.weight", "recons.weight")
_TOP_LEVEL = ("feat_extractor.", "recons.", "wavelet_fp.")  # the last: a library state dict


@register_converter(DSTNet)
def convert_dstnet(model: nn.Module, state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """Official ``Deblur``/``Deblur_L`` names -> :class:`DSTNet`.

    WaveletFP's modules (``x_wave_*``, ``transformer_scale4``, ``up``, ``down``,
    ``*_propagation``) move under ``wavelet_fp.``; the ``(1, 3, 3)`` Conv3d weights become 3x3
    Conv2d weights; ``wave.haar_weights`` is checked to hold the fixed Haar filters, then discarded.
    """
    out, discarded = {}, {}
    for key, value in state.items():
        if key == "wave.haar_weights":
            expected = official_haar_filters(value.shape[0] // 4)
            if value.shape != expected.shape or not torch.equal(value.float().cpu(), expected):
                raise ValueError(f"wave.haar_weights: expected DSTNet's fixed Haar filters of shape "
                                 f"{tuple(expected.shape)}, got other values of shape {tuple(value.shape)}")
            discarded[key] = "the fixed Haar filters: the transform is the haar_dwt2d op"
        elif key in _PER_FRAME_CONVS and value.dim() == 5:
            out[key] = value.squeeze(2)
        elif key.startswith(_TOP_LEVEL):
            out[key] = value
        else:
            out["wavelet_fp." + key] = value
    return out, discarded


_DSTNET_PAPER = ("Deep Discriminative Spatial and Temporal Network for Efficient Video Deblurring "
                 "(Pan, Xu, Dong, Ge, Tang; CVPR 2023)")
_DSTNET_CODE = "https://github.com/xuboming8/DSTNet"
_DSTNET_WHERE = "the repository's experiments/ folder (README: 'Models are available in ./experiments/')"

DSTNET_CARD = ModelCard(
    name="dstnet", paper=_DSTNET_PAPER, code=_DSTNET_CODE, frames_in=None, min_frames=1, output="clip",
    output_type="Tensor (B, T, 3, H, W)", size_multiple=SIZE_MULTIPLE, parameters=7_449_795,
    official_parameters=7_450_819, loss=dstnet_loss,
    compute="7.45 M parameters; 0.08 s per 1280x720 frame on an A6000 (Table 1)",
    reported=(Reported("GoPro", 34.16, 0.9679, "Table 1"), Reported("DVD", 33.79, 0.9615, "Table 2"),
              Reported("BSD 1ms-8ms", 34.45, 0.9548, "Table 3")),
    checkpoints=tuple(Checkpoint(f"experiments/{file}.pth", dataset, "params", _DSTNET_WHERE)
                      for file, dataset in (("GOPRO", "GoPro"), ("DVD", "DVD"), ("BSD", "BSD 1ms-8ms"))),
    manifest="DSTNet",
    protocol="dstnet", test_pipeline=TestPipeline(clip_frames=30, clip_frames_per_dataset={"dvd": 25}))

DSTNET_L_CARD = dataclasses.replace(
    DSTNET_CARD, name="dstnet_l", parameters=16_964_003, official_parameters=16_965_027,
    compute="16.96 M parameters; 0.28 s per 1280x720 frame on an A6000 (Table 7)",
    reported=(Reported("GoPro", 35.05, 0.9733, "Table 7"),),
    checkpoints=(Checkpoint("experiments/GOPRO_Large.pth", "GoPro", "params", _DSTNET_WHERE,
                            config={"num_feat": 96, "prop_feat": 144, "num_blocks": 30}),),
    manifest="DSTNet_L")


@register_model("dstnet", card=DSTNET_CARD)
def dstnet(**kwargs) -> DSTNet:
    """DSTNet (C = P = 64, 15 blocks; 7.45 M parameters)."""
    return DSTNet(**kwargs)


@register_model("dstnet_l", card=DSTNET_L_CARD)
def dstnet_l(**kwargs) -> DSTNet:
    """DSTNet-L (C = 64, P = 96, 30 blocks; 16.96 M parameters)."""
    return DSTNet(**{"num_feat": 64, "prop_feat": 96, "num_blocks": 30, **kwargs})
