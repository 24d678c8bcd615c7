"""Dilated spatial pyramid block and pyramid deformable alignment (ERDN, Jiang et al., ECCV 2022, §3.2).

ERDN replaces the offset convolutions of EDVR's PCD alignment by a block of parallel branches with
growing receptive fields (DB, official name ``RFBlock``), so that each pyramid level sees twice the
motion of the next coarser one plus 3 pixels. Differences between the paper and the official code,
which we follow (its checkpoint loads), are listed in ``docs/layers/pyramid_align.md``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import cat_channels, check_input, check_shape, empty_batch
from .deform_conv import ModulatedDeformConv2d

__all__ = ["DilatedPyramidBlock", "PyramidDeformableAlign"]


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


def _branch(in_channels: int, channels: int, index: int) -> nn.Sequential:
    """Branch ``index`` (1-based) of the block: a ``k×k`` receptive field, then a ``3×3`` conv with dilation k."""
    if index == 1:  # k = d = 1: a 1x1 conv, then a plain 3x3 conv
        return nn.Sequential(nn.Conv2d(in_channels, channels, 1), _lrelu(),
                             nn.Conv2d(channels, channels, 3, padding=1), _lrelu())
    k = 2 ** index - 1
    # k x k built from a 3x3 conv and (k - 3) / 4 5x5 convs.
    layers = [nn.Conv2d(in_channels, channels, 3, padding=1), _lrelu()]
    for _ in range((k - 3) // 4):
        layers += [nn.Conv2d(channels, channels, 5, padding=2), _lrelu()]
    layers += [nn.Conv2d(channels, channels, 3, padding=k, dilation=k), _lrelu()]
    return nn.Sequential(*layers)


class DilatedPyramidBlock(nn.Module):
    """ERDN's dilated spatial pyramid block DB (official ``RFBlock``): offset features from a neighbour/reference pair.

    Branch ``i = 1..n`` has an effective receptive field of ``3·(2^i - 1)`` pixels (3, 9, 21, 45):

    - ``i = 1``: ``conv1×1 -> LReLU -> conv3×3 -> LReLU``;
    - ``i >= 2`` with ``k = 2^i - 1``: ``conv3×3``, ``(k-3)/4`` ``conv5×5`` (together ``k×k``), then a
      ``3×3`` conv with dilation ``k``, each followed by ``LeakyReLU(0.1)``.

    With ``n > 1`` branches their concatenation is fused by ``last_layer`` (``conv1×1``, no
    activation; the pyramid alignment applies one). In ERDN's 4-level pyramid level ``l`` (1 =
    full resolution) uses ``n = 5 - l`` branches.

    Parameter names are the official ones (``rfblock.{branch}.{layer}``, ``last_layer``).

    Args:
        channels: C, the output (offset feature) channels (64 in ERDN).
        num_branches: n >= 1.
        in_channels: channels of the input (default ``2·C``: neighbour and reference features).

    Shape:
        - Input: ``(B, in_channels, H, W)``
        - Output: ``(B, C, H, W)``

    Example:
        >>> DilatedPyramidBlock(8, num_branches=3)(torch.randn(1, 16, 20, 20)).shape
        torch.Size([1, 8, 20, 20])
    """

    def __init__(self, channels: int = 64, num_branches: int = 1, in_channels: int = None) -> None:
        super().__init__()
        if not isinstance(num_branches, int) or num_branches < 1:
            raise ValueError(f"num_branches: expected an int >= 1, got {num_branches!r}")
        self.in_channels = in_channels or 2 * channels
        self.num_branches = num_branches
        self.rfblock = nn.ModuleList(_branch(self.in_channels, channels, i + 1) for i in range(num_branches))
        if num_branches > 1:
            self.last_layer = nn.Conv2d(num_branches * channels, channels, 1)

    @property
    def receptive_field(self) -> int:
        """The largest branch's effective receptive field, ``3·(2^n - 1)``."""
        return 3 * (2 ** self.num_branches - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, "B C H W", name="x", like=self, sizes={"C": self.in_channels}, minimum={"H": 1, "W": 1})
        if x.shape[0] == 0:
            return empty_batch(self, x)
        if self.num_branches == 1:
            return self.rfblock[0](x)
        return self.last_layer(cat_channels([branch(x) for branch in self.rfblock], dim=1))


