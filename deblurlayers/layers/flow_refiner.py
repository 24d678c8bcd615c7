"""BSSTNet's flow refiner: ProPainter's recurrent flow completion network, conditioned on a blur map.

Flows are ``(B, N, 2, h, w)`` in pixels of their grid (``O[t->t+1]`` or ``O[t+1->t]``, conventions
§2); parameter names follow the official ``blur_motion_refine``.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..utils import cat_channels, check_input, check_shape, empty_batch
from .blocks import leaky_relu, same_conv
from .deform_conv import ModulatedDeformConv2d
from .propagation import second_order_propagation

__all__ = ["FlowRefiner"]


class _P3DBlock(nn.Module):
    """Pseudo-3D block: Conv3d ``(1, k, k)`` stride ``(1, s, s)`` + LReLU(0.2), then a temporal
    Conv3d ``(3, 1, 1)`` with dilation 2 (zero-padded in time)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv3d(in_channels, out_channels, (1, 3, 3), (1, stride, stride), (0, 1, 1)),
                                   leaky_relu(0.2))
        self.conv2 = nn.Sequential(nn.Conv3d(out_channels, out_channels, (3, 1, 1), padding=(2, 0, 0),
                                             dilation=(2, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class _UpConv(nn.Module):
    """Bilinear ×2 (``align_corners=True``) then a 3×3 conv (ProPainter's ``deconv``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = same_conv(in_channels, out_channels, 3, bias=True)

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
            self.backbone[branch] = nn.Sequential(nn.Conv2d((2 + i) * channels, channels, 3, padding=1), leaky_relu(),
                                                  nn.Conv2d(channels, channels, 3, padding=1))
        self.fusion = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = list(x.unbind(1))
        feats: Dict[str, List[torch.Tensor]] = {"input": frames}
        for branch in ("backward_", "forward_"):
            def align(t: int, states: List[torch.Tensor], branch: str = branch) -> torch.Tensor:
                second = states[-2] if len(states) > 1 else torch.zeros_like(states[-1])
                cond = cat_channels((states[-1], frames[t], second), dim=1)
                return self.deform_align[branch](cat_channels((states[-1], second), dim=1), cond)

            feats[branch] = second_order_propagation(feats, branch == "backward_", align, self.backbone[branch])
        fused = [self.fusion(cat_channels((feats["backward_"][t], feats["forward_"][t]), dim=1)) for t in range(len(frames))]
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
                                        leaky_relu(0.2))
        self.encoder1 = nn.Sequential(_P3DBlock(half, half, 1), leaky_relu(0.2), _P3DBlock(half, channels, 2),
                                      leaky_relu(0.2))
        self.mid_dilation = nn.Sequential(*[m for d in (3, 2, 1) for m in (
            nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, d, d), dilation=(1, d, d)), leaky_relu(0.2))])
        self.feat_prop_module = _FlowFeaturePropagation(channels, deformable_groups)
        self.decoder1 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), leaky_relu(0.2),
                                      _UpConv(channels, half), leaky_relu(0.2))
        self.upsample = nn.Sequential(nn.Conv2d(half, half, 3, padding=1), leaky_relu(0.2), _UpConv(half, 2))
        nn.init.zeros_(self.upsample[-1].conv.weight)
        nn.init.zeros_(self.upsample[-1].conv.bias)

    def forward(self, blur: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
        dims = check_input(flows, "B T 2 h w", name="flows", like=self, minimum={"T": 1, "h": 4, "w": 4})
        check_shape(blur, "B T 1 h w", name="blur", sizes=dims)
        if dims["h"] % 4 or dims["w"] % 4:
            raise ValueError(f"flows: expected h and w multiples of 4 (two stride-2 stages), got "
                             f"{dims['h']}x{dims['w']}")
        if dims["B"] == 0:
            return empty_batch(self, blur, flows)
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
