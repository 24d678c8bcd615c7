"""Restore a whole video with a model of :mod:`deblurlayers.models`, streaming its frames.

:class:`Restorer` runs a model over a video the way the paper's test code does (its card's
:class:`~deblurlayers.models.TestPipeline`): window models slide a 5-frame window (the ends
extended by copies of the first and last two frames), clip models run overlapping clips, and large
frames go through :func:`~deblurlayers.models.tiled_inference`. Frames are read when a pass first
needs them and dropped after the last pass that reads them, so memory holds one pass's frames
whatever the video's length.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..data.io import PathLike, count_video_frames, image_size, read_image, read_video
from ..inference import to_channels_last
from ..models import ModelCard, tiled_inference
from .plan import WINDOW_CONTEXT, Step, clip_plan, last_use, window_plan

__all__ = ["FrameSource", "Restorer", "DTYPES", "OFFICIAL"]

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
OFFICIAL = "official"  # a Restorer argument left to the card's test pipeline
Official = Union[int, None, str]


class FrameSource:
    """The frames of a video (a list of image files or a video file), read on demand and cached
    until :meth:`drop_below`. Every frame must have the first frame's size."""

    def __init__(self, length: int, names: Sequence[str], read: Callable[[int], torch.Tensor], sequential: bool,
                 where: Callable[[int], str]):
        self.length, self.names = length, list(names)
        self._read, self._sequential, self._where = read, sequential, where
        self._cache: Dict[int, torch.Tensor] = {}
        self._next = 0  # sequential sources: the next frame the decoder yields
        self._size: Optional[Tuple[int, int]] = None

    @classmethod
    def from_paths(cls, paths: Sequence[PathLike]) -> "FrameSource":
        """Image files, in the given order; output names are their stems. Every file's header is
        read first: an unreadable file or a frame of another size is refused before any work."""
        paths = [Path(p) for p in paths]
        if not paths:
            raise ValueError("input: no frames to restore")
        first = image_size(paths[0])
        for path in paths[1:]:
            if image_size(path) != first:
                raise ValueError(f"{path}: frame of size {image_size(path)}, but {paths[0].name} is {first}; "
                                 f"expected every frame the same size")
        return cls(len(paths), [p.stem for p in paths], lambda i: read_image(paths[i]), False, lambda i: str(paths[i]))

    @classmethod
    def from_video(cls, path: PathLike) -> "FrameSource":
        """A video file, decoded once, in order; output names are ``000000``, ``000001``, ..."""
        length = count_video_frames(path)
        if length == 0:
            raise ValueError(f"{path}: the video has no frames")
        decoder = read_video(path)
        return cls(length, [f"{i:06d}" for i in range(length)], lambda i: next(decoder), True,
                   lambda i: f"{path} frame {i}")

    def __len__(self) -> int:
        return self.length

    def get(self, index: int) -> torch.Tensor:
        if index not in self._cache:
            if self._sequential:
                if index < self._next:
                    raise RuntimeError(f"frame {index} was dropped; a sequential source reads forward only")
                while self._next <= index:
                    self._cache[self._next] = self._checked(self._next, self._read(self._next))
                    self._next += 1
            else:
                self._cache[index] = self._checked(index, self._read(index))
        return self._cache[index]

    def drop_below(self, index) -> None:
        for i in [i for i in self._cache if i < index]:
            del self._cache[i]

    @property
    def cached(self) -> int:
        return len(self._cache)

    def _checked(self, index: int, frame: torch.Tensor) -> torch.Tensor:
        size = tuple(frame.shape[-2:])
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise ValueError(f"{self._where(index)}: frame of size {size}, but the video's first frame is "
                             f"{self._size}; expected every frame the same size")
        return frame


