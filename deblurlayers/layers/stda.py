"""The STDA module of STDANet (Zhang et al., ECCV 2022, §3.2): the MMA and MSA layers.

Both follow the official code (``models/submodules.py``: ``DeformableAttnBlock`` and
``DeformableAttnBlock_FUSION``), whose parameter names they keep so the released STDANet weights
load; ``docs/layers/deformable_attention.md`` lists where the code differs from the paper.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops import all_pairs_flows, flow_warp
from ..utils import cat_channels, check_input, check_shape, empty_batch
from .deformable_attention import DeformableAttention

__all__ = ["MultiToMultiAttention", "MultiToSingleAttention", "STDA"]

FRAMES = 3  # STDANet's window; the layers index the centre and its two neighbours


def _check_clip(module: nn.Module, x: torch.Tensor, src: torch.Tensor, flows_to_next: torch.Tensor,
                flows_to_prev: torch.Tensor, channels: int) -> None:
    dims = check_input(x, "B T C h w", name="x", like=module, sizes={"T": FRAMES, "C": channels},
                       minimum={"h": 1, "w": 1})
    check_shape(src, "B T C h w", name="src", sizes=dims)
    grid = {k: dims[k] for k in ("B", "h", "w")}
    check_shape(flows_to_next, "B Tm1 2 h w", name="flows_to_next", sizes={**grid, "Tm1": FRAMES - 1})
    check_shape(flows_to_prev, "B Tm1 2 h w", name="flows_to_prev", sizes={**grid, "Tm1": FRAMES - 1})


class _STDALayer(nn.Module):
    """What MMA and MSA share: the query/value embeddings, the attention and the feed-forwards."""

    def __init__(self, channels: int, num_heads: int, num_points: int, query_flow_channels: int,
                 mode: str) -> None:
        super().__init__()
        self.channels = channels
        c3 = FRAMES * channels
        self.emb_qk = nn.Conv2d(c3 + query_flow_channels, c3, 3, padding=1)
        self.emb_v = nn.Conv2d(c3, c3, 3, padding=1)
        query_dim = channels if mode == "multi_to_multi" else c3
        self.defor_attn = DeformableAttention(channels, num_heads, FRAMES, num_points, query_dim, mode)
        self.feed_forward = nn.Conv2d(channels, channels, 3, padding=1)
        self.feedforward = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 3, padding=2, dilation=2),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.act = nn.LeakyReLU(0.1, inplace=True)

    @staticmethod
    def _aligned_to_centre(x: torch.Tensor, flows_to_next: torch.Tensor,
                           flows_to_prev: torch.Tensor) -> torch.Tensor:
        """``[warp(F0, O[1->0]), F1, warp(F2, O[1->2])]`` as ``(B, 3C, h, w)`` (border padding)."""
        return cat_channels((flow_warp(x[:, 0], flows_to_prev[:, 0], padding_mode="border"), x[:, 1],
                          flow_warp(x[:, 2], flows_to_next[:, 1], padding_mode="border")), dim=1)

    def _values(self, x: torch.Tensor) -> torch.Tensor:
        """``emb_v``: a 3x3 conv over the frame-concatenated features (it mixes the frames)."""
        return self.act(self.emb_v(x.flatten(1, 2))).view_as(x)

    def _feed_forward(self, attended: torch.Tensor, residual: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """``out = feed_forward(attended) + residual``, then ``out + FFN([out, src])``; ``(N, C, h, w)``."""
        out = self.feed_forward(attended) + residual
        return out + self.feedforward(cat_channels((out, src), dim=1))


class MultiToMultiAttention(_STDALayer):
    """MMA: each of the three frames gathers sharp pixels from all three (official ``DeformableAttnBlock``).

    1. ``q = LReLU(emb_qk([W0, F1, W2, O01, O12, O10, O21]))``: neighbours warped to the centre
       (border padding) and the four raw flows; split into one C-channel query per frame.
    2. ``v = LReLU(emb_v([F0, F1, F2]))``, split per frame.
    3. ``z_t = DeformableAttention(q_t, v)`` with base offsets ``O[t->l]`` for every (query frame t,
       frame l), the two-step ones composed with the masked warp (:func:`~deblurlayers.ops.all_pairs_flows`).
    4. ``out_t = feed_forward(z_t) + F_t``; ``out_t += FFN([out_t, src_t])`` (FFN: 3x3 dilation 2,
       LReLU, 3x3).

    Args:
        channels: C (128 in STDANet).
        num_heads: M (4).
        num_points: K per head and frame (12).
        masked_composition: compose the two-step flows with STDAN's masked warp (default, official)
            or the plain border-padded one.

    Shape:
        - x, src: ``(B, 3, C, h, w)`` (``src`` = the encoder features; STDANet passes x itself)
        - flows_to_next: ``(B, 2, 2, h, w)`` = ``[O[0->1], O[1->2]]`` (STDAN's ``flow_forward``)
        - flows_to_prev: ``(B, 2, 2, h, w)`` = ``[O[1->0], O[2->1]]`` (STDAN's ``flow_backward``)
        - Output: ``(B, 3, C, h, w)``

    Example:
        >>> mma = MultiToMultiAttention(channels=32, num_points=4)
        >>> x, flows = torch.randn(1, 3, 32, 16, 16), torch.zeros(1, 2, 2, 16, 16)
        >>> mma(x, x, flows, flows).shape
        torch.Size([1, 3, 32, 16, 16])
    """

    def __init__(self, channels: int = 128, num_heads: int = 4, num_points: int = 12,
                 masked_composition: bool = True) -> None:
        super().__init__(channels, num_heads, num_points, 4 * (FRAMES - 1), "multi_to_multi")
        self.masked_composition = masked_composition

    def forward(self, x: torch.Tensor, src: torch.Tensor, flows_to_next: torch.Tensor,
                flows_to_prev: torch.Tensor) -> torch.Tensor:
        _check_clip(self, x, src, flows_to_next, flows_to_prev, self.channels)
        if x.shape[0] == 0:
            return empty_batch(self, x, src, flows_to_next, flows_to_prev)
        query_in = cat_channels((self._aligned_to_centre(x, flows_to_next, flows_to_prev),
                              flows_to_next.flatten(1, 2), flows_to_prev.flatten(1, 2)), dim=1)
        queries = self.act(self.emb_qk(query_in)).view_as(x)
        flows = all_pairs_flows(flows_to_next, flows_to_prev, masked=self.masked_composition)
        attended = self.defor_attn(queries, self._values(x), flows)
        out = self._feed_forward(attended.flatten(0, 1), x.flatten(0, 1), src.flatten(0, 1))
        return out.view_as(x)


class MultiToSingleAttention(_STDALayer):
    """MSA: the centre frame gathers sharp pixels from all three (official ``DeformableAttnBlock_FUSION``).

    1. ``q = LReLU(emb_qk([W0, F1, W2, O12, O10]))``: one 3C-channel query map for the centre.
    2. ``v = LReLU(emb_v([F0, F1, F2]))``, split per frame.
    3. ``z = DeformableAttention(q, v)`` with base offsets ``O[1->0], 0, O[1->2]`` (the centre's
       flows to each frame; the paper's eq. 5 writes ``O[k->i]``, see the docs).
    4. ``out = feed_forward(z) + F1``; ``out += FFN([out, src1])``; ``out = LReLU(fusion(out))``
       (1x1 conv).

    Args:
        channels: C (128 in STDANet).
        num_heads: M (4).
        num_points: K per head and frame (12).

    Shape:
        - x: ``(B, 3, C, h, w)`` (the MMA output); src: ``(B, 3, C, h, w)`` (the encoder features)
        - flows_to_next, flows_to_prev: ``(B, 2, 2, h, w)`` as in :class:`MultiToMultiAttention`
        - Output: ``(B, C, h, w)``, the centre frame's fused features
    """

    def __init__(self, channels: int = 128, num_heads: int = 4, num_points: int = 12) -> None:
        super().__init__(channels, num_heads, num_points, 4, "multi_to_single")
        self.fusion = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.LeakyReLU(0.1, inplace=True))

    def forward(self, x: torch.Tensor, src: torch.Tensor, flows_to_next: torch.Tensor,
                flows_to_prev: torch.Tensor) -> torch.Tensor:
        _check_clip(self, x, src, flows_to_next, flows_to_prev, self.channels)
        if x.shape[0] == 0:
            return empty_batch(self, x, src, flows_to_next, flows_to_prev)
        centre_to_next, centre_to_prev = flows_to_next[:, 1], flows_to_prev[:, 0]  # O[1->2], O[1->0]
        query_in = cat_channels((self._aligned_to_centre(x, flows_to_next, flows_to_prev),
                              centre_to_next, centre_to_prev), dim=1)
        query = self.act(self.emb_qk(query_in))
        flows = torch.stack((centre_to_prev, torch.zeros_like(centre_to_prev), centre_to_next), dim=1)
        attended = self.defor_attn(query, self._values(x), flows)
        return self.fusion(self._feed_forward(attended, x[:, 1], src[:, 1]))


class STDA(nn.Module):
    """The spatio-temporal deformable attention module: MMA, then MSA (STDANet Fig. 2).

    ``STDA(F, flows) = MSA(MMA(F, F), F)``: the MMA layer refines all three frames from all three,
    the MSA layer fuses them into the centre frame. Children are named ``MMA`` and ``MSA`` as in
    the official ``STDAN`` model.

    Args:
        channels: C (128 in STDANet: 4 x 32 features at 1/4 resolution).
        num_heads: M (4).
        num_points: K (12).
        masked_composition: see :class:`MultiToMultiAttention`.

    Shape:
        - x: ``(B, 3, C, h, w)``
        - flows_to_next: ``(B, 2, 2, h, w)``, ``[:, t] = O[t->t+1]``
        - flows_to_prev: ``(B, 2, 2, h, w)``, ``[:, t] = O[t+1->t]``
        - Output: ``(B, C, h, w)``

    Example:
        >>> stda = STDA(channels=32, num_points=4)
        >>> x, flows = torch.randn(1, 3, 32, 16, 16), torch.zeros(1, 2, 2, 16, 16)
        >>> stda(x, flows, flows).shape
        torch.Size([1, 32, 16, 16])
    """

    def __init__(self, channels: int = 128, num_heads: int = 4, num_points: int = 12,
                 masked_composition: bool = True) -> None:
        super().__init__()
        self.MMA = MultiToMultiAttention(channels, num_heads, num_points, masked_composition)
        self.MSA = MultiToSingleAttention(channels, num_heads, num_points)

    def forward(self, x: torch.Tensor, flows_to_next: torch.Tensor, flows_to_prev: torch.Tensor) -> torch.Tensor:
        return self.MSA(self.MMA(x, x, flows_to_next, flows_to_prev), x, flows_to_next, flows_to_prev)