class PyramidDeformableAlign(nn.Module):
    """ERDN's pyramid deformable alignment: EDVR's PCD with a :class:`DilatedPyramidBlock` at every level.

    From the coarsest level ``L`` to the finest (1), with LReLU = ``LeakyReLU(0.1)``:

    - ``o = LReLU(offset_conv1.l(cat[nbr, ref]))`` (the DB of level l, ``L + 1 - l`` branches);
      below the coarsest level ``o = LReLU(offset_conv2.l(cat[o, o_up]))``;
    - ``f = dcn_pack.l(nbr, o)`` (:class:`ModulatedDeformConv2d`, zero-initialised offsets);
      below the coarsest level ``f = feat_conv.l(cat[f, f_up])``; ``LReLU`` except at level 1;
    - ``o_up = 2·up2(o)``, ``f_up = up2(f)`` (bilinear, ``align_corners=False``). As in the official
      code the 64-channel offset *feature* is upsampled, not the DCN offsets (the paper's eq. 5 says
      the latter).
    - Cascade (EDVR; not in the ERDN paper): ``o = LReLU(cas_offset_conv2(LReLU(cas_offset_conv1(
      cat[f, ref_1]))))``, ``f = LReLU(cas_dcnpack(f, o))``.

    Parameter names are the official ``PCDAlignment``'s; with the defaults (64 channels, 8
    deformable groups, 4 levels) the module has 2,755,704 parameters.

    Args:
        channels: C.
        deformable_groups: of every DCN.
        levels: pyramid levels L >= 1.
        cascade: add the cascading DCN (official: True).

    Shape:
        - nbr, ref: sequences of L tensors ``(B, C, H / 2^i, W / 2^i)``, ``i = 0..L-1``, finest first
          (each level exactly half the previous: frame sizes must be multiples of ``2^(L-1)``)
        - Output: ``(B, C, H, W)``, the neighbour's features aligned to the reference

    Example:
        >>> align = PyramidDeformableAlign(channels=8, deformable_groups=2, levels=3)
        >>> pyramid = [torch.randn(1, 8, 16 >> i, 16 >> i) for i in range(3)]
        >>> align(pyramid, pyramid).shape
        torch.Size([1, 8, 16, 16])
    """

    def __init__(self, channels: int = 64, deformable_groups: int = 8, levels: int = 4,
                 cascade: bool = True) -> None:
        super().__init__()
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels: expected an int >= 1, got {levels!r}")
        self.channels, self.levels, self.cascade = channels, levels, cascade
        self.offset_conv1, self.offset_conv2 = nn.ModuleDict(), nn.ModuleDict()
        self.dcn_pack, self.feat_conv = nn.ModuleDict(), nn.ModuleDict()
        for level in range(levels, 0, -1):
            key = f"l{level}"
            self.offset_conv1[key] = DilatedPyramidBlock(channels, num_branches=levels + 1 - level)
            if level < levels:
                self.offset_conv2[key] = nn.Conv2d(2 * channels, channels, 3, padding=1)
                self.feat_conv[key] = nn.Conv2d(2 * channels, channels, 3, padding=1)
            self.dcn_pack[key] = ModulatedDeformConv2d(channels, channels, 3, padding=1,
                                                       deformable_groups=deformable_groups)
        if cascade:
            self.cas_offset_conv1 = nn.Conv2d(2 * channels, channels, 3, padding=1)
            self.cas_offset_conv2 = nn.Conv2d(channels, channels, 3, padding=1)
            self.cas_dcnpack = ModulatedDeformConv2d(channels, channels, 3, padding=1,
                                                     deformable_groups=deformable_groups)

    def forward(self, nbr: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> torch.Tensor:
        self._check_pyramids(nbr, ref)
        lrelu = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731 (not in place: offset_conv1 ends in one already)
        offset_up = feat_up = None
        for level in range(self.levels, 0, -1):
            key, n, r = f"l{level}", nbr[level - 1], ref[level - 1]
            offset = lrelu(self.offset_conv1[key](cat_channels((n, r), dim=1)))
            if level < self.levels:
                offset = lrelu(self.offset_conv2[key](cat_channels((offset, offset_up), dim=1)))
            feat = self.dcn_pack[key](n, offset)
            if level < self.levels:
                feat = self.feat_conv[key](cat_channels((feat, feat_up), dim=1))
            if level > 1:
                feat = lrelu(feat)
                # The offset feature is in pixels of this level: twice as many on the finer one.
                offset_up = 2 * _upsample2(offset)
                feat_up = _upsample2(feat)
        if self.cascade:
            offset = lrelu(self.cas_offset_conv2(lrelu(self.cas_offset_conv1(cat_channels((feat, ref[0]), dim=1)))))
            feat = lrelu(self.cas_dcnpack(feat, offset))
        return feat

    def _check_pyramids(self, nbr: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> None:
        for name, pyramid in (("nbr", nbr), ("ref", ref)):
            if not isinstance(pyramid, (list, tuple)) or len(pyramid) != self.levels:
                got = f"{type(pyramid).__name__} of length {len(pyramid)}" if isinstance(pyramid, (list, tuple)) \
                    else type(pyramid).__name__
                raise ValueError(f"{name}: expected a list of {self.levels} feature maps (finest first), got {got}")
        dims = check_shape(nbr[0], "B C H W", name="nbr[0]", sizes={"C": self.channels})
        for i in range(self.levels):
            if i and (dims["H"] % (1 << i) or dims["W"] % (1 << i)):
                raise ValueError(f"nbr[0]: a {self.levels}-level pyramid needs H and W divisible by "
                                 f"{1 << (self.levels - 1)}, got {dims['H']}x{dims['W']} (pad the frames first)")
            want = {"B": dims["B"], "C": self.channels, "H": dims["H"] >> i, "W": dims["W"] >> i}
            check_shape(nbr[i], "B C H W", name=f"nbr[{i}]", sizes=want)
            check_shape(ref[i], "B C H W", name=f"ref[{i}]", sizes=want)


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
