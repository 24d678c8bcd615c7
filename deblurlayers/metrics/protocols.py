"""Each paper's evaluation protocol: how its official code turns restored frames into one PSNR/SSIM.

The four papers score differently (``spec_evaluation.md`` §0; ``docs/usage.md`` measures what
the differences move):

============  ===========  ======  ===========  ==============  =========================
protocol      values       crop    SSIM         frames scored   average
============  ===========  ======  ===========  ==============  =========================
``stdan``     raw float    4 / 0   2d (skimage) all but 2 + 2   over frames
``bsstnet``   8-bit        0       bsst         all but 2 + 2   over 48-frame clips' means
``dstnet``    8-bit        0       3d           all             over frames
``erdn``      8-bit        4       2d           all but 2 + 2   over frames
============  ===========  ======  ===========  ==============  =========================

(crop: PSNR's / SSIM's border; STDAN shaves PSNR only.) Scores are kept per frame
(:meth:`Protocol.score`) and combined by :meth:`Protocol.summarize`, so sequences can be scored
on different processes and combined once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import torch

from .image import psnr, quantize, ssim

__all__ = ["Protocol", "PROTOCOLS", "get_protocol", "FrameScores", "clip_starts", "first_interior_clip"]


@dataclass(frozen=True)
class FrameScores:
    """The scores of one sequence: ``frames`` (indices), ``psnr`` and ``ssim`` per scored frame,
    and ``groups``: the averaging unit each frame belongs to (its clip under ``bsstnet``)."""

    name: str
    frames: Tuple[int, ...]
    psnr: Tuple[float, ...]
    ssim: Tuple[float, ...]
    groups: Tuple[int, ...]

    @property
    def mean_psnr(self) -> float:
        return _mean(self.psnr)

    @property
    def mean_ssim(self) -> float:
        return _mean(self.ssim)


@dataclass(frozen=True)
class Protocol:
    """A paper's evaluation, as its official code computes it.

    Attributes:
        name: the protocol's name.
        paper: whose protocol, and where in the official code.
        quantize: score 8-bit values (clamp, round) instead of the raw float output.
        psnr_crop, ssim_crop: border pixels removed before each metric.
        ssim_kind: ``"2d"``, ``"bsst"`` or ``"3d"`` (:func:`~deblurlayers.metrics.ssim`).
        skip: frames left out at each end of a sequence.
        average: ``"frames"`` (every scored frame of every sequence weighs the same) or
            ``"clips"`` (the mean over clips of ``clip_frames`` frames starting every
            ``clip_stride``, each clip weighing the same whatever it holds).
        peak_rule: ``"fixed"`` or ``"dstnet"`` (the peak is 1, not 255, when the restored frame's
            maximum is at most 1 grey level: DSTNet's ``calculate_psnr``; only an almost black frame).
    """

    name: str
    paper: str
    quantize: bool
    psnr_crop: int
    ssim_crop: int
    ssim_kind: str
    skip: int
    average: str = "frames"
    clip_frames: int = 48
    clip_stride: int = 44
    peak_rule: str = "fixed"

    def scored_frames(self, length: int) -> List[int]:
        """The indices scored in a sequence of ``length`` frames."""
        return list(range(self.skip, length - self.skip))

    def groups(self, length: int) -> Dict[int, int]:
        """``{frame: averaging group}`` for the scored frames of a sequence of ``length`` frames."""
        frames = self.scored_frames(length)
        if self.average == "frames":
            return {f: 0 for f in frames}
        starts = clip_starts(length, self.clip_frames, self.clip_stride)
        owner = first_interior_clip(length, starts, self.clip_frames, self.skip)
        return {f: owner[f] for f in frames}

    def score(self, restored: torch.Tensor, sharp: torch.Tensor) -> Tuple[float, float]:
        """PSNR and SSIM of one restored frame ``(C, H, W)`` (network output, [0, 1]) against its
        sharp frame ``(C, H, W)`` in [0, 1] (read from 8-bit files)."""
        if restored.shape != sharp.shape:
            raise ValueError(f"restored: expected the sharp frame's shape {tuple(sharp.shape)}, got "
                             f"{tuple(restored.shape)}")
        if self.quantize:
            x, y = quantize(restored), quantize(sharp)
        else:
            x, y = restored.double() * 255, sharp.double() * 255
        peak = 1.0 if self.peak_rule == "dstnet" and x.max().item() <= 1 else 255.0
        p = psnr(x, y, peak, crop=self.psnr_crop).item()
        s = ssim(x, y, peak, crop=self.ssim_crop, kind=self.ssim_kind).item()
        return p, s

    def summarize(self, sequences: Sequence[FrameScores]) -> Tuple[float, float]:
        """The protocol's overall PSNR and SSIM over the scored sequences."""
        if self.average == "frames":
            return (_mean([v for s in sequences for v in s.psnr]), _mean([v for s in sequences for v in s.ssim]))
        clip_means = []
        for s in sequences:
            by_clip: Dict[int, List[Tuple[float, float]]] = {}
            for g, p, q in zip(s.groups, s.psnr, s.ssim):
                by_clip.setdefault(g, []).append((p, q))
            clip_means += [(_mean([p for p, _ in v]), _mean([q for _, q in v])) for _, v in sorted(by_clip.items())]
        return _mean([p for p, _ in clip_means]), _mean([q for _, q in clip_means])


def clip_starts(length: int, clip_frames: int, stride: int) -> List[int]:
    """Clips of ``clip_frames`` frames every ``stride`` frames, the last one ending with the
    sequence (BSSTNet's and DSTNet's test datasets); one clip when the sequence is shorter."""
    if length <= clip_frames:
        return [0]
    return list(range(0, length - clip_frames, stride)) + [length - clip_frames]


def first_interior_clip(length: int, starts: Sequence[int], clip_frames: int, margin: int) -> List[int]:
    """For every frame, the first clip holding it at least ``margin`` frames from the clip's ends
    (frames within ``margin`` of the sequence's ends: the first clip holding them at all).

    With BSSTNet's 48/44 clips and a margin of 2 this is exactly the official choice of which
    clip scores which frame (its special cases for 77-, 100- and 134-frame videos included)."""
    owner = [-1] * length
    for c, s in enumerate(starts):
        e = min(s + clip_frames, length)
        lo = s if s == 0 else s + margin
        hi = e if e == length else e - margin
        for f in range(lo, hi):
            if owner[f] < 0:
                owner[f] = c
    for f in range(length):  # only reachable when margins leave a gap (stride > clip - 2 margin)
        if owner[f] < 0:
            owner[f] = next(c for c, s in enumerate(starts) if s <= f < s + clip_frames)
    return owner


_SPEC = "spec_evaluation.md"
PROTOCOLS: Mapping[str, Protocol] = {
    p.name: p for p in (
        Protocol("stdan", f"STDAN core/test.py, utils/util.py ({_SPEC} 2.1)", quantize=False, psnr_crop=4,
                 ssim_crop=0, ssim_kind="2d", skip=2),
        Protocol("bsstnet", f"BSSTNet Video_BSST_model.py ({_SPEC} 2.2)", quantize=True, psnr_crop=0, ssim_crop=0,
                 ssim_kind="bsst", skip=2, average="clips", clip_frames=48, clip_stride=44),
        Protocol("dstnet", f"DSTNet results/calculate_psnr.py ({_SPEC} 2.3)", quantize=True, psnr_crop=0,
                 ssim_crop=0, ssim_kind="3d", skip=0, peak_rule="dstnet"),
        Protocol("erdn", f"ERDN inference.py ({_SPEC} 2.4)", quantize=True, psnr_crop=4, ssim_crop=4,
                 ssim_kind="2d", skip=2),
    )
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name`` (one of ``PROTOCOLS``)."""
    if name not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {sorted(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name]


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else float("nan")
