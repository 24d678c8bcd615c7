"""Flow-guided spatio-temporal deformable attention (STDANet, Zhang et al., ECCV 2022, §3.2)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from einops import rearrange
from torch import nn

from ..ops import ms_deform_attn
from ..utils import check_input, check_shape, empty_batch

__all__ = ["DeformableAttention"]

MODES = ("multi_to_multi", "multi_to_single")


class DeformableAttention(nn.Module):
    """Every query attends to ``K`` points per head in each of ``T`` frames, around flow-given positions.

    For a query at pixel ``p`` of query frame ``t`` and head ``m`` (STDANet eqs. 2-3, 5):

    ``out(p) = W_o * sum_l sum_k A[m, l, k](p) * V_l[m](p + O[t->l](p) + dp[m, l, k](p))``

    with the offsets ``dp`` (pixels) and weights ``A`` predicted from the query features by 3x3
    convolutions, ``A`` a softmax over the ``T * K`` (frame, point) pairs of each head, the optical
    flows ``O[t->l]`` as base offsets, ``V_l`` the value projection (3x3 conv) of frame l sampled
    bilinearly with zero padding (:func:`deblurlayers.ops.ms_deform_attn`, one level per frame) and
    ``W_o`` a 3x3 output convolution. Initialisation is Deformable-DETR's: zero offset/weight
    weights, offset biases along head direction ``2 pi m / M`` with radii ``1..K`` px (so attention
    starts uniform over a star of points), Xavier-uniform projections.

    Two query layouts (the MMA and MSA layers of the paper):

    - ``"multi_to_multi"``: every frame queries every frame; ``Lq = T * h * w``.
    - ``"multi_to_single"``: one query map (the centre frame's) queries all frames; ``Lq = h * w``.

    Parameter names are the official ``MSDeformAttn`` / ``MSDeformAttn_Fusion`` ones
    (``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``), which STDANet
    trains with a 100x smaller learning rate for ``sampling_offsets``.

    Args:
        embed_dim: C, the value/output channels (128 in STDANet).
        num_heads: M; ``C / M`` channels per head (4).
        num_frames: T, the frames (levels) attended to (3).
        num_points: K, sampling points per head and frame (12).
        query_dim: channels of the query features (C for MMA, 3C for STDANet's MSA); default C.
        mode: ``"multi_to_multi"`` (default) or ``"multi_to_single"``.
        kernel_size: of the four convolutions (3 in STDANet; 1 gives Deformable-DETR's linears).

    Shape:
        - value: ``(B, T, C, h, w)``
        - multi_to_multi: query ``(B, T, Cq, h, w)``; flows ``(B, T, T, 2, h, w)`` with
          ``flows[:, t, l] = O[t->l]`` in pixels, x first (e.g. from
          :func:`deblurlayers.ops.all_pairs_flows`); output ``(B, T, C, h, w)``
        - multi_to_single: query ``(B, Cq, h, w)``; flows ``(B, T, 2, h, w)`` with
          ``flows[:, l] = O[c->l]`` from the query frame c; output ``(B, C, h, w)``
        - ``flows=None``: no base offsets (the paper's "no flow" ablation).

    Example:
        >>> attn = DeformableAttention(embed_dim=32, num_heads=4, num_frames=3, num_points=4)
        >>> x = torch.randn(2, 3, 32, 16, 16)
        >>> attn(x, x, torch.zeros(2, 3, 3, 2, 16, 16)).shape
        torch.Size([2, 3, 32, 16, 16])
    """

    def __init__(self, embed_dim: int = 128, num_heads: int = 4, num_frames: int = 3, num_points: int = 12,
                 query_dim: Optional[int] = None, mode: str = "multi_to_multi", kernel_size: int = 3) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"num_heads: expected a positive divisor of embed_dim={embed_dim}, got {num_heads}")
        if num_frames < 1 or num_points < 1:
            raise ValueError(f"num_frames, num_points: expected positive ints, got {num_frames}, {num_points}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected a positive odd int, got {kernel_size}")
        self.embed_dim, self.num_heads, self.num_frames, self.num_points = embed_dim, num_heads, num_frames, num_points
        self.query_dim = embed_dim if query_dim is None else query_dim
        self.mode = mode
        samples = num_heads * num_frames * num_points

        def conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2)

        self.sampling_offsets = conv(self.query_dim, samples * 2)
        self.attention_weights = conv(self.query_dim, samples)
        self.value_proj = conv(embed_dim, embed_dim)
        self.output_proj = conv(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR's initialisation (see the class docstring)."""
        m, l, k = self.num_heads, self.num_frames, self.num_points
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(m, dtype=torch.float32) * (2.0 * math.pi / m)
        directions = torch.stack((angles.cos(), angles.sin()), -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values  # on the unit square
        radii = torch.arange(1, k + 1, dtype=torch.float32).view(1, 1, k, 1)
        bias = directions.view(m, 1, 1, 2) * radii  # (M, 1, K, 2), broadcast over frames
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.expand(m, l, k, 2).flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: torch.Tensor, value: torch.Tensor, flows: Optional[torch.Tensor] = None) -> torch.Tensor:
        vdims = check_input(value, "B T C h w", name="value", like=self, sizes={"T": self.num_frames, "C": self.embed_dim},
                            minimum={"h": 1, "w": 1})
        b, t, c, h, w = value.shape
        if b == 0:  # the other arguments are checked by empty_batch's shape-only run
            return empty_batch(self, query, value, flows)
        grid = {k: vdims[k] for k in ("B", "h", "w")}
        if self.mode == "multi_to_multi":
            check_input(query, "B T Cq h w", name="query", like=self, sizes={**grid, "T": t, "Cq": self.query_dim})
            if flows is not None:
                check_shape(flows, "B Tq T 2 h w", name="flows", sizes={**grid, "Tq": t, "T": t})
            query_frames = t
        else:
            check_input(query, "B Cq h w", name="query", like=self, sizes={**grid, "Cq": self.query_dim})
            if flows is not None:
                check_shape(flows, "B T 2 h w", name="flows", sizes={**grid, "T": t})
                flows = flows.unsqueeze(1)
            query_frames = 1
        m, p = self.num_heads, self.num_points

        values = rearrange(self.value_proj(rearrange(value, "b t c h w -> (b t) c h w")),
                           "(b t) (m d) h w -> b (t h w) m d", b=b, m=m)
        queries = query.reshape(b * query_frames, self.query_dim, h, w)
        offsets = rearrange(self.sampling_offsets(queries), "(b f) (m l p xy) h w -> b (f h w) m l p xy",
                            b=b, m=m, l=t, xy=2)
        if flows is not None:
            offsets = offsets + rearrange(flows, "b f l xy h w -> b (f h w) 1 l 1 xy")
        logits = rearrange(self.attention_weights(queries), "(b f) (m lp) h w -> b (f h w) m lp", b=b, m=m)
        weights = rearrange(logits.softmax(-1), "b q m (l p) -> b q m l p", p=p)

        locations = self._pixel_centres(query_frames, h, w, offsets) + offsets / offsets.new_tensor([w, h])
        out = ms_deform_attn(values, [(h, w)] * t, None, locations.to(values.dtype), weights.to(values.dtype))
        out = self.output_proj(rearrange(out, "b (f h w) c -> (b f) c h w", f=query_frames, h=h))
        if self.mode == "multi_to_multi":
            return rearrange(out, "(b f) c h w -> b f c h w", b=b)
        return out

    @staticmethod
    def _pixel_centres(frames: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """``(1, frames*h*w, 1, 1, 1, 2)`` normalised ``((x + 0.5) / w, (y + 0.5) / h)``, frame-major."""
        ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h
        xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w
        centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(1, h * w, 1, 1, 1, 2)
        return centres.repeat(1, frames, 1, 1, 1, 1)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_frames={self.num_frames}, "
                f"num_points={self.num_points}, query_dim={self.query_dim}, mode={self.mode!r}")
