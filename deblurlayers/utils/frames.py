"""Clips of frames: the checks, the padding and the preamble every model's forward shares."""
from __future__ import annotations

import functools
import threading
import warnings
from typing import Callable, Dict, Optional, Tuple, TypeVar, Union

import torch
import torch.nn.functional as F
from torch import nn

from .batch import empty_batch
from .checks import check_input

__all__ = ["check_clip", "pad_to_multiple", "clip_forward", "warn_if_not_unit_range", "check_finite"]

Forward = TypeVar("Forward", bound=Callable[..., object])
_CALLS = threading.local()  # whether a clip_forward body is running on this thread
FrameCount = Union[None, int, Callable[[nn.Module], int]]


def check_clip(frames: torch.Tensor, model: nn.Module, *, name: str = "frames", num_frames: Optional[int] = None,
               min_frames: int = 1, channels: int = 3) -> Dict[str, int]:
    """Check a ``(B, T, C, H, W)`` clip for ``model`` and return its sizes.

    Raises ``ValueError`` for a wrong layout, frame count or channel count, or an empty frame
    (``H`` or ``W`` of 0); ``TypeError`` for a non-floating dtype, or one that differs from the
    parameters' outside ``torch.autocast``. A batch of 0 passes (models return empty results).
    """
    sizes = {"C": channels} if num_frames is None else {"T": num_frames, "C": channels}
    return check_input(frames, "B T C H W", name=name, like=model, sizes=sizes,
                       minimum={"T": min_frames, "H": 1, "W": 1})


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect",
                    min_size: int = 0) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad the last two dims of ``x`` at the bottom/right up to multiples of ``multiple``
    (and at least ``min_size``).

    Returns the padded tensor and the original ``(H, W)`` to crop back to. Reflection needs the
    padding to be smaller than the size; larger gaps fall back to replication.
    """
    h, w = x.shape[-2:]
    target_h = max(h + (-h) % multiple, min_size + (-min_size) % multiple)
    target_w = max(w + (-w) % multiple, min_size + (-min_size) % multiple)
    pad_h, pad_w = target_h - h, target_w - w
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    if mode == "reflect" and (pad_h >= h or pad_w >= w):
        mode = "replicate"
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    padded = F.pad(flat, (0, pad_w, 0, pad_h), mode=mode)
    return padded.reshape(*lead, *padded.shape[-3:]), (h, w)


def check_finite(frames: torch.Tensor, name: str = "frames") -> None:
    """``ValueError`` when ``(B, T, C, H, W)`` holds NaN or inf: one such pixel turns every output of
    the models here NaN (attention and norms mix all positions), which a long restoration should
    learn before it starts. One pass over the clip (a host sync)."""
    bad = ~torch.isfinite(frames)
    if bool(bad.any()):
        frames_hit = bad.flatten(2).any(-1).any(0).nonzero().flatten().tolist()
        raise ValueError(f"{name}: {int(bad.sum())} NaN or infinite values, in frame(s) {frames_hit[:10]}"
                         f"{' ...' if len(frames_hit) > 10 else ''}; every restored frame would be NaN")


def warn_if_not_unit_range(frames: torch.Tensor, name: str = "frames", limit: float = 2.0) -> None:
    """One ``UserWarning`` (Python's default filter shows it once per call site) when the clip's
    largest value exceeds ``limit``: 8-bit frames passed without dividing by 255, which every model
    here accepts silently and answers with garbage (DSTNet with NaN/inf). Skipped while
    ``torch.compile`` traces, which must not read values (a host sync)."""
    if torch.compiler.is_compiling() or frames.numel() == 0 or frames.device.type == "meta":
        return
    peak = float(frames.detach().amax())
    if peak > limit:
        warnings.warn(f"{name}: values up to {peak:.4g}; the models take frames in [0, 1] (divide 8-bit frames "
                      f"by 255)", UserWarning, stacklevel=3)


def clip_forward(*, num_frames: FrameCount = None, min_frames: int = 1) -> Callable[[Forward], Forward]:
    """Decorate a model's ``forward(self, frames, ...)`` with the preamble every model shares: the
    clip is checked (:func:`check_clip`; ``num_frames`` may be a function of the model; values
    beyond [0, 1] draw a warning, :func:`warn_if_not_unit_range`), and an
    empty batch is answered by :func:`~deblurlayers.utils.empty_batch` (shapes from a meta run,
    attached to the graph), so the body never sees ``B = 0``. The body pads to its size multiple
    with :func:`pad_to_multiple` and crops back.
    """

    def decorate(forward: Forward) -> Forward:
        @functools.wraps(forward)
        def checked(self: nn.Module, frames: torch.Tensor, *args, **kwargs):
            count = num_frames(self) if callable(num_frames) else num_frames
            check_clip(frames, self, num_frames=count, min_frames=min_frames)
            outermost = not getattr(_CALLS, "inside", False)
            if outermost:  # a model built from models (STDANet-Stack) warns once, at the user's call
                warn_if_not_unit_range(frames)
            if frames.shape[0] == 0:
                return empty_batch(self, frames, *args, **kwargs)
            _CALLS.inside = True
            try:
                return forward(self, frames, *args, **kwargs)
            finally:
                _CALLS.inside = not outermost

        return checked  # type: ignore[return-value]

    return decorate