class Restorer:
    """Runs ``model`` over whole videos with its paper's test pipeline.

    Args:
        model: a model of :mod:`deblurlayers.models` (or any module with its card's call).
        card: the model's :class:`~deblurlayers.models.ModelCard`.
        tile, overlap: spatial tiles (``None``: whole frames); ``"official"``: the card's.
        frames_per_clip: clip models' clip length; ``"official"``: the card's (for ``dataset``).
        windows_per_pass: window models: windows restored per forward pass (memory vs speed; the
            output does not depend on it). ``None``: 1, or 8 for a model with ``restore_clip``
            (ERDN), which computes each first-stage window once per pass: 2.25 stage passes per
            frame with 8 windows, against 4 one window at a time.
        device: where the model runs (the model is moved there).
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; the native ops keep fp32 where
            their accuracy needs it).
        dataset: picks the card's per-dataset clip length (DSTNet runs 25-frame clips on DVD).
        channels_last: run the network channels-last (:func:`deblurlayers.to_channels_last`:
            the model's 4-D weights are stored channels-last, in place; the output changes by
            fp32 summation order only). ``None``: on a CPU, where oneDNN's convolutions are faster
            in that layout (``benchmarks/RESULTS.md``, fast path).
    """

    def __init__(self, model: nn.Module, card: ModelCard, *, tile: Official = OFFICIAL,
                 overlap: Official = OFFICIAL, frames_per_clip: Official = OFFICIAL, windows_per_pass: Optional[int] = None,
                 device: Union[str, torch.device, None] = None, dtype: str = "fp32", dataset: Optional[str] = None,
                 channels_last: Optional[bool] = None):
        pipeline = card.test_pipeline
        self.model, self.card = model, card
        self.tile = pipeline.tile if tile == OFFICIAL else tile
        self.overlap = (pipeline.overlap if overlap == OFFICIAL else overlap) if self.tile else 0
        self.frames_per_clip = pipeline.frames_per_clip(dataset) if frames_per_clip == OFFICIAL else frames_per_clip
        _check_optional_int("tile", self.tile, 1)
        _check_optional_int("overlap", self.overlap, 0)
        if self.tile is not None and self.overlap >= self.tile:
            origin = f" (the official test's, for its {pipeline.tile} px tiles)" if overlap == OFFICIAL else ""
            raise ValueError(f"overlap: expected less than tile={self.tile}, got {self.overlap}{origin}")
        if windows_per_pass is None:
            windows_per_pass = 8 if hasattr(model, "restore_clip") else 1
        if not isinstance(windows_per_pass, int) or windows_per_pass < 1:
            raise ValueError(f"windows_per_pass: expected an int >= 1, got {windows_per_pass!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
        if hasattr(model, "restore") and self.tile is not None and (self.tile % 16 or self.overlap % 16):
            raise ValueError(f"tile, overlap: {card.name} tiles on its 1/4-resolution flow grid of frames padded to "
                             f"multiples of 16; expected multiples of 16, got tile={self.tile}, overlap={self.overlap}")
        self.is_clip_model = card.output == "clip"
        if self.is_clip_model:
            _check_optional_int("frames_per_clip", self.frames_per_clip, max(card.min_frames, 1))
            default = pipeline.frames_per_clip(dataset)
            # the official overlap and margin apply to the official clip length only
            same = self.frames_per_clip == default
            self.clip_stride = pipeline.clip_stride if same else None
            self.margin = pipeline.margin if same else 0
        elif frames_per_clip not in (OFFICIAL, None):
            raise ValueError(f"frames_per_clip: only for clip models; {card.name} restores one frame per "
                             f"{2 * WINDOW_CONTEXT + 1}-frame window (got {frames_per_clip!r})")
        self.windows_per_pass = windows_per_pass
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.dtype = dtype
        self.model.to(self.device).eval()
        if channels_last not in (None, True, False):
            raise TypeError(f"channels_last: expected None, True or False, got {channels_last!r}")
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        if self.channels_last:
            to_channels_last(self.model)

    def plan(self, length: int) -> List[Step]:
        """The forward passes over a video of ``length`` frames."""
        if not self.is_clip_model:
            return window_plan(length, self.windows_per_pass)
        if length < self.card.min_frames:
            raise ValueError(f"input: {self.card.name} needs videos of at least {self.card.min_frames} frames, got "
                             f"{length}")
        clip = length if self.frames_per_clip is None else self.frames_per_clip
        return clip_plan(length, clip, self.clip_stride, self.margin)

    def run(self, source: FrameSource, skip: Optional[Callable[[Step], bool]] = None,
            on_step: Optional[Callable[[Step], None]] = None) -> Iterator[Tuple[int, torch.Tensor]]:
        """Yield ``(frame index, restored frame (3, H, W) float32 on the CPU)`` for every frame,
        in order of the plan (increasing frame index). ``skip(step)`` true: the step is not run
        (its frames already exist); ``on_step(step)`` is called after each step."""
        steps = self.plan(len(source))
        lows = last_use(steps)
        for step, low in zip(steps, lows):
            if skip is None or not skip(step):
                clip = torch.stack([source.get(i) for i in step.inputs]).unsqueeze(0)
                restored = self.forward(clip, step)
                for frame, out in zip(step.outputs, restored):
                    yield frame, out
            source.drop_below(low)
            if on_step is not None:
                on_step(step)

    def forward(self, clip: torch.Tensor, step: Step) -> torch.Tensor:
        """The restored frames ``(len(step.outputs), 3, H, W)`` of one pass over ``clip``
        ``(1, len(step.inputs), 3, H, W)``."""
        clip = clip.to(self.device)
        autocast = (torch.autocast(self.device.type, dtype=DTYPES[self.dtype]) if DTYPES[self.dtype] is not None
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            out = self._clip_pass(clip)[0, list(step.keep)] if self.is_clip_model else self._window_pass(clip, step)
        return out.float().cpu()

    def _clip_pass(self, clip: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "restore"):  # BSSTNet: flows of the whole frame, then tiles
            h, w = clip.shape[-2:]
            tile = self.tile or _round_up(max(h, w), 16)
            return self.model.restore(clip, tile=tile, overlap=self.overlap if self.tile else 0, frames_per_clip=None)
        if self.tile:
            return tiled_inference(self.model, clip, self.tile, self.overlap)
        return self.model(clip)

    def _window_pass(self, clip: torch.Tensor, step: Step) -> torch.Tensor:
        width = 2 * WINDOW_CONTEXT + 1
        if hasattr(self.model, "restore_clip") and not self.tile:  # ERDN: each stage-1 window once
            return self.model.restore_clip(clip, border="none", windows_per_batch=len(step.keep))[0]
        windows = torch.stack([clip[0, k:k + width] for k in step.keep])
        frames_in = self.card.frames_in
        if frames_in is not None and frames_in < width:
            first = WINDOW_CONTEXT - frames_in // 2
            windows = windows[:, first:first + frames_in]
        if self.tile:
            return tiled_inference(self.model, windows, self.tile, self.overlap)
        return self.model(windows)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _check_optional_int(name: str, value, minimum: int) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
        raise ValueError(f"{name}: expected None or an int >= {minimum}, got {value!r}")
