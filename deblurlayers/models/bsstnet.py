"""BSSTNet (Zhang et al., "Blur-aware Spatio-temporal Sparse Transformer for Video Deblurring",
CVPR 2024): the official network (``BSST_arch.py``), assembled from the library's layers.

Data flow for a clip ``(B, T, 3, H, W)`` (``docs/models/bsstnet.md``):

1. flows at 1/4 resolution, given or estimated by the frozen flow estimator (RAFT-large on ×0.5
   frames, as the official wrapper);
2. a blur map from those flows conditions the flow refiner (:class:`~deblurlayers.layers.FlowRefiner`,
   ProPainter's recurrent flow completion); the blur map of the refined flows
   (:class:`~deblurlayers.layers.BlurMap`, detached) steers everything after;
3. a CAB encoder to 1/4 resolution (:class:`~deblurlayers.layers.CAB`);
4. BBFP: four branches of second-order propagation with blur-aware alignment
   (:class:`~deblurlayers.layers.BlurAwareAlignment`) and a gated CAB backbone each;
5. reconstruction: Conv3d + two residual Swin-3D groups (:class:`~deblurlayers.layers.SwinReconstruction`);
6. BSST: soft split, four :class:`~deblurlayers.layers.BlurAwareSparseAttention` layers, soft
   composition, and a gated CAB fusion with the reconstruction's features;
7. a Shift-Net decoder (:class:`~deblurlayers.layers.ShiftBlock`) to full resolution, plus the input frames.

Unlike the official code: any batch size, any ``H×W`` (padded to multiples of 16 and cropped back),
any ``T >= 2``; the blur map has an epsilon; the 8.27 M parameters of modules the official forward
never calls are not built (the converter reports their keys as discarded). The BSST frame
selection is the released code's by default (``selection="official"``: only the first
sparse-attention layer selects by blur, as the released weights were trained);
``selection="blur"`` is the paper's in every layer.
"""
from __future__ import annotations

import contextlib
import re
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import (CAB, BlurAwareAlignment, BlurAwareSparseTransformer, BlurMap, FlowRefiner, GatedCAB, ShiftBlock,
                      SoftComp, SoftSplit, SwinReconstruction)
from ..layers.blocks import leaky_relu, same_conv
from ..layers.propagation import second_order_propagation
from ..ops import flow_warp
from ..utils import (autocast_enabled, cat_channels, check_clip, check_floating, check_same_device, check_shape, clip_forward,
                     pad_to_multiple)
from ..utils import check_finite as finite_or_raise  # restore's argument is named check_finite
from ._checkpoint import StateDict, register_converter, rename_prefixes
from ._cards import Checkpoint, ModelCard, Reported, TestPipeline
from ._registry import register_model
from ._tiling import check_tiling, tiled_inference
from .flow import RAFT

__all__ = ["BSSTNet", "bsstnet_loss"]

BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")
# Frames are padded to this multiple: two stride-2 convs to 1/4, then the flow refiner's two more.
SIZE_MULTIPLE = 16


