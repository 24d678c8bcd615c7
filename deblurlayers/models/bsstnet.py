"""BSSTNet (Zhang et al., "Blur-aware Spatio-temporal Sparse Transformer for Video Deblurring",
CVPR 2024): the official network (``BSST_arch.py``), assembled from the library's layers.

Data flow for a clip ``(B, T, 3, H, W)`` (``docs/models/bsstnet.md``):

1. flows at 1/4 resolution, given or estimated by the frozen flow estimator (RAFT-large on ×0.5
   frames, as the official wrapper);
2. a blur map from those flows conditions the flow refiner (:class:`FlowRefiner`, ProPainter's
   recurrent flow completion); the blur map of the refined flows (:class:`~deblurlayers.layers.BlurMap`,
   detached) steers everything after;
3. a CAB encoder to 1/4 resolution (:class:`CAB`);
4. BBFP: four branches of second-order propagation with blur-aware alignment
   (:class:`~deblurlayers.layers.BlurAwareAlignment`) and a gated CAB backbone each;
5. reconstruction: Conv3d + two residual Swin-3D groups (:class:`SwinReconstruction`);
6. BSST: soft split, four :class:`~deblurlayers.layers.BlurAwareSparseAttention` layers, soft
   composition, and a gated CAB fusion with the reconstruction's features;
7. a Shift-Net decoder (:class:`ShiftBlock`) to full resolution, plus the input frames.

Unlike the official code: any batch size, any ``H×W`` (padded to multiples of 16 and cropped back),
any ``T >= 2``; the blur map has an epsilon; the 8.27 M parameters of modules the official forward never calls are not built (the converter
reports their keys as discarded). The BSST frame selection is the released code's by default
(``selection="official"``: only the first sparse-attention layer selects by blur, as the released
weights were trained); ``selection="blur"`` is the paper's in every layer.
"""
from __future__ import annotations

import contextlib
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import (BlurAwareAlignment, BlurAwareSparseTransformer, BlurMap, LayerNorm2d, ModulatedDeformConv2d,
                      SoftComp, SoftSplit)
from ..ops import flow_warp
from ..utils import (autocast_enabled, check_clip, check_floating, check_same_device, check_shape, clip_forward,
                     pad_to_multiple)
from ._checkpoint import StateDict, register_converter, rename_prefixes
from ._cards import Checkpoint, ModelCard, Reported
from ._registry import register_model
from ._tiling import tiled_inference
from .flow import RAFT

__all__ = ["BSSTNet", "CAB", "GatedCAB", "ShiftBlock", "SwinReconstruction", "FlowRefiner", "bsstnet_loss"]

BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")
# Frames are padded to this multiple: two stride-2 convs to 1/4, then the flow refiner's two more.
SIZE_MULTIPLE = 16


def _conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = False, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias, groups=groups)


def _lrelu(slope: float = 0.1) -> nn.LeakyReLU:
    return nn.LeakyReLU(slope, inplace=True)


# ------------------------------------------------------------------------------------------------
# Convolutional blocks (Shift-Net+ / MPRNet family)
# ------------------------------------------------------------------------------------------------
class ChannelAttention(nn.Module):
    """``x · sigmoid(W2 ReLU(W1 avgpool(x)))`` with 1×1 convs ``C -> C`` (the official reduction
    argument is overridden to 1). Keys ``conv_du.{0,2}``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(_conv(channels, channels, 1), nn.ReLU(inplace=True), _conv(channels, channels, 1),
                                     nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(x.mean((-2, -1), keepdim=True))


class CAB(nn.Module):
    """Channel attention block: ``x + CA(conv(LReLU(conv(x))))``, ``k×k`` convs without bias.

    Shape: ``(N, C, H, W)`` -> same.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels, kernel_size), _lrelu(),
                                  _conv(channels, channels, kernel_size))
        self.CA = ChannelAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.CA(self.body(x))


