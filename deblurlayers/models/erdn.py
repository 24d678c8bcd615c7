"""ERDN (Jiang et al., "ERDN: Equivalent Receptive Field Deformable Network for Video Deblurring",
ECCV 2022), assembled from :class:`~deblurlayers.layers.PyramidDeformableAlign`,
:class:`~deblurlayers.layers.SFTGradientBranch`, :class:`~deblurlayers.layers.GradientMap` and the
CDVD-TSP encoder-decoder stages.

The data flow, parameter names and counts follow the official ``model/erdn.py``,
``model/flow_deform.py`` and ``model/recons_video.py``; ``docs/models/erdn.md`` lists where the
code differs from the paper and what this implementation changes (stage-1 reuse over a clip, no
never-called convolutions, any frame size).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import GradientMap, PyramidDeformableAlign, SFTGradientBranch, sft
from ..layers.blocks import ResBlock, decoder_stage, encoder_stage, output_stage
from ..utils import cat_channels, check_clip, check_input, check_shape, clip_forward, empty_batch, pad_to_multiple
from ..utils import check_finite as finite_or_raise  # restore_clip's argument is named check_finite
from ._checkpoint import StateDict, register_converter
from ._cards import Checkpoint, ModelCard, Reported
from ._registry import register_model

__all__ = ["ERDN", "ERDNStage", "ERDNOutput", "StageOutput", "DualPyramidAlign", "RestorationUNet",
           "luckiness_mask", "erdn_stage_loss", "erdn_loss"]

WINDOW = 3  # every stage restores the centre of three frames
SIZE_MULTIPLE = 8  # the alignment pyramid halves the frame three times
PYRAMID_LEVELS = 4
BORDERS = ("official", "none")


class RestorationUNet(nn.Module):
    """CDVD-TSP's restoration encoder-decoder as ERDN configures it (official ``RECONS_VIDEO``).

    ``inBlock`` (conv + ReLU + ResBlocks, F channels), ``encoder_first`` / ``encoder_second``
    (stride 2: 2F at H/2, 4F at H/4), ``decoder_second`` / ``decoder_first`` (ResBlocks, then a
    transposed conv + ReLU) and ``outBlock`` (ResBlocks, conv to RGB). All convolutions are
    ``kernel_size`` (5) except the transposed ones (3); ResBlocks are conv-ReLU-conv. The decoder
    adds the encoder features at H/2 and H; there is no global residual. ERDN splits the network at
    its bottleneck (:meth:`encode`, :meth:`decode`) to modulate the encoder features.

    Shape:
        - Input: ``(N, in_channels, H, W)``, H and W multiples of 4
        - Output: ``(N, 3, H, W)``
    """

    def __init__(self, in_channels: int, n_feat: int = 32, n_resblock: int = 3, kernel_size: int = 5) -> None:
        super().__init__()
        f, k, n = n_feat, kernel_size, n_resblock
        self.inBlock = encoder_stage(in_channels, f, k, stride=1, negative_slope=0.0, num_resblocks=n)
        self.encoder_first = encoder_stage(f, 2 * f, k, stride=2, negative_slope=0.0, num_resblocks=n)
        self.encoder_second = encoder_stage(2 * f, 4 * f, k, stride=2, negative_slope=0.0, num_resblocks=n)
        self.decoder_second = decoder_stage(4 * f, 2 * f, k, negative_slope=0.0, num_resblocks=n)
        self.decoder_first = decoder_stage(2 * f, f, k, negative_slope=0.0, num_resblocks=n)
        self.outBlock = output_stage(f, 3, k, num_resblocks=n)

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(s0, e1, e2)``: F channels at H, 2F at H/2, 4F at H/4."""
        s0 = self.inBlock(x)
        e1 = self.encoder_first(s0)
        return s0, e1, self.encoder_second(e1)

    def decode(self, s0: torch.Tensor, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        return self.outBlock(self.decoder_first(self.decoder_second(e2) + e1) + s0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encode(x))


class DualPyramidAlign(nn.Module):
    """ERDN's dual pyramid alignment (official ``Flow_Deform``): three frames in, three RGB images
    out: the two neighbours aligned to the centre and the pre-deblurred centre.

    - **Neighbour pyramid** (frames 0 and 2, one batch): ``conv_first`` + LReLU, ``num_extract_blocks``
      ResBlocks (ReLU, init x0.1) -> L1; then ``conv_l{2,3,4}_1`` (stride 2) + LReLU, ``conv_l{2,3,4}_2``
      + LReLU -> L2, L3, L4 (H/2, H/4, H/8). LReLU is ``LeakyReLU(0.1)``.
    - **Reference pyramid**: the encoder of the pre-deblur net ``center_net`` (a
      :class:`RestorationUNet` on the three frames stacked along channels) projected by the 1x1
      convs ``conv_l{1,2,3}_t``; its L4 reuses ``conv_l4_1`` / ``conv_l4_2`` on L3.
    - ``pcd_align`` (:class:`~deblurlayers.layers.PyramidDeformableAlign`: dilated pyramid blocks,
      DCNv2 per level, cascade) aligns each neighbour's pyramid to the reference;
      ``reconstruction`` (ResBlocks) and ``conv_last`` turn the aligned features back into RGB.
    - ``center_net``'s decoder restores the centre frame (the "pre-deblurred" reference).

    The official module also defines ``conv_l4_c_1`` / ``conv_l4_c_2``, which its forward never
    calls; they are left out (``load_official`` reports them as discarded).

    Args:
        channels: C of the pyramids (64); ``center_net`` is C/2 wide, as the official 1x1 convs imply.
        deformable_groups: of every DCN (8).
        num_extract_blocks: ResBlocks of the neighbour features (5).
        num_reconstruct_blocks: ResBlocks after the alignment (10).
        n_resblock: ResBlocks per stage of ``center_net`` (3).

    Shape:
        - frames: ``(B, 3, 3, H, W)``, H and W multiples of 8
        - Output: ``(B, 3, 3, H, W)`` = ``[aligned t-1, pre-deblurred t, aligned t+1]``
    """

    def __init__(self, channels: int = 64, deformable_groups: int = 8, num_extract_blocks: int = 5,
                 num_reconstruct_blocks: int = 10, n_resblock: int = 3) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"channels: expected an even width (center_net runs at channels / 2), got {channels}")
        c, half = channels, channels // 2
        self.conv_first = nn.Conv2d(3, c, 3, 1, 1)
        self.feature_extraction = _residual_blocks(c, num_extract_blocks)
        # level l: a stride-2 conv (conv_l{l}_1) and a 3x3 conv (conv_l{l}_2), LReLU after each (_down)
        for level in range(2, PYRAMID_LEVELS + 1):
            setattr(self, f"conv_l{level}_1", nn.Conv2d(c, c, 3, 2, 1))
            setattr(self, f"conv_l{level}_2", nn.Conv2d(c, c, 3, 1, 1))
        self.pcd_align = PyramidDeformableAlign(c, deformable_groups, levels=PYRAMID_LEVELS, cascade=True)
        self.reconstruction = _residual_blocks(c, num_reconstruct_blocks)
        self.conv_last = nn.Conv2d(c, 3, 3, 1, 1)
        self.center_net = RestorationUNet(3 * WINDOW, half, n_resblock)
        self.conv_l1_t = nn.Conv2d(half, c, 1)
        self.conv_l2_t = nn.Conv2d(c, c, 1)
        self.conv_l3_t = nn.Conv2d(2 * c, c, 1)

    def _down(self, level: int, x: torch.Tensor) -> torch.Tensor:
        first, second = getattr(self, f"conv_l{level}_1"), getattr(self, f"conv_l{level}_2")
        return F.leaky_relu(second(F.leaky_relu(first(x), 0.1, inplace=True)), 0.1, inplace=True)

    def neighbour_pyramid(self, frames: torch.Tensor) -> List[torch.Tensor]:
        """Four levels of ``(N, C, H / 2^i, W / 2^i)`` features of ``(N, 3, H, W)`` frames."""
        pyramid = [self.feature_extraction(F.leaky_relu(self.conv_first(frames), 0.1, inplace=True))]
        for level in range(2, PYRAMID_LEVELS + 1):
            pyramid.append(self._down(level, pyramid[-1]))
        return pyramid

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        neighbours = torch.cat((frames[:, 0], frames[:, 2]), dim=0)  # (2B, 3, H, W): one pass for both
        nbr = self.neighbour_pyramid(neighbours)
        s0, e1, e2 = self.center_net.encode(rearrange(frames, "b t c h w -> b (t c) h w"))
        ref = [self.conv_l1_t(s0), self.conv_l2_t(e1), self.conv_l3_t(e2)]
        ref.append(self._down(PYRAMID_LEVELS, ref[-1]))
        aligned = self.conv_last(self.reconstruction(self.pcd_align(nbr, [torch.cat((r, r), 0) for r in ref])))
        before, after = aligned.chunk(2, dim=0)
        return torch.stack((before, self.center_net.decode(s0, e1, e2), after), dim=1)


