"""WaveletFP: wavelet-based feature propagation (DSTNet, Pan et al., CVPR 2023, §3.3)."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..ops import haar_dwt2d, haar_idwt2d
from ..utils import check_input, empty_batch, pad_to_multiple
from .cwgdn import CWGDN
from .dtff import DTFF

__all__ = ["WaveletFP"]


class WaveletFP(nn.Module):
    """Wavelet-based feature propagation: propagate the Haar low band, refine the high bands.

    Official DSTNet form (``levels=2``, the default):

    1. Haar level 1 of every frame: ``LL1`` (H/2) and high bands ``HF1`` -> ``N_h1(HF1)``.
    2. Haar level 2 of ``LL1``: ``LL2`` (H/4) -> ``num_cwgdn`` :class:`CWGDN` blocks;
       ``HF2`` -> ``N_h2(HF2)``; inverse Haar gives ``LL1'``.
    3. Bidirectional :class:`DTFF` propagation over ``LL1'`` (at width P, through 1x1 ``up``/``down``
       convolutions when P != C): backward ``b_t = F_b(x_t, b_{t+1})``, then forward
       ``f_t = F_f(b_t, f_{t-1})``, both from a zero state.
    4. Inverse Haar of ``[f | N_h1(HF1)]``.

    ``N_h`` is two 1x1 convolutions with LeakyReLU, separate per band (``groups=3``); the Haar
    transform is DSTNet's (``norm="avg"``) through :func:`deblurlayers.ops.haar_dwt2d`.

    Paper vs official code (defaults follow the code, whose weights were released):

    - the paper uses one Haar level (``levels=1``) and no CWGDN inside WaveletFP (its CWGDN acts on
      the full-resolution features before it: ``num_cwgdn=0`` and a CWGDN in front);
    - the paper starts the backward pass from the last frame's own low band and the forward pass
      from the first backward output, running DTFF on the other frames only (eqs. 7-8,
      ``init="paper"``); the code runs DTFF on every frame from a zero state (``init="zeros"``).

    Parameter names follow the official ``Deblur`` (``x_wave_{1,2}_conv{1,2}``,
    ``transformer_scale4.{i}.0``, ``forward_propagation``, ``backward_propagation``, ``up``,
    ``down``); at C = P = 64, nb = 15 it holds 7,446,272 parameters, DSTNet's total minus its
    stem, head and frozen Haar filters.

    H and W that are not multiples of ``2**levels`` (or, with CWGDN blocks, smaller than
    ``4 * 2**levels``) are padded (reflect, bottom/right) and the output cropped back; D_p inside
    DTFF pads its own input to multiples of 8. The official code requires multiples of 16.

    Args:
        channels: C, the feature width (64).
        prop_channels: P, the propagation width (C; 96 for DSTNet-L).
        num_blocks: ResBlocks per DTFF (15; 30 for DSTNet-L).
        levels: Haar levels, 2 (code) or 1 (paper).
        num_cwgdn: CWGDN blocks on the deepest low band (5; 0 for none).
        init: ``"zeros"`` (code) or ``"paper"`` (eqs. 7-8).

    Shape:
        - Input: ``(B, T, C, H, W)``
        - Output: ``(B, T, C, H, W)``

    Example:
        >>> fp = WaveletFP(channels=16, num_blocks=1, num_cwgdn=1)
        >>> fp(torch.randn(1, 3, 16, 32, 32)).shape
        torch.Size([1, 3, 16, 32, 32])
    """

    def __init__(self, channels: int = 64, prop_channels: int = None, num_blocks: int = 15, levels: int = 2,
                 num_cwgdn: int = 5, init: str = "zeros") -> None:
        super().__init__()
        if levels not in (1, 2):
            raise ValueError(f"levels: expected 1 (paper) or 2 (official code), got {levels!r}")
        if init not in ("zeros", "paper"):
            raise ValueError(f"init: expected 'zeros' (official code) or 'paper', got {init!r}")
        prop_channels = prop_channels or channels
        self.channels, self.levels, self.init = channels, levels, init
        self.x_wave_1_conv1, self.x_wave_1_conv2 = self._high_band_net(channels)
        if levels == 2:
            self.x_wave_2_conv1, self.x_wave_2_conv2 = self._high_band_net(channels)
        self.transformer_scale4 = nn.Sequential(*[nn.Sequential(CWGDN(channels)) for _ in range(num_cwgdn)])
        if prop_channels != channels:
            self.up = nn.Conv2d(channels, prop_channels, 1)
            self.down = nn.Conv2d(prop_channels, channels, 1)
        self.forward_propagation = DTFF(prop_channels, num_blocks)
        self.backward_propagation = DTFF(prop_channels, num_blocks)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    @staticmethod
    def _high_band_net(channels: int):
        """N_h's two 1x1 convolutions (separate per band: groups=3 over band-major highs)."""
        return (nn.Conv2d(3 * channels, 3 * channels, 1, groups=3), nn.Conv2d(3 * channels, 3 * channels, 1, groups=3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "B T C H W", name="x", like=self, sizes={"C": self.channels}, minimum={"T": 1, "H": 1, "W": 1})
        b, t = x.shape[:2]
        if b == 0:
            return empty_batch(self, x)
        # CWGDN needs its (deepest) low band to be at least 4 x 4
        min_size = 4 * 2 ** self.levels if len(self.transformer_scale4) else 0
        padded, (h, w) = pad_to_multiple(x, 2 ** self.levels, min_size=min_size)
        frames = rearrange(padded, "b t c h w -> (b t) c h w")

        ll1, highs1 = haar_dwt2d(frames)
        highs1 = self.x_wave_1_conv2(self.act(self.x_wave_1_conv1(highs1)))
        if self.levels == 2:
            ll2, highs2 = haar_dwt2d(ll1)
            ll2 = self._spatial(ll2, b)
            highs2 = self.x_wave_2_conv2(self.act(self.x_wave_2_conv1(highs2)))
            ll1 = haar_idwt2d(ll2, highs2)
        else:
            ll1 = self._spatial(ll1, b)

        low = self._propagate(rearrange(ll1, "(b t) c h w -> b t c h w", b=b))
        out = haar_idwt2d(rearrange(low, "b t c h w -> (b t) c h w"), highs1)
        return rearrange(out, "(b t) c h w -> b t c h w", b=b)[..., :h, :w]

    def _spatial(self, low: torch.Tensor, batch: int) -> torch.Tensor:
        if len(self.transformer_scale4) == 0:
            return low
        clip = rearrange(low, "(b t) c h w -> b t c h w", b=batch)
        return rearrange(self.transformer_scale4(clip), "b t c h w -> (b t) c h w")

    def _propagate(self, clip: torch.Tensor) -> torch.Tensor:
        """Bidirectional DTFF over ``(B, T, C, h, w)``: backward pass, then forward over its outputs."""
        if hasattr(self, "up"):
            clip = self._per_frame(self.up, clip)
        start = "input" if self.init == "paper" else "zeros"
        states = self.backward_propagation.propagate(clip, reverse=True, start=start)
        out = self.forward_propagation.propagate(states, start=start)
        return self._per_frame(self.down, out) if hasattr(self, "down") else out

    @staticmethod
    def _per_frame(conv: nn.Module, clip: torch.Tensor) -> torch.Tensor:
        b = clip.shape[0]
        return rearrange(conv(rearrange(clip, "b t c h w -> (b t) c h w")), "(b t) c h w -> b t c h w", b=b)
