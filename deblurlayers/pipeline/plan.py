"""Temporal plans: which input frames each forward pass reads and which output frames it keeps.

A plan is computed from the video's length alone, before any frame is read, so a long video can
be streamed: frames are read when the first step needs them and dropped after the last one has.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..metrics import clip_starts, first_interior_clip

__all__ = ["Step", "window_plan", "clip_plan", "WINDOW_CONTEXT"]

# Window models see 2 frames either side of the one they restore (STDAN's and ERDN's 5-frame
# windows; a 3-frame model takes the middle three).
WINDOW_CONTEXT = 2


@dataclass(frozen=True)
class Step:
    """One forward pass.

    Attributes:
        inputs: the source frames it reads, in the order the model sees them (a frame may repeat
            at the video's ends).
        outputs: the frames it restores and keeps.
        keep: for each output, its position in the pass's result (clip models) or the index of
            its window (window models: output ``k`` is the centre of
            ``inputs[keep[k] : keep[k] + 2 * WINDOW_CONTEXT + 1]``).
    """

    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    keep: Tuple[int, ...]


def window_plan(length: int, windows_per_step: int = 1) -> List[Step]:
    """Every frame restored from the window around it, ``windows_per_step`` windows per pass.

    The video is extended by a copy of its first two and last two frames, in order
    (``f0 f1 | f0 f1 ... f(n-2) f(n-1) | f(n-2) f(n-1)``), as ERDN's official ``--border``; frame
    0's window is then ``(f0, f1, f0, f1, f2)``. A video of one frame repeats it.
    """
    _check_count("length", length)
    _check_count("windows_per_step", windows_per_step)
    c = WINDOW_CONTEXT
    head = [min(i, length - 1) for i in range(c)]
    tail = [max(length - c + i, 0) for i in range(c)]
    extended = head + list(range(length)) + tail
    steps = []
    for first in range(0, length, windows_per_step):
        last = min(first + windows_per_step, length)
        steps.append(Step(tuple(extended[first:last + 2 * c]), tuple(range(first, last)),
                          tuple(range(last - first))))
    return steps


def clip_plan(length: int, clip_frames: int, clip_stride: Optional[int] = None, margin: int = 0) -> List[Step]:
    """Clips of ``clip_frames`` frames every ``clip_stride`` (default: no overlap), the last one
    ending with the video; each frame kept from the first clip holding it at least ``margin``
    frames from the clip's inner ends (BSSTNet: 48, 44, 2; DSTNet: 30, 30, 0)."""
    _check_count("length", length)
    _check_count("clip_frames", clip_frames)
    stride = clip_frames if clip_stride is None else clip_stride
    _check_count("clip_stride", stride)
    if not isinstance(margin, int) or margin < 0 or 2 * margin >= clip_frames:
        raise ValueError(f"margin: expected an int in [0, clip_frames/2) = [0, {(clip_frames + 1) // 2}), got {margin!r}")
    if stride > clip_frames:
        raise ValueError(f"clip_stride: expected at most clip_frames={clip_frames} (no gaps), got {stride}")
    starts = clip_starts(length, clip_frames, stride)
    owner = first_interior_clip(length, starts, clip_frames, margin)
    steps = []
    for c, start in enumerate(starts):
        end = min(start + clip_frames, length)
        kept = [f for f in range(start, end) if owner[f] == c]
        if kept:
            steps.append(Step(tuple(range(start, end)), tuple(kept), tuple(f - start for f in kept)))
    return steps


def last_use(steps: Sequence[Step]) -> List[int]:
    """For each step, the smallest frame index any later step still reads (frames below it can be
    dropped after the step)."""
    lows, low = [], None
    for step in reversed(steps):
        lows.append(low)
        low = min(step.inputs) if low is None else min(low, min(step.inputs))
    return [float("inf") if v is None else v for v in reversed(lows)]


def _check_count(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
