"""STDANet and STDANet-Stack (Zhang et al., "Spatio-Temporal Deformable Attention Network for Video
Deblurring", ECCV 2022), assembled from :class:`~deblurlayers.layers.STDA` and the CDVD-TSP stages.

The data flow, parameter names and counts follow the official ``models/model/STDAN.py`` and
``models/STDAN_Stack.py``; ``docs/models/stdanet.md`` lists where the code differs from the paper.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import STDA
from ..layers.blocks import decoder_stage, encoder_stage, output_stage
from ..ops import flow_warp
from ..utils import check_shape, clip_forward, pad_to_multiple
from ._checkpoint import StateDict, register_converter, rename_prefixes
from ._cards import Checkpoint, ModelCard, Reported
from ._registry import register_model

__all__ = ["STDANet", "STDANetStack", "STDANetOutput", "stdanet_loss", "stdanet_stack_loss", "stdanet_warp_loss"]

FRAMES = 3
STACK_FRAMES = 5
SIZE_MULTIPLE = 4  # the motion estimator and STDA run at 1/4 resolution


class STDANetOutput(NamedTuple):
    """What ``STDANet`` / ``STDANetStack`` return with ``return_details=True`` (their losses' input).

    Attributes:
        restored: ``(B, 3, H, W)``, the restored centre frame.
        flows_to_next, flows_to_prev: the estimated flows, ``O[k->k+1]`` / ``O[k+1->k]`` in pixels
            of the 1/4 grid: ``(B, 2, 2, h, w)`` (STDANet), ``(B, 4, 2, 2, h, w)`` (the stack: its
            three first-stage windows, then the second stage), ``(h, w) = ceil((H, W) / 4)``.
        stages: the stack's first-stage frames ``(R1, R2, R3)``, ``(B, 3, 3, H, W)``; ``None`` for
            STDANet.
    """

    restored: torch.Tensor
    flows_to_next: torch.Tensor
    flows_to_prev: torch.Tensor
    stages: Optional[torch.Tensor] = None


class STDANet(nn.Module):
    """STDANet: three blurry frames in, the restored centre frame out (official ``STDAN``).

    1. A per-frame encoder (CDVD-TSP's ``inBlock_t``, ``encoder_first``, ``encoder_second``; 3x3
       convs, LeakyReLU(0.1) heads, conv-ReLU-conv ResBlocks) gives ``C``/``2C``/``4C`` features at
       full, 1/2 and 1/4 resolution.
    2. The motion estimator (``motion_branch`` + zero-initialised ``motion_out``: dilated 3x3
       convs on ``[f_a, f_b]``) predicts the flows between neighbouring 1/4-resolution features:
       ``flows_to_next[:, k] = O[k->k+1]`` from ``(f_k, f_k+1)`` and ``flows_to_prev[:, k] =
       O[k+1->k]`` from ``(f_k+1, f_k)`` (STDAN's ``flow_forward`` / ``flow_backward``).
    3. :class:`~deblurlayers.layers.STDA` (MMA, then MSA) fuses the three frames into the centre.
    4. The decoder (5x5 ResBlocks, transposed convs) adds the centre frame's encoder features at
       1/2 and full resolution and outputs RGB. There is no global residual (official).

    Any ``H x W``: frames are padded (reflect, bottom/right) to multiples of 4, as the official code
    requires, and the output is cropped back. Inputs in [0, 1], as the official training data.
    13,837,029 parameters with the official names (``STDA`` is held as ``stda``; the converter maps
    the released ``MMA.``/``MSA.`` and ``Defattn1.``/``Defattn3.`` names).

    Args:
        channels: C, the full-resolution width (32; STDA runs at 4C = 128).
        num_heads: M of the deformable attention (4).
        num_points: K per head and frame (12).
        masked_composition: see :class:`~deblurlayers.layers.MultiToMultiAttention`.

    Shape:
        - frames: ``(B, 3, 3, H, W)``
        - Output: ``(B, 3, H, W)``; with ``return_details=True`` a :class:`STDANetOutput` that
          adds the flows, each ``(B, 2, 2, ceil(H/4), ceil(W/4))``, in pixels of that grid.

    Example:
        >>> model = STDANet(channels=8, num_points=2)
        >>> model(torch.rand(1, 3, 3, 30, 34)).shape
        torch.Size([1, 3, 30, 34])
    """

    def __init__(self, channels: int = 32, num_heads: int = 4, num_points: int = 12,
                 masked_composition: bool = True) -> None:
        super().__init__()
        c = channels
        self.inBlock_t = encoder_stage(3, c, kernel_size=3)
        self.encoder_first = encoder_stage(c, 2 * c, kernel_size=3, stride=2)
        self.encoder_second = encoder_stage(2 * c, 4 * c, kernel_size=3, stride=2)
        self.stda = STDA(4 * c, num_heads, num_points, masked_composition)
        self.decoder_second = decoder_stage(4 * c, 2 * c, kernel_size=5)
        self.decoder_first = decoder_stage(2 * c, c, kernel_size=5)
        self.outBlock = output_stage(c, 3, kernel_size=5)
        self.motion_branch = nn.Sequential(
            nn.Conv2d(8 * c, 48, 3, padding=8, dilation=8), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(48, 32, 3, padding=16, dilation=16), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(32, 16, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
        )
        self.motion_out = nn.Conv2d(16, 2, 3, padding=1)
        # zero flows at initialisation: STDA starts from unwarped neighbours (official)
        nn.init.zeros_(self.motion_out.weight)
        nn.init.zeros_(self.motion_out.bias)

    def estimate_flows(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(flows_to_next, flows_to_prev)``, each ``(B, T-1, 2, h, w)``, of ``(B, T, 4C, h, w)`` features."""
        b = features.shape[0]
        current = rearrange(features[:, :-1], "b t c h w -> (b t) c h w")
        following = rearrange(features[:, 1:], "b t c h w -> (b t) c h w")
        # both directions in one batch: the estimator is shared
        pairs = torch.cat((torch.cat((current, following), 1), torch.cat((following, current), 1)), 0)
        flows = self.motion_out(self.motion_branch(pairs))
        to_next, to_prev = rearrange(flows, "(d b t) two h w -> d b t two h w", d=2, b=b)
        return to_next, to_prev

    @clip_forward(num_frames=FRAMES)
    def forward(self, frames: torch.Tensor, return_details: bool = False) -> Union[torch.Tensor, STDANetOutput]:
        b = frames.shape[0]
        padded, (h, w) = pad_to_multiple(frames, SIZE_MULTIPLE)
        s0 = self.inBlock_t(rearrange(padded, "b t c h w -> (b t) c h w"))
        e1 = self.encoder_first(s0)
        e2 = rearrange(self.encoder_second(e1), "(b t) c h w -> b t c h w", b=b)
        flows_to_next, flows_to_prev = self.estimate_flows(e2)
        fused = self.stda(e2, flows_to_next, flows_to_prev)
        centre = FRAMES // 2
        d1 = self.decoder_first(self.decoder_second(fused) + _frame(e1, b, centre))
        out = self.outBlock(d1 + _frame(s0, b, centre))[..., :h, :w]
        return STDANetOutput(out, flows_to_next, flows_to_prev) if return_details else out


def _frame(flat: torch.Tensor, batch: int, index: int) -> torch.Tensor:
    """Frame ``index`` of ``(B*T, C, H, W)`` features."""
    return rearrange(flat, "(b t) c h w -> b t c h w", b=batch)[:, index]


class STDANetStack(nn.Module):
    """STDANet-Stack: five blurry frames in, the restored centre frame out (official ``STDAN_Stack``).

    One shared :class:`STDANet` (``recons_net``) restores frames 1, 2, 3 from the windows
    ``(B0, B1, B2)``, ``(B1, B2, B3)``, ``(B2, B3, B4)``, then frame 2 again from
    ``(R1, R2, R3)``. The three first-stage windows run as one batch (same result as three calls).
    13,837,029 parameters (keys ``recons_net.*``), as STDANet.

    Args:
        **kwargs: passed to :class:`STDANet`.

    Shape:
        - frames: ``(B, 5, 3, H, W)``
        - Output: ``(B, 3, H, W)``. With ``return_details=True`` a :class:`STDANetOutput` that adds
          the stages ``(B, 3, 3, H, W)`` = ``(R1, R2, R3)`` and the flows, each
          ``(B, 4, 2, 2, ceil(H/4), ceil(W/4))``: those of the three first-stage windows, then of the
          second stage.

    Example:
        >>> model = STDANetStack(channels=8, num_points=2)
        >>> details = model(torch.rand(1, 5, 3, 16, 16), return_details=True)
        >>> details.restored.shape, details.stages.shape
        (torch.Size([1, 3, 16, 16]), torch.Size([1, 3, 3, 16, 16]))
    """

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.recons_net = STDANet(**kwargs)

    @clip_forward(num_frames=STACK_FRAMES)
    def forward(self, frames: torch.Tensor, return_details: bool = False) -> Union[torch.Tensor, STDANetOutput]:
        windows = torch.cat([frames[:, i:i + FRAMES] for i in range(STACK_FRAMES - FRAMES + 1)], dim=0)
        first = self.recons_net(windows, return_details=True)
        stages = rearrange(first.restored, "(s b) c h w -> b s c h w", s=FRAMES)
        second = self.recons_net(stages, return_details=True)
        if not return_details:
            return second.restored
        to_next, to_prev = (torch.cat((rearrange(flows, "(s b) ... -> b s ...", s=FRAMES), last[:, None]), 1)
                            for flows, last in ((first.flows_to_next, second.flows_to_next),
                                                (first.flows_to_prev, second.flows_to_prev)))
        return STDANetOutput(second.restored, to_next, to_prev, stages)


# --------------------------------------------------------------------------------------- losses

def stdanet_warp_loss(sharp: torch.Tensor, flows_to_next: torch.Tensor, flows_to_prev: torch.Tensor) -> torch.Tensor:
    """STDANet's flow supervision: the sharp frames warped by the estimated flows (1/4 resolution).

    The sharp window is resized bilinearly (``align_corners=True``) to the flows' grid; each flow
    warps its target frame onto its source frame (border padding) and is scored by L1:
    ``|warp(S[k+1], O[k->k+1]) - S[k]|`` and ``|warp(S[k], O[k+1->k]) - S[k+1]|``, averaged over
    the ``2 (T-1)`` terms.

    Shape:
        - sharp: ``(B, T, 3, H, W)``; flows_to_next, flows_to_prev: ``(B, T-1, 2, h, w)``
    """
    b, t = sharp.shape[:2]
    size = flows_to_next.shape[-2:]
    small = rearrange(F.interpolate(sharp.flatten(0, 1), size=size, mode="bilinear", align_corners=True),
                      "(b t) c h w -> b t c h w", b=b)
    terms = []
    for k in range(t - 1):
        terms.append(F.l1_loss(flow_warp(small[:, k + 1], flows_to_next[:, k], padding_mode="border"), small[:, k]))
        terms.append(F.l1_loss(flow_warp(small[:, k], flows_to_prev[:, k], padding_mode="border"), small[:, k + 1]))
    return torch.stack(terms).mean()


def _check_output(output: STDANetOutput, stack: bool) -> None:
    if not isinstance(output, STDANetOutput) or (output.stages is None) == stack:
        model = "STDANetStack" if stack else "STDANet"
        raise TypeError(f"output: expected the STDANetOutput of {model}(frames, return_details=True), "
                        f"got {type(output).__name__}")


def stdanet_loss(output: STDANetOutput, sharp: torch.Tensor, warp_weight: float = 0.05) -> torch.Tensor:
    """STDANet's training loss (official ``core/train.py``): ``L1(out, S1) + 0.05 * warp loss``.

    The paper says MSE; the code uses L1.

    Args:
        output: ``model(blurry, return_details=True)``.
        sharp: the sharp window ``(B, 3, 3, H, W)`` (all three frames: the warp loss needs them).
    """
    _check_output(output, stack=False)
    b, _, h, w = output.restored.shape
    check_shape(sharp, "B T C H W", name="sharp", sizes={"B": b, "T": FRAMES, "C": 3, "H": h, "W": w})
    return (F.l1_loss(output.restored, sharp[:, FRAMES // 2])
            + warp_weight * stdanet_warp_loss(sharp, output.flows_to_next, output.flows_to_prev))


def stdanet_stack_loss(output: STDANetOutput, sharp: torch.Tensor, warp_weight: float = 0.05,
                       warp_pairing: str = "all") -> torch.Tensor:
    """STDANet-Stack's training loss: L1 of ``[R1, R2, R3, R]`` against ``[S1, S2, S3, S2]`` plus
    ``warp_weight`` times the warp loss of the four flow sets.

    The flow set of pass ``i`` belongs to the sharp window ``i`` (``S0..2``, ``S1..3``,
    ``S2..4``, and ``S1..3`` for the second stage). ``warp_pairing="all"`` (default, the official
    nested loop) scores every flow set against every window and averages the 16 terms;
    ``"own"`` scores each flow set against its own window only (the evident intent).

    Args:
        output: ``model(blurry, return_details=True)``.
        sharp: the sharp clip ``(B, 5, 3, H, W)``.
    """
    if warp_pairing not in ("all", "own"):
        raise ValueError(f"warp_pairing: expected 'all' (official) or 'own', got {warp_pairing!r}")
    _check_output(output, stack=True)
    b, _, h, w = output.restored.shape
    check_shape(sharp, "B T C H W", name="sharp", sizes={"B": b, "T": STACK_FRAMES, "C": 3, "H": h, "W": w})
    flows_to_next, flows_to_prev = output.flows_to_next, output.flows_to_prev
    outputs = torch.cat((output.stages, output.restored[:, None]), dim=1)
    targets = sharp[:, [1, 2, 3, 2]]
    windows = [sharp[:, 0:3], sharp[:, 1:4], sharp[:, 2:5], sharp[:, 1:4]]
    pairs = ([(i, j) for i in range(4) for j in range(4)] if warp_pairing == "all" else [(i, i) for i in range(4)])
    warp = torch.stack([stdanet_warp_loss(windows[j], flows_to_next[:, i], flows_to_prev[:, i]) for i, j in pairs])
    return F.l1_loss(outputs, targets) + warp_weight * warp.mean()


# ------------------------------------------------------------------------------ official weights

_STDAN_RENAMES = {"Defattn1.": "stda.MMA.", "Defattn3.": "stda.MSA.", "MMA.": "stda.MMA.", "MSA.": "stda.MSA."}


@register_converter(STDANet)
def convert_stdanet(model: nn.Module, state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """Official STDAN names -> :class:`STDANet`: ``MMA.``/``Defattn1.`` -> ``stda.MMA.``,
    ``MSA.``/``Defattn3.`` -> ``stda.MSA.``; the released test weights' ``flow_net.*`` entries (a
    PWC-Net the released model does not call, dropped by STDAN's own loader) are discarded."""
    discarded = {k: "flow_net: not part of STDAN's forward" for k in state if k.startswith("flow_net.")}
    kept = {k: v for k, v in state.items() if k not in discarded}
    return rename_prefixes(kept, _STDAN_RENAMES), discarded


@register_converter(STDANetStack)
def convert_stdanet_stack(model: nn.Module, state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """Official ``STDAN_Stack`` names (``recons_net.*``) -> :class:`STDANetStack`. A bare STDAN
    state dict (no ``recons_net.`` prefix) is accepted too: the stack shares one STDAN."""
    prefix = "recons_net."
    stacked = any(k.startswith(prefix) for k in state)
    inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} if stacked else state
    others = {k: v for k, v in state.items() if not k.startswith(prefix)} if stacked else {}
    converted, discarded = convert_stdanet(model.recons_net, inner)
    # Discarded keys are reported as the checkpoint names them (with the prefix only if it had one).
    return ({**{prefix + k: v for k, v in converted.items()}, **others},
            {(prefix if stacked else "") + k: why for k, why in discarded.items()})


_STDAN_PAPER = "Spatio-Temporal Deformable Attention Network for Video Deblurring (Zhang, Xie, Yao; ECCV 2022)"
_STDAN_CODE = "https://github.com/huicongzhang/STDAN"
_STDAN_DRIVE = "the Google Drive folder of the README's Pretrained Models (for weights/)"

STDANET_CARD = ModelCard(
    name="stdanet", paper=_STDAN_PAPER, code=_STDAN_CODE, frames_in=3, min_frames=3, output="centre",
    output_type="Tensor (B, 3, H, W); STDANetOutput with return_details=True",
    size_multiple=SIZE_MULTIPLE, parameters=13_837_029, official_parameters=13_837_029, loss=stdanet_loss,
    compute="1677 GMACs per 720p frame (Table 2)",
    reported=(Reported("GoPro", 32.29, 0.9313, "Table 2"), Reported("DVD", 32.63, 0.9300, "Table 1"),
              Reported("BSD 1ms-8ms", 34.21, 0.9446, "Table 3"), Reported("BSD 2ms-16ms", 33.13, 0.9388, "Table 3"),
              Reported("BSD 3ms-24ms", 32.65, 0.9409, "Table 3")),
    checkpoints=(),  # the released weights are STDANet-Stack's: no runnable official path builds this one
    manifest="STDAN",
    protocol="stdan")

STDANET_STACK_CARD = dataclasses.replace(
    STDANET_CARD, name="stdanet_stack", frames_in=5, min_frames=5, loss=stdanet_stack_loss,
    compute="6000 GMACs per 720p frame (Table 2)",
    reported=(Reported("GoPro", 32.62, 0.9375, "Table 2"), Reported("DVD", 33.05, 0.9374, "Table 1"),
              Reported("BSD 1ms-8ms", 34.32, 0.9456, "Table 3"), Reported("BSD 2ms-16ms", 33.27, 0.9420, "Table 3"),
              Reported("BSD 3ms-24ms", 32.83, 0.9443, "Table 3")),
    checkpoints=(Checkpoint("DVD_release.pth", "DVD", None, _STDAN_DRIVE),),
    manifest="STDAN_Stack")


@register_model("stdanet", card=STDANET_CARD)
def stdanet(**kwargs) -> STDANet:
    """STDANet (13.84 M parameters)."""
    return STDANet(**kwargs)


@register_model("stdanet_stack", card=STDANET_STACK_CARD)
def stdanet_stack(**kwargs) -> STDANetStack:
    """STDANet-Stack (13.84 M parameters, four STDANet passes per frame)."""
    return STDANetStack(**kwargs)
