"""``torch.utils.data`` datasets over paired sequences (:func:`~deblurlayers.data.find_sequences`).

Both hold only paths, so they pickle into ``DataLoader`` workers, and both are map-style with a
fixed length, so ``DistributedSampler`` shards them. Randomness (crops, flips) comes from torch's
global generator, which ``DataLoader`` seeds per worker.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from .io import read_image
from .layouts import VideoSequence

__all__ = ["ClipDataset", "SequenceDataset"]


class ClipDataset(Dataset):
    """Training clips: every run of ``num_frames`` consecutive frames of every sequence, randomly
    cropped to ``crop_size`` (the same crop for every frame and for blurry and sharp) and flipped.

    Args:
        sequences: paired sequences.
        num_frames: frames per clip (the model's ``frames_in``, or the clip length it trains on).
        crop_size: ``int`` or ``(h, w)`` (``None``: whole frames).
        flip: random horizontal and vertical flips (each with probability 1/2) and a reversal of
            the clip's frame order (probability 1/2), as BasicSR's video augmentation.
        stride: frames between the starts of consecutive clips.

    An item is ``{"blurry": (T, 3, h, w), "sharp": (T, 3, h, w), "name": str, "start": int}``.
    """

    def __init__(self, sequences: Sequence[VideoSequence], num_frames: int, crop_size=256, flip: bool = True,
                 stride: int = 1):
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames: expected an int >= 1, got {num_frames!r}")
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride: expected an int >= 1, got {stride!r}")
        self.crop = _pair(crop_size)
        missing = [s.name for s in sequences if s.sharp is None]
        if missing:
            raise ValueError(f"sequences: training needs sharp frames; none for {missing}")
        self.sequences, self.num_frames, self.flip = list(sequences), num_frames, flip
        self.index: List[Tuple[int, int]] = [(i, start) for i, s in enumerate(self.sequences)
                                             for start in range(0, len(s) - num_frames + 1, stride)]
        if not self.index:
            raise ValueError(f"num_frames: every sequence is shorter than {num_frames} frames "
                             f"(lengths {[len(s) for s in self.sequences]})")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> Dict[str, object]:
        i, start = self.index[item]
        seq = self.sequences[i]
        span = range(start, start + self.num_frames)
        blurry = torch.stack([read_image(seq.blurry[f]) for f in span])
        sharp = torch.stack([read_image(seq.sharp[f]) for f in span])
        _check_same_size(seq, blurry, sharp)
        if self.crop is not None:
            blurry, sharp = _random_crop(seq, self.crop, blurry, sharp)
        if self.flip:
            for dim in (-1, -2, 0):
                if torch.rand(()) < 0.5:
                    blurry, sharp = blurry.flip(dim), sharp.flip(dim)
        return {"blurry": blurry.contiguous(), "sharp": sharp.contiguous(), "name": seq.name, "start": start}


class SequenceDataset(Dataset):
    """Test sequences, one whole sequence per item:
    ``{"name": str, "blurry": (T, 3, H, W), "sharp": (T, 3, H, W) or None}``.

    Loads the whole sequence; for long videos at full resolution stream frames instead
    (:func:`~deblurlayers.pipeline.restore_sequence` reads them lazily).
    """

    def __init__(self, sequences: Sequence[VideoSequence]):
        self.sequences = list(sequences)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, item: int) -> Dict[str, object]:
        seq = self.sequences[item]
        blurry = torch.stack([read_image(p) for p in seq.blurry])
        sharp = torch.stack([read_image(p) for p in seq.sharp]) if seq.sharp is not None else None
        if sharp is not None:
            _check_same_size(seq, blurry, sharp)
        return {"name": seq.name, "blurry": blurry, "sharp": sharp}


def _pair(size) -> Optional[Tuple[int, int]]:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"crop_size: expected an int >= 1, an (h, w) pair of them or None, got {size!r}")
    return pair


def _check_same_size(seq: VideoSequence, blurry: torch.Tensor, sharp: torch.Tensor) -> None:
    if blurry.shape != sharp.shape:
        raise ValueError(f"sequence {seq.name!r}: blurry frames {tuple(blurry.shape[-2:])} and sharp frames "
                         f"{tuple(sharp.shape[-2:])} differ in size")


def _random_crop(seq: VideoSequence, crop: Tuple[int, int], *clips: torch.Tensor):
    h, w = clips[0].shape[-2:]
    if crop[0] > h or crop[1] > w:
        raise ValueError(f"crop_size: {crop} exceeds the frames of sequence {seq.name!r} ({h}, {w})")
    y = int(torch.randint(0, h - crop[0] + 1, ()))
    x = int(torch.randint(0, w - crop[1] + 1, ()))
    return tuple(c[..., y:y + crop[0], x:x + crop[1]] for c in clips)
