"""Modulated deformable convolution "pack" (DCNv2; EDVR / ERDN alignment, BSSTNet's flow-guided variant)."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from einops import repeat
from torch import nn

from ..ops import deform_conv2d
from ..utils import IntPair, cat_channels, check_input, check_shape, conv_output_size, empty_batch, to_pair

__all__ = ["ModulatedDeformConv2d", "BlurAwareAlignment"]


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 whose offsets and mask are predicted from a conditioning feature.

    ``conv_offset(cond)`` gives ``3·G·K`` channels (``G`` deformable groups, ``K = KH·KW`` taps),
    chunked into thirds ``o1, o2, m``:

    - offsets ``= cat(o1, o2)`` read in torchvision's layout (``(dy, dx)`` per group per tap) — the
      official EDVR/ERDN/BSSTNet convention, kept so that their checkpoints load;
    - mask ``= sigmoid(m + mask_bias)``.

    With ``max_residue_magnitude`` set (BSSTNet's flow-guided variant, BasicVSR++'s second-order
    alignment) the offsets become ``max_residue_magnitude·tanh(cat(o1, o2))`` plus the given
    optical flows: flow ``f`` of ``F`` flows steers the ``G/F`` consecutive deformable groups
    ``[f·G/F, (f+1)·G/F)``, at every tap. Without a flow the bounded residual is the offset
    (ProPainter's flow-completion propagation, which BSSTNet's flow refiner runs).

    The last layer of ``conv_offset`` is zero-initialised, so a fresh module samples the regular
    grid (plus the flow) with mask 0.5. ``weight`` follows ``ModulatedDeformConvPack``:
    uniform ``±1/sqrt(Cin·K)``, zero bias.

    Args:
        in_channels, out_channels: of the deformable convolution.
        kernel_size, stride, padding, dilation, groups: as ``nn.Conv2d``.
        deformable_groups: offset groups ``G``; must divide ``in_channels``.
        bias: learn a bias.
        cond_channels: channels of ``cond`` (default ``in_channels``).
        offset_channels: hidden widths of ``conv_offset``. ``()`` (default) is a single
            ``3×3`` conv ``cond_channels -> 3·G·K`` (EDVR/ERDN, keys ``conv_offset.{weight,bias}``);
            e.g. ``(C, C, C)`` gives BSSTNet's ``conv3×3 -> LReLU(0.1)`` stack (keys
            ``conv_offset.{0,2,4,6}``).
        max_residue_magnitude: ``None`` (ERDN) or the tanh bound of the offsets (BSSTNet passes
            5); ``flow`` is only accepted when it is set.

    Shape:
        - x: ``(B, Cin, H, W)``
        - cond: ``(B, cond_channels, Ho, Wo)`` (the output grid; ``Ho = H`` for stride 1 and
          "same" padding)
        - flow: ``(B, F, 2, Ho, Wo)`` or ``(B, 2, Ho, Wo)`` (``F = 1``), channel 0 = x, 1 = y, in
          pixels of ``x``, pointing from the output grid into ``x``; ``F`` divides ``G``
        - mask_bias: ``(B, F', Ho, Wo)``, added to the mask logits of the ``G/F'`` consecutive
          groups of each channel (BSSTNet adds ``0.1·(2·A - 1)`` from its sharp maps ``A``)
        - Output: ``(B, out_channels, Ho, Wo)``

    Example:
        >>> dcn = ModulatedDeformConv2d(16, 16, deformable_groups=4)
        >>> dcn(torch.randn(2, 16, 12, 12), torch.randn(2, 16, 12, 12)).shape
        torch.Size([2, 16, 12, 12])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair = 3, stride: IntPair = 1,
                 padding: IntPair = 1, dilation: IntPair = 1, groups: int = 1, deformable_groups: int = 1,
                 bias: bool = True, cond_channels: Optional[int] = None, offset_channels: Sequence[int] = (),
                 max_residue_magnitude: Optional[float] = None) -> None:
        super().__init__()
        self.kernel_size = to_pair(kernel_size, "kernel_size", minimum=1)
        self.stride = to_pair(stride, "stride", minimum=1)
        self.padding = to_pair(padding, "padding", minimum=0)
        self.dilation = to_pair(dilation, "dilation", minimum=1)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups),
                            ("deformable_groups", deformable_groups)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups: expected a divisor of in_channels={in_channels} and "
                             f"out_channels={out_channels}, got {groups}")
        if in_channels % deformable_groups:
            raise ValueError(f"deformable_groups: expected a divisor of in_channels={in_channels}, "
                             f"got {deformable_groups}")
        if max_residue_magnitude is not None and max_residue_magnitude <= 0:
            raise ValueError(f"max_residue_magnitude: expected > 0 or None, got {max_residue_magnitude}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.groups, self.deformable_groups = groups, deformable_groups
        self.max_residue_magnitude = max_residue_magnitude
        self.cond_channels = cond_channels or in_channels
        self.taps = self.kernel_size[0] * self.kernel_size[1]
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.conv_offset = _offset_net(self.cond_channels, tuple(offset_channels),
                                       3 * deformable_groups * self.taps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels * self.taps)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        last = self.conv_offset if isinstance(self.conv_offset, nn.Conv2d) else self.conv_offset[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def offsets_and_mask(self, cond: torch.Tensor, flow: Optional[torch.Tensor] = None,
                         mask_bias: Optional[torch.Tensor] = None):
        """``(offset (B, 2·G·K, Ho, Wo), mask (B, G·K, Ho, Wo))`` predicted from ``cond``."""
        o1, o2, logits = torch.chunk(self.conv_offset(cond), 3, dim=1)
        offset = cat_channels((o1, o2), dim=1)
        if self.max_residue_magnitude is not None:
            offset = self.max_residue_magnitude * torch.tanh(offset)
            if flow is not None:
                offset = offset + self._flow_offsets(flow, offset)
        if mask_bias is not None:
            logits = logits + self._expand_per_group(mask_bias, "mask_bias", logits)
        return offset, torch.sigmoid(logits)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, flow: Optional[torch.Tensor] = None,
                mask_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        dims = check_input(x, "B C H W", name="x", like=self, sizes={"C": self.in_channels}, minimum={"H": 1, "W": 1})
        if dims["B"] == 0:
            return empty_batch(self, x, cond, flow, mask_bias)
        ho, wo = conv_output_size((dims["H"], dims["W"]), self.kernel_size, self.stride, self.padding,
                                  self.dilation)
        check_shape(cond, "B C H W", name="cond",
                    sizes={"B": dims["B"], "C": self.cond_channels, "H": ho, "W": wo})
        if flow is not None and self.max_residue_magnitude is None:
            raise ValueError("flow: only used with max_residue_magnitude set (the flow-guided variant); got a flow")
        offset, mask = self.offsets_and_mask(cond, flow, mask_bias)
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)

    def _flow_offsets(self, flow: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        if flow.dim() == 4:
            flow = flow.unsqueeze(1)
        b, _, h, w = offset.shape
        dims = check_shape(flow, "B F 2 H W", name="flow", sizes={"B": b, "H": h, "W": w})
        self._check_divides(dims["F"], "flow")
        # Flows are (x, y); the offset layout wants (dy, dx) per group per tap.
        per_flow = self.deformable_groups // dims["F"] * self.taps
        return repeat(flow.flip(2), "b f two h w -> b (f r two) h w", r=per_flow)

    def _expand_per_group(self, t: torch.Tensor, name: str, logits: torch.Tensor) -> torch.Tensor:
        b, _, h, w = logits.shape
        dims = check_shape(t, "B F H W", name=name, sizes={"B": b, "H": h, "W": w})
        self._check_divides(dims["F"], name)
        return repeat(t, "b f h w -> b (f r) h w", r=self.deformable_groups // dims["F"] * self.taps)

    def _check_divides(self, count: int, name: str) -> None:
        if count == 0 or self.deformable_groups % count:
            raise ValueError(f"{name}: expected a number of maps dividing deformable_groups="
                             f"{self.deformable_groups} in dim 1, got {count}")

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"deformable_groups={self.deformable_groups}, max_residue_magnitude={self.max_residue_magnitude}")


def _offset_net(cond_channels: int, hidden: tuple, out_channels: int) -> nn.Module:
    if not hidden:
        return nn.Conv2d(cond_channels, out_channels, 3, padding=1)
    layers, width = [], cond_channels
    for h in hidden:
        layers += [nn.Conv2d(width, h, 3, padding=1), nn.LeakyReLU(0.1, inplace=True)]
        width = h
    return nn.Sequential(*layers, nn.Conv2d(width, out_channels, 3, padding=1))


class BlurAwareAlignment(ModulatedDeformConv2d):
    """Blur-aware feature alignment (BSSTNet's BFA, paper §3.2; official
    ``SecondOrderDeformableAlignmentWithBlurmapguide``): a flow-guided second-order DCN whose
    mask is steered by the sharp maps of the two previous frames.

    The features of the previous two frames ``cat(h[t'], h[t''])`` (``2C`` channels) are sampled by
    a DCNv2 with ``deformable_groups`` groups: the first half of the groups sees ``h[t']`` and
    follows ``flows[:, 0]``, the second half ``h[t'']`` and ``flows[:, 1]``, each plus a residual
    bounded by ``max_residue_magnitude·tanh``. The offset/mask head reads ``cond`` and both flows;
    the mask logits of each half get ``0.1·(2·A - 1)`` from its sharp map ``A`` in [0, 1] before
    the sigmoid (the paper adds the sharp map to the mask; the code adds this centred, scaled
    version). ``conv_offset`` is the official 4-conv stack with the last conv zero-initialised.

    Args:
        channels: ``C`` (192 in BSSTNet).
        cond_channels: channels of ``cond`` without the flows (BSSTNet: ``3C + 5``: two warped
            features, the current one, three sharp maps and two validity masks).
        deformable_groups: 16 (even: one half per previous frame).
        max_residue_magnitude: 5 (BSSTNet).

    Shape:
        - features: ``(B, 2C, H, W)``, ``cat(h[t'], h[t''])``
        - cond: ``(B, cond_channels, H, W)``
        - flows: ``(B, 2, 2, H, W)``, the flows from frame t to t' and t'' (``(x, y)``, pixels)
        - sharp: ``(B, 2, H, W)``, the sharp maps of t' and t'' warped onto t (zero where unknown)
        - Output: ``(B, C, H, W)``
    """

    def __init__(self, channels: int = 192, cond_channels: Optional[int] = None, deformable_groups: int = 16,
                 max_residue_magnitude: float = 5.0) -> None:
        if not isinstance(deformable_groups, int) or deformable_groups < 2 or deformable_groups % 2:
            raise ValueError(f"deformable_groups: expected an even int >= 2 (one half per previous frame), "
                             f"got {deformable_groups!r}")
        cond_channels = 3 * channels + 5 if cond_channels is None else cond_channels
        super().__init__(2 * channels, channels, 3, padding=1, deformable_groups=deformable_groups,
                         cond_channels=cond_channels + 4, offset_channels=(channels,) * 3,
                         max_residue_magnitude=max_residue_magnitude)
        self.guide_channels = cond_channels

    def forward(self, features: torch.Tensor, cond: torch.Tensor, flows: torch.Tensor,  # type: ignore[override]
                sharp: torch.Tensor) -> torch.Tensor:
        dims = check_input(features, "B C H W", name="features", like=self, sizes={"C": self.in_channels},
                           minimum={"H": 1, "W": 1})
        grid = {"B": dims["B"], "H": dims["H"], "W": dims["W"]}
        check_shape(cond, "B C H W", name="cond", sizes={**grid, "C": self.guide_channels})
        check_shape(flows, "B F 2 H W", name="flows", sizes={**grid, "F": 2})
        check_shape(sharp, "B F H W", name="sharp", sizes={**grid, "F": 2})
        guide = cat_channels((cond, flows.flatten(1, 2)), dim=1)
        return super().forward(features, guide, flows, 0.1 * (2 * sharp - 1))
