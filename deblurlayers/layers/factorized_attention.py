"""Factorized spatio-temporal attention (Suin & Rajagopalan, "Gated spatio-temporal attention-guided
video deblurring", arXiv / CVPR 2021, §3, eqs. 1-6)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from einops import rearrange
from torch import nn

from ..utils import check_input, empty_batch

__all__ = ["FactorizedSTAttention"]


class FactorizedSTAttention(nn.Module):
    """Fuse a clip into its reference frame through ``M·N`` global spatio-temporal descriptors.

    Instead of letting every position attend to every other (a non-local block, memory quadratic
    in ``T·H·W``), the clip is squeezed twice and redistributed (eqs. 1-6):

    1. ``A_s = softmax_HW(f_s(x_t))``: ``M`` spatial attention maps per frame (``f_s`` a conv
       shared by the frames);
    2. ``G_s[t, m] = sum_p A_s[t, m, p] · x_t[p]``: ``M`` descriptors per frame;
    3. ``A_t = softmax_T(f_t(x0))``: ``N`` temporal maps from the spatially averaged clip ``x0``
       (``f_t`` a 1-D conv along T);
    4. ``G_st = G_s · A_tᵀ``: ``M·N`` spatio-temporal descriptors;
    5. ``A_p = softmax_MN(f_p(x_r))``: for every pixel of the reference frame r, a distribution over
       the ``M·N`` descriptors (``f_p`` a conv);
    6. ``y_r[p] = sum_j G_st[j] · A_p[j, p]``.

    Memory and time are linear in ``T·H·W``: the largest activations are ``A_s``
    (``T·M·H·W`` per group) and ``A_p`` (``M·N·H·W`` per group).

    There is no official code; where the paper is silent this layer's choices are documented (the
    paper writes the maths for one channel). The maps are shared by all channels of a group
    (``groups=1``: by all C channels, the gather-distribute reading of the paper;
    ``groups=C``: per-channel maps, the paper's single-channel case applied depthwise). The
    softmaxes are computed in fp32. Defaults (ours): ``M = 8``, ``N = 4``, kernel sizes 1 (f_s),
    3 (f_t), 3 (f_p).

    Args:
        channels: C.
        spatial_maps: M, attention maps per frame.
        temporal_maps: N, temporal attention maps.
        groups: g, channel groups with their own maps (divides C).
        spatial_kernel, temporal_kernel, distribution_kernel: odd kernel sizes of f_s, f_t, f_p.

    Shape:
        - x: ``(B, T, C, H, W)``; ``reference``: the frame index r (default ``T // 2``)
        - Output: ``(B, C, H, W)``, the fused features of frame r

    Example:
        >>> fsta = FactorizedSTAttention(channels=16)
        >>> fsta(torch.randn(2, 5, 16, 32, 32)).shape
        torch.Size([2, 16, 32, 32])
    """

    def __init__(self, channels: int = 64, spatial_maps: int = 8, temporal_maps: int = 4, groups: int = 1,
                 spatial_kernel: int = 1, temporal_kernel: int = 3, distribution_kernel: int = 3) -> None:
        super().__init__()
        if groups < 1 or channels % groups:
            raise ValueError(f"groups: expected a positive divisor of channels={channels}, got {groups}")
        if spatial_maps < 1 or temporal_maps < 1:
            raise ValueError(f"spatial_maps, temporal_maps: expected positive ints, got {spatial_maps}, {temporal_maps}")
        for name, k in (("spatial_kernel", spatial_kernel), ("temporal_kernel", temporal_kernel),
                        ("distribution_kernel", distribution_kernel)):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"{name}: expected a positive odd int, got {k}")
        self.channels, self.groups = channels, groups
        self.spatial_maps, self.temporal_maps = spatial_maps, temporal_maps
        self.f_s = nn.Conv2d(channels, groups * spatial_maps, spatial_kernel, padding=spatial_kernel // 2)
        self.f_t = nn.Conv1d(channels, groups * temporal_maps, temporal_kernel, padding=temporal_kernel // 2)
        self.f_p = nn.Conv2d(channels, groups * spatial_maps * temporal_maps, distribution_kernel,
                             padding=distribution_kernel // 2)

    def forward(self, x: torch.Tensor, reference: Optional[int] = None) -> torch.Tensor:
        r = self._check(x, reference)
        if x.shape[0] == 0:
            return empty_batch(self, x, reference)
        h = x.shape[-2]
        a_s, a_t, a_p = self._maps(x, r)
        values = rearrange(x, "b t (g c) h w -> b t g c (h w)", g=self.groups).to(a_s.dtype)
        g_s = torch.matmul(values, a_s.transpose(-1, -2))                   # (B, T, g, C/g, M), eq. 2
        g_st = torch.einsum("btgcm,bgnt->bgcmn", g_s, a_t).flatten(-2)      # (B, g, C/g, M*N), eq. 4
        y = torch.matmul(g_st, a_p)                                         # (B, g, C/g, HW), eq. 6
        return rearrange(y, "b g c (h w) -> b (g c) h w", h=h).to(x.dtype)

    def attention_maps(self, x: torch.Tensor, reference: Optional[int] = None
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three softmax maps, in fp32 (fp64 for fp64 input):

        - ``A_s`` ``(B, T, g, M, H*W)``, sums to 1 over ``H*W`` (eq. 1);
        - ``A_t`` ``(B, g, N, T)``, sums to 1 over ``T`` (eq. 3);
        - ``A_p`` ``(B, g, M*N, H*W)``, sums to 1 over ``M*N`` (eq. 5).
        """
        return self._maps(x, self._check(x, reference))

    def _maps(self, x: torch.Tensor, r: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        compute = torch.promote_types(x.dtype, torch.float32)
        logits_s = rearrange(self.f_s(x.flatten(0, 1)), "(b t) (g m) h w -> b t g m (h w)", b=b, g=self.groups)
        pooled = rearrange(x.mean(dim=(-2, -1)), "b t c -> b c t")
        logits_t = rearrange(self.f_t(pooled), "b (g n) t -> b g n t", g=self.groups)
        logits_p = self.f_p(x.select(1, r)).flatten(-2).unflatten(1, (self.groups, -1))  # (B, g, MN, HW)
        return (logits_s.to(compute).softmax(-1), logits_t.to(compute).softmax(-1),
                logits_p.to(compute).softmax(-2))

    def _check(self, x: torch.Tensor, reference: Optional[int]) -> int:
        dims = check_input(x, "B T C H W", name="x", like=self, sizes={"C": self.channels},
                           minimum={"T": 1, "H": 1, "W": 1})
        frames = dims["T"]
        r = frames // 2 if reference is None else reference
        if not isinstance(r, int) or not 0 <= r < frames:
            raise ValueError(f"reference: expected a frame index in [0, T={frames}), got {reference!r}")
        return r

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, spatial_maps={self.spatial_maps}, "
                f"temporal_maps={self.temporal_maps}, groups={self.groups}")
