"""Video Swin (3-D shifted-window) attention blocks: RVRT's residual Swin-3D groups, as BSSTNet's
reconstruction uses them.

Tokens are channels-last ``(B, D, H, W, C)``; parameter names follow the official code
(``relative_position_bias_table``, ``qkv_self``, ``residual_group.blocks``, ``linear``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..utils import check_input, empty_batch

__all__ = ["WindowAttention3d", "SwinLayer3d", "SwinGroup3d", "SwinReconstruction"]


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
        self.qkv_self = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def relative_position_index(self, device: torch.device) -> torch.Tensor:
        """``(N, N)`` index into the bias table for the ``N`` tokens of a full window. Computed when
        needed rather than held as a buffer, so a model built on the meta device and moved with
        ``to_empty`` needs no re-initialisation (the official buffer is a fixed function of the window)."""
        wd, wh, ww = self.window_size
        coords = torch.stack(torch.meshgrid(*(torch.arange(n, device=device) for n in (wd, wh, ww)), indexing="ij"))
        rel = coords.flatten(1)[:, :, None] - coords.flatten(1)[:, None, :]
        rel = rel + torch.tensor([wd - 1, wh - 1, ww - 1], device=device)[:, None, None]
        return (rel[0] * (2 * wh - 1) + rel[1]) * (2 * ww - 1) + rel[2]

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        n = x.shape[-2]
        q, k, v = rearrange(self.qkv_self(x), "b w n (three m d) -> three b w m n d", three=3, m=self.num_heads)
        # Shrunk windows (inputs smaller than a window) read the top-left block of the full
        # window's index, as the official code does.
        index = self.relative_position_index(x.device)[:n, :n]
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
        check_input(x, "B T C H W", name="x", like=self, sizes={"C": self.conv.in_channels},
                    minimum={"T": 1, "H": 1, "W": 1})
        if x.shape[0] == 0:
            return empty_batch(self, x)
        x = rearrange(self.conv(rearrange(x, "b t c h w -> b c t h w")), "b c t h w -> b t h w c")
        x = self.norm_out(self.blocks(self.norm_in(x)))
        return rearrange(x, "b t h w c -> b t c h w")