def _residual_blocks(channels: int, count: int) -> nn.Sequential:
    """BasicSR's ``ResidualBlockNoBN`` stack: conv-ReLU-conv, Kaiming init scaled by 0.1."""
    return nn.Sequential(*[ResBlock(channels, negative_slope=0.0, init_scale=0.1) for _ in range(count)])


def luckiness_mask(frames: torch.Tensor, kernel_size: int = 5, delta: float = 0.5) -> torch.Tensor:
    """CDVD-TSP's temporal sharpness prior, as ERDN computes it on its aligned images.

    On detached frames (no gradient flows through the prior) smoothed by a ``kernel_size`` mean
    filter with zero padding: ``D = Σ_t Σ_c (m_t - m_centre)² / δ²``, ``mask = exp(-sqrt(D))``,
    1 where the frames agree (the centre is likely sharp), towards 0 where they differ.

    Shape:
        - frames: ``(B, T, C, H, W)``
        - Output: ``(B, 1, H, W)``
    """
    b = frames.shape[0]
    smooth = F.avg_pool2d(frames.detach().flatten(0, 1), kernel_size, 1, kernel_size // 2, count_include_pad=True)
    smooth = rearrange(smooth, "(b t) c h w -> b t c h w", b=b)
    centre = smooth[:, frames.shape[1] // 2: frames.shape[1] // 2 + 1]
    distance = ((smooth - centre) ** 2).sum(dim=(1, 2)) / (delta * delta)
    return torch.exp(-torch.sqrt(distance))[:, None]


class StageOutput(NamedTuple):
    """What one ERDN stage computes: the restored centre ``(N, 3, H, W)``, its predicted gradient
    map ``(N, 3, H, W)`` and the alignment images ``(N, 3, 3, H, W)`` (``[aligned t-1,
    pre-deblurred t, aligned t+1]``, supervised by the alignment loss)."""

    restored: torch.Tensor
    grad_map: torch.Tensor
    aligned: torch.Tensor


class ERDNStage(nn.Module):
    """One ERDN stage (official ``first_stage``): three frames and the centre's gradient map in, the
    restored centre frame out.

    1. ``flow_net`` (:class:`DualPyramidAlign`) gives ``[aligned t-1, pre-deblurred t, aligned t+1]``.
    2. :func:`luckiness_mask` of those three images (on detached values) is a 10th input channel.
    3. ``recons_net``'s encoder (:class:`RestorationUNet`, 10 channels in) gives ``s0, e1, e2``;
       ``grad_net`` (:class:`~deblurlayers.layers.SFTGradientBranch`) reads them with the gradient
       map and returns ``(α_j, β_j)`` and the predicted gradient map; the decoder restores the frame
       from ``sft(s0, α0, β0)``, ``sft(e1, α1, β1)``, ``sft(e2, α2, β2)``.

    Args:
        n_feat: F of ``recons_net`` and ``grad_net`` (32).
        n_resblock: ResBlocks per encoder/decoder stage (3).
        align_channels: width of the alignment pyramids (64).
        deformable_groups: of the alignment DCNs (8).
        num_extract_blocks, num_reconstruct_blocks: see :class:`DualPyramidAlign`.

    Shape:
        - frames: ``(N, 3, 3, H, W)``, H and W multiples of 8
        - grad: ``(N, 3, H, W)``, the gradient map of the centre frame (``GradientMap()(frames[:, 1])``)
        - Output: :class:`StageOutput`
    """

    def __init__(self, n_feat: int = 32, n_resblock: int = 3, align_channels: int = 64, deformable_groups: int = 8,
                 num_extract_blocks: int = 5, num_reconstruct_blocks: int = 10) -> None:
        super().__init__()
        self.flow_net = DualPyramidAlign(align_channels, deformable_groups, num_extract_blocks,
                                         num_reconstruct_blocks, n_resblock)
        self.recons_net = RestorationUNet(3 * WINDOW + 1, n_feat, n_resblock)
        self.grad_net = SFTGradientBranch(3, 3, n_feat)

    def forward(self, frames: torch.Tensor, grad: torch.Tensor) -> StageOutput:
        dims = check_input(frames, "B T C H W", name="frames", like=self, sizes={"T": WINDOW, "C": 3},
                           minimum={"H": SIZE_MULTIPLE, "W": SIZE_MULTIPLE})
        if dims["H"] % SIZE_MULTIPLE or dims["W"] % SIZE_MULTIPLE:
            raise ValueError(f"frames: expected H and W divisible by {SIZE_MULTIPLE} (the alignment pyramid), got "
                             f"{dims['H']}x{dims['W']} (ERDN pads; pad the frames first when calling a stage)")
        check_shape(grad, "B C H W", name="grad", sizes={"B": dims["B"], "C": 3, "H": dims["H"], "W": dims["W"]})
        if dims["B"] == 0:
            return StageOutput(*empty_batch(self, frames, grad))
        aligned = self.flow_net(frames)
        features = self.recons_net.encode(
            cat_channels((rearrange(aligned, "b t c h w -> b (t c) h w"), luckiness_mask(aligned)), dim=1))
        alphas, betas, grad_map = self.grad_net(grad, features)
        restored = self.recons_net.decode(*(sft(f, a, b) for f, a, b in zip(features, alphas, betas)))
        return StageOutput(restored, grad_map, aligned)


class ERDNOutput(NamedTuple):
    """ERDN's outputs for its loss (``return_details=True``).

    ``restored`` ``(B, 3, H, W)``, ``grad_map`` ``(B, 3, H, W)`` and ``aligned`` ``(B, 3, 3, H, W)``
    belong to the last stage. A two-stage model also returns its first stage's three windows
    (centred at t-1, t, t+1) along dim 1: ``first_restored`` and ``first_grad_map``
    ``(B, 3, 3, H, W)``, ``first_aligned`` ``(B, 3, 3, 3, H, W)``; ``None`` for one stage.
    """

    restored: torch.Tensor
    grad_map: torch.Tensor
    aligned: torch.Tensor
    first_restored: Optional[torch.Tensor] = None
    first_grad_map: Optional[torch.Tensor] = None
    first_aligned: Optional[torch.Tensor] = None


class ERDN(nn.Module):
    """ERDN: ``2·stages + 1`` blurry frames in, the restored centre frame out (official ``ERDN``).

    - ``stages=2`` (default; the released 5-frame model, official ``phase='double'``): stage 1
      restores frames t-1, t, t+1 from the windows ``(0,1,2)``, ``(1,2,3)``, ``(2,3,4)`` with shared
      weights (run as one batch); stage 2, with its own weights, restores frame t from those three
      outputs, with the gradient map of stage 1's centre output (not detached).
    - ``stages=1`` (the paper's 3-frame model, official ``phase='single'``): three frames in. The
      official forward still takes five frames and uses the middle three; this one takes three.

    Each stage is an :class:`ERDNStage` fed ``get_grad`` (:class:`~deblurlayers.layers.GradientMap`,
    zero padding) of its centre frame. Any ``H x W``: frames are padded (reflect, bottom/right) to
    multiples of 8 and the outputs cropped back. Inputs in [0, 1]. :meth:`restore_clip` restores a
    whole clip and computes each stage-1 window once.

    Parameters: 23,024,004 per stage (46,048,008 for two), plus the 18 fixed gradient kernel values
    (buffers ``get_grad.weight_h`` / ``weight_v``, official frozen parameters). The official model
    also holds ``conv_l4_c_{1,2}`` (73,856 per stage), which its forward never calls: not built here;
    ``load_official`` discards them (and, for one stage, the unused ``*_new`` stage-2 modules that
    the official class always builds).

    Args:
        stages: 1 or 2.
        n_feat, n_resblock, align_channels, deformable_groups, num_extract_blocks,
            num_reconstruct_blocks: see :class:`ERDNStage` (official: 32, 3, 64, 8, 5, 10).

    Shape:
        - frames: ``(B, 2·stages + 1, 3, H, W)``
        - Output: ``(B, 3, H, W)``, or :class:`ERDNOutput` with ``return_details=True``

    Example:
        >>> model = ERDN(stages=1, n_feat=4, n_resblock=1, align_channels=8, deformable_groups=2,
        ...              num_extract_blocks=1, num_reconstruct_blocks=1)
        >>> model(torch.rand(1, 3, 3, 20, 30)).shape
        torch.Size([1, 3, 20, 30])
    """

    def __init__(self, stages: int = 2, n_feat: int = 32, n_resblock: int = 3, align_channels: int = 64,
                 deformable_groups: int = 8, num_extract_blocks: int = 5, num_reconstruct_blocks: int = 10) -> None:
        super().__init__()
        if stages not in (1, 2):
            raise ValueError(f"stages: expected 1 (3 frames) or 2 (5 frames, the released model), got {stages!r}")
        self.num_stages, self.num_frames = stages, 2 * stages + 1
        self.get_grad = GradientMap()
        self.stages = nn.ModuleList(
            ERDNStage(n_feat, n_resblock, align_channels, deformable_groups, num_extract_blocks, num_reconstruct_blocks)
            for _ in range(stages))

    def run_stage(self, index: int, frames: torch.Tensor) -> StageOutput:
        """Stage ``index`` on ``(N, 3, 3, H, W)`` windows (H, W multiples of 8), with the gradient
        map of their centre frames."""
        return self.stages[index](frames, self.get_grad(frames[:, WINDOW // 2]))

    @clip_forward(num_frames=lambda model: model.num_frames)
    def forward(self, frames: torch.Tensor, return_details: bool = False):
        padded, (h, w) = pad_to_multiple(frames, SIZE_MULTIPLE)
        if self.num_stages == 1:
            output = ERDNOutput(*self.run_stage(0, padded))
        elif not return_details and not torch.is_grad_enabled():
            # Inference: one first-stage window at a time, keeping only its restored frame, so the
            # forward peaks at one stage pass's activations (as the official code), not three.
            first = torch.stack([self.run_stage(0, padded[:, i:i + WINDOW]).restored for i in range(WINDOW)], dim=1)
            output = ERDNOutput(*self.run_stage(1, first), None, None, None)
        else:
            b = padded.shape[0]
            windows = torch.cat([padded[:, i:i + WINDOW] for i in range(WINDOW)], dim=0)  # (3B, 3, 3, H, W)
            first = [rearrange(t, "(s b) ... -> b s ...", b=b) for t in self.run_stage(0, windows)]
            output = ERDNOutput(*self.run_stage(1, first[0]), *first)
        output = ERDNOutput(*(None if t is None else t[..., :h, :w] for t in output))
        return output if return_details else output.restored

    def restore_clip(self, frames: torch.Tensor, border: str = "official", windows_per_batch: int = 4,
                     check_finite: bool = False) -> torch.Tensor:
        """Restore every frame of a clip, computing each stage-1 window once.

        Calling the model on every 5-frame window runs stage 1 three times per output frame (4
        stage passes); here stage 1 runs once per frame position and stage 2 reuses its outputs
        (``T + 2`` stage-1 and ``T`` stage-2 passes for ``T`` frames, about 2 per frame). The result
        equals calling the model on each window. Wrap the call in ``torch.inference_mode()`` for
        inference: with autograd on, the whole clip's graph is kept.

        Args:
            frames: ``(B, T, 3, H, W)``.
            border: ``"official"`` (the official ``inference.py --border``): the clip is extended
                by a copy of its first two frames in front and its last two behind,
                ``[f0, f1, f0, f1, ..., f(T-2), f(T-1), f(T-2), f(T-1)]``, and every frame is
                restored (T >= 2); frame 0's window is ``(f0, f1, f0, f1, f2)`` (centre f0).
                ``"none"``: no extension; frames ``2 .. T-3`` are restored (T >= 5), as the
                official evaluation without ``--border``. A one-stage model uses the middle three
                frames of the same windows.
            windows_per_batch: windows run together in one stage call (memory vs. speed).
            check_finite: refuse a clip holding NaN or inf up front (``ValueError`` naming the
                frames), instead of restoring it to NaN (one extra pass over the clip).

        Returns:
            ``(B, T, 3, H, W)``, or ``(B, T - 4, 3, H, W)`` with ``border="none"``.
        """
        if border not in BORDERS:
            raise ValueError(f"border: expected one of {BORDERS}, got {border!r}")
        if not isinstance(windows_per_batch, int) or windows_per_batch < 1:
            raise ValueError(f"windows_per_batch: expected an int >= 1, got {windows_per_batch!r}")
        half = 2  # the official inference always slides a 5-frame window
        dims = check_clip(frames, self, min_frames=2 if border == "official" else 2 * half + 1)
        if check_finite:
            finite_or_raise(frames)
        if dims["B"] == 0:
            return empty_batch(self, frames, border, windows_per_batch, method=self.restore_clip)
        if border == "official":
            frames = torch.cat((frames[:, :half], frames, frames[:, -half:]), dim=1)
        padded, (h, w) = pad_to_multiple(frames, SIZE_MULTIPLE)
        centres = range(half, padded.shape[1] - half)
        # stage s restores the positions within (stages - 1 - s) of a centre; the last, the centres
        restored: Dict[int, torch.Tensor] = {p: padded[:, p] for p in range(padded.shape[1])}
        for stage in range(self.num_stages):
            reach = self.num_stages - 1 - stage
            wanted = list(range(centres[0] - reach, centres[-1] + reach + 1))
            restored = self._stage_over_positions(stage, restored, wanted, windows_per_batch)
        return torch.stack([restored[c] for c in centres], dim=1)[..., :h, :w]

    def _stage_over_positions(self, stage: int, source: Dict[int, torch.Tensor], positions: Sequence[int],
                              windows_per_batch: int) -> Dict[int, torch.Tensor]:
        """Stage ``stage`` on the windows ``(p-1, p, p+1)`` of ``source`` for each ``p``, batched."""
        out = {}
        b = next(iter(source.values())).shape[0]
        for start in range(0, len(positions), windows_per_batch):
            chunk = positions[start:start + windows_per_batch]
            windows = torch.cat([torch.stack([source[p + d] for d in (-1, 0, 1)], dim=1) for p in chunk], dim=0)
            restored = self.run_stage(stage, windows).restored
            out.update({p: restored[i * b:(i + 1) * b] for i, p in enumerate(chunk)})
        return out


# --------------------------------------------------------------------------------------- losses

@functools.lru_cache(maxsize=None)
def _gradient_map(device: torch.device) -> GradientMap:
    """The loss's fixed gradient operator, built once per device (it holds two constant kernels)."""
    return GradientMap().to(device)


def erdn_stage_loss(restored: torch.Tensor, grad_map: torch.Tensor, aligned: torch.Tensor, sharp: torch.Tensor,
                    align_weight: float = 1.0, align_target: str = "centre") -> torch.Tensor:
    """ERDN's loss of one stage (paper eqs. 10-13): ``L_rec + L_grad + λ·L_align``.

    - ``L_rec = |restored - S_t|`` (eq. 10);
    - ``L_grad = |grad_map - G(S_t)|`` with ``G`` = :class:`~deblurlayers.layers.GradientMap`
      (eq. 12, zero padding as the official gradient);
    - ``L_align = (1/3) Σ_i |aligned_i - target_i|`` over ``[aligned t-1, pre-deblurred t,
      aligned t+1]`` (eq. 11). Eq. 11 writes the target as ``S_i`` (each frame's own sharp frame)
      while the text says the neighbours are aligned "with the sharp target frame": the aligned
      neighbours are warped onto frame t, so ``align_target="centre"`` (default) scores all three
      against ``S_t``; ``"own"`` follows the formula's indices.

    ``|·|`` is the mean absolute error (the training code was not released; L1 means are what the
    CDVD-TSP code it builds on uses). λ is not given in the paper; 1 by default. Computed in fp32.

    Shapes: restored, grad_map ``(B, 3, H, W)``; aligned ``(B, 3, 3, H, W)``; sharp the sharp
    window ``(B, 3, 3, H, W)``.
    """
    if align_target not in ("centre", "own"):
        raise ValueError(f"align_target: expected 'centre' or 'own', got {align_target!r}")
    dims = check_shape(aligned, "B T C H W", name="aligned", sizes={"T": WINDOW, "C": 3})
    check_shape(sharp, "B T C H W", name="sharp", sizes=dims)
    check_shape(restored, "B C H W", name="restored", sizes={k: dims[k] for k in "BCHW"})
    check_shape(grad_map, "B C H W", name="grad_map", sizes={k: dims[k] for k in "BCHW"})
    sharp = sharp.float()
    centre = sharp[:, WINDOW // 2]
    gradient = _gradient_map(sharp.device)
    target = centre[:, None].expand_as(sharp) if align_target == "centre" else sharp
    return (F.l1_loss(restored.float(), centre) + F.l1_loss(grad_map.float(), gradient(centre))
            + align_weight * F.l1_loss(aligned.float(), target))


def erdn_loss(output: ERDNOutput, sharp: torch.Tensor, align_weight: float = 1.0,
              align_target: str = "centre") -> torch.Tensor:
    """ERDN's training loss (paper eqs. 8-9): the sum of the stage losses of every restored frame.

    Two stages: ``Σ_{i=t-1}^{t+1} L_stage(stage 1 on window i, S_i) + L_stage(stage 2, S_t)``; one
    stage: ``L_stage``. See :func:`erdn_stage_loss` for ``align_weight`` and ``align_target``.

    Args:
        output: ``model(blurry, return_details=True)``.
        sharp: the sharp clip ``(B, 2·stages + 1, 3, H, W)``.
    """
    if not isinstance(output, ERDNOutput):
        raise TypeError(f"output: expected the ERDNOutput of model(frames, return_details=True), "
                        f"got {type(output).__name__}")
    frames = WINDOW if output.first_restored is None else WINDOW + 2
    check_shape(sharp, "B T C H W", name="sharp", sizes={"T": frames, "C": 3})
    last = erdn_stage_loss(output.restored, output.grad_map, output.aligned, sharp[:, frames // 2 - 1:frames // 2 + 2],
                           align_weight, align_target)
    if output.first_restored is None:
        return last
    first = [erdn_stage_loss(output.first_restored[:, i], output.first_grad_map[:, i], output.first_aligned[:, i],
                             sharp[:, i:i + WINDOW], align_weight, align_target) for i in range(WINDOW)]
    return torch.stack(first).sum() + last


# ------------------------------------------------------------------------------ official weights

_STAGE_MODULES = ("flow_net", "recons_net", "grad_net")
_UNCALLED = ("flow_net.conv_l4_c_1.", "flow_net.conv_l4_c_2.")


@register_converter(ERDN)
def convert_erdn(model: nn.Module, state: StateDict) -> Tuple[StateDict, Dict[str, str]]:
    """Official ERDN names -> :class:`ERDN`: ``flow_net.*``, ``recons_net.*``, ``grad_net.*`` ->
    ``stages.0.*``; ``flow_net_new.*``, ``recons_net_new.*``, ``grad_net_new.*`` -> ``stages.1.*``;
    ``get_grad.*`` kept. Discarded: ``conv_l4_c_{1,2}`` of each ``flow_net`` (never called by the
    official forward) and, for a one-stage model, the ``*_new`` modules (never called with
    ``phase='single'``, yet always built by the official class)."""
    converted, discarded = {}, {}
    for key, value in state.items():
        module, _, rest = key.partition(".")
        base = module[:-len("_new")] if module.endswith("_new") else module
        if base not in _STAGE_MODULES:
            converted[key] = value
            continue
        stage = int(module != base)
        if f"{base}.{rest}".startswith(_UNCALLED):
            discarded[key] = "never called by the official forward (Flow_Deform.conv_l4_c_*)"
        elif stage >= model.num_stages:
            discarded[key] = "a stage-2 module, never called by the official single-stage model"
        else:
            converted[f"stages.{stage}.{base}.{rest}"] = value
    return converted, discarded


_ERDN_PAPER = ("ERDN: Equivalent Receptive Field Deformable Network for Video Deblurring "
               "(Jiang, Xie, Xia, Li, Liu; ECCV 2022)")
_ERDN_CODE = "https://github.com/TencentCloud/ERDN"
_ERDN_WHERE = "the Baidu Netdisk link of the README's Quick Inference (extraction key csig)"

ERDN_CARD = ModelCard(
    name="erdn", paper=_ERDN_PAPER, code=_ERDN_CODE, frames_in=5, min_frames=5, output="centre",
    output_type="Tensor (B, 3, H, W); ERDNOutput with return_details=True", size_multiple=SIZE_MULTIPLE,
    parameters=46_048_008, official_parameters=46_195_738, loss=erdn_loss,
    compute="22.84 M parameters per stage (Table 2, Net-4)",
    reported=(Reported("GoPro", 32.48, 0.9329, "Table 1"), Reported("DVD", 33.31, 0.9395, "Table 1"),
              Reported("HFR-DVD", 32.14, 0.9173, "Table 1")),
    checkpoints=(Checkpoint("model_DVD.pt", "DVD", None, _ERDN_WHERE),),
    manifest="ERDN",
    protocol="erdn")

# Only the two-stage model is released: its first stage loads into the one-stage model, stage two
# is discarded, so both cards list the same checkpoint.
ERDN_SINGLE_CARD = dataclasses.replace(
    ERDN_CARD, name="erdn_single", frames_in=3, min_frames=3, parameters=23_024_004,
    official_parameters=23_097_878, compute="22.84 M parameters (Table 2, Net-4)",
    reported=(Reported("GoPro", 32.20, 0.9288, "Table 1"), Reported("DVD", 32.91, 0.9334, "Table 1"),
              Reported("HFR-DVD", 32.01, 0.9156, "Table 1")),
    manifest="ERDN_1")


@register_model("erdn", card=ERDN_CARD)
def erdn(**kwargs) -> ERDN:
    """ERDN, two stages, 5 frames (46.05 M parameters; the released model)."""
    return ERDN(stages=2, **kwargs)


@register_model("erdn_single", card=ERDN_SINGLE_CARD)
def erdn_single(**kwargs) -> ERDN:
    """ERDN, one stage, 3 frames (23.02 M parameters; the paper's 3-frame model)."""
    return ERDN(stages=1, **kwargs)