class _DepthwiseResidual(nn.Module):
    """``x + dw3×3(x)`` (official ``RepConv2``), plus ``dwk×k(x)`` when ``kernel_size`` is given
    (``RepConv``)."""

    def __init__(self, channels: int, kernel_size: Optional[int] = None) -> None:
        super().__init__()
        if kernel_size is not None:
            self.conv_1 = _conv(channels, channels, kernel_size, groups=channels)
        self.conv_2 = _conv(channels, channels, 3, groups=channels)

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
            self.conv1 = _conv(extra_channels, extra_channels, 3, groups=extra_channels)
        self.norm = LayerNorm2d(channels + extra_channels, eps=1e-6)
        self.body = nn.Sequential(
            _conv(channels + extra_channels, 2 * channels, 1), _DepthwiseResidual(2 * channels), _Gate(),
            _DepthwiseResidual(channels, kernel_size), _conv(channels, 2 * channels, 1), _Gate(sigmoid=True),
            ChannelAttention(channels), _conv(channels, channels, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x[:, :self.channels]
        if self.extra_channels:
            x = torch.cat((shortcut, self.conv1(x[:, self.channels:])), dim=1)
        return shortcut + self.body(self.norm(x)) * self.beta


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
        b = x.shape[0]
        for i, stage in enumerate(self.stages()):
            shifted = self.shift(x, backward=i % 2 == 1)
            x = stage(shifted.flatten(0, 1)).unflatten(0, (b, -1))
        return x

    def shift(self, x: torch.Tensor, backward: bool = False) -> torch.Tensor:
        """``(B, T, C, H, W)`` -> ``(B, T, C + 8·(C//16), H, W)``: temporal shift, then the spatial copies."""
        half = x.shape[2] // 2
        extra = 8 * self.number
        if backward:
            y = torch.cat((x[:, :, half:], x[:, :, :half].roll(-1, dims=1)), dim=2)
            moved = y[:, :, -extra:]
        else:
            y = torch.cat((x[:, :, -half:].roll(1, dims=1), x[:, :, :-half]), dim=2)
            moved = y[:, :, :extra]
        return torch.cat((y, self._spatial_shift(moved)), dim=2)

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
        return torch.cat(pieces, dim=2)


class SkipUpsample(nn.Module):
    """``conv1×1(bilinear×2(x)) + skip`` (official ``SkipUpSample``; key ``up.1``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                _conv(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.up(x) + skip


class PixelShuffleUpsample(nn.Module):
    """Conv ``C -> C'·s²`` then pixel shuffle ×s (official ``PixelShufflePack``)."""

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2, kernel_size: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.upsample_conv = _conv(in_channels, out_channels * scale * scale, kernel_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.upsample_conv(x), self.scale)


# ------------------------------------------------------------------------------------------------
# Reconstruction: residual Swin-3D groups (RVRT's RSTB)
# ------------------------------------------------------------------------------------------------
def _window_and_shift(size: Sequence[int], window: Sequence[int], shift: Sequence[int]):
    """A window no larger than the input, and no shift along a dim the window covers whole."""
    window = tuple(min(s, w) for s, w in zip(size, window))
    shift = tuple(0 if s <= w else sh for s, w, sh in zip(size, window, shift))
    return window, shift


class WindowAttention3d(nn.Module):
    """Multi-head self-attention inside ``(Wd, Wh, Ww)`` windows with a learned relative-position
    bias (Video Swin). Keys ``relative_position_bias_table``, ``qkv_self``, ``proj``.

    Shape: ``(B, nW, N, C)`` windows of ``N`` tokens; ``mask`` ``(nW, N, N)`` additive or None.
    """

    def __init__(self, dim: int, window_size: Sequence[int], num_heads: int) -> None:
        super().__init__()
        self.window_size, self.num_heads = tuple(window_size), num_heads
        wd, wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1),
                                                                     num_heads))
        self.register_buffer("relative_position_index", self._position_index(), persistent=False)
        self.qkv_self = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _position_index(self) -> torch.Tensor:
        wd, wh, ww = self.window_size
        coords = torch.stack(torch.meshgrid(torch.arange(wd), torch.arange(wh), torch.arange(ww), indexing="ij"))
        rel = coords.flatten(1)[:, :, None] - coords.flatten(1)[:, None, :]
        rel = rel + torch.tensor([wd - 1, wh - 1, ww - 1])[:, None, None]
        return (rel[0] * (2 * wh - 1) + rel[1]) * (2 * ww - 1) + rel[2]

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        n = x.shape[-2]
        q, k, v = rearrange(self.qkv_self(x), "b w n (three m d) -> three b w m n d", three=3, m=self.num_heads)
        # Shrunk windows (inputs smaller than a window) read the top-left block of the full
        # window's index, as the official code does.
        index = self.relative_position_index[:n, :n]
        bias = rearrange(self.relative_position_bias_table[index.reshape(-1)], "(i j) m -> m i j", i=n)
        bias = bias.to(q.dtype)
        attn_mask = bias if mask is None else bias + mask[:, None, :n, :n].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(rearrange(out, "b w m n d -> b w n (m d)"))