class SkipUpsample(nn.Module):
    """``conv1×1(bilinear×2(x)) + skip`` (official ``SkipUpSample``; key ``up.1``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                same_conv(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.up(x) + skip


class PixelShuffleUpsample(nn.Module):
    """Conv ``C -> C'·s²`` then pixel shuffle ×s (official ``PixelShufflePack``)."""

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2, kernel_size: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.upsample_conv = same_conv(in_channels, out_channels * scale * scale, kernel_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.upsample_conv(x), self.scale)


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
        self.concat = nn.Sequential(same_conv(3, c, 3), leaky_relu(), CAB(c))
        self.down01 = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1, bias=False), leaky_relu())
        self.encoder_level1, self.encoder_level1_1 = CAB(c), CAB(c)
        self.down12 = nn.Sequential(nn.Conv2d(c, m, 3, 2, 1, bias=False), leaky_relu())
        self.encoder_level2, self.encoder_level2_1 = CAB(m), CAB(m)
        # flows and blur maps
        self.blur_map = BlurMap(eps=blur_eps)
        self.blur_motion_refine = FlowRefiner(refine_channels, deformable_groups)
        # blur-aware bidirectional propagation
        self.deform_align, self.backbone = nn.ModuleDict(), nn.ModuleDict()
        for i, branch in enumerate(BRANCHES):
            self.deform_align[branch] = BlurAwareAlignment(m, deformable_groups=deformable_groups)
            self.backbone[branch] = nn.Sequential(nn.Conv2d((2 + i) * m, m, 3, padding=1), leaky_relu(), GatedCAB(m, 3))
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
        self.conv_hr0 = same_conv(c, c, 3)
        self.skip_conv, self.out_conv = CAB(c), CAB(c)
        self.last_conv = same_conv(c, 3, 3)
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
            precise = torch.promote_types(frames.dtype, torch.float32)  # fp32 islands, fp64 for an fp64 model
            half = F.interpolate(frames.flatten(0, 1).to(precise), size=(h // 2, w // 2), mode="bilinear",
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
                frame_overlap: int = 4, blend: str = "crop", pairs_per_call: Optional[int] = 16,
                check_finite: bool = False) -> torch.Tensor:
        """The official test pipeline: flows of the whole frame (the clip padded to multiples of
        16), then :func:`~deblurlayers.models.tiled_inference` on ``tile``² tiles with ``overlap``
        pixels of overlap and chunks of ``frames_per_clip`` frames with ``frame_overlap`` frames of
        overlap, each tile getting its crop of the flows. Call under ``torch.autocast`` for the
        official AMP; the flow estimator runs in fp32.

        Differences from the official ``test_by_patch``: the official seams are hard crops then an
        average where both kept parts overlap; ``blend="crop"`` cuts each overlap once at its
        middle. Tiles and chunks shorter than the clip are handled (no fixed 256²).

        ``check_finite=True`` refuses a clip holding NaN or inf before any work (``ValueError``
        naming the frames): one such pixel would turn every restored frame NaN.

        Shape: ``(B, T, 3, H, W)`` -> same.
        """
        check_clip(frames, self, min_frames=2)
        for name, value in (("tile", tile), ("overlap", overlap)):
            if not isinstance(value, int) or value % SIZE_MULTIPLE:
                raise ValueError(f"{name}: expected a multiple of {SIZE_MULTIPLE} (flows on the 1/4 grid, "
                                 f"frames padded to multiples of {SIZE_MULTIPLE}), got {value!r}")
        if frames_per_clip is not None and (not isinstance(frames_per_clip, int) or frames_per_clip < 2):
            raise ValueError(f"frames_per_clip: expected an int >= 2 or None, got {frames_per_clip!r}")
        check_tiling(tile, overlap, frames_per_clip, frame_overlap, blend)
        if check_finite:  # refuse NaN/inf up front: one bad pixel makes every output NaN
            finite_or_raise(frames)
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
        return torch.stack([cat_channels([feats[k][t] for k in feats], dim=1) for t in range(spatial.shape[1])], dim=1)

    def _propagate_branch(self, branch, feats, flows, checks, sharp, backward):
        current = list(feats.values())[-1]
        step = 1 if backward else -1  # the frame visited before t is t + step

        def align(t: int, states: List[torch.Tensor]) -> torch.Tensor:
            s = t if backward else t - 1  # flows[:, s] carries frame t to t + step, flows[:, s + step] that one on
            first = (states[-1], sharp[:, t + step], flows[:, s], checks[:, s])
            second = (states[-2], sharp[:, t + 2 * step], flows[:, s + step], checks[:, s + step]) \
                if len(states) > 1 else None
            return self._align(branch, current[t], sharp[:, t], first, second)

        return second_order_propagation(feats, backward, align, self.backbone[branch])

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
        cond = cat_channels((warped_1, current, warped_2, sharp_1, sharp_now, sharp_2, valid_1, valid_2), dim=1)
        return self.deform_align[branch](cat_channels((prev, prev_2), dim=1), cond, torch.stack((flow_1, flow_2), dim=1),
                                         cat_channels((sharp_1 * valid_1, sharp_2 * valid_2), dim=1))

    def sparse_transform(self, features: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
        """Soft split → BSST layers (steered by the token blur levels) → soft composition, fused with
        the input by the gated CABs: ``(B, T, C_mid, h, w)`` -> ``(B·T, C_mid, h, w)``."""
        size = features.shape[-2:]
        tokens = self.softsplit(features)
        tokens = self.transsqattn(tokens, self.softsplit.token_blur(blur), size)
        composed = self.softcomp(tokens, size)
        return self.cabattn(cat_channels((features, composed), dim=2).flatten(0, 1))

    def decode(self, fused: torch.Tensor, enc11: torch.Tensor, shortcut: torch.Tensor, frames: int) -> torch.Tensor:
        """Shift-Net decoder to full resolution: ``(B·T, C_mid, h, w)`` -> ``(B, T, 3, H, W)`` (before
        the global residual)."""
        x = self.up21(fused, self.skip_attn1(enc11)).unflatten(0, (-1, frames))
        x = self.decoder_level1_1(self.decoder_level1(x)).flatten(0, 1)
        x = self.conv_hr0(F.leaky_relu(self.upsample0(x), 0.1, inplace=True)) + self.skip_conv(shortcut)
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
# The gated CABs (the BBFP backbones, the fusion, the decoder's shift blocks) keep their channel
# LayerNorm's affine as `norm.{weight,bias}`; layers.LayerNorm2d holds it as `norm.body.*`.
_GATED_CAB_NORM = re.compile(r"^(backbone\.\w+\.2|cabattn\.[01]|decoder_level1(_1)?\.encoder_level1(_[123])?\.[01])"
                             r"\.norm\.(weight|bias)$")


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
            kept[key.replace(".norm.", ".norm.body.") if _GATED_CAB_NORM.match(key) else key] = value
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
    manifest="BSST", flops_frames=48, takes_flows=True,
    protocol="bsstnet",
    test_pipeline=TestPipeline(clip_frames=48, clip_stride=44, margin=2, tile=256, overlap=64, precision="fp16"))


@register_model("bsstnet", card=BSSTNET_CARD)
def bsstnet(**kwargs) -> BSSTNet:
    """BSSTNet as released (38.46 M parameters, plus RAFT-large's 5.26 M as its flow estimator)."""
    return BSSTNet(**kwargs)