class SwinLayer3d(nn.Module):
    """Pre-norm (shifted) window attention and an MLP (GELU, ratio 2), both residual (official
    ``STL``). Channels-last ``(B, D, H, W, C)``.

    As the official layer: the normed input is zero-padded to whole windows (padded tokens take
    part in the attention), the shifted layer rolls cyclically with the -100 mask between regions.
    """

    def __init__(self, dim: int, num_heads: int, window_size: Sequence[int], shift_size: Sequence[int],
                 mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.window_size, self.shift_size = tuple(window_size), tuple(shift_size)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3d(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.mlp.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attention(x)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        _, d, h, w, _ = x.shape
        window, shift = _window_and_shift((d, h, w), self.window_size, self.shift_size)
        pads = [(-s) % ws for s, ws in zip((d, h, w), window)]
        x = F.pad(self.norm1(x), (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        padded = x.shape[1:4]
        shifted = any(shift)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        (wd, wh, ww), (nd, nh) = window, (padded[0] // window[0], padded[1] // window[1])
        windows = rearrange(x, "b (nd wd) (nh wh) (nw ww) c -> b (nd nh nw) (wd wh ww) c", wd=wd, wh=wh, ww=ww)
        mask = _shift_mask(padded, window, shift, x.device) if shifted else None
        out = self.attn(windows, mask)
        out = rearrange(out, "b (nd nh nw) (wd wh ww) c -> b (nd wd) (nh wh) (nw ww) c",
                        nd=nd, nh=nh, wd=wd, wh=wh)
        if shifted:
            out = torch.roll(out, shifts=shift, dims=(1, 2, 3))
        return out[:, :d, :h, :w]


def _shift_mask(size: Sequence[int], window: Sequence[int], shift: Sequence[int], device) -> torch.Tensor:
    """``(nW, N, N)``: -100 between tokens of one shifted window that came from different regions."""
    labels = []
    for s, ws, sh in zip(size, window, shift):
        pos = torch.arange(s, device=device)
        # regions [0, s-ws), [s-ws, s-sh), [s-sh, s); one region along an unshifted dim
        labels.append(torch.zeros_like(pos) if sh == 0 else (pos >= s - ws).long() + (pos >= s - sh).long())
    region = (labels[0][:, None, None] * 9 + labels[1][None, :, None] * 3 + labels[2][None, None, :])
    wd, wh, ww = window
    region = rearrange(region, "(nd wd) (nh wh) (nw ww) -> (nd nh nw) (wd wh ww)", wd=wd, wh=wh, ww=ww)
    different = region[:, :, None] != region[:, None, :]
    return different.float() * -100.0


class SwinGroup3d(nn.Module):
    """``depth`` Swin-3D layers, every other one shifted by half a window, and a Linear, residual
    (official ``RSTB``: ``residual_group.blocks.*``, ``linear``). Channels-last."""

    def __init__(self, dim: int, depth: int = 2, num_heads: int = 6, window_size: Sequence[int] = (2, 8, 8),
                 mlp_ratio: float = 2.0) -> None:
        super().__init__()
        shift = tuple(w // 2 for w in window_size)
        self.residual_group = nn.Module()
        self.residual_group.blocks = nn.ModuleList(
            SwinLayer3d(dim, num_heads, window_size, shift if i % 2 else (0, 0, 0), mlp_ratio) for i in range(depth))
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for block in self.residual_group.blocks:
            out = block(out)
        return x + self.linear(out)


class SwinReconstruction(nn.Module):
    """BSSTNet's reconstruction (official ``RSTBWithInputConv``, not in the paper): grouped Conv3d
    ``(1, 3, 3)`` to ``dim``, LayerNorm, ``num_groups`` :class:`SwinGroup3d`, LayerNorm.

    Shape: ``(B, T, in_channels, H, W)`` -> ``(B, T, dim, H, W)``.
    """

    def __init__(self, in_channels: int = 960, dim: int = 192, groups: int = 3, num_groups: int = 2,
                 depth: int = 2, num_heads: int = 6, window_size: Sequence[int] = (2, 8, 8)) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, dim, (1, 3, 3), padding=(0, 1, 1), groups=groups)
        self.norm_in = nn.LayerNorm(dim)
        self.blocks = nn.Sequential(*(SwinGroup3d(dim, depth, num_heads, window_size) for _ in range(num_groups)))
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(self.conv(rearrange(x, "b t c h w -> b c t h w")), "b c t h w -> b t h w c")
        x = self.norm_out(self.blocks(self.norm_in(x)))
        return rearrange(x, "b t h w c -> b t c h w")


# ------------------------------------------------------------------------------------------------
# Flow refiner (ProPainter's RecurrentFlowCompleteNet, as BSSTNet adapts it)
# ------------------------------------------------------------------------------------------------
class _P3DBlock(nn.Module):
    """Pseudo-3D block: Conv3d ``(1, k, k)`` stride ``(1, s, s)`` + LReLU(0.2), then a temporal
    Conv3d ``(3, 1, 1)`` with dilation 2 (zero-padded in time)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv3d(in_channels, out_channels, (1, 3, 3), (1, stride, stride), (0, 1, 1)),
                                   _lrelu(0.2))
        self.conv2 = nn.Sequential(nn.Conv3d(out_channels, out_channels, (3, 1, 1), padding=(2, 0, 0),
                                             dilation=(2, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class _UpConv(nn.Module):
    """Bilinear ×2 (``align_corners=True``) then a 3×3 conv (ProPainter's ``deconv``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = _conv(in_channels, out_channels, 3, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


class _FlowFeaturePropagation(nn.Module):
    """Second-order bidirectional propagation without flows (ProPainter's
    ``BidirectionalPropagation``): a bounded-offset DCN (16 groups) aligns the previous two
    states, a 2-conv backbone updates them; a 1×1 fusion of both directions is added to the input.

    Shape: ``(B, T, C, H, W)`` -> same.
    """

    def __init__(self, channels: int = 64, deformable_groups: int = 16) -> None:
        super().__init__()
        self.deform_align, self.backbone = nn.ModuleDict(), nn.ModuleDict()
        for i, branch in enumerate(("backward_", "forward_")):
            self.deform_align[branch] = ModulatedDeformConv2d(
                2 * channels, channels, 3, padding=1, deformable_groups=deformable_groups,
                cond_channels=3 * channels, offset_channels=(channels,) * 3, max_residue_magnitude=5)
            self.backbone[branch] = nn.Sequential(nn.Conv2d((2 + i) * channels, channels, 3, padding=1), _lrelu(),
                                                  nn.Conv2d(channels, channels, 3, padding=1))
        self.fusion = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = list(x.unbind(1))
        done: Dict[str, List[torch.Tensor]] = {}
        for branch in ("backward_", "forward_"):
            order = range(len(frames) - 1, -1, -1) if branch == "backward_" else range(len(frames))
            states: List[torch.Tensor] = []
            for i, t in enumerate(order):
                state = torch.zeros_like(frames[t])
                if i > 0:
                    second = states[-2] if i > 1 else torch.zeros_like(states[-1])
                    cond = torch.cat((states[-1], frames[t], second), dim=1)
                    state = self.deform_align[branch](torch.cat((states[-1], second), dim=1), cond)
                inputs = [frames[t]] + [done[k][t] for k in done] + [state]
                states.append(state + self.backbone[branch](torch.cat(inputs, dim=1)))
            done[branch] = states[::-1] if branch == "backward_" else states
        fused = [self.fusion(torch.cat((done["backward_"][t], done["forward_"][t]), dim=1)) for t in range(len(frames))]
        return torch.stack(fused, dim=1) + x


class FlowRefiner(nn.Module):
    """BSSTNet's flow refiner (official ``blur_motion_refine``, ProPainter's
    ``RecurrentFlowCompleteNet``; not in the paper): refines flows conditioned on the blur map.

    ``cat(blur, flow)`` per frame → Conv3d ``(1, 5, 5)`` stride 2 (replicate padding) → two P3D
    blocks (the second stride 2: 1/4 of the flow grid) → three dilated Conv3d → flowless
    second-order propagation → ×2 upsampling twice; the last conv is zero-initialised, so a fresh
    refiner returns its input flows.

    Shape:
        - blur: ``(B, N, 1, h, w)``, flows: ``(B, N, 2, h, w)`` with ``h, w`` multiples of 4
        - Output: ``(B, N, 2, h, w)``: ``flows`` + the predicted correction
    """

    def __init__(self, channels: int = 64, deformable_groups: int = 16) -> None:
        super().__init__()
        half = channels // 2
        self.downsample = nn.Sequential(nn.Conv3d(3, half, (1, 5, 5), (1, 2, 2), (0, 2, 2), padding_mode="replicate"),
                                        _lrelu(0.2))
        self.encoder1 = nn.Sequential(_P3DBlock(half, half, 1), _lrelu(0.2), _P3DBlock(half, channels, 2),
                                      _lrelu(0.2))
        self.mid_dilation = nn.Sequential(*[m for d in (3, 2, 1) for m in (
            nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, d, d), dilation=(1, d, d)), _lrelu(0.2))])
        self.feat_prop_module = _FlowFeaturePropagation(channels, deformable_groups)
        self.decoder1 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), _lrelu(0.2),
                                      _UpConv(channels, half), _lrelu(0.2))
        self.upsample = nn.Sequential(nn.Conv2d(half, half, 3, padding=1), _lrelu(0.2), _UpConv(half, 2))
        nn.init.zeros_(self.upsample[-1].conv.weight)
        nn.init.zeros_(self.upsample[-1].conv.bias)

    def forward(self, blur: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
        x = self.downsample(rearrange(torch.cat((blur, flows), dim=2), "b n c h w -> b c n h w"))
        encoded = self.encoder1(x)
        mid = rearrange(self.mid_dilation(encoded), "b c n h w -> b n c h w")
        features = self.feat_prop_module(mid) + rearrange(encoded, "b c n h w -> b n c h w")
        correction = self.upsample(self.decoder1(features.flatten(0, 1)))
        return flows + correction.unflatten(0, flows.shape[:2])

    def refine_both(self, blur: torch.Tensor, flows_to_next: torch.Tensor,
                    flows_to_prev: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Both directions, as the official ``forward_bidirect_flow``: ``O[t->t+1]`` in time order,
        ``O[t+1->t]`` in reverse order. Each flow is paired with the blur map of the frame one step
        later in its processing order (``blur[t+1]`` for ``O[t->t+1]``, ``blur[t]`` for
        ``O[t+1->t]``): the pairing of ProPainter, kept because the released weights learned it."""
        to_next = self(blur[:, 1:], flows_to_next)
        to_prev = self(blur[:, :-1].flip(1), flows_to_prev.flip(1)).flip(1)
        return to_next, to_prev


# ------------------------------------------------------------------------------------------------
# BSSTNet
# ------------------------------------------------------------------------------------------------
def _consistency(flow: torch.Tensor, check: torch.Tensor) -> torch.Tensor:
    """Forward-backward check (UnFlow form): 1 where ``|f + warp(b, f)|² < 0.01(|f|² + |warp(b, f)|²) + 0.5``."""
    back = flow_warp(check, flow)
    error = (flow + back).square().sum(1, keepdim=True)
    bound = 0.01 * (flow.square().sum(1, keepdim=True) + back.square().sum(1, keepdim=True)) + 0.5
    return (error < bound).to(flow.dtype)


class BSSTNet(nn.Module):
    """BSSTNet: blur-aware bidirectional propagation and a blur-aware sparse transformer.

    Args:
        channels: shallow width (64). mid_channels: width at 1/4 resolution (192).
        token_dim: BSST token width (512). num_heads: BSST heads (4). hidden_dim: BSST FFN width
            (1000; a multiple of 25). rstb_heads: Swin-3D heads (6). refine_channels: flow refiner
            width (64). deformable_groups: of every DCN (16).
        theta: BSST window threshold (0.3). outside_tokens: ``"zeros"`` (official, as the weights
            were trained) or ``"masked"``: the sparse attention's key/value positions outside the
            image (see :class:`~deblurlayers.layers.SparseWindowAttention`).
        flow_estimator: the module that estimates flows when none are given, called as
            ``flow_estimator(image1, image2, iters=flow_iters)`` with images in [0, 1] and returning
            the flow from image 1 to image 2 at full resolution (default: a fresh :class:`RAFT`;
            ``None``: flows must be given). It is frozen, kept in eval mode and not part of the
            ``state_dict`` (the official code keeps RAFT outside the network); load
            ``raft-things.pth`` with ``load_official(model.flow_estimator, path)``.
        flow_iters: RAFT iterations (20, official).
        blur_eps: the blur map's epsilon (the official code has none: static clips give NaN).
        selection: the BSST layers' frame selection: ``"official"`` (default: the released code,
            whose later layers are blind to blur through an aliasing bug, and which the released
            weights were trained under) or ``"blur"`` (the paper's blur-aware selection in every
            layer); see :func:`~deblurlayers.layers.bsst.select_frames_official`.

    Shape:
        - frames: ``(B, T, 3, H, W)`` in [0, 1], ``T >= 2``; any ``H×W`` (padded by reflection to
          multiples of 16 and cropped back)
        - flows_to_next: ``(B, T-1, 2, h, w)``, ``[:, t] = O[t->t+1]`` (official
          ``flows_backward``); flows_to_prev: ``[:, t] = O[t+1->t]`` (``flows_forward``); both in
          pixels of the 1/4 grid ``(h, w) = BSSTNet.flow_size(H, W)``, or both None to estimate them
        - Output: ``(B, T, 3, H, W)``

    38,463,754 parameters without the flow estimator (the official ``net_g`` holds 46,734,797:
    8,271,043 more in modules its forward never calls).
    """

    def __init__(self, channels: int = 64, mid_channels: int = 192, token_dim: int = 512, num_heads: int = 4,
                 hidden_dim: int = 1000, rstb_heads: int = 6, refine_channels: int = 64,
                 deformable_groups: int = 16, theta: float = 0.3, outside_tokens: str = "zeros",
                 flow_estimator: Union[str, nn.Module, None] = "raft", flow_iters: int = 20,
                 blur_eps: float = 1e-6, selection: str = "official") -> None:
        super().__init__()
        if not isinstance(flow_iters, int) or flow_iters < 1:
            raise ValueError(f"flow_iters: expected an int >= 1, got {flow_iters!r}")
        if not (flow_estimator is None or flow_estimator == "raft" or isinstance(flow_estimator, nn.Module)):
            raise TypeError(f"flow_estimator: expected 'raft', an nn.Module or None, got {flow_estimator!r}")
        _check_widths(channels, mid_channels, rstb_heads, deformable_groups, refine_channels)
        c, m = channels, mid_channels
        self.channels, self.mid_channels, self.flow_iters = c, m, flow_iters
        # encoder
        self.concat = nn.Sequential(_conv(3, c, 3), _lrelu(), CAB(c))
        self.down01 = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1, bias=False), _lrelu())
        self.encoder_level1, self.encoder_level1_1 = CAB(c), CAB(c)
        self.down12 = nn.Sequential(nn.Conv2d(c, m, 3, 2, 1, bias=False), _lrelu())
        self.encoder_level2, self.encoder_level2_1 = CAB(m), CAB(m)
        # flows and blur maps
        self.blur_map = BlurMap(eps=blur_eps)
        self.blur_motion_refine = FlowRefiner(refine_channels, deformable_groups)
        # blur-aware bidirectional propagation
        self.deform_align, self.backbone = nn.ModuleDict(), nn.ModuleDict()
        for i, branch in enumerate(BRANCHES):
            self.deform_align[branch] = BlurAwareAlignment(m, deformable_groups=deformable_groups)
            self.backbone[branch] = nn.Sequential(nn.Conv2d((2 + i) * m, m, 3, padding=1), _lrelu(), GatedCAB(m, 3))
        self.reconstruction = SwinReconstruction(5 * m, m, num_heads=rstb_heads)
        # blur-aware sparse transformer
        self.softsplit = SoftSplit(m, token_dim)
        self.transsqattn = BlurAwareSparseTransformer(token_dim, depth=4, num_heads=num_heads, hidden_dim=hidden_dim,
                                                      theta=theta, outside_tokens=outside_tokens,
                                                      selection=selection)
        self.softcomp = SoftComp(m, token_dim)
        self.cabattn = nn.Sequential(GatedCAB(m, 5, extra_channels=m), GatedCAB(m, 5))
        # decoder
        self.skip_attn1 = CAB(c)
        self.up21 = SkipUpsample(m, c)
        self.decoder_level1, self.decoder_level1_1 = ShiftBlock(c), ShiftBlock(c)
        self.upsample0 = PixelShuffleUpsample(c, c)
        self.conv_hr0 = _conv(c, c, 3)
        self.skip_conv, self.out_conv = CAB(c), CAB(c)
        self.last_conv = _conv(c, 3, 3)
        self.flow_estimator = RAFT() if flow_estimator == "raft" else flow_estimator
        if self.flow_estimator is not None:
            self.flow_estimator.requires_grad_(False).eval()
        self.register_state_dict_post_hook(_without_flow_estimator)
        self.register_load_state_dict_post_hook(_ignore_missing_flow_estimator)

    def train(self, mode: bool = True) -> "BSSTNet":
        super().train(mode)
        if self.flow_estimator is not None:
            self.flow_estimator.eval()  # frozen: its batch norm keeps the running statistics
        return self

    @staticmethod
    def flow_size(height: int, width: int) -> Tuple[int, int]:
        """The 1/4 grid ``(h, w)`` the flows live on for ``H×W`` frames (padded to multiples of 16)."""
        return -(-height // SIZE_MULTIPLE) * SIZE_MULTIPLE // 4, -(-width // SIZE_MULTIPLE) * SIZE_MULTIPLE // 4

    # -- forward ----------------------------------------------------------------------------------
    @clip_forward(min_frames=2)
    def forward(self, frames: torch.Tensor, flows_to_next: Optional[torch.Tensor] = None,
                flows_to_prev: Optional[torch.Tensor] = None) -> torch.Tensor:
        dims = dict(zip("BTCHW", frames.shape))
        flows_to_next, flows_to_prev = self._check_flows(dims, flows_to_next, flows_to_prev, frames)
        padded, (height, width) = pad_to_multiple(frames, SIZE_MULTIPLE)
        if flows_to_next is None:
            flows_to_next, flows_to_prev = self.estimate_flows(padded)
        flows_to_next, flows_to_prev, blur, sharp = self.refine_flows(flows_to_next, flows_to_prev)
        shortcut, enc11, spatial = self.encode(padded)
        propagated = self.propagate(spatial, flows_to_next, flows_to_prev, sharp)
        features = self.reconstruction(propagated)
        fused = self.sparse_transform(features, blur)
        out = self.decode(fused, enc11, shortcut, dims["T"]) + padded
        return out[..., :height, :width]

    def _check_flows(self, dims, flows_to_next, flows_to_prev, frames):
        if (flows_to_next is None) != (flows_to_prev is None):
            raise ValueError("flows_to_next, flows_to_prev: expected both or neither, got one of them")
        if flows_to_next is None:
            if self.flow_estimator is None:
                raise ValueError("flows_to_next: required, got None (this model has no flow_estimator)")
            return None, None
        h, w = self.flow_size(dims["H"], dims["W"])
        sizes = {"B": dims["B"], "N": dims["T"] - 1, "H": h, "W": w}
        for name, flow in (("flows_to_next", flows_to_next), ("flows_to_prev", flows_to_prev)):
            check_shape(flow, "B N 2 H W", name=name, sizes=sizes)
            check_floating(flow, name=name)
            check_same_device(flow, frames, name=name, ref_name="frames")
        return flows_to_next, flows_to_prev

    @torch.no_grad()
    def estimate_flows(self, frames: torch.Tensor, pairs_per_call: Optional[int] = None
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The official wrapper's flows: the estimator on ×0.5 frames (fp32, outside autocast),
        then ×0.5 again and halved: ``(flows_to_next, flows_to_prev)`` on the 1/4 grid.

        ``pairs_per_call`` bounds how many frame pairs (each direction counts) go through the
        estimator at once (default: all).

        Shape: frames ``(B, T, 3, H, W)`` with ``H, W`` multiples of 4 -> ``(B, T-1, 2, H/4, W/4)`` each.
        """
        if self.flow_estimator is None:
            raise ValueError("flow_estimator: this model has none (built with flow_estimator=None)")
        b, t, _, h, w = frames.shape
        device = frames.device.type
        with torch.autocast(device, enabled=False) if autocast_enabled(device) else contextlib.nullcontext():
            half = F.interpolate(frames.flatten(0, 1).float(), size=(h // 2, w // 2), mode="bilinear",
                                 align_corners=False).unflatten(0, (b, t))
            earlier, later = half[:, :-1].flatten(0, 1), half[:, 1:].flatten(0, 1)
            # O[t->t+1] = flow(f_t, f_t+1) and O[t+1->t] = flow(f_t+1, f_t), in one batch
            first, second = torch.cat((earlier, later)), torch.cat((later, earlier))
            step = pairs_per_call or max(1, first.shape[0])
            flows = torch.cat([self.flow_estimator(a, b, iters=self.flow_iters)
                               for a, b in zip(first.split(step), second.split(step))])
            flows = F.interpolate(flows, size=(h // 4, w // 4), mode="bilinear", align_corners=False) / 2
        to_next, to_prev = flows.to(frames.dtype).unflatten(0, (2, b, t - 1)).unbind(0)
        return to_next, to_prev

    @torch.no_grad()
    def restore(self, frames: torch.Tensor, tile: int = 256, overlap: int = 64, frames_per_clip: Optional[int] = 48,
                frame_overlap: int = 4, blend: str = "crop", pairs_per_call: Optional[int] = 16) -> torch.Tensor:
        """The official test pipeline: flows of the whole frame (the clip padded to multiples of
        16), then :func:`~deblurlayers.models.tiled_inference` on ``tile``² tiles with ``overlap``
        pixels of overlap and chunks of ``frames_per_clip`` frames with ``frame_overlap`` frames of
        overlap, each tile getting its crop of the flows. Call under ``torch.autocast`` for the
        official AMP; the flow estimator runs in fp32.

        Differences from the official ``test_by_patch``: the official seams are hard crops then an
        average where both kept parts overlap; ``blend="crop"`` cuts each overlap once at its
        middle. Tiles and chunks shorter than the clip are handled (no fixed 256²).

        Shape: ``(B, T, 3, H, W)`` -> same.
        """
        check_clip(frames, self, min_frames=2)
        for name, value in (("tile", tile), ("overlap", overlap)):
            if not isinstance(value, int) or value % SIZE_MULTIPLE:
                raise ValueError(f"{name}: expected a multiple of {SIZE_MULTIPLE} (flows on the 1/4 grid, "
                                 f"frames padded to multiples of {SIZE_MULTIPLE}), got {value!r}")
        if frames_per_clip is not None and (not isinstance(frames_per_clip, int) or frames_per_clip < 2):
            raise ValueError(f"frames_per_clip: expected an int >= 2 or None, got {frames_per_clip!r}")
        padded, (height, width) = pad_to_multiple(frames, SIZE_MULTIPLE)
        to_next, to_prev = self.estimate_flows(padded, pairs_per_call)
        out = tiled_inference(self, padded, tile, overlap, frames_per_clip, frame_overlap, blend,
                              side_inputs={"flows_to_next": (to_next, 4), "flows_to_prev": (to_prev, 4)})
        return out[..., :height, :width]

    def refine_flows(self, flows_to_next: torch.Tensor, flows_to_prev: torch.Tensor):
        """The flow refiner, conditioned on the blur map of the given flows; returns the refined
        ``(flows_to_next, flows_to_prev)`` and the detached ``(blur, sharp)`` maps
        ``(B, T, 1, h, w)`` of the refined flows."""
        raw_blur, _ = self.blur_map(flows_to_next, flows_to_prev)
        to_next, to_prev = self.blur_motion_refine.refine_both(raw_blur, flows_to_next, flows_to_prev)
        blur, sharp = self.blur_map(to_next, to_prev)
        return to_next, to_prev, blur, sharp

    def encode(self, frames: torch.Tensor):
        """``(B, T, 3, H, W)`` -> full-resolution ``shortcut``, 1/2 ``enc11`` (frames flattened into
        the batch) and the 1/4 spatial features ``(B, T, C_mid, H/4, W/4)``."""
        shortcut = self.concat(frames.flatten(0, 1))
        enc11 = self.encoder_level1_1(self.encoder_level1(self.down01(shortcut)))
        spatial = self.encoder_level2_1(self.encoder_level2(self.down12(enc11)))
        return shortcut, enc11, spatial.unflatten(0, frames.shape[:2])

    def propagate(self, spatial: torch.Tensor, flows_to_next: torch.Tensor, flows_to_prev: torch.Tensor,
                  sharp: torch.Tensor) -> torch.Tensor:
        """BBFP: ``backward_1, forward_1, backward_2, forward_2``; returns ``cat(spatial, branches)``
        ``(B, T, 5·C_mid, h, w)``."""
        feats: Dict[str, List[torch.Tensor]] = {"spatial": list(spatial.unbind(1))}
        for branch in BRANCHES:
            backward = branch.startswith("backward")
            # backward branches walk t = T-1..0 along O[t->t+1], forward ones t = 0..T-1 along O[t->t-1]
            flows, checks = (flows_to_next, flows_to_prev) if backward else (flows_to_prev, flows_to_next)
            feats[branch] = self._propagate_branch(branch, feats, flows, checks, sharp, backward)
        return torch.stack([torch.cat([feats[k][t] for k in feats], dim=1) for t in range(spatial.shape[1])], dim=1)

    def _propagate_branch(self, branch, feats, flows, checks, sharp, backward):
        frames = len(feats["spatial"])
        previous_branch = list(feats)[-1]
        order = list(range(frames - 1, -1, -1)) if backward else list(range(frames))
        states: List[torch.Tensor] = []
        for i, t in enumerate(order):
            current = feats[previous_branch][t]
            state = torch.zeros_like(current)
            if i > 0:
                # flows[:, s] carries frame t to the frame visited before it, flows[:, s2] that one to the one before
                s = t if backward else t - 1
                s2 = s + 1 if backward else s - 1
                first = (states[-1], sharp[:, order[i - 1]], flows[:, s], checks[:, s])
                second = (states[-2], sharp[:, order[i - 2]], flows[:, s2], checks[:, s2]) if i > 1 else None
                state = self._align(branch, current, sharp[:, t], first, second)
            inputs = [feats[k][t] for k in feats] + [state]
            states.append(state + self.backbone[branch](torch.cat(inputs, dim=1)))
        return states[::-1] if backward else states

    def _align(self, branch, current, sharp_now, first, second):
        """BFA of the previous two states onto frame t (spec §4.3). ``first``/``second``: the
        state, sharp map, flow and check flow of the previous frame / of the one before it (each
        flow from its frame's predecessor in visiting order; ``second`` is None at the second step)."""
        prev, sharp_1, flow_1, check_1 = first
        warped_1, sharp_1 = flow_warp(prev, flow_1), flow_warp(sharp_1, flow_1)
        valid_1 = _consistency(flow_1, check_1)
        if second is None:
            prev_2, warped_2 = torch.zeros_like(prev), torch.zeros_like(prev)
            flow_2, sharp_2, valid_2 = torch.zeros_like(flow_1), torch.zeros_like(sharp_1), torch.zeros_like(valid_1)
        else:
            prev_2, sharp_2, flow_12, check_12 = second
            flow_2 = flow_1 + flow_warp(flow_12, flow_1)
            # The official check flow composes on the wrong grid (spec §4.3); kept for the weights.
            check_2 = check_1 + flow_warp(check_12, check_1)
            warped_2, sharp_2 = flow_warp(prev_2, flow_2), flow_warp(sharp_2, flow_2)
            valid_2 = _consistency(flow_2, check_2)
        cond = torch.cat((warped_1, current, warped_2, sharp_1, sharp_now, sharp_2, valid_1, valid_2), dim=1)
        return self.deform_align[branch](torch.cat((prev, prev_2), dim=1), cond, torch.stack((flow_1, flow_2), dim=1),
                                         torch.cat((sharp_1 * valid_1, sharp_2 * valid_2), dim=1))

    def sparse_transform(self, features: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
        """Soft split → BSST layers (steered by the token blur levels) → soft composition, fused with
        the input by the gated CABs: ``(B, T, C_mid, h, w)`` -> ``(B·T, C_mid, h, w)``."""
        size = features.shape[-2:]
        tokens = self.softsplit(features)
        tokens = self.transsqattn(tokens, self.softsplit.token_blur(blur), size)
        composed = self.softcomp(tokens, size)
        return self.cabattn(torch.cat((features, composed), dim=2).flatten(0, 1))

    def decode(self, fused: torch.Tensor, enc11: torch.Tensor, shortcut: torch.Tensor, frames: int) -> torch.Tensor:
        """Shift-Net decoder to full resolution: ``(B·T, C_mid, h, w)`` -> ``(B, T, 3, H, W)`` (before
        the global residual)."""
        x = self.up21(fused, self.skip_attn1(enc11)).unflatten(0, (-1, frames))
        x = self.decoder_level1_1(self.decoder_level1(x)).flatten(0, 1)
        x = self.conv_hr0(F.leaky_relu(self.upsample0(x), 0.1)) + self.skip_conv(shortcut)
        return self.last_conv(self.out_conv(x)).unflatten(0, (-1, frames))


def _check_widths(channels, mid_channels, rstb_heads, deformable_groups, refine_channels) -> None:
    for name, value in (("channels", channels), ("mid_channels", mid_channels), ("rstb_heads", rstb_heads),
                        ("deformable_groups", deformable_groups), ("refine_channels", refine_channels)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if mid_channels % 3 or mid_channels % rstb_heads:
        raise ValueError(f"mid_channels: expected a multiple of 3 (the reconstruction's grouped conv) and of "
                         f"rstb_heads={rstb_heads}, got {mid_channels}")
    if deformable_groups % 2 or (2 * mid_channels) % deformable_groups or (2 * refine_channels) % deformable_groups:
        raise ValueError(f"deformable_groups: expected an even divisor of 2·mid_channels={2 * mid_channels} and "
                         f"2·refine_channels={2 * refine_channels}, got {deformable_groups}")


def _without_flow_estimator(module, state_dict, prefix, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "flow_estimator.")]:
        del state_dict[key]


def _ignore_missing_flow_estimator(module, incompatible_keys):
    # The estimator is not part of the network's state (as RAFT is kept outside the official net_g).
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if ".flow_estimator." not in f".{k}"]


def bsstnet_loss(restored: torch.Tensor, sharp: torch.Tensor) -> torch.Tensor:
    """BSSTNet's training loss: the mean L1 distance over the whole clip, in fp32.

    Shapes: restored, sharp ``(B, T, 3, H, W)``.
    """
    check_shape(sharp, "B T C H W", name="sharp", sizes=dict(zip("BTCHW", restored.shape)))
    return F.l1_loss(restored.float(), sharp.float())


# ------------------------------------------------------------------------------ official weights

_UNCALLED = ("feat_extract.", "decoder_level1_2.", "decoder_level2.", "decoder_level2_1.", "decoder_level2_2.",
             "conv_before_upsampler.", "conv_before_input.", "upsampler.", "conv_last.")
_GEOMETRY = (".valid_ind_rolled", ".mask_padding", ".relative_position_index")
_RECONSTRUCTION = {"reconstruction.main.1.": "reconstruction.conv.", "reconstruction.main.3.": "reconstruction.norm_in.",
                   "reconstruction.main.5.": "reconstruction.blocks.", "reconstruction.main.7.": "reconstruction.norm_out."}


@register_converter(BSSTNet)
def convert_bsstnet(model: nn.Module, state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """Official ``BSST`` (``net_g``; ``{'params': ...}``) -> :class:`BSSTNet`.

    Discarded: the modules the official forward never calls (8,271,043 parameters:
    ``feat_extract``, ``decoder_level1_2``, ``decoder_level2{,_1,_2}``, ``conv_before_upsampler``,
    ``conv_before_input``, ``upsampler``, ``conv_last``), and the geometry buffers of a fixed
    256×256 tile (``valid_ind_rolled``, ``mask_padding``, ``relative_position_index``), which the
    library computes per input. Renamed: ``reconstruction.main.{1,3,5,7}`` (a Sequential with
    Rearranges in between) to ``reconstruction.{conv,norm_in,blocks,norm_out}``; the channel
    LayerNorms of the gated CABs ``….norm.{weight,bias}`` to ``….norm.body.*``.
    """
    kept, discarded = {}, {}
    for key, value in state.items():
        if key.startswith(_UNCALLED):
            discarded[key] = "a module the official forward never calls"
        elif key.endswith(_GEOMETRY):
            discarded[key] = "a geometry buffer of the official fixed 256x256 tile, computed per input here"
        else:
            # only the gated CABs have a plain `.norm.` (the Swin and BSST layers use norm1/norm2)
            kept[key.replace(".norm.", ".norm.body.") if key.endswith((".norm.weight", ".norm.bias")) else key] = value
    return rename_prefixes(kept, _RECONSTRUCTION), discarded


_BSST_WHERE = ("the repository's model_zoo/ (the test configs' path; the README says model_zoos/); "
               "see its README for the download link")

BSSTNET_CARD = ModelCard(
    name="bsstnet", paper="Blur-aware Spatio-temporal Sparse Transformer for Video Deblurring (Zhang, Xie, Yao; CVPR 2024)",
    code="https://github.com/huicongzhang/BSSTNet", frames_in=None, min_frames=2, output="clip",
    output_type="Tensor (B, T, 3, H, W)", size_multiple=SIZE_MULTIPLE, parameters=38_463_754,
    official_parameters=46_734_797, loss=bsstnet_loss,
    compute='133 "GFLOPs" (MACs) and 28 ms (A100) per 256x256 frame at T = 48, without RAFT (Table 3)',
    reported=(Reported("GoPro", 35.98, 0.9792, "Table 1"), Reported("DVD", 34.95, 0.9703, "Table 2")),
    checkpoints=(Checkpoint("BSST_gopro.pth", "GoPro", "params", _BSST_WHERE),
                 Checkpoint("BSST_dvd.pth", "DVD", "params", _BSST_WHERE),
                 Checkpoint("raft-things.pth", "flow estimator (load into model.flow_estimator)", None,
                            "RAFT's download_models.sh (princeton-vl/RAFT), models.zip")),
    manifest="BSST", flops_frames=48, takes_flows=True)


@register_model("bsstnet", card=BSSTNET_CARD)
def bsstnet(**kwargs) -> BSSTNet:
    """BSSTNet as released (38.46 M parameters, plus RAFT-large's 5.26 M as its flow estimator)."""
    return BSSTNet(**kwargs)
